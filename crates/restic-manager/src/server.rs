//! `restic-manager server`, and the start-up steps `quickstart` shares.

use std::net::SocketAddr;

use anyhow::Context;
use rm_server::{AppState, FirstAdmin, ServerConfig, TlsIdentity};
use tokio::net::TcpListener;

use crate::cli::{ServerArgs, StoreArgs};

pub(crate) async fn run(args: ServerArgs) -> anyhow::Result<()> {
    // Bad certificate files stop the server before it touches the store.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsIdentity::load(cert, key)?),
        (None, None) => None,
        // clap enforces the pair; this names the rule should that change.
        _ => anyhow::bail!("--tls-cert and --tls-key must be given together"),
    };
    let lost_agent_grace = args.lost_agent_grace.map(std::time::Duration::from_secs);
    let (cluster_renew, cluster_expiry) = cluster_timings(&args)?;
    let metrics_token = metrics_token(&args)?;
    let (listener, state) = start(
        &args.store,
        args.listen,
        args.public_url,
        tls.as_ref(),
        |config| {
            config.heartbeat_seconds = args.heartbeat_seconds;
            config.lost_agent_grace = lost_agent_grace;
            config.request_timeout = std::time::Duration::from_secs(args.request_timeout);
            config.backups_per_repository = args.backups_per_repository;
            config.alert_repeat = std::time::Duration::from_secs(args.alert_repeat_seconds);
            config.alert_grace = std::time::Duration::from_secs(args.alert_grace_seconds);
            config.metrics_token = metrics_token;
            config.agent_binaries = args.agent_binaries;
            config.internal_url = args.internal_url;
            config.cluster_renew = cluster_renew;
            config.cluster_expiry = cluster_expiry;
        },
    )
    .await?;
    let shutdown = crate::shutdown_on_signal();
    let shutdown = async move { shutdown.cancelled().await };
    match &tls {
        Some(identity) => rm_server::serve_tls(listener, identity, state, shutdown).await?,
        None => rm_server::serve(listener, state, shutdown).await?,
    }
    tracing::info!("server stopped");
    Ok(())
}

/// `--cluster-renew-seconds` and `--cluster-expiry-seconds`, checked
/// before anything starts: a lease that expires before its holder renews
/// it would pass from server to server all the time.
fn cluster_timings(
    args: &ServerArgs,
) -> anyhow::Result<(std::time::Duration, std::time::Duration)> {
    let (renew, expiry) = (args.cluster_renew_seconds, args.cluster_expiry_seconds);
    anyhow::ensure!(
        expiry > renew,
        "--cluster-expiry-seconds ({expiry}) must be more than --cluster-renew-seconds ({renew}): \
         a server must renew its registration and leases before they expire"
    );
    Ok((
        std::time::Duration::from_secs(renew),
        std::time::Duration::from_secs(expiry),
    ))
}

/// The `/metrics` token from `--metrics-token` or `--metrics-token-file`
/// (checked before anything starts; the token itself is never printed).
fn metrics_token(args: &ServerArgs) -> anyhow::Result<Option<rm_server::MetricsToken>> {
    let token = match (&args.metrics_token, &args.metrics_token_file) {
        (Some(token), _) => token.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("could not read --metrics-token-file {}", path.display()))?,
        (None, None) => return Ok(None),
    };
    Ok(Some(rm_server::MetricsToken::new(&token)?))
}

/// Opens the store, checks the sealing key against it (see
/// [`rm_server::sealing::unlock`]), makes the first admin (printing a
/// generated password once) and binds the listener; `configure`
/// adjusts the settings. With `tls` the default public URL is `https://…`
/// and enrolment commands pin the certificate's fingerprint.
pub(crate) async fn start(
    store_args: &StoreArgs,
    listen: SocketAddr,
    public_url: Option<String>,
    tls: Option<&TlsIdentity>,
    configure: impl FnOnce(&mut ServerConfig),
) -> anyhow::Result<(TcpListener, AppState)> {
    // Each agent holds a socket open; the common soft limit of 1024 would
    // turn agents away long before anything else runs out.
    match rm_server::raise_open_files_limit() {
        Ok(limit) => tracing::info!(
            open_files = limit.now,
            was = limit.before,
            hard = limit.hard,
            "open-file limit (each agent connection uses one)"
        ),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let store = crate::storage::open(store_args).await?;
    // Before anything else changes or listens: a missing or different key
    // while sealed values exist stops the server here, naming the way out.
    let key = rm_server::sealing::unlock(store.as_ref(), &store_args.key_path()).await?;
    let admin_password = std::env::var("RM_ADMIN_PASSWORD").ok();
    match rm_server::ensure_first_admin(store.as_ref(), admin_password.as_deref()).await? {
        FirstAdmin::AlreadyPresent => {}
        FirstAdmin::CreatedWithGivenPassword => {
            println!("Created the administrator account `admin` with the password from RM_ADMIN_PASSWORD.");
        }
        FirstAdmin::CreatedWithGeneratedPassword(password) => {
            // Shown once, on the terminal only; never logged.
            println!("First start: created the administrator account.");
            println!("  user:     admin");
            println!("  password: {password}");
            println!("Change it with: restic-manager admin reset-password --username admin --password-stdin");
        }
    }

    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("could not listen on {listen}"))?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let public_url = public_url.unwrap_or_else(|| default_public_url(scheme, local));
    let mut config = ServerConfig::new(public_url);
    config.tls_fingerprint = tls.map(TlsIdentity::fingerprint);
    configure(&mut config);
    // Servers sharing a database tell each other apart by this URL: 0.0.0.0
    // would be every server's.
    if config.internal_url.is_none() {
        config.internal_url = Some(default_public_url(scheme, local));
    }
    println!(
        "restic-manager server listening on {scheme}://{local} (public URL {})",
        config.public_url
    );
    if let Some(fingerprint) = config.tls_fingerprint {
        // Agents pin this (`--server-fingerprint`); enrolment commands carry it.
        println!("TLS certificate fingerprint: {fingerprint}");
        tracing::info!(%fingerprint, "serving HTTPS and WSS");
    }
    Ok((listener, AppState::new(store, config, key)))
}

/// `<scheme>://<listen>`, with the machine's name in place of an
/// unspecified address so the enrolment command works from other hosts.
fn default_public_url(scheme: &str, local: SocketAddr) -> String {
    if local.ip().is_unspecified() {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| String::from("localhost"));
        format!("{scheme}://{host}:{}", local.port())
    } else {
        format!("{scheme}://{local}")
    }
}
