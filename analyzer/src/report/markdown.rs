//! `--format markdown`: a pull-request comment or CI job summary
//! (GitHub-flavoured markdown).
//!
//! Reviewers skim, so the page is short on top (coverage, one table of
//! findings) and each finding's SQL and suggestion sit in a collapsed
//! `<details>` block. Everything that came from the database (SQL, table
//! and route names) is escaped for where it lands: code spans and fences
//! are sized to the backticks inside them, table cells escape `|`, and
//! text inside HTML tags is HTML-escaped; before all that, control and
//! bidi characters become visible escapes ([`escaped_report`]), so a route
//! cannot reorder what a reviewer reads. Comments have a size limit, so
//! very long SQL is cut and only the first findings get details.

use std::fmt::Write as _;

use super::escape::escaped_report;
use super::{
    count_fact, coverage_warnings, escape_markup, finding_sentence, kind_facts, percent, runs_line,
    timestamp, RenderOptions, Report,
};
use crate::finding::{Finding, Severity};

/// Most characters of one SQL statement shown; GitHub caps a comment at
/// 65 536 characters and a statement can be longer than that alone.
const MAX_SQL_CHARS: usize = 1500;
/// Findings shown with a details block; the table still lists them all.
const MAX_DETAILS: usize = 50;

/// Renders `report` as markdown, ending in a newline.
pub fn render_markdown(report: &Report, options: &RenderOptions) -> String {
    let report = &escaped_report(report);
    let mut out = String::new();
    let _ = writeln!(out, "## qproxy report\n");
    let _ = writeln!(out, "{}\n", text(&runs_line(&report.runs)));
    coverage(&mut out, report);
    findings_table(&mut out, report, options);
    let shown = report.findings.len().min(MAX_DETAILS);
    for f in &report.findings[..shown] {
        details(&mut out, f);
    }
    if report.findings.len() > shown {
        let _ = writeln!(
            out,
            "_{} more findings are in the table only; `--format html` or `--format json` \
             has all of them._\n",
            report.findings.len() - shown
        );
    }
    out
}

fn coverage(out: &mut String, report: &Report) {
    let s = &report.summary;
    let catalog = if s.catalog.is_empty() {
        "unknown"
    } else {
        &s.catalog
    };
    let _ = writeln!(out, "### Coverage\n");
    let _ = writeln!(
        out,
        "| queries | fingerprints | requests | correlated | parse failures | dropped events \
         | findings lost | verifications skipped | catalog |"
    );
    let _ = writeln!(
        out,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    // A run that lost findings must not read like a clean one.
    let lost = if s.findings_lost > 0 {
        format!("**{}**", s.findings_lost)
    } else {
        "0".to_string()
    };
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} | {lost} | {} | {} |\n",
        s.queries,
        s.fingerprints,
        s.requests,
        percent(s.correlated_fraction),
        s.parse_failures,
        s.dropped_events,
        s.verifications_skipped,
        cell(catalog)
    );
    let warnings = coverage_warnings(s);
    if !warnings.is_empty() {
        let _ = writeln!(out, "> [!WARNING]");
        let _ = writeln!(
            out,
            "> **Coverage is poor; a clean result does not mean clean queries.**"
        );
        for w in &warnings {
            let _ = writeln!(out, "> - {}", text(w));
        }
        out.push('\n');
    }
}

fn findings_table(out: &mut String, report: &Report, options: &RenderOptions) {
    let fs = &report.findings;
    let count_of = |sev| fs.iter().filter(|f| f.severity == sev).count();
    if fs.is_empty() {
        let _ = writeln!(out, "### No findings\n");
    } else {
        let _ = writeln!(
            out,
            "### Findings: {} ({} error, {} warning, {} info)\n",
            fs.len(),
            count_of(Severity::Error),
            count_of(Severity::Warning),
            count_of(Severity::Info)
        );
    }
    if options.baselined > 0 {
        let _ = writeln!(
            out,
            "_{} baselined finding{} suppressed by `--baseline`._\n",
            options.baselined,
            if options.baselined == 1 { "" } else { "s" }
        );
    }
    if fs.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "| severity | kind | table | count | occurrences | id |"
    );
    let _ = writeln!(out, "| --- | --- | --- | ---: | ---: | --- |");
    for f in fs {
        let severity = match f.severity {
            Severity::Error => "**error**",
            other => other.as_str(),
        };
        let _ = writeln!(
            out,
            "| {severity} | {} | {} | {} | {} | {} |",
            cell(&code(f.kind.as_str())),
            f.table
                .as_deref()
                .map_or_else(|| "-".into(), |t| cell(&code(t))),
            f.count.map_or_else(|| "-".into(), |c| c.to_string()),
            f.occurrences,
            cell(&code(&f.id))
        );
    }
    out.push('\n');
}

fn details(out: &mut String, f: &Finding) {
    let place = f.table.as_deref().unwrap_or("(no single table)");
    let _ = writeln!(
        out,
        "<details>\n<summary><b>{}</b> {} on <code>{}</code> <code>{}</code></summary>\n",
        f.severity.as_str(),
        f.kind.as_str(),
        escape_markup(place),
        escape_markup(&f.id)
    );
    let _ = writeln!(out, "{}\n", text(&finding_sentence(f)));
    let mut facts = Vec::new();
    if !f.columns.is_empty() {
        facts.push(format!("**Columns:** {}", code(&f.columns.join(", "))));
    }
    if let Some((label, value)) = count_fact(f) {
        facts.push(format!("**{}:** {}", capitalized(label), text(&value)));
    }
    facts.push(format!(
        "**Seen:** {} times, {} to {}",
        f.occurrences,
        timestamp(f.first_seen),
        timestamp(f.last_seen)
    ));
    if let Some(r) = &f.request {
        let mut parts = Vec::new();
        if let Some(route) = &r.route {
            parts.push(format!("route {}", code(route)));
        }
        if let Some(id) = &r.id {
            parts.push(format!("request {}", code(id)));
        }
        if let Some(c) = &r.correlation {
            parts.push(format!("grouped by {}", text(c)));
        }
        facts.push(format!("**Request:** {}", parts.join(", ")));
    }
    if let Some(rows) = f.rows {
        facts.push(format!("**Rows max:** {}", rows.max));
    }
    if let Some(db) = &f.database {
        facts.push(format!("**Database:** {}", code(db)));
    }
    for (label, value) in kind_facts(f) {
        facts.push(format!("**{}:** {}", capitalized(label), text(&value)));
    }
    facts.push(format!("**Fingerprint:** {}", code(&f.fingerprint)));
    // Two trailing spaces: a hard line break, one fact per line.
    let _ = writeln!(out, "{}\n", facts.join("  \n"));
    sql_block(out, &f.query);
    if let Some(parent) = &f.parent {
        let _ = writeln!(out, "**Parent query** {}:\n", code(&parent.fingerprint));
        sql_block(out, &parent.query);
    }
    if let Some(s) = &f.suggestion {
        let _ = writeln!(out, "**Suggestion:**\n");
        if s.contains('\n') || s.trim_start().to_ascii_uppercase().starts_with("CREATE ") {
            sql_block(out, s);
        } else {
            let _ = writeln!(out, "{}\n", text(s));
        }
    }
    let _ = writeln!(out, "</details>\n");
}

/// A fact label as a markdown label (`per request` → `Per request`).
fn capitalized(label: &str) -> String {
    let mut chars = label.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A ```sql fence longer than any backtick run inside, with the SQL cut at
/// [`MAX_SQL_CHARS`].
fn sql_block(out: &mut String, sql: &str) {
    let total = sql.chars().count();
    let mut body: String = sql.chars().take(MAX_SQL_CHARS).collect();
    if total > MAX_SQL_CHARS {
        let _ = write!(
            body,
            "\n-- ... ({} more characters; --format json has the whole statement)",
            total - MAX_SQL_CHARS
        );
    }
    let fence = "`".repeat((longest_backtick_run(&body) + 1).max(3));
    let _ = writeln!(out, "{fence}sql\n{body}\n{fence}\n");
}

fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// An inline code span that survives backticks in `s`: the delimiter is
/// one backtick longer than the longest run inside, padded with spaces
/// when `s` starts or ends with one. Line breaks become spaces.
fn code(s: &str) -> String {
    let s = s.replace(['\n', '\r'], " ");
    let ticks = "`".repeat(longest_backtick_run(&s) + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{s}{pad}{ticks}")
}

/// Escapes a value for a table cell: GFM splits cells on `|` even inside
/// code spans, so every pipe is backslash-escaped.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// Escapes prose so names and SQL fragments cannot become markup: ASCII
/// punctuation markdown gives meaning to is backslash-escaped, and line
/// breaks fold to spaces.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' | '~' | '!' | '&' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_outgrow_backticks_and_cells_escape_pipes() {
        assert_eq!(code("a"), "`a`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`x`"), "`` `x` ``");
        assert_eq!(cell(&code("a|b")), "`a\\|b`");
        assert_eq!(text("a|b <i>*x*</i>"), "a\\|b \\<i\\>\\*x\\*\\</i\\>");
    }

    #[test]
    fn sql_fences_outgrow_backticks_and_long_sql_is_cut() {
        let mut out = String::new();
        sql_block(&mut out, "SELECT '```' FROM t");
        assert!(
            out.starts_with("````sql\n") && out.ends_with("\n````\n\n"),
            "{out}"
        );
        let mut out = String::new();
        sql_block(&mut out, &"x".repeat(MAX_SQL_CHARS + 10));
        assert!(out.contains("(10 more characters;"), "{out}");
    }
}
