//! A cleanup guard that outlives the test process.
//!
//! Test binaries keep their PostgreSQL cluster and proxy in `static`s, and Rust never drops a
//! `static`; a test that aborts or a runner killed with SIGKILL skips `Drop` as well. So every
//! throwaway process gets a watchdog: a small `sh` in its own process group whose stdin is a pipe
//! whose only writer is this process. When that write end closes, because the owner was dropped
//! or because the test process ended in any way at all, the shell's `read` sees end-of-file and
//! the cleanup script runs. The Rust standard library opens every descriptor close-on-exec, so no other child
//! (postgres, qproxy, psql) keeps the pipe open by accident.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cleanup` (a `sh` script) once the owner drops it or the test process exits.
#[derive(Debug)]
pub struct Watchdog {
    /// The write end of the watchdog's stdin; closing it is the signal to clean up.
    trigger: Option<ChildStdin>,
    /// The watchdog shell, waited for on drop so cleanup has finished when `drop` returns.
    child: Child,
}

impl Watchdog {
    /// Starts a watchdog that will run `cleanup` with `sh -c`.
    pub fn spawn(cleanup: &str) -> io::Result<Self> {
        // `read` returns on end-of-file (run the cleanup) or on a line (`disarm`: skip it).
        let script = format!("read -r word || true\n[ \"$word\" = disarm ] || {{\n{cleanup}\n}}\n");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so a Ctrl-C aimed at `cargo test` does not kill the
            // cleanup along with the tests.
            .process_group(0)
            .spawn()?;
        let trigger = child.stdin.take();
        Ok(Self { trigger, child })
    }

    /// Cancels the cleanup, for when the owner already did it (a reaped child's pid may be reused).
    pub fn disarm(&mut self) {
        use std::io::Write;
        if let Some(mut trigger) = self.trigger.take() {
            let _ = trigger.write_all(b"disarm\n");
        }
        let _ = self.child.wait();
    }

    /// Runs the cleanup now and waits up to `timeout` for it to finish.
    pub fn fire(&mut self, timeout: Duration) {
        self.trigger.take();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.fire(Duration::from_secs(60));
    }
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
