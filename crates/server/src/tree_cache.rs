//! The per-session cache in front of `tree.list`: a restore wizard walks
//! the same folders back and forth, and each listing costs the agent a
//! restic run. Entries live 30 minutes and are swept whenever the cache is
//! used; only successful listings are kept, so an agent error (a locked
//! repository, a host briefly offline) is retried next time instead of
//! being remembered. The cache is bounded: past its size the oldest
//! entries go first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rm_core::HostId;
use rm_protocol::TreeEntry;
use tokio::time::Instant;

/// How long a listing is kept.
pub(crate) const TTL: Duration = Duration::from_secs(30 * 60);

/// Most listings kept across all sessions.
const MAX_ENTRIES: usize = 10_000;

/// What a listing is cached under: whose session, and which folder.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TreeKey {
    /// The login session or API token that asked.
    pub(crate) session: String,
    /// The host whose repository holds the snapshot.
    pub(crate) host: HostId,
    /// The snapshot.
    pub(crate) snapshot: String,
    /// The folder.
    pub(crate) path: String,
}

/// A cached listing and when it was fetched.
type Cached = (Instant, Arc<Vec<TreeEntry>>);

/// The cache.
#[derive(Default)]
pub(crate) struct TreeCache {
    entries: Mutex<HashMap<TreeKey, Cached>>,
}

impl TreeCache {
    /// The cached listing for `key`, if still fresh at `now`.
    pub(crate) fn get(&self, key: &TreeKey, now: Instant) -> Option<Arc<Vec<TreeEntry>>> {
        let mut entries = self.entries.lock().ok()?;
        sweep(&mut entries, now);
        entries.get(key).map(|(_, listing)| listing.clone())
    }

    /// Keeps a successful listing.
    pub(crate) fn put(&self, key: TreeKey, listing: Arc<Vec<TreeEntry>>, now: Instant) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        sweep(&mut entries, now);
        if entries.len() >= MAX_ENTRIES {
            if let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(key, (now, listing));
    }

    /// The listing for `key`: from the cache when fresh, else from `fetch`,
    /// whose success (only) is kept.
    pub(crate) async fn get_or_fetch<E, F, Fut>(
        &self,
        key: TreeKey,
        fetch: F,
    ) -> Result<Arc<Vec<TreeEntry>>, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<TreeEntry>, E>>,
    {
        if let Some(hit) = self.get(&key, Instant::now()) {
            return Ok(hit);
        }
        let listing = Arc::new(fetch().await?);
        self.put(key, listing.clone(), Instant::now());
        Ok(listing)
    }

    /// Listings held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}

fn sweep(entries: &mut HashMap<TreeKey, Cached>, now: Instant) {
    entries.retain(|_, (at, _)| now.saturating_duration_since(*at) < TTL);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(session: &str, path: &str) -> TreeKey {
        TreeKey {
            session: session.to_owned(),
            host: HostId(ulid::Ulid::nil()),
            snapshot: String::from("1a2b3c4d"),
            path: path.to_owned(),
        }
    }

    fn listing() -> Arc<Vec<TreeEntry>> {
        Arc::new(Vec::new())
    }

    #[test]
    fn a_listing_is_served_until_its_ttl_and_then_swept() {
        let cache = TreeCache::default();
        let t0 = Instant::now();
        cache.put(key("s", "/"), listing(), t0);
        assert!(cache
            .get(&key("s", "/"), t0 + TTL - Duration::from_secs(1))
            .is_some());
        assert!(cache.get(&key("s", "/"), t0 + TTL).is_none());
        assert_eq!(cache.len(), 0, "expired entries are swept on access");
    }

    #[test]
    fn sessions_do_not_share_listings() {
        let cache = TreeCache::default();
        let t0 = Instant::now();
        cache.put(key("a", "/"), listing(), t0);
        assert!(cache.get(&key("b", "/"), t0).is_none());
        assert!(cache.get(&key("a", "/x"), t0).is_none());
    }

    #[tokio::test]
    async fn only_successes_are_kept() {
        let cache = TreeCache::default();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let failing = || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err::<Vec<TreeEntry>, &str>("repository is already locked")
        };
        assert!(cache.get_or_fetch(key("s", "/"), failing).await.is_err());
        assert!(cache.get_or_fetch(key("s", "/"), failing).await.is_err());
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "errors are not cached"
        );
        let working = || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<Vec<TreeEntry>, &str>(Vec::new())
        };
        assert!(cache.get_or_fetch(key("s", "/"), working).await.is_ok());
        assert!(cache.get_or_fetch(key("s", "/"), working).await.is_ok());
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "the success is cached"
        );
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = TreeCache::default();
        let t0 = Instant::now();
        for i in 0..(MAX_ENTRIES + 5) {
            cache.put(
                key("s", &format!("/{i}")),
                listing(),
                t0 + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        assert!(
            cache.get(&key("s", "/0"), t0).is_none(),
            "the oldest went first"
        );
    }
}
