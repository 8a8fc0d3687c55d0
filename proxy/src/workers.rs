//! The threads that forward traffic.
//!
//! Each worker is an OS thread with its own single-threaded tokio runtime;
//! a session lives on one worker from accept to close. Both directions of
//! a session and every wakeup they cause stay on that thread, so
//! forwarding a query costs its socket calls and nothing else: no task
//! hand-offs between threads, no futex wakeups, no cross-core cache
//! traffic (a work-stealing runtime spent about half again as much CPU per
//! query on the same traffic, most of it waking and parking threads).
//!
//! The accept loop hands each new socket to the worker with the fewest
//! live sessions.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use futures_util::FutureExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Starts a session on the worker's runtime, the accepted socket
/// registered there; the counter is the worker's live-session count, to be
/// decremented when the session ends.
type Job = Box<dyn FnOnce(TcpStream, Arc<AtomicUsize>) + Send>;

struct Worker {
    queue: mpsc::UnboundedSender<(std::net::TcpStream, Job)>,
    live: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

/// The forwarding threads.
pub struct WorkerPool {
    workers: Vec<Worker>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl WorkerPool {
    /// Starts `n` workers (at least one).
    pub fn start(n: usize) -> std::io::Result<WorkerPool> {
        let mut workers = Vec::with_capacity(n.max(1));
        for index in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (queue, mut jobs) = mpsc::unbounded_channel::<(std::net::TcpStream, Job)>();
            let live = Arc::new(AtomicUsize::new(0));
            let counter = live.clone();
            let thread = std::thread::Builder::new()
                .name(format!("qproxy-worker-{index}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        while let Some((socket, job)) = jobs.recv().await {
                            let counter = counter.clone();
                            let socket = match TcpStream::from_std(socket) {
                                Ok(s) => s,
                                Err(e) => {
                                    counter.fetch_sub(1, Ordering::Relaxed);
                                    tracing::warn!(error = %e, "cannot register a client socket");
                                    continue;
                                }
                            };
                            job(socket, counter);
                        }
                    });
                    // Dropping the runtime here cancels sessions still open
                    // after the drain gave up on them: their sockets close.
                })?;
            workers.push(Worker {
                queue,
                live,
                thread: Some(thread),
            });
        }
        Ok(WorkerPool { workers })
    }

    /// Number of worker threads (at least one).
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Runs `session` for `socket` on the least busy worker. The socket is
    /// moved off the caller's runtime and registered on the worker's.
    pub fn submit<F, Fut>(&self, socket: TcpStream, session: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let socket = match socket.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a client socket to a worker");
                return;
            }
        };
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.live.load(Ordering::Relaxed))
            .expect("a pool has at least one worker");
        worker.live.fetch_add(1, Ordering::Relaxed);
        // The session future is spawned by value (one allocation for the
        // task and its state), not boxed behind a trait object.
        let job: Job = Box::new(move |socket, live| {
            tokio::spawn(session(socket).map(move |()| {
                live.fetch_sub(1, Ordering::Relaxed);
            }));
        });
        if worker.queue.send((socket, job)).is_err() {
            // The worker thread is gone (it only ends when the pool is
            // dropped): the socket is dropped, i.e. closed.
            worker.live.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("a forwarding worker has stopped; connection closed");
        }
    }

    /// Stops the workers once their queues are empty and waits for the
    /// threads; sessions still running are cancelled.
    pub fn shutdown(mut self) {
        let threads: Vec<_> = self
            .workers
            .drain(..)
            .filter_map(|mut w| {
                drop(w.queue);
                w.thread.take()
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Echoes one byte back, tagged with the name of the thread it ran on.
    async fn echo_thread_name(mut socket: TcpStream) {
        let mut byte = [0u8; 1];
        if socket.read_exact(&mut byte).await.is_ok() {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            let _ = socket.write_all(name.as_bytes()).await;
        }
    }

    #[test]
    fn sessions_run_on_the_workers_spread_by_load_and_stop_with_the_pool() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let pool = WorkerPool::start(2).unwrap();
        assert_eq!(pool.threads(), 2);
        let names = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut clients = Vec::new();
            for _ in 0..4 {
                let client = TcpStream::connect(addr).await.unwrap();
                let (server_side, _) = listener.accept().await.unwrap();
                pool.submit(server_side, echo_thread_name);
                clients.push(client);
            }
            // Four live sessions, least-loaded first: two on each worker.
            let live: Vec<usize> = pool
                .workers
                .iter()
                .map(|w| w.live.load(Ordering::Relaxed))
                .collect();
            assert_eq!(live, vec![2, 2]);
            let mut names = Vec::new();
            for mut c in clients {
                c.write_all(b"x").await.unwrap();
                let mut name = String::new();
                c.read_to_string(&mut name).await.unwrap();
                names.push(name);
            }
            names
        });
        names
            .iter()
            .for_each(|n| assert!(n.starts_with("qproxy-worker-"), "{n}"));
        assert_eq!(names.iter().filter(|n| *n == "qproxy-worker-0").count(), 2);
        // Ended sessions are no longer counted.
        for _ in 0..100 {
            if pool
                .workers
                .iter()
                .all(|w| w.live.load(Ordering::Relaxed) == 0)
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(pool
            .workers
            .iter()
            .all(|w| w.live.load(Ordering::Relaxed) == 0));
        pool.shutdown();
    }
}
