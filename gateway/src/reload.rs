//! Config reload: parse → validate → build a complete new snapshot → swap atomically.
//! A bad config is refused and the old snapshot keeps serving. Triggered by SIGHUP,
//! `POST /admin/reload`, and a change to the config file or any file it names.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;

use crate::authn::unix_now;
use crate::snapshot::Snapshot;
use modelgate_plugins::ratelimit::Limiter;

/// The outcome of the last reload attempt, as the admin API reports it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    pub generation: u64,
    pub ok: bool,
    pub errors: Vec<String>,
    /// Settings that changed but only take effect after a restart.
    pub restart_needed: Vec<String>,
    pub at: u64,
}

/// Owns the live snapshot pointer and swaps in new generations.
pub struct Reloader {
    path: PathBuf,
    /// Limiter state to free for consumers whose keys a reload removed or revoked.
    limiter: Limiter,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    generation: AtomicU64,
    lock: Mutex<()>,
    last: Mutex<ReloadStatus>,
}

impl Reloader {
    /// Wraps the first snapshot, built from `path`.
    pub fn new(path: PathBuf, first: Snapshot, limiter: Limiter) -> Reloader {
        let generation = first.generation;
        first.auth.start_background();
        crate::metrics::METRICS.set_generation(generation);
        Reloader {
            path,
            limiter,
            snapshot: Arc::new(ArcSwap::from_pointee(first)),
            generation: AtomicU64::new(generation),
            lock: Mutex::new(()),
            last: Mutex::new(ReloadStatus {
                generation,
                ok: true,
                at: unix_now(),
                ..Default::default()
            }),
        }
    }

    /// Rebuilds from the config file and swaps on success. Blocking (reads files, loads
    /// models): call it off the async threads. Concurrent calls run one at a time.
    pub fn reload(&self) -> ReloadStatus {
        let _one_at_a_time = self.lock.lock();
        let current = self.snapshot.load_full();
        let generation = self.generation.load(Ordering::SeqCst) + 1;
        let status = match Snapshot::load(&self.path, generation, Some(&current)) {
            Ok(next) => {
                let restart_needed = restart_needed(&current, &next);
                for setting in &restart_needed {
                    log::warn!("reload: {setting} changed; it takes effect after a restart");
                }
                next.auth.start_background();
                let removed: Vec<&str> = {
                    let kept = next.auth.key_consumers();
                    current
                        .auth
                        .key_consumers()
                        .into_iter()
                        .filter(|c| !kept.contains(c))
                        .collect()
                };
                if !removed.is_empty() {
                    self.limiter.forget_consumers(&removed);
                    log::info!(
                        "reload: freed limiter state of {} removed consumer(s)",
                        removed.len()
                    );
                }
                self.generation.store(generation, Ordering::SeqCst);
                self.snapshot.store(Arc::new(next));
                log::info!("reload: generation {generation} is live");
                ReloadStatus {
                    generation,
                    ok: true,
                    errors: vec![],
                    restart_needed,
                    at: unix_now(),
                }
            }
            Err(errors) => {
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                log::error!(
                    "reload refused, generation {} keeps serving: {}",
                    current.generation,
                    errors.join("; ")
                );
                ReloadStatus {
                    generation: current.generation,
                    ok: false,
                    errors,
                    restart_needed: vec![],
                    at: unix_now(),
                }
            }
        };
        log::info!(target: "audit", "{}", serde_json::json!({"event": "reload", "ok": status.ok, "generation": status.generation, "errors": status.errors}));
        crate::metrics::METRICS.reload(status.ok, status.generation);
        if let Ok(mut last) = self.last.lock() {
            *last = status.clone();
        }
        status
    }

    /// The last reload attempt's outcome.
    pub fn last_status(&self) -> ReloadStatus {
        self.last.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

fn restart_needed(current: &Snapshot, next: &Snapshot) -> Vec<String> {
    let (a, b) = (&current.config, &next.config);
    let mut changed = Vec::new();
    if a.server.listen != b.server.listen {
        changed.push("server.listen".to_string());
    }
    if a.server.admin_listen != b.server.admin_listen {
        changed.push("server.admin_listen".to_string());
    }
    if a.server.threads != b.server.threads {
        changed.push("server.threads".to_string());
    }
    if a.server.work_stealing != b.server.work_stealing {
        changed.push("server.work_stealing".to_string());
    }
    if a.inference != b.inference {
        changed.push("inference".to_string());
    }
    if a.server.upstream_check_interval != b.server.upstream_check_interval {
        changed.push("server.upstream_check_interval".to_string());
    }
    if a.server.audit_log != b.server.audit_log {
        changed.push("server.audit_log".to_string());
    }
    if a.server.watch_interval != b.server.watch_interval {
        changed.push("server.watch / server.watch_interval".to_string());
    }
    if a.telemetry != b.telemetry {
        changed.push("telemetry".to_string());
    }
    changed
}

/// Reloads when the config file or a file the live config names changes: polled every
/// `interval`, applied once two polls in a row see the same new state (so an editor's
/// write-then-rename, or `keys issue` rewriting the key store, reloads once).
pub struct WatchReload {
    pub reloader: Arc<Reloader>,
    pub interval: Duration,
}

/// Modification time and size of each watched file (`None`: missing or unreadable).
type Fingerprint = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

fn fingerprint(config: &Path, snapshot: &Snapshot) -> Fingerprint {
    std::iter::once(config.to_path_buf())
        .chain(snapshot.config.named_files())
        .map(|path| {
            let seen = std::fs::metadata(&path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (path, seen)
        })
        .collect()
}

#[async_trait]
impl BackgroundService for WatchReload {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let reloader = &self.reloader;
        let mut applied = fingerprint(&reloader.path, &reloader.snapshot.load());
        let mut pending: Option<Fingerprint> = None;
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let now = fingerprint(&reloader.path, &reloader.snapshot.load());
            if now == applied {
                pending = None;
                continue;
            }
            if pending.as_ref() != Some(&now) {
                pending = Some(now); // changed: wait one more poll for the writes to settle
                continue;
            }
            log::info!("reload: a watched file changed");
            let r = Arc::clone(reloader);
            let _ = tokio::task::spawn_blocking(move || r.reload()).await;
            // The live config's files as they are now (a refused config is not retried
            // until a file changes again).
            applied = fingerprint(&reloader.path, &reloader.snapshot.load());
            pending = None;
        }
    }
}

/// Reloads on SIGHUP until shutdown.
pub struct SighupReload(pub Arc<Reloader>);

#[async_trait]
impl BackgroundService for SighupReload {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGHUP: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    let reloader = Arc::clone(&self.0);
                    let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(server: &str) -> Snapshot {
        let text = format!(
            "[server]\n{server}\n[[routes]]\nname = \"r\"\npath_prefix = \"/r\"\npublic = true\n\
             [routes.http]\nupstreams = [\"http://127.0.0.1:9\"]\n"
        );
        let config = modelgate_config::parse(&text, Path::new(".")).unwrap();
        Snapshot::build(config, 1, None).unwrap()
    }

    #[test]
    fn names_the_settings_that_need_a_restart() {
        let current = snapshot("threads = 2");
        assert!(restart_needed(&current, &snapshot("threads = 2")).is_empty());
        assert_eq!(
            restart_needed(&current, &snapshot("threads = 4")),
            ["server.threads"]
        );
        assert_eq!(
            restart_needed(&current, &snapshot("threads = 2\nwork_stealing = true")),
            ["server.work_stealing"]
        );
    }
}
