//! The audit log of operator actions: the action names, the [`Client`]
//! extractor (address and User-Agent of the request), and [`Audit`], who
//! made a change and from where, which builds the change's entry.
//!
//! An entry and the change it records commit together or not at all: the
//! code making a change builds its entry first (ids are chosen before the
//! change is written, so the entry can name what the change creates) and
//! hands it to the store method that makes the change, which writes both
//! in one transaction. If that write fails the request fails with it, and
//! neither exists. Only events that change nothing (a refused login) are
//! written alone. Details are small facts chosen by each handler, never
//! secrets; a handler that passed something large anyway gets it cut down
//! here.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::USER_AGENT;
use axum::http::request::Parts;
use chrono::Utc;
use rm_protocol::api::{AuditActorView, AuditEntryView};
use rm_store::{AuditActor, AuditActorKind, AuditEntry, NewAuditEntry};
use serde_json::Value;

use crate::auth::Operator;
use crate::state::AppState;

/// Longest User-Agent kept, in characters.
const MAX_USER_AGENT_CHARS: usize = 200;
/// Details larger than this (serialised) are cut down field by field.
const MAX_DETAILS_BYTES: usize = 2048;
/// When cutting down, fields larger than this are left out (and named).
const MAX_FIELD_BYTES: usize = 256;

macro_rules! actions {
    ($($(#[$doc:meta])* $name:ident = $text:literal,)*) => {
        /// What an audit entry records, as `area.verb`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Action {
            $($(#[$doc])* $name,)*
        }

        impl Action {
            /// Every action, in the order the audit page offers them.
            pub const ALL: &'static [Action] = &[$(Action::$name,)*];

            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Action::$name => $text,)*
                }
            }
        }
    };
}

actions! {
    /// A password login opened a session.
    AuthLogin = "auth.login",
    /// A password login was refused (wrong name or password, or too many
    /// failures).
    AuthLoginFailed = "auth.login_failed",
    /// A session was ended.
    AuthLogout = "auth.logout",
    /// An enrolment token was made.
    EnrollmentTokenCreate = "enrollment_token.create",
    /// A host enrolled with an enrolment token.
    HostEnroll = "host.enroll",
    /// A host was deleted (its agent token revoked).
    HostDelete = "host.delete",
    /// A host's agent token rotation was started.
    AgentTokenRotate = "agent_token.rotate",
    /// A host's agent tokens were revoked.
    AgentTokenRevoke = "agent_token.revoke",
    /// A host's own settings (name, labels, freshness) were changed.
    HostUpdate = "host.update",
    /// A host's repository settings were set.
    RepositorySet = "repository.set",
    /// A host's own repository settings were removed (its policy's apply).
    RepositoryDelete = "repository.delete",
    /// A host's repository password was shown to an operator.
    RepositoryPasswordShow = "repository.password_show",
    /// An operator downloaded a file or folder of a snapshot (details:
    /// snapshot, path, format).
    SnapshotDownload = "snapshot.download",
    /// A fleet policy was made.
    PolicyCreate = "policy.create",
    /// A fleet policy was changed.
    PolicyUpdate = "policy.update",
    /// A fleet policy was deleted.
    PolicyDelete = "policy.delete",
    /// An operator asked for the agents of a selection to be upgraded.
    AgentUpgrade = "agent.upgrade",
    /// An operator started one job on each host of a selection.
    JobBulkCreate = "job.bulk_create",
    /// An operator started a job.
    JobCreate = "job.create",
    /// An operator cancelled a job.
    JobCancel = "job.cancel",
    /// A schedule was added.
    ScheduleCreate = "schedule.create",
    /// A schedule was changed.
    ScheduleUpdate = "schedule.update",
    /// A schedule was deleted.
    ScheduleDelete = "schedule.delete",
    /// An operator account was made.
    UserCreate = "user.create",
    /// An operator account was deleted.
    UserDelete = "user.delete",
    /// An admin changed a user's role or scope (details: old and new).
    UserRoleChange = "user.role_change",
    /// Operators changed their own password.
    UserPasswordChange = "user.password_change",
    /// `restic-manager admin reset-password` set someone's password.
    UserPasswordReset = "user.password_reset",
    /// An API token was made.
    ApiTokenCreate = "api_token.create",
    /// An API token was revoked.
    ApiTokenRevoke = "api_token.revoke",
    /// `restic-manager admin reset-sealed-secrets` discarded every sealed
    /// secret and adopted the current key.
    SealedSecretsReset = "sealed_secrets.reset",
    /// The server fired an alert.
    AlertFire = "alert.fire",
    /// The server resolved an alert.
    AlertResolve = "alert.resolve",
    /// An operator acknowledged an alert (no more repeats).
    AlertAck = "alert.ack",
    /// An operator silenced notifications for a selector until a time.
    SilenceCreate = "silence.create",
    /// An operator ended a silence.
    SilenceDelete = "silence.delete",
    /// A notification channel was made.
    ChannelCreate = "channel.create",
    /// A notification channel was changed.
    ChannelUpdate = "channel.update",
    /// A notification channel was deleted (with what was queued for it).
    ChannelDelete = "channel.delete",
    /// A test message was sent through a notification channel.
    ChannelTest = "channel.test",
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a request came from: the peer address (from the listener's
/// connect info; absent when the router is served without it) and the
/// User-Agent, cleaned of control characters and truncated.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// The peer's address.
    pub(crate) ip: Option<IpAddr>,
    /// Its User-Agent.
    pub(crate) user_agent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            // An IPv4 client of a dual-stack listener shows as ::ffff:a.b.c.d.
            .map(|ConnectInfo(peer)| peer.ip().to_canonical());
        let user_agent = parts
            .headers
            .get(USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .map(|ua| {
                ua.chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_USER_AGENT_CHARS)
                    .collect::<String>()
            })
            .filter(|ua| !ua.is_empty());
        Ok(Client { ip, user_agent })
    }
}

/// What an action was done to.
#[derive(Debug, Clone)]
pub struct Target {
    kind: &'static str,
    id: String,
}

impl Target {
    /// The `kind` (`host`, `job`, …) with id `id`.
    pub fn new(kind: &'static str, id: impl std::fmt::Display) -> Target {
        Target {
            kind,
            id: id.to_string(),
        }
    }
}

/// Builds the audit entry of a change from what the change is about to
/// write (the new schedule, job, token…), so the entry can name it. Code
/// that makes a change on an operator's behalf takes one; callers that are
/// not operators (schedule fires, the server's own jobs) pass `None`.
pub type EntryFor<'a, T> = &'a (dyn Fn(&T) -> NewAuditEntry + Send + Sync);

/// Who makes an audited change, and from where: the actor (named as they
/// are now, so the entry still says who it was after they are gone) and
/// the request's address and User-Agent.
#[derive(Debug, Clone)]
pub struct Audit {
    actor: AuditActor,
    client: Client,
}

impl Audit {
    /// `operator`, from `client`. Looks up the operator's name (and the
    /// API token's name).
    pub(crate) async fn by(state: &AppState, operator: &Operator, client: &Client) -> Audit {
        let store = state.store();
        let username = Some(operator.username.clone());
        let actor = match operator.session {
            Some(_) => AuditActor {
                kind: AuditActorKind::User,
                user_id: Some(operator.user_id),
                username,
                token_id: None,
                token_name: None,
            },
            None => AuditActor {
                kind: AuditActorKind::ApiToken,
                user_id: Some(operator.user_id),
                username,
                token_id: Some(operator.credential),
                token_name: store
                    .api_token(operator.credential)
                    .await
                    .ok()
                    .flatten()
                    .map(|t| t.name),
            },
        };
        Audit::as_actor(actor, client)
    }

    /// `actor` (for actions not done by a logged-in operator: logins,
    /// enrolments), from `client`.
    pub(crate) fn as_actor(actor: AuditActor, client: &Client) -> Audit {
        Audit {
            actor,
            client: client.clone(),
        }
    }

    /// `restic-manager admin`, run on the server machine (so without an
    /// address).
    pub fn cli() -> Audit {
        Audit {
            actor: AuditActor::of_kind(AuditActorKind::Cli),
            client: Client {
                ip: None,
                user_agent: Some(format!(
                    "restic-manager/{} admin",
                    env!("CARGO_PKG_VERSION")
                )),
            },
        }
    }

    /// Who this is, for a person: the operator's name (with the API token's
    /// name when it was one), else the kind of actor.
    pub(crate) fn who(&self) -> String {
        match (&self.actor.username, &self.actor.token_name) {
            (Some(user), Some(token)) => format!("{user} (API token {token})"),
            (Some(user), None) => user.clone(),
            (None, _) => self.actor.kind.as_str().to_owned(),
        }
    }

    /// The server itself (alerts it fires and resolves).
    pub fn server() -> Audit {
        Audit {
            actor: AuditActor::of_kind(AuditActorKind::Server),
            client: Client {
                ip: None,
                user_agent: None,
            },
        }
    }

    /// The entry saying that this actor does `action` to `target`, now.
    pub fn entry(&self, action: Action, target: Option<Target>, details: Value) -> NewAuditEntry {
        NewAuditEntry {
            at: Utc::now(),
            actor: self.actor.clone(),
            action: action.as_str().to_owned(),
            target_type: target.as_ref().map(|t| t.kind.to_owned()),
            target_id: target.map(|t| t.id),
            details: bounded(details),
            ip: self.client.ip.map(|ip| ip.to_string()),
            user_agent: self.client.user_agent.clone(),
        }
    }
}

/// `details` if small; otherwise its small fields plus `omitted`, the
/// names of the fields left out.
fn bounded(details: Value) -> Value {
    if details.to_string().len() <= MAX_DETAILS_BYTES {
        return details;
    }
    let Value::Object(fields) = details else {
        return serde_json::json!({"omitted": ["details"]});
    };
    let mut kept = serde_json::Map::new();
    let mut omitted = Vec::new();
    for (name, value) in fields {
        if value.to_string().len() <= MAX_FIELD_BYTES {
            kept.insert(name, value);
        } else {
            omitted.push(Value::String(name));
        }
    }
    kept.insert(String::from("omitted"), Value::Array(omitted));
    Value::Object(kept)
}

/// The API form of an entry.
pub(crate) fn view(entry: AuditEntry) -> AuditEntryView {
    let e = entry.entry;
    AuditEntryView {
        id: entry.id,
        at: e.at,
        actor: AuditActorView {
            kind: e.actor.kind.as_str().to_owned(),
            user_id: e.actor.user_id.map(|id| id.to_string()),
            username: e.actor.username,
            token_id: e.actor.token_id.map(|id| id.to_string()),
            token_name: e.actor.token_name,
        },
        action: e.action,
        target_type: e.target_type,
        target_id: e.target_id,
        details: e.details,
        ip: e.ip,
        user_agent: e.user_agent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn action_names_are_area_dot_verb_and_unique() {
        let names: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        for name in &names {
            let (area, verb) = name.split_once('.').expect("area.verb");
            assert!(!area.is_empty() && !verb.is_empty(), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_'),
                "{name}"
            );
        }
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn large_details_keep_their_small_fields() {
        let small = json!({"kind": "backup", "paths": ["/srv"]});
        assert_eq!(bounded(small.clone()), small);
        let big = json!({"kind": "backup", "paths": vec!["/a/very/long/path"; 500]});
        assert_eq!(
            bounded(big),
            json!({"kind": "backup", "omitted": ["paths"]})
        );
        assert_eq!(
            bounded(Value::String("x".repeat(5000))),
            json!({"omitted": ["details"]})
        );
    }
}
