//! The subcommands other than `serve`: `report`, `fingerprint` and `demo`.

pub mod demo;
pub mod fingerprint;
pub mod report;
