//! Who an operator is: password logins (throttled by
//! [`crate::throttle::LoginLimiter`] before the password is checked), login
//! sessions and API tokens, the session cookie the web UI uses, the CSRF
//! token that guards every state-changing request made with that cookie,
//! and the announcement of ended credentials that live streams stop on.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use axum::http::{header, HeaderMap};
use chrono::Utc;
use cookie::{Cookie, CookieBuilder, SameSite};
use rm_core::password::{verify_against_dummy, verify_password};
use rm_core::token::{IssuedToken, PresentedToken, TokenHash, TokenKind};
use rm_core::{TokenId, UserId};
use rm_store::{AuditActor, AuditActorKind, Session, StoreError};
use serde_json::json;
use std::time::Instant;

use crate::audit::{Action, Audit, Client, Target};
use crate::state::AppState;
use crate::throttle::{Refusal, Scope};

/// The web UI's session cookie.
pub(crate) const SESSION_COOKIE: &str = "rm_session";

/// An authenticated operator.
#[derive(Debug, Clone)]
pub(crate) struct Operator {
    /// Who.
    pub user_id: UserId,
    /// Their user name, as read with their role (pages and audit entries
    /// show it).
    pub username: String,
    /// The session behind this request, when it came from a login.
    pub session: Option<TokenId>,
    /// The session or API token behind this request: what per-session
    /// caches are keyed by.
    pub credential: TokenId,
    /// What this request may do: the user's role, or the API token's when
    /// that is narrower (read afresh at every request, so a demotion
    /// counts from the next one).
    pub role: rm_core::Role,
    /// The hosts it sees and acts on (`None`: every host).
    pub scope: Option<rm_core::Selector>,
}

/// Credentials that just stopped working; live streams opened with them end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "what", content = "id", rename_all = "snake_case")]
pub(crate) enum Ended {
    /// One session (logout) or API token (revoked).
    Credential(TokenId),
    /// Every session of a user (their password changed); their API tokens
    /// keep working.
    SessionsOf(UserId),
    /// Everything of a user (deleted).
    User(UserId),
    /// A user's role or scope changed: their streams end, so a client that
    /// reconnects is checked with the new role and scope.
    AccessOf(UserId),
}

impl Ended {
    /// Whether this ends `operator`'s credential.
    fn ends(&self, operator: &Operator) -> bool {
        match *self {
            Ended::Credential(id) => operator.credential == id,
            Ended::SessionsOf(user) => operator.user_id == user && operator.session.is_some(),
            Ended::User(user) | Ended::AccessOf(user) => operator.user_id == user,
        }
    }
}

/// How often a live stream re-reads its credential from the store: the
/// safety net for what no broadcast announces (expiry, a password reset
/// by the offline CLI, a missed broadcast).
const RECHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Resolves when `operator`'s credential ends: at once when this server
/// ends it (a broadcast, nothing per event), otherwise at the next
/// re-check after it expired or vanished from the store.
pub(crate) async fn credential_ended(state: AppState, operator: Operator) {
    use tokio::sync::broadcast::error::RecvError;
    let mut ended = state.ended_credentials();
    let mut recheck = tokio::time::interval(RECHECK_EVERY);
    recheck.tick().await;
    loop {
        tokio::select! {
            event = ended.recv() => match event {
                Ok(event) if event.ends(&operator) => return,
                Ok(_) => {}
                // Missed announcements: ask the store instead.
                Err(RecvError::Lagged(_)) => {
                    if !still_valid(&state, &operator).await {
                        return;
                    }
                }
                Err(RecvError::Closed) => return,
            },
            _ = recheck.tick() => {
                if !still_valid(&state, &operator).await {
                    return;
                }
            }
        }
    }
}

/// Whether `operator`'s session or API token still works. A store error
/// counts as no (the client reconnects and is checked afresh).
async fn still_valid(state: &AppState, operator: &Operator) -> bool {
    let now = Utc::now();
    let valid = match operator.session {
        Some(id) => state
            .store()
            .session(id)
            .await
            .map(|s| s.is_some_and(|s| s.expires_at > now)),
        None => state.store().api_token(operator.credential).await.map(|t| {
            t.is_some_and(|t| t.revoked_at.is_none() && t.expires_at.is_none_or(|at| at > now))
        }),
    };
    valid.unwrap_or(false)
}

/// The operator a session or API token string stands for, if it is valid.
pub(crate) async fn operator_for(
    state: &AppState,
    token: &str,
) -> Result<Option<Operator>, StoreError> {
    let Ok(presented) = token.parse::<PresentedToken>() else {
        return Ok(None);
    };
    let now = Utc::now();
    // (user, session, credential, narrower token role)
    let found = match presented.kind {
        TokenKind::Session => state
            .store()
            .session(presented.id)
            .await?
            .filter(|s| presented.verify(&s.token_hash) && s.expires_at > now)
            .map(|s| (s.user_id, Some(s.id), s.id, None)),
        TokenKind::Api => state
            .store()
            .api_token(presented.id)
            .await?
            .filter(|t| {
                presented.verify(&t.token_hash)
                    && t.revoked_at.is_none()
                    && t.expires_at.is_none_or(|at| at > now)
            })
            .map(|t| (t.user_id, None, t.id, t.role)),
        TokenKind::Agent | TokenKind::Enrollment => None,
    };
    let Some((user_id, session, credential, token_role)) = found else {
        return Ok(None);
    };
    // The user's role and scope are read at every request: a demotion or a
    // new scope counts from the next request, for tokens too.
    let Some(user) = state.store().user_by_id(user_id).await? else {
        return Ok(None);
    };
    let role = token_role.map_or(user.role, |narrower| narrower.min(user.role));
    Ok(Some(Operator {
        user_id,
        username: user.username,
        session,
        credential,
        role,
        scope: user.scope,
    }))
}

/// Counts a presented token that failed its check; `Some(retry_after)` when
/// the client's address is over its burst and should get 429 instead of
/// 401. Only ever called after a check failed, so a correct token is never
/// refused or slowed by it.
pub(crate) fn token_failed(state: &AppState, ip: Option<IpAddr>) -> Option<Duration> {
    let address = ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let throttled = state
        .token_failures()
        .failed(address, std::time::Instant::now());
    if throttled.is_some() {
        state.metrics().token_throttled();
        tracing::debug!(%address, "failed bearer-token check over the burst: 429");
    }
    throttled
}

/// The session token in the request's `rm_session` cookie (the first one,
/// when a browser sends several of that name).
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == SESSION_COOKIE)
        .map(|cookie| cookie.value().to_owned())
}

/// The CSRF token for a session: derived from the session token, which a
/// cross-site page cannot read, so it needs no storage.
pub(crate) fn csrf_token(session_token: &str) -> String {
    TokenHash::of(&format!("csrf:{session_token}")).to_hex()
}

/// Whether `presented` is the CSRF token of `session_token` (constant time).
pub(crate) fn csrf_ok(session_token: &str, presented: &str) -> bool {
    rm_core::secret::constant_time_eq(csrf_token(session_token).as_bytes(), presented.as_bytes())
}

/// The `Set-Cookie` value for a new session (`Secure` when the server is
/// reached over HTTPS).
pub(crate) fn session_cookie_header(state: &AppState, token: &str, max_age: Duration) -> String {
    let secure = state.config().public_url.starts_with("https://");
    new_session_cookie(token, max_age, secure)
}

fn new_session_cookie(token: &str, max_age: Duration, secure: bool) -> String {
    let max_age = cookie::time::Duration::try_from(max_age).unwrap_or(cookie::time::Duration::MAX);
    session_cookie_builder(token, max_age)
        .secure(secure)
        .build()
        .to_string()
}

/// The `Set-Cookie` value that ends the session cookie.
pub(crate) fn cleared_cookie_header() -> String {
    session_cookie_builder("", cookie::time::Duration::ZERO)
        .build()
        .to_string()
}

/// The session cookie's attributes, shared by setting and clearing it so a
/// browser sees the same cookie (name and path) both times.
fn session_cookie_builder(value: &str, max_age: cookie::time::Duration) -> CookieBuilder<'_> {
    Cookie::build((SESSION_COOKIE, value))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .max_age(max_age)
}

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoginError {
    /// Wrong user name or password (one message for both).
    #[error("invalid user name or password")]
    Invalid,
    /// Too many failures for this user name (from this address, or from
    /// anywhere); nothing was checked.
    #[error("too many failed logins for `{user}`{from}; try again in {}", wait_words(*retry_after))]
    RateLimited {
        /// The user name tried.
        user: String,
        /// " from this address", or nothing when the user-wide limit refused.
        from: &'static str,
        /// How long until an attempt is checked again.
        retry_after: Duration,
    },
    /// The limiter cannot decide (fail closed); nothing was checked.
    #[error("logins are refused for now: the login limiter is full or broken; try again in {}", wait_words(*retry_after))]
    Unavailable {
        /// When to try again.
        retry_after: Duration,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Making the session token failed.
    #[error(transparent)]
    Core(#[from] rm_core::CoreError),
}

/// "3 second(s)" or "15 minute(s)", rounded up.
fn wait_words(wait: Duration) -> String {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if secs < 60 {
        format!("{} second(s)", secs.max(1))
    } else {
        format!("{} minute(s)", secs.div_ceil(60))
    }
}

impl LoginError {
    /// The `Retry-After` of a refused attempt.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            LoginError::RateLimited { retry_after, .. }
            | LoginError::Unavailable { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Longest attempted user name copied into the audit log of a failed login.
const MAX_AUDITED_USERNAME_CHARS: usize = 64;

/// Records a refused login: nobody is known, so the actor is anonymous and
/// the name tried goes into the details. A refusal changes nothing, so its
/// entry is written alone; if that write fails the login stays refused
/// (the caller returns its refusal whatever happens here).
async fn audit_failure(state: &AppState, client: &Client, username: &str, reason: &str) {
    let tried: String = username
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_AUDITED_USERNAME_CHARS)
        .collect();
    let entry = Audit::as_actor(AuditActor::of_kind(AuditActorKind::Anonymous), client).entry(
        Action::AuthLoginFailed,
        None,
        json!({"username": tried, "reason": reason}),
    );
    if let Err(e) = state.store().record_audit(&entry).await {
        tracing::warn!(error = %e, "could not write the audit log entry of a refused login");
    }
}

/// Checks a password login from `client` and opens a session; audits
/// success and failure. Returns the session token (to show or set as a
/// cookie once) and its record.
pub(crate) async fn login(
    state: &AppState,
    username: &str,
    password: &str,
    client: &Client,
) -> Result<(String, Session), LoginError> {
    let username = username.trim();
    // Without a peer address (a router served without connect info) all
    // clients share one rate-limit bucket per user: stricter, never looser.
    let address = client.ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    // The attempt is counted before the password is checked: a burst of
    // parallel attempts is throttled exactly like a serial one.
    let reservation = match state
        .login_limiter()
        .begin(username, address, Instant::now())
    {
        Ok(reservation) => reservation,
        Err(refusal) => {
            state.metrics().login_throttled();
            let error = match refusal {
                Refusal::Throttled { scope, retry_after } => {
                    tracing::warn!(%username, %address, ?scope, "login refused: too many failures");
                    LoginError::RateLimited {
                        user: username.to_owned(),
                        from: match scope {
                            Scope::Pair => " from this address",
                            Scope::User => "",
                        },
                        retry_after,
                    }
                }
                Refusal::Unavailable { retry_after } => {
                    tracing::error!(%username, %address, "login refused: the login limiter cannot decide (full of active records, or its lock is poisoned)");
                    LoginError::Unavailable { retry_after }
                }
            };
            audit_failure(state, client, username, "rate_limited").await;
            return Err(error);
        }
    };
    let user = match state.store().user_by_name(username).await {
        Ok(user) => user,
        Err(e) => {
            // Nothing was checked: the slot goes back uncounted.
            reservation.release();
            return Err(e.into());
        }
    };
    // argon2 takes tens of milliseconds of CPU: off the async workers, so a
    // burst of logins cannot stall agents and the API.
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let attempt = password.to_owned();
    state.metrics().login_password_checked();
    let verified = tokio::task::spawn_blocking(move || match hash {
        Some(hash) => verify_password(&attempt, &hash),
        None => {
            verify_against_dummy(&attempt);
            false
        }
    })
    .await
    .unwrap_or(false);
    let Some(user) = user.filter(|_| verified) else {
        reservation.failed(Instant::now());
        tracing::info!(%username, %address, "failed login");
        audit_failure(state, client, username, "invalid").await;
        return Err(LoginError::Invalid);
    };
    reservation.succeeded();
    let issued = IssuedToken::generate(TokenKind::Session)?;
    let created = Utc::now();
    let ttl = chrono::Duration::from_std(state.config().session_ttl)
        .unwrap_or_else(|_| chrono::Duration::hours(12));
    let session = Session {
        id: issued.id,
        user_id: user.id,
        token_hash: issued.hash,
        created_at: created,
        expires_at: created + ttl,
    };
    let by = AuditActor {
        kind: AuditActorKind::User,
        user_id: Some(user.id),
        username: Some(user.username.clone()),
        token_id: None,
        token_name: None,
    };
    let entry = Audit::as_actor(by, client).entry(
        Action::AuthLogin,
        Some(Target::new("user", user.id)),
        json!({"expires_at": session.expires_at}),
    );
    // The session and its entry commit together: no session without it.
    state.store().create_session(&session, Some(&entry)).await?;
    // Expired sessions are swept here rather than by a timer: logins are
    // rare and this keeps the table small without another task.
    let _ = state.store().delete_expired_sessions(created).await;
    tracing::info!(username = %user.username, %address, "operator logged in");
    Ok((issued.token, session))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let token = csrf_token("rms.session-a");
        assert!(csrf_ok("rms.session-a", &token));
        assert!(!csrf_ok("rms.session-b", &token));
        assert!(!csrf_ok("rms.session-a", "not hex"));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "theme=dark; rm_session=rms.abc; other=1".parse().unwrap(),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("rms.abc"));
        headers.insert(header::COOKIE, "rm_sessionx=1".parse().unwrap());
        assert_eq!(session_cookie(&headers), None);
        // A pair that is not `name=value` does not hide the session.
        headers.insert(
            header::COOKIE,
            "junk; =x; rm_session=rms.def".parse().unwrap(),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("rms.def"));
        // Several Cookie headers: the first session cookie wins.
        headers.append(header::COOKIE, "rm_session=rms.ghi".parse().unwrap());
        assert_eq!(session_cookie(&headers).as_deref(), Some("rms.def"));
    }

    /// The attributes of a `Set-Cookie` value, sorted, without the pair.
    fn attributes(set_cookie: &str) -> Vec<&str> {
        let mut parts: Vec<&str> = set_cookie.split("; ").skip(1).collect();
        parts.sort_unstable();
        parts
    }

    #[test]
    fn the_session_cookie_keeps_its_attributes() {
        let plain = new_session_cookie("rms.abc", Duration::from_secs(3600), false);
        assert!(plain.starts_with("rm_session=rms.abc; "), "{plain}");
        assert_eq!(
            attributes(&plain),
            ["HttpOnly", "Max-Age=3600", "Path=/", "SameSite=Lax"]
        );
        let tls = new_session_cookie("rms.abc", Duration::from_secs(60), true);
        assert_eq!(
            attributes(&tls),
            ["HttpOnly", "Max-Age=60", "Path=/", "SameSite=Lax", "Secure"]
        );
        let cleared = cleared_cookie_header();
        assert!(cleared.starts_with("rm_session=; "), "{cleared}");
        assert_eq!(
            attributes(&cleared),
            ["HttpOnly", "Max-Age=0", "Path=/", "SameSite=Lax"]
        );
    }
}
