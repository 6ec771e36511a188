//! `rclone serve restic` on 127.0.0.1, for tests against a real REST
//! repository. rclone must be installed (`scripts/test` installs it); a
//! missing rclone fails the test rather than skipping it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};

/// Where Debian installs rclone.
pub const SYSTEM_RCLONE: &str = "/usr/bin/rclone";
use std::time::{Duration, Instant};

fn ok<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    let listener = ok(TcpListener::bind("127.0.0.1:0"), "bind");
    ok(listener.local_addr(), "local_addr").port()
}

/// `rclone serve restic` on a free port, killed when dropped.
pub struct RcloneServer {
    child: Child,
    /// The repository URL of the server's root.
    pub url: String,
}

impl RcloneServer {
    /// Starts the server over `dir`. Panics, saying how to install it,
    /// when rclone is missing: a test that needs it must not pass without it.
    pub fn start(dir: &Path) -> RcloneServer {
        assert!(
            Path::new(SYSTEM_RCLONE).exists(),
            "{SYSTEM_RCLONE} is not installed: run scripts/test, or apt-get install rclone"
        );
        let port = free_port();
        let child = ok(
            std::process::Command::new(SYSTEM_RCLONE)
                .args(["serve", "restic", "--addr", &format!("127.0.0.1:{port}")])
                .arg(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn(),
            "spawn rclone",
        );
        let server = RcloneServer {
            child,
            url: format!("rest:http://127.0.0.1:{port}/"),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "rclone did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for RcloneServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
