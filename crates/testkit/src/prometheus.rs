//! A strict reader of the Prometheus text exposition format (0.0.4), so a
//! test fails on a page Prometheus would reject or misread: names and label
//! names by the format's grammar, label values with only the three escapes
//! (`\\`, `\"`, `\n`), `HELP`/`TYPE` once per family and before its
//! samples, a family's samples together, no series twice, and histograms
//! whole (cumulative buckets ending at `+Inf`, `_count` equal to it, a
//! `_sum`). Lenient parsers skip what they do not understand; this one
//! says which line is wrong and why.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{anyhow, bail, Context};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Its name as written (`x_bucket`, `x_total`, …).
    pub name: String,
    /// Its labels, unescaped.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A whole page, read and checked.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The samples, in page order.
    pub samples: Vec<Sample>,
    /// `TYPE` per family name.
    pub types: HashMap<String, String>,
    /// `HELP` per family name, unescaped.
    pub help: HashMap<String, String>,
}

impl Page {
    /// Reads `text`, failing on the first thing the format does not allow.
    pub fn parse(text: &str) -> anyhow::Result<Page> {
        parse(text)
    }

    /// The value of the series `name` with exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }

    /// Every series named `name`.
    pub fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }
}

fn is_name(s: &str, colons: bool) -> bool {
    let mut chars = s.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':');
    matches!(chars.next(), Some(c) if ok_first(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':'))
}

/// A sample value or timestamp as Go's `ParseFloat` reads it.
fn number(s: &str) -> anyhow::Result<f64> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if s.is_empty()
            || !s
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')) =>
        {
            bail!("`{s}` is not a number")
        }
        _ => s.parse().map_err(|_| anyhow!("`{s}` is not a number")),
    }
}

/// The family a sample name belongs to, given the families typed so far.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            ) {
                return base;
            }
        }
    }
    name
}

/// Reads a label set from just after `{`; returns the labels and the rest
/// after `}`.
fn labels(mut rest: &str) -> anyhow::Result<(BTreeMap<String, String>, &str)> {
    let mut out = BTreeMap::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((out, after));
        }
        let (name, after) = rest
            .split_once("=\"")
            .ok_or_else(|| anyhow!("a label without =\"…\" in `{rest}`"))?;
        if !is_name(name, false) {
            bail!("`{name}` is not a label name");
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                None => bail!("label `{name}`'s value is not closed"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => bail!(
                        "label `{name}`'s value has an escape the format does not know: \\{}",
                        other.map(|(_, c)| c).unwrap_or(' ')
                    ),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if out.insert(name.to_owned(), value).is_some() {
            bail!("label `{name}` appears twice");
        }
        rest = &after[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            bail!("expected `,` or `}}` after label `{name}`, found `{rest}`");
        }
    }
}

fn parse(text: &str) -> anyhow::Result<Page> {
    if !text.is_empty() && !text.ends_with('\n') {
        bail!("the page does not end with a line feed");
    }
    let mut page = Page::default();
    let mut seen_series: HashSet<(String, Vec<(String, String)>)> = HashSet::new();
    let mut finished_families: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let at = || format!("line {}: `{line}`", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let keyword = words.next().unwrap_or("");
            if keyword != "HELP" && keyword != "TYPE" {
                continue;
            }
            let name = words.next().unwrap_or("");
            let rest = words.next().unwrap_or("");
            if !is_name(name, true) {
                bail!("{}: `{name}` is not a metric name", at());
            }
            if finished_families.contains(name) || current.as_deref() == Some(name) {
                bail!("{}: {keyword} after the samples of `{name}`", at());
            }
            if keyword == "HELP" {
                let mut help = String::new();
                let mut chars = rest.chars();
                while let Some(c) = chars.next() {
                    if c == '\\' {
                        match chars.next() {
                            Some('\\') => help.push('\\'),
                            Some('n') => help.push('\n'),
                            other => bail!("{}: HELP has the escape \\{other:?}", at()),
                        }
                    } else {
                        help.push(c);
                    }
                }
                if page.help.insert(name.to_owned(), help).is_some() {
                    bail!("{}: a second HELP for `{name}`", at());
                }
            } else {
                if !matches!(
                    rest,
                    "counter" | "gauge" | "histogram" | "summary" | "untyped"
                ) {
                    bail!("{}: `{rest}` is not a metric type", at());
                }
                if page
                    .types
                    .insert(name.to_owned(), rest.to_owned())
                    .is_some()
                {
                    bail!("{}: a second TYPE for `{name}`", at());
                }
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| anyhow!("{}: a sample without a value", at()))?;
        let name = &line[..name_end];
        if !is_name(name, true) {
            bail!("{}: `{name}` is not a metric name", at());
        }
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(inside) => labels(inside).with_context(at)?,
            None => (BTreeMap::new(), &line[name_end..]),
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| anyhow!("{}: no space before the value", at()))?;
        let mut parts = rest.split(' ');
        let value = number(parts.next().unwrap_or("")).with_context(at)?;
        if let Some(timestamp) = parts.next() {
            timestamp
                .parse::<i64>()
                .map_err(|_| anyhow!("{}: `{timestamp}` is not a timestamp", at()))?;
        }
        if parts.next().is_some() {
            bail!("{}: more than a value and a timestamp", at());
        }
        let family = family_of(name, &page.types).to_owned();
        if current.as_deref() != Some(family.as_str()) {
            if finished_families.contains(&family) {
                bail!("{}: the samples of `{family}` are not together", at());
            }
            if let Some(done) = current.replace(family.clone()) {
                finished_families.insert(done);
            }
        }
        let key = (
            name.to_owned(),
            labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        );
        if !seen_series.insert(key) {
            bail!("{}: this series appears twice", at());
        }
        page.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    check_histograms(&page)?;
    Ok(page)
}

/// A label set without `le`, in order.
type Labels = Vec<(String, String)>;

/// Every histogram series: cumulative buckets up to `+Inf`, `_count`
/// equal to the `+Inf` bucket, and a `_sum`.
fn check_histograms(page: &Page) -> anyhow::Result<()> {
    for (family, kind) in &page.types {
        if kind != "histogram" {
            continue;
        }
        // Buckets per label set without `le`.
        let mut groups: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
        for s in page.series(&format!("{family}_bucket")) {
            let le = s
                .labels
                .get("le")
                .ok_or_else(|| anyhow!("a bucket of `{family}` without `le`"))?;
            let le = number(le).with_context(|| format!("`le` of `{family}`"))?;
            let rest = s
                .labels
                .iter()
                .filter(|(k, _)| *k != "le")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            groups.entry(rest).or_default().push((le, s.value));
        }
        for (labels, buckets) in &groups {
            let mut last = (f64::NEG_INFINITY, 0.0);
            for (le, count) in buckets {
                if *le <= last.0 || *count < last.1 {
                    bail!("`{family}` {labels:?}: buckets are not in order or not cumulative");
                }
                last = (*le, *count);
            }
            if last.0 != f64::INFINITY {
                bail!("`{family}` {labels:?}: no `+Inf` bucket");
            }
            let plain: BTreeMap<String, String> = labels.iter().cloned().collect();
            let find = |suffix: &str| {
                page.samples
                    .iter()
                    .find(|s| s.name == format!("{family}{suffix}") && s.labels == plain)
                    .map(|s| s.value)
            };
            if find("_count") != Some(last.1) {
                bail!("`{family}` {labels:?}: `_count` is not the `+Inf` bucket");
            }
            if find("_sum").is_none() {
                bail!("`{family}` {labels:?}: no `_sum`");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# HELP x_seconds Time, with a \\\\ and a \\n.
# TYPE x_seconds histogram
x_seconds_bucket{kind=\"a\",le=\"1e-06\"} 0
x_seconds_bucket{kind=\"a\",le=\"0.5\"} 2
x_seconds_bucket{kind=\"a\",le=\"+Inf\"} 3
x_seconds_sum{kind=\"a\"} 7.25
x_seconds_count{kind=\"a\"} 3
# TYPE up gauge
up{host=\"say \\\"hi\\\" \\\\ to\\nme\",host_id=\"1\"} 1
up{host=\"b\",host_id=\"2\"} 0 1700000000000
# TYPE c_total counter
c_total 5
";

    #[test]
    fn a_good_page_reads() {
        let page = Page::parse(GOOD).unwrap();
        assert_eq!(
            page.value("up", &[("host", "say \"hi\" \\ to\nme"), ("host_id", "1")]),
            Some(1.0)
        );
        assert_eq!(page.value("c_total", &[]), Some(5.0));
        assert_eq!(
            page.value("x_seconds_bucket", &[("kind", "a"), ("le", "+Inf")]),
            Some(3.0)
        );
        assert_eq!(page.types["x_seconds"], "histogram");
        assert_eq!(page.help["x_seconds"], "Time, with a \\ and a \n.");
        assert_eq!(page.series("up").count(), 2);
    }

    #[test]
    fn malformed_pages_fail() {
        let bad = [
            ("raw quote", "up{host=\"a\"b\"} 1\n"),
            ("raw line feed", "up{host=\"a\nb\"} 1\n"),
            ("unknown escape", "up{host=\"a\\tb\"} 1\n"),
            ("bad label name", "up{1host=\"a\"} 1\n"),
            ("bad metric name", "1up 1\n"),
            ("no value", "up{host=\"a\"}\n"),
            ("value not a number", "up 1x\n"),
            ("duplicate series", "up 1\nup 2\n"),
            ("duplicate label", "up{a=\"1\",a=\"2\"} 1\n"),
            ("type after samples", "up 1\n# TYPE up gauge\n"),
            ("second type", "# TYPE up gauge\n# TYPE up gauge\n"),
            ("unknown type", "# TYPE up meter\n"),
            ("split family", "a 1\nb 1\na{x=\"1\"} 2\n"),
            ("no final line feed", "up 1"),
            (
                "no +Inf",
                "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
            ),
            (
                "not cumulative",
                "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
            ),
            (
                "count differs",
                "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
            ),
            ("no sum", "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n"),
        ];
        for (what, text) in bad {
            assert!(Page::parse(text).is_err(), "{what} was accepted: {text:?}");
        }
    }
}
