//! The `qproxy` command line.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use qproxy::admin::{AdminServer, Health};
use qproxy::analysis::store_target;
use qproxy::config::{LogFormat, PasswordSource, ServeArgs, StoreTarget};
use qproxy::metrics::Metrics;
use qproxy::server::Server;

/// A PostgreSQL proxy that finds N+1 queries, unindexed filters and
/// unbounded SELECTs.
#[derive(Debug, Parser)]
#[command(name = "qproxy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy in front of a PostgreSQL server.
    Serve(Box<ServeArgs>),
    /// Print the fingerprint of SQL statements, one JSON object per
    /// statement (reads one statement per line from stdin when no SQL is given).
    Fingerprint {
        /// SQL strings; each may hold several statements.
        sql: Vec<String>,
    },
    /// Print the findings report from the store; the exit code can gate CI.
    Report(Box<qproxy::commands::report::ReportArgs>),
    /// Start a throwaway PostgreSQL, run a workload with real problems
    /// through qproxy, and print the report.
    Demo(qproxy::commands::demo::DemoArgs),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Command::Report(args) = cli.command {
        return qproxy::commands::report::run(*args);
    }
    // A flag, unlike the environment, is visible to every user (`ps`).
    let on_command_line = |arg: &str| {
        matches
            .subcommand_matches("serve")
            .and_then(|serve| serve.value_source(arg))
            == Some(ValueSource::CommandLine)
    };
    let (upstream_on_command_line, store_on_command_line) =
        (on_command_line("upstream"), on_command_line("store"));
    let result = match cli.command {
        Command::Report(_) => unreachable!("handled above"),
        Command::Serve(args) => serve(*args, upstream_on_command_line, store_on_command_line),
        Command::Fingerprint { sql } => qproxy::commands::fingerprint::run(sql),
        Command::Demo(args) => demo(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qproxy: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("QPROXY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

fn serve(
    args: ServeArgs,
    upstream_on_command_line: bool,
    store_on_command_line: bool,
) -> anyhow::Result<()> {
    let config = args.resolve()?;
    init_logging(config.log_format);
    if store_on_command_line
        && matches!(&config.store, StoreTarget::Postgres { url, .. } if url.password.is_some())
    {
        tracing::warn!(
            "the findings store's password is on the command line, where any user can read it \
             (ps, /proc); give --store in QPROXY_STORE (from a secret) instead"
        );
    }
    if upstream_on_command_line && config.upstream_password_source == Some(PasswordSource::Url) {
        tracing::warn!(
            "the upstream password is on the command line, where any user can read it (ps, \
             /proc); give it in QPROXY_UPSTREAM_PASSWORD or --upstream-password-file instead"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let store = store_target::location(&config.store)
        .map_err(anyhow::Error::from)
        .and_then(|location| {
            Ok(qproxy::analysis::StoreSink::open_with(
                location,
                &config.instance,
                config.store_writer.clone(),
            )?)
        })
        .with_context(|| format!("cannot open the findings store {}", config.store))?;
    tracing::info!(
        store = %config.store,
        instance = %config.instance,
        retention_s = config.store_writer.retention.map(|r| r.as_secs()),
        "findings store open"
    );
    let store_stats = store.stats();
    runtime.block_on(async move {
        let config_analysis = config.analysis.clone();
        let admin_listen = config.admin_listen;
        let metrics_top_k = config.metrics_top_k;
        let check_timeout = config.connect_timeout.min(qproxy::admin::CHECK_INTERVAL);
        let mut server = Server::bind(config).await?;
        let events = server.take_events().expect("events not taken yet");
        let event_stats = server.context().sink.stats().clone();
        let metrics = Arc::new(
            Metrics::new(
                metrics_top_k,
                server.context().stats.clone(),
                event_stats.clone(),
            )
            .with_store_stats(store_stats),
        );
        let health = Arc::new(Health::default());
        let live = qproxy::admin::live::LiveFeed::new();
        let admin = AdminServer::bind(admin_listen, metrics.clone(), health.clone())
            .await
            .with_context(|| format!("cannot listen on {admin_listen} (--admin-listen)"))?
            .with_live_view(live.clone());
        let admin_addr = admin
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(
            admin_listen = %admin_addr,
            live_view = %format!("http://{admin_addr}/"),
            "admin server listening (/metrics, /healthz, /readyz, and the live view at /)"
        );
        let (admin_stop, admin_stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let checker = tokio::spawn(qproxy::admin::check_upstream(
            server.context().upstream.clone(),
            qproxy::admin::CHECK_INTERVAL,
            check_timeout,
            health.clone(),
            metrics.clone(),
            stopped(admin_stop_rx.clone()),
        ));
        let admin = tokio::spawn(admin.run(stopped(admin_stop_rx)));
        // Its own thread and runtime: nothing analysis does can hold up
        // accepting clients or the admin port, which run on this runtime.
        let analysis = qproxy::analysis::AnalysisThread::spawn(
            events,
            config_analysis,
            event_stats,
            Some(qproxy::analysis::catalog::CatalogConnector::new(
                server.context().upstream.clone(),
            )),
            Box::new(store),
            Some(metrics),
            Some(live),
        )
        .context("cannot start the analysis thread")?;
        let draining = health.clone();
        server
            .run(async move {
                shutdown_signal().await;
                // Not ready from the first moment of the drain, so the
                // load balancer stops sending new clients.
                draining.set_draining();
            })
            .await;
        // Sessions are drained (or past their grace period): analyse what is
        // queued, end every open request and flush.
        analysis.finish().await;
        let _ = admin_stop.send(true);
        let _ = admin.await;
        let _ = checker.await;
        anyhow::Ok(())
    })
}

fn demo(args: qproxy::commands::demo::DemoArgs) -> anyhow::Result<()> {
    init_logging(LogFormat::Text);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(qproxy::commands::demo::run(args))
}

/// Resolves on SIGTERM or SIGINT: both drain gracefully.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install SIGTERM handler");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
