//! What every session shares: the configuration, the way to the upstream,
//! the event queue, counters and the drain. The server builds it
//! once and owns the rest (the listener, the workers, the drain).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use crate::config::ServeConfig;
use crate::events::EventSink;
use crate::limits::StartupSlots;
use crate::net::upstream::Upstream;
use crate::session::cancel::CancelKeys;
use crate::session::drain::Drain;
use crate::stats::ServerStats;

/// What every session shares.
pub struct ServerContext {
    /// Resolved configuration.
    pub config: ServeConfig,
    /// How to reach the upstream.
    pub upstream: Arc<Upstream>,
    /// TLS toward clients, when configured.
    pub tls: Option<TlsAcceptor>,
    /// Where trackers send query events.
    pub sink: EventSink,
    /// Cancel keys of live sessions.
    pub cancel_keys: Arc<CancelKeys>,
    /// The drain: started when the proxy stops accepting; each session
    /// ends itself by it.
    pub(crate) drain: Arc<Drain>,
    /// Counters.
    pub stats: Arc<ServerStats>,
    /// Slots for connections that have not finished startup.
    pub startup: Arc<StartupSlots>,
    /// Source of connection ids ([`ServerContext::next_connection_id`]).
    pub(crate) next_connection_id: AtomicU64,
}

impl std::fmt::Debug for ServerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerContext")
            .field("config", &self.config)
            .field("upstream", &self.upstream)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerContext {
    /// A new, process-unique connection id.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed) + 1
    }
}
