//! Active upstream health checks: every `interval`, a TCP connect to each HTTP upstream
//! of the live config. An upstream is down after two failed checks in a row (or a failed
//! first check) and up again after one success. `/readyz` answers 503 while a route has
//! no upstream up; `modelgate_upstream_up` reports each one. State is keyed by address,
//! so it survives reloads; addresses that leave the config are dropped. With
//! `server.upstream_checks = false` nothing is checked and readiness ignores upstreams.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use modelgate_config::Backend;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::snapshot::Snapshot;

/// Failed checks in a row that mark an upstream down.
const DOWN_AFTER: u32 = 2;

#[derive(Debug, Clone, Copy)]
struct Probe {
    up: bool,
    failures: u32,
}

/// Health by upstream address (`host:port`).
#[derive(Default)]
pub struct UpstreamHealth {
    state: RwLock<HashMap<String, Probe>>,
}

impl UpstreamHealth {
    /// Whether `authority` passed its checks; `None` before its first check.
    pub fn is_up(&self, authority: &str) -> Option<bool> {
        let state = self.state.read().ok()?;
        state.get(authority).map(|p| p.up)
    }

    /// Route name → its upstreams not known to be up, for routes with none up (empty
    /// when the gateway is ready to take traffic).
    pub fn unready_routes(&self, snapshot: &Snapshot) -> BTreeMap<String, Vec<String>> {
        let mut unready = BTreeMap::new();
        if snapshot.config.server.upstream_check_interval.is_none() {
            return unready; // checks are off
        }
        for (route, upstreams) in http_upstreams(snapshot) {
            if !upstreams.iter().any(|a| self.is_up(a) == Some(true)) {
                unready.insert(route, upstreams);
            }
        }
        unready
    }

    fn record(&self, authority: &str, ok: bool) {
        let Ok(mut state) = self.state.write() else {
            return;
        };
        let probe = state.entry(authority.to_string()).or_insert(Probe {
            up: ok,
            failures: 0,
        });
        if ok {
            *probe = Probe {
                up: true,
                failures: 0,
            };
        } else {
            probe.failures += 1;
            if probe.failures >= DOWN_AFTER {
                probe.up = false;
            }
        }
    }

    fn retain(&self, live: &[String]) {
        if let Ok(mut state) = self.state.write() {
            state.retain(|authority, _| live.contains(authority));
        }
    }
}

/// Route name → the `host:port` of each of its HTTP upstreams.
fn http_upstreams(snapshot: &Snapshot) -> Vec<(String, Vec<String>)> {
    snapshot
        .config
        .routes
        .iter()
        .filter_map(|r| match &r.backend {
            Backend::Http(h) => Some((
                r.name.clone(),
                h.upstreams.iter().map(|u| u.authority()).collect(),
            )),
            Backend::Embedded { .. } => None,
        })
        .collect()
}

/// The background task that runs the checks.
pub struct HealthChecker {
    pub health: Arc<UpstreamHealth>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub interval: Duration,
}

impl HealthChecker {
    /// Checks every upstream of the live config once, concurrently.
    pub async fn check_all(&self) {
        let snapshot = self.snapshot.load_full();
        let routes = http_upstreams(&snapshot);
        let mut authorities: Vec<String> = routes.iter().flat_map(|(_, u)| u.clone()).collect();
        authorities.sort();
        authorities.dedup();
        let timeout = self.interval.min(Duration::from_secs(2));
        let checks = authorities.iter().map(|authority| {
            let authority = authority.clone();
            tokio::spawn(async move {
                let connected =
                    tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&authority))
                        .await
                        .is_ok_and(|r| r.is_ok());
                (authority, connected)
            })
        });
        for check in checks.collect::<Vec<_>>() {
            if let Ok((authority, ok)) = check.await {
                self.health.record(&authority, ok);
            }
        }
        self.health.retain(&authorities);
        let gauges = routes
            .iter()
            .flat_map(|(route, upstreams)| {
                upstreams.iter().map(move |authority| {
                    let up = self.health.is_up(authority) == Some(true);
                    ((route.clone(), authority.clone()), up)
                })
            })
            .collect();
        crate::metrics::METRICS.set_upstreams(gauges);
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.check_all().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_after_two_failures_up_after_one_success() {
        let h = UpstreamHealth::default();
        assert_eq!(h.is_up("a:1"), None);
        h.record("a:1", true);
        h.record("a:1", false);
        assert_eq!(h.is_up("a:1"), Some(true), "one failure is not enough");
        h.record("a:1", false);
        assert_eq!(h.is_up("a:1"), Some(false));
        h.record("a:1", true);
        assert_eq!(h.is_up("a:1"), Some(true));
        h.record("b:1", false);
        assert_eq!(h.is_up("b:1"), Some(false), "a failed first check is down");
        h.retain(&["b:1".to_string()]);
        assert_eq!(h.is_up("a:1"), None);
    }
}
