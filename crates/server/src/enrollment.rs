//! Enrolment as a service, shared by the HTTP API and the offline admin
//! command: operators mint single-use, expiring tokens; a new host's agent
//! trades one for its own agent token.

use chrono::Utc;
use rm_core::fingerprint::CertFingerprint;
use rm_core::token::{IssuedToken, PresentedToken, TokenKind};
use rm_core::HostId;
use rm_core::Labels;
use rm_protocol::api::{
    CreateEnrollmentToken, EnrollRequest, EnrollResponse, EnrollmentTokenCreated,
};
use rm_store::prelude::*;
use rm_store::{AgentToken, AuditActor, AuditActorKind, EnrollmentToken, NewHost, StoreError};

use crate::audit::{Action, Audit, Client, Target};
use crate::config::ServerConfig;

/// Longest lifetime an enrolment token may be given (30 days).
pub const MAX_TTL_SECONDS: u64 = 30 * 24 * 3600;

/// Longest host or token name.
pub const MAX_NAME_CHARS: usize = 128;

/// Longest host name (DNS allows 253).
pub const MAX_HOSTNAME_CHARS: usize = 253;

/// What can go wrong issuing or spending an enrolment token.
#[derive(Debug, thiserror::Error)]
pub enum EnrollmentError {
    /// The request is wrong; the message names the field and why.
    #[error("{0}")]
    Invalid(String),
    /// The token is unknown, forged, expired or spent: one answer for all,
    /// so a caller learns nothing about which.
    #[error("enrolment token is unknown, expired or already used")]
    TokenUnusable,
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// Randomness failed.
    #[error(transparent)]
    Core(#[from] rm_core::CoreError),
}

impl From<StoreError> for EnrollmentError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TokenSpent => EnrollmentError::TokenUnusable,
            other => EnrollmentError::Store(other),
        }
    }
}

/// Checks a display name or host name: trimmed, 1–`max` characters, no
/// control characters. Returns the trimmed value.
pub fn validate_label(field: &str, value: &str, max: usize) -> Result<String, EnrollmentError> {
    let value = value.trim();
    let problem = if value.is_empty() {
        Some(String::from("must not be empty"))
    } else if value.chars().count() > max {
        Some(format!("is longer than {max} characters"))
    } else if value.chars().any(char::is_control) {
        Some(String::from("must not contain control characters"))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(EnrollmentError::Invalid(format!("`{field}` {problem}"))),
        None => Ok(value.to_owned()),
    }
}

/// Creates an enrolment token valid for `ttl_seconds` (or the server's
/// default), and the command line that enrols a host with it against the
/// server's public URL (pinning its TLS certificate, when it has one).
/// With `audit`, the token and its audit entry are written together.
pub async fn issue_token(
    store: &dyn Store,
    server: &ServerConfig,
    request: &CreateEnrollmentToken,
    audit: Option<&Audit>,
) -> Result<EnrollmentTokenCreated, EnrollmentError> {
    let requested_name = request.name.as_deref();
    let ttl_seconds = request.ttl_seconds;
    let labels = Labels::parse("labels", request.labels.clone())
        .map_err(|e| EnrollmentError::Invalid(e.to_string()))?;
    let name = requested_name
        .map(|n| validate_label("name", n, MAX_NAME_CHARS))
        .transpose()?;
    let ttl_seconds = match ttl_seconds {
        None => server.enrollment_ttl.as_secs(),
        Some(0) => {
            return Err(EnrollmentError::Invalid(String::from(
                "`ttl_seconds` must be at least 1",
            )))
        }
        Some(s) if s > MAX_TTL_SECONDS => {
            return Err(EnrollmentError::Invalid(format!(
                "`ttl_seconds` must be at most {MAX_TTL_SECONDS} (30 days)"
            )))
        }
        Some(s) => s,
    };
    let ttl = chrono::Duration::seconds(i64::try_from(ttl_seconds).unwrap_or(i64::MAX));
    let issued = IssuedToken::generate(TokenKind::Enrollment)?;
    let now = Utc::now();
    let record = EnrollmentToken {
        id: issued.id,
        name: name.clone(),
        token_hash: issued.hash,
        created_at: now,
        expires_at: now + ttl,
        used_at: None,
        host_id: None,
        labels,
    };
    let entry = audit.map(|by| {
        by.entry(
            Action::EnrollmentTokenCreate,
            Some(Target::new("enrollment_token", record.id)),
            serde_json::json!({
                "name": requested_name,
                "expires_at": record.expires_at,
                "labels": record.labels.to_string(),
            }),
        )
    });
    store
        .create_enrollment_token(&record, entry.as_ref())
        .await?;
    let command = install_command(&server.public_url, &issued.token, name.as_deref());
    let enroll_command = enroll_command(
        &server.public_url,
        &issued.token,
        name.as_deref(),
        server.tls_fingerprint.as_ref(),
    );
    Ok(EnrollmentTokenCreated {
        id: issued.id.to_string(),
        token: issued.token,
        expires_at: record.expires_at,
        command,
        enroll_command,
    })
}

/// Spends the request's enrolment token on a new host and returns the
/// host's id and its agent token. With `from` (the request's client), the
/// host and its `host.enroll` audit entry are written together; the token
/// is the actor (by its public id and name, never the secret).
pub async fn enroll(
    store: &dyn Store,
    req: &EnrollRequest,
    from: Option<&Client>,
) -> Result<EnrollResponse, EnrollmentError> {
    let hostname = validate_label("hostname", &req.hostname, MAX_HOSTNAME_CHARS)?;
    let requested_name = req
        .name
        .as_deref()
        .map(|n| validate_label("name", n, MAX_NAME_CHARS))
        .transpose()?;
    let requested_labels = Labels::parse("labels", req.labels.clone())
        .map_err(|e| EnrollmentError::Invalid(e.to_string()))?;
    let presented = PresentedToken::parse_as(req.token.trim(), TokenKind::Enrollment)
        .map_err(|_| EnrollmentError::TokenUnusable)?;
    let now = Utc::now();
    let stored = store
        .enrollment_token(presented.id)
        .await?
        .filter(|t| presented.verify(&t.token_hash) && t.used_at.is_none() && t.expires_at > now)
        .ok_or(EnrollmentError::TokenUnusable)?;

    let token_name = stored.name.clone();
    let labels = if requested_labels.is_empty() {
        None
    } else {
        Some(merge_labels(&stored.labels, &requested_labels)?)
    };
    let host = NewHost {
        id: HostId::new(),
        name: requested_name
            .or(stored.name)
            .unwrap_or_else(|| hostname.clone()),
        hostname,
        labels,
    };
    let entry = from.map(|client| {
        let actor = AuditActor {
            kind: AuditActorKind::EnrollmentToken,
            user_id: None,
            username: None,
            token_id: Some(stored.id),
            token_name,
        };
        Audit::as_actor(actor, client).entry(
            Action::HostEnroll,
            Some(Target::new("host", host.id)),
            serde_json::json!({"name": host.name, "hostname": host.hostname}),
        )
    });
    let issued = IssuedToken::generate(TokenKind::Agent)?;
    let agent_token = AgentToken {
        id: issued.id,
        host_id: host.id,
        token_hash: issued.hash,
        created_at: now,
        pending: false,
    };
    // The store re-checks use and expiry atomically, so two racing
    // enrolments with one token cannot both win.
    let host = store
        .enroll_host(stored.id, now, &host, &agent_token, entry.as_ref())
        .await?;
    tracing::info!(host_id = %host.id, name = %host.name, "host enrolled");
    Ok(EnrollResponse {
        host_id: host.id.to_string(),
        agent_token: issued.token,
    })
}

/// The token's labels and those the enrolling host asks for: the token's
/// are what the operator decided, so a requested key may add to them but
/// never change one (`400` naming `labels.<key>`).
fn merge_labels(token: &Labels, requested: &Labels) -> Result<Labels, EnrollmentError> {
    let mut merged = token.as_map().clone();
    for (key, value) in requested.as_map() {
        match token.get(key) {
            Some(set) if set != value => {
                return Err(EnrollmentError::Invalid(format!(
                    "`labels.{key}` is `{set}` by the enrolment token and cannot be changed at enrolment"
                )))
            }
            _ => {
                merged.insert(key.clone(), value.clone());
            }
        }
    }
    Labels::parse("labels", merged).map_err(|e| EnrollmentError::Invalid(e.to_string()))
}

/// The line an operator pastes on the new host (DESIGN §8): the installer
/// fetched from this server, which downloads the agent, enrols and starts
/// it. The token's labels come with the token, so they are not repeated;
/// the installer pins the TLS fingerprint itself, from the script.
fn install_command(public_url: &str, token: &str, name: Option<&str>) -> String {
    let mut command = format!(
        "curl -fsSL {} | sudo sh -s -- --token {}",
        shell_quote(&format!("{public_url}/install.sh")),
        shell_quote(token)
    );
    if let Some(name) = name {
        command.push_str(" --name ");
        command.push_str(&shell_quote(name));
    }
    command
}

/// The line for a host that already has the binary: enrol only.
fn enroll_command(
    public_url: &str,
    token: &str,
    name: Option<&str>,
    fingerprint: Option<&CertFingerprint>,
) -> String {
    let mut command = format!(
        "restic-manager agent enroll --server {} --token {}",
        shell_quote(public_url),
        shell_quote(token)
    );
    if let Some(name) = name {
        command.push_str(" --name ");
        command.push_str(&shell_quote(name));
    }
    if let Some(fingerprint) = fingerprint {
        command.push_str(" --server-fingerprint ");
        command.push_str(&fingerprint.to_string());
    }
    command
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
    use super::*;

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

    #[test]
    fn the_one_liner_fetches_the_installer_and_quotes_what_needs_it() {
        assert_eq!(
            install_command("http://s:8080", "rme.X.Y", Some("web 01")),
            "curl -fsSL http://s:8080/install.sh | sudo sh -s -- --token rme.X.Y --name 'web 01'"
        );
        assert_eq!(
            install_command("https://s:8443/rm", "rme.X.Y", None),
            "curl -fsSL https://s:8443/rm/install.sh | sudo sh -s -- --token rme.X.Y"
        );
    }

    #[test]
    fn the_command_quotes_what_needs_it() {
        assert_eq!(
            enroll_command("http://s:8080", "rme.X.Y", Some("web 01"), None),
            "restic-manager agent enroll --server http://s:8080 --token rme.X.Y --name 'web 01'"
        );
    }

    #[test]
    fn a_tls_server_pins_its_certificate_in_the_command() {
        let fingerprint = CertFingerprint::of_der(b"cert");
        assert_eq!(
            enroll_command("https://s:8443", "rme.X.Y", None, Some(&fingerprint)),
            format!(
                "restic-manager agent enroll --server https://s:8443 --token rme.X.Y \
                 --server-fingerprint {fingerprint}"
            )
        );
    }

    #[test]
    fn requested_labels_add_to_the_tokens_but_never_change_them() {
        let pairs = |text: &str| Labels::parse_pairs("labels", text).unwrap();
        let merged = merge_labels(&pairs("env=prod"), &pairs("role=web,env=prod")).unwrap();
        assert_eq!(merged.to_string(), "env=prod,role=web");
        let err = merge_labels(&pairs("env=prod"), &pairs("env=dev")).unwrap_err();
        assert!(
            err.to_string().starts_with("`labels.env` is `prod`"),
            "{err}"
        );
    }

    #[test]
    fn labels_are_trimmed_and_checked() {
        assert_eq!(validate_label("name", "  web ", 10).unwrap(), "web");
        for bad in ["", "   ", "with\ttab", "elevenchars"] {
            let err = validate_label("name", bad, 10).unwrap_err();
            assert!(err.to_string().starts_with("`name` "), "{err}");
        }
    }
}
