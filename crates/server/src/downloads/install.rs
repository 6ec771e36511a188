//! `GET /install.sh`: the agent installer, a POSIX `sh` script with this
//! server's public URL, TLS fingerprint and the SHA-256 of every agent
//! binary it offers filled in (docs/install.md).
//!
//! The hashes travel inside the script so that the binary, fetched later
//! and possibly over a connection whose certificate is not checked (a
//! self-signed server), is exactly as trusted as the script itself.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// The script, with `@@NAME@@` placeholders.
const TEMPLATE: &str = include_str!("install.sh");

/// The agent's default state directory, as `agent enroll` and `agent run`
/// default it (a test of the binary crate checks the two agree).
pub const DEFAULT_AGENT_STATE_DIR: &str = "/var/lib/restic-manager/agent";

/// What the server fills into the script.
#[derive(Debug, Clone)]
pub struct InstallScript<'a> {
    /// The server's public URL (no trailing slash).
    pub server_url: &'a str,
    /// `sha256:<hex>` of the server's certificate, when it serves TLS.
    pub fingerprint: Option<String>,
    /// `SHA256SUMS` as `/download/agent/SHA256SUMS` serves it.
    pub sums: &'a str,
}

impl InstallScript<'_> {
    /// The script text. Every value is single-quoted, so nothing in it can
    /// end the assignment or be expanded by the shell.
    pub fn render(&self) -> String {
        TEMPLATE
            .replace("@@SERVER_URL@@", &sh_quote(self.server_url))
            .replace(
                "@@SERVER_FINGERPRINT@@",
                &sh_quote(self.fingerprint.as_deref().unwrap_or("")),
            )
            .replace("@@EMBEDDED_SUMS@@", &sh_quote(self.sums))
            .replace("@@SERVER_VERSION@@", &sh_quote(env!("CARGO_PKG_VERSION")))
            .replace("@@DEFAULT_STATE_DIR@@", &sh_quote(DEFAULT_AGENT_STATE_DIR))
    }
}

/// `s` in single quotes, each `'` written as `'\''`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub(crate) async fn script(State(state): State<AppState>) -> Response {
    let sums = match state.downloads().sums().await {
        Ok(sums) => sums,
        Err(e) => return super::unavailable(&e),
    };
    let config = state.config();
    let text = InstallScript {
        server_url: &config.public_url,
        fingerprint: config.tls_fingerprint.as_ref().map(ToString::to_string),
        sums: &sums,
    }
    .render();
    (
        [
            // text/plain, so a browser shows it for reading before piping.
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            // It carries the current hashes: never a stale copy.
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled_and_values_are_quoted() {
        let text = InstallScript {
            server_url: "http://it's.example:8080",
            fingerprint: Some(String::from("sha256:abcd")),
            sums: "aa  linux-x86_64\nbb  linux-aarch64\n",
        }
        .render();
        assert!(!text.contains("@@"), "{text}");
        assert!(text.contains(r"SERVER_URL='http://it'\''s.example:8080'"));
        assert!(text.contains("SERVER_FINGERPRINT='sha256:abcd'"));
        assert!(text.contains("EMBEDDED_SUMS='aa  linux-x86_64\nbb  linux-aarch64\n'"));
        assert!(text.contains(&format!("DEFAULT_STATE_DIR='{DEFAULT_AGENT_STATE_DIR}'")));
    }

    #[test]
    fn without_tls_the_fingerprint_is_empty() {
        let text = InstallScript {
            server_url: "http://s:8080",
            fingerprint: None,
            sums: "",
        }
        .render();
        assert!(text.contains("SERVER_FINGERPRINT=''\n"));
    }
}
