//! The one error type of the agent. Every message is written for the
//! operator at the host's terminal: it names the file, URL or command
//! involved and, where there is one, the fix.

use std::path::PathBuf;

/// What can stop `enroll` or `run`.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The server URL is not an `http://` or `https://` URL we can use.
    #[error("invalid server URL `{url}`: {reason}")]
    InvalidServerUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS trust settings (`--ca-cert`, `--server-fingerprint`,
    /// `--insecure`) cannot be used; the message names the flag or file.
    #[error("TLS setup: {0}")]
    TlsSetup(String),
    /// The enrolment or agent token cannot be used.
    #[error("invalid token: {reason}")]
    InvalidToken {
        /// What is wrong with it (never the token itself).
        reason: String,
    },
    /// `enroll` found an existing enrolment and was not told to replace it.
    #[error(
        "this host is already enrolled ({} exists); pass --force to enrol again and replace it",
        path.display()
    )]
    AlreadyEnrolled {
        /// The existing state file.
        path: PathBuf,
    },
    /// `run` found no state file.
    #[error(
        "not enrolled: {} does not exist; run `restic-manager agent enroll --server URL --token TOKEN` first",
        path.display()
    )]
    NotEnrolled {
        /// The missing state file.
        path: PathBuf,
    },
    /// `agent.json` exists but cannot be understood.
    #[error(
        "enrolment file {} is corrupt ({source}); re-enrol with `restic-manager agent enroll --force …`",
        path.display()
    )]
    CorruptEnrollment {
        /// The file.
        path: PathBuf,
        /// What the JSON parser disliked.
        #[source]
        source: serde_json::Error,
    },
    /// A cached copy of what the server sent (`config.json`,
    /// `schedules.json`) cannot be understood; the server's next push
    /// replaces it.
    #[error("state file {} is corrupt: {source}", path.display())]
    CorruptState {
        /// The file.
        path: PathBuf,
        /// What the JSON parser disliked.
        #[source]
        source: serde_json::Error,
    },
    /// Reading or writing the state directory failed.
    #[error("could not {action} {}: {source}", path.display())]
    StateIo {
        /// What was being done (`create`, `read`, `write`, …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A value could not be turned into JSON for a state file.
    #[error("could not encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// serde's reason.
        #[source]
        source: serde_json::Error,
    },
    /// The enrolment request did not reach the server or got no answer.
    #[error("could not reach the server at {url}: {detail}")]
    ServerUnreachable {
        /// The URL that was called.
        url: String,
        /// The transport failure, with its causes.
        detail: String,
    },
    /// The server answered the enrolment with an error.
    #[error("the server refused the enrolment (HTTP {status}, {code}): {message}")]
    EnrollRejected {
        /// The HTTP status code.
        status: u16,
        /// The API error code (`unauthorized`, `bad_request`, …).
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// The server answered the enrolment with something we cannot read.
    #[error("unexpected answer from the server's enrolment endpoint: {0}")]
    BadEnrollResponse(String),
}

/// Renders an error and its chain of causes on one line, because transport
/// errors (reqwest, tungstenite) keep the useful part ("connection refused")
/// in their sources.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
