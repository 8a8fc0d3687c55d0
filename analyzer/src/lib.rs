//! qproxy's analyzer: turns the proxy's [`event::QueryEvent`]s into findings.
//!
//! It has no sockets of its own (apart from catalog introspection, added
//! later) and can be used and tested without the proxy.
//!
//! # Layout
//! - `sql`: the one lexer and statement splitter every part below reads
//!   SQL text with (a leaf; crate-private).
//! - [`event`]: the events the proxy's protocol tracker emits.
//! - [`fingerprint`]: normalization and stable 64-bit fingerprints of SQL.
//! - [`correlation`]: which executions belong to one request.
//! - [`values`]: format-independent hashes of parameter and result values.
//! - [`offset`]: reading a statement's OFFSET (the one bound value read).
//! - [`catalog`]: tables, sizes and indexes of the upstream database, read
//!   over a short-lived connection.
//! - [`detect`]: the detectors (N+1 reads and writes, the query budget, idle
//!   transactions, slow queries, unbounded SELECT, unindexed filters/sorts,
//!   non-sargable filters, offset pagination, unindexed foreign keys). Each
//!   returns a typed verdict with typed details and its own severity rule;
//!   none does I/O.
//! - [`explain`]: EXPLAIN a client's statement with the client's rights
//!   only, and the hypopg check built on it ([`explain::hypopg`]).
//! - [`pipeline`]: fingerprint → correlate → detect, per event; turns the
//!   detectors' verdicts into findings in one place (`pipeline/findings.rs`)
//!   for the store.
//! - [`finding`]: findings and the report summary, as DESIGN's JSON schema.
//! - [`source`]: where in the application a statement was issued, from its
//!   tags.
//! - [`routes`]: per-route statements per request, and the regression rule
//!   `qproxy report --baseline` applies to them.
//! - [`store`]: the SQLite findings store and its background writer.
//! - [`report`]: report data and its output formats (text, JSON).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod catalog;
pub mod correlation;
pub mod detect;
pub mod event;
pub mod explain;
pub mod finding;
pub mod fingerprint;
pub mod offset;
pub mod pipeline;
pub mod report;
pub mod routes;
pub mod source;
mod sql;
pub mod store;
pub mod values;
