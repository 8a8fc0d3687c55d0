//! qproxy's analyzer: turns the proxy's [`event::QueryEvent`]s into findings.
//!
//! It has no sockets of its own (apart from catalog introspection, added
//! later) and can be used and tested without the proxy.
//!
//! # Layout
//! - [`event`]: the events the proxy's protocol tracker emits.
//! - [`fingerprint`]: normalization and stable 64-bit fingerprints of SQL.
//! - [`correlation`]: which executions belong to one request.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod correlation;
pub mod event;
pub mod fingerprint;
