//! The real `restic-manager server` binary as a child process: for
//! measurements that must see the server alone (its memory, its CPU time)
//! and for stopping and restarting it the way an operator does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Linux reports CPU times in `/proc/<pid>/stat` in clock ticks of 1/100 s
/// (`USER_HZ`, fixed for the user-space ABI).
const TICKS_PER_SECOND: u64 = 100;

/// Resident memory of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessMemory {
    /// `VmRSS`: resident now, KiB.
    pub rss_kib: u64,
    /// `VmHWM`: the most ever resident, KiB.
    pub peak_kib: u64,
}

/// A running server child process.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://<addr>`.
    pub url: String,
    binary: PathBuf,
    data_dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl ServerProcess {
    /// Starts `<binary> server --listen <listen> --data-dir <data_dir>
    /// <args…>` with `env` added, its log (stderr) appended to
    /// `<data_dir>/server.log`, and waits until it answers `/healthz`.
    /// Secrets (the admin password) belong in `env`, never in `args`.
    pub async fn start(
        binary: &Path,
        data_dir: &Path,
        listen: SocketAddr,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<ServerProcess> {
        ServerProcess::spawn(
            binary.to_owned(),
            data_dir.to_owned(),
            listen,
            args.iter().map(|a| (*a).to_owned()).collect(),
            env.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
        .await
    }

    async fn spawn(
        binary: PathBuf,
        data_dir: PathBuf,
        listen: SocketAddr,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<ServerProcess> {
        std::fs::create_dir_all(&data_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("server.log"))
            .context("could not open the server log file")?;
        let mut child = Command::new(&binary)
            .arg("server")
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("could not start {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut printed = String::new();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                printed.push_str(&line);
                printed.push('\n');
                if let Some(rest) = line.strip_prefix("restic-manager server listening on ") {
                    if let Some(url) = rest.split_whitespace().next() {
                        return Ok(url.to_owned());
                    }
                }
            }
            bail!("the server exited before listening; it printed:\n{printed}")
        })
        .await
        .context("the server did not start listening within 60 s")??;
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let addr: SocketAddr = url
            .trim_start_matches("http://")
            .parse()
            .with_context(|| format!("unexpected listen URL {url}"))?;
        let server = ServerProcess {
            child,
            addr,
            url,
            binary,
            data_dir,
            args,
            env,
        };
        server.wait_healthy().await?;
        Ok(server)
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let url = format!("{}/healthz", self.url);
        crate::wait_until(
            Duration::from_secs(30),
            "the server to answer /healthz",
            || {
                let request = client.get(&url).send();
                async move { matches!(request.await, Ok(r) if r.status().is_success()) }
            },
        )
        .await
    }

    /// The process id.
    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("the server has exited")
    }

    /// The server's resident memory now and at its peak.
    pub fn memory(&self) -> anyhow::Result<ProcessMemory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("no {name} in /proc/<pid>/status"))
        };
        Ok(ProcessMemory {
            rss_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
        })
    }

    /// CPU time (user plus system) the server has used so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?))?;
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th fields of the whole line.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .context("unreadable /proc/<pid>/stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> anyhow::Result<u64> {
            fields
                .get(i)
                .and_then(|v| v.parse().ok())
                .context("unreadable CPU time in /proc/<pid>/stat")
        };
        let total = ticks(11)? + ticks(12)?;
        Ok(Duration::from_millis(total * 1000 / TICKS_PER_SECOND))
    }

    /// Sends SIGTERM (the server closes every agent connection with "going
    /// away" and writes what is pending) and waits up to `limit` for it to
    /// exit; kills it if it does not.
    pub async fn terminate(mut self, limit: Duration) -> anyhow::Result<StoppedServerProcess> {
        let pid = self.pid()?;
        let pid = Pid::from_raw(i32::try_from(pid).context("pid out of range")?);
        kill(pid, Signal::SIGTERM).context("could not send SIGTERM")?;
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                self.child.kill().await?;
                bail!("the server did not stop within {limit:?} of SIGTERM; killed it");
            }
        };
        Ok(StoppedServerProcess {
            status,
            addr: self.addr,
            binary: self.binary,
            data_dir: self.data_dir,
            args: self.args,
            env: self.env,
        })
    }
}

/// A server stopped by [`ServerProcess::terminate`], ready to start again.
pub struct StoppedServerProcess {
    /// How it exited.
    pub status: ExitStatus,
    addr: SocketAddr,
    binary: PathBuf,
    data_dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl StoppedServerProcess {
    /// Starts it again on the same address with the same data and flags.
    pub async fn start(self) -> anyhow::Result<ServerProcess> {
        ServerProcess::spawn(self.binary, self.data_dir, self.addr, self.args, self.env).await
    }
}
