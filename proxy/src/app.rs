//! The whole proxy, wired once: the listener and its sessions, the event
//! queue, the analysis thread and its findings store, the admin server with
//! the live view, and the upstream checker, built from a resolved
//! [`ServeConfig`]. `qproxy serve`, `qproxy demo` and the in-process tests
//! all start the proxy here.
//!
//! # Stopping
//! One [`CancellationToken`] stops the app ([`Running::stop`]); what
//! follows runs in this order, each step once the one before has finished:
//! 1. `/readyz` answers "draining" at once, and the listener stops
//!    accepting.
//! 2. Sessions drain: each ends itself at its next boundary (see
//!    [`crate::session`]); those still in a transaction when the grace
//!    period is over are cut. The server returns once every session task
//!    has ended.
//! 3. The analysis thread analyses what is queued, ends every open request
//!    and flushes the findings store.
//! 4. The admin server and the upstream checker stop (a second token: they
//!    answer probes and scrapes until the very end).

use std::net::SocketAddr;
use std::sync::Arc;

use qproxy_analyzer::event::SessionEvent;
use qproxy_analyzer::store::WriterConfig;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::live::LiveFeed;
use crate::admin::{self, AdminServer, Health};
use crate::analysis::catalog::CatalogConnector;
use crate::analysis::store_target::{self, StoreLocationError};
use crate::analysis::{AnalysisThread, StoreSink};
use crate::config::ServeConfig;
use crate::config::StoreTarget;
use crate::metrics::Metrics;
use crate::server::{ServeError, Server};

/// Who reads the event queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Events {
    /// The analysis thread, which flushes its findings into the store the
    /// configuration names (`--store`).
    Analysed,
    /// The caller, through [`Running::take_events`]: no analysis thread is
    /// started and no store opened. For in-process tests that read the
    /// tracker's events themselves.
    Caller,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The store's address could not be turned into a connection setup.
    #[error("cannot open the findings store {target}")]
    StoreLocation {
        /// The store, as configured (password hidden).
        target: String,
        /// Why.
        #[source]
        source: StoreLocationError,
    },
    /// The store could not be opened or created.
    #[error("cannot open the findings store {target}")]
    Store {
        /// The store, as configured (password hidden).
        target: String,
        /// Why.
        #[source]
        source: qproxy_analyzer::store::StoreError,
    },
    /// The listener, TLS or the forwarding threads could not be set up.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The bound listener could not tell its address.
    #[error("cannot read the listen address")]
    ListenAddr(#[source] std::io::Error),
    /// The admin address could not be bound.
    #[error("cannot listen on {addr} (--admin-listen)")]
    AdminBind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The analysis thread could not be started.
    #[error("cannot start the analysis thread")]
    AnalysisThread(#[source] std::io::Error),
}

/// A running proxy.
#[derive(Debug)]
pub struct Running {
    listen: SocketAddr,
    admin: SocketAddr,
    /// Cancelled to stop the app.
    stop: CancellationToken,
    /// The event queue, while the caller has not taken it
    /// ([`Events::Caller`] only).
    events: Option<mpsc::Receiver<SessionEvent>>,
    /// The task that runs the listener and then stops everything in order.
    lifecycle: JoinHandle<()>,
}

impl Running {
    /// The address the listener is bound to (useful with port 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The address the admin server is bound to.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// Takes the receiving end of the event queue ([`Events::Caller`]);
    /// `None` when the analysis thread reads it or it was taken before.
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<SessionEvent>> {
        self.events.take()
    }

    /// Starts stopping the app (see the module documentation); returns at
    /// once.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits until the app has stopped: sessions drained, findings flushed,
    /// the admin server closed. Only [`Running::stop`] (from here or a
    /// clone of its token) gets it there.
    pub async fn stopped(self) {
        if let Err(e) = self.lifecycle.await {
            tracing::error!(error = %e, "the proxy's shutdown did not finish");
        }
    }

    /// [`Running::stop`], then [`Running::stopped`].
    pub async fn shutdown(self) {
        self.stop();
        self.stopped().await;
    }
}

/// Builds the proxy from `config` and starts it; `events` says who reads
/// the event queue.
pub async fn start(config: ServeConfig, events: Events) -> Result<Running, AppError> {
    let store = match events {
        Events::Analysed => {
            let (target, instance, writer) = (
                config.store.clone(),
                config.instance.clone(),
                config.store_writer.clone(),
            );
            // Opening a PostgreSQL store runs (and on failure drops) a
            // runtime of its own, which must not happen on this one.
            let opened =
                tokio::task::spawn_blocking(move || open_store(&target, &instance, writer)).await;
            Some(opened.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?)
        }
        Events::Caller => None,
    };
    let analysis_settings = config.analysis.clone();
    let admin_listen = config.admin_listen;
    let metrics_top_k = config.metrics_top_k;
    let check_timeout = config.connect_timeout.min(admin::CHECK_INTERVAL);
    let mut server = Server::bind(config).await?;
    let listen = server.local_addr().map_err(AppError::ListenAddr)?;
    let queue = server.take_events();
    let context = server.context().clone();
    let event_stats = context.sink.stats().clone();
    let mut metrics = Metrics::new(metrics_top_k, context.stats.clone(), event_stats.clone());
    if let Some(store) = &store {
        metrics = metrics.with_store_stats(store.stats());
    }
    let metrics = Arc::new(metrics);
    let health = Arc::new(Health::default());
    let live = LiveFeed::new();
    let admin_server = AdminServer::bind(admin_listen, metrics.clone(), health.clone())
        .await
        .map_err(|source| AppError::AdminBind {
            addr: admin_listen,
            source,
        })?
        .with_live_view(live.clone());
    let admin = admin_server.local_addr().unwrap_or(admin_listen);
    tracing::info!(
        admin_listen = %admin,
        live_view = %format!("http://{admin}/"),
        "admin server listening (/metrics, /healthz, /readyz, and the live view at /)"
    );

    let (analysis, events) = match (store, queue) {
        (Some(store), Some(queue)) => {
            // Its own thread and runtime: nothing analysis does can hold
            // up accepting clients or the admin port.
            let analysis = AnalysisThread::spawn(
                queue,
                analysis_settings,
                event_stats,
                Some(CatalogConnector::new(context.upstream.clone())),
                Box::new(store),
                Some(metrics.clone()),
                Some(live),
            )
            .map_err(AppError::AnalysisThread)?;
            (Some(analysis), None)
        }
        (_, queue) => (None, queue),
    };

    // The admin server and the checker stop last, on a token of their own.
    let background_stop = CancellationToken::new();
    let background = TaskTracker::new();
    background.spawn(admin::check_upstream(
        context.upstream.clone(),
        admin::CHECK_INTERVAL,
        check_timeout,
        health.clone(),
        metrics,
        background_stop.clone().cancelled_owned(),
    ));
    background.spawn(admin_server.run(background_stop.clone().cancelled_owned()));
    background.close();

    let stop = CancellationToken::new();
    let stopping = stop.clone();
    let lifecycle = tokio::spawn(async move {
        server
            .run(async move {
                stopping.cancelled().await;
                // Not ready from the first moment of the drain, so the
                // load balancer stops sending new clients.
                health.set_draining();
            })
            .await;
        if let Some(analysis) = analysis {
            analysis.finish().await;
        }
        background_stop.cancel();
        background.wait().await;
    });
    Ok(Running {
        listen,
        admin,
        stop,
        events,
        lifecycle,
    })
}

/// Opens the findings store `target` and starts a run in it named
/// `instance`.
fn open_store(
    target: &StoreTarget,
    instance: &str,
    writer: WriterConfig,
) -> Result<StoreSink, AppError> {
    let location = store_target::location(target).map_err(|source| AppError::StoreLocation {
        target: target.to_string(),
        source,
    })?;
    let retention_s = writer.retention.map(|r| r.as_secs());
    let store =
        StoreSink::open_with(location, instance, writer).map_err(|source| AppError::Store {
            target: target.to_string(),
            source,
        })?;
    tracing::info!(store = %target, instance, retention_s, "findings store open");
    Ok(store)
}
