//! qproxy: a PostgreSQL wire-protocol proxy that forwards every byte
//! unchanged and tells developers what is wrong with their queries.
//!
//! # Layout
//! Data flows one way: [`net`] → [`session`] → `wire` / [`tracker`] →
//! [`events`] → [`analysis`] (the `qproxy-analyzer` crate's detectors and
//! store). Each folder owns one thing, and modules import each other in
//! one direction only (`tests/tests/module_graph.rs` fails on an import circle):
//! - [`config`]: flags, env and TOML merged into one configuration, each
//!   default defined once; a leaf that imports no other module, so the
//!   pure values it hands out (the upstream URL, the store target, the
//!   tracker's caps, the analysis settings) live there.
//! - `wire`: framing (`wire::scan` finds message boundaries in a read
//!   buffer) and allocation-free decoding of the messages the analysis
//!   reads; no I/O.
//! - [`tracker`]: per-connection protocol state (extended-protocol FIFO,
//!   COPY, errors skipping to Sync), a pure state machine: messages and
//!   the time in, query events and effects out; the session applies the
//!   effects (`session::effects`: queue, cancel keys, startup slot, logs).
//! - [`net`]: streams (and the I/O traits the relay waits on), TLS on both
//!   sides, and reaching the upstream.
//! - [`session`]: one client connection: negotiation, upstream connect,
//!   both relay directions, forwarding CancelRequests, the drain, and the
//!   context every session shares.
//! - [`app`]: the whole proxy wired once (listener, analysis thread,
//!   store, admin server, upstream checker) and stopped in one order.
//! - [`server`]: the listener, connection cap and graceful drain;
//!   `workers`: the threads that forward traffic.
//! - [`events`]: the bounded, never-blocking queue to the analyzer.
//! - [`analysis`]: the task that consumes query events, the findings store
//!   it writes to, and the proxy's own catalog and hypopg connections.
//! - [`admin`]: the admin HTTP server (`/metrics`, `/healthz`, `/readyz`,
//!   and the live view).
//! - [`metrics`]: the Prometheus registry and every metric qproxy exports;
//!   `stats`: the process-wide counters sessions bump and metrics read.
//! - [`commands`]: `qproxy report`, `fingerprint` and `demo` (whose
//!   throwaway PostgreSQL the integration tests build on).
//! - `limits`: the budget for bytes held whole and the slots for
//!   connections still in startup.
//! - `log_limit`: rate-limited logging for events outsiders can trigger.
//!
//! Modules are crate-private unless the binary, the integration tests or
//! the fuzz targets use them, so the compiler reports dead code.
#![forbid(unsafe_code)]

pub mod admin;
pub mod analysis;
pub mod app;
pub mod commands;
pub mod config;
pub mod events;
pub(crate) mod limits;
pub(crate) mod log_limit;
pub mod metrics;
pub mod net;
pub mod server;
pub mod session;
pub(crate) mod stats;
pub mod tracker;
pub(crate) mod wire;
pub(crate) mod workers;

/// Locks `m`, taking the data even if a panicking thread poisoned it: the
/// proxy's mutexes guard plain state that stays consistent between
/// statements, and a session must not die of another's panic.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
