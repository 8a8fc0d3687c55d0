//! Process-wide counters that sessions bump and the admin endpoint
//! exports: a leaf, so the metrics read them without depending on the
//! server that owns them.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::limits::HeldBudget;

/// Process-wide counters the admin endpoint and tests read.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Client connections open now.
    pub client_connections: AtomicU64,
    /// Client connections accepted since start.
    pub connections_accepted: AtomicU64,
    /// Failures to reach or keep the upstream.
    pub upstream_errors: AtomicU64,
    /// The budget for bytes held whole, shared by every session; its
    /// counters are exported.
    pub held: Arc<HeldBudget>,
    /// Connections in startup closed to make room for a newer one.
    pub startup_evictions: AtomicU64,
}
