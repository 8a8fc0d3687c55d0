//! `qproxy fingerprint`: the fingerprint of SQL statements, one JSON object
//! per statement.

use std::io::{BufRead, Write};

use anyhow::Context;

/// Prints the fingerprints of `sql`, or of each non-empty line of stdin
/// when `sql` is empty.
pub fn run(sql: Vec<String>) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut print = |text: &str| -> anyhow::Result<()> {
        for fp in qproxy_analyzer::fingerprint::fingerprint_sql(text) {
            serde_json::to_writer(&mut out, &fp)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    };
    if sql.is_empty() {
        for line in std::io::stdin().lock().lines() {
            let line = line.context("reading stdin")?;
            if !line.trim().is_empty() {
                print(&line)?;
            }
        }
    } else {
        for text in &sql {
            print(text)?;
        }
    }
    Ok(())
}
