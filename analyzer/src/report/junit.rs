//! `--format junit`: JUnit XML, the format every CI system can show as a
//! test result.
//!
//! Each finding kind is a test suite and each finding a test case named by
//! its table and stable id, so CI test history follows a finding across
//! runs. Findings of a `--fail-on` kind are failures; others pass, with
//! their details in `<system-out>`, so the report is informative without
//! failing anything nobody gates on. A passing `coverage` test case
//! carries the summary and its warnings. All text has its control and
//! bidi characters made visible ([`escaped_report`]), then is XML-escaped.

use std::fmt::Write as _;

use super::escape::escaped_report;
use super::{
    count_fact, coverage_warnings, escape_markup, finding_sentence, kind_facts, percent, timestamp,
    RenderOptions, Report,
};
use crate::finding::{Finding, FindingKind};

/// Renders `report` as a JUnit XML document, ending in a newline.
pub fn render_junit(report: &Report, options: &RenderOptions) -> String {
    let report = &escaped_report(report);
    let gating = |f: &Finding| options.gating.contains(&f.kind);
    let failures = report.findings.iter().filter(|f| gating(f)).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"qproxy\" tests=\"{}\" failures=\"{failures}\" errors=\"0\">",
        report.findings.len() + 1
    );
    coverage_suite(&mut out, report, options);
    for kind in FindingKind::ALL {
        let of_kind: Vec<&Finding> = report.findings.iter().filter(|f| f.kind == kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        let failed = of_kind.iter().filter(|f| gating(f)).count();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{kind}\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" skipped=\"0\">",
            of_kind.len()
        );
        for f in of_kind {
            testcase(&mut out, f, gating(f));
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    out.push_str("</testsuites>\n");
    out
}

fn coverage_suite(out: &mut String, report: &Report, options: &RenderOptions) {
    let s = &report.summary;
    let _ = writeln!(
        out,
        "  <testsuite name=\"coverage\" tests=\"1\" failures=\"0\" errors=\"0\" skipped=\"0\">"
    );
    let _ = writeln!(out, "    <properties>");
    let props = [
        ("queries", s.queries.to_string()),
        ("fingerprints", s.fingerprints.to_string()),
        ("requests", s.requests.to_string()),
        ("correlated", percent(s.correlated_fraction)),
        ("parse_failures", s.parse_failures.to_string()),
        ("dropped_events", s.dropped_events.to_string()),
        ("findings_lost", s.findings_lost.to_string()),
        ("verifications_skipped", s.verifications_skipped.to_string()),
        ("catalog", s.catalog.clone()),
        ("baselined", options.baselined.to_string()),
    ];
    for (name, value) in props {
        let _ = writeln!(
            out,
            "      <property name=\"{name}\" value=\"{}\"/>",
            escape_markup(&value)
        );
    }
    let _ = writeln!(out, "    </properties>");
    let _ = writeln!(
        out,
        "    <testcase classname=\"qproxy.coverage\" name=\"coverage\">"
    );
    let mut body = format!(
        "{} queries, {} fingerprints, {} requests, {} correlated, {} parse failures, \
         {} dropped events, {} findings lost, {} verifications skipped, catalog {}",
        s.queries,
        s.fingerprints,
        s.requests,
        percent(s.correlated_fraction),
        s.parse_failures,
        s.dropped_events,
        s.findings_lost,
        s.verifications_skipped,
        s.catalog
    );
    if options.baselined > 0 {
        let n = options.baselined;
        let plural = if n == 1 { "" } else { "s" };
        let _ = write!(
            body,
            "\n{n} baselined finding{plural} suppressed by --baseline"
        );
    }
    let warnings = coverage_warnings(s);
    if !warnings.is_empty() {
        body.push_str("\nWARNING: coverage is poor; a clean result does not mean clean queries");
        for w in warnings {
            let _ = write!(body, "\n- {w}");
        }
    }
    let _ = writeln!(
        out,
        "      <system-out>{}</system-out>",
        escape_markup(&body)
    );
    let _ = writeln!(out, "    </testcase>");
    let _ = writeln!(out, "  </testsuite>");
}

fn testcase(out: &mut String, f: &Finding, failed: bool) {
    let place = f
        .table
        .clone()
        .unwrap_or_else(|| format!("fingerprint {}", f.fingerprint));
    let _ = writeln!(
        out,
        "    <testcase classname=\"qproxy.{}\" name=\"{} [{}]\">",
        f.kind,
        escape_markup(&place),
        escape_markup(&f.id)
    );
    let body = escape_markup(&finding_body(f));
    if failed {
        let _ = writeln!(
            out,
            "      <failure message=\"{}\" type=\"{}\">{body}</failure>",
            escape_markup(&finding_sentence(f)),
            f.kind
        );
    } else {
        let _ = writeln!(out, "      <system-out>{body}</system-out>");
    }
    let _ = writeln!(out, "    </testcase>");
}

/// The plain-text details of a finding, one fact per line.
fn finding_body(f: &Finding) -> String {
    let mut b = String::new();
    let _ = writeln!(b, "{}", finding_sentence(f));
    let _ = writeln!(b, "severity: {}", f.severity.as_str());
    let _ = writeln!(b, "id: {}", f.id);
    if !f.columns.is_empty() {
        let _ = writeln!(b, "columns: {}", f.columns.join(", "));
    }
    if let Some((label, value)) = count_fact(f) {
        let _ = writeln!(b, "{label}: {value}");
    }
    let _ = writeln!(
        b,
        "seen: {} times, {} to {}",
        f.occurrences,
        timestamp(f.first_seen),
        timestamp(f.last_seen)
    );
    if let Some(r) = &f.request {
        let fields = [
            ("route", &r.route),
            ("request", &r.id),
            ("grouped by", &r.correlation),
        ];
        for (label, value) in fields {
            if let Some(v) = value {
                let _ = writeln!(b, "{label}: {v}");
            }
        }
    }
    if let Some(rows) = f.rows {
        let _ = writeln!(b, "rows max: {}", rows.max);
    }
    for (label, value) in kind_facts(f) {
        let _ = writeln!(b, "{label}: {value}");
    }
    let _ = writeln!(b, "fingerprint: {}", f.fingerprint);
    let _ = writeln!(b, "query: {}", f.query);
    if let Some(p) = &f.parent {
        let _ = writeln!(b, "parent: {} {}", p.fingerprint, p.query);
    }
    if let Some(s) = &f.suggestion {
        let _ = writeln!(b, "suggestion: {s}");
    }
    b
}
