//! The stock clients through the target: psql (output byte-identical to a direct session),
//! pgbench in all three query modes, and a psycopg 3 session.

use std::path::Path;
use std::time::Duration;

use qproxy_tests::programs::{pgbench, psql, python, python_script, run_ok, ProgramOutput};
use qproxy_tests::{mode, Mode, TestEnv, SCRAM, TEST_DB};

fn env() -> &'static TestEnv {
    TestEnv::shared()
}

fn psql_script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/psql_session.sql")
}

/// Runs the psql script against `url`; the port in `\conninfo` is replaced by `PORT`.
fn run_psql_script(url: &str, port: u16) -> (String, String) {
    let out = qproxy_tests::programs::run(
        psql(url).arg("-f").arg(psql_script()),
        Duration::from_secs(120),
    )
    .unwrap();
    // The script contains errors on purpose; psql still exits 0 without ON_ERROR_STOP.
    assert!(out.status.success(), "psql failed: {out}");
    let normalize = |s: &str| s.replace(&format!("port \"{port}\""), "port \"PORT\"");
    (normalize(&out.stdout), normalize(&out.stderr))
}

#[test]
fn psql_output_is_identical_through_the_proxy() {
    let env = env();
    // Each run creates and drops the same table, so they must not overlap.
    let direct = run_psql_script(
        &env.direct_url(SCRAM, TEST_DB, "disable"),
        env.cluster.port(),
    );
    let (stdout, stderr) = &direct;
    // The script really ran: its results, notices, errors and COPY output are all there.
    for expected in [
        "Table \"public.psql_items\"",
        "\"psql_items_name_idx\" btree (name)",
        "{red,fruit}",
        "\\x00ff",
        "1 day 02:00:00",
        "3\tcherry\t2.00",
        "name    | apple",
        "items \n-------\n     4",
        "unaligned|42",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from stdout:\n{stdout}"
        );
    }
    for expected in [
        "NOTICE:  notice number 1",
        "WARNING:  a warning with detail\nDETAIL:  the detail\nHINT:  a hint",
        "ERROR:  division by zero",
        "ERROR:  relation \"missing_table\" does not exist",
        "ERROR:  syntax error at or near \"SELEC\"",
        "ERROR:  current transaction is aborted",
        "ERROR:  missing data for column \"price\"",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected:?} missing from stderr:\n{stderr}"
        );
    }
    if mode() == Mode::Direct {
        return;
    }
    let proxied = run_psql_script(&env.url(SCRAM, TEST_DB, "disable"), env.port());
    assert_eq!(
        proxied.0,
        direct.0,
        "psql stdout differs through the proxy{}",
        env.proxy_log()
    );
    assert_eq!(
        proxied.1,
        direct.1,
        "psql stderr differs through the proxy{}",
        env.proxy_log()
    );
}

/// The value of a pgbench summary line such as `number of failed transactions: 0 (0.000%)`.
fn summary_number(out: &ProgramOutput, label: &str) -> u64 {
    let line = out
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} line in pgbench output: {out}"));
    line.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable {label:?} line in pgbench output: {out}"))
}

#[test]
fn pgbench_simple_extended_and_prepared() {
    let env = env();
    env.cluster.create_database("pgbench_db").unwrap();
    run_ok(
        pgbench(env.port(), SCRAM, "pgbench_db").args(["-i", "-s", "1", "-q"]),
        Duration::from_secs(300),
    )
    .unwrap();
    for query_mode in ["simple", "extended", "prepared"] {
        let out = run_ok(
            pgbench(env.port(), SCRAM, "pgbench_db")
                .args(["-M", query_mode, "-T", "3", "-c", "4", "-j", "2"]),
            Duration::from_secs(120),
        )
        .unwrap_or_else(|e| panic!("pgbench -M {query_mode}: {e:#}{}", env.proxy_log()));
        assert!(
            out.stdout.contains(&format!("query mode: {query_mode}")),
            "{out}"
        );
        let processed = summary_number(&out, "number of transactions actually processed: ");
        let failed = summary_number(&out, "number of failed transactions: ");
        assert!(
            processed > 0,
            "pgbench -M {query_mode} processed nothing: {out}"
        );
        assert_eq!(failed, 0, "pgbench -M {query_mode} had failures: {out}");
    }
}

#[test]
fn psycopg_session() {
    let env = env();
    let out = run_ok(
        &mut python(
            &python_script("psycopg_session.py"),
            &[&env.url(SCRAM, TEST_DB, "disable"), "psycopg_items"],
        ),
        Duration::from_secs(300),
    )
    .unwrap_or_else(|e| panic!("{e:#}{}", env.proxy_log()));
    assert!(
        out.stdout.contains("psycopg session: all checks passed"),
        "{out}"
    );
}
