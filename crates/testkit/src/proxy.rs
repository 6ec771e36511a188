//! A small TCP load balancer for tests of several servers on one database:
//! what nginx or HAProxy in TCP mode (or HTTP with WebSocket upgrade) is in
//! a real deployment. Each client connection goes to the next upstream in
//! turn that accepts a TCP connection, skipping those that refuse (a killed
//! server), and bytes are copied both ways until either side ends, so an
//! agent connected through it loses its connection when its server dies
//! and comes back through it to another one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a connect to one upstream may take before the next is tried:
/// on loopback a dead upstream refuses at once, so this only bounds a
/// listener whose backlog is full.
const CONNECT_LIMIT: Duration = Duration::from_secs(2);

/// A round-robin TCP proxy on 127.0.0.1. Dropping it stops it and ends
/// every connection through it.
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

/// What the accept loop and [`TcpProxy`]'s methods share.
struct Shared {
    /// The upstreams with how many client connections each was given.
    upstreams: Mutex<Vec<(SocketAddr, u64)>>,
    /// Where the next connection starts looking.
    next: AtomicUsize,
    /// Cancelled when the proxy is dropped: ends everything.
    stop: CancellationToken,
    /// A child of `stop`, cancelled by [`TcpProxy::disconnect_all`]: ends
    /// the connections open then, and is replaced for those after.
    current: Mutex<CancellationToken>,
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1 in front of `upstreams` (none
    /// yet is allowed: connections are closed until
    /// [`TcpProxy::set_upstreams`] gives some).
    pub async fn start(upstreams: &[SocketAddr]) -> anyhow::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            upstreams: Mutex::new(upstreams.iter().map(|a| (*a, 0)).collect()),
            next: AtomicUsize::new(0),
            current: Mutex::new(stop.child_token()),
            stop,
        });
        let accept = tokio::spawn(accept(listener, shared.clone()));
        Ok(TcpProxy {
            addr,
            shared,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`: a server URL for agents and API clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the upstreams (for connections accepted from now on; the
    /// counts of addresses kept are kept).
    pub fn set_upstreams(&self, upstreams: &[SocketAddr]) {
        let mut current = self.upstreams();
        let counts: Vec<(SocketAddr, u64)> = upstreams
            .iter()
            .map(|addr| {
                let count = current
                    .iter()
                    .find(|(a, _)| a == addr)
                    .map_or(0, |(_, n)| *n);
                (*addr, count)
            })
            .collect();
        *current = counts;
    }

    /// Ends every connection open now, as a balancer restarting (or
    /// reloading its backends) does; new ones are accepted as before.
    pub fn disconnect_all(&self) {
        let mut current = self
            .shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        current.cancel();
        *current = self.shared.stop.child_token();
    }

    /// Each upstream, in order, with how many client connections it was
    /// given so far.
    pub fn connections_per_upstream(&self) -> Vec<(SocketAddr, u64)> {
        self.upstreams().clone()
    }

    /// How many client connections `upstream` was given so far.
    pub fn connections_to(&self, upstream: SocketAddr) -> u64 {
        self.upstreams()
            .iter()
            .find(|(a, _)| *a == upstream)
            .map_or(0, |(_, n)| *n)
    }

    fn upstreams(&self) -> std::sync::MutexGuard<'_, Vec<(SocketAddr, u64)>> {
        self.shared.upstreams()
    }
}

impl Shared {
    fn upstreams(&self) -> std::sync::MutexGuard<'_, Vec<(SocketAddr, u64)>> {
        // A count is all the lock guards: a panic elsewhere leaves it usable.
        self.upstreams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The upstreams in the order the next connection tries them, starting
    /// one further each time (round robin).
    fn turn(&self) -> Vec<SocketAddr> {
        let upstreams: Vec<SocketAddr> = self.upstreams().iter().map(|(a, _)| *a).collect();
        if upstreams.is_empty() {
            return upstreams;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % upstreams.len();
        upstreams[start..]
            .iter()
            .chain(&upstreams[..start])
            .copied()
            .collect()
    }

    fn count(&self, upstream: SocketAddr) {
        if let Some((_, n)) = self.upstreams().iter_mut().find(|(a, _)| *a == upstream) {
            *n += 1;
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stop.cancel();
        self.accept.abort();
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let client = tokio::select! {
            _ = shared.stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        // A failed accept (the process out of descriptors) ends one
        // connection, not the proxy.
        let Ok((client, _)) = client else { continue };
        let ended = shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .child_token();
        tokio::spawn(forward(client, shared.clone(), ended));
    }
}

/// Connects `client` to the first upstream of its turn that accepts, and
/// copies bytes both ways until either side ends (or `ended`: the proxy
/// stops or drops every connection).
/// With no upstream accepting, the client is closed, as a load balancer
/// with every backend down does.
async fn forward(mut client: TcpStream, shared: Arc<Shared>, ended: CancellationToken) {
    let mut upstream = None;
    for addr in shared.turn() {
        if let Ok(Ok(stream)) = tokio::time::timeout(CONNECT_LIMIT, TcpStream::connect(addr)).await
        {
            shared.count(addr);
            upstream = Some(stream);
            break;
        }
    }
    let Some(mut upstream) = upstream else { return };
    // Small frames (a heartbeat, one log batch) go out at once.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut client_in, mut client_out) = client.split();
    let (mut upstream_in, mut upstream_out) = upstream.split();
    // Either side ending (or failing) ends both: a killed server's agents
    // see their connection close at once, as behind a real balancer. Each
    // copy has written everything it read before it ends.
    tokio::select! {
        _ = ended.cancelled() => {}
        _ = tokio::io::copy(&mut client_in, &mut upstream_out) => {}
        _ = tokio::io::copy(&mut upstream_in, &mut client_out) => {}
    }
}
