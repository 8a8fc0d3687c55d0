//! One client connection, from its first byte to its close.
//!
//! The phases, in order: negotiation (SSLRequest, GSSENCRequest, direct TLS,
//! CancelRequest) until a StartupMessage arrives, time-boxed (see
//! [`crate::session::negotiation`]); connecting to
//! the upstream and forwarding the StartupMessage unchanged; then the relay,
//! in which authentication passes through like any other traffic until the
//! first ReadyForQuery. Both directions of the relay run independently in
//! one task; when either ends, the session ends.
//!
//! Until that first ReadyForQuery the session holds a startup slot
//! ([`StartupSlot`]); if a newer connection is given the slot, the session
//! is closed, whichever phase it is in.
//!
//! When the proxy drains ([`drain`]), a session idle at that moment is
//! closed at once with 57P01; one in a transaction or with a query in
//! flight goes on to its next boundary, which its relay sees where the
//! messages pass, and is closed there with 57P01; only when the grace
//! period is over is a session still in a transaction cut (57P01 first).
//!
//! The session logs inside a `session` tracing span that carries its
//! connection id, peer, user and database, so its log events do not name
//! them one by one. The span is entered where the session logs
//! (negotiation, effects that log, the end), not around the relay.

pub(crate) mod cancel;
pub(crate) mod context;
pub(crate) mod drain;
pub(crate) mod effects;
pub(crate) mod negotiation;
pub mod relay;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::limits::{Eviction, StartupSlot};
use crate::log_limit::{self, LogLimiter};
use crate::net::stream::{MaybeTls, ReadHalf, WriteHalf};
use crate::net::upstream::UpstreamStream;
use crate::session::context::ServerContext;
use crate::session::effects::SessionEffects;
use crate::session::relay::{Pump, RelayError, Stopped};
use crate::tracker::{Backend, Frontend, SessionInfo, Tracker};
use crate::wire::error_response::{fatal, ProxyError};
use negotiation::Peer;

/// A client connection, plain or with TLS terminated by the proxy.
pub type ClientStream = MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;

/// Sessions that could not reach the upstream.
static UPSTREAM_FAILURES: LogLimiter =
    LogLimiter::new("failed upstream connects", log_limit::DEFAULT_INTERVAL);

/// A session ready to relay: both connections split into halves, and its
/// tracker.
struct Established {
    client_rd: ReadHalf<tokio_rustls::server::TlsStream<TcpStream>>,
    client_wr: WriteHalf<tokio_rustls::server::TlsStream<TcpStream>>,
    server_rd: ReadHalf<tokio_rustls::client::TlsStream<TcpStream>>,
    server_wr: WriteHalf<tokio_rustls::client::TlsStream<TcpStream>>,
    tracker: Box<Mutex<Tracker>>,
    /// Acts on what the tracker reports (events, the cancel key, the end of
    /// startup).
    effects: Arc<SessionEffects>,
    /// Raised if the startup slot (held until the first ReadyForQuery) is
    /// given to a newer connection.
    eviction: Arc<Eviction>,
}

impl Established {
    /// Moves the session out of its box and frees the box (moving out of
    /// a box in place keeps its allocation until the end of the scope, here
    /// the session's life).
    #[allow(clippy::boxed_local)] // taking the box is the point: it is freed here
    fn unbox(boxed: Box<Established>) -> Established {
        *boxed
    }
}

/// Serves one accepted connection to completion; `slot` is its startup
/// slot. Everything it logs is inside its `session` span. The span is
/// entered where the session logs, not around every poll of the relay
/// (entering and leaving a span on each wakeup cost more per query than
/// the tracker's look at the messages).
///
/// Negotiation and connecting (TLS handshakes included) need far more task
/// state than forwarding does; they run boxed, so the task that lives as
/// long as the connection holds only the relay's state. The boxed part is
/// made here rather than inside the returned future: a value an async block
/// captures keeps its room for the block's whole life, even once moved on.
pub fn run(
    socket: TcpStream,
    ctx: Arc<ServerContext>,
    slot: StartupSlot,
) -> impl Future<Output = ()> + Send {
    let connection_id = ctx.next_connection_id();
    let peer = Peer::of(&socket);
    let span = tracing::info_span!(
        "session",
        connection_id,
        %peer,
        user = tracing::field::Empty,
        database = tracing::field::Empty,
    );
    let established =
        Box::pin(establish(socket, ctx.clone(), connection_id, peer, slot).instrument(span));
    async move {
        if let Some(session) = established.await {
            relay(session, &ctx).await;
        }
    }
}

/// Negotiates with the client, connects upstream and forwards the
/// StartupMessage; `None` when the session ended on the way (or was
/// evicted from its startup slot: then its socket is simply closed; or the
/// drain's grace period ended first).
async fn establish(
    socket: TcpStream,
    ctx: Arc<ServerContext>,
    connection_id: u64,
    peer: Peer,
    slot: StartupSlot,
) -> Option<Box<Established>> {
    let ctx = &ctx;
    socket.set_nodelay(true).ok();
    let eviction = slot.eviction();
    tokio::select! {
        biased;
        () = eviction.wait() => {
            tracing::info!(
                %peer,
                "closing a connection still in startup to make room for a newer one (--max-startup-connections)"
            );
            None
        }
        () = ctx.drain.grace_over() => {
            tracing::debug!("closing a connection still in startup: the drain's grace period is over");
            None
        }
        established = negotiate_and_connect(socket, ctx, connection_id, peer, slot) => {
            established.map(Box::new)
        }
    }
}

/// [`establish`] without the eviction.
async fn negotiate_and_connect(
    socket: TcpStream,
    ctx: &Arc<ServerContext>,
    connection_id: u64,
    peer: Peer,
    slot: StartupSlot,
) -> Option<Established> {
    let eviction = slot.eviction();
    let (client, packet, mut info) = negotiation::startup(socket, ctx, peer).await?;
    info.connection_id = connection_id;
    let span = tracing::Span::current();
    span.record("user", info.user.as_deref());
    span.record("database", info.database.as_deref());
    tracing::debug!(tls = client.is_tls(), "client connected");
    let (client, upstream, tracker, effects) = connect(client, packet, info, ctx, slot).await?;
    let (client_rd, client_wr) = client.into_split();
    let (server_rd, server_wr) = upstream.into_split();
    Some(Established {
        client_rd,
        client_wr,
        server_rd,
        server_wr,
        tracker,
        effects,
        eviction,
    })
}

/// Connects to the upstream and forwards the StartupMessage; `None` when
/// that failed (the client has been told why).
async fn connect(
    mut client: ClientStream,
    packet: Vec<u8>,
    info: SessionInfo,
    ctx: &Arc<ServerContext>,
    slot: StartupSlot,
) -> Option<(
    ClientStream,
    UpstreamStream,
    Box<Mutex<Tracker>>,
    Arc<SessionEffects>,
)> {
    let mut upstream = match ctx.upstream.connect().await {
        Ok(u) => u,
        Err(e) => {
            ctx.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
            if UPSTREAM_FAILURES.should_log() {
                tracing::warn!(error = %e, "upstream unreachable");
            }
            let _ =
                send_and_close(&mut client, ProxyError::UpstreamUnreachable, &e.to_string()).await;
            return None;
        }
    };
    if let Err(e) = async {
        upstream.write_all(&packet).await?;
        upstream.flush().await
    }
    .await
    {
        ctx.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
        if UPSTREAM_FAILURES.should_log() {
            tracing::warn!(error = %e, "upstream closed before the StartupMessage");
        }
        let _ = send_and_close(&mut client, ProxyError::UpstreamUnreachable, &e.to_string()).await;
        return None;
    }
    // The client never shares the upstream's TLS session (the proxy either
    // terminates the client's TLS or the client has none), so channel
    // binding can never succeed across the proxy: `-PLUS` is always removed.
    let tracker = Tracker::new(info, ctx.config.tracker_limits, true, effects::now())
        .with_budget(ctx.stats.held.clone());
    let effects = SessionEffects::new(ctx.sink.clone())
        .with_span(tracing::Span::current())
        .with_cancel_keys(ctx.cancel_keys.clone())
        .with_startup_slot(slot);
    Some((
        client,
        upstream,
        Box::new(Mutex::new(tracker)),
        Arc::new(effects),
    ))
}

/// Sends a FATAL ErrorResponse and closes the stream.
pub(crate) async fn send_and_close<S: AsyncWrite + Unpin>(
    s: &mut S,
    kind: ProxyError,
    message: &str,
) -> std::io::Result<()> {
    s.write_all(&fatal(kind, message)).await?;
    s.flush().await?;
    s.shutdown().await
}

/// How long the last words of a drained session (57P01 to the client,
/// Terminate to the server) may take: a client that stopped reading its
/// socket must not hold the drain open.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(1);

/// How the relay ended.
enum End {
    Client(Result<(), RelayError>),
    Server(Result<(), RelayError>),
    /// The proxy drains and the session reached a boundary (or was idle
    /// when the drain started).
    Drained,
    /// The proxy drains and the grace period ended while the session was
    /// still in a transaction or a query.
    GraceOver,
    StartupTimeout,
    /// Still authenticating when a newer connection was given its slot.
    Evicted,
}

impl End {
    /// How the relay ended when one direction stopped: `side` says which.
    fn of(stopped: Result<Stopped, RelayError>, side: fn(Result<(), RelayError>) -> End) -> End {
        match stopped {
            Ok(Stopped::Drained) => End::Drained,
            Ok(Stopped::Closed) => side(Ok(())),
            Err(e) => side(Err(e)),
        }
    }
}

async fn relay(session: Box<Established>, ctx: &Arc<ServerContext>) {
    let Established {
        mut client_rd,
        mut client_wr,
        mut server_rd,
        mut server_wr,
        tracker,
        effects,
        eviction,
    } = Established::unbox(session);
    let held = &ctx.stats.held;
    let mut frontend = Pump::with_budget(ctx.config.max_message_bytes, held.clone())
        .with_drain(ctx.drain.clone())
        .with_effects(effects.clone());
    let mut backend = Pump::with_budget(ctx.config.max_message_bytes, held.clone())
        .with_drain(ctx.drain.clone())
        .with_effects(effects.clone());
    let end = {
        let to_server = frontend.run::<Frontend, _, _>(&mut client_rd, &mut server_wr, &tracker);
        let to_client = backend.run::<Backend, _, _>(&mut server_rd, &mut client_wr, &tracker);
        tokio::pin!(to_server, to_client);
        tokio::select! {
            r = &mut to_server => End::of(r, End::Client),
            r = &mut to_client => End::of(r, End::Server),
            end = OnWake::new(watchdog(ctx, &tracker, &eviction)) => end,
        }
    };
    let span = effects.span().clone();
    async {
        finish(end, ctx, &mut client_wr, &mut server_wr).await;
        effects.close(&mut crate::lock(&tracker), effects::now());
    }
    .instrument(span)
    .await;
}

/// Says goodbye as `end` requires (logging why) and closes both
/// connections.
async fn finish(
    end: End,
    ctx: &ServerContext,
    client_wr: &mut WriteHalf<tokio_rustls::server::TlsStream<TcpStream>>,
    server_wr: &mut WriteHalf<tokio_rustls::client::TlsStream<TcpStream>>,
) {
    match end {
        End::Client(Ok(())) => {
            tracing::debug!("client closed the connection");
        }
        End::Client(Err(RelayError::Io(e))) => {
            tracing::debug!(error = %e, "client connection lost");
        }
        End::Client(Err(RelayError::Refused { kind, message })) => {
            // The tracker logged why; the server's half-done login is
            // dropped with the connection.
            let _ = send_and_close(client_wr, kind, message).await;
        }
        End::Client(Err(e)) => {
            tracing::warn!(error = %e, "closing connection: protocol violation by the client");
            let _ = send_and_close(client_wr, ProxyError::ProtocolViolation, &e.to_string()).await;
        }
        End::Server(Ok(())) => {
            tracing::debug!("server closed the connection");
        }
        End::Server(Err(e)) => {
            ctx.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "upstream connection lost");
        }
        End::Drained | End::GraceOver => {
            if matches!(end, End::GraceOver) {
                tracing::info!(
                    "grace period over: closing a session in a transaction for shutdown"
                );
            } else {
                tracing::debug!("closing session for shutdown");
            }
            let farewell = async {
                let _ = send_and_close(
                    client_wr,
                    ProxyError::ShuttingDown,
                    "the proxy is shutting down",
                )
                .await;
                // Terminate, so the server ends the session at once and
                // cleanly (rolling back a transaction that was cut).
                let _ = server_wr.write_all(b"X\0\0\0\x04").await;
            };
            let _ = tokio::time::timeout(FAREWELL_TIMEOUT, farewell).await;
        }
        End::StartupTimeout => {
            tracing::info!("client did not finish authentication in time");
            let _ = send_and_close(
                client_wr,
                ProxyError::ProtocolViolation,
                "authentication did not complete in time",
            )
            .await;
        }
        End::Evicted => {
            tracing::info!(
                "closing a connection still authenticating to make room for a newer one (--max-startup-connections)"
            );
            let _ = send_and_close(
                client_wr,
                ProxyError::TooManyConnections,
                "too many connections are still starting up; this one waited longest (--max-startup-connections)",
            )
            .await;
        }
    }
    // Bounded like the farewell: a peer that stopped reading (a TLS
    // close_notify is a write) must not hold the session, or the drain, open.
    let close = async {
        let _ = client_wr.shutdown().await;
        let _ = server_wr.shutdown().await;
    };
    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, close).await;
}

/// Ends the session from outside its traffic: when authentication has not
/// finished by the startup timeout or its startup slot went to a newer
/// connection; when the proxy starts draining and the session is idle (no
/// query, no transaction) or still authenticating; and when the drain's
/// grace period is over. A session busy when the drain starts is ended by
/// its relay at its next boundary instead. No polling: the watchdog wakes
/// for the startup deadline, the drain's start and the grace's end, and
/// one future in phases means a session carries one timer, not two.
async fn watchdog(ctx: &ServerContext, tracker: &Mutex<Tracker>, eviction: &Eviction) -> End {
    // Boxed: the startup timer is freed once authentication finishes (or
    // the timeout passes) instead of staying in the session's state for its
    // whole life.
    let startup = Box::pin(until_startup_deadline(ctx, eviction)).await;
    if startup != StartupEnd::Draining {
        if !crate::lock(tracker).is_started() {
            return match startup {
                StartupEnd::Evicted => End::Evicted,
                _ => End::StartupTimeout,
            };
        }
        ctx.drain.started().await;
    }
    let idle = {
        let t = crate::lock(tracker);
        t.is_idle() || !t.is_started()
    };
    if idle {
        return End::Drained;
    }
    ctx.drain.grace_over().await;
    End::GraceOver
}

/// How the startup phase of the watchdog ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartupEnd {
    /// The startup timeout passed.
    Deadline,
    /// The proxy started draining.
    Draining,
    /// The startup slot was given to a newer connection.
    Evicted,
    /// The startup slot was given back: authentication finished.
    Started,
}

/// Waits out the startup timeout, unless authentication finishes, the proxy
/// drains or the session is evicted from its startup slot first.
async fn until_startup_deadline(ctx: &ServerContext, eviction: &Eviction) -> StartupEnd {
    tokio::select! {
        () = tokio::time::sleep(ctx.config.startup_timeout) => StartupEnd::Deadline,
        () = eviction.settled() => if eviction.is_evicted() {
            StartupEnd::Evicted
        } else {
            StartupEnd::Started
        },
        () = ctx.drain.started() => StartupEnd::Draining,
    }
}

/// Polls its future only when that future asked to be woken.
///
/// `select!` polls every branch whenever the task wakes, and a session's
/// task wakes for every message in either direction; the watchdog (a timer
/// and the drain signal) has nothing to do then. Giving it a waker of its
/// own that raises a flag keeps it out of the per-message path.
struct OnWake<F> {
    future: Pin<Box<F>>,
    flag: Arc<WakeFlag>,
}

struct WakeFlag {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = crate::lock(&self.task).clone();
        if let Some(task) = task {
            task.wake();
        }
    }
}

impl<F: Future> OnWake<F> {
    fn new(future: F) -> Self {
        OnWake {
            future: Box::pin(future),
            flag: Arc::new(WakeFlag {
                // Polled once at the start, to register its wakeups.
                woken: AtomicBool::new(true),
                task: Mutex::new(None),
            }),
        }
    }
}

impl<F: Future> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        {
            let mut task = crate::lock(&self.flag.task);
            if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(self.flag.clone());
        self.future.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A future that counts its polls and stays pending until released
    /// through the waker it was last given.
    struct Probe {
        polls: Arc<std::sync::atomic::AtomicU32>,
        waker: Arc<Mutex<Option<Waker>>>,
        released: Arc<AtomicBool>,
    }

    impl Future for Probe {
        type Output = u32;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            let n = self.polls.fetch_add(1, Ordering::SeqCst) + 1;
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.released.load(Ordering::SeqCst) {
                Poll::Ready(n)
            } else {
                Poll::Pending
            }
        }
    }

    #[test]
    fn on_wake_polls_its_future_only_after_that_future_was_woken() {
        let polls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let inner_waker = Arc::new(Mutex::new(None::<Waker>));
        let released = Arc::new(AtomicBool::new(false));
        let mut gated = Box::pin(OnWake::new(Probe {
            polls: polls.clone(),
            waker: inner_waker.clone(),
            released: released.clone(),
        }));
        let mut cx = Context::from_waker(Waker::noop());
        // The first poll registers the inner future's wakeups.
        assert!(gated.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // The task waking for other reasons (traffic) does not reach it.
        for _ in 0..10 {
            assert!(gated.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // Its own wakeup does.
        released.store(true, Ordering::SeqCst);
        let waker = inner_waker.lock().unwrap().take().unwrap();
        waker.wake();
        assert_eq!(gated.as_mut().poll(&mut cx), Poll::Ready(2));
    }

    fn output_size<A, B, C, R>(_f: fn(A, B, C) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// What an idle session's task holds is mostly this future: captured
    /// values that stay after being moved on, or a second copy of a
    /// future awaited from inside an async block, show up here.
    #[test]
    fn a_sessions_future_stays_small() {
        let run = output_size::<TcpStream, Arc<ServerContext>, StartupSlot, _>(run);
        assert!(run <= 1024, "session future {run} bytes");
        let tracker = std::mem::size_of::<Mutex<Tracker>>();
        assert!(tracker <= 640, "tracker {tracker} bytes");
    }
}
