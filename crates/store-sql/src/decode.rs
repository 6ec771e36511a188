//! Checked conversions from a row's stored values into domain values: each
//! names its column in the [`StoreError::Corrupt`] it returns.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rm_core::token::TokenHash;
use rm_core::Labels;
use rm_store::StoreError;

pub(crate) fn corrupt(col: &str, what: impl Display) -> StoreError {
    StoreError::Corrupt(format!("column `{col}`: {what}"))
}

/// A timestamp stored as unix milliseconds.
pub(crate) fn time(col: &str, v: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(v)
        .ok_or_else(|| corrupt(col, format!("{v} is not a valid timestamp")))
}

pub(crate) fn time_opt(col: &str, v: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    v.map(|v| time(col, v)).transpose()
}

/// A typed id stored as its ULID string.
pub(crate) fn id<T: FromStr>(col: &str, s: String) -> Result<T, StoreError> {
    s.parse()
        .map_err(|_| corrupt(col, format!("`{s}` is not a ULID")))
}

pub(crate) fn id_opt<T: FromStr>(col: &str, s: Option<String>) -> Result<Option<T>, StoreError> {
    s.map(|s| id(col, s)).transpose()
}

/// A token hash stored as lower-case hex.
pub(crate) fn hash(col: &str, s: String) -> Result<TokenHash, StoreError> {
    TokenHash::from_hex(&s).ok_or_else(|| corrupt(col, "not a 64-digit hex SHA-256"))
}

/// A text column parsed with [`FromStr`] (status, trigger and role names).
pub(crate) fn parsed<T: FromStr>(col: &str, s: String) -> Result<T, StoreError>
where
    T::Err: Display,
{
    s.parse().map_err(|e| corrupt(col, e))
}

pub(crate) fn parsed_opt<T: FromStr>(col: &str, s: Option<String>) -> Result<Option<T>, StoreError>
where
    T::Err: Display,
{
    s.map(|s| parsed(col, s)).transpose()
}

/// An integer that must fit `T` (u32, u64 — negative values are corrupt —,
/// i32).
pub(crate) fn int<T: TryFrom<i64>>(col: &str, v: i64) -> Result<T, StoreError> {
    T::try_from(v).map_err(|_| {
        if v < 0 {
            corrupt(col, format!("{v} is negative"))
        } else {
            corrupt(col, format!("{v} is out of range"))
        }
    })
}

pub(crate) fn int_opt<T: TryFrom<i64>>(col: &str, v: Option<i64>) -> Result<Option<T>, StoreError> {
    v.map(|v| int(col, v)).transpose()
}

/// A JSON text column.
pub(crate) fn json<T: serde::de::DeserializeOwned>(col: &str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| corrupt(col, format!("invalid JSON: {e}")))
}

/// A nullable JSON text column; NULL reads as [`serde_json::Value::Null`].
pub(crate) fn json_value_opt(
    col: &str,
    s: Option<String>,
) -> Result<serde_json::Value, StoreError> {
    s.map(|s| json(col, &s))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// A nullable JSON array column; NULL reads as empty.
pub(crate) fn json_list_opt<T: serde::de::DeserializeOwned>(
    col: &str,
    s: Option<String>,
) -> Result<Vec<T>, StoreError> {
    s.map(|s| json(col, &s))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// A JSON object of strings stored by the store (labels, selectors).
pub(crate) fn labels(col: &str, s: &str) -> Result<Labels, StoreError> {
    serde_json::from_str::<BTreeMap<String, String>>(s)
        .map(Labels::from_stored)
        .map_err(|e| corrupt(col, e))
}
