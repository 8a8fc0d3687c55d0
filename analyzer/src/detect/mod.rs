//! Detectors: each turns what the pipeline observed into findings.
//!
//! - [`n_plus_one`]: per-request bookkeeping and the `n_plus_one` /
//!   `repeated_query` verdicts, with the parent query when it can be shown.
//! - [`unbounded`]: SELECTs without LIMIT that return many rows.
//! - [`unindexed`]: WHERE/JOIN predicates and ORDER BYs on large tables
//!   that no index serves, with the `CREATE INDEX` that would; and, from the
//!   same reading of a statement against the catalog, non-sargable filters,
//!   offset pagination and unindexed foreign keys.

pub mod n_plus_one;
pub mod unbounded;
pub mod unindexed;
