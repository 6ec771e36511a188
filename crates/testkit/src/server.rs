//! A real server on an ephemeral port with a temporary store (the one
//! `RM_TEST_STORE` picks: SQLite by default), over plain HTTP or over TLS
//! with a self-signed certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rm_server::{AppState, ServerConfig, ServerError, TlsIdentity};
use rm_store::prelude::*;
use rm_store_tests::{Backend, TestDatabase};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::{AgentProcess, TestCert};

/// The admin password every test server starts with.
pub const ADMIN_PASSWORD: &str = "test-admin-password";

/// A running server. Dropping it stops the server and deletes its data.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>` (`https://` in TLS mode).
    pub url: String,
    /// The server's state (store, hub, settings).
    pub state: AppState,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), ServerError>>>,
    data_dir: TempDir,
    /// Taken when the server stops keeping its data.
    database: Option<TestDatabase>,
    tls: Option<Arc<TestTls>>,
    /// Trusts the server's certificate in TLS mode.
    client: reqwest::Client,
}

/// The certificate of a TLS test server and the identity loaded from it.
struct TestTls {
    cert: TestCert,
    identity: TlsIdentity,
}

impl TestServer {
    /// Starts a server with default settings and one heartbeat a second.
    pub async fn start() -> anyhow::Result<TestServer> {
        TestServer::start_with(|_| {}).await
    }

    /// Starts a server after `configure` adjusts its settings.
    pub async fn start_with(
        configure: impl FnOnce(&mut ServerConfig),
    ) -> anyhow::Result<TestServer> {
        TestServer::start_configured(None, configure).await
    }

    /// Starts a server with default settings on a store of `backend`,
    /// whatever `RM_TEST_STORE` says (a bench comparing stores, a test of
    /// one store's behaviour).
    pub async fn start_on(backend: Backend) -> anyhow::Result<TestServer> {
        TestServer::start_on_with(backend, |_| {}).await
    }

    /// [`TestServer::start_on`] after `configure` adjusts its settings.
    pub async fn start_on_with(
        backend: Backend,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> anyhow::Result<TestServer> {
        TestServer::start_configured_on(None, configure, backend).await
    }

    /// Starts a server serving HTTPS/WSS with a fresh self-signed
    /// certificate for 127.0.0.1 and localhost ([`TestServer::tls_cert`]).
    pub async fn start_tls() -> anyhow::Result<TestServer> {
        TestServer::start_tls_with(|_| {}).await
    }

    /// [`TestServer::start_tls`] after `configure` adjusts its settings.
    pub async fn start_tls_with(
        configure: impl FnOnce(&mut ServerConfig),
    ) -> anyhow::Result<TestServer> {
        let cert = TestCert::generate()?;
        let identity = TlsIdentity::load(&cert.cert_path, &cert.key_path)?;
        TestServer::start_configured(Some(Arc::new(TestTls { cert, identity })), configure).await
    }

    async fn start_configured(
        tls: Option<Arc<TestTls>>,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> anyhow::Result<TestServer> {
        TestServer::start_configured_on(tls, configure, Backend::from_env()).await
    }

    async fn start_configured_on(
        tls: Option<Arc<TestTls>>,
        configure: impl FnOnce(&mut ServerConfig),
        backend: Backend,
    ) -> anyhow::Result<TestServer> {
        let data_dir = tempfile::tempdir()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr()?);
        let mut config = ServerConfig::new(url);
        config.heartbeat_seconds = 1;
        config.tls_fingerprint = tls.as_ref().map(|t| t.identity.fingerprint());
        configure(&mut config);
        let database = TestDatabase::create_in_for(data_dir.path(), backend).await?;
        let store = database.open().await?;
        TestServer::launch(data_dir, Some(database), store, listener, config, tls).await
    }

    /// Starts another server on this one's database (several servers on
    /// one PostgreSQL), with its own port and data directory, this one's
    /// sealing key, default settings and one heartbeat a second, after
    /// `configure` adjusts them. It does not own the database, which goes
    /// with `self`: it cannot be restarted.
    pub async fn start_beside(
        &self,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> anyhow::Result<TestServer> {
        let database = self
            .database()
            .context("this server's database was taken; no server can start beside it")?;
        let store = database.open().await?;
        let data_dir = tempfile::tempdir()?;
        std::fs::copy(
            self.data_dir().join(rm_server::KEY_FILE),
            data_dir.path().join(rm_server::KEY_FILE),
        )
        .context("copying the sealing key")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut config = ServerConfig::new(format!("http://{}", listener.local_addr()?));
        config.heartbeat_seconds = 1;
        configure(&mut config);
        TestServer::launch(data_dir, None, store, listener, config, None).await
    }

    /// Stops the server as a crash would (SIGKILL): it stops serving at
    /// once, and its registration and leases are neither renewed nor
    /// released, so they expire for the other servers to take over.
    /// Nothing of the graceful stop runs; the database stays.
    pub fn crash(&mut self) {
        self.state.cluster().halt();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// The server's certificate, in TLS mode.
    pub fn tls_cert(&self) -> Option<&TestCert> {
        self.tls.as_ref().map(|t| &t.cert)
    }

    /// Stops the server gracefully and starts it again on the same port
    /// with the same database, as an operator's restart would.
    pub async fn restart(self) -> anyhow::Result<TestServer> {
        self.stop_keeping_data().await?.start().await
    }

    /// Stops the server gracefully but keeps its database and port, so it
    /// can be started again later (to test what happens while it is away).
    pub async fn stop_keeping_data(mut self) -> anyhow::Result<StoppedServer> {
        let config = self.state.config().clone();
        let addr = self.addr;
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await??;
        }
        let data_dir = std::mem::replace(&mut self.data_dir, tempfile::tempdir()?);
        let database = self
            .database
            .take()
            .context("the server's database was taken before")?;
        Ok(StoppedServer {
            addr,
            config,
            data_dir,
            database,
            tls: self.tls.take(),
        })
    }

    async fn launch(
        data_dir: TempDir,
        database: Option<TestDatabase>,
        store: Arc<dyn Store>,
        listener: tokio::net::TcpListener,
        config: ServerConfig,
        tls: Option<Arc<TestTls>>,
    ) -> anyhow::Result<TestServer> {
        rm_server::ensure_first_admin(store.as_ref(), Some(ADMIN_PASSWORD)).await?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{addr}");
        let key =
            rm_server::sealing::unlock(store.as_ref(), &data_dir.path().join(rm_server::KEY_FILE))
                .await?;
        let state = AppState::new(store, config, key);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let stopped = async move { stop.cancelled().await };
        let (task, client) = match &tls {
            Some(tls) => {
                let served = tls.clone();
                let state = state.clone();
                let task = tokio::spawn(async move {
                    rm_server::serve_tls(listener, &served.identity, state, stopped).await
                });
                (task, tls.cert.client()?)
            }
            None => (
                tokio::spawn(rm_server::serve(listener, state.clone(), stopped)),
                crate::http::client(),
            ),
        };
        let server = TestServer {
            addr,
            url,
            state,
            shutdown,
            task: Some(task),
            data_dir,
            database,
            tls,
            client,
        };
        server.wait_healthy().await?;
        Ok(server)
    }

    /// The store behind the server.
    pub fn store(&self) -> &dyn Store {
        self.state.store()
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// Where its store lives (`RM_TEST_STORE`): a SQLite file in
    /// [`TestServer::data_dir`] or a PostgreSQL schema of its own.
    pub fn database(&self) -> Option<&TestDatabase> {
        self.database.as_ref()
    }

    /// `ws://127.0.0.1:<port>/ws/agent` (`wss://` in TLS mode).
    pub fn ws_url(&self) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}/ws/agent", self.addr)
    }

    /// An API client without credentials (trusting the server's
    /// certificate in TLS mode).
    pub fn anonymous(&self) -> Api {
        Api::with_client(self.client.clone(), &self.url, None)
    }

    /// An HTTP client whose connections come from `local` (any address in
    /// 127.0.0.0/8 reaches a loopback server on Linux), so tests can be
    /// several clients to the server's per-address limits. Plain HTTP only.
    pub fn client_from(&self, local: std::net::IpAddr) -> anyhow::Result<reqwest::Client> {
        Ok(crate::http::client_builder().local_address(local).build()?)
    }

    /// An API client logged in as `admin`.
    pub async fn admin(&self) -> anyhow::Result<Api> {
        self.anonymous().login("admin", ADMIN_PASSWORD).await
    }

    /// Creates an enrolment token and enrols a host with it, returning the
    /// host id and the agent token.
    pub async fn enrolled_host(&self, name: &str) -> anyhow::Result<(String, String)> {
        let admin = self.admin().await?;
        let created = admin.create_enrollment_token(Some(name), None).await?;
        let enrolled = self
            .anonymous()
            .enroll(&created.token, None, &format!("{name}.test"))
            .await?;
        Ok((enrolled.host_id, enrolled.agent_token))
    }

    /// [`TestServer::enrolled_host`] with `labels` (`[("team", "a")]`)
    /// given by its enrolment token.
    pub async fn enrolled_host_labelled(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<(String, String)> {
        let admin = self.admin().await?;
        let created = admin.create_token_with_labels(labels).await?;
        let enrolled = self
            .anonymous()
            .enroll(&created.token, Some(name), &format!("{name}.test"))
            .await?;
        Ok((enrolled.host_id, enrolled.agent_token))
    }

    /// Enrols a host through the real `agent enroll` of `binary`, starts
    /// the real `agent run` for it with `restic_bin` and extra environment,
    /// and waits until it is online.
    pub async fn enrolled_agent(
        &self,
        binary: &std::path::Path,
        name: &str,
        restic_bin: &std::path::Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<RunningAgent> {
        self.enrolled_agent_with(binary, name, restic_bin, env, &[])
            .await
    }

    /// [`TestServer::enrolled_agent`] with extra `agent enroll` arguments
    /// (`--ca-cert`, `--server-fingerprint`, …).
    pub async fn enrolled_agent_with(
        &self,
        binary: &std::path::Path,
        name: &str,
        restic_bin: &std::path::Path,
        env: &[(&str, &str)],
        enroll_args: &[&str],
    ) -> anyhow::Result<RunningAgent> {
        let admin = self.admin().await?;
        enrol_real_agent(
            &admin,
            &self.url,
            binary,
            name,
            restic_bin,
            env,
            enroll_args,
        )
        .await
    }

    /// [`TestServer::enrolled_agent`] with the agent's state directory at
    /// `state_dir` (created by `agent enroll`), e.g. on a [`crate::SmallDisk`].
    pub async fn enrolled_agent_in(
        &self,
        binary: &std::path::Path,
        name: &str,
        restic_bin: &std::path::Path,
        env: &[(&str, &str)],
        state_dir: &std::path::Path,
    ) -> anyhow::Result<RunningAgent> {
        let admin = self.admin().await?;
        enrol(
            &admin,
            &self.url,
            Enrolment {
                binary,
                name,
                labels: &[],
                restic_bin,
                env,
                enroll_args: &[],
                state_dir: Some(state_dir),
            },
        )
        .await
    }

    /// [`TestServer::enrolled_agent`] with an enrolment token carrying
    /// `labels` (so the host has them, and the policies matching them,
    /// from its enrolment on).
    pub async fn enrolled_agent_labelled(
        &self,
        binary: &std::path::Path,
        name: &str,
        labels: &[(&str, &str)],
        restic_bin: &std::path::Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<RunningAgent> {
        let admin = self.admin().await?;
        enrol(
            &admin,
            &self.url,
            Enrolment {
                binary,
                name,
                labels,
                restic_bin,
                env,
                enroll_args: &[],
                state_dir: None,
            },
        )
        .await
    }

    /// Whether the store says the host is online.
    pub async fn host_online(&self, host_id: &str) -> bool {
        let Ok(id) = host_id.parse() else {
            return false;
        };
        matches!(self.store().host(id).await, Ok(Some(h)) if h.online)
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let client = self.client.clone();
        let url = format!("{}/healthz", self.url);
        crate::wait_until(
            Duration::from_secs(10),
            "the server to answer /healthz",
            || {
                let request = client.get(&url).send();
                async move { matches!(request.await, Ok(r) if r.status().is_success()) }
            },
        )
        .await
        .context("test server did not start")
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

/// Enrols a host named `name` at the server `url` through the real `agent
/// enroll` of `binary` (with `enroll_args`), starts its real `agent run`, and waits until the
/// server lists it online.
pub(crate) async fn enrol_real_agent(
    admin: &Api,
    url: &str,
    binary: &std::path::Path,
    name: &str,
    restic_bin: &std::path::Path,
    env: &[(&str, &str)],
    enroll_args: &[&str],
) -> anyhow::Result<RunningAgent> {
    enrol(
        admin,
        url,
        Enrolment {
            binary,
            name,
            labels: &[],
            restic_bin,
            env,
            enroll_args,
            state_dir: None,
        },
    )
    .await
}

/// What [`enrol`] enrols: a host named `name` (with `labels` from its
/// token) through the real `agent enroll` of `binary` (with
/// `enroll_args`), run with `restic_bin` and the extra environment `env`,
/// its state directory at `state_dir` (a new temporary folder when `None`).
pub(crate) struct Enrolment<'a> {
    pub binary: &'a std::path::Path,
    pub name: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
    pub restic_bin: &'a std::path::Path,
    pub env: &'a [(&'a str, &'a str)],
    pub enroll_args: &'a [&'a str],
    pub state_dir: Option<&'a std::path::Path>,
}

/// Enrols the host `what` says at the server `url`, starts its real
/// `agent run`, and waits until the server lists it online.
async fn enrol(admin: &Api, url: &str, what: Enrolment<'_>) -> anyhow::Result<RunningAgent> {
    let Enrolment {
        binary,
        name,
        labels,
        restic_bin,
        env,
        enroll_args,
        state_dir,
    } = what;
    let created = admin
        .create_labelled_enrollment_token(rm_protocol::api::CreateEnrollmentToken {
            name: Some(name.to_owned()),
            ttl_seconds: None,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .await?;
    let state = tempfile::tempdir()?;
    let state_dir =
        state_dir.map_or_else(|| state.path().join("agent"), std::path::Path::to_path_buf);
    let out = AgentProcess::enroll(binary, url, &created.token, &state_dir, enroll_args).await?;
    if !out.status.success() {
        anyhow::bail!(
            "agent enroll failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let host_id = admin
        .hosts()
        .await?
        .into_iter()
        .find(|h| h.name == name)
        .map(|h| h.id)
        .context("the enrolled host is not listed")?;
    let process = AgentProcess::spawn(binary, &state_dir, restic_bin, env)?;
    crate::wait_until(Duration::from_secs(15), "the agent to connect", || {
        let hosts = admin.hosts();
        let host_id = &host_id;
        async move {
            matches!(hosts.await, Ok(hosts) if hosts.iter().any(|h| &h.id == host_id && h.online))
        }
    })
    .await
    .with_context(|| format!("agent log:\n{}", process.log()))?;
    Ok(RunningAgent {
        host_id,
        process,
        state_dir,
        _state: state,
    })
}

/// A real agent process enrolled with a [`TestServer`].
pub struct RunningAgent {
    /// The host it is.
    pub host_id: String,
    /// The process.
    pub process: AgentProcess,
    /// Its state directory.
    pub state_dir: std::path::PathBuf,
    _state: TempDir,
}

/// A server stopped by [`TestServer::stop_keeping_data`].
pub struct StoppedServer {
    addr: SocketAddr,
    config: ServerConfig,
    data_dir: TempDir,
    database: TestDatabase,
    tls: Option<Arc<TestTls>>,
}

impl StoppedServer {
    /// Starts it again on the same port with the same database.
    pub async fn start(self) -> anyhow::Result<TestServer> {
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        let store = self.database.open().await?;
        TestServer::launch(
            self.data_dir,
            Some(self.database),
            store,
            listener,
            self.config,
            self.tls,
        )
        .await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
