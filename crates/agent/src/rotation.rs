//! Agent token rotation, agent side: a `token.rotate` from the server is
//! written to `agent.json` (atomically: the old file stays whole until the
//! new one is on disk) and only then confirmed with `token.rotated`. The
//! file is the truth: every connect reads the token from it, so a token
//! saved just before a crash or a lost confirmation is the one used next.

use reqwest::header::HeaderValue;
use rm_core::token::{PresentedToken, TokenKind};
use rm_protocol::{ErrorBody, ErrorCode, Frame, TokenRotate, TokenRotated};

use crate::session;
use crate::state::StateDir;

/// Saves the new token and returns the reply: `token.rotated` once it is on
/// disk, an `error` when it is unusable or could not be saved (the server
/// then keeps accepting the old token, which this agent still holds).
pub(crate) async fn on_rotate(dir: &StateDir, rotate: TokenRotate) -> Frame {
    let token = rotate.token.trim().to_owned();
    let presented = match PresentedToken::parse_as(&token, TokenKind::Agent) {
        Ok(presented) if session::bearer(&token).is_ok() => presented,
        _ => {
            tracing::warn!("ignoring a token.rotate whose token is not an agent token");
            return Frame::new(ErrorBody::new(
                ErrorCode::BadRequest,
                "`token` is not an agent token (`rma.<id>.<secret>`); keeping the current one",
            ));
        }
    };
    let dir = dir.clone();
    let saved = tokio::task::spawn_blocking(move || {
        let mut state = dir.load_agent()?;
        state.agent_token = token;
        dir.save_agent(&state)
    })
    .await;
    match saved {
        Ok(Ok(path)) => {
            tracing::info!(
                token_id = %presented.id,
                file = %path.display(),
                "saved the new agent token from the server"
            );
            Frame::new(TokenRotated {
                token_id: Some(presented.id.to_string()),
            })
        }
        Ok(Err(e)) => not_saved(&e.to_string()),
        Err(e) => not_saved(&format!("the writer task failed: {e}")),
    }
}

fn not_saved(why: &str) -> Frame {
    tracing::error!("could not save the new agent token, keeping the current one: {why}");
    Frame::new(ErrorBody::new(
        ErrorCode::Internal,
        format!("the agent could not save its new token ({why}); it keeps using the current one"),
    ))
}

/// The `Authorization` value to connect with: the token in `agent.json`
/// now, or `last` when the file cannot be read (logged; the next attempt
/// tries again).
pub(crate) fn current_bearer(dir: &StateDir, last: &HeaderValue) -> HeaderValue {
    match dir
        .load_agent()
        .and_then(|state| session::bearer(&state.agent_token))
    {
        Ok(value) => value,
        Err(e) => {
            tracing::warn!("could not re-read the agent token, using the one loaded before: {e}");
            last.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::AgentState;
    use chrono::Utc;
    use rm_core::token::IssuedToken;
    use rm_protocol::Message;

    fn enrolled() -> (tempfile::TempDir, StateDir) {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = StateDir::new(tmp.path());
        dir.save_agent(&AgentState {
            server_url: "http://127.0.0.1:1".into(),
            host_id: "01HOST".into(),
            agent_token: "rma.01J0BF00000000000000000000.old".into(),
            enrolled_at: Utc::now(),
            tls: Default::default(),
            allow_restore_to_system_paths: false,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        (tmp, dir)
    }

    fn new_token() -> IssuedToken {
        IssuedToken::generate(TokenKind::Agent).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn a_new_token_is_saved_then_confirmed_with_its_id() {
        let (_tmp, dir) = enrolled();
        let issued = new_token();
        let token = issued.token.as_str();
        let reply = on_rotate(
            &dir,
            TokenRotate {
                token: token.into(),
            },
        )
        .await;
        assert_eq!(
            reply.message,
            Message::TokenRotated(TokenRotated {
                token_id: Some(issued.id.to_string())
            })
        );
        let state = dir.load_agent().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(state.agent_token, token);
        let fallback = session::bearer("rma.x.y").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            current_bearer(&dir, &fallback).to_str().ok(),
            Some(format!("Bearer {token}").as_str())
        );
    }

    #[tokio::test]
    async fn an_unusable_token_is_refused_and_the_old_one_kept() {
        let (_tmp, dir) = enrolled();
        let enrolment = IssuedToken::generate(TokenKind::Enrollment)
            .unwrap_or_else(|e| panic!("{e}"))
            .token;
        for bad in ["", enrolment.as_str(), "rma.bad\nline"] {
            let reply = on_rotate(&dir, TokenRotate { token: bad.into() }).await;
            assert!(matches!(reply.message, Message::Error(_)), "{bad:?}");
        }
        let state = dir.load_agent().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(state.agent_token, "rma.01J0BF00000000000000000000.old");
    }

    #[tokio::test]
    async fn a_failed_save_is_reported_not_confirmed() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // Not enrolled: there is no agent.json to update.
        let dir = StateDir::new(tmp.path());
        let reply = on_rotate(
            &dir,
            TokenRotate {
                token: new_token().token,
            },
        )
        .await;
        assert!(matches!(reply.message, Message::Error(_)));
    }
}
