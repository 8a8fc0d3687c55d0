//! The `qproxy` command line.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use qproxy::app;
use qproxy::config::StoreTarget;
use qproxy::config::{LogFormat, PasswordSource, ServeArgs};
use tokio::signal::unix::{signal, Signal, SignalKind};

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
        // The event's fields at the top level, and the span it happened
        // in (a session's carries its connection id, peer, user and
        // database) under "span".
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init();
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
    runtime.block_on(async move {
        // Installed before the listener is bound, so a SIGTERM that comes
        // as soon as the port answers drains instead of killing.
        let signals = ShutdownSignals::install();
        let app = app::start(config, app::Events::Analysed).await?;
        signals.recv().await;
        app.shutdown().await;
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

/// SIGTERM and SIGINT: both drain gracefully.
struct ShutdownSignals {
    /// `None` where the handler could not be installed: that signal then
    /// keeps its default action (the process ends without draining).
    term: Option<Signal>,
    interrupt: Option<Signal>,
}

impl ShutdownSignals {
    /// Installs the handlers (within the runtime).
    fn install() -> ShutdownSignals {
        let install = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, signal = name, "cannot install signal handler");
                None
            }
        };
        ShutdownSignals {
            term: install(SignalKind::terminate(), "SIGTERM"),
            interrupt: install(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// Resolves on SIGTERM or SIGINT.
    async fn recv(self) {
        async fn received(signal: Option<Signal>) {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = received(self.term) => tracing::info!("SIGTERM received"),
            () = received(self.interrupt) => tracing::info!("SIGINT received"),
        }
    }
}
