//! The admin HTTP server: `/metrics` (Prometheus text), `/healthz` (the
//! process is alive), `/readyz` (the upstream answered the last
//! connection check and the proxy is not draining), and the live view
//! (`/`, the page, and `/api/live`, its data; see [`crate::admin::live`]).
//!
//! It is kept away from the proxy path: its own listener, a cap on open
//! admin connections, small request buffers and timeouts on every
//! connection. Each connection is served on its own task. When the cap is
//! reached, a new connection is never turned away: the open connection
//! that has been idle longest is closed to make room, so sockets that
//! connect and send nothing cannot starve liveness probes (they are also
//! closed after [`HEADER_TIMEOUT`] without a request).

pub mod live;

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
use hyper::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HOST,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::admin::live::{page, LiveFeed};
use crate::metrics::Metrics;
use crate::net::upstream::Upstream;

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
    /// The live view's data; without it `/` and `/api/live` are not found.
    live: Option<Arc<LiveFeed>>,
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
            live: None,
        })
    }

    /// Serves the live view (`/` and `/api/live`) from `feed`.
    pub fn with_live_view(mut self, feed: Arc<LiveFeed>) -> AdminServer {
        self.live = Some(feed);
        self
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
            let endpoints = Endpoints {
                metrics: self.metrics.clone(),
                health: self.health.clone(),
                live: self.live.clone(),
            };
            let open = open.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = serve_connection(socket, endpoints, open.start, &connection) => {}
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

/// What the admin endpoints answer from.
#[derive(Debug, Clone)]
struct Endpoints {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    live: Option<Arc<LiveFeed>>,
}

async fn serve_connection(
    socket: TcpStream,
    endpoints: Endpoints,
    clock: Instant,
    connection: &Arc<Connection>,
) {
    let active = connection.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        active
            .last_active
            .fetch_max(millis_since(clock), Ordering::Relaxed);
        let response = respond(
            &req,
            &endpoints.metrics,
            &endpoints.health,
            endpoints.live.as_deref(),
        );
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

/// Headers every live-view response carries: no caching, no sniffing, no
/// referrer, and `csp`.
fn live_headers(response: &mut Response<Full<Bytes>>, content_type: &'static str, csp: &str) {
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(csp) = HeaderValue::from_str(csp) {
        headers.insert(CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
}

/// Whether the request names the admin server by an IP address or
/// `localhost`. The live view answers only those: a web page the developer
/// visits could otherwise point a host name of its own at 127.0.0.1 (DNS
/// rebinding) and read the view as same-origin.
fn addressed_directly<B>(req: &Request<B>) -> bool {
    let Some(host) = req.headers().get(HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || port.starts_with(':') => v6,
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

fn respond<B>(
    req: &Request<B>,
    metrics: &Metrics,
    health: &Health,
    live: Option<&LiveFeed>,
) -> Response<Full<Bytes>> {
    let head = req.method() == Method::HEAD;
    if !head && req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    let mut response = match (req.uri().path(), live) {
        ("/" | "/api/live", Some(_)) if !addressed_directly(req) => text(
            StatusCode::FORBIDDEN,
            "the live view answers only requests addressed to an IP address or localhost\n",
        ),
        ("/", Some(_)) => {
            let page = page::page();
            let mut r = Response::new(Full::new(page.html.clone()));
            live_headers(&mut r, "text/html; charset=utf-8", &page.csp);
            r
        }
        ("/api/live", Some(feed)) => {
            let mut r = Response::new(Full::new(feed.view()));
            live_headers(&mut r, "application/json", page::DATA_CSP);
            r
        }
        (path, _) => respond_probe(path, metrics, health),
    };
    if head {
        *response.body_mut() = Full::new(Bytes::new());
    }
    response
}

/// `/metrics`, `/healthz`, `/readyz`, or not found.
fn respond_probe(path: &str, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    match path {
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
    }
}

/// Checks every `interval` that a connection to the upstream (TCP, or its
/// Unix-domain socket) opens within `timeout`, and records the answer in
/// `health` and the `qproxy_upstream_up` gauge, until `stop` resolves.
pub async fn check_upstream(
    upstream: Arc<Upstream>,
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
    let addr = upstream.url().addr();
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = ticks.tick() => {}
        }
        let up = matches!(
            tokio::time::timeout(timeout, upstream.open()).await,
            Ok(Ok(_))
        );
        health.set_upstream_up(up);
        metrics.set_upstream_up(up);
        if last != Some(up) {
            if up {
                tracing::info!(upstream = %addr, "upstream reachable");
            } else {
                tracing::warn!(upstream = %addr, "upstream unreachable; /readyz answers 503");
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
        let status = |m: Method, p: &str| respond(&get(m, p), &metrics, &health, None).status();
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
        // Without a live view, its paths are not there.
        assert_eq!(status(Method::GET, "/"), StatusCode::NOT_FOUND);
        assert_eq!(status(Method::GET, "/api/live"), StatusCode::NOT_FOUND);
        assert_eq!(
            status(Method::POST, "/metrics"),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    fn live_get(method: Method, path: &str, host: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, host)
            .body(())
            .unwrap()
    }

    #[test]
    fn the_live_view_is_read_only_and_locked_down() {
        use http_body_util::BodyExt;
        let metrics = Metrics::new(3, Arc::default(), Arc::default());
        let health = Health::default();
        let feed = LiveFeed::new();
        let respond = |req: Request<()>| respond(&req, &metrics, &health, Some(&feed));
        let page = respond(live_get(Method::GET, "/", "127.0.0.1:9930"));
        assert_eq!(page.status(), StatusCode::OK);
        let header = |r: &Response<Full<Bytes>>, name: HeaderName| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(header(&page, CONTENT_TYPE), "text/html; charset=utf-8");
        assert_eq!(header(&page, CONTENT_SECURITY_POLICY), page::page().csp);
        assert_eq!(header(&page, X_CONTENT_TYPE_OPTIONS), "nosniff");
        assert_eq!(header(&page, CACHE_CONTROL), "no-store");
        let data = respond(live_get(Method::GET, "/api/live", "localhost:9930"));
        assert_eq!(data.status(), StatusCode::OK);
        assert_eq!(header(&data, CONTENT_TYPE), "application/json");
        assert_eq!(header(&data, CONTENT_SECURITY_POLICY), page::DATA_CSP);
        let body = futures_util::FutureExt::now_or_never(data.into_body().collect())
            .unwrap()
            .unwrap()
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["version"], 1);
        // GET and HEAD only.
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            assert_eq!(
                respond(live_get(method, "/api/live", "127.0.0.1")).status(),
                StatusCode::METHOD_NOT_ALLOWED
            );
        }
        assert_eq!(
            respond(live_get(Method::HEAD, "/", "[::1]:9930")).status(),
            StatusCode::OK
        );
        // A host name other than localhost (DNS rebinding) gets nothing.
        for host in [
            "evil.example:9930",
            "evil.example",
            "127.0.0.1.evil.example",
            "[::1]x",
        ] {
            assert_eq!(
                respond(live_get(Method::GET, "/api/live", host)).status(),
                StatusCode::FORBIDDEN,
                "{host}"
            );
        }
        assert_eq!(
            respond(get(Method::GET, "/")).status(),
            StatusCode::FORBIDDEN,
            "no Host header"
        );
        // The probes answer whatever the Host.
        assert_eq!(
            respond(live_get(Method::GET, "/healthz", "evil.example")).status(),
            StatusCode::OK
        );
    }
}
