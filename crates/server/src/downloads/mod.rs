//! The agent binaries this server hands out, for the installer
//! (`/install.sh`) and for agent upgrades: `GET /download/agent/SHA256SUMS`
//! and `GET /download/agent/linux-<arch>`; and the installer that fetches
//! them, `GET /install.sh` ([`install`]).
//!
//! The server's own platform is served from its own binary (or
//! [`ServerConfig::agent_binary`](crate::ServerConfig::agent_binary)); other
//! platforms from files named `linux-<arch>` in `--agent-binaries DIR`. A
//! file's SHA-256 is computed once and kept while its size and modification
//! time stay the same, so a thousand agents upgrading at once cost one hash.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use crate::state::AppState;

pub mod install;

/// What went wrong reading an agent binary.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The file could not be read.
    #[error("could not read the agent binary {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One agent binary on offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentBinary {
    /// `linux-<arch>`, as `uname -m` names the architecture (`x86_64`,
    /// `aarch64`, `armv7`, …).
    pub platform: String,
    /// Where the file is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub len: u64,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
}

// One naming rule for the server, the agent and the installer's platforms.
pub use rm_protocol::upgrade::{is_platform, own_platform};

/// Identifies one version of a file: hashes are recomputed when it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
}

/// The catalogue of agent binaries.
#[derive(Debug)]
pub struct AgentDownloads {
    own: Option<PathBuf>,
    dir: Option<PathBuf>,
    hashes: Mutex<HashMap<PathBuf, (FileStamp, String)>>,
}

impl AgentDownloads {
    /// Serves `own` (default: this process's executable) for this
    /// platform and `linux-<arch>` files of `dir` for the others.
    pub fn new(own: Option<PathBuf>, dir: Option<PathBuf>) -> AgentDownloads {
        AgentDownloads {
            own,
            dir,
            hashes: Mutex::new(HashMap::new()),
        }
    }

    /// The file for `platform`, when there is one; never a path outside
    /// the configured ones.
    fn path_for(&self, platform: &str) -> Option<PathBuf> {
        if !is_platform(platform) {
            return None;
        }
        if platform == own_platform() {
            return self.own.clone().or_else(|| std::env::current_exe().ok());
        }
        let path = self.dir.as_ref()?.join(platform);
        path.is_file().then_some(path)
    }

    /// Every platform on offer, sorted by name.
    pub async fn list(&self) -> Result<Vec<AgentBinary>, DownloadError> {
        let mut platforms = vec![own_platform()];
        if let Some(dir) = &self.dir {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    if let Some(name) = entry.file_name().to_str() {
                        if is_platform(name) && !platforms.iter().any(|p| p == name) {
                            platforms.push(name.to_owned());
                        }
                    }
                }
            }
        }
        platforms.sort();
        let mut binaries = Vec::with_capacity(platforms.len());
        for platform in platforms {
            if let Some(binary) = self.get(&platform).await? {
                binaries.push(binary);
            }
        }
        Ok(binaries)
    }

    /// The binary for `platform`, or `None` when the server has none.
    pub async fn get(&self, platform: &str) -> Result<Option<AgentBinary>, DownloadError> {
        let Some(path) = self.path_for(platform) else {
            return Ok(None);
        };
        let stamp = stamp(&path)?;
        let cached = self
            .hashes
            .lock()
            .ok()
            .and_then(|hashes| hashes.get(&path).cloned());
        let sha256 = match cached {
            Some((seen, sha256)) if seen == stamp => sha256,
            _ => {
                let file = path.clone();
                let sha256 = tokio::task::spawn_blocking(move || sha256_of(&file))
                    .await
                    .map_err(|e| DownloadError::Io {
                        path: path.clone(),
                        source: std::io::Error::other(e.to_string()),
                    })??;
                if let Ok(mut hashes) = self.hashes.lock() {
                    hashes.insert(path.clone(), (stamp.clone(), sha256.clone()));
                }
                sha256
            }
        };
        Ok(Some(AgentBinary {
            platform: platform.to_owned(),
            path,
            len: stamp.len,
            sha256,
        }))
    }

    /// The `SHA256SUMS` text: `<hex>  <platform>` per line, as
    /// `sha256sum -c` reads it.
    pub async fn sums(&self) -> Result<String, DownloadError> {
        Ok(self
            .list()
            .await?
            .iter()
            .map(|b| format!("{}  {}\n", b.sha256, b.platform))
            .collect())
    }
}

fn stamp(path: &Path) -> Result<FileStamp, DownloadError> {
    let meta = std::fs::metadata(path).map_err(|source| DownloadError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(FileStamp {
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

/// The SHA-256 of a file, lower-case hex.
pub fn sha256_of(path: &Path) -> Result<String, DownloadError> {
    let io = |source| DownloadError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = std::io::Read::read(&mut file, &mut buffer).map_err(io)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Hashes every agent binary on offer in the background, so the first
/// `/install.sh`, `SHA256SUMS` or upgrade request finds them ready.
pub(crate) fn spawn_warm_up(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        match state.downloads().list().await {
            Ok(binaries) => tracing::debug!(count = binaries.len(), "agent binaries hashed"),
            Err(e) => tracing::warn!("could not hash the agent binaries on offer: {e}"),
        }
    })
}

/// `/download/agent/…`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/download/agent/SHA256SUMS", get(sums))
        .route("/download/agent/{platform}", get(binary))
        .route("/install.sh", get(install::script))
}

async fn sums(State(state): State<AppState>) -> Response {
    match state.downloads().sums().await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
        Err(e) => unavailable(&e),
    }
}

async fn binary(State(state): State<AppState>, UrlPath(platform): UrlPath<String>) -> Response {
    let binary = match state.downloads().get(&platform).await {
        Ok(Some(binary)) => binary,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                format!(
                    "this server has no agent for {platform:?}; it serves {} (give others with --agent-binaries DIR)\n",
                    own_platform()
                ),
            )
                .into_response()
        }
        Err(e) => return unavailable(&e),
    };
    let file = match tokio::fs::File::open(&binary.path).await {
        Ok(file) => file,
        Err(source) => {
            return unavailable(&DownloadError::Io {
                path: binary.path,
                source,
            })
        }
    };
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, binary.len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"restic-manager-{}\"",
                    binary.platform
                ),
            ),
            (
                header::HeaderName::from_static("x-checksum-sha256"),
                binary.sha256,
            ),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::new(file)),
    )
        .into_response()
}

fn unavailable(e: &DownloadError) -> Response {
    tracing::error!("{e}");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the agent binary cannot be read on the server; see its log\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_names_are_never_paths() {
        assert!(is_platform("linux-x86_64"));
        assert!(is_platform("linux-aarch64"));
        assert!(!is_platform("linux-"));
        assert!(!is_platform("linux-../etc"));
        assert!(!is_platform("linux-X86"));
        assert!(!is_platform("darwin-arm64"));
        assert!(!is_platform("SHA256SUMS"));
    }

    #[tokio::test]
    async fn the_catalogue_lists_own_and_extra_platforms_with_their_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("own");
        std::fs::write(&own, b"own binary").unwrap();
        let extra = tempfile::tempdir().unwrap();
        std::fs::write(extra.path().join("linux-riscv64"), b"abc").unwrap();
        std::fs::write(extra.path().join("README"), b"not a platform").unwrap();
        let downloads = AgentDownloads::new(Some(own), Some(extra.path().to_owned()));
        let list = downloads.list().await.unwrap();
        let names: Vec<_> = list.iter().map(|b| b.platform.as_str()).collect();
        let mut expected = vec![own_platform(), "linux-riscv64".to_owned()];
        expected.sort();
        assert_eq!(names, expected);
        let riscv = downloads.get("linux-riscv64").await.unwrap().unwrap();
        // sha256("abc"), FIPS 180-2's example.
        assert_eq!(
            riscv.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(riscv.len, 3);
        assert!(downloads.get("linux-mips").await.unwrap().is_none());
        let sums = downloads.sums().await.unwrap();
        assert!(sums.contains(
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  linux-riscv64\n"
        ));
    }
}
