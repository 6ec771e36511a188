//! [`Flag`]: a boolean column as either backend stores it.

use std::borrow::Cow;

use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Type, TypeInfo, ValueRef};

/// A flag column: PostgreSQL's BOOLEAN, or SQLite's INTEGER holding 0 or 1.
/// Unlike decoding `bool` straight from SQLite, any other integer is an
/// error (a corrupt row), not `true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag(pub bool);

impl From<Flag> for bool {
    fn from(flag: Flag) -> bool {
        flag.0
    }
}

impl<DB: Database> Type<DB> for Flag
where
    bool: Type<DB>,
    i64: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <bool as Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <bool as Type<DB>>::compatible(ty) || <i64 as Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for Flag
where
    bool: Decode<'r, DB> + Type<DB>,
    i64: Decode<'r, DB> + Type<DB>,
{
    fn decode(value: <DB as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
        let ty: Cow<'_, DB::TypeInfo> = value.type_info();
        // An integer (SQLite) must be 0 or 1; a boolean is taken as it is.
        if !ty.is_null() && <i64 as Type<DB>>::compatible(&ty) {
            match <i64 as Decode<'r, DB>>::decode(value)? {
                0 => Ok(Flag(false)),
                1 => Ok(Flag(true)),
                v => Err(format!("{v} is not 0 or 1").into()),
            }
        } else {
            <bool as Decode<'r, DB>>::decode(value).map(Flag)
        }
    }
}
