//! A throwaway PostgreSQL cluster for the tests: `qproxy`'s own throwaway cluster (the one
//! `qproxy demo` runs; `initdb` into a fresh directory under `/tmp`, as the `postgres` OS user when
//! the tests run as root, a free TCP port on 127.0.0.1, its Unix socket inside the directory) with
//! what the tests add on top: TLS on, `pg_hba.conf` rules and one role per authentication method
//! so that every auth path a client can take through the proxy has a user to take it, and a
//! watchdog that removes the cluster even when the test process is killed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use qproxy::commands::demo::postgres::{Postgres, PostgresOptions};

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

/// What the tests' server runs with beyond the throwaway cluster's settings.
const SETTINGS: &str = "\
max_connections = 600
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
password_encryption = 'scram-sha-256'
log_connections = on
";

/// A running (or stopped) throwaway PostgreSQL server.
#[derive(Debug)]
pub struct PgCluster {
    /// Stops the server and removes its directory when dropped or when the test process exits.
    /// Declared first so it runs before `pg` stops the server and removes the directory itself.
    watchdog: Watchdog,
    pg: Postgres,
    tls: TlsFiles,
}

impl PgCluster {
    /// Creates, configures and starts a new cluster with the test roles and [`TEST_DB`].
    pub fn start() -> Result<Self> {
        let mut pg = Postgres::init(PostgresOptions {
            prefix: "qproxy-pg-",
            settings: SETTINGS.to_string(),
        })?;
        let data = pg.data_dir().to_path_buf();
        let pg_ctl = pg.bindir().join("pg_ctl");
        let mut cleanup = format!(
            "{} -D {} -m immediate -w -t 30 stop\nrm -rf {}",
            pg_ctl.display(),
            shell_quote(&data.to_string_lossy()),
            shell_quote(&pg.dir().to_string_lossy())
        );
        if pg.runs_as_postgres() {
            cleanup = format!("runuser -u postgres -- {cleanup}");
        }
        let watchdog = Watchdog::spawn(&cleanup)?;

        let tls_dir = pg.dir().join("tls");
        fs::create_dir(&tls_dir)?;
        let tls = TlsFiles::generate(&tls_dir, "qproxy test PostgreSQL CA")?;
        pg.give_to_server(&tls_dir)?;
        fs::copy(&tls.server_cert, data.join("server.crt"))?;
        fs::copy(&tls.server_key, data.join("server.key"))?;
        fs::set_permissions(data.join("server.key"), fs::Permissions::from_mode(0o600))?;
        pg.give_to_server(&data.join("server.crt"))?;
        pg.give_to_server(&data.join("server.key"))?;
        fs::write(data.join("pg_hba.conf"), PG_HBA)?;
        pg.start()?;

        let cluster = Self { watchdog, pg, tls };
        cluster.psql_superuser("postgres", SETUP_SQL)?;
        // PostgreSQL 15 no longer lets every role create tables in `public`; the tests want to.
        cluster.psql_superuser("template1", "GRANT CREATE ON SCHEMA public TO PUBLIC;")?;
        cluster.create_database(TEST_DB)?;
        Ok(cluster)
    }

    /// Starts a stopped server again on the same port.
    pub fn start_again(&self) -> Result<()> {
        Ok(self.pg.start_again()?)
    }

    /// Stops the server in `fast` mode: sessions are terminated, then it exits.
    pub fn stop(&self) -> Result<()> {
        Ok(self.pg.stop()?)
    }

    /// Stops and starts the server (`fast` shutdown), keeping its port.
    pub fn restart(&self) -> Result<()> {
        self.stop()?;
        self.start_again()
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.pg.port()
    }

    /// The directory holding the server's Unix-domain socket (`.s.PGSQL.<port>`), where
    /// `local` lines of `pg_hba.conf` apply (`trust` for every role).
    pub fn socket_dir(&self) -> &Path {
        self.pg.socket_dir()
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
        self.pg.dir()
    }

    /// A `postgres://` URL to this server over TCP.
    pub fn url(&self, login: Login, db: &str, sslmode: &str) -> String {
        conn_url("127.0.0.1", self.port(), login, db, sslmode)
    }

    /// Creates a database (owned by the superuser; every role may create tables in it).
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.psql_superuser("postgres", &format!("CREATE DATABASE \"{name}\";"))
            .map(|_| ())
    }

    /// Runs SQL as the superuser over the Unix socket, stopping at the first error.
    pub fn psql_superuser(&self, db: &str, sql: &str) -> Result<String> {
        let out = Command::new(self.bindir().join("psql"))
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
            .arg(self.socket_dir())
            .args(["-p", &self.port().to_string(), "-d", db, "-c", sql])
            .output()
            .context("running psql")?;
        check("psql (superuser)", &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The server log so far (for error messages).
    pub fn log(&self) -> String {
        self.pg.log()
    }

    /// The directory holding `psql`, `pgbench` and the server binaries.
    pub fn bindir(&self) -> &Path {
        self.pg.bindir()
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
    qproxy::commands::demo::postgres::bindir()
        .context("PostgreSQL 15 not found: install it with ./scripts/install-deps.sh")
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(qproxy::commands::demo::postgres::free_port()?)
}

fn check(what: &str, out: &Output) -> Result<()> {
    if out.status.success() {
        Ok(())
    } else {
        bail!("{what} failed: {}", describe(out))
    }
}

pub use qproxy::commands::demo::postgres::describe;
