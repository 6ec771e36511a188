//! Enrolment: operators mint single-use, expiring tokens; a new host's agent
//! trades one for its own agent token.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use rm_core::token::{IssuedToken, PresentedToken, TokenKind};
use rm_core::HostId;
use rm_protocol::api::{
    CreateEnrollmentToken, EnrollRequest, EnrollResponse, EnrollmentTokenCreated,
};
use rm_store::{AgentToken, EnrollmentToken, NewHost, StoreError};
use serde::Serialize;

use super::{validate_label, ApiError, ApiJson, Operator};
use crate::state::AppState;

/// Longest lifetime an enrolment token may be given (30 days).
const MAX_TTL_SECONDS: u64 = 30 * 24 * 3600;

/// Longest host or token name.
pub(crate) const MAX_NAME_CHARS: usize = 128;

/// Longest host name (DNS allows 253).
const MAX_HOSTNAME_CHARS: usize = 253;

/// The one answer for every unusable enrolment token.
const TOKEN_UNUSABLE: &str = "enrolment token is unknown, expired or already used";

/// `POST /api/v1/enrollment-tokens`.
pub(crate) async fn create_token(
    State(state): State<AppState>,
    operator: Operator,
    ApiJson(req): ApiJson<CreateEnrollmentToken>,
) -> Result<(StatusCode, Json<EnrollmentTokenCreated>), ApiError> {
    let name = req
        .name
        .as_deref()
        .map(|n| validate_label("name", n, MAX_NAME_CHARS))
        .transpose()?;
    let ttl_seconds = match req.ttl_seconds {
        None => state.config().enrollment_ttl.as_secs(),
        Some(0) => return Err(ApiError::bad_request("`ttl_seconds` must be at least 1")),
        Some(s) if s > MAX_TTL_SECONDS => {
            return Err(ApiError::bad_request(format!(
                "`ttl_seconds` must be at most {MAX_TTL_SECONDS} (30 days)"
            )))
        }
        Some(s) => s,
    };
    let issued = IssuedToken::generate(TokenKind::Enrollment)?;
    let now = Utc::now();
    let ttl = i64::try_from(ttl_seconds).map_err(ApiError::internal)?;
    let record = EnrollmentToken {
        id: issued.id,
        name: name.clone(),
        token_hash: issued.hash,
        created_at: now,
        expires_at: now + chrono::Duration::seconds(ttl),
        used_at: None,
        host_id: None,
    };
    state.store().create_enrollment_token(&record).await?;
    tracing::info!(token_id = %record.id, by = %operator.user_id, "enrolment token created");
    let mut command = format!(
        "restic-manager agent enroll --server {} --token {}",
        shell_quote(&state.config().public_url),
        shell_quote(&issued.token)
    );
    if let Some(name) = &name {
        command.push_str(" --name ");
        command.push_str(&shell_quote(name));
    }
    Ok((
        StatusCode::CREATED,
        Json(EnrollmentTokenCreated {
            id: issued.id.to_string(),
            token: issued.token,
            expires_at: record.expires_at,
            command,
        }),
    ))
}

/// A pending token as listed (never the secret).
#[derive(Serialize)]
pub(crate) struct PendingToken {
    id: String,
    name: Option<String>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// `GET /api/v1/enrollment-tokens`: tokens not used and not expired.
pub(crate) async fn list_pending(
    State(state): State<AppState>,
    _operator: Operator,
) -> Result<Json<Vec<PendingToken>>, ApiError> {
    let tokens = state.store().pending_enrollment_tokens(Utc::now()).await?;
    Ok(Json(
        tokens
            .into_iter()
            .map(|t| PendingToken {
                id: t.id.to_string(),
                name: t.name,
                created_at: t.created_at,
                expires_at: t.expires_at,
            })
            .collect(),
    ))
}

/// `POST /api/v1/agents/enroll`: the token is the authentication.
pub(crate) async fn enroll(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<(StatusCode, Json<EnrollResponse>), ApiError> {
    let hostname = validate_label("hostname", &req.hostname, MAX_HOSTNAME_CHARS)?;
    let requested_name = req
        .name
        .as_deref()
        .map(|n| validate_label("name", n, MAX_NAME_CHARS))
        .transpose()?;
    let presented = PresentedToken::parse_as(req.token.trim(), TokenKind::Enrollment)
        .map_err(|_| ApiError::unauthorized(TOKEN_UNUSABLE))?;
    let now = Utc::now();
    let stored = state
        .store()
        .enrollment_token(presented.id)
        .await?
        .filter(|t| presented.verify(&t.token_hash) && t.used_at.is_none() && t.expires_at > now)
        .ok_or_else(|| ApiError::unauthorized(TOKEN_UNUSABLE))?;

    let host = NewHost {
        id: HostId::new(),
        name: requested_name
            .or(stored.name)
            .unwrap_or_else(|| hostname.clone()),
        hostname,
    };
    let issued = IssuedToken::generate(TokenKind::Agent)?;
    let agent_token = AgentToken {
        id: issued.id,
        host_id: host.id,
        token_hash: issued.hash,
        created_at: now,
    };
    match state
        .store()
        .enroll_host(stored.id, now, &host, &agent_token)
        .await
    {
        Ok(host) => {
            tracing::info!(host_id = %host.id, name = %host.name, "host enrolled");
            Ok((
                StatusCode::CREATED,
                Json(EnrollResponse {
                    host_id: host.id.to_string(),
                    agent_token: issued.token,
                }),
            ))
        }
        Err(StoreError::TokenSpent) => Err(ApiError::unauthorized(TOKEN_UNUSABLE)),
        Err(e) => Err(e.into()),
    }
}

/// Quotes `s` for a POSIX shell when it holds anything but safe characters.
fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_.:/@%+=,".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn shell_quoting() {
        assert_eq!(
            shell_quote("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(shell_quote("web 01"), "'web 01'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }
}
