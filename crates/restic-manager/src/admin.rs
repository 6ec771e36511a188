//! `restic-manager admin …`: offline changes to the store, for when nobody
//! can log in (first admin lost, password forgotten) or for scripting,
//! consistent copies of the database, and discarding sealed secrets whose
//! key is lost. Every change is written to the audit log as done by `cli`,
//! in the change's own transaction.

use std::io::BufRead;

use anyhow::{bail, Context};
use chrono::Utc;
use rm_core::password::{generate_password, hash_password};
use rm_core::token::{IssuedToken, TokenKind};
use rm_core::UserId;
use rm_server::audit::{Action, Audit, Target};
use rm_server::ServerConfig;
use rm_store::{ApiToken, User};
use serde_json::json;

use crate::cli::{AdminCommand, BackupDbArgs, MigrateStoreArgs, ResetSealedSecretsArgs};

pub(crate) async fn run(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::CreateUser(create) => {
            let args = create.user;
            let scope = match create.scope.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(text) => {
                    let labels = rm_core::Labels::parse_pairs("--scope", text)?;
                    Some(rm_core::Selector(labels))
                }
            };
            if scope.is_some() && create.role == rm_core::Role::Admin {
                bail!("--scope: an admin cannot have a scope; give --role operator or viewer");
            }
            let username = args.username.trim().to_owned();
            if username.is_empty() || username.chars().any(char::is_control) {
                bail!("--username must be non-empty and free of control characters");
            }
            let store = crate::storage::open(&args.store).await?;
            let (password, generated) = password(args.password_stdin)?;
            let user = User {
                id: UserId::new(),
                username: username.clone(),
                password_hash: hash_password(&password)?,
                created_at: Utc::now(),
                role: create.role,
                scope,
            };
            let entry = Audit::cli().entry(
                Action::UserCreate,
                Some(Target::new("user", user.id)),
                json!({
                    "username": username,
                    "role": user.role,
                    "scope": user.scope.as_ref().map(ToString::to_string),
                }),
            );
            store.create_user(&user, Some(&entry)).await?;
            println!("Created user `{username}` ({}).", user.role);
            if generated {
                println!("  password: {password}");
            }
        }
        AdminCommand::ResetPassword(args) => {
            let store = crate::storage::open(&args.store).await?;
            let (password, generated) = password(args.password_stdin)?;
            let username = args.username.trim();
            // Looked up first: the entry written with the change names them.
            let user = store
                .user_by_name(username)
                .await?
                .with_context(|| format!("no user named `{username}`"))?;
            let entry = Audit::cli().entry(
                Action::UserPasswordReset,
                Some(Target::new("user", user.id)),
                json!({"username": username, "sessions_ended": true}),
            );
            store
                .set_user_password(username, &hash_password(&password)?, Some(&entry))
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
            let token = ApiToken {
                id: issued.id,
                user_id: user.id,
                name: name.to_owned(),
                token_hash: issued.hash,
                created_at: now,
                expires_at: args
                    .ttl_days
                    .map(|d| now + chrono::Duration::days(i64::from(d))),
                revoked_at: None,
                role: None,
            };
            let entry = Audit::cli().entry(
                Action::ApiTokenCreate,
                Some(Target::new("api_token", token.id)),
                json!({"name": name, "username": user.username, "expires_at": token.expires_at}),
            );
            store.create_api_token(&token, Some(&entry)).await?;
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
                &rm_protocol::api::CreateEnrollmentToken {
                    name: args.name.clone(),
                    ttl_seconds: args.ttl_seconds,
                    labels: rm_core::Labels::parse_pairs("--labels", &args.labels)?
                        .as_map()
                        .clone(),
                },
                Some(&Audit::cli()),
            )
            .await?;
            // The one-liner alone goes on stdout so scripts can capture it.
            eprintln!(
                "Enrolment token (single use, expires {}). On the new host run (as root):",
                created.expires_at.to_rfc3339()
            );
            println!("{}", created.command);
            eprintln!("Or, where restic-manager is already installed:");
            eprintln!("{}", created.enroll_command);
        }
        AdminCommand::BackupDb(args) => backup_db(&args).await?,
        AdminCommand::ResetSealedSecrets(args) => reset_sealed_secrets(&args).await?,
        AdminCommand::MigrateStore(args) => migrate_store(&args).await?,
    }
    Ok(())
}

/// Hosts listed by name in `reset-sealed-secrets`' report; more are counted.
const MAX_LISTED_HOSTS: usize = 100;

/// `admin reset-sealed-secrets [--yes]`: discards every sealed secret and
/// adopts the current key file, so a server whose key is lost can start.
async fn reset_sealed_secrets(args: &ResetSealedSecretsArgs) -> anyhow::Result<()> {
    let store = crate::storage::open(&args.store).await?;
    let key_path = std::path::absolute(args.store.key_path())?;
    if !args.yes {
        let sealed = store.sealed_repositories().await?.len();
        bail!(
            "nothing was changed. This command discards the sealed repository settings \
             (passwords and backend keys) of {sealed} host(s) in the database for good, and \
             seals with {} from now on (made if missing). Those hosts then have no repository \
             until one is set again; their repositories and snapshots are not touched.\n\
             If the key that sealed them can be restored from a backup to {}, do that instead \
             and start the server.\n\
             Otherwise stop the server and run this again with --yes.",
            key_path.display(),
            key_path.display()
        );
    }
    let outcome = rm_server::sealing::reset(store.as_ref(), &key_path, &Audit::cli()).await?;

    println!(
        "Discarded the sealed repository settings of {} host(s).",
        outcome.hosts.len()
    );
    let mut deleted = 0usize;
    let mut listed = 0usize;
    for id in &outcome.hosts {
        match store.host(*id).await? {
            Some(host) if listed < MAX_LISTED_HOSTS => {
                listed += 1;
                println!("  {} ({id})", host.name);
            }
            Some(_) => {}
            None => deleted += 1,
        }
    }
    let live = outcome.hosts.len() - deleted;
    if live > listed {
        println!("  … and {} more", live - listed);
    }
    if deleted > 0 {
        println!("  ({deleted} of them deleted hosts)");
    }
    println!(
        "{} the key {} (fingerprint {}); it seals every repository set from now on.",
        if outcome.key_created {
            "Created"
        } else {
            "Kept"
        },
        outcome.key_path.display(),
        outcome.fingerprint
    );
    println!("Next:");
    println!(
        "  1. Back up {} (mode 0600), apart from the database copies.",
        outcome.key_path.display()
    );
    println!("  2. Start the server.");
    if live > 0 {
        println!(
            "  3. Set the repository of each host above again (its page, or PUT /api/v1/hosts/<id>/repository) with the same URL, password and keys to reach its existing snapshots."
        );
    }
    Ok(())
}

/// `admin backup-db --out FILE`: a consistent copy of the live database.
async fn backup_db(args: &BackupDbArgs) -> anyhow::Result<()> {
    let (store, url) = crate::storage::open_existing(&args.store).await?;
    let copied = store.backup_to(&args.out).await;
    store.close().await;
    let bytes = copied.with_context(|| {
        format!(
            "could not copy the database at {url} to {}",
            args.out.display()
        )
    })?;
    println!(
        "Wrote a consistent copy of {url} to {} ({bytes} bytes).",
        args.out.display()
    );
    println!(
        "Also back up {}, stored apart from this copy: without it the repository passwords in the database cannot be decrypted.",
        args.store.key_path().display()
    );
    Ok(())
}

/// `admin migrate-store --from URL --to URL [--replace]`: copies a whole
/// store into another database and says what it copied.
async fn migrate_store(args: &MigrateStoreArgs) -> anyhow::Result<()> {
    use rm_store::copy::{copy_store, CopyOptions, RowSink, RowSource};

    // Both URLs are checked before either database is opened.
    let (from_engine, to_engine) = (engine(&args.from, "--from")?, engine(&args.to, "--to")?);
    let source: Box<dyn RowSource> = match from_engine {
        Engine::Sqlite => Box::new(rm_store_sqlite::copy::SqliteRowSource::open(&args.from).await?),
        Engine::Postgres => Box::new(
            rm_store_postgres::copy::PgRowSource::open(
                &args.from,
                &rm_store_postgres::PostgresOptions::default(),
            )
            .await?,
        ),
    };
    let target: Box<dyn RowSink> = match to_engine {
        Engine::Sqlite => Box::new(rm_store_sqlite::copy::SqliteRowSink::open(&args.to).await?),
        Engine::Postgres => Box::new(
            rm_store_postgres::copy::PgRowSink::open(
                &args.to,
                &rm_store_postgres::PostgresOptions::default(),
            )
            .await?,
        ),
    };
    let (from, to) = (source.describe(), target.describe());
    eprintln!("Copying {from} into {to}.");
    let options = CopyOptions {
        replace: args.replace,
        page_rows: args.batch_rows,
    };
    let mut bar = ProgressLine::new();
    let report = copy_store(source, target, options, &mut |p| bar.show(&p)).await;
    bar.end();
    let report = report?;
    if !report.replaced.is_empty() {
        let deleted: u64 = report.replaced.iter().map(|(_, rows)| rows).sum();
        println!("Deleted the {deleted} rows the target held before (--replace).");
    }
    println!(
        "Copied {} rows from {from} to {to}; the row count of every table matches:",
        report.total()
    );
    for (table, rows) in &report.tables {
        println!("  {table:<24} {rows:>12}");
    }
    println!(
        "Next: copy the source's secret.key into the data directory of every server that will use \
         {to} (the sealed repository settings were copied as they are), and start them with \
         --database-url pointing at it."
    );
    Ok(())
}

/// The engines a store URL may name.
enum Engine {
    Sqlite,
    Postgres,
}

fn engine(url: &str, flag: &str) -> anyhow::Result<Engine> {
    if url.starts_with("sqlite:") {
        Ok(Engine::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Engine::Postgres)
    } else {
        // Without an `@` there is no password to hide (a bare path).
        let shown = if url.contains('@') {
            rm_store_postgres::redact_url(url)
        } else {
            url.to_owned()
        };
        bail!(
            "{flag}: `{shown}` is neither a sqlite:// nor a postgres:// URL (a SQLite file is \
             sqlite:///absolute/path.db)"
        )
    }
}

/// The copy's progress on stderr: one bar redrawn in place on a terminal,
/// otherwise a line per finished table and at most one every few seconds
/// between (for logs of long copies).
struct ProgressLine {
    terminal: bool,
    last: Option<std::time::Instant>,
    drawn: bool,
}

/// Time between two plain progress lines of one table.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Width of the terminal bar, in characters.
const BAR_WIDTH: u64 = 30;

impl ProgressLine {
    fn new() -> ProgressLine {
        ProgressLine {
            terminal: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            last: None,
            drawn: false,
        }
    }

    fn show(&mut self, progress: &rm_store::copy::Progress) {
        use rm_store::copy::Progress;
        match progress {
            Progress::Started { total } => eprintln!("{total} rows to copy."),
            Progress::Rows {
                table,
                done,
                of,
                done_all,
                total,
            } => {
                if self.terminal {
                    let filled = (done_all * BAR_WIDTH)
                        .checked_div(*total)
                        .unwrap_or(BAR_WIDTH);
                    let filled = usize::try_from(filled.min(BAR_WIDTH)).unwrap_or(0);
                    let empty = usize::try_from(BAR_WIDTH).unwrap_or(0) - filled;
                    eprint!(
                        "\r\x1b[K[{}{}] {done_all}/{total} rows  {table} {done}/{of}",
                        "#".repeat(filled),
                        "-".repeat(empty)
                    );
                    self.drawn = true;
                } else {
                    let due = self.last.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
                    if done == of || due {
                        eprintln!("  {table}: {done}/{of} rows ({done_all}/{total} in all)");
                        self.last = Some(std::time::Instant::now());
                    }
                }
            }
            Progress::Verifying => {
                self.end();
                eprintln!("Checking the row counts and committing.");
            }
        }
    }

    /// Ends a bar left on the line.
    fn end(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
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
