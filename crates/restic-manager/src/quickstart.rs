//! `restic-manager quickstart`: everything on one machine in one command —
//! the server, this machine enrolled as a host with its agent running, and
//! a local repository with a generated password — so a new user can back
//! something up a minute after cloning.
//!
//! It is the real server and the real agent in one process, talking over
//! the real WebSocket on the loopback address; nothing is simulated.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use rm_core::{HostId, JobId, JobTrigger};
use rm_protocol::{JobKind, RepositoryConfig};
use rm_server::AppState;

use crate::cli::{QuickstartArgs, StoreArgs};

/// Heartbeat for the local agent.
const HEARTBEAT_SECONDS: u32 = 30;

pub(crate) async fn run(args: QuickstartArgs) -> anyhow::Result<()> {
    let restic = ensure_restic(&args.restic_bin).await?;
    println!("Using restic {restic}.");
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("could not create {}", args.data_dir.display()))?;
    let data_dir = std::path::absolute(&args.data_dir)?;
    let store_args = StoreArgs {
        data_dir: data_dir.clone(),
        database_url: None,
    };
    let (listener, state) = crate::server::start(&store_args, args.listen, None, None, |config| {
        config.heartbeat_seconds = HEARTBEAT_SECONDS
    })
    .await?;
    let url = state.config().public_url.clone();
    let shutdown = crate::shutdown_on_signal();
    let server = tokio::spawn(rm_server::serve(
        listener,
        state.clone(),
        shutdown.clone().cancelled_owned(),
    ));

    let agent_dir = data_dir.join("agent");
    let host_id = enrol_this_machine(&state, &url, &agent_dir).await?;
    let repository = data_dir.join("repository");
    set_up_repository(&state, host_id, &repository).await?;

    let mut agent_options = rm_agent::RunOptions::new(&agent_dir, &args.restic_bin);
    agent_options.command_timeout = None;
    let agent = tokio::spawn(rm_agent::run(agent_options, shutdown.clone()));

    if !args.paths.is_empty() {
        queue_first_backup(&state, host_id, &args.paths).await?;
    }
    println!();
    println!("restic-manager is running at {url}");
    println!("  log in:      POST {url}/api/v1/auth/login as `admin`");
    println!("  this host:   {url}/api/v1/hosts/{host_id}");
    println!("  repository:  {}", repository.display());
    println!("  back up:     POST {url}/api/v1/hosts/{host_id}/jobs {{\"kind\":\"backup\",\"params\":{{\"paths\":[\"/some/folder\"]}}}}");
    println!("Stop with Ctrl-C; run quickstart again to carry on where you left off.");

    let (server, agent) = tokio::join!(server, agent);
    server??;
    agent??;
    Ok(())
}

/// restic's version; installs restic with apt-get first when it is missing
/// and this user may, otherwise says how.
async fn ensure_restic(bin: &Path) -> anyhow::Result<rm_restic::ResticVersion> {
    match rm_restic::detect_version(bin).await {
        Ok(version) => return Ok(version),
        Err(rm_restic::ResticError::NotFound { .. }) if bin == Path::new("restic") => {}
        Err(e) => bail!("restic at {} cannot be used: {e}", bin.display()),
    }
    println!("restic is not installed; installing it with apt-get…");
    let as_root = is_root().await;
    let sudo_ok = !as_root && command_ok("sudo", &["-n", "true"]).await;
    if !as_root && !sudo_ok {
        bail!(
            "restic is not installed. Install it (Debian/Ubuntu: `sudo apt-get install restic`; \
             elsewhere see https://restic.readthedocs.io/en/stable/020_installation.html) and run quickstart again"
        );
    }
    let prefix: &[&str] = if as_root { &[] } else { &["sudo", "-n"] };
    for step in [
        vec!["apt-get", "update", "-qq"],
        vec![
            "apt-get",
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "restic",
        ],
    ] {
        let argv: Vec<&str> = prefix.iter().copied().chain(step).collect();
        let output = tokio::process::Command::new(argv[0])
            .args(&argv[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .with_context(|| format!("could not run {}", argv.join(" ")))?;
        if !output.status.success() {
            // apt's own words say why (no network, locked dpkg, …).
            eprintln!("{}", String::from_utf8_lossy(&output.stderr));
            bail!(
                "`{}` failed ({}); install restic by hand and run quickstart again",
                argv.join(" "),
                output.status
            );
        }
    }
    rm_restic::detect_version(bin)
        .await
        .context("restic was installed but still cannot be run")
}

async fn is_root() -> bool {
    match tokio::process::Command::new("id").arg("-u").output().await {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim() == "0",
        Err(_) => false,
    }
}

async fn command_ok(program: &str, args: &[&str]) -> bool {
    tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Enrols this machine unless the agent state dir says it already is.
async fn enrol_this_machine(
    state: &AppState,
    url: &str,
    agent_dir: &Path,
) -> anyhow::Result<HostId> {
    let dir = rm_agent::state::StateDir::new(agent_dir);
    if !dir.is_enrolled() {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| String::from("this-host"));
        let created = rm_server::enrollment::issue_token(
            state.store(),
            state.config(),
            Some(&hostname),
            None,
            None,
        )
        .await?;
        rm_agent::enroll(rm_agent::EnrollOptions {
            server_url: url.to_owned(),
            token: created.token,
            name: Some(hostname.clone()),
            state_dir: agent_dir.to_path_buf(),
            force: false,
            trust: rm_agent::TrustOptions::default(),
        })
        .await?;
        println!("Enrolled this machine as host `{hostname}`.");
    }
    let mut enrolled = dir.load_agent()?;
    if enrolled.server_url != url {
        // Quickstart owns this agent: follow the server to its new address.
        enrolled.server_url = url.to_owned();
        dir.save_agent(&enrolled)?;
    }
    enrolled
        .host_id
        .parse()
        .with_context(|| format!("bad host id in {}", dir.agent_file().display()))
}

/// Gives the host a local repository with a generated password, once.
async fn set_up_repository(state: &AppState, host: HostId, path: &Path) -> anyhow::Result<()> {
    if rm_server::repositories::get(state, host).await?.is_some() {
        return Ok(());
    }
    let password = rm_core::password::generate_password()?;
    rm_server::repositories::set(
        state,
        host,
        &RepositoryConfig {
            url: path.display().to_string(),
            password: password.clone(),
            env: Default::default(),
            copy_to: None,
        },
        None,
    )
    .await?;
    println!();
    println!("Created a local repository at {}.", path.display());
    println!("  repository password: {password}");
    println!("  KEEP THIS PASSWORD SOMEWHERE SAFE: without it the backups cannot be restored,");
    println!("  and it is shown only this once (the server keeps it sealed).");
    Ok(())
}

/// Queues a backup of `paths` once the agent is connected.
async fn queue_first_backup(
    state: &AppState,
    host: HostId,
    paths: &[String],
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !state.hub().is_connected(host) {
        if tokio::time::Instant::now() > deadline {
            bail!("the local agent did not connect within 30 s; see the log above");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let params = serde_json::json!({ "paths": paths });
    let request = rm_server::jobs::JobRequest {
        id: JobId::new(),
        host,
        kind: JobKind::Backup,
        params: &params,
        trigger: JobTrigger::Manual,
        schedule: None,
    };
    let job = rm_server::jobs::create(state, &request, None).await?;
    println!(
        "Queued a first backup of {} (job {}).",
        paths.join(", "),
        job.id
    );
    Ok(())
}
