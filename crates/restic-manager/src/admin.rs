//! `restic-manager admin …`: offline changes to the store, for when nobody
//! can log in (first admin lost, password forgotten) or for scripting.

use std::io::BufRead;

use anyhow::{bail, Context};
use chrono::Utc;
use rm_core::password::{generate_password, hash_password};
use rm_core::token::{IssuedToken, TokenKind};
use rm_core::UserId;
use rm_server::ServerConfig;
use rm_store::{ApiToken, User};

use crate::cli::AdminCommand;

pub(crate) async fn run(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::CreateUser(args) => {
            let store = crate::storage::open(&args.store).await?;
            let username = args.username.trim().to_owned();
            if username.is_empty() || username.chars().any(char::is_control) {
                bail!("--username must be non-empty and free of control characters");
            }
            let (password, generated) = password(args.password_stdin)?;
            store
                .create_user(&User {
                    id: UserId::new(),
                    username: username.clone(),
                    password_hash: hash_password(&password)?,
                    created_at: Utc::now(),
                })
                .await?;
            println!("Created user `{username}`.");
            if generated {
                println!("  password: {password}");
            }
        }
        AdminCommand::ResetPassword(args) => {
            let store = crate::storage::open(&args.store).await?;
            let (password, generated) = password(args.password_stdin)?;
            store
                .set_user_password(args.username.trim(), &hash_password(&password)?)
                .await?;
            println!(
                "Password of `{}` changed; their sessions were ended.",
                args.username.trim()
            );
            if generated {
                println!("  password: {password}");
            }
        }
        AdminCommand::CreateApiToken(args) => {
            let store = crate::storage::open(&args.store).await?;
            let user = store
                .user_by_name(args.username.trim())
                .await?
                .with_context(|| format!("no user named `{}`", args.username.trim()))?;
            let name = args.name.trim();
            if name.is_empty() {
                bail!("--name must not be empty");
            }
            let issued = IssuedToken::generate(TokenKind::Api)?;
            let now = Utc::now();
            store
                .create_api_token(&ApiToken {
                    id: issued.id,
                    user_id: user.id,
                    name: name.to_owned(),
                    token_hash: issued.hash,
                    created_at: now,
                    expires_at: args
                        .ttl_days
                        .map(|d| now + chrono::Duration::days(i64::from(d))),
                    revoked_at: None,
                })
                .await?;
            // The token itself goes alone on stdout so scripts can capture it.
            eprintln!("API token `{name}` for `{}` (shown once):", user.username);
            println!("{}", issued.token);
        }
        AdminCommand::CreateEnrollmentToken(args) => {
            let store = crate::storage::open(&args.store).await?;
            let fingerprint = args
                .tls_cert
                .as_deref()
                .map(rm_server::tls::certificate_fingerprint)
                .transpose()?;
            let public_url = args.public_url.unwrap_or_else(|| {
                let scheme = if fingerprint.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://127.0.0.1:8080")
            });
            let mut server = ServerConfig::new(public_url);
            server.tls_fingerprint = fingerprint;
            let created = rm_server::enrollment::issue_token(
                store.as_ref(),
                &server,
                args.name.as_deref(),
                args.ttl_seconds,
            )
            .await?;
            // The command alone goes on stdout so scripts can capture it.
            eprintln!(
                "Enrolment token (single use, expires {}). On the new host run:",
                created.expires_at.to_rfc3339()
            );
            println!("{}", created.command);
        }
    }
    Ok(())
}

/// The password to set: the first line of stdin, or a generated one.
fn password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if !from_stdin {
        return Ok((generate_password()?, true));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("could not read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.chars().count() < 8 {
        bail!("the password on standard input is shorter than 8 characters");
    }
    Ok((password, false))
}
