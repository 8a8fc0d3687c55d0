//! Property tests: tag reading and correlation never panic and stay bounded
//! on arbitrary input, and tags written the sqlcommenter way read back.

mod correlation_support;

use std::time::Duration;

use correlation_support::Harness;
use proptest::prelude::*;
use qproxy_analyzer::correlation::statement::nth_statement;
use qproxy_analyzer::correlation::tags::MAX_VALUE_LEN;
use qproxy_analyzer::correlation::{extract_tags, request_id_signal, CorrelationConfig};
use qproxy_analyzer::event::TxStatus;

/// Fragments comment and statement parsing care about.
const PIECES: &[&str] = &[
    "/*",
    "*/",
    "'",
    "\\",
    "%",
    "%%",
    "%2F",
    "=",
    ":",
    ",",
    ";",
    "$$",
    "$1",
    "--",
    "\n",
    " ",
    "request_id",
    "traceparent",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "controller",
    "SET qproxy.request_id",
    "set_config('qproxy.request_id',",
    "LOCAL",
    "BEGIN",
    "COMMIT",
    "ROLLBACK TO",
    "DISCARD ALL",
    "é",
];

/// Text made of [`PIECES`], short words and arbitrary characters.
fn sqlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        6 => prop::sample::select(PIECES).prop_map(String::from),
        1 => "[a-z0-9]{1,4}",
        1 => any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

/// Percent-encodes like JavaScript's encodeURIComponent, then escapes `'`.
fn sqlcommenter_encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn tag_extraction_never_panics_and_is_bounded(sql in sqlish()) {
        if let Some(tags) = extract_tags(&sql) {
            for value in tags.request_id.iter().chain(&tags.trace_id).chain(&tags.route) {
                prop_assert!(value.len() <= MAX_VALUE_LEN);
            }
            prop_assert!(tags.labels.len() <= 7);
        }
    }

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>(), idx in 0u16..4) {
        let _ = extract_tags(&s);
        let _ = nth_statement(&s, idx);
        let _ = request_id_signal(&s, &[Some(1), None]);
    }

    #[test]
    fn statement_helpers_never_panic(sql in sqlish(), idx in 0u16..4) {
        if let Some(part) = nth_statement(&sql, idx) {
            prop_assert!(sql.contains(part));
        }
        let _ = request_id_signal(&sql, &[Some(7)]);
    }

    #[test]
    fn sqlcommenter_values_round_trip(
        sql in "[a-zA-Z0-9 ,=()*]{0,40}",
        id in "[^\\s]([^\u{0}]{0,60}[^\\s])?",
        appended in any::<bool>(),
        python in any::<bool>(),
    ) {
        let mut encoded = sqlcommenter_encode(&id).replace('\'', "\\'");
        if python {
            encoded = encoded.replace('%', "%%");
        }
        let comment = format!("/*controller='c',request_id='{encoded}'*/");
        let text = if appended { format!("{sql} {comment}") } else { format!("{comment} {sql}") };
        let tags = extract_tags(&text).expect("tags");
        let mut want = id.as_str();
        let mut end = want.len().min(MAX_VALUE_LEN);
        while !want.is_char_boundary(end) {
            end -= 1;
        }
        want = want[..end].trim();
        prop_assert_eq!(tags.request_id.as_deref(), Some(want));
    }
}

/// One step of a random session.
#[derive(Debug, Clone)]
enum Step {
    Run {
        conn: u64,
        sql: String,
        named: Option<u8>,
        status: u8,
        app: Option<u8>,
        failed: bool,
    },
    Sleep(u64),
    Close(u64),
    Expire,
    Drain,
}

fn step() -> impl Strategy<Value = Step> {
    let sql = prop_oneof![
        3 => sqlish(),
        1 => Just("BEGIN".to_owned()),
        1 => Just("COMMIT".to_owned()),
        1 => Just("SET LOCAL qproxy.request_id = 'l'".to_owned()),
        1 => Just("SET qproxy.request_id = 's'".to_owned()),
        1 => Just("RESET qproxy.request_id".to_owned()),
        2 => "[a-c]".prop_map(|id| format!("SELECT 1 /*request_id='{id}'*/")),
        1 => Just("SELECT 1 /*controller='a',action='b'*/".to_owned()),
    ];
    prop_oneof![
        8 => (0u64..4, sql, prop::option::of(0u8..3), 0u8..3, prop::option::of(0u8..3), any::<bool>())
            .prop_map(|(conn, sql, named, status, app, failed)| Step::Run { conn, sql, named, status, app, failed }),
        2 => (0u64..3000).prop_map(Step::Sleep),
        1 => (0u64..4).prop_map(Step::Close),
        1 => Just(Step::Expire),
        1 => Just(Step::Drain),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn correlator_never_panics_and_respects_its_caps(steps in prop::collection::vec(step(), 0..80)) {
        let config = CorrelationConfig {
            max_contexts: 3,
            idle_gap: Duration::from_millis(100),
            ..CorrelationConfig::default()
        };
        let mut h = Harness::with_config(config);
        let mut observed = 0u64;
        for step in steps {
            match step {
                Step::Run { conn, sql, named, status, app, failed } => {
                    if let Some(app) = app {
                        h.set_app(conn, &format!("app-{app}"));
                    }
                    let mut s = h.stmt(conn, &sql).untracked();
                    s = s.status([TxStatus::Idle, TxStatus::InTransaction, TxStatus::Failed][usize::from(status)]);
                    if let Some(n) = named {
                        s = s.named(&format!("s{n}"));
                    }
                    if failed {
                        s = s.failed();
                    }
                    s.run();
                    observed += 1;
                }
                Step::Sleep(ms) => h.sleep_ms(ms),
                Step::Close(conn) => h.close(conn),
                Step::Expire => h.expire(),
                Step::Drain => {
                    for ended in h.ended() {
                        prop_assert!(ended.statements >= 1);
                        prop_assert!(ended.work_statements <= ended.statements);
                        prop_assert!(ended.started_at <= ended.ended_at);
                    }
                }
            }
            prop_assert!(h.c.live_contexts() <= 3);
        }
        let stats = h.c.stats();
        prop_assert_eq!(stats.events, observed);
        prop_assert!(stats.correlated <= stats.events);
        h.c.finish_all();
        prop_assert_eq!(h.c.live_contexts(), 0);
        let s = h.c.stats();
        prop_assert_eq!(s.contexts_started, s.contexts_ended);
    }
}
