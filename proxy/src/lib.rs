//! qproxy: a PostgreSQL wire-protocol proxy that forwards every byte
//! unchanged and tells developers what is wrong with their queries.
//!
//! # Layout
//! - [`protocol`]: framing and allocation-free decoding of the messages the
//!   analysis reads; no I/O, shared with tests and fuzz targets.
//! - [`tracker`]: per-connection protocol state (extended-protocol FIFO,
//!   COPY, errors skipping to Sync) that turns traffic into query events.
//! - [`relay`]: one direction of a session: read, let the tracker look,
//!   forward the original bytes.
//! - [`session`]: one client connection: negotiation, upstream connect, then
//!   both relay directions.
//! - [`negotiation`]: what comes before the StartupMessage (TLS, cancel),
//!   and turning away clients that get no session (refused, or at
//!   `--max-connections`).
//! - [`server`]: the listener, connection cap and graceful drain.
//! - [`upstream`], [`tls`], [`stream`], [`cancel`]: reaching the server,
//!   TLS on both sides, and forwarding CancelRequests.
//! - [`catalog`]: the proxy's own short-lived catalog and hypopg connections.
//! - `background`: when those connections run: job and rate limits, panics caught.
//! - [`events`]: the bounded, never-blocking queue to the analyzer.
//! - [`analysis`]: the task that consumes query events.
//! - [`demo`]: `qproxy demo`, a throwaway PostgreSQL and a workload with real problems.
//! - [`metrics`]: the Prometheus registry and every metric qproxy exports.
//! - [`admin`]: the admin HTTP server (`/metrics`, `/healthz`, `/readyz`,
//!   and the live view).
//! - [`live`]: the live view's page and the snapshots the analysis task
//!   publishes for it.
//! - [`config`]: flags, env and TOML merged into one configuration.
//! - [`store_target`]: `--store`, a SQLite file or a PostgreSQL fleet store.
//! - [`workers`]: the threads that forward traffic.
//! - [`limits`]: the budget for bytes held whole and the slots for
//!   connections still in startup.
//! - [`log_limit`]: rate-limited logging for events outsiders can trigger.
#![forbid(unsafe_code)]

pub mod admin;
pub mod analysis;
mod background;
pub mod cancel;
pub mod catalog;
pub mod config;
pub mod demo;
pub mod events;
pub mod limits;
pub mod live;
pub mod log_limit;
pub mod metrics;
pub mod negotiation;
pub mod protocol;
pub mod relay;
pub mod report_cmd;
pub mod server;
pub mod session;
pub mod store_target;
pub mod stream;
pub mod tls;
pub mod tracker;
pub mod upstream;
pub mod workers;

/// Locks `m`, taking the data even if a panicking thread poisoned it: the
/// proxy's mutexes guard plain state that stays consistent between
/// statements, and a session must not die of another's panic.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
