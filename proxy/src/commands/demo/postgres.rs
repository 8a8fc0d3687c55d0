//! A throwaway PostgreSQL cluster: `initdb` into a temporary directory
//! under `/tmp`, started on a free port on 127.0.0.1 with its Unix socket
//! inside that directory, stopped (and deleted) on drop. When run as root
//! the server runs as the `postgres` OS user, since PostgreSQL refuses to
//! run as root.
//!
//! `qproxy demo` runs its workload against one; the integration tests'
//! `PgCluster` is this plus TLS, `pg_hba.conf` rules and test roles, added
//! between [`Postgres::init`] and [`Postgres::start`].

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The settings file every cluster includes from `postgresql.conf`; it is
/// rewritten before each start with the port picked for it.
const SETTINGS_FILE: &str = "qproxy_cluster.conf";

/// Attempts to start on a fresh port: a port free when picked may be taken
/// by another process before the server binds it.
const START_ATTEMPTS: usize = 3;

/// Why a throwaway cluster could not be created, started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// No PostgreSQL server binaries were found.
    #[error("PostgreSQL server binaries not found (install PostgreSQL 15, or set PG_BINDIR)")]
    NotInstalled(#[source] std::io::Error),
    /// A file or directory of the cluster could not be written.
    #[error("cannot {what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A server program (initdb, pg_ctl, psql, ...) failed.
    #[error("{program} failed: {detail}")]
    Program {
        /// The program.
        program: String,
        /// Its exit status and output (and the server log where it helps).
        detail: String,
    },
    /// The server started but did not accept connections in time.
    #[error("PostgreSQL not ready on port {port} after {timeout:?}: {detail}")]
    NotReady {
        /// The server's port.
        port: u16,
        /// How long it was given.
        timeout: Duration,
        /// The last readiness check's output and the server log.
        detail: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PostgresError {
    let what = what.into();
    move |source| PostgresError::Io { what, source }
}

/// How to build a cluster.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Start of the temporary directory's name.
    pub prefix: &'static str,
    /// `postgresql.conf` lines after the ones every cluster gets (port,
    /// listen address, socket directory, durability off).
    pub settings: String,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            prefix: "qproxy-pg-",
            settings: String::new(),
        }
    }
}

/// A throwaway server, initialised and (after [`Postgres::start`]) running.
#[derive(Debug)]
pub struct Postgres {
    /// Root of everything the cluster owns; mode 0755 so `postgres` can
    /// traverse it. Removed on drop, after the server is stopped.
    dir: tempfile::TempDir,
    bindir: PathBuf,
    data: PathBuf,
    /// Owned by the server's user: the Unix socket and the server log.
    run: PathBuf,
    port: u16,
    settings: String,
    /// Whether server-side programs run as the `postgres` OS user (we are
    /// root).
    as_postgres: bool,
}

impl Postgres {
    /// Creates and starts a cluster with `trust` authentication, with the
    /// default options: what `qproxy demo` needs.
    pub fn start_default() -> Result<Postgres, PostgresError> {
        let mut pg = Postgres::init(PostgresOptions {
            prefix: "qproxy-demo-",
            ..PostgresOptions::default()
        })?;
        pg.start()?;
        Ok(pg)
    }

    /// Runs `initdb` (trust authentication, UTF8, no locale) into a new
    /// temporary directory; the server is not started yet, so the caller
    /// may add files to [`Postgres::data_dir`] first.
    pub fn init(options: PostgresOptions) -> Result<Postgres, PostgresError> {
        let bindir = bindir()?;
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix(options.prefix)
            .tempdir_in("/tmp")
            .map_err(io("create a directory for PostgreSQL under /tmp"))?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .map_err(io("make the PostgreSQL directory traversable"))?;
        let data = dir.path().join("data");
        let run = dir.path().join("run");
        fs::create_dir(&run).map_err(io("create the socket directory"))?;
        fs::create_dir(&data).map_err(io("create the data directory"))?;
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700))
            .map_err(io("restrict the data directory"))?;
        let pg = Postgres {
            dir,
            bindir,
            data,
            run,
            port: 0,
            settings: options.settings,
            as_postgres,
        };
        pg.give_to_server(&pg.run)?;
        pg.give_to_server(&pg.data)?;
        let out = pg
            .server_command("initdb")
            .arg("-D")
            .arg(&pg.data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .output()
            .map_err(io("run initdb"))?;
        check("initdb", &out)?;
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(pg.data.join("postgresql.conf"))
            .map_err(io("open postgresql.conf"))?;
        writeln!(conf, "include_if_exists = '{SETTINGS_FILE}'")
            .map_err(io("write postgresql.conf"))?;
        Ok(pg)
    }

    /// Starts the server on a free port and waits until it accepts
    /// connections.
    pub fn start(&mut self) -> Result<(), PostgresError> {
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            self.port = free_port()?;
            self.write_settings()?;
            match self.start_again() {
                Ok(()) => return Ok(()),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    /// Starts a stopped server again on the same port.
    pub fn start_again(&self) -> Result<(), PostgresError> {
        let out = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "start"])
            .output()
            .map_err(io("run pg_ctl start"))?;
        if !out.status.success() {
            return Err(PostgresError::Program {
                program: "pg_ctl start".into(),
                detail: format!("{}\n--- server log ---\n{}", describe(&out), self.log()),
            });
        }
        self.wait_ready(Duration::from_secs(60))
    }

    /// Stops the server in `fast` mode: sessions are terminated, then it
    /// exits.
    pub fn stop(&self) -> Result<(), PostgresError> {
        let out = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .output()
            .map_err(io("run pg_ctl stop"))?;
        check("pg_ctl stop", &out)
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for the `postgres` superuser (trust) and a database.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// The directory the cluster lives in; callers may keep their own
    /// files there (the demo's findings store).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory (`postgresql.conf`, `pg_hba.conf`).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The directory holding the server's Unix-domain socket.
    pub fn socket_dir(&self) -> &Path {
        &self.run
    }

    /// The directory holding `psql`, `pgbench` and the server binaries.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The server log so far (for error messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// Whether server programs run as the `postgres` OS user.
    pub fn runs_as_postgres(&self) -> bool {
        self.as_postgres
    }

    /// A command for one of the server's programs, run as the server's
    /// user.
    pub fn server_command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        let mut cmd = if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        };
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Makes `path` (recursively) the server's when it runs as `postgres`,
    /// so it can read files the caller wrote into the data directory.
    pub fn give_to_server(&self, path: &Path) -> Result<(), PostgresError> {
        if !self.as_postgres {
            return Ok(());
        }
        let out = Command::new("chown")
            .arg("-R")
            .arg("postgres:postgres")
            .arg(path)
            .output()
            .map_err(io("run chown"))?;
        check("chown", &out)
    }

    fn write_settings(&self) -> Result<(), PostgresError> {
        let settings = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{run}'\n\
             shared_buffers = 64MB\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             {extra}",
            port = self.port,
            run = self.run.display(),
            extra = self.settings,
        );
        let path = self.data.join(SETTINGS_FILE);
        fs::write(&path, settings).map_err(io("write the cluster's settings"))?;
        self.give_to_server(&path)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<(), PostgresError> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = Command::new(self.bindir.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", "5"])
                .output()
                .map_err(io("run pg_isready"))?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(PostgresError::NotReady {
                    port: self.port,
                    timeout,
                    detail: format!("{}\n--- server log ---\n{}", describe(&out), self.log()),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.run.join("postgres.log")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate: nothing in a throwaway cluster needs a clean
        // shutdown. A server already stopped (or a directory already
        // removed) makes this fail, which is fine.
        let _ = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The PostgreSQL server binaries: `$PG_BINDIR`, Debian's PostgreSQL 15
/// location, or `pg_config --bindir`.
pub fn bindir() -> Result<PathBuf, PostgresError> {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return Ok(dir.into());
    }
    let debian = PathBuf::from("/usr/lib/postgresql/15/bin");
    if debian.join("postgres").exists() {
        return Ok(debian);
    }
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .map_err(PostgresError::NotInstalled)?;
    check("pg_config --bindir", &out)?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16, PostgresError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io("find a free port"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn check(program: &str, out: &Output) -> Result<(), PostgresError> {
    if out.status.success() {
        return Ok(());
    }
    Err(PostgresError::Program {
        program: program.into(),
        detail: describe(out),
    })
}

/// Exit status, stdout and stderr of a finished command, for error
/// messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
