//! Where a repository is and how to open it.
//!
//! The URL, password and extra environment (cloud keys) are secrets: the
//! URL and password reach restic on pipes, the backend variables through
//! the child's environment, and `Debug` prints them redacted so a stray
//! `{:?}` in a log line cannot leak them.

use std::collections::BTreeMap;
use std::fmt;

/// A restic repository: its URL, password and backend environment.
#[derive(Clone, PartialEq, Eq)]
pub struct Repository {
    /// restic's repository string (`/srv/restic`, `rest:http://host:8000/`,
    /// `s3:…`). Read by restic from a pipe (`--repository-file`).
    pub url: String,
    /// The repository password. Read by restic from a pipe
    /// (`--password-file`), never in argv or the environment. restic trims
    /// white space around it, so it must have none.
    pub password: String,
    /// Extra environment for the backend (`AWS_ACCESS_KEY_ID`,
    /// `RESTIC_REST_USERNAME`, …).
    pub env: BTreeMap<String, String>,
}

impl Repository {
    /// A repository without extra environment.
    pub fn new(url: impl Into<String>, password: impl Into<String>) -> Self {
        Repository {
            url: url.into(),
            password: password.into(),
            env: BTreeMap::new(),
        }
    }

    /// Adds one environment variable for the backend.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// The URL with any `user:password@` password masked, the way restic
    /// itself prints locations.
    pub fn redacted_url(&self) -> String {
        rm_core::redact::redact_url(&self.url)
    }
}

impl fmt::Debug for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: BTreeMap<&str, &str> = self
            .env
            .keys()
            .map(|k| (k.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("Repository")
            .field("url", &self.redacted_url())
            .field("password", &"<redacted>")
            .field("env", &env)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_password_and_env_values() {
        let repo = Repository::new("rest:http://alice:s3cr3t@host:8000/repo", "hunter2")
            .with_env("AWS_SECRET_ACCESS_KEY", "topsecret");
        let text = format!("{repo:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(!text.contains("topsecret"), "{text}");
        assert!(text.contains("AWS_SECRET_ACCESS_KEY"), "{text}");
        assert!(
            text.contains("rest:http://alice:***@host:8000/repo"),
            "{text}"
        );
    }
}
