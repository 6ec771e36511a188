//! The command line, as clap types. Every flag also reads `RM_<FLAG>`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// A self-hosted control plane for restic backups across a fleet of machines.
#[derive(Debug, Parser)]
#[command(name = "restic-manager", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the server: web API, agent WebSocket endpoint, store.
    ///
    /// On first start, with no users yet, it creates the user `admin` with
    /// the password in RM_ADMIN_PASSWORD, or prints a generated one once.
    Server(Box<ServerCommand>),
    /// Run or enrol the agent on a host to be backed up.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Offline administration of the server's store (users, API tokens,
    /// database backups, sealed secrets).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Try it on this machine: a server, an enrolled local agent and a local
    /// repository, ready to back up. Prints the admin login and URL.
    ///
    /// Installs restic first when it is missing and this user may (root or
    /// passwordless sudo); otherwise says how. Running it again reuses what
    /// the first run made.
    Quickstart(QuickstartArgs),
    /// Print the shell completion script for SHELL to standard output,
    /// e.g. `restic-manager completions bash > /etc/bash_completion.d/restic-manager`.
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `server [FLAGS]` runs the server; `server install-service` writes its
/// systemd unit.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ServerCommand {
    #[command(subcommand)]
    pub action: Option<ServerAction>,
    #[command(flatten)]
    pub args: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ServerAction {
    /// Write the systemd unit restic-manager-server.service running this
    /// binary as `server` with these flags (its own dynamic user, data dir
    /// under /var/lib, hardened), then enable and start it.
    InstallService(ServerServiceArgs),
}

/// Where systemd units go by default.
const DEFAULT_UNIT_DIR: &str = "/etc/systemd/system";

#[derive(Debug, Args)]
pub(crate) struct ServerServiceArgs {
    /// Write the unit into this folder.
    #[arg(long, env = "RM_UNIT_DIR", default_value = DEFAULT_UNIT_DIR)]
    pub unit_dir: PathBuf,
    /// Only write the unit: no daemon-reload, enable or start.
    #[arg(long, env = "RM_NO_START")]
    pub no_start: bool,
    /// The server's data dir (under /var/lib: systemd's StateDirectory,
    /// owned by the service's own user).
    #[arg(
        long,
        env = "RM_DATA_DIR",
        default_value = "/var/lib/restic-manager/server"
    )]
    pub data_dir: PathBuf,
    /// Address the server listens on.
    #[arg(long, env = "RM_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// URL agents and browsers use to reach the server.
    #[arg(long, env = "RM_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// A folder of `linux-<arch>` agent binaries to offer besides this one.
    #[arg(long, env = "RM_AGENT_BINARIES", value_name = "DIR")]
    pub agent_binaries: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (handed to the service
    /// as a systemd credential); needs --tls-key.
    #[arg(long, env = "RM_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "RM_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct AgentServiceArgs {
    /// Write the unit into this folder.
    #[arg(long, env = "RM_UNIT_DIR", default_value = DEFAULT_UNIT_DIR)]
    pub unit_dir: PathBuf,
    /// The state directory the agent runs with (`agent run --state-dir`).
    #[arg(long, env = "RM_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Only write the unit: no daemon-reload, enable or start.
    #[arg(long, env = "RM_NO_START")]
    pub no_start: bool,
}

#[derive(Debug, Args)]
pub(crate) struct QuickstartArgs {
    /// Where the server's database, the agent's state and the repository go.
    #[arg(long, env = "RM_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "RM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Back these folders up right away (absolute paths).
    #[arg(long = "paths", env = "RM_PATHS", num_args = 1.., value_delimiter = ',')]
    pub paths: Vec<String>,
    /// The restic binary to use.
    #[arg(long, env = "RM_RESTIC_BIN", default_value = "restic")]
    pub restic_bin: PathBuf,
}

/// Where the server keeps its data.
#[derive(Debug, Args, Clone)]
pub(crate) struct StoreArgs {
    /// Directory for the database and the sealing key file (secret.key).
    #[arg(long, env = "RM_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Database URL; default `sqlite://<data-dir>/restic-manager.db`.
    /// A `postgres://` (or `postgresql://`) URL selects PostgreSQL; TLS by
    /// its `sslmode`. Keep a password out of command lines: put the URL in
    /// the environment (`RM_DATABASE_URL`) or the password in `PGPASSWORD`.
    #[arg(long, env = "RM_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Connections in the PostgreSQL pool (PostgreSQL only; default 16).
    #[arg(long, env = "RM_DATABASE_POOL_SIZE",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_pool_size: Option<u32>,
    /// The key that seals repository secrets in the database; default
    /// `<data-dir>/secret.key`. Servers sharing one PostgreSQL database
    /// must all use the same key.
    #[arg(long, env = "RM_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
}

impl StoreArgs {
    /// The sealing key file: `--secret-key-file`, else `secret.key` in the
    /// data directory.
    pub fn key_path(&self) -> PathBuf {
        self.secret_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(rm_server::KEY_FILE))
    }
}

#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// Address to listen on.
    #[arg(long, env = "RM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub store: StoreArgs,
    /// URL agents and browsers use to reach this server (for enrolment
    /// commands and links); default `http://<listen>`.
    #[arg(long, env = "RM_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// With several servers on one PostgreSQL: the URL the other servers
    /// reach this one at (default: the listen address, with the machine's
    /// name in place of 0.0.0.0). Each server's must be its own.
    #[arg(long, env = "RM_INTERNAL_URL", value_parser = parse_internal_url)]
    pub internal_url: Option<String>,
    /// With several servers on one PostgreSQL: seconds between renewals of
    /// this server's registration and leases.
    #[arg(long, env = "RM_CLUSTER_RENEW_SECONDS",
          default_value_t = rm_server::config::DEFAULT_CLUSTER_RENEW.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub cluster_renew_seconds: u64,
    /// With several servers on one PostgreSQL: seconds a registration or
    /// lease lasts unrenewed, after which the server counts as dead and the
    /// others take over its agents and timed work. More than
    /// --cluster-renew-seconds (several renewals, so one slow renewal loses
    /// nothing); every server on one database should use the same.
    #[arg(long, env = "RM_CLUSTER_EXPIRY_SECONDS",
          default_value_t = rm_server::config::DEFAULT_CLUSTER_EXPIRY.as_secs(),
          value_parser = clap::value_parser!(u64).range(2..=86_400))]
    pub cluster_expiry_seconds: u64,
    /// Seconds between agent heartbeats (pushed to agents).
    #[arg(long, env = "RM_HEARTBEAT_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub heartbeat_seconds: u32,
    /// Seconds an agent that went away mid-job may take to come back
    /// before its dispatched and running jobs fail as interrupted
    /// (default: three heartbeats and 5 s, as for a silent connection).
    #[arg(long, env = "RM_LOST_AGENT_GRACE", value_parser = clap::value_parser!(u64).range(1..))]
    pub lost_agent_grace: Option<u64>,
    /// Seconds an API request may take before it is answered 503 (a
    /// database locked by another process, a very slow disk); live event
    /// streams are exempt. Keep it above an agent's tree listing (55 s).
    #[arg(long, env = "RM_REQUEST_TIMEOUT", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout: u64,
    /// How many backups may run at once into one repository that several
    /// hosts share; exclusive jobs (prune, check, unlock) always run alone.
    #[arg(long, env = "RM_BACKUPS_PER_REPOSITORY",
          default_value_t = rm_server::config::DEFAULT_BACKUPS_PER_REPOSITORY,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub backups_per_repository: u32,
    /// Seconds between repeats of a firing alert nobody acknowledged
    /// (default: daily).
    #[arg(long, env = "RM_ALERT_REPEAT_SECONDS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(60..=30 * 86_400))]
    pub alert_repeat_seconds: u64,
    /// Seconds after the server starts before what happened while it was
    /// away (hosts offline, backups missed) can fire alerts: agents
    /// reconnect and report their offline runs within this.
    #[arg(long, env = "RM_ALERT_GRACE_SECONDS", default_value_t = 90,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub alert_grace_seconds: u64,
    /// Serve HTTPS/WSS with this PEM certificate chain (leaf first); needs
    /// --tls-key. The default public URL becomes https://….
    #[arg(long, env = "RM_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "RM_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require `Authorization: Bearer <TOKEN>` on /metrics (visible ASCII,
    /// no spaces). Unset, /metrics is open like /healthz. Prefer
    /// --metrics-token-file: a value here shows in the process list.
    #[arg(
        long,
        env = "RM_METRICS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        conflicts_with = "metrics_token_file"
    )]
    pub metrics_token: Option<String>,
    /// Read the /metrics bearer token from this file (surrounding
    /// whitespace, such as the last newline, is dropped).
    #[arg(long, env = "RM_METRICS_TOKEN_FILE", value_name = "FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// A folder of agent binaries named `linux-<arch>` (`linux-aarch64`,
    /// `linux-armv7`, …) that `/download/agent/` and `/install.sh` offer
    /// besides this server's own platform, served from its own binary.
    #[arg(long, env = "RM_AGENT_BINARIES", value_name = "DIR")]
    pub agent_binaries: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AgentCommand {
    /// Trade a one-time enrolment token for this host's agent token and
    /// write the state directory (directory 0700, files 0600).
    Enroll(EnrollArgs),
    /// Connect to the server and work until stopped (SIGTERM/SIGINT);
    /// reconnects with jittered backoff when the server is away.
    Run(RunArgs),
    /// Write the systemd unit restic-manager-agent.service running this
    /// binary as `agent run --state-dir DIR`, then enable and start it
    /// (restarting it when it already runs, so a new binary takes over).
    InstallService(AgentServiceArgs),
}

/// Default location of the agent's state.
const DEFAULT_STATE_DIR: &str = "/var/lib/restic-manager/agent";

#[derive(Debug, Args)]
pub(crate) struct EnrollArgs {
    /// The server's URL, e.g. http://backup.example.net:8080.
    #[arg(long, env = "RM_SERVER")]
    pub server: String,
    /// The enrolment token from the server (single use, expiring).
    #[arg(long, env = "RM_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Name for this host in the server (default: the token's name, then
    /// the host name).
    #[arg(long, env = "RM_NAME")]
    pub name: Option<String>,
    /// Labels this host gets besides its enrolment token's
    /// (`env=prod,role=web`); a key the token sets keeps the token's value.
    #[arg(long, env = "RM_LABELS", default_value = "")]
    pub labels: String,
    /// Where the agent keeps its token and state.
    #[arg(long, env = "RM_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Replace an existing enrolment in the state directory.
    #[arg(long, env = "RM_FORCE")]
    pub force: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// How the agent trusts an https:// server; `enroll` saves these in the
/// state directory and `run` uses them (its own flags override).
#[derive(Debug, Args, Clone)]
pub(crate) struct TrustArgs {
    /// Also trust certificates signed by the CA in this PEM file (besides
    /// the system's roots).
    #[arg(long, env = "RM_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Trust exactly the server certificate with this fingerprint
    /// (`sha256:<hex>`, as the server prints it), even if self-signed.
    #[arg(long, env = "RM_SERVER_FINGERPRINT", value_name = "sha256:HEX")]
    pub server_fingerprint: Option<String>,
    /// Do not verify the server's certificate at all (testing only: anyone
    /// on the network path can impersonate the server).
    #[arg(long, env = "RM_INSECURE")]
    pub insecure: bool,
}

impl From<TrustArgs> for rm_agent::TrustOptions {
    fn from(args: TrustArgs) -> Self {
        rm_agent::TrustOptions {
            ca_cert: args.ca_cert,
            server_fingerprint: args.server_fingerprint,
            insecure: args.insecure,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Where the agent keeps its token and state.
    #[arg(long, env = "RM_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// The restic binary to run.
    #[arg(long, env = "RM_RESTIC_BIN", default_value = "restic")]
    pub restic_bin: PathBuf,
    /// Stop any single restic command after this many seconds (default:
    /// per kind, from minutes for `init` to a day for `backup`).
    #[arg(long, env = "RM_COMMAND_TIMEOUT", value_parser = clap::value_parser!(u64).range(1..))]
    pub command_timeout: Option<u64>,
    /// Run a schedule fire missed while the agent was down once at start-up
    /// only if it was missed by less than this many seconds (default: the
    /// schedule's own period).
    #[arg(long, env = "RM_CATCH_UP_WINDOW", value_parser = clap::value_parser!(u64).range(1..))]
    pub catch_up_window: Option<u64>,
    /// When the server closes the connection because it is restarting,
    /// reconnect after a random delay of up to this many seconds, so a
    /// fleet does not reconnect all at once.
    #[arg(long, env = "RM_RESTART_SPREAD", default_value_t = rm_agent::RESTART_SPREAD.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub restart_spread: u64,
    /// Stop a backup's `before`, `after` or `on_failure` hook (an
    /// executable in <state-dir>/hooks) after this many seconds; the
    /// `stdin_from` hook runs as long as its backup may.
    #[arg(long, env = "RM_HOOK_TIMEOUT", default_value_t = rm_agent::DEFAULT_HOOK_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub hook_timeout: u64,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Let restores write onto / and into system folders (/etc, /usr,
    /// /var/lib, …). Off by default: the server decides what to restore,
    /// this host decides where it may be written. The agent's state
    /// directory is never a restore destination.
    #[arg(long, env = "RM_ALLOW_RESTORE_TO_SYSTEM_PATHS")]
    pub allow_restore_to_system_paths: bool,
    /// Refuse `agent.upgrade`: this agent never replaces its own binary
    /// when the server offers a newer one (upgrade it by hand instead).
    #[arg(long, env = "RM_NO_SELF_UPGRADE")]
    pub no_self_upgrade: bool,
    /// The host name restic records in this host's snapshots (and its
    /// `forget` keeps to), and the one the server shows; default: the
    /// machine's. Hosts sharing a repository need distinct ones.
    #[arg(long, env = "RM_HOSTNAME", value_parser = parse_hostname)]
    pub hostname: Option<String>,
    /// Where restore drills restore their sample (one `drill-<job id>`
    /// folder per drill, removed afterwards; leftovers of a killed agent
    /// are removed at start-up). Never inside the state directory.
    #[arg(long, env = "RM_DRILL_DIR", default_value = rm_agent::DEFAULT_DRILL_DIR)]
    pub drill_dir: PathBuf,
}

/// A host name for restic's `--host`: not empty, no control characters or
/// whitespace, at most 253 bytes, and not starting with `-`.
/// `--internal-url`: an absolute `http`/`https` URL with a host, kept
/// without a trailing slash.
fn parse_internal_url(value: &str) -> Result<String, String> {
    let url = url::Url::parse(value)
        .map_err(|e| format!("not a URL ({e}); write it as http://host:port"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(String::from(
            "must be an http:// or https:// URL with a host",
        ));
    }
    if url.host_str() == Some("0.0.0.0") || url.host_str() == Some("[::]") {
        return Err(String::from(
            "must name this server's own address, not 0.0.0.0 or [::] (every server's)",
        ));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

fn parse_hostname(value: &str) -> Result<String, String> {
    if value.is_empty() || value.len() > 253 {
        return Err(String::from("must be 1 to 253 characters"));
    }
    if value.starts_with('-') {
        return Err(String::from("must not start with `-`"));
    }
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(String::from(
            "must not contain whitespace or control characters",
        ));
    }
    Ok(value.to_owned())
}

#[derive(Debug, Subcommand)]
pub(crate) enum AdminCommand {
    /// Create an operator account. The password is read from standard input
    /// with --password-stdin, or generated and printed once.
    CreateUser(CreateUserArgs),
    /// Set a new password for an operator and end their sessions. The
    /// password is read from standard input with --password-stdin, or
    /// generated and printed once.
    ResetPassword(UserArgs),
    /// Create an API token acting as an operator; it is printed once.
    CreateApiToken(ApiTokenArgs),
    /// Create a single-use enrolment token and print the command that
    /// enrols a host with it (for provisioning scripts; the API's
    /// POST /api/v1/enrollment-tokens does the same).
    CreateEnrollmentToken(EnrollmentTokenArgs),
    /// Write a consistent copy of the database to a new file, safely while
    /// the server runs (SQLite's VACUUM INTO; a plain copy of a live WAL
    /// database can miss recent changes). Back up <data-dir>/secret.key
    /// too, and keep it apart: without it the repository passwords in the
    /// database cannot be decrypted. (Also known as `backup-db`.)
    #[command(name = "backup", alias = "backup-db")]
    BackupDb(BackupDbArgs),
    /// Discard every sealed secret in the database (the repository
    /// settings, passwords and backend keys, of every host) and seal with
    /// the current <data-dir>/secret.key from now on, making it if missing.
    /// The way out when the server refuses to start because its key file
    /// is missing or is another key and no backup of the right one exists.
    /// Those hosts have no repository until one is set again (their
    /// repositories and snapshots are untouched). Explains and refuses
    /// without --yes; run it with the server stopped.
    ResetSealedSecrets(ResetSealedSecretsArgs),
    /// Copy a whole store into another database: every table, row by row,
    /// SQLite to PostgreSQL, PostgreSQL to SQLite, or between two of a kind.
    /// The target is created or brought up to date as a server would; one
    /// that holds data is refused (naming its tables) unless --replace. The
    /// copy is one transaction of the target and is checked table by table
    /// before it commits. The source is read from one snapshot and never
    /// changed. Copy <data-dir>/secret.key along: the sealed repository
    /// settings are copied as they are.
    MigrateStore(MigrateStoreArgs),
}

#[derive(Debug, Args)]
pub(crate) struct MigrateStoreArgs {
    /// The store to copy: sqlite://PATH or postgres://… (a password is
    /// better in PGPASSWORD or ~/.pgpass than on a command line).
    #[arg(long, env = "RM_MIGRATE_FROM", value_name = "URL")]
    pub from: String,
    /// The database to copy it into: sqlite://PATH (created if missing)
    /// or postgres://….
    #[arg(long, env = "RM_MIGRATE_TO", value_name = "URL")]
    pub to: String,
    /// Empty a target that already holds data (in the copy's transaction:
    /// if the copy fails, the old data stays) instead of refusing it.
    #[arg(long)]
    pub replace: bool,
    /// Rows read and written per statement.
    #[arg(long, default_value_t = rm_store::copy::DEFAULT_PAGE_ROWS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub batch_rows: usize,
}

#[derive(Debug, Args)]
pub(crate) struct ResetSealedSecretsArgs {
    /// Really discard them (without it the command only says what it
    /// would do). Deliberately not read from the environment.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub(crate) struct BackupDbArgs {
    /// The file to write (created with mode 0600; an existing file is
    /// refused, never overwritten). `--out`/`RM_OUT` also work.
    #[arg(long = "to", visible_alias = "out", env = "RM_TO")]
    pub out: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub(crate) struct EnrollmentTokenArgs {
    /// Name the enrolled host will get.
    #[arg(long, env = "RM_NAME")]
    pub name: Option<String>,
    /// Lifetime in seconds (default one hour, at most 30 days).
    #[arg(long, env = "RM_TTL_SECONDS")]
    pub ttl_seconds: Option<u64>,
    /// Labels the enrolled host gets (`env=prod,role=web`), so the
    /// policies selecting them apply to it from the start.
    #[arg(long, env = "RM_LABELS", default_value = "")]
    pub labels: String,
    /// The server's URL as the new host reaches it (default
    /// http://127.0.0.1:8080, or https://… with --tls-cert).
    #[arg(long, env = "RM_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The server's PEM certificate: the command then pins its fingerprint.
    #[arg(long, env = "RM_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub(crate) struct UserArgs {
    /// The operator's login name.
    #[arg(long, env = "RM_USERNAME")]
    pub username: String,
    /// Read the password from the first line of standard input instead of
    /// generating one (keeps it off the command line).
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Args)]
pub(crate) struct CreateUserArgs {
    #[command(flatten)]
    pub user: UserArgs,
    /// What they may do: admin (everything), operator (run jobs, restore,
    /// edit hosts, schedules, repositories, policies), viewer (read only).
    #[arg(long, default_value = "admin", value_parser = parse_role)]
    pub role: rm_core::Role,
    /// Limit them to hosts with these labels, `key=value,…` (not for an
    /// admin).
    #[arg(long)]
    pub scope: Option<String>,
}

fn parse_role(raw: &str) -> Result<rm_core::Role, String> {
    raw.parse()
        .map_err(|e: rm_core::role::UnknownRole| e.to_string())
}

#[derive(Debug, Args)]
pub(crate) struct ApiTokenArgs {
    /// The operator the token acts as.
    #[arg(long, env = "RM_USERNAME")]
    pub username: String,
    /// What the token is for (shown in listings).
    #[arg(long, env = "RM_TOKEN_NAME")]
    pub name: String,
    /// Expire after this many days (default: never).
    #[arg(long, env = "RM_TTL_DAYS", value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub ttl_days: Option<u32>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_installer_defaults_to_the_agents_state_dir() {
        assert_eq!(
            super::DEFAULT_STATE_DIR,
            rm_server::downloads::install::DEFAULT_AGENT_STATE_DIR
        );
    }

    #[test]
    fn an_internal_url_must_reach_this_server() {
        assert_eq!(
            super::parse_internal_url("http://10.0.0.5:8080/").as_deref(),
            Ok("http://10.0.0.5:8080")
        );
        assert!(super::parse_internal_url("10.0.0.5:8080")
            .unwrap_err()
            .contains("http"));
        assert!(super::parse_internal_url("ftp://a")
            .unwrap_err()
            .contains("http"));
        assert!(super::parse_internal_url("http://0.0.0.0:8080")
            .unwrap_err()
            .contains("0.0.0.0"));
    }

    #[test]
    fn the_command_line_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
