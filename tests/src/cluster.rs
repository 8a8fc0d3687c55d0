//! A throwaway PostgreSQL cluster started from the installed server binaries.
//!
//! `initdb` runs into a fresh directory under `/tmp` (as the `postgres` OS user when the tests run
//! as root, since the server refuses to run as root), with TLS on, a free TCP port on 127.0.0.1,
//! its Unix socket inside the directory, and one role per authentication method so that every
//! auth path a client can take through the proxy has a user to take it.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use crate::certs::TlsFiles;
use crate::watchdog::{shell_quote, Watchdog};

/// A role of the test cluster and its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Login {
    /// The role name.
    pub user: &'static str,
    /// Its password; `None` for roles that authenticate by `trust`.
    pub password: Option<&'static str>,
}

/// The bootstrap superuser, `trust` over TCP and the socket.
pub const SUPERUSER: Login = Login {
    user: "postgres",
    password: None,
};
/// A role whose `pg_hba.conf` line says `trust`.
pub const TRUST: Login = Login {
    user: "trust_user",
    password: None,
};
/// A role with an MD5-hashed password and an `md5` line.
pub const MD5: Login = Login {
    user: "md5_user",
    password: Some("md5-secret"),
};
/// A role with a SCRAM verifier and a `scram-sha-256` line.
pub const SCRAM: Login = Login {
    user: "scram_user",
    password: Some("scram-secret"),
};
/// A role with a `password` (cleartext) line.
pub const CLEARTEXT: Login = Login {
    user: "password_user",
    password: Some("clear-secret"),
};
/// A SCRAM role that may connect only over TLS (`hostssl`, and `hostnossl ... reject`).
pub const TLS_ONLY: Login = Login {
    user: "tls_user",
    password: Some("tls-secret"),
};

/// The database every role may create tables in; tests use it unless they need their own.
pub const TEST_DB: &str = "qproxy_test";

const PG_HBA: &str = "\
# TYPE    DATABASE USER          ADDRESS        METHOD
local     all      all                          trust
hostnossl all      tls_user      127.0.0.1/32   reject
hostssl   all      tls_user      127.0.0.1/32   scram-sha-256
host      all      postgres      127.0.0.1/32   trust
host      all      trust_user    127.0.0.1/32   trust
host      all      md5_user      127.0.0.1/32   md5
host      all      password_user 127.0.0.1/32   password
host      all      all           127.0.0.1/32   scram-sha-256
";

const SETUP_SQL: &str = "\
CREATE ROLE trust_user LOGIN;
CREATE ROLE scram_user LOGIN PASSWORD 'scram-secret';
CREATE ROLE password_user LOGIN PASSWORD 'clear-secret';
CREATE ROLE tls_user LOGIN PASSWORD 'tls-secret';
SET password_encryption = 'md5';
CREATE ROLE md5_user LOGIN PASSWORD 'md5-secret';
RESET password_encryption;
";

/// A running (or stopped) throwaway PostgreSQL server.
#[derive(Debug)]
pub struct PgCluster {
    /// Stops the server and removes `dir` when dropped or when the test process exits.
    /// Declared first so it runs before `dir` is removed.
    watchdog: Watchdog,
    /// Root of everything the cluster owns; mode 0755 so `postgres` can traverse it.
    dir: TempDir,
    bindir: PathBuf,
    data: PathBuf,
    /// Owned by `postgres`: the Unix socket and the server log live here.
    run: PathBuf,
    port: u16,
    tls: TlsFiles,
    /// Whether server-side commands must run as the `postgres` OS user (we are root).
    as_postgres: bool,
}

impl PgCluster {
    /// Creates, configures and starts a new cluster with the test roles and [`TEST_DB`].
    pub fn start() -> Result<Self> {
        let bindir = pg_bindir()?;
        let as_postgres = nix::unistd::Uid::effective().is_root();
        let dir = tempfile::Builder::new()
            .prefix("qproxy-pg-")
            .tempdir_in("/tmp")?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let data = dir.path().join("data");
        let run = dir.path().join("run");
        fs::create_dir(&run)?;
        fs::create_dir(&data)?;
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700))?;
        let tls_dir = dir.path().join("tls");
        fs::create_dir(&tls_dir)?;
        let tls = TlsFiles::generate(&tls_dir, "qproxy test PostgreSQL CA")?;
        if as_postgres {
            chown_postgres(&run)?;
            chown_postgres(&data)?;
            chown_postgres(&tls_dir)?;
            chown_postgres(&tls.server_key)?;
        }

        let pg_ctl = bindir.join("pg_ctl");
        let mut cleanup = format!(
            "{} -D {} -m immediate -w -t 30 stop\nrm -rf {}",
            pg_ctl.display(),
            shell_quote(&data.to_string_lossy()),
            shell_quote(&dir.path().to_string_lossy())
        );
        if as_postgres {
            cleanup = format!("runuser -u postgres -- {cleanup}");
        }
        let watchdog = Watchdog::spawn(&cleanup)?;

        let mut cluster = Self {
            watchdog,
            dir,
            bindir,
            data,
            run,
            port: 0,
            tls,
            as_postgres,
        };
        cluster.init()?;
        cluster.start_on_free_port()?;
        cluster.psql_superuser("postgres", SETUP_SQL)?;
        // PostgreSQL 15 no longer lets every role create tables in `public`; the tests want to.
        cluster.psql_superuser("template1", "GRANT CREATE ON SCHEMA public TO PUBLIC;")?;
        cluster.create_database(TEST_DB)?;
        Ok(cluster)
    }

    fn init(&self) -> Result<()> {
        let out = self
            .server_command("initdb")
            .arg("-D")
            .arg(&self.data)
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
            .context("running initdb")?;
        check("initdb", &out)?;
        fs::copy(&self.tls.server_cert, self.data.join("server.crt"))?;
        fs::copy(&self.tls.server_key, self.data.join("server.key"))?;
        fs::set_permissions(
            self.data.join("server.key"),
            fs::Permissions::from_mode(0o600),
        )?;
        if self.as_postgres {
            chown_postgres(&self.data.join("server.crt"))?;
            chown_postgres(&self.data.join("server.key"))?;
        }
        fs::write(self.data.join("pg_hba.conf"), PG_HBA)?;
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))?;
        use std::io::Write;
        writeln!(conf, "include_if_exists = 'qproxy_test.conf'")?;
        Ok(())
    }

    fn write_settings(&self) -> Result<()> {
        let settings = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{run}'\n\
             max_connections = 600\n\
             shared_buffers = 64MB\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             ssl = on\n\
             ssl_cert_file = 'server.crt'\n\
             ssl_key_file = 'server.key'\n\
             password_encryption = 'scram-sha-256'\n\
             log_connections = on\n",
            port = self.port,
            run = self.run.display()
        );
        let path = self.data.join("qproxy_test.conf");
        fs::write(&path, settings)?;
        if self.as_postgres {
            chown_postgres(&path)?;
        }
        Ok(())
    }

    fn start_on_free_port(&mut self) -> Result<()> {
        let mut last_error = None;
        // The port is free when picked but another process may take it before the server binds.
        for _ in 0..3 {
            self.port = free_port()?;
            self.write_settings()?;
            match self.start_server() {
                Ok(()) => return Ok(()),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    fn start_server(&self) -> Result<()> {
        let out = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "start"])
            .output()
            .context("running pg_ctl start")?;
        if !out.status.success() {
            bail!(
                "pg_ctl start failed: {}\n--- server log ---\n{}",
                describe(&out),
                self.log()
            );
        }
        self.wait_ready(Duration::from_secs(60))
    }

    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = Command::new(self.bindir.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", "5"])
                .output()
                .context("running pg_isready")?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "PostgreSQL not ready on port {} after {:?}: {}\n--- server log ---\n{}",
                    self.port,
                    timeout,
                    describe(&out),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts a stopped server again on the same port.
    pub fn start_again(&self) -> Result<()> {
        self.start_server()
    }

    /// Stops the server in `fast` mode: sessions are terminated, then it exits.
    pub fn stop(&self) -> Result<()> {
        let out = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .output()?;
        check("pg_ctl stop", &out)
    }

    /// Stops and starts the server (`fast` shutdown), keeping its port.
    pub fn restart(&self) -> Result<()> {
        self.stop()?;
        self.start_server()
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's Unix-domain socket (`.s.PGSQL.<port>`), where
    /// `local` lines of `pg_hba.conf` apply (`trust` for every role).
    pub fn socket_dir(&self) -> &Path {
        &self.run
    }

    /// The CA that signed the server's certificate (for `sslrootcert`).
    pub fn ca_cert_path(&self) -> &Path {
        &self.tls.ca_cert
    }

    /// The server's TLS files.
    pub fn tls(&self) -> &TlsFiles {
        &self.tls
    }

    /// The directory the cluster lives in; tests may put their own files there.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `postgres://` URL to this server over TCP.
    pub fn url(&self, login: Login, db: &str, sslmode: &str) -> String {
        conn_url("127.0.0.1", self.port, login, db, sslmode)
    }

    /// Creates a database (owned by the superuser; every role may create tables in it).
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.psql_superuser("postgres", &format!("CREATE DATABASE \"{name}\";"))
            .map(|_| ())
    }

    /// Runs SQL as the superuser over the Unix socket, stopping at the first error.
    pub fn psql_superuser(&self, db: &str, sql: &str) -> Result<String> {
        let out = Command::new(self.bindir.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
            ])
            .arg("-h")
            .arg(&self.run)
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .output()
            .context("running psql")?;
        check("psql (superuser)", &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The server log so far (for error messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    fn log_path(&self) -> PathBuf {
        self.run.join("postgres.log")
    }

    fn server_command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    /// The directory holding `psql`, `pgbench` and the server binaries.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.watchdog.fire(Duration::from_secs(60));
    }
}

/// A `postgres://` URL; passwords used by the tests need no percent-encoding.
pub fn conn_url(host: &str, port: u16, login: Login, db: &str, sslmode: &str) -> String {
    let auth = match login.password {
        Some(pw) => format!("{}:{pw}", login.user),
        None => login.user.to_string(),
    };
    format!("postgres://{auth}@{host}:{port}/{db}?sslmode={sslmode}")
}

/// The PostgreSQL 15 server binaries: `$PG_BINDIR`, Debian's path, or `pg_config --bindir`.
pub fn pg_bindir() -> Result<PathBuf> {
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
        .context("PostgreSQL 15 not found: install it with ./scripts/install-deps.sh")?;
    check("pg_config --bindir", &out)?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn chown_postgres(path: &Path) -> Result<()> {
    let out = Command::new("chown")
        .arg("-R")
        .arg("postgres:postgres")
        .arg(path)
        .output()?;
    check("chown", &out)
}

fn check(what: &str, out: &Output) -> Result<()> {
    if out.status.success() {
        Ok(())
    } else {
        bail!("{what} failed: {}", describe(out))
    }
}

/// Exit status, stdout and stderr of a finished command, for error messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
