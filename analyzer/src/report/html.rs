//! `--format html`: one self-contained page to attach to a CI run or open
//! from a sidecar's volume.
//!
//! Self-contained means no network: CSS is inline, charts are inline SVG
//! drawn here, and there is no script, font or image to fetch, so the page
//! renders the same offline and cannot leak anything by loading it. Every
//! string from the database (SQL, names, suggestions, details) goes
//! through [`escaped_report`] (control and bidi characters become visible
//! escapes) and [`escape_markup`], so a statement containing `<script>` is
//! shown, never run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::escape::escaped_report;
use super::{
    count_fact, coverage_warnings, escape_markup as esc, finding_sentence, kind_facts,
    kind_heading, percent, route_label, route_place, runs_line, source_fact, timestamp, trim,
    RenderOptions, Report,
};
use crate::finding::{Finding, FindingKind, Severity, SOURCE_KEY, TRACE_ID_KEY};

/// Fingerprints in the "top fingerprints" chart.
const TOP_FINGERPRINTS: usize = 10;
/// Characters of SQL after a fingerprint in a chart label, so labels fit
/// the label column.
const EXCERPT: usize = 28;

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1100px;padding:24px;color:#1f2328;background:#fff}
h1{margin:0 0 4px}h2{margin-top:32px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.sub{color:#59636e;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #d0d7de;border-radius:8px;padding:10px 14px;min-width:110px}
.card .n{font-size:22px;font-weight:600}.card .l{color:#59636e;font-size:12px}
.card.lost{border-color:#cf222e;background:#ffebe9}.card.lost .n{color:#cf222e}
.warn{border-left:4px solid #bf8700;background:#fff8c5;padding:8px 14px;margin:16px 0;border-radius:4px}
.note{color:#59636e;font-style:italic}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eaeef2}
td.num,th.num{text-align:right}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:10px;white-space:pre-wrap;word-break:break-word}
.finding{border:1px solid #d0d7de;border-radius:8px;padding:4px 16px 12px;margin:16px 0}
.finding h3{font-size:15px}.finding h3 small{color:#59636e;font-weight:400}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:8px 0}dt{color:#59636e}dd{margin:0}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600;color:#fff}
.error{background:#cf222e}.warning{background:#9a6700}.info{background:#0969da}
svg text{font:12px system-ui,sans-serif;fill:#1f2328}svg .bar{fill:#0969da}svg .bar.alt{fill:#8250df}
";

/// Renders `report` as one HTML document, ending in a newline.
pub fn render_html(report: &Report, options: &RenderOptions) -> String {
    let report = &escaped_report(report);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>qproxy report</title>\n<style>{STYLE}</style>\n</head>\n<body>"
    );
    let _ = writeln!(out, "<h1>qproxy report</h1>");
    let _ = writeln!(
        out,
        "<p class=\"sub\">{}</p>",
        esc(&runs_line(&report.runs))
    );
    coverage(&mut out, report, options);
    charts(&mut out, report);
    findings(&mut out, report, options);
    routes(&mut out, report);
    out.push_str("</body>\n</html>\n");
    out
}

fn coverage(out: &mut String, report: &Report, options: &RenderOptions) {
    let s = &report.summary;
    let fs = &report.findings;
    let count_of = |sev| fs.iter().filter(|f| f.severity == sev).count().to_string();
    let cards = [
        ("findings", fs.len().to_string()),
        ("errors", count_of(Severity::Error)),
        ("warnings", count_of(Severity::Warning)),
        ("info", count_of(Severity::Info)),
        ("baselined", options.baselined.to_string()),
        ("queries", s.queries.to_string()),
        ("fingerprints", s.fingerprints.to_string()),
        ("requests", s.requests.to_string()),
        ("correlated", percent(s.correlated_fraction)),
        ("parse failures", s.parse_failures.to_string()),
        ("dropped events", s.dropped_events.to_string()),
        ("findings lost", s.findings_lost.to_string()),
        ("verifications skipped", s.verifications_skipped.to_string()),
        ("catalog", s.catalog.clone()),
    ];
    let _ = writeln!(out, "<h2>Coverage</h2>\n<div class=\"cards\">");
    for (label, value) in cards {
        // A run that lost findings must not read like a clean one.
        let class = if label == "findings lost" && s.findings_lost > 0 {
            "card lost"
        } else {
            "card"
        };
        let _ = writeln!(
            out,
            "<div class=\"{class}\"><div class=\"n\">{}</div><div class=\"l\">{label}</div></div>",
            esc(&value)
        );
    }
    let _ = writeln!(out, "</div>");
    let warnings = coverage_warnings(s);
    if !warnings.is_empty() {
        let _ = writeln!(
            out,
            "<div class=\"warn\"><strong>Coverage is poor; a clean result does not mean clean \
             queries.</strong>\n<ul>"
        );
        for w in warnings {
            let _ = writeln!(out, "<li>{}</li>", esc(&w));
        }
        let _ = writeln!(out, "</ul></div>");
    }
}

fn charts(out: &mut String, report: &Report) {
    if report.findings.is_empty() {
        return;
    }
    let by_kind: Vec<(String, f64)> = FindingKind::ALL
        .into_iter()
        .map(|k| {
            let n = report.findings.iter().filter(|f| f.kind == k).count();
            (k.as_str().to_string(), n as f64)
        })
        .collect();
    let _ = writeln!(out, "<h2>Findings by kind</h2>");
    out.push_str(&bar_chart("Findings by kind", &by_kind, "bar"));

    let (title, top) = top_fingerprints(&report.findings);
    let _ = writeln!(out, "<h2>{}</h2>", esc(title));
    out.push_str(&bar_chart(title, &top, "bar alt"));
}

/// The fingerprints with the most total time, when findings recorded it
/// (`details.total_duration_ms`); otherwise the most executions, ranked by
/// count × occurrences. Returns the chart title saying which.
fn top_fingerprints(findings: &[Finding]) -> (&'static str, Vec<(String, f64)>) {
    let timed = findings.iter().any(|f| duration_ms(f).is_some());
    let mut totals: BTreeMap<&str, (f64, &str)> = BTreeMap::new();
    for f in findings {
        let value = if timed {
            duration_ms(f).unwrap_or(0.0)
        } else {
            (f.count.unwrap_or(1) * f.occurrences) as f64
        };
        let entry = totals.entry(&f.fingerprint).or_insert((0.0, &f.query));
        entry.0 += value;
    }
    let mut top: Vec<(String, f64)> = totals
        .into_iter()
        .map(|(fp, (v, query))| {
            let excerpt: String = query.chars().take(EXCERPT).collect();
            let more = if query.chars().count() > EXCERPT {
                "…"
            } else {
                ""
            };
            (format!("{fp} {excerpt}{more}"), v)
        })
        .collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(TOP_FINGERPRINTS);
    let title = if timed {
        "Top fingerprints by total time (ms)"
    } else {
        "Top fingerprints by count × occurrences (no timings recorded)"
    };
    (title, top)
}

fn duration_ms(f: &Finding) -> Option<f64> {
    f.details.get("total_duration_ms").and_then(|v| v.as_f64())
}

/// A horizontal bar chart as inline SVG: labels left, bars scaled to the
/// largest value, values after the bars.
fn bar_chart(title: &str, bars: &[(String, f64)], class: &str) -> String {
    const ROW: usize = 24;
    const LABEL_W: f64 = 330.0;
    const BAR_W: f64 = 420.0;
    let max = bars.iter().map(|b| b.1).fold(0.0_f64, f64::max);
    let height = bars.len() * ROW + 8;
    let mut svg = format!(
        "<svg role=\"img\" aria-label=\"{}\" width=\"100%\" viewBox=\"0 0 840 {height}\">\n",
        esc(title)
    );
    for (i, (label, value)) in bars.iter().enumerate() {
        let y = i * ROW + 4;
        let w = if max > 0.0 { value / max * BAR_W } else { 0.0 };
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <rect class=\"{class}\" x=\"{}\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{}\">{}</text>",
            LABEL_W - 8.0,
            y + 15,
            esc(label),
            LABEL_W,
            ROW - 6,
            LABEL_W + w + 6.0,
            y + 15,
            trim_number(*value)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// `12` for whole numbers, `12.5` otherwise.
fn trim_number(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn findings(out: &mut String, report: &Report, options: &RenderOptions) {
    let _ = writeln!(out, "<h2>Findings ({})</h2>", report.findings.len());
    if options.baselined > 0 {
        let _ = writeln!(
            out,
            "<p class=\"note\">{} baselined finding{} suppressed by --baseline.</p>",
            options.baselined,
            if options.baselined == 1 { "" } else { "s" }
        );
    }
    if report.findings.is_empty() {
        let _ = writeln!(out, "<p>No findings.</p>");
        return;
    }
    let _ = writeln!(
        out,
        "<table>\n<tr><th>severity</th><th>kind</th><th>table</th><th class=\"num\">count</th>\
         <th class=\"num\">occurrences</th><th>id</th></tr>"
    );
    for f in &report.findings {
        let _ = writeln!(
            out,
            "<tr><td><span class=\"badge {sev}\">{sev}</span></td><td>{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td><a href=\"#f-{id}\"><code>{id}</code></a></td></tr>",
            f.kind,
            esc(f.table.as_deref().unwrap_or("-")),
            f.count.map_or_else(|| "-".into(), |c| c.to_string()),
            f.occurrences,
            sev = f.severity.as_str(),
            id = esc(&f.id)
        );
    }
    let _ = writeln!(out, "</table>");
    for f in &report.findings {
        finding(out, f, options);
    }
}

/// Every route's statements per request, with its busiest shapes.
fn routes(out: &mut String, report: &Report) {
    if report.routes.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "<h2>Routes: statements per request ({})</h2>\n<table>\n<tr><th>route</th>\
         <th class=\"num\">requests</th><th class=\"num\">median</th><th class=\"num\">max</th>\
         <th>busiest shapes (executions per request)</th></tr>",
        report.routes.len()
    );
    for r in &report.routes {
        let shapes: Vec<String> = r
            .shapes
            .iter()
            .take(3)
            .map(|s| {
                format!(
                    "{} × <code>{}</code> {}",
                    trim(s.per_request),
                    esc(&s.fingerprint),
                    esc(&excerpt(&s.query))
                )
            })
            .collect();
        let route = if r.other {
            esc(route_label(r))
        } else {
            format!("<code>{}</code>", esc(route_label(r)))
        };
        let _ = writeln!(
            out,
            "<tr><td>{route}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td></tr>",
            r.requests,
            r.statements.median,
            r.statements.max,
            shapes.join("<br>")
        );
    }
    let _ = writeln!(out, "</table>");
}

/// The start of a statement, for a table cell.
fn excerpt(query: &str) -> String {
    const CHARS: usize = 80;
    let mut s: String = query.chars().take(CHARS).collect();
    if query.chars().count() > CHARS {
        s.push('…');
    }
    s
}

fn finding(out: &mut String, f: &Finding, options: &RenderOptions) {
    let sev = f.severity.as_str();
    let _ = writeln!(
        out,
        "<article class=\"finding\" id=\"f-{id}\">\n<h3><span class=\"badge {sev}\">{sev}</span> \
         {} <small>{} · <code>{id}</code></small></h3>",
        esc(&f
            .table
            .clone()
            .or_else(|| route_place(f))
            .unwrap_or_else(|| "(no single table)".into())),
        esc(kind_heading(f.kind)),
        id = esc(&f.id)
    );
    let _ = writeln!(out, "<p>{}</p>\n<dl>", esc(&finding_sentence(f)));
    let mut row = |label: &str, value: &str| {
        let _ = writeln!(out, "<dt>{label}</dt><dd>{}</dd>", esc(value));
    };
    if !f.columns.is_empty() {
        row("columns", &f.columns.join(", "));
    }
    if let Some((label, value)) = count_fact(f) {
        row(label, &value);
    }
    row(
        "seen",
        &format!(
            "{} times, {} to {}",
            f.occurrences,
            timestamp(f.first_seen),
            timestamp(f.last_seen)
        ),
    );
    if let Some(r) = &f.request {
        if let Some(route) = &r.route {
            row("route", route);
        }
        if let Some(id) = &r.id {
            row("request", id);
        }
        if let Some(c) = &r.correlation {
            row("grouped by", c);
        }
    }
    if let Some(rows) = f.rows {
        row("rows max", &rows.max.to_string());
    }
    if let Some(db) = &f.database {
        row("database", db);
    }
    for (label, value) in kind_facts(f) {
        row(label, &value);
    }
    if let Some((label, value)) = source_fact(f) {
        row(label, &value);
    }
    let has_statement = !f.fingerprint.is_empty();
    if has_statement {
        row("fingerprint", &f.fingerprint);
    }
    if let Some(trace) = f.trace_id() {
        let shown = format!("<code>{}</code>", esc(trace));
        let value = match &options.trace_url {
            // The template is an http(s) URL (checked when parsed) and the
            // id is percent-encoded; the attribute is escaped all the same.
            Some(url) => format!("<a href=\"{}\">{shown}</a>", esc(&url.link(trace))),
            None => shown,
        };
        let _ = writeln!(out, "<dt>trace</dt><dd>{value}</dd>");
    }
    let _ = writeln!(out, "</dl>");
    if has_statement {
        let _ = writeln!(out, "<pre class=\"sql\">{}</pre>", esc(&f.query));
    }
    if let Some(p) = &f.parent {
        let _ = writeln!(
            out,
            "<p>Parent query <code>{}</code>:</p>\n<pre class=\"sql\">{}</pre>",
            esc(&p.fingerprint),
            esc(&p.query)
        );
    }
    if let Some(s) = &f.suggestion {
        let _ = writeln!(
            out,
            "<p><strong>Suggestion</strong></p>\n<pre>{}</pre>",
            esc(s)
        );
    }
    // Source and trace are shown above, the hypopg verdict as a fact line.
    let others: Vec<_> = f
        .details
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "hypopg" | SOURCE_KEY | TRACE_ID_KEY))
        .collect();
    if !others.is_empty() {
        let _ = writeln!(out, "<details><summary>Evidence</summary>\n<dl>");
        for (k, v) in others {
            let value = match v {
                serde_json::Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            let _ = writeln!(
                out,
                "<dt>{}</dt><dd><code>{}</code></dd>",
                esc(k),
                esc(&value)
            );
        }
        let _ = writeln!(out, "</dl></details>");
    }
    let _ = writeln!(out, "</article>");
}
