//! `--format text`: the terminal report.
//!
//! Coverage comes first, because a clean result only means something when
//! the run saw the traffic (DESIGN non-negotiable 7). Then an aligned table
//! to scan, then each finding in full, grouped by kind, with everything a
//! developer needs to act: where, how often, which request, the SQL and the
//! fix. Normalized SQL is wrapped and, when very long, truncated; the JSON
//! format always carries it whole. Client text is escaped first
//! ([`escaped_report`]), so a request id cannot drive the terminal.

use std::fmt::Write as _;

use super::escape::escaped_report;
use super::{
    count_fact, coverage_warnings, ended_phrase, kind_facts, kind_heading, percent, timestamp,
    RenderOptions, Report, RunMeta,
};
use crate::finding::{Finding, FindingKind, Severity, Summary};

/// Width the wrapped values aim for, so a report reads in a terminal and
/// in a CI log without horizontal scrolling.
const WIDTH: usize = 100;
/// Indent of a finding's detail lines.
const INDENT: &str = "    ";
/// Width of the label column in a finding's details.
const LABEL: usize = 14;
/// Most lines of SQL shown per finding; the rest is elided.
const MAX_SQL_LINES: usize = 8;

/// Renders `report` for a terminal, ending in a newline. With `color`,
/// severities, headings and warnings get ANSI colours; alignment is the
/// same either way because padding is applied before colouring.
pub fn render_text(report: &Report, color: bool) -> String {
    render_text_with(
        report,
        &RenderOptions {
            color,
            ..RenderOptions::default()
        },
    )
}

/// [`render_text`] with every option: colour, and how many findings a
/// baseline suppressed (said under the findings count).
pub fn render_text_with(report: &Report, options: &RenderOptions) -> String {
    let p = Painter {
        color: options.color,
    };
    let report = &escaped_report(report);
    let mut out = String::new();
    header(&mut out, &p, &report.runs);
    coverage(&mut out, &p, &report.summary);
    overview(&mut out, &p, &report.findings);
    if options.baselined > 0 {
        let _ = writeln!(
            out,
            "  ({} baselined finding{} suppressed by --baseline)",
            options.baselined,
            if options.baselined == 1 { "" } else { "s" }
        );
    }
    for kind in FindingKind::ALL {
        let of_kind: Vec<&Finding> = report.findings.iter().filter(|f| f.kind == kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        let title = format!("{} [{}: {}]", kind_heading(kind), kind, of_kind.len());
        let _ = writeln!(out, "\n{}", p.paint(&title, BOLD));
        for f in of_kind {
            finding(&mut out, &p, f);
        }
    }
    out
}

const BOLD: &str = "1";
const DIM: &str = "2";
const RED_BOLD: &str = "1;31";
const YELLOW: &str = "33";
const CYAN: &str = "36";

/// Applies ANSI styles only when colour was asked for.
struct Painter {
    color: bool,
}

impl Painter {
    fn paint(&self, s: &str, style: &str) -> String {
        if self.color {
            format!("\x1b[{style}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    fn severity(&self, sev: Severity, padded: &str) -> String {
        let style = match sev {
            Severity::Error => RED_BOLD,
            Severity::Warning => YELLOW,
            Severity::Info => CYAN,
        };
        self.paint(padded, style)
    }
}

fn header(out: &mut String, p: &Painter, runs: &[RunMeta]) {
    let line = match runs {
        [] => "qproxy report: no runs recorded yet".to_string(),
        [run] => {
            let ended = ended_phrase(run);
            format!(
                "qproxy report: run {} on {} (pid {}, qproxy {})\nstarted {}, {}",
                run.id,
                run.host,
                run.pid,
                run.version,
                timestamp(run.started_at),
                ended
            )
        }
        [first, .., last] => format!(
            "qproxy report: {} runs ({})\nstarted {} to {}",
            runs.len(),
            run_ids(runs),
            timestamp(first.started_at),
            timestamp(last.started_at)
        ),
    };
    for (i, l) in line.lines().enumerate() {
        let _ = writeln!(
            out,
            "{}",
            if i == 0 {
                p.paint(l, BOLD)
            } else {
                l.to_string()
            }
        );
    }
}

/// Run ids, listed when few and as a range when many.
fn run_ids(runs: &[RunMeta]) -> String {
    if runs.len() <= 8 {
        let ids: Vec<String> = runs.iter().map(|r| r.id.to_string()).collect();
        format!("ids {}", ids.join(", "))
    } else {
        let lo = runs.iter().map(|r| r.id).min().unwrap_or(0);
        let hi = runs.iter().map(|r| r.id).max().unwrap_or(0);
        format!("ids {lo} to {hi}")
    }
}

fn coverage(out: &mut String, p: &Painter, s: &Summary) {
    let rows = [
        ("queries", s.queries.to_string()),
        ("fingerprints", s.fingerprints.to_string()),
        ("requests", s.requests.to_string()),
        ("correlated", percent(s.correlated_fraction)),
        ("parse failures", s.parse_failures.to_string()),
        ("dropped events", s.dropped_events.to_string()),
        ("findings lost", s.findings_lost.to_string()),
        ("verifications skipped", s.verifications_skipped.to_string()),
        (
            "catalog",
            if s.catalog.is_empty() {
                "unknown".into()
            } else {
                s.catalog.clone()
            },
        ),
    ];
    let label_w = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let value_w = rows.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let _ = writeln!(out, "\n{}", p.paint("Coverage", BOLD));
    for (label, value) in &rows {
        let row = format!("{label:<label_w$}  {value:>value_w$}");
        // A run that lost findings must not read like a clean one.
        let row = if *label == "findings lost" && s.findings_lost > 0 {
            p.paint(&row, RED_BOLD)
        } else {
            row
        };
        let _ = writeln!(out, "  {row}");
    }
    let warnings = coverage_warnings(s);
    if !warnings.is_empty() {
        let _ = writeln!(
            out,
            "\n  {}",
            p.paint(
                "WARNING: coverage is poor; a clean result does not mean clean queries",
                YELLOW
            )
        );
        for w in &warnings {
            for (i, line) in wrap(w, WIDTH - 6).iter().enumerate() {
                let bullet = if i == 0 { "  - " } else { "    " };
                let _ = writeln!(out, "  {bullet}{}", p.paint(line, YELLOW));
            }
        }
    }
}

fn overview(out: &mut String, p: &Painter, findings: &[Finding]) {
    if findings.is_empty() {
        let _ = writeln!(out, "\n{}", p.paint("No findings.", BOLD));
        return;
    }
    let count_of = |sev| findings.iter().filter(|f| f.severity == sev).count();
    let title = format!(
        "Findings: {} ({} error, {} warning, {} info)",
        findings.len(),
        count_of(Severity::Error),
        count_of(Severity::Warning),
        count_of(Severity::Info)
    );
    let _ = writeln!(out, "\n{}", p.paint(&title, BOLD));
    let header = ["SEVERITY", "KIND", "TABLE", "COUNT", "SEEN", "ID"];
    let rows: Vec<[String; 6]> = findings
        .iter()
        .map(|f| {
            [
                f.severity.as_str().to_string(),
                f.kind.as_str().to_string(),
                f.table.clone().unwrap_or_else(|| "-".into()),
                f.count.map_or_else(|| "-".into(), |c| c.to_string()),
                f.occurrences.to_string(),
                f.id.clone(),
            ]
        })
        .collect();
    let mut w = header.map(str::len);
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            w[i] = w[i].max(cell.chars().count());
        }
    }
    let head = format!(
        "  {:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}  {}",
        header[0],
        header[1],
        header[2],
        header[3],
        header[4],
        header[5],
        w0 = w[0],
        w1 = w[1],
        w2 = w[2],
        w3 = w[3],
        w4 = w[4]
    );
    let _ = writeln!(out, "{}", p.paint(&head, DIM));
    for (f, row) in findings.iter().zip(&rows) {
        let sev = p.severity(f.severity, &format!("{:<w0$}", row[0], w0 = w[0]));
        let _ = writeln!(
            out,
            "  {sev}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}  {}",
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4]
        );
    }
}

fn finding(out: &mut String, p: &Painter, f: &Finding) {
    let sev = p.severity(f.severity, &f.severity.as_str().to_uppercase());
    let mut place = f
        .table
        .clone()
        .unwrap_or_else(|| "(no single table)".into());
    if !f.columns.is_empty() {
        let _ = write!(place, " ({})", f.columns.join(", "));
    }
    let _ = writeln!(out, "\n  {sev}  {place}  {}", p.paint(&f.id, DIM));

    if let Some((label, value)) = count_fact(f) {
        field(out, p, label, &value);
    }
    let seen = format!(
        "{} {}, {} to {}",
        f.occurrences,
        plural(f.occurrences, "time", "times"),
        timestamp(f.first_seen),
        timestamp(f.last_seen)
    );
    field(out, p, "seen", &seen);
    if let Some(r) = &f.request {
        let mut how = Vec::new();
        if let Some(id) = &r.id {
            how.push(format!("request {id}"));
        }
        if let Some(c) = &r.correlation {
            how.push(format!("grouped by {c}"));
        }
        let value = match (&r.route, how.is_empty()) {
            (Some(route), true) => route.clone(),
            (Some(route), false) => format!("{route} ({})", how.join(", ")),
            (None, _) => how.join(", "),
        };
        field(out, p, "request", &value);
    }
    if let Some(rows) = f.rows {
        field(out, p, "rows max", &rows.max.to_string());
    }
    if let Some(db) = &f.database {
        field(out, p, "database", db);
    }
    for (label, value) in kind_facts(f) {
        field(out, p, label, &value);
    }
    field(out, p, "fingerprint", &f.fingerprint);
    sql_field(out, p, "query", &f.query);
    if let Some(parent) = &f.parent {
        field(out, p, "parent", &parent.fingerprint);
        sql_field(out, p, "parent query", &parent.query);
    }
    if let Some(s) = &f.suggestion {
        field(out, p, "suggestion", s);
    }
}

fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// Writes `label  value` with the value wrapped and continuation lines
/// aligned under its first line.
fn field(out: &mut String, p: &Painter, label: &str, value: &str) {
    write_lines(out, p, label, &wrap(value, WIDTH - INDENT.len() - LABEL));
}

/// Like [`field`] for SQL, elided past [`MAX_SQL_LINES`].
fn sql_field(out: &mut String, p: &Painter, label: &str, sql: &str) {
    let mut lines = wrap(sql, WIDTH - INDENT.len() - LABEL);
    if lines.len() > MAX_SQL_LINES {
        let hidden: usize = lines[MAX_SQL_LINES..].iter().map(|l| l.len() + 1).sum();
        lines.truncate(MAX_SQL_LINES);
        lines.push(format!(
            "... ({hidden} more characters; --format json has the whole statement)"
        ));
    }
    write_lines(out, p, label, &lines);
}

fn write_lines(out: &mut String, p: &Painter, label: &str, lines: &[String]) {
    for (i, line) in lines.iter().enumerate() {
        let l = if i == 0 { label } else { "" };
        let padded = format!("{l:<LABEL$}");
        let _ = writeln!(out, "{INDENT}{}{line}", p.paint(&padded, DIM));
    }
}

/// Wraps text at whitespace to `width` columns, keeping explicit line
/// breaks (DDL suggestions use them) and splitting words longer than a
/// line.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(10);
    let mut lines = Vec::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            let mut word = word;
            while word.chars().count() > width {
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                }
                let cut = word
                    .char_indices()
                    .nth(width)
                    .map_or(word.len(), |(i, _)| i);
                lines.push(word[..cut].to_string());
                word = &word[cut..];
            }
            let needed =
                line.chars().count() + usize::from(!line.is_empty()) + word.chars().count();
            if needed > width && !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            if !word.is_empty() {
                if !line.is_empty() {
                    line.push(' ');
                }
                line.push_str(word);
            }
        }
        lines.push(line);
    }
    if lines.is_empty() {
        lines.push(String::new());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wrap_keeps_breaks_and_splits_long_words() {
        assert_eq!(wrap("a b c", 20), ["a b c"]);
        assert_eq!(wrap("aaaa bbbb cccc", 10), ["aaaa bbbb", "cccc"]);
        assert_eq!(wrap("x\ny", 20), ["x", "y"]);
        let long = "z".repeat(25);
        assert_eq!(
            wrap(&long, 10),
            ["z".repeat(10), "z".repeat(10), "z".repeat(5)]
        );
        assert_eq!(wrap("", 10), [""]);
    }
}
