//! Integration-test harness for qproxy: a throwaway PostgreSQL, the real `qproxy` binary in front
//! of it, and real clients (tokio-postgres, psql, pgbench, psycopg) talking through it.
//!
//! The tests in `tests/*.rs` talk to a *target*: by default the proxy, or the server itself when
//! `QPROXY_TEST_TARGET=direct` is set. Direct mode proves that a test is right about PostgreSQL;
//! proxy mode proves the proxy changes nothing. Tests that need a proxy with special flags (TLS,
//! shutdown) start their own and are skipped in direct mode.
//!
//! # Layout
//!
//! - [`cluster`]: `PgCluster`, initdb/pg_ctl as the `postgres` OS user, one role per auth method.
//! - [`proxy`]: `Proxy`, the `qproxy serve` child process, its log, SIGTERM.
//! - [`target`]: `TestEnv` (one cluster and proxy per test binary) and tokio-postgres connectors.
//! - [`programs`]: psql, pgbench and Python scripts with time limits and captured output.
//! - [`report`]: `qproxy report` over a findings store, its JSON, and polling it.
//! - [`wire`]: a bare protocol client for pipelines no driver produces.
//! - [`certs`]: rcgen CA and server certificates.
//! - [`watchdog`]: cleanup that runs even when the test process dies or keeps things in statics.

pub mod certs;
pub mod cluster;
pub mod programs;
pub mod proxy;
pub mod report;
pub mod target;
pub mod watchdog;
pub mod wire;

pub use cluster::{Login, PgCluster, CLEARTEXT, MD5, SCRAM, SUPERUSER, TEST_DB, TLS_ONLY, TRUST};
pub use proxy::{Proxy, ProxyOptions};
pub use target::{
    connect, connect_tls, connect_with_messages, mode, sqlstate, wait_until_running, within, Mode,
    TestEnv,
};
