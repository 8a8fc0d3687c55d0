//! The admin HTTP server: `/metrics` (Prometheus text), `/healthz` (the
//! process is alive) and `/readyz` (the upstream answered the last TCP
//! check and the proxy is not draining).
//!
//! It is kept away from the proxy path: its own listener, a cap on open
//! admin connections, small request buffers and timeouts on every
//! connection. Each connection is served on its own task. When the cap is
//! reached, a new connection is never turned away: the open connection
//! that has been idle longest is closed to make room, so sockets that
//! connect and send nothing cannot starve liveness probes (they are also
//! closed after [`HEADER_TIMEOUT`] without a request).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// Admin connections open at once; a new one beyond this closes the one
/// idle longest.
pub const MAX_CONNECTIONS: usize = 32;
/// Time a client gets to send a request's headers, counted from the
/// connection's start and again after each response (hyper's header read
/// timeout runs whenever it waits for a request head).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest an admin connection may stay open.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Read buffer cap: bounds the request line and headers.
const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// Default interval between upstream reachability checks.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// What `/readyz` answers from.
#[derive(Debug, Default)]
pub struct Health {
    upstream_up: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    /// Ready: the upstream is reachable and the proxy is not draining.
    pub fn ready(&self) -> bool {
        self.upstream_up.load(Ordering::Relaxed) && !self.draining.load(Ordering::Relaxed)
    }

    /// The proxy started draining: not ready from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// The outcome of the latest upstream check.
    pub fn set_upstream_up(&self, up: bool) {
        self.upstream_up.store(up, Ordering::Relaxed);
    }

    /// Whether the latest upstream check succeeded.
    pub fn upstream_up(&self) -> bool {
        self.upstream_up.load(Ordering::Relaxed)
    }
}

/// A bound, not yet running admin server.
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

impl AdminServer {
    /// Binds the admin address.
    pub async fn bind(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> std::io::Result<AdminServer> {
        let listener = TcpListener::bind(addr).await?;
        Ok(AdminServer {
            listener,
            metrics,
            health,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` resolves.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let open = Arc::new(OpenConnections::new(MAX_CONNECTIONS));
        tokio::pin!(stop);
        loop {
            let accepted = tokio::select! {
                () = &mut stop => break,
                r = self.listener.accept() => r,
            };
            let socket = match accepted {
                Ok((socket, _)) => socket,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (id, connection) = open.admit();
            let (metrics, health, open) = (self.metrics.clone(), self.health.clone(), open.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = serve_connection(socket, metrics, health, open.start, &connection) => {}
                    () = connection.close.notified() => {
                        tracing::debug!("admin connection closed to make room for a new one");
                    }
                }
                open.remove(id);
            });
        }
    }
}

/// The open admin connections, so that a new one can replace the one idle
/// longest instead of being refused.
#[derive(Debug)]
struct OpenConnections {
    cap: usize,
    /// Origin of the activity timestamps.
    start: Instant,
    open: Mutex<(u64, HashMap<u64, Arc<Connection>>)>,
}

/// One open admin connection.
#[derive(Debug)]
struct Connection {
    /// Milliseconds after [`OpenConnections::start`] of its last request
    /// (or of its accept).
    last_active: AtomicU64,
    /// Notified to close it.
    close: Notify,
}

impl OpenConnections {
    fn new(cap: usize) -> Self {
        OpenConnections {
            cap: cap.max(1),
            start: Instant::now(),
            open: Mutex::new((0, HashMap::new())),
        }
    }

    fn now(&self) -> u64 {
        millis_since(self.start)
    }

    /// Registers a new connection, closing the one idle longest when the
    /// cap is reached.
    fn admit(&self) -> (u64, Arc<Connection>) {
        let connection = Arc::new(Connection {
            last_active: AtomicU64::new(self.now()),
            close: Notify::new(),
        });
        let mut guard = crate::lock(&self.open);
        let (next_id, open) = &mut *guard;
        if open.len() >= self.cap {
            let idlest = open
                .iter()
                .min_by_key(|(id, c)| (c.last_active.load(Ordering::Relaxed), **id))
                .map(|(id, _)| *id);
            if let Some(victim) = idlest.and_then(|id| open.remove(&id)) {
                // Stored as a permit if its task is not waiting yet.
                victim.close.notify_one();
            }
        }
        let id = *next_id;
        *next_id += 1;
        open.insert(id, connection.clone());
        (id, connection)
    }

    fn remove(&self, id: u64) {
        crate::lock(&self.open).1.remove(&id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        crate::lock(&self.open).1.len()
    }
}

async fn serve_connection(
    socket: TcpStream,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    clock: Instant,
    connection: &Arc<Connection>,
) {
    let active = connection.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        active
            .last_active
            .fetch_max(millis_since(clock), Ordering::Relaxed);
        let response = respond(&req, &metrics, &health);
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_REQUEST_BYTES)
        .serve_connection(TokioIo::new(socket), service);
    // A timeout drops the connection; either way it is over.
    if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
        tracing::debug!(error = %e, "admin connection ended with an error");
    }
}

fn millis_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn respond<B>(req: &Request<B>, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    let head = req.method() == Method::HEAD;
    if !head && req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    let mut response = match req.uri().path() {
        "/metrics" => {
            let mut r = text(StatusCode::OK, metrics.render());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if health.ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            if health.upstream_up() {
                "draining\n"
            } else {
                "upstream unreachable\n"
            },
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    if head {
        *response.body_mut() = Full::new(Bytes::new());
    }
    response
}

/// Checks every `interval` that a TCP connection to the upstream opens
/// (within `timeout`), and records the answer in `health` and the
/// `qproxy_upstream_up` gauge, until `stop` resolves.
pub async fn check_upstream(
    host: String,
    port: u16,
    interval: Duration,
    timeout: Duration,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<bool> = None;
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = ticks.tick() => {}
        }
        let up = matches!(
            tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port))).await,
            Ok(Ok(_))
        );
        health.set_upstream_up(up);
        metrics.set_upstream_up(up);
        if last != Some(up) {
            if up {
                tracing::info!(upstream = %format!("{host}:{port}"), "upstream reachable");
            } else {
                tracing::warn!(upstream = %format!("{host}:{port}"), "upstream unreachable; /readyz answers 503");
            }
            last = Some(up);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(method: Method, path: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
    }

    #[test]
    fn a_full_house_closes_the_connection_idle_longest() {
        let open = OpenConnections::new(3);
        let (a, first) = open.admit();
        let (_, second) = open.admit();
        let (_, third) = open.admit();
        // The first one made a request since: the second is now idle longest.
        first
            .last_active
            .store(open.now() + 1_000, Ordering::Relaxed);
        third
            .last_active
            .store(open.now() + 1_000, Ordering::Relaxed);
        let (_, _fourth) = open.admit();
        assert_eq!(open.len(), 3);
        let closed = |c: &Arc<Connection>| {
            let notified = c.close.notified();
            tokio::pin!(notified);
            // A stored permit completes the first poll.
            notified
                .as_mut()
                .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
                .is_ready()
        };
        assert!(closed(&second));
        assert!(!closed(&first) && !closed(&third));
        // A connection that ended leaves room without closing anyone.
        open.remove(a);
        let (_, _fifth) = open.admit();
        assert_eq!(open.len(), 3);
        assert!(!closed(&third));
    }

    #[test]
    fn routes_and_readiness() {
        let metrics = Metrics::new(3, Arc::default(), Arc::default());
        let health = Health::default();
        let status = |m: Method, p: &str| respond(&get(m, p), &metrics, &health).status();
        assert_eq!(status(Method::GET, "/healthz"), StatusCode::OK);
        assert_eq!(
            status(Method::GET, "/readyz"),
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.set_upstream_up(true);
        assert_eq!(status(Method::GET, "/readyz"), StatusCode::OK);
        assert_eq!(status(Method::HEAD, "/readyz"), StatusCode::OK);
        health.set_draining();
        assert_eq!(
            status(Method::GET, "/readyz"),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status(Method::GET, "/metrics"), StatusCode::OK);
        assert_eq!(status(Method::GET, "/nope"), StatusCode::NOT_FOUND);
        assert_eq!(
            status(Method::POST, "/metrics"),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
