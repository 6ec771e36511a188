//! `restic forget --json`: one array of groups (per host and paths), each
//! with the snapshots it keeps and removes.
//!
//! `tags` is `null` when the group has none; 0.14's `reasons[].snapshot`
//! has no id (0.17 adds it). Only the counts matter to callers: the new
//! snapshot list comes from `snapshots` afterwards.

use serde::Deserialize;
use serde_json::{json, Value};

use super::lenient;

/// One forget group; snapshots are kept as raw values (only counted).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Group {
    #[serde(deserialize_with = "lenient::null_default")]
    keep: Vec<Value>,
    #[serde(deserialize_with = "lenient::null_default")]
    remove: Vec<Value>,
}

/// How many snapshots forget kept and removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Snapshots kept.
    pub kept: usize,
    /// Snapshots removed.
    pub removed: usize,
}

impl Counts {
    /// The `stats` object of a forget run.
    pub(crate) fn to_json(&self) -> Value {
        json!({"removed": self.removed, "kept": self.kept})
    }

    /// One log line.
    pub(crate) fn render(&self) -> String {
        format!(
            "forget kept {} snapshots and removed {}",
            self.kept, self.removed
        )
    }
}

/// Counts kept and removed snapshots; `None` if `document` is not a forget
/// report.
pub(crate) fn counts(document: &str) -> Option<Counts> {
    let groups: Vec<Group> = serde_json::from_str(document.trim()).ok()?;
    Some(groups.iter().fold(Counts::default(), |acc, g| Counts {
        kept: acc.kept + g.keep.len(),
        removed: acc.removed + g.remove.len(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_over_groups() {
        let doc = r#"[{"tags":null,"host":"vm","paths":["/a"],"keep":[{"id":"1"}],"remove":[{"id":"2"},{"id":"3"}],"reasons":[]},
{"tags":["x"],"host":"vm","paths":["/b"],"keep":[{"id":"4"}],"remove":null}]"#;
        let counts = counts(doc).unwrap_or_default();
        assert_eq!(
            counts,
            Counts {
                kept: 2,
                removed: 2
            }
        );
        assert_eq!(counts.to_json(), json!({"removed": 2, "kept": 2}));
        assert_eq!(super::counts("[]"), Some(Counts::default()));
        assert_eq!(super::counts("text"), None);
    }
}
