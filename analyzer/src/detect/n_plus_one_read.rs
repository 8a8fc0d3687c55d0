//! N+1 reads and repeated queries: the evidence and severity of the
//! `n_plus_one` and `repeated_query` findings a [`Detection`] makes (and
//! which rule an `n_plus_one_write` follows, see
//! [`n_plus_one_write`](super::n_plus_one_write)). The bookkeeping and the
//! verdict itself are [`n_plus_one`](super::n_plus_one)'s.

use serde::Serialize;

use super::n_plus_one::Detection;
use super::n_plus_one_write::NPlusOneWriteDetails;
use crate::finding::{FindingKind, Severity};

/// Repeated executions of one shape from which a read N+1 is an error:
/// at a millisecond per round trip, 25 of them are a noticeable share of a
/// page (the same step as N+1 writes).
pub const N_PLUS_ONE_ERROR_COUNT: u64 = 25;

/// Executions of one parameter tuple from which a repeated query is a
/// warning rather than a note.
pub const REPEATED_WARNING_COUNT: u64 = 10;

impl Detection {
    /// The severity rule of the three per-request shape kinds: a read
    /// N+1 is a warning, an error from [`N_PLUS_ONE_ERROR_COUNT`]
    /// executions; an N+1 write follows
    /// [`n_plus_one_write::severity`](super::n_plus_one_write::severity);
    /// a repeated query is a note, a warning from
    /// [`REPEATED_WARNING_COUNT`]. (How far the request is known to be
    /// one may lower it: [`super::weigh_by_confidence`].)
    pub fn severity(&self) -> Severity {
        match self.kind {
            FindingKind::NPlusOneWrite => super::n_plus_one_write::severity(self.count),
            FindingKind::NPlusOne if self.count >= N_PLUS_ONE_ERROR_COUNT => Severity::Error,
            FindingKind::NPlusOne => Severity::Warning,
            _ if self.count >= REPEATED_WARNING_COUNT => Severity::Warning,
            _ => Severity::Info,
        }
    }

    /// The finding's `details`; `grouping`: how the request was grouped
    /// when the application did not name it.
    pub fn details(&self, grouping: Option<&str>) -> DetectionDetails {
        if self.kind == FindingKind::NPlusOneWrite {
            return DetectionDetails::Write(NPlusOneWriteDetails::of(self, grouping));
        }
        let parent_evidence = match &self.parent {
            Some(p) => Some(format!(
                "{} of {} checked executions used values this query returned",
                p.matched, p.checked
            )),
            None if self.kind == FindingKind::NPlusOne => Some(
                "no earlier query in the request returned the parameter values these executions used"
                    .to_string(),
            ),
            None => None,
        };
        DetectionDetails::Read(NPlusOneDetails {
            distinct_parameters: self.distinct,
            total_duration_ms: (self.total_duration.as_secs_f64() * 1000.0 * 1000.0).round()
                / 1000.0,
            parent_evidence,
            grouping: grouping.map(str::to_string),
        })
    }
}

/// `details` of an `n_plus_one` or `repeated_query` finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NPlusOneDetails {
    /// Distinct parameter tuples among the executions (at least).
    pub distinct_parameters: u64,
    /// Time all executions of the shape took in the request.
    pub total_duration_ms: f64,
    /// Whether an earlier query's results fed the parameters (always said
    /// for an N+1; for a repeated query only when one did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_evidence: Option<String>,
    /// How the request was grouped when the application did not name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grouping: Option<String>,
}

/// The `details` of a [`Detection`], by kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DetectionDetails {
    /// `n_plus_one`, `repeated_query`.
    Read(NPlusOneDetails),
    /// `n_plus_one_write`.
    Write(NPlusOneWriteDetails),
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::fingerprint::{FingerprintId, StatementKind};

    fn detection(kind: FindingKind, count: u64) -> Detection {
        Detection {
            kind,
            fingerprint: FingerprintId(1),
            normalized: Arc::from("SELECT * FROM users WHERE id = $1"),
            statement: StatementKind::Select,
            writes: None,
            count,
            distinct: count,
            total_duration: Duration::from_micros(12_345),
            rows_max: 1,
            parent: None,
            first_seen: SystemTime::UNIX_EPOCH,
            last_seen: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn n_plus_one_is_an_error_from_twenty_five_executions() {
        assert_eq!(
            detection(FindingKind::NPlusOne, 5).severity(),
            Severity::Warning
        );
        assert_eq!(
            detection(FindingKind::NPlusOne, 24).severity(),
            Severity::Warning
        );
        assert_eq!(
            detection(FindingKind::NPlusOne, 25).severity(),
            Severity::Error
        );
    }

    #[test]
    fn a_repeated_query_is_a_warning_from_ten_executions() {
        assert_eq!(
            detection(FindingKind::RepeatedQuery, 9).severity(),
            Severity::Info
        );
        assert_eq!(
            detection(FindingKind::RepeatedQuery, 10).severity(),
            Severity::Warning
        );
        assert_eq!(
            detection(FindingKind::RepeatedQuery, 500).severity(),
            Severity::Warning
        );
    }

    #[test]
    fn an_n_plus_one_write_follows_the_write_rule() {
        assert_eq!(
            detection(FindingKind::NPlusOneWrite, 24).severity(),
            Severity::Warning
        );
        assert_eq!(
            detection(FindingKind::NPlusOneWrite, 25).severity(),
            Severity::Error
        );
    }

    #[test]
    fn read_details_serialize_to_the_documented_keys() {
        let d = detection(FindingKind::NPlusOne, 30);
        let json =
            serde_json::to_value(d.details(Some("untagged: grouped by transaction"))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "distinct_parameters": 30,
                "total_duration_ms": 12.345,
                "parent_evidence": "no earlier query in the request returned the parameter \
                                    values these executions used",
                "grouping": "untagged: grouped by transaction",
            })
        );
        // A repeated query without a parent says nothing about one.
        let r = detection(FindingKind::RepeatedQuery, 30);
        let json = serde_json::to_value(r.details(None)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"distinct_parameters": 30, "total_duration_ms": 12.345})
        );
    }
}
