//! `ServeArgs::resolve`: flags over env over file over defaults, and the
//! checks on what comes out.

use super::*;

/// An error's message followed by its sources', as `qproxy serve` prints
/// it (anyhow's `{:#}`).
pub(crate) trait Chain {
    fn chain(&self) -> String;
}

impl<E: std::error::Error> Chain for E {
    fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = self.source();
        while let Some(e) = source {
            text.push_str(": ");
            text.push_str(&e.to_string());
            source = e.source();
        }
        text
    }
}
use std::io::Write;

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn flags_win_over_file_and_file_over_defaults() {
    let f = file(
        "upstream = \"postgres://file\"\nlisten = \"127.0.0.1:7000\"\nshutdown_grace = 2.5\n\
         [analyzer.n_plus_one]\nthreshold = 8\n[analyzer.unindexed]\nmin_table_rows = 500\n\
         [analyzer.offset_pagination]\nmin_offset = 200\nerror_offset = 5000\n",
    );
    let args = ServeArgs {
        listen: Some("127.0.0.1:8000".parse().unwrap()),
        config: Some(f.path().to_owned()),
        ..Default::default()
    };
    let c = args.resolve().unwrap();
    assert_eq!(c.listen.port(), 8000);
    assert_eq!(c.upstream.host, "file");
    assert_eq!(c.shutdown_grace, Duration::from_millis(2500));
    assert_eq!(c.store_writer.final_flush_timeout, c.shutdown_grace);
    assert_eq!(c.store_writer.pending_max, 100_000);
    assert_eq!(c.admin_listen.port(), 9930);
    assert_eq!(c.metrics_top_k, 100);
    assert!(
        matches!(&c.store, StoreTarget::Sqlite(p) if p == &PathBuf::from(".qproxy/findings.db"))
    );
    assert_eq!(c.store_writer.retention, None);
    assert_eq!(
        c.instance,
        default_instance(&qproxy_analyzer::store::host_name(), c.listen)
    );
    assert_eq!(c.analysis.analyzer.n_plus_one.threshold, 8);
    assert_eq!(c.analysis.analyzer.unindexed.min_table_rows, 500);
    assert_eq!(c.analysis.analyzer.n_plus_one.repeated_threshold, 3);
    let paging = &c.analysis.analyzer.offset_pagination;
    assert_eq!((paging.min_offset, paging.error_offset), (200, 5000));
    let flagged = ServeArgs {
        offset_pagination_min_offset: Some(50),
        config: Some(f.path().to_owned()),
        ..Default::default()
    };
    let c = flagged.resolve().unwrap();
    assert_eq!(c.analysis.analyzer.offset_pagination.min_offset, 50);
    assert_eq!(c.analysis.analyzer.offset_pagination.error_offset, 5000);
    assert_eq!(c.max_held_bytes, 256 << 20);
    assert_eq!(c.max_startup_connections, 2500);
    assert_eq!(c.tracker_limits.max_statements_per_message, 1000);
    assert_eq!(c.analysis.analyzer.max_statements_per_text, 1000);
}

#[test]
fn limits_follow_each_other_and_are_checked() {
    let base = || ServeArgs {
        upstream: Some("postgres://h".into()),
        ..Default::default()
    };
    let c = ServeArgs {
        max_connections: Some(8),
        max_statements_per_message: Some(50),
        max_held_bytes: Some(1 << 20),
        ..base()
    }
    .resolve()
    .unwrap();
    assert_eq!(c.max_startup_connections, 2);
    assert_eq!(c.tracker_limits.max_statements_per_message, 50);
    assert_eq!(c.analysis.analyzer.max_statements_per_text, 50);
    assert_eq!(c.max_held_bytes, 1 << 20);
    // Never more startup slots than connections, never none.
    let c = ServeArgs {
        max_connections: Some(3),
        max_startup_connections: Some(10),
        ..base()
    }
    .resolve()
    .unwrap();
    assert_eq!(c.max_startup_connections, 3);
    let c = ServeArgs {
        max_connections: Some(2),
        ..base()
    }
    .resolve()
    .unwrap();
    assert_eq!(c.max_startup_connections, 1);
    for bad in [0, 65_536] {
        let err = ServeArgs {
            max_statements_per_message: Some(bad),
            ..base()
        }
        .resolve()
        .unwrap_err()
        .chain();
        assert!(err.contains("max_statements_per_message"), "{err}");
    }
}

#[test]
fn trace_url_from_flag_or_file_links_trace_ids_and_is_checked() {
    let f = file(
        "upstream = \"postgres://file\"\ntrace_url = \"https://tempo.example/trace/{trace_id}\"\n\
         [analyzer]\nmax_routes = 7\n",
    );
    let from_file = ServeArgs {
        config: Some(f.path().to_owned()),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(
        from_file
            .trace_link("0af7651916cd43dd8448eb211c80319c")
            .as_deref(),
        Some("https://tempo.example/trace/0af7651916cd43dd8448eb211c80319c")
    );
    assert_eq!(from_file.analysis.analyzer.max_routes, 7);
    let base = || ServeArgs {
        upstream: Some("postgres://h".into()),
        ..Default::default()
    };
    assert_eq!(base().resolve().unwrap().trace_link("ab"), None);
    let flag = ServeArgs {
        trace_url: Some("http://jaeger:16686/trace/{trace_id}?x=1".into()),
        config: Some(f.path().to_owned()),
        ..base()
    }
    .resolve()
    .unwrap();
    assert_eq!(
        flag.trace_link("ab").as_deref(),
        Some("http://jaeger:16686/trace/ab?x=1")
    );
    for (bad, why) in [
        ("https://tempo.example/trace/", "placeholder"),
        ("javascript:alert(1)//{trace_id}", "http"),
        ("https://t.example/{trace_id}\"><script>", "quote"),
    ] {
        let err = ServeArgs {
            trace_url: Some(bad.into()),
            ..base()
        }
        .resolve()
        .unwrap_err()
        .chain();
        assert!(err.contains("--trace-url") && err.contains(why), "{err}");
    }
}

#[test]
fn request_and_timing_thresholds_from_flags_env_names_and_file() {
    let f = file(
        "upstream = \"postgres://file\"\nquery_budget = 80\nslow_query_ms = 250\n\
         [analyzer.n_plus_one]\nwrite_threshold = 9\n\
         [analyzer.slow_query]\nmin_executions = 7\nsingle_execution = \"3s\"\n\
         [analyzer.idle_in_transaction]\nthreshold = \"2s\"\n",
    );
    let args = ServeArgs {
        config: Some(f.path().to_owned()),
        idle_in_transaction_ms: Some(1500),
        ..Default::default()
    };
    let a = args.resolve().unwrap().analysis.analyzer;
    assert_eq!(a.n_plus_one.write_threshold, 9);
    assert_eq!(a.too_many_queries.budget, 80);
    assert_eq!(a.slow_query.threshold, Duration::from_millis(250));
    assert_eq!(a.slow_query.min_executions, 7);
    assert_eq!(a.slow_query.single_execution, Duration::from_secs(3));
    // The flag wins over the file's [analyzer.idle_in_transaction].
    assert_eq!(a.idle_in_transaction.threshold, Duration::from_millis(1500));

    // The flags' environment variables are the documented ones.
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let cmd = <Cli as clap::CommandFactory>::command();
    let envs: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    for env in [
        "QPROXY_N_PLUS_ONE_WRITE_THRESHOLD",
        "QPROXY_SLOW_QUERY_MS",
        "QPROXY_QUERY_BUDGET",
        "QPROXY_IDLE_IN_TRANSACTION_MS",
    ] {
        assert!(envs.iter().any(|e| e == env), "{env} not in {envs:?}");
    }
    let cli =
        Cli::try_parse_from(["qproxy", "--query-budget", "12", "--slow-query-ms", "40"]).unwrap();
    assert_eq!(cli.serve.query_budget, Some(12));
    assert_eq!(cli.serve.slow_query_ms, Some(40));
}

#[test]
fn fleet_store_settings_from_file_flags_and_defaults() {
    let f = file(
        "upstream = \"postgres://file\"\n\
         store = \"postgres://fleet:s3cret@db.internal/findings?sslmode=disable\"\n\
         store_schema = \"staging\"\nstore_retention = \"30d\"\ninstance = \"shop-1\"\n",
    );
    let from_file = ServeArgs {
        config: Some(f.path().to_owned()),
        ..Default::default()
    };
    let c = from_file.clone().resolve_with_env(|_| None).unwrap();
    let StoreTarget::Postgres { url, schema } = &c.store else {
        panic!("{:?}", c.store)
    };
    assert_eq!(
        (url.host.as_str(), schema.as_str()),
        ("db.internal", "staging")
    );
    assert_eq!(
        c.store_writer.retention,
        Some(Duration::from_secs(30 * 86_400))
    );
    assert_eq!(c.instance, "shop-1");
    let shown = format!("{c:?} {:?}", ServeArgs::from_file(f.path()).unwrap());
    assert!(!shown.contains("s3cret"), "{shown}");

    // Flags win; the default instance names the host and the listen address.
    let flagged = ServeArgs {
        instance: Some("shop-2".into()),
        store: Some(StoreArg::from("/var/lib/qproxy/findings.db")),
        ..from_file
    };
    let c = flagged.resolve_with_env(|_| None).unwrap();
    assert_eq!(c.instance, "shop-2");
    assert!(matches!(c.store, StoreTarget::Sqlite(_)));
    assert_eq!(
        default_instance("web-1", "0.0.0.0:6432".parse().unwrap()),
        "web-1:0.0.0.0:6432"
    );

    let base = || ServeArgs {
        upstream: Some("postgres://h".into()),
        ..Default::default()
    };
    for (args, expected) in [
        (
            ServeArgs {
                store_retention: Some("30".into()),
                ..base()
            },
            "store_retention: invalid duration `30`",
        ),
        (
            ServeArgs {
                store_retention: Some("0d".into()),
                ..base()
            },
            "more than zero",
        ),
        (
            ServeArgs {
                instance: Some(" ".into()),
                ..base()
            },
            "instance must be",
        ),
        (
            ServeArgs {
                store: Some(StoreArg::from("postgres://db/x")),
                store_schema: Some("a-b".into()),
                ..base()
            },
            "invalid store schema name `a-b`",
        ),
    ] {
        let err = args.resolve_with_env(|_| None).unwrap_err().chain();
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn clear_errors() {
    assert!(ServeArgs::default()
        .resolve()
        .unwrap_err()
        .chain()
        .contains("--upstream"));
    let half_tls = ServeArgs {
        upstream: Some("postgres://h".into()),
        tls_cert: Some("c.pem".into()),
        ..Default::default()
    };
    assert!(half_tls.resolve().unwrap_err().chain().contains("together"));
    let f = file("upstreem = \"x\"\n");
    let typo = ServeArgs {
        config: Some(f.path().to_owned()),
        ..Default::default()
    };
    let err = typo.resolve().unwrap_err().chain();
    assert!(err.contains("upstreem"), "{err}");
    let f =
        file("upstream = \"postgres://h\"\n[analyzer.verification]\nconnections_per_second = 0\n");
    let stalled = ServeArgs {
        config: Some(f.path().to_owned()),
        ..Default::default()
    };
    let err = stalled.resolve().unwrap_err().chain();
    assert!(err.contains("connections_per_second"), "{err}");
}

fn with_upstream(url: &str) -> ServeArgs {
    ServeArgs {
        upstream: Some(url.into()),
        ..Default::default()
    }
}

/// An environment holding only `vars`.
fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

#[test]
fn upstream_password_from_env_file_or_pgpassword() {
    let url = "postgres://app@db:5432/shop";
    let c = with_upstream(url)
        .resolve_with_env(env(&[(UPSTREAM_PASSWORD_ENV, "from-env")]))
        .unwrap();
    assert_eq!(c.upstream.password.as_deref(), Some("from-env"));
    assert_eq!(c.upstream_password_source, Some(PasswordSource::Env));

    // The first line of the file, without its line ending.
    let f = file("from-file\r\nignored\n");
    let args = ServeArgs {
        upstream_password_file: Some(f.path().to_owned()),
        ..with_upstream(url)
    };
    let c = args.resolve_with_env(env(&[])).unwrap();
    assert_eq!(c.upstream.password.as_deref(), Some("from-file"));
    assert_eq!(c.upstream_password_source, Some(PasswordSource::File));

    // PGPASSWORD only when nothing else gives one, as in libpq.
    let c = with_upstream(url)
        .resolve_with_env(env(&[("PGPASSWORD", "pg")]))
        .unwrap();
    assert_eq!(c.upstream.password.as_deref(), Some("pg"));
    let c = with_upstream("postgres://app:in-url@db/shop")
        .resolve_with_env(env(&[("PGPASSWORD", "pg")]))
        .unwrap();
    assert_eq!(c.upstream.password.as_deref(), Some("in-url"));
    assert_eq!(c.upstream_password_source, Some(PasswordSource::Url));
    let c = with_upstream(url).resolve_with_env(env(&[])).unwrap();
    assert_eq!(
        (c.upstream.password, c.upstream_password_source),
        (None, None)
    );
}

#[test]
fn upstream_password_given_twice_or_unreadable_is_an_error() {
    let twice = with_upstream("postgres://app:in-url@db/shop")
        .resolve_with_env(env(&[(UPSTREAM_PASSWORD_ENV, "from-env")]))
        .unwrap_err()
        .chain();
    assert!(
        twice.contains("more than once") && twice.contains(UPSTREAM_PASSWORD_ENV),
        "{twice}"
    );
    assert!(
        !twice.contains("in-url") && !twice.contains("from-env"),
        "{twice}"
    );
    let missing = ServeArgs {
        upstream_password_file: Some("/nonexistent/password".into()),
        ..with_upstream("postgres://app@db/shop")
    };
    let err = missing.resolve_with_env(env(&[])).unwrap_err().chain();
    assert!(err.contains("/nonexistent/password"), "{err}");
    let empty = file("\n");
    let empty = ServeArgs {
        upstream_password_file: Some(empty.path().to_owned()),
        ..with_upstream("postgres://app@db/shop")
    };
    let err = empty.resolve_with_env(env(&[])).unwrap_err().chain();
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn no_debug_output_shows_the_upstream_password() {
    let args = with_upstream("postgres://app:hunter2@db/shop?password=hunter3");
    let shown = format!("{args:?}");
    assert!(shown.contains("app:***@db"), "{shown}");
    let config = args.resolve_with_env(env(&[])).unwrap();
    let shown = format!("{config:?} {args:?}", args = config.upstream);
    assert!(
        !shown.contains("hunter2") && !shown.contains("hunter3"),
        "{shown}"
    );
    // A URL that does not parse is not printed at all.
    let bad = with_upstream("postgres://app:hunter2@db:notaport/shop");
    assert!(!format!("{bad:?}").contains("hunter2"));
    let err = bad.resolve_with_env(env(&[])).unwrap_err().chain();
    assert!(!err.contains("hunter2"), "{err}");
}

mod example {
    use super::*;

    /// The commented example in the repository root must stay loadable and
    /// must spell out the defaults.
    #[test]
    fn example_config_loads_with_default_values() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../qproxy.example.toml");
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        let c = args
            .resolve_with_env(|_| None)
            .expect("example config resolves");
        let defaults = ServeArgs {
            upstream: Some("postgres://qproxy@127.0.0.1:5432/postgres".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.listen, defaults.listen);
        assert_eq!(c.shutdown_grace, defaults.shutdown_grace);
        assert_eq!(c.max_message_bytes, defaults.max_message_bytes);
        assert_eq!(c.max_held_bytes, defaults.max_held_bytes);
        assert_eq!(c.max_startup_connections, defaults.max_startup_connections);
        assert_eq!(
            c.tracker_limits.max_statements_per_message,
            defaults.tracker_limits.max_statements_per_message
        );
        assert_eq!(c.analysis.flush_interval, defaults.analysis.flush_interval);
        assert_eq!(c.store_writer, defaults.store_writer);
        assert_eq!(c.store.to_string(), defaults.store.to_string());
        assert_eq!(c.instance, defaults.instance);
        let (a, d) = (&c.analysis.analyzer, &defaults.analysis.analyzer);
        assert_eq!(a.n_plus_one.threshold, d.n_plus_one.threshold);
        assert_eq!(
            a.n_plus_one.repeated_threshold,
            d.n_plus_one.repeated_threshold
        );
        assert_eq!(a.unindexed, d.unindexed);
        assert_eq!(a.n_plus_one.write_threshold, d.n_plus_one.write_threshold);
        assert_eq!(a.slow_query, d.slow_query);
        assert_eq!(a.too_many_queries, d.too_many_queries);
        assert_eq!(a.idle_in_transaction, d.idle_in_transaction);
        assert_eq!(a.offset_pagination, d.offset_pagination);
        assert_eq!(a.verification, d.verification);
        assert_eq!(a.unbounded.warning_rows, d.unbounded.warning_rows);
        assert_eq!(a.correlation, d.correlation);
        assert_eq!(a.max_routes, d.max_routes);
    }

    /// Each default is defined once, in code, and `--help` prints that
    /// constant; the README's flag tables and qproxy.example.toml repeat
    /// the defaults for readers and must say what `--help` says.
    #[test]
    fn readme_and_example_config_state_the_defaults_help_prints() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let example: toml::Table =
            toml::from_str(&std::fs::read_to_string(root.join("qproxy.example.toml")).unwrap())
                .unwrap();
        let serve = <ServeArgs as clap::Args>::augment_args(clap::Command::new("serve"));
        let mut checked = 0;
        for arg in serve.get_arguments() {
            let (Some(long), Some(help)) = (arg.get_long(), arg.get_help()) else {
                continue;
            };
            let help = help.to_string();
            let Some((_, default)) = help.rsplit_once("[default: ") else {
                continue;
            };
            let default = default.trim_end_matches(']');
            // A default that is a rule ("half the CPUs, at least 1") is
            // prose everywhere; values have no spaces.
            if default.contains(' ') {
                continue;
            }
            let key = long.replace('-', "_");
            if let Some(value) = example.get(&key) {
                let value = match value {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                assert_eq!(value, default, "qproxy.example.toml: {key}");
            }
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `--{long} ")));
            if let Some(row) = row {
                // `\|` is a pipe inside a cell (`PATH\|URL`).
                let row = row.replace("\\|", "/");
                let cell = row.split('|').nth(2).unwrap_or("").trim().trim_matches('`');
                let mib = cell
                    .strip_suffix(" MiB")
                    .and_then(|n| n.parse::<usize>().ok())
                    .map(|n| (n << 20).to_string());
                assert!(
                    cell == default || mib.as_deref() == Some(default),
                    "README: --{long} says {cell}, --help says {default}"
                );
            }
            checked += 1;
        }
        // listen, admin_listen, store, ..., the analyzer thresholds.
        assert!(checked >= 20, "only {checked} defaults found in --help");
    }
}
