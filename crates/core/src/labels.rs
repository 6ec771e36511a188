//! Host labels (`env=prod`, `role=db`) and the selectors that pick hosts by
//! them: what fleet policies, bulk jobs and the dashboard filter match on.
//!
//! Keys and values are 1–63 characters of `a-z 0-9 . _ - /` (DESIGN §6), so
//! a label can go in a URL query, a CSS class or a log line without
//! escaping, and `env=prod` reads the same everywhere. A selector is a
//! label map too: a host matches when it has every pair (`{}` matches every
//! host).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest label key or value.
pub const MAX_LABEL_CHARS: usize = 63;

/// Most labels one host (or one selector) may carry.
pub const MAX_LABELS: usize = 32;

/// Why a label map was refused; names the key and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LabelError(String);

/// A checked label map, ordered by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// Checks `map` (from a request whose field is named `field`, e.g.
    /// `labels` or `selector`): every key and value 1–63 characters of
    /// `a-z 0-9 . _ - /`, at most [`MAX_LABELS`] pairs.
    pub fn parse(field: &str, map: BTreeMap<String, String>) -> Result<Labels, LabelError> {
        if map.len() > MAX_LABELS {
            return Err(LabelError(format!(
                "`{field}` has {} labels; at most {MAX_LABELS} are allowed",
                map.len()
            )));
        }
        for (key, value) in &map {
            check_part(&format!("`{field}` key {key:?}"), key)?;
            check_part(&format!("`{field}.{key}` value {value:?}"), value)?;
        }
        Ok(Labels(map))
    }

    /// Parses `key=value,key=value` (the dashboard's filter box and the
    /// enrol page); spaces around parts are ignored, an empty text is no
    /// label.
    pub fn parse_pairs(field: &str, text: &str) -> Result<Labels, LabelError> {
        let mut map = BTreeMap::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(LabelError(format!(
                    "`{field}`: {pair:?} is not a `key=value` pair"
                )));
            };
            let key = key.trim().to_owned();
            if map.insert(key.clone(), value.trim().to_owned()).is_some() {
                return Err(LabelError(format!("`{field}`: key {key:?} is given twice")));
            }
        }
        Labels::parse(field, map)
    }

    /// Labels stored by this code (already checked); used when reading
    /// them back, so a stored map is never refused.
    pub fn from_stored(map: BTreeMap<String, String>) -> Labels {
        Labels(map)
    }

    /// The pairs, by key.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// A label's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Whether there is no label.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The pairs as `key=value` texts, by key.
    pub fn pairs(&self) -> impl Iterator<Item = String> + '_ {
        self.0.iter().map(|(k, v)| format!("{k}={v}"))
    }
}

impl fmt::Display for Labels {
    /// `env=prod,role=db`; empty for no label.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for pair in self.pairs() {
            if !first {
                f.write_str(",")?;
            }
            f.write_str(&pair)?;
            first = false;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Labels {
    /// Deserialising checks the rules, so a `Labels` is always valid.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, String>::deserialize(d)?;
        Labels::parse("labels", map).map_err(serde::de::Error::custom)
    }
}

fn check_part(what: &str, part: &str) -> Result<(), LabelError> {
    let problem = if part.is_empty() {
        Some(String::from("must not be empty"))
    } else if part.chars().count() > MAX_LABEL_CHARS {
        Some(format!("is longer than {MAX_LABEL_CHARS} characters"))
    } else {
        part.chars()
            .find(|c| !allowed(*c))
            .map(|c| format!("contains {c:?}; only a-z, 0-9, `.`, `_`, `-` and `/` are allowed"))
    };
    match problem {
        Some(problem) => Err(LabelError(format!("{what} {problem}"))),
        None => Ok(()),
    }
}

fn allowed(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '/')
}

/// Which hosts something applies to: every pair must be among the host's
/// labels. The empty selector matches every host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Selector(pub Labels);

impl Selector {
    /// Whether a host with `labels` is selected.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0
             .0
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value.as_str()))
    }

    /// Whether it selects every host.
    pub fn is_everything(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Selector {
    /// `env=prod,role=db`, or `*` for every host.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_everything() {
            f.write_str("*")
        } else {
            fmt::Display::fmt(&self.0, f)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::parse(
            "labels",
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn a_selector_matches_hosts_that_have_every_pair() {
        let host = labels(&[("env", "prod"), ("role", "db")]);
        assert!(Selector(labels(&[("env", "prod")])).matches(&host));
        assert!(Selector(labels(&[("env", "prod"), ("role", "db")])).matches(&host));
        assert!(!Selector(labels(&[("env", "staging")])).matches(&host));
        assert!(!Selector(labels(&[("env", "prod"), ("zone", "a")])).matches(&host));
        assert!(Selector::default().matches(&host));
        assert!(Selector::default().matches(&Labels::default()));
        assert!(!Selector(labels(&[("env", "prod")])).matches(&Labels::default()));
    }

    #[test]
    fn bad_labels_are_refused_naming_the_key() {
        let bad = |k: &str, v: &str| {
            Labels::parse("labels", [(k.to_owned(), v.to_owned())].into())
                .unwrap_err()
                .to_string()
        };
        assert!(
            bad("Env", "prod").contains("key \"Env\""),
            "{}",
            bad("Env", "prod")
        );
        assert!(bad("env", "").contains("`labels.env` value"));
        assert!(bad("env", "pr od").contains("' '"));
        assert!(bad("env", &"x".repeat(64)).contains("longer than 63"));
        assert!(bad("", "x").contains("must not be empty"));
        let many = (0..33).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert!(Labels::parse("labels", many)
            .unwrap_err()
            .to_string()
            .contains("at most 32"));
    }

    #[test]
    fn pairs_parse_and_print_the_same() {
        let parsed = Labels::parse_pairs("selector", " env=prod , role=db/primary ").unwrap();
        assert_eq!(parsed, labels(&[("env", "prod"), ("role", "db/primary")]));
        assert_eq!(parsed.to_string(), "env=prod,role=db/primary");
        assert!(Labels::parse_pairs("selector", "").unwrap().is_empty());
        assert!(Labels::parse_pairs("selector", "env")
            .unwrap_err()
            .to_string()
            .contains("not a `key=value` pair"));
        assert!(Labels::parse_pairs("selector", "a=1,a=2")
            .unwrap_err()
            .to_string()
            .contains("given twice"));
        assert_eq!(Selector::default().to_string(), "*");
    }

    #[test]
    fn deserialising_checks_the_rules() {
        let ok: Labels = serde_json::from_str(r#"{"env":"prod"}"#).unwrap();
        assert_eq!(ok.get("env"), Some("prod"));
        let err = serde_json::from_str::<Labels>(r#"{"env":"PROD"}"#).unwrap_err();
        assert!(err.to_string().contains("`labels.env` value"), "{err}");
    }
}
