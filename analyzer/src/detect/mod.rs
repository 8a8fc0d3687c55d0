//! Detectors: each turns what the pipeline observed into findings.
//!
//! - [`n_plus_one`]: per-request bookkeeping and the `n_plus_one` /
//!   `repeated_query` / `n_plus_one_write` verdicts, with the parent query
//!   when it can be shown.
//! - [`n_plus_one_write`]: how an N+1 write is reported.
//! - [`too_many_queries`]: the per-request query budget.
//! - [`idle_in_transaction`]: transactions held open while the application
//!   sent nothing.
//! - [`slow_query`]: fingerprints whose latency exceeds the threshold.
//! - [`unbounded`]: SELECTs without LIMIT that return many rows.
//! - [`unindexed`]: WHERE/JOIN predicates and ORDER BYs on large tables
//!   that no index serves, with the `CREATE INDEX` that would; and, from the
//!   same reading of a statement against the catalog, non-sargable filters,
//!   offset pagination and unindexed foreign keys.

pub mod idle_in_transaction;
pub mod n_plus_one;
pub mod n_plus_one_write;
pub mod slow_query;
pub mod too_many_queries;
pub mod unbounded;
pub mod unindexed;
