//! The stock PostgreSQL client programs (`psql`, `pgbench`) and Python psycopg scripts, run with
//! a time limit and their output captured.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cluster::{pg_bindir, Login};

/// What a finished program printed.
#[derive(Debug, Clone)]
pub struct ProgramOutput {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl ProgramOutput {
    /// Standard output followed by standard error.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for ProgramOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` with no stdin, killing it after `timeout`; any exit status is returned.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<ProgramOutput> {
    // Files rather than pipes: nothing has to drain them while we wait for the exit.
    let dir = tempfile::tempdir()?;
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path)?)
        .stderr(fs::File::create(&err_path)?)
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{cmd:?} still running after {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                fs::read_to_string(&out_path).unwrap_or_default(),
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(ProgramOutput {
        status,
        stdout: String::from_utf8_lossy(&fs::read(&out_path)?).into_owned(),
        stderr: String::from_utf8_lossy(&fs::read(&err_path)?).into_owned(),
    })
}

/// Runs `cmd` like [`run`] and fails, showing both outputs, unless it exits 0.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<ProgramOutput> {
    let out = run(cmd, timeout)?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {out}");
    }
    Ok(out)
}

/// `psql` connecting to `url`, ignoring any `~/.psqlrc`.
pub fn psql(url: &str) -> Command {
    let mut cmd = Command::new(tool("psql"));
    cmd.arg("-X").arg("--dbname").arg(url);
    neutral_env(&mut cmd);
    cmd
}

/// `pgbench` for `login` on `127.0.0.1:port`, database `db`; add the mode's own arguments.
pub fn pgbench(port: u16, login: Login, db: &str) -> Command {
    let mut cmd = Command::new(tool("pgbench"));
    neutral_env(&mut cmd);
    cmd.env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", login.user)
        .env("PGDATABASE", db)
        .env("PGSSLMODE", "disable");
    if let Some(password) = login.password {
        cmd.env("PGPASSWORD", password);
    }
    cmd
}

/// `python3` (or `$QPROXY_TEST_PYTHON`) running `script` with `args`.
pub fn python(script: &Path, args: &[&str]) -> Command {
    let python = std::env::var_os("QPROXY_TEST_PYTHON").unwrap_or_else(|| "python3".into());
    let mut cmd = Command::new(python);
    cmd.arg(script).args(args);
    neutral_env(&mut cmd);
    cmd
}

/// A file of this crate's `python/` directory.
pub fn python_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// The server's own copy of a client program, so the tests do not depend on Debian's wrapper.
fn tool(name: &str) -> PathBuf {
    match pg_bindir() {
        Ok(dir) if dir.join(name).exists() => dir.join(name),
        _ => PathBuf::from(name),
    }
}

/// Removes libpq settings the developer's shell may carry, and pins the output language.
fn neutral_env(cmd: &mut Command) {
    for var in [
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "PGSSLMODE",
        "PGSERVICE",
        "PGOPTIONS",
        "PGPASSFILE",
        "PGAPPNAME",
        "PGCHANNELBINDING",
        "PGSSLROOTCERT",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("LC_ALL", "C.UTF-8")
        .env("PGCONNECT_TIMEOUT", "30")
        .env("PAGER", "cat")
        .env("PSQL_PAGER", "cat");
}
