//! The listener: accepts clients, runs one session task each, and drains on
//! shutdown: stop accepting, start the drain ([`Drain`]), at the end of the
//! grace period cut the sessions still in a transaction, and return once
//! every session task has ended itself (they are tracked by one
//! [`TaskTracker`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use qproxy_analyzer::event::SessionEvent;

use crate::config::ServeConfig;
use crate::events::EventSink;
use crate::limits::{HeldBudget, StartupSlot, StartupSlots};
use crate::net::tls;
use crate::net::upstream::{Upstream, UpstreamError};
use crate::session::context::ServerContext;
use crate::stats::ServerStats;
use crate::wire::error_response::{fatal, ProxyError};
use crate::workers::WorkerPool;

/// Clients being turned away at `--max-connections` at once. Each is
/// answered properly (see [`crate::session::negotiation::refuse`]) but costs a task and
/// perhaps a TLS handshake; past this many, further ones are closed at once.
const MAX_REFUSALS: usize = 256;

/// Errors that stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The upstream URL or its TLS settings are wrong.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The client TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The forwarding threads could not be started.
    #[error("cannot start the forwarding threads")]
    Workers(#[source] std::io::Error),
}

/// How long a connection must have been starting up before a newer one
/// may take its startup slot: a real client is past authentication in
/// milliseconds, so a burst of them does not evict its own members.
pub const STARTUP_EVICTION_AGE: Duration = Duration::from_secs(1);

/// A bound, not yet running proxy.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    ctx: Arc<ServerContext>,
    events: Option<mpsc::Receiver<SessionEvent>>,
    workers: WorkerPool,
    /// Every session task, so the drain knows when the last has ended.
    sessions: TaskTracker,
}

impl Server {
    /// Validates the configuration, prepares TLS and binds the listener.
    pub async fn bind(config: ServeConfig) -> Result<Server, ServeError> {
        let upstream = Arc::new(Upstream::new(
            config.upstream.clone(),
            config.connect_timeout,
        )?);
        let tls = match &config.tls {
            Some((cert, key)) => Some(TlsAcceptor::from(tls::server_config(cert, key)?)),
            None => None,
        };
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let workers = WorkerPool::start(config.workers).map_err(ServeError::Workers)?;
        let (sink, events) = EventSink::channel(config.event_queue);
        let stats = Arc::new(ServerStats {
            held: Arc::new(HeldBudget::new(config.max_held_bytes)),
            ..ServerStats::default()
        });
        let startup = Arc::new(StartupSlots::new(
            config.max_startup_connections,
            STARTUP_EVICTION_AGE,
        ));
        let ctx = Arc::new(ServerContext {
            config,
            upstream,
            tls,
            sink,
            cancel_keys: Arc::default(),
            drain: Arc::default(),
            stats,
            startup,
            next_connection_id: AtomicU64::new(0),
        });
        Ok(Server {
            listener,
            ctx,
            events: Some(events),
            workers,
            sessions: TaskTracker::new(),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The shared context (counters, event stats).
    pub fn context(&self) -> &Arc<ServerContext> {
        &self.ctx
    }

    /// Takes the receiving end of the event queue, for the analyzer task.
    /// If nobody takes it, events are dropped and counted.
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<SessionEvent>> {
        self.events.take()
    }

    /// Accepts clients until `shutdown` resolves, then drains: no new
    /// connections; each session closes at its next boundary (idle, or at
    /// the end of its transaction), those still in a transaction when the
    /// grace period is over are cut; this returns once all are gone.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        // Without a consumer the queue would only fill up; drop it so
        // emit() counts drops instead of holding events.
        self.events.take();
        let permits = Arc::new(Semaphore::new(self.ctx.config.max_connections));
        let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
        tracing::info!(
            listen = %self.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            upstream = %self.ctx.upstream.url(),
            tls = self.ctx.tls.is_some(),
            workers = self.workers.threads(),
            "qproxy is accepting connections"
        );
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                r = self.listener.accept() => r,
            };
            match accepted {
                Ok((socket, _peer)) => self.spawn_session(socket, &permits, &refusals),
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        drop(self.listener);
        tracing::info!(
            open_sessions = self.sessions.len(),
            grace = ?self.ctx.config.shutdown_grace,
            "draining"
        );
        self.ctx.drain.start();
        self.sessions.close();
        // One timer for the whole drain.
        let grace = tokio::time::sleep(self.ctx.config.shutdown_grace);
        tokio::select! {
            () = self.sessions.wait() => {}
            () = grace => {
                tracing::info!(
                    open_sessions = self.sessions.len(),
                    "grace period over; closing the sessions still in a transaction"
                );
                self.ctx.drain.end_grace();
                self.sessions.wait().await;
            }
        }
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || workers.shutdown()).await;
        tracing::info!("drained");
    }

    fn spawn_session(
        &self,
        socket: TcpStream,
        permits: &Arc<Semaphore>,
        refusals: &Arc<Semaphore>,
    ) {
        let ctx = self.ctx.clone();
        ctx.stats
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Over the limit: answered on this (the accept loop's) runtime,
            // away from the sessions' threads, while few enough are waiting.
            if let Ok(refusal) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    crate::session::negotiation::refuse(socket, ctx).await;
                    drop(refusal);
                });
            }
            return;
        };
        let Some(slot) = self.admit_startup(&ctx) else {
            // A flood of connections that never finish startup: told at
            // once, without spending a negotiation on each.
            refuse(
                socket,
                "too many connections are still starting up (--max-startup-connections)",
            );
            return;
        };
        // Tracked from before it is handed over, so the drain waits for a
        // session still on its way to a worker.
        let session = self.sessions.token();
        // A closure run when the session ends rather than an async block
        // around it: what such a block captures would stay in every
        // session's task for its whole life.
        self.workers.submit(socket, move |socket| {
            ctx.stats.client_connections.fetch_add(1, Ordering::Relaxed);
            crate::session::run(socket, ctx.clone(), slot).map(move |()| {
                ctx.stats.client_connections.fetch_sub(1, Ordering::Relaxed);
                drop(permit);
                drop(session);
            })
        });
    }

    /// A startup slot for a new connection, evicting the one starting up
    /// longest if need be; `None` when every slot is taken by connections
    /// too young to evict.
    fn admit_startup(&self, ctx: &ServerContext) -> Option<StartupSlot> {
        let (slot, evicted) = ctx.startup.admit(Instant::now())?;
        if evicted {
            ctx.stats.startup_evictions.fetch_add(1, Ordering::Relaxed);
        }
        Some(slot)
    }
}

/// Tells a connection it cannot be served (53300) and closes it.
fn refuse(socket: TcpStream, message: &'static str) {
    tokio::spawn(async move {
        let mut socket = socket;
        let msg = fatal(ProxyError::TooManyConnections, message);
        let _ = socket.write_all(&msg).await;
    });
}
