//! First start: make sure an administrator exists, so a fresh server can be
//! logged into.

use chrono::Utc;
use rm_core::password::{generate_password, hash_password};
use rm_core::UserId;
use rm_store::prelude::*;
use rm_store::{StoreError, User};

use crate::ServerError;

/// The name of the account made on first start.
pub const FIRST_ADMIN: &str = "admin";

/// What [`ensure_first_admin`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstAdmin {
    /// Users already existed; nothing changed.
    AlreadyPresent,
    /// `admin` was created with the password the operator supplied.
    CreatedWithGivenPassword,
    /// `admin` was created with this generated password, to show once.
    CreatedWithGeneratedPassword(String),
}

/// Creates the `admin` user when there are no users at all, with
/// `password` (from `RM_ADMIN_PASSWORD`) or a generated one. Of several
/// servers doing this at once on one database, one creates it and the
/// others find it present.
pub async fn ensure_first_admin(
    store: &dyn Store,
    password: Option<&str>,
) -> Result<FirstAdmin, ServerError> {
    if store.count_users().await? > 0 {
        return Ok(FirstAdmin::AlreadyPresent);
    }
    let (password, outcome) = match password.filter(|p| !p.is_empty()) {
        Some(p) => (p.to_owned(), FirstAdmin::CreatedWithGivenPassword),
        None => {
            let generated = generate_password()?;
            (
                generated.clone(),
                FirstAdmin::CreatedWithGeneratedPassword(generated),
            )
        }
    };
    let created = store
        .create_user(
            &User {
                id: UserId::new(),
                username: FIRST_ADMIN.to_owned(),
                password_hash: hash_password(&password)?,
                created_at: Utc::now(),
                role: rm_core::Role::Admin,
                scope: None,
            },
            None,
        )
        .await;
    match created {
        Ok(()) => Ok(outcome),
        // Several servers started at once on an empty database: another
        // one made `admin` between the count and the insert.
        Err(StoreError::Conflict(_)) if store.count_users().await? > 0 => {
            Ok(FirstAdmin::AlreadyPresent)
        }
        Err(e) => Err(e.into()),
    }
}
