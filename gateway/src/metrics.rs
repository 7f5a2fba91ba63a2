//! Process-wide metrics in the Prometheus text format, served on the admin listener at
//! `/metrics`. Every label value comes from a bounded set (route names from the config,
//! status codes, the closed set of error codes and auth reasons): no consumer ids.

use std::fmt::Write as _;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

use foldhash::HashMap;
use modelgate_plugins::ratelimit::StoreStats;

/// The registry every part of the gateway records into.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// Histogram bucket upper bounds, in seconds.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// Counters keyed by a label tuple; reads take a shared lock, a new label set a write lock.
struct Counters<K>(RwLock<HashMap<K, Arc<AtomicU64>>>);

impl<K> Default for Counters<K> {
    fn default() -> Self {
        Counters(RwLock::new(HashMap::default()))
    }
}

impl<K: Eq + Hash + Clone> Counters<K> {
    fn add(&self, key: &K, n: u64) {
        if let Ok(map) = self.0.read()
            && let Some(c) = map.get(key)
        {
            c.fetch_add(n, Ordering::Relaxed);
            return;
        }
        if let Ok(mut map) = self.0.write() {
            map.entry(key.clone())
                .or_default()
                .fetch_add(n, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> Vec<(K, u64)> {
        self.0
            .read()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

struct Histograms<K>(RwLock<HashMap<K, Arc<Histogram>>>);

impl<K> Default for Histograms<K> {
    fn default() -> Self {
        Histograms(RwLock::new(HashMap::default()))
    }
}

impl<K: Eq + Hash + Clone> Histograms<K> {
    fn observe(&self, key: &K, d: Duration) {
        if let Ok(map) = self.0.read()
            && let Some(h) = map.get(key)
        {
            h.observe(d);
            return;
        }
        if let Ok(mut map) = self.0.write() {
            map.entry(key.clone()).or_default().observe(d);
        }
    }

    fn snapshot(&self) -> Vec<(K, Arc<Histogram>)> {
        self.0
            .read()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect())
            .unwrap_or_default()
    }
}

/// What one finished request contributes.
pub struct RequestRecord {
    pub route: Arc<str>,
    /// The route's model (`model` routes); empty otherwise.
    pub model: Option<Arc<str>>,
    pub status: u16,
    pub code: &'static str,
    pub total: Duration,
    pub upstream: Option<Duration>,
    /// The limiter's decision and what bound it, when it was asked.
    pub ratelimit: Option<(&'static str, &'static str)>,
    /// The extraction detector's action, when it reached at least `observe`.
    pub extraction: Option<&'static str>,
    /// The refusal's pipeline stage, for denied requests.
    pub denied_at: Option<&'static str>,
}

/// `modelgate_requests_total` labels: route, model, status, code.
type RequestLabels = (Arc<str>, Option<Arc<str>>, u16, &'static str);

/// All gateway metrics.
#[derive(Default)]
pub struct Metrics {
    requests: Counters<RequestLabels>,
    latency: Histograms<Arc<str>>,
    upstream_latency: Histograms<Arc<str>>,
    added_latency: Histograms<Arc<str>>,
    auth_failures: Counters<String>,
    denials: Counters<(&'static str, &'static str)>,
    ratelimit: Counters<(Arc<str>, &'static str, &'static str)>,
    extraction: Counters<(Arc<str>, &'static str)>,
    reloads: Counters<&'static str>,
    trace_exports: Counters<&'static str>,
    generation: AtomicU64,
    /// Idle keep-alive connections in the upstream pool, refreshed every 10 s.
    idle_upstream_connections: AtomicU64,
    /// (route, upstream address) → up, replaced by each health-check round.
    upstreams: RwLock<Vec<((String, String), bool)>>,
    /// The limiter store's size, refreshed every 10 s.
    limiter: RwLock<StoreStats>,
}

impl Metrics {
    /// Counts a finished request and its latencies.
    pub fn request(&self, r: &RequestRecord) {
        self.requests.add(
            &(Arc::clone(&r.route), r.model.clone(), r.status, r.code),
            1,
        );
        self.latency.observe(&r.route, r.total);
        if let Some(up) = r.upstream {
            self.upstream_latency.observe(&r.route, up);
            self.added_latency
                .observe(&r.route, r.total.saturating_sub(up));
        }
        if let Some(stage) = r.denied_at {
            self.denials.add(&(stage, r.code), 1);
        }
        if let Some((decision, by)) = r.ratelimit {
            self.ratelimit.add(&(Arc::clone(&r.route), decision, by), 1);
        }
        if let Some(action) = r.extraction {
            self.extraction.add(&(Arc::clone(&r.route), action), 1);
        }
    }

    /// Counts an authentication failure by its (fixed-set) reason.
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures.add(&reason.to_string(), 1);
    }

    /// Counts a reload attempt and records the live generation.
    pub fn reload(&self, ok: bool, generation: u64) {
        self.reloads.add(&if ok { "ok" } else { "failed" }, 1);
        self.generation.store(generation, Ordering::Relaxed);
    }

    /// Records the limiter store's size.
    pub fn set_limiter_stats(&self, stats: StoreStats) {
        if let Ok(mut current) = self.limiter.write() {
            *current = stats;
        }
    }

    /// Replaces the upstream health gauges with the latest check round's.
    pub fn set_upstreams(&self, mut upstreams: Vec<((String, String), bool)>) {
        upstreams.sort();
        if let Ok(mut current) = self.upstreams.write() {
            *current = upstreams;
        }
    }

    /// Counts one OTLP export attempt (a batch of spans) by its outcome.
    pub fn trace_export(&self, ok: bool) {
        self.trace_exports.add(&if ok { "ok" } else { "failed" }, 1);
    }

    /// Sets the number of idle pooled upstream connections.
    pub fn set_idle_upstream_connections(&self, n: usize) {
        self.idle_upstream_connections
            .store(n as u64, Ordering::Relaxed);
    }

    /// Sets the live config generation.
    pub fn set_generation(&self, generation: u64) {
        self.generation.store(generation, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP modelgate_requests_total Requests by route, model, status and error code.\n# TYPE modelgate_requests_total counter\n");
        let mut requests = self.requests.snapshot();
        requests.sort();
        for ((route, model, status, code), n) in requests {
            let _ = writeln!(
                out,
                "modelgate_requests_total{{route=\"{}\",model=\"{}\",status=\"{status}\",code=\"{code}\"}} {n}",
                escape(&route),
                escape(model.as_deref().unwrap_or(""))
            );
        }
        render_histograms(
            &mut out,
            "modelgate_request_duration_seconds",
            "Time from request to response end, by route.",
            &self.latency,
        );
        render_histograms(
            &mut out,
            "modelgate_upstream_duration_seconds",
            "Upstream exchange time, by route.",
            &self.upstream_latency,
        );
        render_histograms(
            &mut out,
            "modelgate_gateway_added_duration_seconds",
            "Time the gateway adds to an upstream exchange (total minus upstream), by route.",
            &self.added_latency,
        );
        out.push_str("# HELP modelgate_denials_total Refused requests by pipeline stage and code.\n# TYPE modelgate_denials_total counter\n");
        let mut denials = self.denials.snapshot();
        denials.sort();
        for ((stage, code), n) in denials {
            let _ = writeln!(
                out,
                "modelgate_denials_total{{stage=\"{stage}\",code=\"{code}\"}} {n}"
            );
        }
        out.push_str("# HELP modelgate_ratelimit_decisions_total Limiter decisions by route, decision (admitted or the refusal code) and the limit that bound (consumer or model).\n# TYPE modelgate_ratelimit_decisions_total counter\n");
        let mut decisions = self.ratelimit.snapshot();
        decisions.sort();
        for ((route, decision, by), n) in decisions {
            let _ = writeln!(
                out,
                "modelgate_ratelimit_decisions_total{{route=\"{}\",decision=\"{decision}\",limited_by=\"{by}\"}} {n}",
                escape(&route)
            );
        }
        out.push_str("# HELP modelgate_extraction_actions_total Requests on which the extraction detector acted, by route and action.\n# TYPE modelgate_extraction_actions_total counter\n");
        let mut actions = self.extraction.snapshot();
        actions.sort();
        for ((route, action), n) in actions {
            let _ = writeln!(
                out,
                "modelgate_extraction_actions_total{{route=\"{}\",action=\"{action}\"}} {n}",
                escape(&route)
            );
        }
        out.push_str("# HELP modelgate_auth_failures_total Authentication failures by reason.\n# TYPE modelgate_auth_failures_total counter\n");
        let mut failures = self.auth_failures.snapshot();
        failures.sort();
        for (reason, n) in failures {
            let _ = writeln!(
                out,
                "modelgate_auth_failures_total{{reason=\"{}\"}} {n}",
                escape(&reason)
            );
        }
        out.push_str("# HELP modelgate_reloads_total Config reload attempts by result.\n# TYPE modelgate_reloads_total counter\n");
        for result in ["ok", "failed"] {
            let n = self
                .reloads
                .snapshot()
                .into_iter()
                .find(|(k, _)| *k == result)
                .map_or(0, |(_, n)| n);
            let _ = writeln!(out, "modelgate_reloads_total{{result=\"{result}\"}} {n}");
        }
        out.push_str("# HELP modelgate_upstream_up Whether an HTTP upstream passed its health checks (1) or not (0), by route and address.\n# TYPE modelgate_upstream_up gauge\n");
        if let Ok(upstreams) = self.upstreams.read() {
            for ((route, upstream), up) in upstreams.iter() {
                let _ = writeln!(
                    out,
                    "modelgate_upstream_up{{route=\"{}\",upstream=\"{}\"}} {}",
                    escape(route),
                    escape(upstream),
                    u8::from(*up)
                );
            }
        }
        let limiter = self.limiter.read().map(|s| *s).unwrap_or_default();
        let _ = write!(
            out,
            "# HELP modelgate_limiter_cells Rate-limit cells held (consumer x route, model).\n# TYPE modelgate_limiter_cells gauge\nmodelgate_limiter_cells {}\n\
             # HELP modelgate_limiter_quota_counters Quota counters held.\n# TYPE modelgate_limiter_quota_counters gauge\nmodelgate_limiter_quota_counters {}\n\
             # HELP modelgate_limiter_table_bytes Approximate bytes of the limiter's tables.\n# TYPE modelgate_limiter_table_bytes gauge\nmodelgate_limiter_table_bytes {}\n",
            limiter.cells, limiter.quota_counters, limiter.approx_bytes
        );
        let _ = write!(
            out,
            "# HELP modelgate_upstream_idle_connections Idle keep-alive connections to HTTP upstreams.\n# TYPE modelgate_upstream_idle_connections gauge\nmodelgate_upstream_idle_connections {}\n",
            self.idle_upstream_connections.load(Ordering::Relaxed)
        );
        out.push_str("# HELP modelgate_trace_exports_total OTLP trace export attempts by result.\n# TYPE modelgate_trace_exports_total counter\n");
        let exports = self.trace_exports.snapshot();
        for result in ["ok", "failed"] {
            let n = exports
                .iter()
                .find(|(k, _)| *k == result)
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(
                out,
                "modelgate_trace_exports_total{{result=\"{result}\"}} {n}"
            );
        }
        out.push_str("# HELP modelgate_config_generation The live config generation.\n# TYPE modelgate_config_generation gauge\n");
        let _ = writeln!(
            out,
            "modelgate_config_generation {}",
            self.generation.load(Ordering::Relaxed)
        );
        out
    }
}

fn render_histograms(out: &mut String, name: &str, help: &str, histograms: &Histograms<Arc<str>>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut all = histograms.snapshot();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (route, h) in all {
        let route = escape(&route);
        let mut cumulative = 0;
        for (i, le) in BUCKETS.iter().enumerate() {
            cumulative += h.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "{name}_sum{{route=\"{route}\"}} {}",
            h.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {count}");
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let m = Metrics::default();
        let record = |status, code, ms| RequestRecord {
            route: Arc::from("digits"),
            model: None,
            status,
            code,
            total: Duration::from_millis(ms),
            upstream: None,
            ratelimit: (status == 200).then_some(("admitted", "")),
            extraction: (ms == 3).then_some("harden"),
            denied_at: (status == 401).then_some("auth"),
        };
        m.request(&RequestRecord {
            upstream: Some(Duration::from_micros(700)),
            ..record(200, "", 1)
        });
        m.request(&record(200, "", 3));
        m.request(&record(401, "missing_credentials", 0));
        m.auth_failure("wrong_secret");
        m.reload(false, 1);
        m.set_limiter_stats(StoreStats {
            cells: 7,
            quota_counters: 2,
            approx_bytes: 4096,
        });
        m.set_upstreams(vec![(("r".into(), "127.0.0.1:9".into()), false)]);
        m.set_idle_upstream_connections(3);
        let text = m.render();
        assert!(
            text.contains("modelgate_upstream_idle_connections 3\n"),
            "{text}"
        );
        assert!(text.contains("modelgate_limiter_cells 7\n"), "{text}");
        assert!(text.contains("modelgate_limiter_table_bytes 4096\n"));
        assert!(text.contains("modelgate_upstream_up{route=\"r\",upstream=\"127.0.0.1:9\"} 0"));
        assert!(
            text.contains(
                "modelgate_requests_total{route=\"digits\",model=\"\",status=\"200\",code=\"\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("modelgate_requests_total{route=\"digits\",model=\"\",status=\"401\",code=\"missing_credentials\"} 1"));
        assert!(text.contains(
            "modelgate_request_duration_seconds_bucket{route=\"digits\",le=\"0.001\"} 2"
        ));
        assert!(
            text.contains(
                "modelgate_request_duration_seconds_bucket{route=\"digits\",le=\"+Inf\"} 3"
            )
        );
        assert!(text.contains("modelgate_auth_failures_total{reason=\"wrong_secret\"} 1"));
        // 1 ms total, 0.7 ms upstream: 0.3 ms added.
        assert!(text.contains(
            "modelgate_gateway_added_duration_seconds_bucket{route=\"digits\",le=\"0.00025\"} 0"
        ));
        assert!(text.contains(
            "modelgate_gateway_added_duration_seconds_bucket{route=\"digits\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains("modelgate_reloads_total{result=\"failed\"} 1"));
        assert!(
            text.contains("modelgate_denials_total{stage=\"auth\",code=\"missing_credentials\"} 1")
        );
        assert!(text.contains("modelgate_ratelimit_decisions_total{route=\"digits\",decision=\"admitted\",limited_by=\"\"} 2"));
        assert!(
            text.contains(
                "modelgate_extraction_actions_total{route=\"digits\",action=\"harden\"} 1"
            )
        );
    }
}
