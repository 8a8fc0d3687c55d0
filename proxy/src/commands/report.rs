//! `qproxy report`: reads the findings store, prints a report, and sets
//! the exit code CI gates on (0 nothing gating, 1 gating findings, 2 usage
//! or I/O error), as DESIGN's command-line contract says.
//!
//! Arguments that need checking beyond clap's (`--fail-on`, `--run`) are
//! parsed here rather than by clap so every failure, usage or I/O, exits 2
//! with one `qproxy report: ...` line on stderr.
//!
//! Baselines: `--baseline FILE` hides the findings it lists before
//! rendering and gating; `--write-baseline FILE` writes the current
//! findings. Both together is the update flow: the written baseline keeps
//! only entries still found (stale ones pruned), never adds new findings.
//!
//! A baseline also records each route's statements per request. With
//! `--baseline`, a route whose median grew beyond the tolerance
//! (`--regression-ratio`, `--regression-min-increase`) is reported as a
//! `query_count_regression` finding, gated by `--fail-on` like any kind;
//! the update flow does not accept a regressed route's new figures.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::PossibleValuesParser;
use qproxy_analyzer::finding::FindingKind;
use qproxy_analyzer::report::baseline::{Baseline, BaselineUpdate};
use qproxy_analyzer::report::{self, Format, RenderOptions, Report, TraceUrl};
use qproxy_analyzer::routes::Tolerance;
use qproxy_analyzer::store::{period, RunFilter, RunSelection, Store};

use crate::analysis::store_target;
use crate::config::{StoreArg, DEFAULT_STORE};

/// Options of `qproxy report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Findings store written by `qproxy serve`: a SQLite file, or the
    /// postgres:// URL a fleet of proxies writes to.
    #[arg(
        long,
        env = "QPROXY_STORE",
        default_value = DEFAULT_STORE,
        value_name = "PATH|URL",
        // --help would print the URL, password and all.
        hide_env_values = true
    )]
    pub store: StoreArg,
    /// Schema of a PostgreSQL findings store [default: qproxy]
    #[arg(long, env = "QPROXY_STORE_SCHEMA", value_name = "NAME")]
    pub store_schema: Option<String>,
    /// Only runs of this instance (`qproxy serve --instance`).
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// Only runs active since then, and the findings they saw since then:
    /// a duration back from now (24h, 7d) or an RFC 3339 time.
    #[arg(long, value_name = "DURATION|RFC3339")]
    pub since: Option<String>,
    /// Output format.
    #[arg(long, default_value = "text", value_parser = PossibleValuesParser::new(Format::NAMES))]
    pub format: String,
    /// Write the report to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Exit 1 when a finding of one of these kinds is present
    /// (comma-separated kind names, or `all`).
    #[arg(long, value_name = "KIND[,KIND..]|all")]
    pub fail_on: Option<String>,
    /// Which runs to report: the latest, all of them, or one by id
    /// (after --instance and --since) [default: latest for a SQLite store,
    /// all for a PostgreSQL one, where the latest run is one proxy of many]
    #[arg(long, value_name = "latest|all|ID")]
    pub run: Option<String>,
    /// Suppress the findings listed in this baseline file: they neither
    /// show nor gate.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Write the current findings' ids and each route's statements per
    /// request to FILE as a baseline. With --baseline, keep only its
    /// entries still found (prune stale ones) and keep a regressed route's
    /// old figures.
    #[arg(long, value_name = "FILE")]
    pub write_baseline: Option<PathBuf>,
    /// With --baseline: a route regressed when its median statements per
    /// request grew by more than this factor...
    #[arg(long, default_value_t = Tolerance::default().ratio, value_name = "RATIO")]
    pub regression_ratio: f64,
    /// ...and by at least this many statements.
    #[arg(long, default_value_t = Tolerance::default().min_increase, value_name = "N")]
    pub regression_min_increase: u64,
    /// Link findings' trace ids in markdown and html reports:
    /// a URL with {trace_id} where the id goes
    /// (e.g. https://tempo.example/trace/{trace_id}).
    #[arg(long, env = "QPROXY_TRACE_URL", value_name = "URL")]
    pub trace_url: Option<String>,
}

/// Exit code: nothing gating.
const OK: u8 = 0;
/// Exit code: at least one finding of a `--fail-on` kind.
const GATING: u8 = 1;
/// Exit code: usage or I/O error.
const ERROR: u8 = 2;

/// Runs `qproxy report` against the real stdout/stderr.
pub fn run(args: ReportArgs) -> ExitCode {
    let stdout = std::io::stdout();
    let color = stdout.is_terminal() && !no_color();
    let code = run_with(
        &args,
        &mut stdout.lock(),
        &mut std::io::stderr().lock(),
        color,
    );
    ExitCode::from(code)
}

/// `NO_COLOR` set to anything non-empty turns colour off (no-color.org).
fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// Parses `--fail-on`: comma-separated kind names, or `all`.
pub fn parse_fail_on(s: &str) -> Result<Vec<FindingKind>, String> {
    if s.trim() == "all" {
        return Ok(FindingKind::ALL.to_vec());
    }
    let mut kinds = Vec::new();
    for name in s.split(',').map(str::trim) {
        let kind = FindingKind::parse(name).ok_or_else(|| {
            let known: Vec<&str> = FindingKind::ALL.iter().map(|k| k.as_str()).collect();
            format!(
                "unknown finding kind `{name}` in --fail-on (expected {} or all)",
                known.join(", ")
            )
        })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

/// The command with its output streams and colour decided by the caller,
/// so tests can run it whole. Returns the exit code.
fn run_with(args: &ReportArgs, out: &mut dyn Write, err: &mut dyn Write, color: bool) -> u8 {
    match report(args, out, err, color) {
        Ok((report, gate)) => {
            let gating = report.gating(&gate).count();
            if gating == 0 {
                return OK;
            }
            let _ = writeln!(
                err,
                "qproxy report: {}",
                gating_line(&report, &gate, gating)
            );
            GATING
        }
        Err(message) => {
            let _ = writeln!(err, "qproxy report: {message}");
            ERROR
        }
    }
}

/// Loads, renders and writes the report; returns it with the gating kinds.
fn report(
    args: &ReportArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
    color: bool,
) -> Result<(Report, Vec<FindingKind>), String> {
    let format: Format = args.format.parse().map_err(|e| format!("{e}"))?;
    let gate = match &args.fail_on {
        Some(s) => parse_fail_on(s)?,
        None => Vec::new(),
    };
    let target = (args.store)
        .target(args.store_schema.as_deref())
        .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
    let selection: RunSelection = match &args.run {
        Some(run) => run.parse().map_err(|e| format!("{e}"))?,
        None if target.is_postgres() => RunSelection::All,
        None => RunSelection::Latest,
    };
    let filter = RunFilter {
        instance: args.instance.clone(),
        since: (args.since.as_deref())
            .map(|s| period::parse_since(s, time::OffsetDateTime::now_utc()))
            .transpose()
            .map_err(|e| e.to_string())?,
    };
    let tolerance = tolerance(args)?;
    let trace_url = match &args.trace_url {
        Some(s) if !s.is_empty() => Some(s.parse::<TraceUrl>().map_err(|e| e.to_string())?),
        _ => None,
    };
    let location =
        store_target::location(&target).map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
    let store = Store::open_read_only(location).map_err(|e| e.to_string())?;
    let mut report =
        (store.load_report_filtered(&selection, &filter)).map_err(|e| e.to_string())?;
    // Read before anything is written, so a bad baseline leaves no output.
    let baseline = match &args.baseline {
        Some(path) => Some(Baseline::load(path).map_err(|e| e.to_string())?),
        None => None,
    };
    let update = (args.write_baseline.as_ref()).map(|path| {
        (
            path,
            BaselineUpdate::for_report(baseline.as_ref(), &report, &tolerance),
        )
    });
    let baselined = baseline.as_ref().map_or(0, |b| b.suppress(&mut report));
    if let Some(baseline) = &baseline {
        // Made after suppression: a regression is judged against the
        // baseline's routes, never accepted by its finding ids.
        baseline.report_regressions(&mut report, &tolerance);
    }
    let options = RenderOptions {
        color: color && args.output.is_none(),
        gating: gate.clone(),
        baselined,
        trace_url,
    };
    let rendered = report::render(&report, format, options);
    match &args.output {
        Some(path) => std::fs::write(path, rendered)
            .map_err(|e| format!("cannot write report to {}: {e}", path.display()))?,
        None => match out
            .write_all(rendered.as_bytes())
            .and_then(|()| out.flush())
        {
            // `qproxy report | head` closing the pipe is not a failure of the report.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(format!("cannot write report: {e}"));
            }
            _ => {}
        },
    }
    if let Some((path, update)) = update {
        update.baseline.save(path).map_err(|e| e.to_string())?;
        let _ = writeln!(
            err,
            "qproxy report: wrote baseline {} {update}",
            path.display()
        );
    }
    Ok((report, gate))
}

/// The regression tolerance from the flags; a ratio below 1 would call a
/// shrinking route a regression, so it is refused.
fn tolerance(args: &ReportArgs) -> Result<Tolerance, String> {
    if !(args.regression_ratio.is_finite() && args.regression_ratio >= 1.0) {
        return Err(format!(
            "--regression-ratio must be a number of at least 1 (got {})",
            args.regression_ratio
        ));
    }
    Ok(Tolerance {
        ratio: args.regression_ratio,
        min_increase: args.regression_min_increase,
    })
}

/// `3 gating findings (--fail-on): n_plus_one 2, unbounded_select 1`.
fn gating_line(report: &Report, gate: &[FindingKind], total: usize) -> String {
    let mut line = format!(
        "{total} gating finding{} (--fail-on):",
        if total == 1 { "" } else { "s" }
    );
    let mut first = true;
    for kind in FindingKind::ALL.into_iter().filter(|k| gate.contains(k)) {
        let n = report.findings.iter().filter(|f| f.kind == kind).count();
        if n > 0 {
            let _ = write!(line, "{} {kind} {n}", if first { "" } else { "," });
            first = false;
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use qproxy_analyzer::finding::{Finding, Severity, Summary};
    use qproxy_analyzer::store::RunInfo;
    use time::OffsetDateTime;

    fn args(store: &std::path::Path) -> ReportArgs {
        ReportArgs {
            store: StoreArg::from(store),
            store_schema: None,
            instance: None,
            since: None,
            format: "text".into(),
            output: None,
            fail_on: None,
            run: None,
            baseline: None,
            write_baseline: None,
            regression_ratio: 1.5,
            regression_min_increase: 5,
            trace_url: None,
        }
    }

    fn finding(kind: FindingKind) -> Finding {
        let now = OffsetDateTime::now_utc();
        let mut f = Finding {
            id: String::new(),
            kind,
            severity: Severity::Warning,
            fingerprint: "0123456789abcdef".into(),
            query: "SELECT * FROM users WHERE id = $1".into(),
            table: Some("public.users".into()),
            columns: vec!["id".into()],
            count: Some(20),
            occurrences: 1,
            request: None,
            parent: None,
            rows: None,
            suggestion: None,
            database: None,
            details: Default::default(),
            first_seen: now,
            last_seen: now,
        };
        f.id = f.compute_id();
        f
    }

    /// A store whose latest run has one n_plus_one finding.
    fn store_with_n_plus_one(dir: &tempfile::TempDir) -> PathBuf {
        store_with_runs(dir, &[&[FindingKind::NPlusOne]])
    }

    /// A store with one run per entry of `runs`, each recording those kinds.
    fn store_with_runs(dir: &tempfile::TempDir, runs: &[&[FindingKind]]) -> PathBuf {
        let path = dir.path().join("findings.db");
        let mut store = Store::open(&path).unwrap();
        for kinds in runs {
            let run = store.begin_run(&RunInfo::current("test", "ci")).unwrap();
            let findings: Vec<Finding> = kinds.iter().map(|k| finding(*k)).collect();
            store.record(run, &findings).unwrap();
            let summary = Summary {
                queries: 20,
                ..Summary::default()
            };
            store.update_summary(run, &summary).unwrap();
        }
        path
    }

    fn exec(args: &ReportArgs) -> (u8, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_with(args, &mut out, &mut err, false);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn exit_0_without_fail_on_or_without_gating_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(&store_with_n_plus_one(&dir));
        let (code, out, err) = exec(&a);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("n_plus_one"), "{out}");
        a.fail_on = Some("unbounded_select,unindexed_sort".into());
        assert_eq!(exec(&a).0, 0);
    }

    #[test]
    fn exit_0_on_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/findings.db");
        drop(Store::open(&path).unwrap());
        let mut a = args(&path);
        a.fail_on = Some("all".into());
        let (code, out, _) = exec(&a);
        assert_eq!(code, 0);
        assert!(out.contains("no runs recorded yet"), "{out}");
    }

    #[test]
    fn exit_1_when_a_gating_kind_is_present() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(&store_with_n_plus_one(&dir));
        for gate in ["n_plus_one", "all", "repeated_query, n_plus_one"] {
            a.fail_on = Some(gate.into());
            let (code, _, err) = exec(&a);
            assert_eq!(code, 1, "--fail-on {gate}");
            assert_eq!(
                err,
                "qproxy report: 1 gating finding (--fail-on): n_plus_one 1\n"
            );
        }
        // Written to --output, the gate still applies, and JSON is parseable.
        a.format = "json".into();
        a.output = Some(dir.path().join("report.json"));
        let (code, out, _) = exec(&a);
        assert_eq!((code, out.as_str()), (1, ""));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
                .unwrap();
        assert_eq!(json["findings"][0]["kind"], "n_plus_one");
    }

    #[test]
    fn exit_2_on_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let base = args(&store_with_n_plus_one(&dir));
        type Edit = fn(&mut ReportArgs);
        let cases: [(&str, Edit); 6] = [
            ("unknown finding kind `n_plus_two`", |a| {
                a.fail_on = Some("n_plus_two".into())
            }),
            ("unknown report format `yaml`", |a| a.format = "yaml".into()),
            ("invalid run selection `newest`", |a| {
                a.run = Some("newest".into())
            }),
            ("no run 99", |a| a.run = Some("99".into())),
            ("invalid --since `yesterday`", |a| {
                a.since = Some("yesterday".into())
            }),
            ("invalid store schema name", |a| {
                a.store = StoreArg::from("postgres://db/findings");
                a.store_schema = Some("a-b".into())
            }),
        ];
        for (expected, change) in cases {
            let mut a = base.clone();
            change(&mut a);
            let (code, out, err) = exec(&a);
            assert_eq!(code, 2, "{expected}");
            assert!(out.is_empty());
            assert!(
                err.starts_with("qproxy report: ") && err.contains(expected),
                "{err}"
            );
        }
    }

    #[test]
    fn instance_and_since_narrow_the_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("findings.db");
        let mut store = Store::open(&path).unwrap();
        for (instance, kind) in [
            ("shard-a", FindingKind::NPlusOne),
            ("shard-b", FindingKind::UnboundedSelect),
        ] {
            let run = store
                .begin_run(&RunInfo::current("test", instance))
                .unwrap();
            store.record(run, &[finding(kind)]).unwrap();
        }
        drop(store);
        let json = |edit: &dyn Fn(&mut ReportArgs)| {
            let mut a = args(&path);
            a.format = "json".into();
            edit(&mut a);
            let (code, out, err) = exec(&a);
            assert_eq!(code, 0, "{err}");
            serde_json::from_str::<serde_json::Value>(&out).unwrap()
        };
        let instances = |report: &serde_json::Value| -> Vec<String> {
            report["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["instance"].as_str().unwrap().to_string())
                .collect()
        };
        // SQLite defaults to the latest run; --instance picks the latest of one.
        assert_eq!(instances(&json(&|_| {})), ["shard-b"]);
        let a = json(&|a| a.instance = Some("shard-a".into()));
        assert_eq!(instances(&a), ["shard-a"]);
        assert_eq!(a["findings"][0]["kind"], "n_plus_one");
        let all = json(&|a| a.run = Some("all".into()));
        assert_eq!(instances(&all), ["shard-a", "shard-b"]);
        let recent = json(&|a| {
            a.run = Some("all".into());
            a.since = Some("1h".into())
        });
        assert_eq!(instances(&recent), ["shard-a", "shard-b"]);
        let future = json(&|a| {
            a.run = Some("all".into());
            a.since = Some("2999-01-01T00:00:00Z".into())
        });
        assert_eq!(
            (
                instances(&future).len(),
                future["findings"].as_array().unwrap().len()
            ),
            (0, 0)
        );
        let nobody = json(&|a| a.instance = Some("shard-z".into()));
        assert!(instances(&nobody).is_empty());
    }

    #[test]
    fn exit_2_on_io_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (code, _, err) = exec(&args(&dir.path().join("missing.db")));
        assert_eq!(code, 2);
        assert!(
            err.contains("no findings store at") && err.contains("missing.db"),
            "{err}"
        );

        let not_a_db = dir.path().join("notes.txt");
        std::fs::write(
            &not_a_db,
            "this is not SQLite, just some text long enough to look like a header",
        )
        .unwrap();
        let (code, _, err) = exec(&args(&not_a_db));
        assert_eq!(code, 2);
        assert!(err.contains("cannot open findings store"), "{err}");

        let mut a = args(&store_with_n_plus_one(&dir));
        a.output = Some(dir.path().join("no/such/dir/report.txt"));
        let (code, _, err) = exec(&a);
        assert_eq!(code, 2);
        assert!(err.contains("cannot write report to"), "{err}");
    }

    #[test]
    fn a_written_baseline_suppresses_everything_it_lists() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baseline.json");
        let mut a = args(&store_with_n_plus_one(&dir));
        a.fail_on = Some("all".into());
        a.write_baseline = Some(file.clone());
        let (code, _, err) = exec(&a);
        assert_eq!(code, 1, "writing a baseline does not hide findings: {err}");
        assert!(
            err.contains("wrote baseline") && err.contains("with 1 finding\n"),
            "{err}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["findings"][0]["id"], finding(FindingKind::NPlusOne).id);
        assert_eq!(json["findings"][0]["kind"], "n_plus_one");

        a.write_baseline = None;
        a.baseline = Some(file);
        for format in ["text", "markdown"] {
            a.format = format.into();
            let (code, out, err) = exec(&a);
            assert_eq!(code, 0, "{err}");
            assert!(out.contains("1 baselined finding suppressed"), "{out}");
        }
    }

    #[test]
    fn a_finding_missing_from_the_baseline_gates() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baseline.json");
        let old = Baseline::from_findings(&[finding(FindingKind::NPlusOne)]);
        old.save(&file).unwrap();
        let both: &[FindingKind] = &[FindingKind::NPlusOne, FindingKind::UnboundedSelect];
        let mut a = args(&store_with_runs(&dir, &[both]));
        a.fail_on = Some("all".into());
        a.baseline = Some(file);
        let (code, _, err) = exec(&a);
        assert_eq!(code, 1);
        assert_eq!(
            err,
            "qproxy report: 1 gating finding (--fail-on): unbounded_select 1\n"
        );
    }

    #[test]
    fn updating_a_baseline_prunes_stale_entries() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baseline.json");
        let both: &[FindingKind] = &[FindingKind::NPlusOne, FindingKind::UnboundedSelect];
        Baseline::from_findings(&both.iter().map(|k| finding(*k)).collect::<Vec<_>>())
            .save(&file)
            .unwrap();
        // The latest run still has the N+1; the unbounded select was fixed,
        // and a new repeated query is not accepted by an update.
        let latest: &[FindingKind] = &[FindingKind::NPlusOne, FindingKind::RepeatedQuery];
        let mut a = args(&store_with_runs(&dir, &[both, latest]));
        a.fail_on = Some("n_plus_one".into());
        a.baseline = Some(file.clone());
        a.write_baseline = Some(file.clone());
        let (code, _, err) = exec(&a);
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains("with 1 finding (1 stale entry pruned)"),
            "{err}"
        );
        let kept = Baseline::load(&file).unwrap();
        let ids: Vec<&str> = kept.findings.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, [finding(FindingKind::NPlusOne).id.as_str()]);
    }

    #[test]
    fn exit_2_on_a_missing_or_invalid_baseline() {
        let dir = tempfile::tempdir().unwrap();
        let bad_json = dir.path().join("bad.json");
        std::fs::write(&bad_json, "{\"findings\": 3}").unwrap();
        let future = dir.path().join("future.json");
        std::fs::write(&future, "{\"version\": 9, \"findings\": []}").unwrap();
        let written = dir.path().join("written.json");
        let mut a = args(&store_with_n_plus_one(&dir));
        a.write_baseline = Some(written.clone());
        for (file, expected) in [
            (dir.path().join("missing.json"), "cannot read baseline"),
            (bad_json, "invalid baseline"),
            (future, "has version 9"),
        ] {
            a.baseline = Some(file);
            let (code, out, err) = exec(&a);
            assert_eq!(code, 2, "{expected}");
            assert!(out.is_empty() && !written.exists());
            assert!(
                err.starts_with("qproxy report: ") && err.contains(expected),
                "{err}"
            );
        }
    }

    #[test]
    fn every_format_writes_to_output() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(&store_with_n_plus_one(&dir));
        a.fail_on = Some("repeated_query".into());
        for name in Format::NAMES {
            let path = dir.path().join(format!("report.{name}"));
            a.format = name.into();
            a.output = Some(path.clone());
            let (code, out, err) = exec(&a);
            assert_eq!((code, out.as_str()), (0, ""), "{name}: {err}");
            let written = std::fs::read_to_string(&path).unwrap();
            assert!(written.contains("n_plus_one"), "{name}: {written}");
        }
    }

    /// A store with one run per entry of `items`: four `/orders` requests
    /// running one order lookup and that many item lookups each, and two
    /// unchanged `users#show` requests of four statements.
    fn store_with_routes(dir: &tempfile::TempDir, items: &[u64]) -> PathBuf {
        use qproxy_analyzer::detect::n_plus_one::ShapeCount;
        use qproxy_analyzer::fingerprint::FingerprintId;
        use qproxy_analyzer::routes::RouteStats;
        let shape = |fp: u64, count: u64| ShapeCount {
            fingerprint: FingerprintId(fp),
            normalized: format!("SELECT {fp} FROM t WHERE id = $1").into(),
            count,
        };
        let path = dir.path().join("routes.db");
        let mut store = Store::open(&path).unwrap();
        for &n in items {
            let run = store
                .begin_run(&RunInfo::current("test", "test-instance"))
                .unwrap();
            let mut orders = RouteStats::new("/orders", false);
            let mut users = RouteStats::new("users#show", false);
            for _ in 0..4 {
                orders.record(1 + n, &[shape(1, 1), shape(2, n)]);
            }
            for _ in 0..2 {
                users.record(4, &[shape(3, 4)]);
            }
            store.record_routes(run, &[orders, users]).unwrap();
            store.update_summary(run, &Summary::default()).unwrap();
        }
        path
    }

    #[test]
    fn a_route_that_grew_past_the_tolerance_gates_as_a_regression() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("baseline.json");
        let mut a = args(&store_with_routes(&dir, &[2, 22, 5]));
        // The baseline from the first run: /orders at 3 per request.
        a.run = Some("1".into());
        a.write_baseline = Some(file.clone());
        let (code, _, err) = exec(&a);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("with 0 findings and 2 routes"), "{err}");
        a.write_baseline = None;
        a.baseline = Some(file);
        a.fail_on = Some("query_count_regression".into());
        a.format = "json".into();
        // Run 2 runs 23 per request: exit 1, naming the route and the shape.
        a.run = Some("2".into());
        let (code, out, err) = exec(&a);
        assert_eq!(code, 1, "{err}");
        assert_eq!(
            err,
            "qproxy report: 1 gating finding (--fail-on): query_count_regression 1\n"
        );
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        let findings = json["findings"].as_array().unwrap();
        assert_eq!(findings.len(), 1, "users#show is unchanged: {findings:?}");
        let f = &findings[0];
        assert_eq!(f["kind"], "query_count_regression");
        assert_eq!(f["request"]["route"], "/orders");
        assert_eq!(
            (
                &f["details"]["median_before"],
                &f["details"]["median_after"]
            ),
            (&serde_json::json!(3), &serde_json::json!(23))
        );
        assert_eq!(
            f["details"]["grown_shapes"][0]["fingerprint"],
            "0000000000000002"
        );
        // Run 3 runs 6 per request: 2×, but only +3: within the default
        // tolerance, outside a stricter one.
        a.run = Some("3".into());
        assert_eq!(exec(&a).0, 0);
        a.regression_min_increase = 3;
        assert_eq!(exec(&a).0, 1);
        a.regression_ratio = 2.0;
        assert_eq!(exec(&a).0, 0, "exactly 2× is within --regression-ratio 2");
        // `all` gates it too; without --baseline there is nothing to compare.
        a.regression_ratio = 1.5;
        a.run = Some("2".into());
        a.fail_on = Some("all".into());
        assert_eq!(exec(&a).0, 1);
        a.baseline = None;
        assert_eq!(exec(&a).0, 0);
    }

    #[test]
    fn exit_2_on_a_bad_regression_ratio_or_trace_url() {
        let dir = tempfile::tempdir().unwrap();
        let base = args(&store_with_n_plus_one(&dir));
        type Edit = fn(&mut ReportArgs);
        let cases: [(&str, Edit); 4] = [
            ("--regression-ratio must be", |a| a.regression_ratio = 0.5),
            ("--regression-ratio must be", |a| {
                a.regression_ratio = f64::NAN
            }),
            ("no {trace_id} placeholder", |a| {
                a.trace_url = Some("https://tempo.example/trace/".into())
            }),
            ("not an http:// or https:// URL", |a| {
                a.trace_url = Some("file:///{trace_id}".into())
            }),
        ];
        for (expected, change) in cases {
            let mut a = base.clone();
            change(&mut a);
            let (code, out, err) = exec(&a);
            assert_eq!((code, out.as_str()), (2, ""), "{expected}");
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn parses_fail_on_lists() {
        assert_eq!(parse_fail_on("all").unwrap().len(), FindingKind::ALL.len());
        assert_eq!(
            parse_fail_on("n_plus_one,n_plus_one,unbounded_select").unwrap(),
            [FindingKind::NPlusOne, FindingKind::UnboundedSelect]
        );
        assert!(parse_fail_on("").is_err());
        assert!(parse_fail_on("n_plus_one,").is_err());
    }

    #[test]
    fn clap_defaults_match_the_contract() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            report: ReportArgs,
        }
        let cli = Cli::try_parse_from(["report"]).unwrap();
        assert_eq!(cli.report.format, "text");
        assert_eq!(cli.report.run, None);
        if std::env::var_os("QPROXY_STORE").is_none() {
            assert_eq!(cli.report.store, StoreArg::from(".qproxy/findings.db"));
        }
        assert!(Cli::try_parse_from(["report", "--format", "yaml"]).is_err());
    }
}
