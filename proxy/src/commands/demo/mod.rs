//! `qproxy demo`: the whole product in one command. Starts a throwaway
//! PostgreSQL, loads a small blog schema with enough rows to matter, runs
//! qproxy in this process in front of it, drives an app-like workload with
//! one of every finding kind plus clean controls, then stops the proxy
//! (which flushes its findings) and prints the report.

pub mod postgres;
mod workload;

use anyhow::{Context, Result};
use tokio_postgres::NoTls;

use crate::app::{self, Events};
use crate::config::ServeArgs;
use crate::config::StoreArg;

pub use postgres::Postgres;

/// Options of `qproxy demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Keep the findings store here instead of in the throwaway directory.
    #[arg(long, value_name = "PATH")]
    pub store: Option<std::path::PathBuf>,
}

/// Runs the demo end to end and prints the report to stdout.
pub async fn run(_args: DemoArgs) -> Result<()> {
    eprintln!("demo: starting a throwaway PostgreSQL ...");
    let pg = Postgres::start_default()?;
    eprintln!("demo: loading the schema (50,000 posts, 100,000 comments, 100,000 events) ...");
    let (setup, conn) = tokio_postgres::connect(&pg.url("postgres"), NoTls).await?;
    tokio::spawn(conn);
    setup.batch_execute("CREATE DATABASE blog").await?;
    drop(setup);
    let (setup, conn) = tokio_postgres::connect(&pg.url("blog"), NoTls).await?;
    tokio::spawn(conn);
    setup
        .batch_execute(workload::SCHEMA)
        .await
        .context("loading the demo schema")?;
    // With hypopg, index suggestions are checked against the planner.
    if let Err(e) = setup
        .batch_execute("CREATE EXTENSION IF NOT EXISTS hypopg")
        .await
    {
        eprintln!("demo: hypopg is not installed ({e}); index suggestions will be unverified");
    }
    drop(setup);

    let store_path = _args
        .store
        .clone()
        .unwrap_or_else(|| pg.dir().join("findings.db"));
    let args = ServeArgs {
        listen: Some("127.0.0.1:0".parse()?),
        // Port 0: the demo must not collide with a proxy running here.
        admin_listen: Some("127.0.0.1:0".parse()?),
        upstream: Some(pg.url("blog").into()),
        store: Some(StoreArg::from(store_path.as_path())),
        instance: Some("demo".into()),
        shutdown_grace: Some(5.0),
        ..Default::default()
    };
    let proxy = app::start(args.resolve()?, Events::Analysed).await?;
    let port = proxy.listen_addr().port();
    eprintln!("demo: qproxy listening on 127.0.0.1:{port}; running the workload through it ...");
    let url = format!("postgres://postgres@127.0.0.1:{port}/blog?sslmode=disable");
    let requests = workload::run(&url).await?;
    eprintln!("demo: {requests} requests done; stopping the proxy ...");
    // Drains the sessions, then analyses what is queued and flushes.
    proxy.shutdown().await;
    let report = qproxy_analyzer::store::Store::open_read_only(&store_path)?
        .load_report(&qproxy_analyzer::store::RunSelection::Latest)?;
    let color = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none();
    let options = qproxy_analyzer::report::RenderOptions {
        color,
        ..Default::default()
    };
    print!(
        "{}",
        qproxy_analyzer::report::render(&report, qproxy_analyzer::report::Format::Text, options)
    );
    eprintln!(
        "demo: the same report as JSON: qproxy report --store {} --format json (the store is deleted when the demo exits unless --store is given)",
        store_path.display()
    );
    Ok(())
}
