//! Enrolment: trade a single-use enrolment token for this host's agent token
//! and write the state directory.
//!
//! Everything that can be checked locally (URL, token, an existing
//! enrolment, a writable state directory) is checked before the request,
//! because the enrolment token is spent the moment the server accepts it.

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use rm_protocol::api::{ApiError, EnrollRequest, EnrollResponse};

use crate::error::AgentError;
use crate::server_url::ServerUrl;
use crate::state::{AgentState, StateDir};
use crate::tls::{Trust, TrustOptions, TrustSettings};

/// How long the enrolment request may take in total.
const ENROLL_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest piece of a non-JSON error body quoted back to the operator.
const MAX_QUOTED_BODY: usize = 300;

/// What `restic-manager agent enroll` was asked to do.
#[derive(Clone)]
pub struct EnrollOptions {
    /// The server's base URL, e.g. `http://backup.example.com:8080`.
    pub server_url: String,
    /// The single-use enrolment token from the server's UI or API.
    pub token: String,
    /// The display name for this host; the server picks one when `None`.
    pub name: Option<String>,
    /// Where to write `agent.json`.
    pub state_dir: PathBuf,
    /// Labels to ask for besides the token's (checked by the server).
    pub labels: std::collections::BTreeMap<String, String>,
    /// Replace an existing enrolment.
    pub force: bool,
    /// How to trust an https:// server; saved for `run`.
    pub trust: TrustOptions,
}

impl std::fmt::Debug for EnrollOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollOptions")
            .field("server_url", &self.server_url)
            .field("token", &"<redacted>")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("state_dir", &self.state_dir)
            .field("force", &self.force)
            .field("trust", &self.trust)
            .finish()
    }
}

/// A successful enrolment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    /// The host's id on the server.
    pub host_id: String,
    /// The `agent.json` that was written.
    pub state_file: PathBuf,
}

/// Enrols this host with the server and writes `agent.json`.
pub async fn enroll(opts: EnrollOptions) -> Result<Enrolled, AgentError> {
    let server = ServerUrl::parse(&opts.server_url)?;
    let (trust, tls) = Trust::new(&server, &TrustSettings::default(), &opts.trust)?;
    let token = opts.token.trim();
    if token.is_empty() {
        return Err(AgentError::InvalidToken {
            reason: "the enrolment token is empty".into(),
        });
    }
    let name = opts
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);

    let dir = StateDir::new(&opts.state_dir);
    if dir.is_enrolled() && !opts.force {
        return Err(AgentError::AlreadyEnrolled {
            path: dir.agent_file(),
        });
    }
    dir.create()?;
    dir.warn_if_exposed();
    dir.check_writable()?;

    let request = EnrollRequest {
        token: token.to_owned(),
        name,
        hostname: crate::hostname(),
        labels: opts.labels.clone(),
    };
    // The operator's local opt-in outlives a new enrolment.
    let allow_restore_to_system_paths = dir
        .load_agent()
        .is_ok_and(|old| old.allow_restore_to_system_paths);
    let response = post_enroll(&server, &trust, &request).await?;

    let state = AgentState {
        server_url: server.to_string(),
        host_id: response.host_id.clone(),
        agent_token: response.agent_token,
        enrolled_at: Utc::now(),
        tls,
        allow_restore_to_system_paths,
    };
    dir.clear_cache()?;
    let state_file = dir.save_agent(&state)?;
    tracing::info!(
        host_id = %state.host_id,
        server = %state.server_url,
        state_file = %state_file.display(),
        "enrolled"
    );
    Ok(Enrolled {
        host_id: response.host_id,
        state_file,
    })
}

async fn post_enroll(
    server: &ServerUrl,
    trust: &Trust,
    request: &EnrollRequest,
) -> Result<EnrollResponse, AgentError> {
    let url = server.enroll_url();
    let unreachable = |e: reqwest::Error| AgentError::ServerUnreachable {
        url: url.to_string(),
        detail: crate::tls::describe(&e),
    };
    let tls = match trust.client_config() {
        Some(config) => config.as_ref().clone(),
        None => crate::tls::unused_http_config()?,
    };
    let client = reqwest::Client::builder()
        .timeout(ENROLL_TIMEOUT)
        .user_agent(crate::user_agent())
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(unreachable)?;
    let response = client
        .post(url.clone())
        .json(request)
        .send()
        .await
        .map_err(unreachable)?;

    let status = response.status();
    let body = response.text().await.map_err(unreachable)?;
    if !status.is_success() {
        return Err(rejection(status, &body));
    }
    let enrolled: EnrollResponse = serde_json::from_str(&body).map_err(|e| {
        AgentError::BadEnrollResponse(format!(
            "HTTP {status} with a body that is not {{host_id, agent_token}} ({e})"
        ))
    })?;
    if enrolled.host_id.trim().is_empty() {
        return Err(AgentError::BadEnrollResponse("the host id is empty".into()));
    }
    // The token goes into an HTTP header on every connect; refuse one that
    // could never be sent rather than failing later in a reconnect loop.
    if enrolled.agent_token.is_empty()
        || !enrolled.agent_token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(AgentError::BadEnrollResponse(
            "the agent token is empty or contains characters a header cannot carry".into(),
        ));
    }
    Ok(enrolled)
}

/// Turns an error status into the server's own words when it sent the
/// standard `{"error": {"code", "message"}}` body, or a quote otherwise (a
/// proxy's HTML page, say).
fn rejection(status: reqwest::StatusCode, body: &str) -> AgentError {
    if let Ok(api) = serde_json::from_str::<ApiError>(body) {
        return AgentError::EnrollRejected {
            status: status.as_u16(),
            code: api.error.code,
            message: api.error.message,
        };
    }
    let body = body.trim();
    let message = match body.char_indices().nth(MAX_QUOTED_BODY) {
        Some((cut, _)) => format!("{}…", &body[..cut]),
        None if body.is_empty() => "(no details in the response)".to_owned(),
        None => body.to_owned(),
    };
    AgentError::EnrollRejected {
        status: status.as_u16(),
        code: status
            .canonical_reason()
            .unwrap_or("unexpected status")
            .to_lowercase()
            .replace(' ', "_"),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_keep_the_servers_words() {
        let err = rejection(
            reqwest::StatusCode::UNAUTHORIZED,
            r#"{"error":{"code":"unauthorized","message":"enrolment token is already used or expired"}}"#,
        );
        let text = err.to_string();
        assert!(text.contains("401"), "{text}");
        assert!(
            text.contains("enrolment token is already used or expired"),
            "{text}"
        );
    }

    #[test]
    fn other_error_bodies_are_quoted_briefly() {
        let err = rejection(reqwest::StatusCode::BAD_GATEWAY, &"<html>".repeat(1000));
        let text = err.to_string();
        assert!(text.contains("502"), "{text}");
        assert!(text.len() < 600, "{text}");
        let err = rejection(reqwest::StatusCode::NOT_FOUND, "");
        assert!(err.to_string().contains("no details"));
    }

    #[test]
    fn debug_hides_the_token() {
        let opts = EnrollOptions {
            server_url: "http://x".into(),
            token: "rme_secret".into(),
            name: None,
            labels: Default::default(),
            state_dir: PathBuf::from("/tmp/x"),
            force: false,
            trust: TrustOptions::default(),
        };
        assert!(!format!("{opts:?}").contains("rme_secret"));
    }
}
