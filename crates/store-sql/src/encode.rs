//! How values are stored, the same on every SQL backend: timestamps as unix
//! milliseconds, u64 values as signed 64-bit integers (refused above
//! `i64::MAX` rather than wrapped), labels, scopes and string lists as JSON
//! text.

use chrono::{DateTime, Utc};
use rm_core::{Labels, Selector};
use rm_store::StoreError;

/// A timestamp as stored: unix milliseconds.
pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// An optional timestamp as stored.
pub fn ms_opt(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(ms)
}

/// A u64 as stored (INTEGER / BIGINT are i64). Values above `i64::MAX`
/// cannot be stored and are refused with [`StoreError::Conflict`] naming
/// `what`, rather than wrapped to negative numbers.
pub fn u64_to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| {
        StoreError::Conflict(format!(
            "{what} {v} is too large to store (max {})",
            i64::MAX
        ))
    })
}

/// An optional u64 as stored; see [`u64_to_i64`].
pub fn u64_opt_to_i64(v: Option<u64>, what: &str) -> Result<Option<i64>, StoreError> {
    v.map(|v| u64_to_i64(v, what)).transpose()
}

/// A JSON value as stored in a nullable column: `Null` becomes SQL NULL.
pub fn json_value_to_opt(v: &serde_json::Value) -> Option<String> {
    (!v.is_null()).then(|| v.to_string())
}

/// A list of strings as stored: a JSON array.
pub fn json_strings(v: &[String]) -> String {
    // Serialising a slice of strings cannot fail; fall back to `[]` anyway
    // rather than panic.
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}

/// Labels as stored: a JSON object of strings.
pub fn labels_json(labels: &Labels) -> String {
    serde_json::to_string(labels.as_map()).unwrap_or_else(|_| String::from("{}"))
}

/// A user's scope as stored (JSON object), or NULL for every host.
pub fn scope_json(scope: Option<&Selector>) -> Option<String> {
    scope.map(|s| labels_json(&s.0))
}
