//! Per-worker statistics, merging, and human/JSON output.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Failure counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// Failed connection attempts.
    pub connect: u64,
    /// Connections closed or reset while a request was in flight.
    pub reset: u64,
    /// Requests that did not complete within the per-request timeout.
    pub timeout: u64,
    /// Malformed responses.
    pub protocol: u64,
}

impl ErrorCounts {
    /// Errors that lost a sent request (everything but `connect`).
    pub fn request_failures(&self) -> u64 {
        self.reset + self.timeout + self.protocol
    }
}

/// Statistics gathered by one worker (and, merged, by the whole run).
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency histogram in microseconds.
    pub latency_us: Histogram<u64>,
    /// Response counts indexed by status code.
    statuses: Vec<u64>,
    /// Failure counters.
    pub errors: ErrorCounts,
    /// Requests written to a connection within the measurement window.
    pub sent: u64,
    /// Responses fully read (any status).
    pub completed: u64,
    /// Open loop: requests due within the window that were never sent (backlog left
    /// after the drain grace period, or no connection).
    pub unsent: u64,
    /// Labels compared (`--check-labels`).
    pub labels_checked: u64,
    /// Labels predicted correctly.
    pub labels_correct: u64,
    /// 200 responses whose body had no usable `label` output.
    pub label_parse_errors: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self {
            // 1 µs to 1 hour at 3 significant digits: `saturating_record` clamps only beyond
            // an hour (an auto-resizing histogram would not grow on `saturating_record`).
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("1 µs..1 h at 3 significant figures is a valid histogram"),
            statuses: vec![0; 1000],
            errors: ErrorCounts::default(),
            sent: 0,
            completed: 0,
            unsent: 0,
            labels_checked: 0,
            labels_correct: 0,
            label_parse_errors: 0,
        }
    }

    /// Records one completed response.
    #[inline]
    pub fn record(&mut self, status: u16, latency: Duration) {
        self.completed += 1;
        if let Some(c) = self.statuses.get_mut(usize::from(status)) {
            *c += 1;
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(us);
    }

    /// Status code counts (non-zero only).
    pub fn statuses(&self) -> BTreeMap<u16, u64> {
        self.statuses
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .map(|(code, &n)| (code as u16, n))
            .collect()
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Stats) {
        // Both histograms auto-resize, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        for (a, b) in self.statuses.iter_mut().zip(&other.statuses) {
            *a += b;
        }
        let (e, o) = (&mut self.errors, &other.errors);
        e.connect += o.connect;
        e.reset += o.reset;
        e.timeout += o.timeout;
        e.protocol += o.protocol;
        self.sent += other.sent;
        self.completed += other.completed;
        self.unsent += other.unsent;
        self.labels_checked += other.labels_checked;
        self.labels_correct += other.labels_correct;
        self.label_parse_errors += other.label_parse_errors;
    }
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySummary {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

/// Final result of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Schedule name: `"open"` or `"closed"`.
    pub mode: &'static str,
    /// Open loop target rate (requests/s).
    pub target_rate: Option<f64>,
    /// Number of connections.
    pub connections: usize,
    /// Closed loop concurrency.
    pub concurrency: Option<usize>,
    /// Measured wall time (after warmup, including the final drain).
    pub duration: Duration,
    /// Merged statistics.
    pub stats: Stats,
}

impl Report {
    /// Completed responses per second.
    pub fn rps(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            self.stats.completed as f64 / secs
        } else {
            0.0
        }
    }

    /// Latency percentiles.
    pub fn latency(&self) -> LatencySummary {
        let h = &self.stats.latency_us;
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }

    /// Fraction of correctly predicted labels, if any were checked.
    pub fn accuracy(&self) -> Option<f64> {
        let s = &self.stats;
        (s.labels_checked > 0).then(|| s.labels_correct as f64 / s.labels_checked as f64)
    }

    /// The report as a single JSON object.
    pub fn to_json(&self) -> Value {
        let s = &self.stats;
        let l = self.latency();
        let statuses: serde_json::Map<String, Value> = s
            .statuses()
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        json!({
            "mode": self.mode,
            "target_rate": self.target_rate,
            "connections": self.connections,
            "concurrency": self.concurrency,
            "requests": s.sent,
            "completed": s.completed,
            "unsent": s.unsent,
            "rps": round2(self.rps()),
            "duration_s": (self.duration.as_secs_f64() * 1000.0).round() / 1000.0,
            "statuses": statuses,
            "errors": {
                "connect": s.errors.connect,
                "reset": s.errors.reset,
                "timeout": s.errors.timeout,
                "protocol": s.errors.protocol,
            },
            "latency_us": {
                "p50": l.p50,
                "p90": l.p90,
                "p99": l.p99,
                "p999": l.p999,
                "max": l.max,
                "mean": round2(l.mean),
            },
            "accuracy": self.accuracy(),
            "labels_checked": s.labels_checked,
            "label_parse_errors": s.label_parse_errors,
        })
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Formats microseconds with a readable unit.
fn us(v: u64) -> String {
    match v {
        0..1_000 => format!("{v}us"),
        1_000..1_000_000 => format!("{:.2}ms", v as f64 / 1e3),
        _ => format!("{:.2}s", v as f64 / 1e6),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        match (self.target_rate, self.concurrency) {
            (Some(rate), _) => writeln!(
                f,
                "mode:       open loop, target {rate} req/s over {} connections",
                self.connections
            )?,
            (None, c) => writeln!(
                f,
                "mode:       closed loop, concurrency {} over {} connections",
                c.unwrap_or(self.connections),
                self.connections
            )?,
        }
        writeln!(f, "duration:   {:.3}s", self.duration.as_secs_f64())?;
        write!(f, "requests:   {} sent, {} completed", s.sent, s.completed)?;
        if s.unsent > 0 {
            write!(f, ", {} due but never sent", s.unsent)?;
        }
        writeln!(f)?;
        writeln!(f, "throughput: {:.1} req/s", self.rps())?;
        let statuses: Vec<String> = s
            .statuses()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(
            f,
            "statuses:   {}",
            if statuses.is_empty() {
                "-".into()
            } else {
                statuses.join(" ")
            }
        )?;
        let e = &s.errors;
        writeln!(
            f,
            "errors:     connect={} reset={} timeout={} protocol={}",
            e.connect, e.reset, e.timeout, e.protocol
        )?;
        let l = self.latency();
        writeln!(
            f,
            "latency:    p50={} p90={} p99={} p99.9={} max={} mean={:.1}us",
            us(l.p50),
            us(l.p90),
            us(l.p99),
            us(l.p999),
            us(l.max),
            l.mean
        )?;
        if let Some(acc) = self.accuracy() {
            writeln!(
                f,
                "accuracy:   {:.4} ({}/{} labels, {} unparsable responses)",
                acc, s.labels_correct, s.labels_checked, s.label_parse_errors
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn slow_responses_are_recorded_not_clamped() {
        let mut s = Stats::new();
        for ms in [5, 50, 500] {
            s.record(200, Duration::from_millis(ms));
        }
        let p50 = s.latency_us.value_at_quantile(0.5);
        assert!((49_000..=51_000).contains(&p50), "p50 {p50} µs");
        assert!(s.latency_us.max() >= 499_000);
    }

    #[test]
    fn merge_and_output() {
        let mut a = Stats::new();
        a.sent = 3;
        a.record(200, Duration::from_micros(100));
        a.record(200, Duration::from_micros(200));
        a.record(503, Duration::from_micros(1500));
        let mut b = Stats::new();
        b.sent = 2;
        b.errors.timeout = 1;
        b.record(200, Duration::from_micros(300));
        a.merge(&b);
        let r = Report {
            mode: "closed",
            target_rate: None,
            connections: 2,
            concurrency: Some(2),
            duration: Duration::from_secs(2),
            stats: a,
        };
        assert_eq!(r.rps(), 2.0);
        let j = r.to_json();
        assert_eq!(j["requests"], 5);
        assert_eq!(j["completed"], 4);
        assert_eq!(j["statuses"], json!({"200": 3, "503": 1}));
        assert_eq!(j["errors"]["timeout"], 1);
        assert_eq!(j["latency_us"]["p50"], 200);
        assert!(j["latency_us"]["max"].as_u64().unwrap() >= 1500);
        assert_eq!(j["mode"], "closed");
        assert!(j["target_rate"].is_null() && j["accuracy"].is_null());
        let text = r.to_string();
        assert!(text.contains("200=3 503=1"), "{text}");
        assert!(text.contains("p50=200us"), "{text}");
    }
}
