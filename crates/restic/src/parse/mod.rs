//! Parsers for restic's output, one module per output shape.
//!
//! restic promises that fields and message types may be added at any time,
//! that empty fields may be left out, and Go writes empty lists as `null`.
//! So every struct here takes `#[serde(default)]`, lists and strings accept
//! `null`, counters accept floats and huge values, unknown fields are
//! ignored and unknown message types are kept as "unknown" rather than
//! failing the run.

pub(crate) mod backup;
pub(crate) mod check;
pub(crate) mod document;
pub(crate) mod forget;
pub(crate) mod ls;
pub(crate) mod messages;
pub(crate) mod prune;
pub(crate) mod restore;
pub(crate) mod snapshots;
pub(crate) mod stats;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// A stdout/stderr line that is a JSON object, with its `message_type`
/// (or, for `ls` before 0.17, its `struct_type`).
pub(crate) struct JsonLine {
    /// The whole object.
    pub value: Value,
    /// `message_type`, else `struct_type`, else empty.
    pub kind: String,
}

/// Parses `line` if it is one JSON object; `None` for text.
pub(crate) fn json_line(line: &str) -> Option<JsonLine> {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') {
        return None;
    }
    let value: Value = serde_json::from_str(trimmed).ok()?;
    let object = value.as_object()?;
    let kind = str_field(object, "message_type")
        .or_else(|| str_field(object, "struct_type"))
        .unwrap_or_default()
        .to_owned();
    Some(JsonLine { value, kind })
}

fn str_field<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

/// Deserialises into `T` leniently: a shape mismatch gives `None` instead
/// of an error, so one odd message never stops a run.
pub(crate) fn typed<T: serde::de::DeserializeOwned>(value: &Value) -> Option<T> {
    T::deserialize(value).ok()
}

/// Serde helpers for restic's loosely typed JSON.
pub(crate) mod lenient {
    use super::*;

    /// `null` (Go's nil slice or empty string) reads as the default.
    pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Default + Deserialize<'de>,
    {
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }

    /// A counter: integers as they are, floats truncated, negatives and
    /// anything else as 0. restic 0.14 prints 2^63 for an unknown ETA.
    pub(crate) fn count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        Ok(number(&Value::deserialize(d)?).unwrap_or(0))
    }

    /// An optional counter (absent or unreadable → `None`).
    pub(crate) fn opt_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Ok(number(&Value::deserialize(d)?))
    }

    /// A float, 0 when unreadable.
    pub(crate) fn float<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Value::deserialize(d)?.as_f64().unwrap_or(0.0))
    }

    /// An optional float.
    pub(crate) fn opt_float<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Ok(Value::deserialize(d)?.as_f64())
    }

    /// A Go `time.Time` (RFC 3339, nanoseconds, any offset) as UTC; absent
    /// or `null` gives `None`. A present but unreadable time is an error:
    /// restic always writes RFC 3339, so anything else is not restic's.
    pub(crate) fn opt_time<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) if text.is_empty() => Ok(None),
            Some(text) => chrono::DateTime::parse_from_rfc3339(&text)
                .map(|t| Some(t.with_timezone(&chrono::Utc)))
                .map_err(|e| serde::de::Error::custom(format!("time {text:?}: {e}"))),
        }
    }

    /// Like [`opt_time`], but an unreadable time is `None` rather than an
    /// error, for places where one odd field must not lose the record.
    pub(crate) fn loose_time<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, D::Error> {
        Ok(opt_time(Value::deserialize(d)?).ok().flatten())
    }

    /// Like [`opt_time`], with the Unix epoch for a missing time.
    pub(crate) fn time<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<chrono::DateTime<chrono::Utc>, D::Error> {
        Ok(opt_time(d)?.unwrap_or_default())
    }

    fn number(value: &Value) -> Option<u64> {
        if let Some(n) = value.as_u64() {
            return Some(n);
        }
        let f = value.as_f64()?;
        // `as` saturates: huge floats become u64::MAX, NaN 0.
        (f >= 0.0).then_some(f as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Default, Debug)]
    #[serde(default)]
    struct Sample {
        #[serde(deserialize_with = "lenient::null_default")]
        list: Vec<String>,
        #[serde(deserialize_with = "lenient::count")]
        n: u64,
        #[serde(deserialize_with = "lenient::opt_count")]
        eta: Option<u64>,
    }

    #[test]
    fn lenient_fields() {
        let s: Sample = serde_json::from_str(
            r#"{"list":null,"n":-3,"eta":9223372036854775808,"extra":{"x":1}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(s.list.is_empty());
        assert_eq!(s.n, 0);
        assert_eq!(s.eta, Some(9_223_372_036_854_775_808));
        let s: Sample = serde_json::from_str(r#"{"n":12.7}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.n, s.eta), (12, None));
    }

    #[test]
    fn json_lines_dispatch_on_message_or_struct_type() {
        let line = json_line(r#"  {"message_type":"status","x":1}"#).map(|j| j.kind);
        assert_eq!(line.as_deref(), Some("status"));
        let line = json_line(r#"{"struct_type":"node"}"#).map(|j| j.kind);
        assert_eq!(line.as_deref(), Some("node"));
        assert!(json_line("no errors were found").is_none());
        assert!(json_line("{not json").is_none());
        assert!(json_line("[1,2]").is_none());
    }
}
