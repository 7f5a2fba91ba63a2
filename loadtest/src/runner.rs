//! Drives a load test: opens connections, runs open- or closed-loop workers and
//! merges their statistics into a [`Report`].

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::client::{Connection, RequestError, RequestPool};
use crate::report::{Report, Stats};
use crate::samples::count_correct;
use crate::schedule::{Mode, OpenSchedule, wait_until};

/// Everything needed to run a load test.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Target address (already resolved).
    pub addr: SocketAddr,
    /// Pre-encoded requests, used round-robin.
    pub pool: Arc<RequestPool>,
    /// Number of keep-alive connections.
    pub connections: usize,
    /// Open or closed loop.
    pub mode: Mode,
    /// Measurement window.
    pub duration: Duration,
    /// Unmeasured lead-in before the window.
    pub warmup: Duration,
    /// Per-request (and per-connect) timeout.
    pub timeout: Duration,
    /// Compare the `label` output of 200 responses with the pool's expected labels.
    pub check_labels: bool,
}

impl RunConfig {
    /// Checks the configuration for contradictions.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.pool.is_empty() {
            return Err("no requests to send".into());
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be positive".into());
        }
        match self.mode {
            Mode::Closed { concurrency: 0 } => {
                return Err("--concurrency must be at least 1".into());
            }
            Mode::Closed { concurrency } if concurrency > self.connections => {
                return Err(format!(
                    "--concurrency {concurrency} exceeds --connections {} (requests are not pipelined)",
                    self.connections
                ));
            }
            Mode::Open { rate } if !(rate.is_finite() && rate > 0.0) => {
                return Err("--rate must be a positive number".into());
            }
            _ => {}
        }
        if self.check_labels && self.pool.labels(0).is_none() {
            return Err("--check-labels needs samples with labels".into());
        }
        Ok(())
    }

    fn workers(&self) -> usize {
        match self.mode {
            Mode::Closed { concurrency } => concurrency,
            Mode::Open { .. } => self.connections,
        }
    }
}

/// Runs the load test described by `cfg` on the current tokio runtime.
pub async fn run(cfg: RunConfig) -> Result<Report, String> {
    cfg.validate()?;
    let workers = cfg.workers();
    let stride = workers as u64;
    let cfg = Arc::new(cfg);

    // Open all connections before the clock starts.
    let connects: Vec<_> = (0..workers)
        .map(|_| {
            let (addr, timeout) = (cfg.addr, cfg.timeout);
            tokio::spawn(
                async move { tokio::time::timeout(timeout, Connection::connect(addr)).await },
            )
        })
        .collect();
    let mut pending = Vec::with_capacity(workers);
    for (id, c) in connects.into_iter().enumerate() {
        let mut worker = Worker {
            id: id as u64,
            cfg: Arc::clone(&cfg),
            conn: None,
            stats: Stats::new(),
            body: Vec::new(),
        };
        match c.await {
            Ok(Ok(Ok(conn))) => worker.conn = Some(conn),
            _ => worker.stats.errors.connect += 1,
        }
        pending.push(worker);
    }

    let t0 = Instant::now();
    let measure_start = t0 + cfg.warmup;
    let end = measure_start + cfg.duration;
    let handles: Vec<_> = pending
        .into_iter()
        .map(|mut w| {
            let mode = cfg.mode;
            tokio::spawn(async move {
                match mode {
                    Mode::Closed { .. } => w.closed_loop(measure_start, end, stride).await,
                    Mode::Open { rate } => {
                        let sched = OpenSchedule::new(t0, rate, w.cfg.warmup, w.cfg.duration);
                        w.open_loop(sched, stride, end).await;
                    }
                }
                w.stats
            })
        })
        .collect();
    let mut stats = Stats::new();
    for h in handles {
        let s = h.await.map_err(|e| format!("worker failed: {e}"))?;
        stats.merge(&s);
    }
    let finished = Instant::now();
    Ok(Report {
        mode: cfg.mode.name(),
        target_rate: match cfg.mode {
            Mode::Open { rate } => Some(rate),
            Mode::Closed { .. } => None,
        },
        connections: cfg.connections,
        concurrency: match cfg.mode {
            Mode::Closed { concurrency } => Some(concurrency),
            Mode::Open { .. } => None,
        },
        duration: finished.saturating_duration_since(measure_start),
        stats,
    })
}

/// Why a sent request produced no response.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Reset,
    Timeout,
    Protocol,
}

struct Worker {
    id: u64,
    cfg: Arc<RunConfig>,
    conn: Option<Connection>,
    stats: Stats,
    body: Vec<u8>,
}

impl Worker {
    /// Makes sure a connection is open, retrying with backoff until `give_up`.
    async fn ensure_connected(&mut self, give_up: Instant) -> bool {
        let mut backoff = Duration::from_millis(5);
        while self.conn.is_none() {
            let now = Instant::now();
            if now >= give_up {
                return false;
            }
            match tokio::time::timeout(self.cfg.timeout, Connection::connect(self.cfg.addr)).await {
                Ok(Ok(c)) => self.conn = Some(c),
                _ => {
                    self.stats.errors.connect += 1;
                    tokio::time::sleep(
                        backoff.min(give_up.saturating_duration_since(Instant::now())),
                    )
                    .await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
            }
        }
        true
    }

    /// Sends request `index` on the open connection and reads the response.
    async fn exchange(&mut self, index: usize, mut timer: Pin<&mut Sleep>) -> Result<u16, Failure> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(Failure::Reset);
        };
        let req = self.cfg.pool.request(index);
        let head_method = self.cfg.pool.head_method();
        let sink = if self.cfg.check_labels {
            self.body.clear();
            Some(&mut self.body)
        } else {
            None
        };
        timer.as_mut().reset(Instant::now() + self.cfg.timeout);
        let result = tokio::select! {
            biased;
            r = conn.request(req, head_method, sink) => r,
            () = &mut timer => {
                self.conn = None;
                return Err(Failure::Timeout);
            }
        };
        match result {
            Ok(head) => {
                if !head.keep_alive {
                    self.conn = None;
                }
                Ok(head.status)
            }
            Err(e) => {
                self.conn = None;
                Err(match e {
                    RequestError::Closed | RequestError::Io(_) => Failure::Reset,
                    RequestError::Protocol(_) => Failure::Protocol,
                })
            }
        }
    }

    /// Records the outcome of a measured request.
    fn record(&mut self, index: usize, outcome: Result<u16, Failure>, latency: Duration) {
        match outcome {
            Ok(status) => {
                self.stats.record(status, latency);
                if self.cfg.check_labels && status == 200 {
                    self.check_labels(index);
                }
            }
            Err(Failure::Reset) => self.stats.errors.reset += 1,
            Err(Failure::Timeout) => self.stats.errors.timeout += 1,
            Err(Failure::Protocol) => self.stats.errors.protocol += 1,
        }
    }

    fn check_labels(&mut self, index: usize) {
        let Some(expected) = self.cfg.pool.labels(index) else {
            return;
        };
        self.stats.labels_checked += expected.len() as u64;
        match count_correct(&self.body, expected) {
            Ok(n) => self.stats.labels_correct += n as u64,
            Err(_) => self.stats.label_parse_errors += 1,
        }
    }

    /// Closed loop: send, wait for the response, repeat until `end`.
    async fn closed_loop(&mut self, measure_start: Instant, end: Instant, stride: u64) {
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut n = self.id;
        loop {
            if !self.ensure_connected(end).await {
                break;
            }
            let start = Instant::now();
            if start >= end {
                break;
            }
            let index = self.cfg.pool.index(n);
            n += stride;
            let measured = start >= measure_start;
            self.stats.sent += u64::from(measured);
            let outcome = self.exchange(index, timer.as_mut()).await;
            if measured {
                self.record(index, outcome, start.elapsed());
            }
        }
    }

    /// Open loop: request `i` (with `i % stride == id`) is due at `sched.due(i)`;
    /// latency is measured from the due time.
    async fn open_loop(&mut self, sched: OpenSchedule, stride: u64, end: Instant) {
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        // Overdue requests may still be sent for one timeout after the window closes.
        let give_up = end + self.cfg.timeout;
        let mut i = self.id;
        while i < sched.total {
            let due = sched.due(i);
            wait_until(due).await;
            if Instant::now() >= give_up || !self.ensure_connected(give_up).await {
                self.stats.unsent += sched.remaining_measured(i, stride);
                break;
            }
            let index = self.cfg.pool.index(i);
            let measured = i >= sched.first_measured;
            self.stats.sent += u64::from(measured);
            let outcome = self.exchange(index, timer.as_mut()).await;
            if measured {
                self.record(index, outcome, due.elapsed());
            }
            i += stride;
        }
    }
}
