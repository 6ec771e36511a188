//! The shared state every handler gets: store, hub, settings, last-seen cache.

use std::sync::Arc;

use rm_store::Store;

use crate::config::ServerConfig;
use crate::hub::Hub;
use crate::liveness::LastSeen;

/// Cheap to clone; all clones share one server.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    store: Arc<dyn Store>,
    hub: Hub,
    config: ServerConfig,
    last_seen: LastSeen,
}

impl AppState {
    /// State over `store` with `config`.
    pub fn new(store: Arc<dyn Store>, config: ServerConfig) -> AppState {
        AppState(Arc::new(Inner {
            store,
            hub: Hub::default(),
            config,
            last_seen: LastSeen::default(),
        }))
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.0.store.as_ref()
    }

    /// The live agent connections.
    pub fn hub(&self) -> &Hub {
        &self.0.hub
    }

    /// Settings.
    pub fn config(&self) -> &ServerConfig {
        &self.0.config
    }

    pub(crate) fn last_seen(&self) -> &LastSeen {
        &self.0.last_seen
    }

    /// Writes pending last-seen times to the store now.
    pub async fn flush_last_seen(&self) {
        self.0.last_seen.flush(self.store()).await;
    }
}
