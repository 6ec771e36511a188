//! The real `restic-manager server` binary as a child process: for tests
//! that kill it without warning (`kill -9`) or stop it with SIGTERM and
//! start it again on the same port and database, and for measurements that
//! must see the server alone (its memory, its CPU time); and several of
//! them on one PostgreSQL database ([`ServerProcess::start_on_postgres`],
//! [`ServerProcess::start_beside`]), for tests of one server dying while
//! another carries on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;
use tokio::process::Command;

use crate::api::Api;
use crate::child::LoggedChild;
use crate::server::{enrol_real_agent, RunningAgent, ADMIN_PASSWORD};
use rm_store::Store;
use rm_store_tests::{Backend, TestDatabase};

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

impl ProcessMemory {
    /// Process `pid`'s resident memory now and at its peak.
    pub fn of(pid: u32) -> anyhow::Result<ProcessMemory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("no {name} in /proc/{pid}/status"))
        };
        Ok(ProcessMemory {
            rss_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
        })
    }
}

/// The largest resident memory seen of each of some processes, sampled on
/// a thread of its own every few milliseconds until [`MemorySampler::stop`]:
/// for tests that bound what a transfer costs a process while it runs.
pub struct MemorySampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u64>>,
}

impl MemorySampler {
    /// Starts sampling `pids` every `every`.
    pub fn start(pids: Vec<u32>, every: Duration) -> MemorySampler {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peaks = vec![0u64; pids.len()];
            loop {
                for (peak, pid) in peaks.iter_mut().zip(&pids) {
                    if let Ok(memory) = ProcessMemory::of(*pid) {
                        *peak = (*peak).max(memory.rss_kib);
                    }
                }
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    return peaks;
                }
                std::thread::sleep(every);
            }
        });
        MemorySampler { stop, thread }
    }

    /// Stops and returns the largest `VmRSS` seen of each process, in KiB,
    /// in the order they were given.
    pub fn stop(self) -> Vec<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap_or_default()
    }
}

/// What `/proc/<pid>/stat` says of a process's place among the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// One letter: `R`, `S`, `D`, `Z` (a zombie: dead, not yet reaped)…
    pub state: String,
    /// Its parent's pid.
    pub ppid: u32,
    /// Its process group.
    pub pgrp: u32,
}

impl ProcStat {
    /// Process `pid`'s stat, if it exists.
    pub fn of(pid: u32) -> Option<ProcStat> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid pgrp …"; comm may hold spaces and parens.
        let (_, rest) = stat.rsplit_once(')')?;
        let mut fields = rest.split_whitespace();
        Some(ProcStat {
            state: fields.next()?.to_owned(),
            ppid: fields.next()?.parse().ok()?,
            pgrp: fields.next()?.parse().ok()?,
        })
    }

    /// Whether it still runs (it is not a zombie).
    pub fn alive(&self) -> bool {
        self.state != "Z"
    }
}

/// Every process's pid, from `/proc`.
pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The live children of process `parent` whose command line contains
/// `needle`, as (pid, command line with spaces for NULs): for tests that
/// check a program the agent started is (or is no longer) running.
pub fn children_running(parent: u32, needle: &str) -> Vec<(u32, String)> {
    all_pids()
        .into_iter()
        .filter(|pid| ProcStat::of(*pid).is_some_and(|s| s.alive() && s.ppid == parent))
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmdline.contains(needle).then_some((pid, cmdline))
        })
        .collect()
}

/// Bytes process `pid` has written (`wchar` in `/proc/<pid>/io`: every
/// `write` to a file, pipe or socket), for tests that check a producer is
/// held back by a slow consumer.
pub fn process_written(pid: u32) -> anyhow::Result<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no wchar in /proc/{pid}/io"))
}

/// CPU time a process has used (user + system), from `/proc/<pid>/stat`,
/// for benches that report what a part of the server costs.
pub fn process_cpu(pid: u32) -> anyhow::Result<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in `)`.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("odd /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13
    // after the state field that follows `)`.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no field {i} in /proc/{pid}/stat"))
    };
    let total = ticks(11)? + ticks(12)?;
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Ok(std::time::Duration::from_millis(total * 10))
}

/// Where a server process keeps its data.
enum DataDir {
    /// A temporary directory, deleted with the [`ServerProcess`].
    Temp(TempDir),
    /// The caller's directory, left alone.
    Given(PathBuf),
}

/// The database a server process runs on, shared by the servers started
/// beside it and kept as long as any of them.
struct Shared {
    /// The store, open from the test's side, for servers that share it
    /// (first, so its connections close before the database goes).
    store: Option<Arc<dyn Store>>,
    /// The folder of the sealing key file every server on the database is
    /// given (`--secret-key-file`); `None`: the key is in the server's
    /// data directory, and no server can start beside it.
    key_dir: Option<TempDir>,
    database: TestDatabase,
}

/// A `restic-manager server` process with its data directory.
pub struct ServerProcess {
    binary: PathBuf,
    data_dir: DataDir,
    /// The store [`ServerProcess::start`] chose (`RM_TEST_STORE`), or the
    /// one [`ServerProcess::start_on_postgres`] made, kept as long as the
    /// process may run; `None` for a given data directory.
    shared: Option<Arc<Shared>>,
    /// The id this server registered with on a shared database, since its
    /// last start.
    server_id: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    child: Option<LoggedChild>,
    /// What earlier runs printed, so a test can read the whole history.
    earlier_logs: String,
}

impl ServerProcess {
    /// Starts `<binary> server` on a free port of 127.0.0.1 in a temporary
    /// data directory, on the store `RM_TEST_STORE` picks (see
    /// `rm_store_tests`), with one heartbeat a second, the test admin
    /// password, and `extra` flags.
    pub async fn start(binary: &Path, extra: &[&str]) -> anyhow::Result<ServerProcess> {
        let mut args = vec![String::from("--heartbeat-seconds"), String::from("1")];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let dir = tempfile::tempdir()?;
        let database = TestDatabase::create_in(dir.path()).await?;
        let env = vec![
            (
                String::from("RM_ADMIN_PASSWORD"),
                String::from(ADMIN_PASSWORD),
            ),
            // The environment, not `--database-url`: a PostgreSQL URL
            // carries the cluster's password, and a command line is
            // readable by every user of the machine.
            (String::from("RM_DATABASE_URL"), database.url().to_owned()),
        ];
        let mut server = ServerProcess::new(
            binary,
            DataDir::Temp(dir),
            "127.0.0.1:0".parse()?,
            args,
            env,
        )?;
        server.shared = Some(Arc::new(Shared {
            database,
            key_dir: None,
            store: None,
        }));
        server.launch().await?;
        Ok(server)
    }

    /// Starts `<binary> server` as [`ServerProcess::start`] does, but on a
    /// fresh PostgreSQL database whatever `RM_TEST_STORE` says (it needs
    /// `RM_TEST_POSTGRES_URL`), with its sealing key in a file outside its
    /// data directory (`--secret-key-file`), so that
    /// [`ServerProcess::start_beside`] can start more servers on the same
    /// database. Its `--internal-url` is its own URL.
    pub async fn start_on_postgres(binary: &Path, extra: &[&str]) -> anyhow::Result<ServerProcess> {
        let key_dir = tempfile::tempdir()?;
        let database = TestDatabase::create_in_for(key_dir.path(), Backend::Postgres).await?;
        let store = database.open().await?;
        let shared = Arc::new(Shared {
            database,
            key_dir: Some(key_dir),
            store: Some(store),
        });
        ServerProcess::start_shared(binary, shared, extra).await
    }

    /// Starts another `<binary> server` on this one's database (several
    /// servers on one PostgreSQL, as behind a load balancer): the same
    /// `--secret-key-file`, its own port, data directory and
    /// `--internal-url`, one heartbeat a second, and `extra` flags. Only
    /// for a server from [`ServerProcess::start_on_postgres`] (or beside
    /// one).
    pub async fn start_beside(&self, extra: &[&str]) -> anyhow::Result<ServerProcess> {
        let shared = self
            .shared
            .clone()
            .filter(|s| s.key_dir.is_some())
            .context("only a server from ServerProcess::start_on_postgres has others beside it")?;
        ServerProcess::start_shared(&self.binary, shared, extra).await
    }

    async fn start_shared(
        binary: &Path,
        shared: Arc<Shared>,
        extra: &[&str],
    ) -> anyhow::Result<ServerProcess> {
        let key_file = shared
            .key_dir
            .as_ref()
            .context("no shared sealing key")?
            .path()
            .join(rm_server::KEY_FILE);
        let env = vec![
            (
                String::from("RM_ADMIN_PASSWORD"),
                String::from(ADMIN_PASSWORD),
            ),
            // Not on the command line: the URL carries the cluster's password.
            (
                String::from("RM_DATABASE_URL"),
                shared.database.url().to_owned(),
            ),
        ];
        let mut server = ServerProcess::new(
            binary,
            DataDir::Temp(tempfile::tempdir()?),
            "127.0.0.1:0".parse()?,
            Vec::new(),
            env,
        )?;
        server.args = vec![
            String::from("--heartbeat-seconds"),
            String::from("1"),
            String::from("--secret-key-file"),
            key_file.display().to_string(),
            String::from("--internal-url"),
            server.url.clone(),
        ];
        server.args.extend(extra.iter().map(|s| (*s).to_owned()));
        server.shared = Some(shared);
        server.launch().await?;
        Ok(server)
    }

    /// Starts `<binary> server --listen <listen> --data-dir <data_dir>
    /// <args…>` with `env` added (secrets such as the admin password go
    /// there, never in `args`). Port 0 picks a free port, kept across
    /// restarts.
    pub async fn start_in(
        binary: &Path,
        data_dir: &Path,
        listen: SocketAddr,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<ServerProcess> {
        std::fs::create_dir_all(data_dir)?;
        ServerProcess::launch_new(
            binary,
            DataDir::Given(data_dir.to_owned()),
            listen,
            args.iter().map(|a| (*a).to_owned()).collect(),
            env.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
        .await
    }

    /// Starts `<binary> server` with its data directory on `disk` (a small
    /// file system the test fills up or makes read-only), on a free port,
    /// with the test admin password and `args`.
    pub async fn start_on_disk(
        binary: &Path,
        disk: &crate::SmallDisk,
        args: &[&str],
    ) -> anyhow::Result<ServerProcess> {
        ServerProcess::start_in(
            binary,
            &disk.path().join("data"),
            "127.0.0.1:0".parse()?,
            args,
            &[("RM_ADMIN_PASSWORD", ADMIN_PASSWORD)],
        )
        .await
    }

    async fn launch_new(
        binary: &Path,
        data_dir: DataDir,
        listen: SocketAddr,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<ServerProcess> {
        let mut server = ServerProcess::new(binary, data_dir, listen, args, env)?;
        server.launch().await?;
        Ok(server)
    }

    /// A server not started yet, on `listen` (port 0: a free port, kept
    /// across restarts).
    fn new(
        binary: &Path,
        data_dir: DataDir,
        listen: SocketAddr,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<ServerProcess> {
        let addr = if listen.port() == 0 {
            std::net::TcpListener::bind(listen)?.local_addr()?
        } else {
            listen
        };
        Ok(ServerProcess {
            binary: binary.to_owned(),
            data_dir,
            shared: None,
            server_id: None,
            args,
            env,
            addr,
            url: format!("http://{addr}"),
            child: None,
            earlier_logs: String::new(),
        })
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.binary);
        command
            .arg("server")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.args)
            .env("RM_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.child = Some(LoggedChild::spawn("the server", command)?);
        let client = crate::http::client();
        let url = format!("{}/healthz", self.url);
        crate::wait_until(
            Duration::from_secs(15),
            "the server to answer /healthz",
            || {
                let request = client.get(&url).send();
                async move { matches!(request.await, Ok(r) if r.status().is_success()) }
            },
        )
        .await
        .with_context(|| format!("server log:\n{}", self.log()))?;
        // It registered before it answered: its id is in the store now.
        self.server_id = None;
        if let Some(store) = self.store() {
            let live = store.live_servers(chrono::Utc::now()).await?;
            self.server_id = live
                .into_iter()
                .find(|s| s.internal_url == self.url)
                .map(|s| s.id);
            anyhow::ensure!(
                self.server_id.is_some(),
                "the server at {} is not registered on the database",
                self.url
            );
        }
        Ok(())
    }

    /// Everything every run of the server printed so far.
    pub fn log(&self) -> String {
        let current = self
            .child
            .as_ref()
            .map(LoggedChild::log)
            .unwrap_or_default();
        format!("{}{current}", self.earlier_logs)
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        match &self.data_dir {
            DataDir::Temp(dir) => dir.path(),
            DataDir::Given(path) => path,
        }
    }

    /// The store [`ServerProcess::start`] chose for it; `None` when it
    /// runs on the SQLite file of a given data directory.
    pub fn database(&self) -> Option<&TestDatabase> {
        self.shared.as_ref().map(|s| &s.database)
    }

    /// The database of a server from [`ServerProcess::start_on_postgres`]
    /// (or beside one), open from the test's side: who holds which agent,
    /// which lease, which servers are alive.
    pub fn store(&self) -> Option<&dyn Store> {
        self.shared.as_ref()?.store.as_deref()
    }

    /// The id this server registered with on a shared database (a new one
    /// after each start); `None` on a store of its own.
    pub fn server_id(&self) -> Option<&str> {
        self.server_id.as_deref()
    }

    /// The running process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(LoggedChild::pid)
    }

    /// The server's resident memory now and at its peak.
    pub fn memory(&self) -> anyhow::Result<ProcessMemory> {
        ProcessMemory::of(self.pid().context("the server is not running")?)
    }

    /// CPU time (user plus system) the server has used so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let pid = self.pid().context("the server is not running")?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
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

    /// SIGKILL: the server dies mid-whatever, as in a crash.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("the server is not running")?;
        child.kill9().await?;
        self.earlier_logs.push_str(&child.log());
        Ok(())
    }

    /// SIGTERM, and waits up to `limit` for a clean exit.
    pub async fn terminate(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("the server is not running")?;
        let status = child.terminate(limit).await;
        self.earlier_logs.push_str(&child.log());
        status
    }

    /// Starts the server again on the same port with the same data.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "the server is still running");
        self.launch().await
    }

    /// An API client without credentials.
    pub fn anonymous(&self) -> Api {
        Api::new(&self.url, None)
    }

    /// An API client logged in as `admin`.
    pub async fn admin(&self) -> anyhow::Result<Api> {
        self.anonymous().login("admin", ADMIN_PASSWORD).await
    }

    /// Enrols a host with the real agent of `binary` and starts it, as
    /// [`crate::TestServer::enrolled_agent`] does.
    pub async fn enrolled_agent(
        &self,
        binary: &Path,
        name: &str,
        restic_bin: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<RunningAgent> {
        self.enrolled_agent_through(&self.url, binary, name, restic_bin, env)
            .await
    }

    /// [`ServerProcess::enrolled_agent`] with the agent enrolled at, and
    /// connecting to, `server_url` instead of this server: a load balancer
    /// ([`crate::TcpProxy`]) in front of it and the servers beside it.
    pub async fn enrolled_agent_through(
        &self,
        server_url: &str,
        binary: &Path,
        name: &str,
        restic_bin: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<RunningAgent> {
        let admin = self.admin().await?;
        enrol_real_agent(&admin, server_url, binary, name, restic_bin, env, &[]).await
    }
}
