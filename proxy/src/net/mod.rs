//! Bytes in and out: the stream types shared by both sides of a session,
//! TLS toward clients and toward the server, and reaching the upstream.
//! The lowest I/O layer: it knows nothing of sessions or analysis.

pub mod stream;
pub mod tls;
pub mod upstream;
