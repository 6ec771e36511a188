//! `restic-manager`: one binary for the server, the agent and offline admin.
//!
//! This is the edge of the program: it parses the command line (every flag
//! also reads an `RM_*` variable), sets up logging, opens the store the
//! database URL names, wires the library crates together and turns their
//! typed errors into readable `anyhow` reports.

mod admin;
mod cli;
mod quickstart;
mod server;
mod service;
mod storage;

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::cli::{AgentCommand, Cli, Command, ServerAction, ServerCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Server(server) => {
            let ServerCommand { action, args } = *server;
            match action {
                Some(ServerAction::InstallService(service)) => service::install_server(&service),
                None => server::run(args).await,
            }
        }
        Command::Agent(AgentCommand::InstallService(args)) => service::install_agent(&args),
        Command::Completions(args) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            // Into memory first: clap_complete panics on a failed write
            // (`| head`), this reports it.
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut command, "restic-manager", &mut script);
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(anyhow::Error::new(e).context("could not write the completions"))
                }
                _ => Ok(()),
            }
        }
        Command::Agent(AgentCommand::Enroll(args)) => {
            let enrolled = rm_agent::enroll(rm_agent::EnrollOptions {
                server_url: args.server,
                token: args.token,
                name: args.name,
                labels: rm_core::Labels::parse_pairs("--labels", &args.labels)?
                    .as_map()
                    .clone(),
                state_dir: args.state_dir.clone(),
                force: args.force,
                trust: args.trust.into(),
            })
            .await?;
            println!(
                "Enrolled as host {}. State written to {}.",
                enrolled.host_id,
                enrolled.state_file.display()
            );
            println!(
                "Start the agent with: restic-manager agent run --state-dir {}",
                args.state_dir.display()
            );
            Ok(())
        }
        Command::Agent(AgentCommand::Run(args)) => {
            let shutdown = shutdown_on_signal();
            let mut options = rm_agent::RunOptions::new(args.state_dir, args.restic_bin);
            options.command_timeout = args.command_timeout.map(std::time::Duration::from_secs);
            options.catch_up_window = args.catch_up_window.map(std::time::Duration::from_secs);
            options.restart_spread = std::time::Duration::from_secs(args.restart_spread);
            options.hook_timeout = std::time::Duration::from_secs(args.hook_timeout);
            options.trust = args.trust.into();
            options.allow_restore_to_system_paths = args.allow_restore_to_system_paths;
            options.hostname = args.hostname;
            options.self_upgrade = !args.no_self_upgrade;
            options.drill_dir = args.drill_dir;
            rm_agent::run(options, shutdown).await?;
            Ok(())
        }
        Command::Admin(command) => admin::run(command).await,
        Command::Quickstart(args) => quickstart::run(args).await,
    }
}

/// Logs go to stderr, coloured only on a terminal; `RM_LOG` (or `RUST_LOG`)
/// picks the level, default info.
fn init_logging() {
    let filter = std::env::var("RM_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| String::from("info"));
    // PostgreSQL's notices (`relation "_sqlx_migrations" already exists,
    // skipping` at every start) are the server talking to itself: shown
    // only when the filter names sqlx.
    let filter = if filter.contains("sqlx") {
        filter
    } else {
        format!("{filter},sqlx::postgres::notice=warn")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx::postgres::notice=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// A token cancelled on the first SIGTERM or SIGINT.
pub(crate) fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        trigger.cancel();
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
