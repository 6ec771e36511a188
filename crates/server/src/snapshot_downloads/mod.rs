//! Downloading a file or folder of a snapshot from the browser (DESIGN §10,
//! docs/downloads.md): `GET /api/v1/hosts/{id}/snapshots/{sid}/download`.
//!
//! The server never holds the data. The browser's request registers a
//! pending download under a fresh one-time id and sends the agent
//! `download.start`; the agent posts `restic dump`'s output to
//! `POST /agent/v1/downloads/{id}`, and that request's body becomes the
//! browser's response body, chunk by chunk ([`Relay`]). hyper reads the
//! next chunk of the upload only when the browser took the previous one,
//! so TCP flow control slows restic down to the browser's pace and memory
//! stays a few chunks per download. When the browser goes away, the relay
//! is dropped, the upload is answered and its connection closed, and the
//! agent kills restic.
//!
//! In a cluster, when the agent is connected to another server, that
//! server is signalled to pass `download.start` on with this server's
//! `--internal-url` as the upload URL: the data still flows agent → this
//! server → browser, never through the database.
//!
//! Concurrency is bounded per host and per server ([`Downloads::begin`]);
//! a slot is held from the browser's request to the end of its response.

pub(crate) mod http;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::body::{Body, BodyDataStream, Bytes};
use futures_util::Stream;
use prometheus_client::metrics::counter::Counter;
use rm_core::{DownloadId, HostId};
use rm_protocol::downloads::DownloadFailure;
use tokio::sync::oneshot;

/// Downloads one host may have running at once.
pub const PER_HOST: usize = 2;
/// Downloads one server may relay at once.
pub const PER_SERVER: usize = 16;

/// What an agent sent for a download.
#[derive(Debug)]
pub(crate) enum Upload {
    /// The data follows in `body`.
    Data {
        /// A file (as it is) or a folder (an archive).
        is_dir: bool,
        /// A file's size, when the agent gave it.
        size: Option<u64>,
        /// The upload's body, read as the browser reads.
        body: Body,
        /// Told `true` when the browser got every byte; dropped when it
        /// went away first.
        done: oneshot::Sender<bool>,
    },
    /// The agent could not produce it.
    Failure(DownloadFailure),
}

/// Why a download could not be registered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Busy {
    /// The host has [`PER_HOST`] downloads running.
    #[error("host `{0}` already has {PER_HOST} downloads running; wait for one to end")]
    Host(HostId),
    /// The server relays [`PER_SERVER`] downloads.
    #[error("this server already relays {PER_SERVER} downloads; wait for one to end")]
    Server,
}

#[derive(Debug, Default)]
struct Registry {
    pending: HashMap<DownloadId, (HostId, oneshot::Sender<Upload>)>,
    per_host: HashMap<HostId, usize>,
    total: usize,
}

/// The downloads of this server: pending ones (waiting for their upload)
/// and the count of running ones. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Downloads(Arc<Mutex<Registry>>);

impl Downloads {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // The map stays consistent under every panic point (single inserts
        // and removes), so a poisoned lock is still usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a download from `host` under a fresh id: the [`Slot`]
    /// holding its place, and where its upload will arrive.
    pub(crate) fn begin(&self, host: HostId) -> Result<(Slot, oneshot::Receiver<Upload>), Busy> {
        let mut registry = self.registry();
        if registry.per_host.get(&host).copied().unwrap_or(0) >= PER_HOST {
            return Err(Busy::Host(host));
        }
        if registry.total >= PER_SERVER {
            return Err(Busy::Server);
        }
        let id = DownloadId::new();
        let (handoff, arrival) = oneshot::channel();
        registry.pending.insert(id, (host, handoff));
        *registry.per_host.entry(host).or_default() += 1;
        registry.total += 1;
        Ok((
            Slot {
                downloads: self.clone(),
                id,
                host,
            },
            arrival,
        ))
    }

    /// Takes the pending download `id` for an upload by `host`: once, and
    /// only by the host it was asked of.
    pub(crate) fn claim(&self, id: DownloadId, host: HostId) -> Option<oneshot::Sender<Upload>> {
        let mut registry = self.registry();
        match registry.pending.get(&id) {
            Some((owner, _)) if *owner == host => registry.pending.remove(&id).map(|(_, s)| s),
            _ => None,
        }
    }

    /// Downloads registered or running now.
    pub fn running(&self) -> usize {
        self.registry().total
    }
}

/// A download's place in the limits, from the browser's request to the end
/// of its response; dropping it frees the place (and the pending id, if
/// no upload claimed it).
#[derive(Debug)]
pub(crate) struct Slot {
    downloads: Downloads,
    id: DownloadId,
    host: HostId,
}

impl Slot {
    /// The one-time id the agent uploads under.
    pub(crate) fn id(&self) -> DownloadId {
        self.id
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut registry = self.downloads.registry();
        registry.pending.remove(&self.id);
        if let Some(count) = registry.per_host.get_mut(&self.host) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                registry.per_host.remove(&self.host);
            }
        }
        registry.total = registry.total.saturating_sub(1);
    }
}

/// The browser's response body: the upload's body passed on as it is
/// read, holding the download's [`Slot`]. Reports to the upload whether
/// the browser got everything.
pub(crate) struct Relay {
    upload: BodyDataStream,
    done: Option<oneshot::Sender<bool>>,
    bytes: Counter,
    _slot: Slot,
}

impl Relay {
    /// Passes `upload` on, adding what it passes to `bytes`.
    pub(crate) fn new(
        upload: Body,
        done: oneshot::Sender<bool>,
        slot: Slot,
        bytes: Counter,
    ) -> Relay {
        Relay {
            upload: upload.into_data_stream(),
            done: Some(done),
            bytes,
            _slot: slot,
        }
    }
}

impl Stream for Relay {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = Pin::new(&mut self.upload).poll_next(cx);
        match &next {
            Poll::Ready(Some(Ok(chunk))) => {
                self.bytes.inc_by(chunk.len() as u64);
            }
            Poll::Ready(None) => {
                if let Some(done) = self.done.take() {
                    let _ = done.send(true);
                }
            }
            // The agent's upload broke (restic failed mid-way): the
            // browser's response is cut short too, never complete-looking.
            Poll::Ready(Some(Err(_))) => {
                if let Some(done) = self.done.take() {
                    let _ = done.send(false);
                }
            }
            _ => {}
        }
        next
    }
}

/// The file name a download is saved as: the last component of `path`
/// (a folder's with `.tar` or `.zip`), `snapshot-<short id>.<ext>` for `/`.
pub(crate) fn file_name(path: &str, snapshot: &str, is_dir: bool, extension: &str) -> String {
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let base = if last.is_empty() {
        format!("snapshot-{}", snapshot.get(..8).unwrap_or(snapshot))
    } else {
        last.to_owned()
    };
    if is_dir {
        format!("{base}.{extension}")
    } else {
        base
    }
}

/// `Content-Disposition: attachment` naming `name` safely: an ASCII
/// `filename` with anything outside `[A-Za-z0-9._ ()+-]` replaced by `_`,
/// plus the full name as `filename*` (RFC 6266/5987), percent-encoded.
/// Neither can hold a quote, a slash or a control character, so the header
/// cannot be broken out of and the browser cannot be told to save
/// elsewhere than its download folder.
pub(crate) fn content_disposition(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '/' || c == '\\' { '_' } else { c })
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.');
    let cleaned = if cleaned.is_empty() {
        "download"
    } else {
        cleaned
    };
    let ascii: String = cleaned
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._ ()+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for byte in cleaned.bytes() {
        if byte.is_ascii_alphanumeric() || b".-_".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_last_component() {
        assert_eq!(file_name("/srv/a.txt", "abcdef0123", false, "tar"), "a.txt");
        assert_eq!(
            file_name("/srv/data", "abcdef0123", true, "zip"),
            "data.zip"
        );
        assert_eq!(
            file_name("/", "abcdef0123", true, "tar"),
            "snapshot-abcdef01.tar"
        );
    }

    #[test]
    fn content_disposition_holds_no_quote_slash_or_control_character() {
        let header = content_disposition("a\"b\\c/d\r\ne;f é.txt");
        assert_eq!(
            header,
            "attachment; filename=\"a_b_c_de_f _.txt\"; filename*=UTF-8''a%22b_c_de%3Bf%20%C3%A9.txt"
        );
        assert!(axum::http::HeaderValue::from_str(&header).is_ok());
        assert_eq!(
            content_disposition("..\u{7}"),
            "attachment; filename=\"download\"; filename*=UTF-8''download"
        );
    }

    #[test]
    fn slots_are_limited_per_host_and_freed_on_drop() {
        let downloads = Downloads::default();
        let host = HostId::new();
        let first = downloads.begin(host).unwrap_or_else(|e| panic!("{e}"));
        let _second = downloads.begin(host).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(downloads.begin(host), Err(Busy::Host(_))));
        // Only the host asked may claim, and only once.
        assert!(downloads.claim(first.0.id(), HostId::new()).is_none());
        assert!(downloads.claim(first.0.id(), host).is_some());
        assert!(downloads.claim(first.0.id(), host).is_none());
        drop(first);
        assert_eq!(downloads.running(), 1);
        assert!(downloads.begin(host).is_ok());
    }

    #[test]
    fn the_server_relays_a_bounded_number() {
        let downloads = Downloads::default();
        let held: Vec<_> = (0..PER_SERVER)
            .map(|_| {
                downloads
                    .begin(HostId::new())
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        assert!(matches!(downloads.begin(HostId::new()), Err(Busy::Server)));
        drop(held);
        assert_eq!(downloads.running(), 0);
    }
}
