//! How large a share of a table a filter selects, from the column
//! statistics of the catalog (`pg_stats`), the way PostgreSQL's planner
//! estimates it, and what that means for the suggested index.
//!
//! # Estimates (per column)
//! - `= literal`: its frequency when it is one of the most common values
//!   (`mcv`); otherwise the rows outside the most common values shared
//!   evenly among the other distinct values, never more than the least
//!   common listed value (`n_distinct`).
//! - `= $n` (or any value unknown here): `(1 - null_frac) / n_distinct`,
//!   the planner's estimate for a generic plan (`n_distinct`).
//! - `IN (..)`: the sum over the values.
//! - `<`, `>`, `BETWEEN` with literals, on numeric and date/time columns:
//!   the most common values on that side plus the histogram's share
//!   (`histogram`). Text ranges depend on the collation and are not
//!   estimated.
//! - `IS NULL`: `null_frac`.
//! - Anything else, or no statistics: PostgreSQL's defaults (0.5 % for an
//!   equality, a third for one inequality, 0.5 % for a range with both
//!   ends), marked `default`. A default never holds a suggestion back.
//!
//! Several predicates on one column take the smallest estimate (a lower
//! and an upper bound together make a range); columns combine by product,
//! as the planner assumes them independent.
//!
//! # Verdicts
//! - A column whose statistics say it selects more than
//!   `unselective_fraction` (20 %) of the rows is left out of the
//!   suggested key when another key column (or a join key) narrows the
//!   scan: an index on it would not be used for that predicate.
//! - When every filter column has statistics and together they still
//!   select more than that share, the filter is *unselective*: the
//!   planner reads the table whole with or without an index, so the
//!   finding is held back, and reported only if hypopg shows the planner
//!   would use the index after all (see `UnindexedIssue::withheld`).
//! - A literal equality on a skewed column (its most common value covers
//!   at least half of the rows) that matches a rare most-common value
//!   (at most `unselective_fraction`) makes the suggestion a partial
//!   index `WHERE column = $n`: it indexes only the rows the query wants.
//!   The value is data and is never printed; the suggestion shows the
//!   statement's placeholder, and the details give the value's frequency.

use serde_json::{json, Map, Value};

use super::facts::{Compared, Operand, PredKind, SourceFacts, Test};
use crate::catalog::{ColumnStats, Table};

/// PostgreSQL's `DEFAULT_EQ_SEL`.
const DEFAULT_EQ: f64 = 0.005;
/// PostgreSQL's `DEFAULT_INEQ_SEL`.
const DEFAULT_INEQ: f64 = 1.0 / 3.0;
/// PostgreSQL's `DEFAULT_RANGE_INEQ_SEL`.
const DEFAULT_RANGE: f64 = 0.005;
/// A column whose most common value covers this share of the rows is
/// skewed: a plain index on it would spend most entries on rows a query
/// for a rare value never reads.
const SKEWED_MOST_COMMON: f64 = 0.5;

/// Where an estimate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Basis {
    /// The value is a most common value (or the list covers every value).
    Mcv,
    /// From the number of distinct values.
    NDistinct,
    /// From the histogram of the other values.
    Histogram,
    /// The share of NULLs.
    NullFrac,
    /// No statistics apply: PostgreSQL's default.
    Default,
}

impl Basis {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Basis::Mcv => "mcv",
            Basis::NDistinct => "n_distinct",
            Basis::Histogram => "histogram",
            Basis::NullFrac => "null_frac",
            Basis::Default => "default",
        }
    }
}

/// An estimated share of the table's rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Estimate {
    pub fraction: f64,
    pub basis: Basis,
}

impl Estimate {
    fn new(fraction: f64, basis: Basis) -> Estimate {
        Estimate {
            fraction: fraction.clamp(0.0, 1.0),
            basis,
        }
    }

    fn default_for(fraction: f64) -> Estimate {
        Estimate::new(fraction, Basis::Default)
    }

    /// From statistics rather than a default.
    pub(crate) fn known(&self) -> bool {
        self.basis != Basis::Default
    }

    fn to_json(self) -> Value {
        json!({
            "estimated_fraction": round(self.fraction),
            "source": self.basis.as_str(),
        })
    }
}

/// Four significant decimals, so details read well and stay stable.
fn round(f: f64) -> f64 {
    (f * 10_000.0).round() / 10_000.0
}

/// The rare value a partial index should be restricted to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Partial {
    pub column: String,
    /// The value as SQL (a quoted string, a number, `true`/`false`): for
    /// hypopg only, never shown.
    pub literal_sql: String,
    /// Its share of the rows.
    pub frequency: f64,
    /// The column's most common value's share.
    pub most_common: f64,
}

/// What the statistics say about one source's filter.
#[derive(Debug, Clone, Default)]
pub(crate) struct FilterPlan {
    /// Every filtered column with its estimate, in predicate order.
    pub columns: Vec<(String, Estimate)>,
    /// Columns whose own estimate is over the threshold.
    pub unselective: Vec<String>,
    /// The partial-index predicate, if one applies.
    pub partial: Option<Partial>,
    /// The combined estimate when every filter column has statistics and
    /// together they select more than the threshold (and no partial
    /// index applies): the whole filter is unselective.
    pub whole: Option<Estimate>,
}

impl FilterPlan {
    /// Reads one source's filter against its table's statistics.
    pub(crate) fn new(table: &Table, source: &SourceFacts<'_>, threshold: f64) -> FilterPlan {
        let mut plan = FilterPlan::default();
        for p in &source.predicates {
            let Some(column) = p.target.column() else {
                continue;
            };
            // A boolean without statistics is no filter (about half the
            // table matches; see `evaluate.rs`).
            let boolean_unknown = table
                .column(column)
                .is_some_and(|c| c.type_name == "boolean" && c.stats.is_none());
            if boolean_unknown || plan.columns.iter().any(|(c, _)| c == column) {
                continue;
            }
            let tests: Vec<&Test> = source
                .compared
                .iter()
                .filter(|c| c.column == column)
                .map(|c| &c.test)
                .collect();
            let fallback = match p.kind {
                PredKind::Eq { .. } | PredKind::IsNull => DEFAULT_EQ,
                PredKind::Range | PredKind::Prefix => DEFAULT_INEQ,
            };
            plan.columns.push((
                column.to_owned(),
                column_estimate(table, column, &tests, fallback),
            ));
        }
        plan.unselective = plan
            .columns
            .iter()
            .filter(|(_, e)| e.known() && e.fraction > threshold)
            .map(|(c, _)| c.clone())
            .collect();
        plan.partial = source
            .compared
            .iter()
            .filter_map(|c| partial_candidate(table, c, threshold))
            .min_by(|a, b| a.frequency.total_cmp(&b.frequency));
        if plan.partial.is_none() && plan.columns.iter().all(|(_, e)| e.known()) {
            let combined = plan.combined();
            if !plan.columns.is_empty() && combined.fraction > threshold {
                plan.whole = Some(combined);
            }
        }
        plan
    }

    /// The product of the column estimates; its basis is the most
    /// selective known column's, or `default` when none is known.
    pub(crate) fn combined(&self) -> Estimate {
        let fraction = self.columns.iter().map(|(_, e)| e.fraction).product();
        let basis = self
            .columns
            .iter()
            .filter(|(_, e)| e.known())
            .min_by(|a, b| a.1.fraction.total_cmp(&b.1.fraction))
            .map_or(Basis::Default, |(_, e)| e.basis);
        Estimate::new(fraction, basis)
    }

    /// Whether the table has statistics for any filtered column: only
    /// then do the details carry a `selectivity` entry.
    pub(crate) fn has_stats(&self, table: &Table) -> bool {
        self.columns
            .iter()
            .any(|(c, _)| table.column(c).is_some_and(|c| c.stats.is_some()))
    }

    /// The `selectivity` details: the combined estimate, each column's,
    /// and the columns left out of the key.
    pub(crate) fn details(&self, left_out: &[String]) -> Value {
        let mut columns = Map::new();
        for (c, e) in &self.columns {
            columns.insert(c.clone(), e.to_json());
        }
        let mut out = match self.combined().to_json() {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        out.insert("columns".into(), Value::Object(columns));
        if !left_out.is_empty() {
            out.insert("left_out".into(), json!(left_out));
        }
        Value::Object(out)
    }
}

/// `column = literal` where the literal is a rare most common value of a
/// skewed column whose type's equality is built in and whose value can be
/// written back as SQL safely.
fn partial_candidate(table: &Table, c: &Compared, threshold: f64) -> Option<Partial> {
    let Test::AnyOf(values) = &c.test else {
        return None;
    };
    let [Operand::Literal(value)] = &values[..] else {
        return None;
    };
    let column = table.column(&c.column)?;
    let stats = column.stats.as_ref()?;
    let most_common = stats.most_common.first()?.1;
    let frequency = mcv_frequency(stats, value, numeric(&column.type_name))?;
    if most_common < SKEWED_MOST_COMMON || frequency > threshold {
        return None;
    }
    Some(Partial {
        column: c.column.clone(),
        literal_sql: literal_sql(&column.type_name, value)?,
        frequency,
        most_common,
    })
}

/// The value as an SQL literal of a type whose `=` is PostgreSQL's own:
/// text-like, integer or boolean. `None` for anything else (an enum or a
/// domain's operators could be user code; a value with a backslash or a
/// control character is not worth the quoting risk).
fn literal_sql(type_name: &str, value: &str) -> Option<String> {
    let integer = matches!(type_name, "smallint" | "integer" | "bigint");
    let text = type_name == "text" || type_name.starts_with("character varying");
    if integer {
        value.parse::<i64>().ok().map(|n| n.to_string())
    } else if type_name == "boolean" {
        match value {
            "t" => Some("true".into()),
            "f" => Some("false".into()),
            _ => None,
        }
    } else if text && !value.chars().any(|c| c == '\\' || c.is_control()) {
        Some(format!("'{}'", value.replace('\'', "''")))
    } else {
        None
    }
}

/// One column's estimate over every test on it; `fallback` when there is
/// none to read.
fn column_estimate(table: &Table, column: &str, tests: &[&Test], fallback: f64) -> Estimate {
    let col = table.column(column);
    let stats = col.and_then(|c| c.stats.as_ref());
    let scalar_of = |text: &str| col.and_then(|c| scalar(&c.type_name, text));
    let rows = table.estimated_rows();
    let mut best: Option<Estimate> = None;
    let keep = |e: Estimate, best: &mut Option<Estimate>| {
        if best.is_none_or(|b| e.fraction < b.fraction) {
            *best = Some(e);
        }
    };
    for t in tests {
        let e =
            match (t, stats) {
                (Test::IsNull, Some(s)) => Estimate::new(s.null_frac, Basis::NullFrac),
                (Test::IsNull, None) => Estimate::default_for(DEFAULT_EQ),
                (Test::AnyOf(values), Some(s)) => {
                    any_of(s, values, rows, col.map(|c| &c.type_name[..]))
                }
                (Test::AnyOf(values), None) => {
                    Estimate::default_for(DEFAULT_EQ * values.len().max(1) as f64)
                }
                (Test::Below(v), _) => below(stats, v, &scalar_of)
                    .unwrap_or_else(|| Estimate::default_for(DEFAULT_INEQ)),
                (Test::Above(v), _) => above(stats, v, &scalar_of)
                    .unwrap_or_else(|| Estimate::default_for(DEFAULT_INEQ)),
                (Test::Between(lo, hi), _) => between(stats, lo, hi, &scalar_of)
                    .unwrap_or_else(|| Estimate::default_for(DEFAULT_RANGE)),
            };
        keep(e, &mut best);
    }
    // A lower and an upper bound on the same column: one range.
    let lower = tests.iter().find_map(|t| match t {
        Test::Above(v) => Some(v),
        _ => None,
    });
    let upper = tests.iter().find_map(|t| match t {
        Test::Below(v) => Some(v),
        _ => None,
    });
    if let (Some(lo), Some(hi)) = (lower, upper) {
        let e = between(stats, lo, hi, &scalar_of)
            .unwrap_or_else(|| Estimate::default_for(DEFAULT_RANGE));
        keep(e, &mut best);
    }
    best.unwrap_or_else(|| Estimate::default_for(fallback))
}

/// `= v1 OR = v2 ...`: the sum of the values' estimates.
fn any_of(s: &ColumnStats, values: &[Operand], rows: f64, type_name: Option<&str>) -> Estimate {
    let numeric = type_name.is_some_and(numeric);
    let mut fraction = 0.0;
    let mut basis = Basis::Mcv;
    for v in values {
        let one = match v {
            Operand::Literal(text) => match mcv_frequency(s, text, numeric) {
                Some(f) => Estimate::new(f, Basis::Mcv),
                None => match other_value(s, rows) {
                    Some(e) => e,
                    None => return Estimate::default_for(DEFAULT_EQ * values.len() as f64),
                },
            },
            Operand::Unknown => match s.distinct_values(rows) {
                Some(n) => Estimate::new((1.0 - s.null_frac) / n, Basis::NDistinct),
                None => return Estimate::default_for(DEFAULT_EQ * values.len() as f64),
            },
        };
        if one.basis != Basis::Mcv {
            basis = one.basis;
        }
        fraction += one.fraction;
    }
    if values.is_empty() {
        return Estimate::default_for(DEFAULT_EQ);
    }
    Estimate::new(fraction, basis)
}

/// The frequency of `value` when it is a most common value.
fn mcv_frequency(s: &ColumnStats, value: &str, numeric: bool) -> Option<f64> {
    let same = |m: &str| {
        m == value
            || (numeric
                && matches!((m.parse::<f64>(), value.parse::<f64>()), (Ok(a), Ok(b)) if a == b))
    };
    s.most_common.iter().find(|(m, _)| same(m)).map(|(_, f)| *f)
}

/// A value that is not among the most common: the rest of the non-NULL
/// rows spread over the other distinct values (PostgreSQL's `var_eq_const`),
/// at most the least common listed value's frequency. When the list covers
/// every distinct value, a value outside it matches (almost) nothing.
fn other_value(s: &ColumnStats, rows: f64) -> Option<Estimate> {
    let rest = (1.0 - s.null_frac - s.most_common_total).max(0.0);
    let n = s.distinct_values(rows)?;
    let others = n - s.most_common_count as f64;
    if others < 1.0 {
        return Some(Estimate::new(rest.min(1.0 / rows.max(1.0)), Basis::Mcv));
    }
    let mut f = rest / others;
    if let Some(least) = s.most_common.iter().map(|(_, f)| *f).reduce(f64::min) {
        f = f.min(least);
    }
    Some(Estimate::new(f, Basis::NDistinct))
}

/// Share of the rows below `v` (strictly or not: the difference is one
/// value, which no verdict here depends on).
fn below(
    s: Option<&ColumnStats>,
    v: &Operand,
    scalar_of: &dyn Fn(&str) -> Option<f64>,
) -> Option<Estimate> {
    let (s, x) = (s?, literal_scalar(v, scalar_of)?);
    // Most common values below, counted exactly.
    let mut mcv = 0.0;
    for (m, f) in &s.most_common {
        if scalar_of(m)? < x {
            mcv += f;
        }
    }
    let rest = (1.0 - s.null_frac - s.most_common_total).max(0.0);
    if s.histogram.len() < 2 {
        // Without a histogram only a list that covers every value answers.
        return (rest < 0.01).then(|| Estimate::new(mcv, Basis::Mcv));
    }
    let bounds: Vec<f64> = s
        .histogram
        .iter()
        .map(|b| scalar_of(b))
        .collect::<Option<_>>()?;
    Some(Estimate::new(
        mcv + rest * histogram_below(&bounds, x),
        Basis::Histogram,
    ))
}

fn above(
    s: Option<&ColumnStats>,
    v: &Operand,
    scalar_of: &dyn Fn(&str) -> Option<f64>,
) -> Option<Estimate> {
    let b = below(s, v, scalar_of)?;
    let non_null = 1.0 - s.map_or(0.0, |s| s.null_frac);
    Some(Estimate::new(non_null - b.fraction, b.basis))
}

fn between(
    s: Option<&ColumnStats>,
    lo: &Operand,
    hi: &Operand,
    scalar_of: &dyn Fn(&str) -> Option<f64>,
) -> Option<Estimate> {
    let low = below(s, lo, scalar_of)?;
    let high = below(s, hi, scalar_of)?;
    Some(Estimate::new(high.fraction - low.fraction, high.basis))
}

fn literal_scalar(v: &Operand, scalar_of: &dyn Fn(&str) -> Option<f64>) -> Option<f64> {
    match v {
        Operand::Literal(text) => scalar_of(text),
        Operand::Unknown => None,
    }
}

/// Where `x` falls in an equi-depth histogram, as a share of its rows,
/// interpolating linearly inside the bucket (PostgreSQL's
/// `ineq_histogram_selectivity`).
fn histogram_below(bounds: &[f64], x: f64) -> f64 {
    let buckets = (bounds.len() - 1) as f64;
    let Some(i) = bounds.windows(2).position(|w| x < w[1]) else {
        return 1.0;
    };
    if x <= bounds[0] {
        return 0.0;
    }
    let (lo, hi) = (bounds[i], bounds[i + 1]);
    let inside = if hi > lo { (x - lo) / (hi - lo) } else { 0.5 };
    (i as f64 + inside.clamp(0.0, 1.0)) / buckets
}

fn numeric(type_name: &str) -> bool {
    matches!(
        type_name,
        "smallint" | "integer" | "bigint" | "real" | "double precision"
    ) || type_name.starts_with("numeric")
}

/// A value of a numeric or date/time column as a number that orders like
/// the value: the number itself, or seconds since 1970 for `date` and
/// `timestamp` text in ISO form (the time zone is ignored: an hour's error
/// does not move an estimate that matters). `None` for other types.
fn scalar(type_name: &str, text: &str) -> Option<f64> {
    if numeric(type_name) {
        return text.trim().parse::<f64>().ok().filter(|f| f.is_finite());
    }
    if type_name == "date" || type_name.starts_with("timestamp") {
        return iso_seconds(text.trim());
    }
    None
}

/// `YYYY-MM-DD[( |T)HH:MM[:SS[.fff]]][zone]` → seconds since 1970-01-01.
fn iso_seconds(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut seconds = days_from_civil(y, m, d) as f64 * 86_400.0;
    if b.len() >= 16 && matches!(b[10], b' ' | b'T') && b[13] == b':' {
        seconds += (num(11..13)? * 3600 + num(14..16)? * 60) as f64;
        if b.len() >= 19 && b[16] == b':' {
            seconds += num(17..19)? as f64;
        }
    }
    Some(seconds)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_order_like_dates() {
        assert_eq!(iso_seconds("1970-01-01"), Some(0.0));
        assert_eq!(iso_seconds("1970-01-02 00:00:00+00"), Some(86_400.0));
        assert_eq!(iso_seconds("2000-03-01T01:00"), Some(951_872_400.0));
        assert!(iso_seconds("2024-01-01") < iso_seconds("2024-01-01 00:00:01"));
        assert_eq!(iso_seconds("01/02/2024"), None);
        assert_eq!(iso_seconds("2024-13-01"), None);
        assert_eq!(iso_seconds("2024-1-01"), None);
        assert_eq!(iso_seconds("+024-01-01"), None);
    }

    #[test]
    fn histogram_interpolates_inside_buckets() {
        let bounds = [0.0, 10.0, 20.0, 40.0, 100.0];
        assert_eq!(histogram_below(&bounds, -5.0), 0.0);
        assert_eq!(histogram_below(&bounds, 0.0), 0.0);
        assert_eq!(histogram_below(&bounds, 5.0), 0.125);
        assert_eq!(histogram_below(&bounds, 30.0), 0.625);
        assert_eq!(histogram_below(&bounds, 100.0), 1.0);
        assert_eq!(histogram_below(&bounds, 1e9), 1.0);
    }

    #[test]
    fn literals_for_hypopg_are_only_plain_types_and_safe_values() {
        assert_eq!(literal_sql("text", "new").as_deref(), Some("'new'"));
        assert_eq!(literal_sql("text", "it's").as_deref(), Some("'it''s'"));
        assert_eq!(
            literal_sql("character varying(20)", "a b").as_deref(),
            Some("'a b'")
        );
        assert_eq!(literal_sql("text", "a\\b"), None);
        assert_eq!(literal_sql("text", "a\nb"), None);
        assert_eq!(literal_sql("integer", "42").as_deref(), Some("42"));
        assert_eq!(literal_sql("integer", "4 2"), None);
        assert_eq!(literal_sql("boolean", "f").as_deref(), Some("false"));
        assert_eq!(literal_sql("order_status", "new"), None);
        assert_eq!(literal_sql("jsonb", "{}"), None);
    }
}
