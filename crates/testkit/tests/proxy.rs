//! `TcpProxy` against two tiny real listeners: connections alternate
//! between the upstreams, a dead upstream is skipped, bytes go both ways,
//! a connection ends when its upstream ends it, and the proxy can drop
//! every connection at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use rm_testkit::TcpProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A listener that answers each connection with `name`, then echoes what
/// it reads until the client closes.
async fn echo(name: &'static str) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                stream.write_all(name.as_bytes()).await.unwrap();
                let mut buf = [0u8; 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, task)
}

/// An address nothing listens on (bound once, then let go).
fn dead_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Connects through `proxy`, reads which upstream answered, and checks
/// an echo.
async fn greeting(proxy: &TcpProxy) -> String {
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut name = [0u8; 1];
    stream.read_exact(&mut name).await.unwrap();
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");
    String::from_utf8(name.to_vec()).unwrap()
}

#[tokio::test]
async fn connections_alternate_between_the_upstreams() {
    let (a, _a) = echo("a").await;
    let (b, _b) = echo("b").await;
    let proxy = TcpProxy::start(&[a, b]).await.unwrap();
    assert!(proxy.url().starts_with("http://127.0.0.1:"));
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(greeting(&proxy).await);
    }
    assert_eq!(seen, ["a", "b", "a", "b", "a", "b"]);
    assert_eq!(proxy.connections_per_upstream(), [(a, 3), (b, 3)]);
}

#[tokio::test]
async fn a_dead_upstream_is_skipped() {
    let (a, _a) = echo("a").await;
    let dead = dead_addr();
    let proxy = TcpProxy::start(&[dead, a]).await.unwrap();
    for _ in 0..4 {
        assert_eq!(greeting(&proxy).await, "a");
    }
    assert_eq!(proxy.connections_to(dead), 0);
    assert_eq!(proxy.connections_to(a), 4);
}

#[tokio::test]
async fn an_upstream_that_ends_ends_the_client_connection() {
    // Answers, then closes at once: the client sees the end.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.write_all(b"bye").await.unwrap();
    });
    let proxy = TcpProxy::start(&[addr]).await.unwrap();
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).await.unwrap();
    assert_eq!(all, b"bye");
    server.await.unwrap();
}

#[tokio::test]
async fn with_no_upstream_answering_the_client_is_closed_until_one_is_given() {
    let dead = dead_addr();
    let proxy = TcpProxy::start(&[dead]).await.unwrap();
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut all = Vec::new();
    // Closed without a byte (or reset): nothing to talk to.
    let _ = stream.read_to_end(&mut all).await;
    assert!(all.is_empty());

    let (b, _b) = echo("b").await;
    proxy.set_upstreams(&[dead, b]);
    assert_eq!(greeting(&proxy).await, "b");
    assert_eq!(proxy.connections_per_upstream(), [(dead, 0), (b, 1)]);
}

#[tokio::test]
async fn disconnect_all_ends_the_open_connections_and_keeps_serving() {
    let (a, _a) = echo("a").await;
    let proxy = TcpProxy::start(&[a]).await.unwrap();
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut name = [0u8; 1];
    open.read_exact(&mut name).await.unwrap();
    proxy.disconnect_all();
    let mut rest = Vec::new();
    // Without the drop the echo would wait for more forever.
    let ended = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        open.read_to_end(&mut rest),
    )
    .await;
    assert!(ended.is_ok(), "the connection is still open");
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(greeting(&proxy).await, "a");
}
