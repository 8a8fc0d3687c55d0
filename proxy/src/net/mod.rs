//! Bytes in and out: the stream types shared by both sides of a session,
//! TLS toward clients and toward the server, and reaching the upstream.
//! The lowest I/O layer: it knows nothing of sessions or analysis.

pub(crate) mod stream;
pub(crate) mod tls;
pub mod upstream;
