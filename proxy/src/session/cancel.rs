//! CancelRequest handling. A client cancels a running query by opening a
//! new connection and sending the backend's process id and secret key; the
//! proxy passes BackendKeyData through unchanged, so it forwards the
//! request as it came to the upstream, but only for keys of sessions it is
//! relaying (it is no open cancel relay).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::log_limit::{LogLimiter, DEFAULT_INTERVAL};
use crate::net::upstream::Upstream;

/// Cancel requests for keys no relayed session has: anyone who can reach
/// the port can send these by the thousand.
static BOGUS_CANCELS: LogLimiter = LogLimiter::new("bogus cancel requests", DEFAULT_INTERVAL);
/// Cancel requests that could not be delivered to the upstream.
static FAILED_CANCELS: LogLimiter =
    LogLimiter::new("undeliverable cancel requests", DEFAULT_INTERVAL);

/// The cancel keys of live sessions.
#[derive(Debug, Default)]
pub struct CancelKeys {
    keys: Mutex<HashSet<(i32, Box<[u8]>)>>,
}

impl CancelKeys {
    /// Remembers a live session's key.
    pub fn insert(&self, pid: i32, secret: &[u8]) {
        self.lock().insert((pid, Box::from(secret)));
    }

    /// Forgets a key when its session ends.
    pub fn remove(&self, pid: i32, secret: &[u8]) {
        self.lock().remove(&(pid, Box::from(secret)));
    }

    /// Whether a key belongs to a session this proxy relays.
    pub fn contains(&self, pid: i32, secret: &[u8]) -> bool {
        self.lock().contains(&(pid, Box::from(secret)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(i32, Box<[u8]>)>> {
        crate::lock(&self.keys)
    }
}

/// Sends a CancelRequest packet, unchanged, to the upstream. Errors are
/// logged: the client of a cancel connection gets no answer either way.
pub async fn forward(
    upstream: &Upstream,
    keys: &CancelKeys,
    packet: &[u8],
    pid: i32,
    secret: &[u8],
) {
    if !keys.contains(pid, secret) {
        if BOGUS_CANCELS.should_log() {
            tracing::info!(
                pid,
                "cancel request for a session this proxy does not relay; ignored"
            );
        }
        return;
    }
    let mut stream = match upstream.connect().await {
        Ok(s) => s,
        Err(e) => {
            if FAILED_CANCELS.should_log() {
                tracing::warn!(pid, error = %e, "cannot forward cancel request");
            }
            return;
        }
    };
    if let Err(e) = async {
        stream.write_all(packet).await?;
        stream.flush().await
    }
    .await
    {
        if FAILED_CANCELS.should_log() {
            tracing::warn!(pid, error = %e, "cannot forward cancel request");
        }
        return;
    }
    // The server reads the packet and closes; wait for that briefly so the
    // cancel is delivered before the client's connection ends.
    let mut byte = [0u8; 1];
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut byte)).await;
    tracing::debug!(pid, "cancel request forwarded");
}
