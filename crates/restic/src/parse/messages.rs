//! The JSON messages several commands share: per-item `error` (backup,
//! restore 0.17.1+, check 0.18+) and the final `exit_error` (0.18+).
//!
//! 0.14 writes a backup error as a raw Go error struct with no text
//! (`{"Op":"open","Path":"x","Err":13}` or just `{}`); 0.17.1 added
//! `error.message`; check 0.18 puts `message` at the top level. All become
//! one readable line.

use serde::Deserialize;
use serde_json::Value;

use super::lenient;

/// `{"message_type":"error", …}` in any of its versions.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ErrorMessage {
    error: Value,
    #[serde(deserialize_with = "lenient::null_default")]
    during: String,
    #[serde(deserialize_with = "lenient::null_default")]
    item: String,
    #[serde(deserialize_with = "lenient::null_default")]
    message: String,
}

impl ErrorMessage {
    /// One log line: `error during archival of /x: open /x: permission denied`.
    pub(crate) fn render(&self) -> String {
        let detail = describe_error(&self.error).or_else(|| non_empty(&self.message));
        let mut text = String::from("error");
        if !self.during.is_empty() {
            text.push_str(" during ");
            text.push_str(&self.during);
        }
        if !self.item.is_empty() {
            text.push_str(if self.during.is_empty() {
                " at "
            } else {
                " of "
            });
            text.push_str(&self.item);
        }
        if let Some(detail) = detail {
            text.push_str(": ");
            text.push_str(&detail);
        }
        text
    }
}

/// `{"message_type":"exit_error","code":12,"message":"…"}` (0.18+).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ExitError {
    /// The exit code restic is about to return.
    pub code: i64,
    /// The same text the non-JSON mode prints.
    #[serde(deserialize_with = "lenient::null_default")]
    pub message: String,
}

fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Text for the `error` field: a string, `{"message": …}`, or a Go
/// `*PathError` (`Op`, `Path`, `Err` errno).
fn describe_error(error: &Value) -> Option<String> {
    match error {
        Value::String(text) => non_empty(text),
        Value::Object(fields) => {
            if let Some(message) = fields.get("message").and_then(Value::as_str) {
                return non_empty(message);
            }
            let op = fields.get("Op").and_then(Value::as_str).unwrap_or("");
            let path = fields.get("Path").and_then(Value::as_str).unwrap_or("");
            if op.is_empty() && path.is_empty() {
                return None;
            }
            let cause = match fields.get("Err") {
                Some(Value::Number(n)) => n.as_i64().map(errno_text),
                Some(Value::String(s)) => non_empty(s),
                _ => None,
            }
            .unwrap_or_else(|| "failed".to_owned());
            Some(format!("{op} {path}: {cause}").trim_start().to_owned())
        }
        _ => None,
    }
}

/// The system's description of an errno, as Go would print it.
fn errno_text(errno: i64) -> String {
    let described = i32::try_from(errno)
        .ok()
        .map(nix::errno::Errno::from_raw)
        .filter(|e| *e != nix::errno::Errno::UnknownErrno)
        .map(|e| e.desc().to_lowercase());
    described.unwrap_or_else(|| format!("errno {errno}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(json: &str) -> String {
        let value: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        super::super::typed::<ErrorMessage>(&value)
            .map(|m| m.render())
            .unwrap_or_default()
    }

    #[test]
    fn renders_every_version_of_the_error_message() {
        assert_eq!(
            rendered(
                r#"{"message_type":"error","error":{"Op":"open","Path":"src/x","Err":13},"during":"archival","item":"/data/src/x"}"#
            ),
            "error during archival of /data/src/x: open src/x: permission denied"
        );
        assert_eq!(
            rendered(
                r#"{"message_type":"error","error":{},"during":"scan","item":"/data/src/noperm"}"#
            ),
            "error during scan of /data/src/noperm"
        );
        assert_eq!(
            rendered(
                r#"{"message_type":"error","error":{"Op":"read","Path":"/held.txt","Err":{}},"during":"archival","item":"/held.txt"}"#
            ),
            "error during archival of /held.txt: read /held.txt: failed"
        );
        assert_eq!(
            rendered(
                r#"{"message_type":"error","error":{"message":"open /x: permission denied"},"during":"archival","item":"/x"}"#
            ),
            "error during archival of /x: open /x: permission denied"
        );
        assert_eq!(
            rendered(r#"{"message_type":"error","message":"pack 1234 damaged"}"#),
            "error: pack 1234 damaged"
        );
    }
}
