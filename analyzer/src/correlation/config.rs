//! Tunables of request correlation, shared by flags, env and the TOML file.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// How untagged traffic is split into requests, and how much state is kept.
///
/// Durations deserialize from milliseconds (`250`) or a string with a unit
/// (`"250ms"`, `"2s"`, `"1m"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorrelationConfig {
    /// Silence on a connection, from the end of one statement to the start of
    /// the next (event timestamps), that starts a new request when nothing
    /// else identifies requests. Default 250 ms: an ORM loop issues its
    /// queries back to back (gaps well under 10 ms, even with template
    /// rendering between lazy loads), while a larger gap would merge
    /// consecutive requests on a pooled connection, and a merged pair of
    /// requests is exactly what makes a false N+1.
    #[serde(deserialize_with = "duration")]
    pub idle_gap: Duration,
    /// How long a request identified by a comment or `SET` stays open after
    /// no connection is using it any more (its connection went on to another
    /// request, or the id was reset), and how long an idle-gap context waits
    /// for a late event. Default 2 s: pools that check a connection out per
    /// query (node-postgres, knex, Go's database/sql) spread one request over
    /// several connections, and its next statement usually comes well within
    /// that.
    #[serde(deserialize_with = "duration")]
    pub request_grace: Duration,
    /// A context that is still a connection's current request (or a
    /// transaction left open) ends after this long without statements.
    /// Default 30 s, longer than any request that should still be grouped.
    #[serde(deserialize_with = "duration")]
    pub context_idle_timeout: Duration,
    /// Live request contexts kept; beyond it the least recently active one
    /// ends early. Also caps the per-connection states tracked. Default
    /// 10 000: a few thousand requests in flight plus their grace periods.
    pub max_contexts: usize,
    /// An untagged group (a transaction, or statements between idle gaps)
    /// is cut into a new one once it has lasted this long, from its first
    /// statement's start to the next statement's. Default 10 s: a batch
    /// worker or a benchmark loop never goes quiet, and without a bound its
    /// whole run would be one "request" whose every repeated lookup is an
    /// N+1 of thousands; a web request that takes longer than this is
    /// rare, and is still judged in parts.
    #[serde(deserialize_with = "duration")]
    pub fallback_max_duration: Duration,
    /// An untagged group is also cut after this many statements. Default
    /// 1 000: twenty times the query budget, so a request that blows the
    /// budget is still reported whole, while a loop of fifteen thousand
    /// lookups becomes fifteen groups rather than one.
    pub fallback_max_statements: u64,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        CorrelationConfig {
            idle_gap: Duration::from_millis(250),
            request_grace: Duration::from_secs(2),
            context_idle_timeout: Duration::from_secs(30),
            max_contexts: 10_000,
            fallback_max_duration: Duration::from_secs(10),
            fallback_max_statements: 1_000,
        }
    }
}

/// Deserializes a duration setting: milliseconds, or a string with a unit.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("milliseconds, or a string like \"250ms\", \"2s\" or \"1m\"")
        }

        fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(ms))
        }

        fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Duration, E> {
            u64::try_from(ms)
                .map(Duration::from_millis)
                .map_err(|_| E::custom("negative duration"))
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            parse_duration(s).ok_or_else(|| E::invalid_value(de::Unexpected::Str(s), &self))
        }
    }
    d.deserialize_any(V)
}

/// `<integer><unit>` with unit `ms`, `s` or `m`.
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = s[..split].parse().ok()?;
    match s[split..].trim() {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        _ => None,
    }
}
