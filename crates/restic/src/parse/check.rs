//! `restic check`: text in 0.14–0.17, a JSON `summary` in 0.18+.
//!
//! Up to 0.17 the verdict is a line: `no errors were found` on stdout, or
//! `Fatal: repository contains errors` on stderr. 0.18 prints
//! `{"message_type":"summary","num_errors":0,"broken_packs":null,…}`
//! (`broken_packs` is `null`, not `[]`, on a healthy repository).

use serde::Deserialize;

use super::lenient;

/// The verdict a text line gives: `Some(true)` = errors found.
pub(crate) fn text_verdict(line: &str) -> Option<bool> {
    if line.contains("no errors were found") {
        Some(false)
    } else if line.contains("repository contains errors") {
        Some(true)
    } else {
        None
    }
}

/// The 0.18+ summary.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Summary {
    /// How many errors check found.
    #[serde(deserialize_with = "lenient::count")]
    pub num_errors: u64,
    #[serde(deserialize_with = "lenient::null_default")]
    broken_packs: Vec<String>,
    suggest_repair_index: bool,
    suggest_prune: bool,
}

impl Summary {
    /// One log line: `check found 2 errors (1 broken pack; run
    /// "restic repair index")`.
    pub(crate) fn render(&self) -> String {
        let mut notes = Vec::new();
        if !self.broken_packs.is_empty() {
            notes.push(format!("{} broken packs", self.broken_packs.len()));
        }
        if self.suggest_repair_index {
            notes.push("run \"restic repair index\"".to_owned());
        }
        if self.suggest_prune {
            notes.push("run \"restic prune\"".to_owned());
        }
        let head = match self.num_errors {
            0 => "check found no errors".to_owned(),
            n => format!("check found {n} errors"),
        };
        if notes.is_empty() {
            head
        } else {
            format!("{head} ({})", notes.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_and_summary() {
        assert_eq!(text_verdict("no errors were found"), Some(false));
        assert_eq!(
            text_verdict("Fatal: repository contains errors"),
            Some(true)
        );
        assert_eq!(text_verdict("load indexes"), None);
        let value = serde_json::json!({"message_type":"summary","num_errors":2,"broken_packs":["ab","cd"],"suggest_repair_index":true,"suggest_prune":false});
        let summary: Summary = super::super::typed(&value).unwrap_or_default();
        assert_eq!(
            summary.render(),
            "check found 2 errors (2 broken packs; run \"restic repair index\")"
        );
        let value = serde_json::json!({"message_type":"summary","num_errors":0,"broken_packs":null,"suggest_repair_index":false,"suggest_prune":false});
        let summary: Summary = super::super::typed(&value).unwrap_or_default();
        assert_eq!(summary.render(), "check found no errors");
    }
}
