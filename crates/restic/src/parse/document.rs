//! Finds the one JSON document of a single-document command (snapshots,
//! stats, forget, cat config) in stdout, which may also carry text.
//!
//! The document is the first line starting with `[` or `{` that parses as
//! JSON. `cat config` pretty-prints over several lines, so a line that is
//! just `{` or `[` starts a multi-line document that ends at a closing line
//! that makes it parse. A line such as `[0:00] 100.00% 1 / 1 snapshots`
//! (progress text, which 0.19.0's stats leaked into stdout) starts with `[`
//! but does not parse, so it stays text.

/// Lines a multi-line document may span before we give up on it.
const MAX_DOCUMENT_LINES: usize = 100_000;

/// Outcome of feeding one line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Feed {
    /// The line belongs to a document still being read.
    Pending,
    /// The document is complete.
    Complete(String),
    /// These lines are text, not the document.
    Text(Vec<String>),
}

/// The state of the search for the document.
#[derive(Debug, Default)]
pub(crate) struct Document {
    pending: Vec<String>,
    found: bool,
}

impl Document {
    /// Feeds the next stdout line.
    pub(crate) fn feed(&mut self, line: &str) -> Feed {
        if self.found {
            return Feed::Text(vec![line.to_owned()]);
        }
        if !self.pending.is_empty() {
            self.pending.push(line.to_owned());
            let closing = line.starts_with('}') || line.starts_with(']');
            if closing {
                let joined = self.pending.join("\n");
                if serde_json::from_str::<serde::de::IgnoredAny>(&joined).is_ok() {
                    self.pending.clear();
                    self.found = true;
                    return Feed::Complete(joined);
                }
            }
            if self.pending.len() > MAX_DOCUMENT_LINES {
                return Feed::Text(std::mem::take(&mut self.pending));
            }
            return Feed::Pending;
        }
        let trimmed = line.trim();
        if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
            return Feed::Text(vec![line.to_owned()]);
        }
        if serde_json::from_str::<serde::de::IgnoredAny>(trimmed).is_ok() {
            self.found = true;
            return Feed::Complete(trimmed.to_owned());
        }
        if trimmed == "{" || trimmed == "[" {
            self.pending.push(trimmed.to_owned());
            return Feed::Pending;
        }
        Feed::Text(vec![line.to_owned()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_document_after_text() {
        let mut doc = Document::default();
        assert_eq!(
            doc.feed("[0:00] 100.00%  1 / 1 snapshots"),
            Feed::Text(vec!["[0:00] 100.00%  1 / 1 snapshots".into()])
        );
        assert_eq!(
            doc.feed(r#"{"total_size":1}"#),
            Feed::Complete(r#"{"total_size":1}"#.into())
        );
        assert_eq!(
            doc.feed("loading indexes..."),
            Feed::Text(vec!["loading indexes...".into()])
        );
    }

    #[test]
    fn pretty_printed_document() {
        let mut doc = Document::default();
        let lines = ["{", r#"  "version": 2,"#, r#"  "id": "ab""#, "}"];
        let fed: Vec<Feed> = lines.iter().map(|l| doc.feed(l)).collect();
        assert_eq!(fed[..3], [Feed::Pending, Feed::Pending, Feed::Pending]);
        assert_eq!(fed[3], Feed::Complete(lines.join("\n")));
    }
}
