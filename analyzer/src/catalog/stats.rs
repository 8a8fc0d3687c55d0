//! What the planner knows about a column's data (`pg_stats`), cut down to
//! what estimates a predicate's selectivity: the share of NULLs, the number
//! of distinct values, the most common values with their frequencies, and
//! the histogram of the rest.
//!
//! The values are data. They are kept in memory only, to compare with the
//! literals of a statement the client sent; they never reach a finding, a
//! log, the store or a metric (DESIGN non-negotiable 4), and the `Debug`
//! form of [`ColumnStats`] shows how many there are, not what they are.
//!
//! `pg_stats` gives `most_common_vals` and `histogram_bounds` as `anyarray`;
//! the loader reads them as text (`::text`, cut at [`MAX_ARRAY_TEXT`]
//! bytes on the server) and [`parse_array`] reads the array literal back.

use std::fmt;

/// Most common values kept per column: PostgreSQL's default statistics
/// target (100) keeps at most this many, and a larger target adds values
/// that each cover less than 1 % of the table, which never changes a
/// verdict here.
pub const MAX_MOST_COMMON: usize = 100;

/// Histogram bounds kept per column (the default target's 101). A larger
/// histogram is thinned evenly: every bucket of an equi-depth histogram
/// holds the same share of rows, so every k-th bound is still one.
pub const MAX_HISTOGRAM_BOUNDS: usize = 101;

/// A value longer than this is not kept: PostgreSQL itself leaves values
/// over 1 kB out of its statistics, and a long value is a text or JSON
/// body that no status-like predicate compares with.
pub const MAX_VALUE_BYTES: usize = 200;

/// Bytes of each array's text the loader reads; the server cuts the rest,
/// so a column with a huge statistics target cannot blow up the load.
pub const MAX_ARRAY_TEXT: usize = 32 << 10;

/// `pg_stats` for one column, capped (see the constants).
#[derive(Clone, PartialEq, Default)]
pub struct ColumnStats {
    /// Share of rows whose value is NULL (`null_frac`).
    pub null_frac: f64,
    /// `n_distinct` as PostgreSQL keeps it: above zero a count of
    /// distinct values, below zero minus their share of the rows (so it
    /// scales with the table), zero when unknown.
    pub n_distinct: f64,
    /// Most common values (text output form) with their frequencies, most
    /// common first. Values over [`MAX_VALUE_BYTES`] are left out, but
    /// their frequency stays in [`ColumnStats::most_common_total`].
    pub most_common: Vec<(String, f64)>,
    /// The sum of every most-common frequency PostgreSQL listed, including
    /// values not kept: the rest of the non-NULL rows is what the
    /// histogram and the other distinct values describe.
    pub most_common_total: f64,
    /// How many most-common values PostgreSQL listed (kept or not).
    pub most_common_count: usize,
    /// Histogram bounds (text output form) of the values not in the
    /// most-common list, ascending; empty when there is none.
    pub histogram: Vec<String>,
}

/// One row of `pg_stats` as the loader reads it, every column as read
/// (NULL → `None`): the arrays as text cut at [`MAX_ARRAY_TEXT`], the
/// frequencies cut at [`MAX_MOST_COMMON`], their sum and count over the
/// whole list.
#[derive(Debug, Clone, Default)]
pub(crate) struct PgStatsRow<'a> {
    pub null_frac: Option<f64>,
    pub n_distinct: Option<f64>,
    pub most_common_vals: Option<&'a str>,
    pub most_common_freqs: Option<Vec<Option<f64>>>,
    pub most_common_total: Option<f64>,
    pub most_common_count: Option<i32>,
    pub histogram_bounds: Option<&'a str>,
}

impl fmt::Debug for ColumnStats {
    /// Counts and fractions only: the values are data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ColumnStats")
            .field("null_frac", &self.null_frac)
            .field("n_distinct", &self.n_distinct)
            .field("most_common", &self.most_common.len())
            .field("most_common_total", &self.most_common_total)
            .field("histogram_bounds", &self.histogram.len())
            .finish()
    }
}

impl ColumnStats {
    /// Builds the capped statistics from one row of the loader's
    /// `pg_stats` query. Arrays that do not parse count as absent.
    pub(crate) fn from_pg_stats(row: PgStatsRow<'_>) -> ColumnStats {
        let PgStatsRow {
            null_frac,
            n_distinct,
            most_common_vals,
            most_common_freqs,
            most_common_total,
            most_common_count,
            histogram_bounds,
        } = row;
        let freqs: Vec<f64> = most_common_freqs
            .unwrap_or_default()
            .into_iter()
            .map(|f| f.unwrap_or(0.0).clamp(0.0, 1.0))
            .collect();
        let values = most_common_vals.and_then(parse_array).unwrap_or_default();
        let mut most_common = Vec::new();
        for (value, freq) in values.into_iter().zip(&freqs) {
            if most_common.len() == MAX_MOST_COMMON {
                break;
            }
            if let Some(v) = value.filter(|v| v.len() <= MAX_VALUE_BYTES) {
                most_common.push((v, *freq));
            }
        }
        let bounds: Vec<String> = histogram_bounds
            .and_then(parse_array)
            .unwrap_or_default()
            .into_iter()
            .map(|b| b.filter(|b| b.len() <= MAX_VALUE_BYTES))
            .collect::<Option<_>>()
            .unwrap_or_default();
        ColumnStats {
            null_frac: null_frac.unwrap_or(0.0).clamp(0.0, 1.0),
            n_distinct: n_distinct.filter(|n| n.is_finite()).unwrap_or(0.0),
            most_common,
            most_common_total: most_common_total
                .filter(|t| t.is_finite())
                .unwrap_or_else(|| freqs.iter().sum())
                .clamp(0.0, 1.0),
            most_common_count: most_common_count
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(freqs.len()),
            histogram: thin(bounds, MAX_HISTOGRAM_BOUNDS),
        }
    }

    /// The number of distinct non-NULL values in a table of `rows` rows,
    /// `None` when PostgreSQL does not know.
    pub fn distinct_values(&self, rows: f64) -> Option<f64> {
        let n = if self.n_distinct < 0.0 {
            -self.n_distinct * rows
        } else {
            self.n_distinct
        };
        (n >= 1.0).then_some(n)
    }
}

/// Keeps `max` of `bounds`, first and last included, evenly spaced.
fn thin(bounds: Vec<String>, max: usize) -> Vec<String> {
    if bounds.len() <= max || max < 2 {
        return bounds;
    }
    let last = bounds.len() - 1;
    let keep: Vec<usize> = (0..max).map(|k| k * last / (max - 1)).collect();
    bounds
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.binary_search(i).is_ok())
        .map(|(_, b)| b)
        .collect()
}

/// Reads a one-dimensional array literal as PostgreSQL prints it
/// (`{a,"b c","d\"e",NULL}`): each element's text, `None` for NULL.
/// Text cut short by the loader's limit yields the elements that are
/// complete. Nested (multi-dimensional) arrays and anything that is not an
/// array literal give `None`.
pub fn parse_array(text: &str) -> Option<Vec<Option<String>>> {
    let mut chars = text.strip_prefix('{')?.chars().peekable();
    let mut out = Vec::new();
    if chars.peek() == Some(&'}') {
        return Some(out);
    }
    loop {
        let Some(&next) = chars.peek() else {
            // Cut short right after a comma.
            return Some(out);
        };
        let element = match next {
            '{' => return None,
            '"' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        // Cut short inside a quoted value: drop it.
                        None => return Some(out),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => value.push(c),
                            None => return Some(out),
                        },
                        Some(c) => value.push(c),
                    }
                }
                Some(value)
            }
            _ => {
                let mut value = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ',' || c == '}' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                if chars.peek().is_none() {
                    // Cut short: the value may be incomplete.
                    return Some(out);
                }
                (!value.eq_ignore_ascii_case("NULL")).then_some(value)
            }
        };
        out.push(element);
        match chars.next() {
            Some(',') => {}
            Some('}') => return Some(out),
            None => return Some(out),
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<Option<String>> {
        v.iter().map(|s| Some((*s).to_owned())).collect()
    }

    #[test]
    fn array_literals_read_back() {
        assert_eq!(parse_array("{}"), Some(vec![]));
        assert_eq!(parse_array("{new,done}"), Some(strings(&["new", "done"])));
        assert_eq!(
            parse_array(r#"{"a b","c,d","e\"f","g\\h",NULL,"NULL"}"#),
            Some(vec![
                Some("a b".into()),
                Some("c,d".into()),
                Some("e\"f".into()),
                Some("g\\h".into()),
                None,
                Some("NULL".into()),
            ])
        );
        assert_eq!(
            parse_array("{1,2.5,-3}"),
            Some(strings(&["1", "2.5", "-3"]))
        );
        assert_eq!(
            parse_array(r#"{"2024-01-01 00:00:00+00","2024-02-01 00:00:00+00"}"#),
            Some(strings(&[
                "2024-01-01 00:00:00+00",
                "2024-02-01 00:00:00+00"
            ]))
        );
    }

    #[test]
    fn text_cut_short_keeps_the_complete_elements() {
        assert_eq!(
            parse_array("{alpha,beta,gam"),
            Some(strings(&["alpha", "beta"]))
        );
        assert_eq!(parse_array(r#"{alpha,"be"#), Some(strings(&["alpha"])));
        assert_eq!(parse_array("{alpha,"), Some(strings(&["alpha"])));
        assert_eq!(parse_array("{"), Some(vec![]));
    }

    #[test]
    fn anything_else_is_not_an_array() {
        assert_eq!(parse_array(""), None);
        assert_eq!(parse_array("new,done"), None);
        assert_eq!(parse_array("{{1,2},{3,4}}"), None);
        assert_eq!(parse_array("[0:1]={1,2}"), None);
        assert_eq!(parse_array(r#"{"a"x}"#), None);
    }

    #[test]
    fn stats_are_capped_and_keep_the_dropped_share() {
        let long = "x".repeat(MAX_VALUE_BYTES + 1);
        let mcv = format!("{{new,{long},done}}");
        let s = ColumnStats::from_pg_stats(PgStatsRow {
            null_frac: Some(0.1),
            n_distinct: Some(-0.5),
            most_common_vals: Some(&mcv),
            most_common_freqs: Some(vec![Some(0.5), Some(0.2), Some(0.1)]),
            most_common_total: Some(0.85),
            most_common_count: Some(4),
            histogram_bounds: None,
        });
        assert_eq!(
            s.most_common,
            [("new".to_owned(), 0.5), ("done".to_owned(), 0.1)]
        );
        // The fourth value was beyond the frequencies read; its share counts.
        assert!((s.most_common_total - 0.85).abs() < 1e-9);
        assert_eq!(s.most_common_count, 4);
        assert_eq!(s.distinct_values(1000.0), Some(500.0));
        assert_eq!(ColumnStats::default().distinct_values(1000.0), None);

        let bounds: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
        let hist = format!("{{{}}}", bounds.join(","));
        let s = ColumnStats::from_pg_stats(PgStatsRow {
            histogram_bounds: Some(&hist),
            ..PgStatsRow::default()
        });
        assert_eq!(s.histogram.len(), MAX_HISTOGRAM_BOUNDS);
        assert_eq!(s.histogram.first().map(String::as_str), Some("0"));
        assert_eq!(s.histogram.last().map(String::as_str), Some("1000"));
        assert_eq!(s.histogram[50], "500");
    }

    #[test]
    fn nulls_and_garbage_give_empty_stats_not_a_panic() {
        let s = ColumnStats::from_pg_stats(PgStatsRow {
            n_distinct: Some(f64::NAN),
            most_common_vals: Some("not an array"),
            most_common_freqs: Some(vec![None, Some(7.0)]),
            most_common_total: Some(f64::INFINITY),
            most_common_count: Some(-3),
            histogram_bounds: Some("{{1,2}}"),
            ..PgStatsRow::default()
        });
        assert_eq!(s.n_distinct, 0.0);
        assert!(s.most_common.is_empty());
        assert!(s.histogram.is_empty());
        assert_eq!(s.most_common_count, 2);
        assert!((s.most_common_total - 1.0).abs() < 1e-9);
    }

    #[test]
    fn debug_shows_no_values() {
        let s = ColumnStats::from_pg_stats(PgStatsRow {
            n_distinct: Some(2.0),
            most_common_vals: Some("{secret-value,other}"),
            most_common_freqs: Some(vec![Some(0.9), Some(0.1)]),
            histogram_bounds: Some("{a-edge,z-edge}"),
            ..PgStatsRow::default()
        });
        let shown = format!("{s:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(!shown.contains("edge"), "{shown}");
        assert!(shown.contains("most_common: 2"), "{shown}");
    }
}
