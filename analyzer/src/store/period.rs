//! Spans of time given on the command line: how long the store keeps runs
//! (`--store-retention 30d`) and where a report starts (`--since 24h` or
//! `--since 2024-05-01T00:00:00Z`).

use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A duration or a point in time that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    /// Not `<integer><unit>...` with units `s`, `m`, `h`, `d`, `w`.
    #[error("invalid duration `{0}` (expected e.g. 30d, 12h, 90m, 1d12h; units s, m, h, d, w)")]
    Duration(String),
    /// Neither a duration nor an RFC 3339 time.
    #[error(
        "invalid --since `{0}` (expected a duration such as 24h or 7d, or an RFC 3339 time \
         such as 2024-05-01T00:00:00Z)"
    )]
    Since(String),
}

/// Parses `30d`, `12h`, `90m`, `45s`, `2w` and sums of them (`1d12h`).
/// A bare number is refused: whether it meant seconds or days is not
/// something to guess when the setting deletes data.
pub fn parse_duration(s: &str) -> Result<Duration, PeriodError> {
    let invalid = || PeriodError::Duration(s.to_string());
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        if digits == 0 {
            return Err(invalid());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        let unit = rest[digits..].chars().next().ok_or_else(invalid)?;
        let seconds: u64 = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(invalid()),
        };
        let part = n.checked_mul(seconds).ok_or_else(invalid)?;
        total = total.checked_add(part).ok_or_else(invalid)?;
        rest = &rest[digits + unit.len_utf8()..];
    }
    Ok(Duration::from_secs(total))
}

/// Parses `--since`: an RFC 3339 time, or a duration back from `now`.
pub fn parse_since(s: &str, now: OffsetDateTime) -> Result<OffsetDateTime, PeriodError> {
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let back = parse_duration(s).map_err(|_| PeriodError::Since(s.to_string()))?;
    Ok(before(now, back))
}

/// `now - span`, clamped at the Unix epoch (nothing in a store is older).
pub fn before(now: OffsetDateTime, span: Duration) -> OffsetDateTime {
    time::Duration::try_from(span)
        .ok()
        .and_then(|span| now.checked_sub(span))
        .filter(|t| *t > OffsetDateTime::UNIX_EPOCH)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn durations_with_units_and_sums() {
        let secs = |s: &str| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(secs("30d"), Ok(30 * 86_400));
        assert_eq!(secs("12h"), Ok(12 * 3_600));
        assert_eq!(secs("90m"), Ok(5_400));
        assert_eq!(secs("45s"), Ok(45));
        assert_eq!(secs("2w"), Ok(14 * 86_400));
        assert_eq!(secs("1d12h"), Ok(36 * 3_600));
        assert_eq!(secs(" 0s "), Ok(0));
        for bad in [
            "",
            "30",
            "d",
            "30x",
            "3.5d",
            "-1d",
            "1d 2h",
            "99999999999999999999w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
        let err = parse_duration("30").unwrap_err().to_string();
        assert!(err.contains("`30`") && err.contains("30d"), "{err}");
    }

    #[test]
    fn since_is_a_time_or_a_duration_back_from_now() {
        let now = datetime!(2024-05-10 12:00:00 UTC);
        assert_eq!(
            parse_since("2024-05-01T00:00:00Z", now),
            Ok(datetime!(2024-05-01 00:00:00 UTC))
        );
        assert_eq!(
            parse_since("2024-05-01T02:00:00+02:00", now),
            Ok(datetime!(2024-05-01 00:00:00 UTC))
        );
        assert_eq!(
            parse_since("24h", now),
            Ok(datetime!(2024-05-09 12:00:00 UTC))
        );
        assert_eq!(
            parse_since("1d12h", now),
            Ok(datetime!(2024-05-09 00:00 UTC))
        );
        // Further back than the epoch: everything.
        assert_eq!(parse_since("9999999w", now), Ok(OffsetDateTime::UNIX_EPOCH));
        let err = parse_since("yesterday", now).unwrap_err().to_string();
        assert!(
            err.contains("RFC 3339") && err.contains("yesterday"),
            "{err}"
        );
        assert!(parse_since("2024-05-01", now).is_err());
    }
}
