//! The real `qproxy` binary, started as a child process in front of a test cluster.

use std::fs::{self, File};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::certs::TlsFiles;
use crate::cluster::{conn_url, free_port, Login};
use crate::watchdog::{shell_quote, Watchdog};

/// How to start a proxy; everything is passed as command-line flags.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// The `--upstream` URL.
    pub upstream: String,
    /// Serve TLS toward clients with a freshly generated certificate.
    pub client_tls: bool,
    /// `--shutdown-grace SECS`.
    pub shutdown_grace_secs: Option<u64>,
    /// `--store PATH`; `None` puts a fresh store in the proxy's own temporary directory.
    /// Give a path to share one store between proxies (e.g. across a restart).
    pub store: Option<PathBuf>,
    /// More `qproxy serve` arguments, appended last (e.g. `--metrics-top-k 3`).
    pub extra_args: Vec<String>,
    /// Environment variables set for the proxy process (e.g. `QPROXY_UPSTREAM_PASSWORD`).
    pub env: Vec<(String, String)>,
}

impl ProxyOptions {
    /// A plain proxy in front of `upstream`.
    pub fn new(upstream: impl Into<String>) -> Self {
        Self {
            upstream: upstream.into(),
            ..Self::default()
        }
    }
}

/// A running `qproxy serve`.
#[derive(Debug)]
pub struct Proxy {
    /// Kills the process if the test process ends without dropping this (e.g. in a `static`).
    watchdog: Watchdog,
    child: Child,
    /// Set once the child has been reaped; its pid must not be signalled after that.
    exit_status: Option<ExitStatus>,
    /// Holds the store, the log and the TLS files.
    dir: TempDir,
    port: u16,
    admin_port: u16,
    tls: Option<TlsFiles>,
    /// The `--store` path.
    store: PathBuf,
}

impl Proxy {
    /// Starts the proxy and waits until its listen port accepts TCP connections.
    pub fn start(options: &ProxyOptions) -> Result<Self> {
        // The ports are free when picked, but something else may bind them first: try again
        // then, and only then.
        let mut attempt = 1;
        loop {
            match Self::start_once(options) {
                Err(e) if attempt < 3 && format!("{e:#}").contains("in use") => attempt += 1,
                result => return result,
            }
        }
    }

    fn start_once(options: &ProxyOptions) -> Result<Self> {
        let bin = qproxy_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("qproxy-proxy-")
            .tempdir_in("/tmp")?;
        let port = free_port()?;
        let admin_port = free_port()?;
        let tls = if options.client_tls {
            Some(TlsFiles::generate(dir.path(), "qproxy test proxy CA")?)
        } else {
            None
        };

        let store = options
            .store
            .clone()
            .unwrap_or_else(|| dir.path().join("findings.db"));
        let mut cmd = Command::new(&bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--upstream")
            .arg(&options.upstream)
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{admin_port}"))
            .arg("--store")
            .arg(&store);
        if let Some(tls) = &tls {
            cmd.arg("--tls-cert")
                .arg(&tls.server_cert)
                .arg("--tls-key")
                .arg(&tls.server_key);
        }
        if let Some(grace) = options.shutdown_grace_secs {
            cmd.arg("--shutdown-grace").arg(grace.to_string());
        }
        cmd.args(&options.extra_args);
        cmd.envs(options.env.iter().map(|(k, v)| (k, v)));
        // A file, not a pipe: nobody reads a pipe while the test runs, and a full pipe would
        // block the proxy's logging and with it the traffic.
        let log = File::create(dir.path().join("qproxy.log"))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let watchdog = Watchdog::spawn(&format!(
            "kill -KILL {}\nrm -rf {}",
            child.id(),
            shell_quote(&dir.path().to_string_lossy())
        ))?;
        let mut proxy = Self {
            watchdog,
            child,
            exit_status: None,
            dir,
            port,
            admin_port,
            tls,
            store,
        };
        proxy.wait_listening(Duration::from_secs(30))?;
        Ok(proxy)
    }

    fn wait_listening(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                bail!(
                    "qproxy exited with {status} before listening on port {}\n--- qproxy log ---\n{}",
                    self.port,
                    self.log()
                );
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "qproxy not listening on port {} after {timeout:?}\n--- qproxy log ---\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id of the running proxy.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin HTTP port (`/metrics`, `/healthz`, `/readyz`).
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// `GET path` on the admin port over plain HTTP/1.1: the status code and the body.
    pub fn admin_get(&self, path: &str) -> Result<(u16, String)> {
        admin_get(self.admin_port, path)
    }

    /// The TLS files the proxy serves toward clients, when started with `client_tls`.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The findings store the proxy was given.
    pub fn store_path(&self) -> PathBuf {
        self.store.clone()
    }

    /// A `postgres://` URL to the proxy.
    pub fn url(&self, login: Login, db: &str, sslmode: &str) -> String {
        conn_url("127.0.0.1", self.port, login, db, sslmode)
    }

    /// Everything the proxy wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("qproxy.log"))
            .unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) -> Result<()> {
        if self.exit_status.is_some() {
            bail!("qproxy already exited");
        }
        let pid = Pid::from_raw(i32::try_from(self.child.id())?);
        kill(pid, Signal::SIGTERM).context("sending SIGTERM to qproxy")
    }

    /// The exit status if the process has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.exit_status.is_none() {
            self.exit_status = self.child.try_wait()?;
        }
        Ok(self.exit_status)
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "qproxy still running {timeout:?} later\n--- qproxy log ---\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Drains the proxy as an operator would (SIGTERM) and waits up to `timeout` for it to
    /// exit; an error unless it exited 0.
    pub fn stop(&mut self, timeout: Duration) -> Result<()> {
        self.terminate()?;
        let status = self.wait_exit(timeout)?;
        if !status.success() {
            bail!(
                "qproxy exited with {status}\n--- qproxy log ---\n{}",
                self.log()
            );
        }
        Ok(())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.exit_status.is_some() {
            self.watchdog.disarm();
        } else {
            // Kill through the watchdog while the child is still unreaped, so its pid cannot
            // have been reused, then reap it.
            self.watchdog.fire(Duration::from_secs(10));
            let _ = self.child.wait();
        }
    }
}

/// `GET path` on `127.0.0.1:port` over plain HTTP/1.1 (`Connection: close`): the status code
/// and the body. Enough HTTP for the admin server, which answers with a `Content-Length`.
pub fn admin_get(port: u16, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to the admin port {port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8(response).context("admin response is not UTF-8")?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of headers in {response:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// The `qproxy` binary: `$QPROXY_BIN`, or `qproxy` in the cargo profile directory the test
/// executable was built into (`target/<profile>/deps/<test>` → `target/<profile>/qproxy`).
pub fn qproxy_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("QPROXY_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("QPROXY_BIN={} does not exist", bin.display());
        }
        return Ok(bin);
    }
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no profile directory")?;
    let bin = profile_dir.join("qproxy");
    if !bin.is_file() {
        bail!(
            "{} not found: build it first with `cargo build -p qproxy` (./scripts/test.sh does), \
             or set QPROXY_BIN",
            bin.display()
        );
    }
    Ok(bin)
}
