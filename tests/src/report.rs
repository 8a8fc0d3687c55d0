//! `qproxy report` as the tests use it: run it against a findings store, parse its JSON, pick
//! findings out of it, and poll it while a proxy is still writing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::programs::{run, ProgramOutput};
use crate::proxy::qproxy_bin;

/// Runs `qproxy report --store STORE ARGS..` and returns whatever it printed, any exit status.
pub fn run_report(store: &Path, args: &[&str]) -> Result<ProgramOutput> {
    let mut cmd = Command::new(qproxy_bin()?);
    cmd.arg("report").arg("--store").arg(store).args(args);
    cmd.env_remove("QPROXY_STORE").env("NO_COLOR", "1");
    run(&mut cmd, Duration::from_secs(30))
}

/// The JSON report (`--format json --run RUN`, RUN being `latest`, `all` or a run id).
pub fn report_json(store: &Path, run: &str) -> Result<Value> {
    let out = run_report(store, &["--format", "json", "--run", run])?;
    if !out.status.success() {
        bail!("qproxy report --run {run} failed: {out}");
    }
    serde_json::from_str(&out.stdout)
        .with_context(|| format!("qproxy report printed no JSON:\n{}", out.stdout))
}

/// The exit code of `qproxy report --fail-on KINDS` over the latest run.
pub fn fail_on_exit_code(store: &Path, kinds: &str) -> Result<i32> {
    let out = run_report(store, &["--format", "json", "--fail-on", kinds])?;
    out.status
        .code()
        .with_context(|| format!("qproxy report killed by a signal: {out}"))
}

/// The findings of one kind, in report order.
pub fn findings_of<'a>(report: &'a Value, kind: &str) -> Vec<&'a Value> {
    all_findings(report)
        .into_iter()
        .filter(|f| f["kind"] == kind)
        .collect()
}

/// Every finding of a report.
pub fn all_findings(report: &Value) -> Vec<&Value> {
    report["findings"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// Checks that `findings` (taken from `report`) hold exactly one match per `planted` entry and
/// nothing else (a missing one is a recall failure, an extra one a precision failure), prints
/// the `detector-score:` line the suite's precision and recall are tallied from, and returns
/// the matches in `planted` order.
pub fn verify_exact<'a, P: std::fmt::Debug>(
    test: &str,
    report: &Value,
    findings: Vec<&'a Value>,
    planted: &[P],
    matches: impl Fn(&P, &Value) -> bool,
) -> Vec<&'a Value> {
    let found: Vec<Vec<&Value>> = planted
        .iter()
        .map(|p| findings.iter().copied().filter(|f| matches(p, f)).collect())
        .collect();
    let unplanted = findings
        .iter()
        .filter(|f| !planted.iter().any(|p| matches(p, f)))
        .count();
    let true_positives = found.iter().filter(|m| !m.is_empty()).count();
    eprintln!(
        "detector-score: test={test} planted={} reported={} true_positives={true_positives} \
         false_positives={unplanted} missed={}",
        planted.len(),
        findings.len(),
        planted.len() - true_positives,
    );
    let all = describe_findings(report);
    for (p, m) in planted.iter().zip(&found) {
        assert!(
            !m.is_empty(),
            "{test}: no finding for {p:?}; findings:\n{all}"
        );
        assert_eq!(m.len(), 1, "{test}: several findings for {p:?}:\n{all}");
    }
    assert_eq!(
        unplanted, 0,
        "{test}: findings nobody planted (false positives):\n{all}"
    );
    found.into_iter().map(|m| m[0]).collect()
}

/// One line per finding (kind, table, route, count, occurrences, query), for failure messages.
pub fn describe_findings(report: &Value) -> String {
    let mut out = String::new();
    for f in all_findings(report) {
        out.push_str(&format!(
            "  {} table={} route={} request={} count={} occurrences={} query={}\n",
            f["kind"].as_str().unwrap_or("?"),
            f["table"],
            f["request"]["route"],
            f["request"]["id"],
            f["count"],
            f["occurrences"],
            f["query"].as_str().unwrap_or("?"),
        ));
    }
    if out.is_empty() {
        out.push_str("  (no findings)\n");
    }
    out
}

/// Polls the latest run's JSON report (the proxy flushes to the store about once a second)
/// until `done` accepts it; a store not written yet counts as "not yet". Blocks the thread
/// (call it through `spawn_blocking` from async code); fails after `timeout` with the last
/// report seen.
pub fn wait_for_report(
    store: &Path,
    timeout: Duration,
    mut done: impl FnMut(&Value) -> bool,
) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match report_json(store, "latest") {
            Ok(report) if done(&report) => return Ok(report),
            other => other,
        };
        if Instant::now() > deadline {
            match last {
                Ok(report) => bail!(
                    "condition not met within {timeout:?}; last report:\n{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                ),
                Err(e) => bail!("no report within {timeout:?}: {e:#}"),
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
