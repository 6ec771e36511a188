//! `restic-manager quickstart`: everything on one machine in one command —
//! the server, this machine enrolled as a host with its agent running, a
//! local repository with a generated password, and a default policy (daily
//! backup, standard retention, weekly check) that protects this machine
//! from the first minute.
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
        database_pool_size: None,
        secret_key_file: None,
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

    let protection = protect_this_machine(&state, host_id, &args.paths).await?;
    if let Some(params) = &protection.first_backup {
        queue_first_backup(&state, host_id, params).await?;
    }
    println!();
    println!("restic-manager is running at {url}");
    println!("  web UI:      open {url} in a browser and log in as `admin`");
    println!("               (with the password printed at the first start, or the one you set)");
    println!(
        "  protection:  policy `{DEFAULT_POLICY}`: {} every day at 02:00, retention `standard`",
        protection.paths.join(", ")
    );
    println!("               (forget + prune on Sundays at 03:00), a check on Sundays at 05:00");
    println!("  repository:  {}", repository.display());
    println!("  JSON API:    POST {url}/api/v1/auth/login, then {url}/api/v1/hosts/{host_id}");
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
            &rm_protocol::api::CreateEnrollmentToken {
                name: Some(hostname.clone()),
                ..Default::default()
            },
            None,
        )
        .await?;
        rm_agent::enroll(rm_agent::EnrollOptions {
            server_url: url.to_owned(),
            token: created.token,
            name: Some(hostname.clone()),
            labels: Default::default(),
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

/// The name of the policy quickstart makes.
const DEFAULT_POLICY: &str = "quickstart";

/// The label quickstart gives this machine; its policy selects it, so
/// hosts enrolled later are not touched by it.
const LOCAL_LABEL: (&str, &str) = ("managed-by", "quickstart");

/// What [`protect_this_machine`] set up.
struct Protection {
    /// The folders the policy backs up.
    paths: Vec<String>,
    /// Back up at once with these params (a new policy, or `--paths`
    /// given).
    first_backup: Option<serde_json::Value>,
}

/// Makes sure this machine is protected: it carries quickstart's label and
/// the `quickstart` policy (made on the first run, from `--paths` or the
/// default folders) selects it. A policy edited since is left as it is.
async fn protect_this_machine(
    state: &AppState,
    host: HostId,
    paths: &[String],
) -> anyhow::Result<Protection> {
    let (key, value) = LOCAL_LABEL;
    if let Some(current) = state.store().host(host).await? {
        if current.labels.get(key) != Some(value) {
            let mut labels = current.labels.as_map().clone();
            labels.insert(key.to_owned(), value.to_owned());
            let patch = rm_store::HostPatch {
                labels: Some(rm_core::Labels::parse("labels", labels)?),
                ..Default::default()
            };
            state.store().patch_host(host, &patch, None).await?;
        }
    }
    let existing = rm_server::policies::list(state)
        .await?
        .into_iter()
        .find(|p| p.name == DEFAULT_POLICY);
    if let Some(policy) = existing {
        rm_server::policies::reconcile(state, Some(&[host]), None, None).await?;
        let configured = policy
            .schedules
            .iter()
            .find(|s| s.kind == "backup")
            .and_then(|s| s.params.get("paths"))
            .and_then(|p| serde_json::from_value::<Vec<String>>(p.clone()).ok())
            .unwrap_or_default();
        return Ok(Protection {
            paths: configured,
            first_backup: (!paths.is_empty()).then(|| serde_json::json!({ "paths": paths })),
        });
    }
    let (paths, params) = match paths {
        [] => default_backup(),
        given => (given.to_vec(), serde_json::json!({ "paths": given })),
    };
    let schedule = |kind: &str, cron: &str, params: serde_json::Value| {
        rm_protocol::api::PolicyScheduleRequest {
            id: None,
            kind: kind.to_owned(),
            cron: cron.to_owned(),
            timezone: None,
            params,
            enabled: true,
            jitter_seconds: 0,
        }
    };
    let request = rm_protocol::api::PolicyRequest {
        name: DEFAULT_POLICY.to_owned(),
        selector: [(key.to_owned(), value.to_owned())].into(),
        priority: None,
        repository: None,
        schedules: vec![
            schedule("backup", "0 2 * * *", params),
            schedule(
                "forget",
                "0 3 * * 0",
                serde_json::json!({"preset": "standard", "prune": true}),
            ),
            schedule("check", "0 5 * * 0", serde_json::json!({})),
        ],
        freshness_seconds: None,
        offline_seconds: None,
    };
    rm_server::policies::create(state, &request, None).await?;
    println!();
    println!(
        "Made the policy `{DEFAULT_POLICY}` for this machine: a daily backup of {} (change it on the Policies page).",
        paths.join(", ")
    );
    Ok(Protection {
        first_backup: Some(request.schedules[0].params.clone()),
        paths,
    })
}

/// What to back up when `--paths` is not given: the user's home folder
/// (without caches: restic skips folders tagged CACHEDIR.TAG, such as
/// cargo's `target`, and `~/.cache`), or `/etc` when there is no home.
fn default_backup() -> (Vec<String>, serde_json::Value) {
    let home = std::env::var("HOME")
        .ok()
        .filter(|h| h != "/" && Path::new(h).is_dir());
    match home {
        Some(home) => {
            println!("No --paths given: backing up your home folder {home} (caches left out).");
            (
                vec![home.clone()],
                serde_json::json!({
                    "paths": [home],
                    "excludes": [format!("{home}/.cache")],
                    "exclude_caches": true,
                }),
            )
        }
        None => {
            println!("No --paths given and no home folder: backing up /etc.");
            (
                vec![String::from("/etc")],
                serde_json::json!({ "paths": ["/etc"] }),
            )
        }
    }
}

/// Queues a backup of `paths` once the agent is connected.
async fn queue_first_backup(
    state: &AppState,
    host: HostId,
    params: &serde_json::Value,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !state.hub().is_connected(host) {
        if tokio::time::Instant::now() > deadline {
            bail!("the local agent did not connect within 30 s; see the log above");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let request = rm_server::jobs::JobRequest {
        id: JobId::new(),
        host,
        kind: JobKind::Backup,
        params,
        trigger: JobTrigger::Manual,
        schedule: None,
        scope: None,
    };
    let job = rm_server::jobs::create(state, &request, None).await?;
    let paths: Vec<String> = params
        .get("paths")
        .and_then(|p| serde_json::from_value(p.clone()).ok())
        .unwrap_or_default();
    println!(
        "Queued a first backup of {} (job {}).",
        paths.join(", "),
        job.id
    );
    Ok(())
}
