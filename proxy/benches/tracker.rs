//! Per-query cost of following the protocol: the frame scanner and the
//! tracker fed a realistic stream, the way the relay feeds them (one call
//! per read batch), with every event handed to the analyzer's queue.
//!
//! Traffic: an ORM-style extended-protocol query (Parse/Bind/Describe/
//! Execute/Sync of the unnamed statement, three result rows) and a simple
//! Query (two rows), with the server's replies. `pipelined` sends 64 of
//! each in one batch per direction; `one_at_a_time` sends each query in its
//! own batch and its replies in another, as an interactive client does.
//!
//! `one_at_a_time/lent_outbox` runs the batches as the relay now does, with
//! a spare outbox lent to the tracker per batch (an idle session holds
//! none); `session_span/enter_exit` is what the relay stopped doing on
//! every wakeup of a session's task.
//!
//! Run: `cargo bench -p qproxy --bench tracker -- --warm-up-time 1 --measurement-time 3`
//! Criterion reports time per query (throughput: elements = queries).
//!
//! Measured on the 2-core development VM (shared, load 3-4, so ±15%), A/B
//! interleaved, medians per query: before the tracker was made pure
//! (16705b0) pipelined 760 ns, one_at_a_time 665 ns; after, pipelined
//! 762 ns, one_at_a_time 680 ns: no difference beyond the noise (runs
//! spread 630-830 ns). The old `inspect_all` also copied its input
//! (`input_copy`: 5 ns per query pipelined, 36 ns one at a time), which the
//! relay never did; the new relay reads the clocks once per batch instead
//! of once per execution start and end.

use std::hint::black_box;
use std::time::{Instant, SystemTime};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use postgres_protocol::message::frontend as fe;
use qproxy::events::EventSink;
use qproxy::tracker::{
    inspect_all, Backend, Effect, Frontend, Now, SessionInfo, Tracker, TrackerLimits,
};

const MAX_MESSAGE: usize = 1 << 20;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn row(values: &[&[u8]]) -> Vec<u8> {
    let mut body = (values.len() as i16).to_be_bytes().to_vec();
    for v in values {
        body.extend_from_slice(&(v.len() as i32).to_be_bytes());
        body.extend_from_slice(v);
    }
    msg(b'D', &body)
}

fn enc(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut buf = BytesMut::new();
    f(&mut buf);
    buf.to_vec()
}

/// One extended-protocol query from the client.
fn extended_request(id: u32) -> Vec<u8> {
    let sql = "SELECT o.id, o.total, o.created_at FROM orders o WHERE o.user_id = $1 ORDER BY o.created_at DESC LIMIT 20";
    let param = id.to_string();
    let mut out = enc(|b| fe::parse("", sql, [23], b).unwrap());
    out.extend(enc(|b| {
        fe::bind(
            "",
            "",
            [0i16],
            [param.as_str()],
            |p, buf| {
                buf.extend_from_slice(p.as_bytes());
                Ok(postgres_protocol::IsNull::No)
            },
            [1i16],
            b,
        )
        .map_err(|_| ())
        .unwrap()
    }));
    out.extend(enc(|b| fe::describe(b'P', "", b).unwrap()));
    out.extend(enc(|b| fe::execute("", 0, b).unwrap()));
    out.extend(enc(fe::sync));
    out
}

/// The server's replies to [`extended_request`].
fn extended_reply() -> Vec<u8> {
    let mut out = msg(b'1', b"");
    out.extend(msg(b'2', b""));
    out.extend(msg(
        b'T',
        b"\0\x03id\0\0\0\x40\x01\0\x01\0\0\0\x17\0\x04\xff\xff\xff\xff\0\x01total\0\0\0\x40\x01\0\x02\0\0\x06\xa4\xff\xff\xff\xff\xff\xff\0\x01created_at\0\0\0\x40\x01\0\x03\0\0\x04\xa0\0\x08\xff\xff\xff\xff\0\x01",
    ));
    for i in 0..3u32 {
        out.extend(row(&[
            &i.to_be_bytes(),
            b"\0\x02\0\x01\0\0\0\x02\0\x0c\x0c\x80",
            &[0; 8],
        ]));
    }
    out.extend(msg(b'C', b"SELECT 3\0"));
    out.extend(msg(b'Z', b"I"));
    out
}

/// One simple Query from the client.
fn simple_request(id: u32) -> Vec<u8> {
    enc(|b| fe::query(&format!("SELECT name, email FROM users WHERE id = {id}"), b).unwrap())
}

/// The server's replies to [`simple_request`].
fn simple_reply() -> Vec<u8> {
    let mut out = msg(
        b'T',
        b"\0\x02name\0\0\0\x40\x02\0\x02\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0email\0\0\0\x40\x02\0\x03\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0",
    );
    out.extend(row(&[b"Ada Lovelace", b"ada@example.com"]));
    out.extend(row(&[b"Ada Lovelace", b"ada@example.org"]));
    out.extend(msg(b'C', b"SELECT 2\0"));
    out.extend(msg(b'Z', b"I"));
    out
}

/// The clocks, read once per batch as the relay does.
fn now() -> Now {
    Now {
        instant: Instant::now(),
        wall: SystemTime::now(),
    }
}

/// A tracker past authentication, the queue it reports to, and what the
/// relay does after each batch: hand the tracker's events to that queue.
fn tracker() -> (
    Tracker,
    EventSink,
    tokio::sync::mpsc::Receiver<qproxy_analyzer::event::SessionEvent>,
) {
    let (sink, rx) = EventSink::channel(4096);
    let mut t = Tracker::new(
        SessionInfo::default(),
        TrackerLimits::default(),
        true,
        now(),
    );
    t.backend(b"Z\0\0\0\x05I", now());
    t.drain_effects().for_each(drop);
    (t, sink, rx)
}

/// One batch through the scanner and the tracker, then its effects
/// applied, as `session::relay` does.
fn batch<D: qproxy::tracker::Direction>(data: &[u8], t: &mut Tracker, sink: &EventSink) -> usize {
    let n = inspect_all::<D>(black_box(data), t, MAX_MESSAGE, now()).unwrap();
    for effect in t.drain_effects() {
        if let Effect::Event(e) = effect {
            sink.emit(e);
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracker");

    const BATCH: u32 = 64;
    let mut front = Vec::new();
    let mut back = Vec::new();
    for i in 0..BATCH {
        front.extend(extended_request(i));
        back.extend(extended_reply());
        front.extend(simple_request(i));
        back.extend(simple_reply());
    }
    group.throughput(Throughput::Elements(2 * u64::from(BATCH)));
    group.bench_function("pipelined", |b| {
        let (mut t, sink, mut rx) = tracker();
        b.iter(|| {
            let sent = batch::<Frontend>(&front, &mut t, &sink);
            let got = batch::<Backend>(&back, &mut t, &sink);
            let mut events = 0;
            while let Ok(e) = rx.try_recv() {
                black_box(e);
                events += 1;
            }
            assert_eq!((sent, got, events), (front.len(), back.len(), 2 * BATCH));
        })
    });

    let batches = [
        extended_request(42),
        extended_reply(),
        simple_request(42),
        simple_reply(),
    ];
    group.throughput(Throughput::Elements(2));
    group.bench_function("one_at_a_time", |b| {
        let (mut t, sink, mut rx) = tracker();
        b.iter(|| {
            batch::<Frontend>(&batches[0], &mut t, &sink);
            batch::<Backend>(&batches[1], &mut t, &sink);
            batch::<Frontend>(&batches[2], &mut t, &sink);
            batch::<Backend>(&batches[3], &mut t, &sink);
            let mut events = 0;
            while let Ok(e) = rx.try_recv() {
                black_box(e);
                events += 1;
            }
            assert_eq!(events, 2);
        })
    });
    // As the relay runs a batch now: the thread's spare outbox lent to the
    // tracker for the batch and taken back, so an idle session keeps none.
    group.bench_function("one_at_a_time/lent_outbox", |b| {
        let (mut t, sink, mut rx) = tracker();
        let mut spare = Vec::new();
        b.iter(|| {
            for (i, data) in batches.iter().enumerate() {
                t.swap_outbox(&mut spare);
                if i % 2 == 0 {
                    batch::<Frontend>(data, &mut t, &sink);
                } else {
                    batch::<Backend>(data, &mut t, &sink);
                }
                t.swap_outbox(&mut spare);
            }
            let mut events = 0;
            while let Ok(e) = rx.try_recv() {
                black_box(e);
                events += 1;
            }
            assert_eq!(events, 2);
        })
    });
    // What the old `inspect_all` (before the scanner moved to `wire::scan`)
    // spent per batch besides scanning and tracking: copying its input into
    // a fresh buffer. Subtract it for an A/B of the scanning and tracking
    // alone.
    group.throughput(Throughput::Elements(2 * u64::from(BATCH)));
    group.bench_function("input_copy/pipelined", |b| {
        b.iter(|| {
            for data in [&front, &back] {
                let mut buf = BytesMut::new();
                buf.extend_from_slice(black_box(data));
                black_box(&buf);
            }
        })
    });
    group.throughput(Throughput::Elements(2));
    group.bench_function("input_copy/one_at_a_time", |b| {
        b.iter(|| {
            for data in &batches {
                let mut buf = BytesMut::new();
                buf.extend_from_slice(black_box(data));
                black_box(&buf);
            }
        })
    });
    group.finish();

    // Reading a SQL text from a message: the lossy conversion the wire
    // decoder used to run on every text, against the standard validator it
    // now runs first (falling back to the lossy one only for invalid bytes).
    let short = b"SELECT abalance FROM pgbench_accounts WHERE aid = $1;".to_vec();
    let long = format!(
        "SELECT {} FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = $1",
        (0..60)
            .map(|i| format!("o.column_{i} AS o_column_{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
    .into_bytes();
    let mut group = c.benchmark_group("sql_text");
    for (name, text) in [("short", &short), ("long", &long)] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(format!("{name}/lossy"), |b| {
            b.iter(|| black_box(String::from_utf8_lossy(black_box(text)).len()))
        });
        group.bench_function(format!("{name}/validate"), |b| {
            b.iter(|| {
                let text: std::borrow::Cow<'_, str> = match std::str::from_utf8(black_box(text)) {
                    Ok(t) => std::borrow::Cow::Borrowed(t),
                    Err(_) => String::from_utf8_lossy(text),
                };
                black_box(text.len())
            })
        });
    }
    group.finish();

    // What the relay no longer does on every wakeup of a session's task:
    // enter and leave the session's span (with the subscriber `qproxy
    // serve` installs: fmt with an env filter). A query wakes the task
    // about twice.
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("session", connection_id = 1u64, peer = "127.0.0.1:5000");
        let mut group = c.benchmark_group("session_span");
        group.bench_function("enter_exit", |b| {
            b.iter(|| {
                let _in = black_box(&span).enter();
            })
        });
        group.finish();
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
