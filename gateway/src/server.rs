//! Starting the gateway: Pingora server, data and admin listeners, SIGHUP reloads.

use std::path::Path;
use std::sync::Arc;

use pingora::server::Server;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use modelgate_config::ConfigError;

use crate::admin::Admin;
use crate::data_plane::Gateway;
use crate::embedded::InferencePool;
use crate::health::{HealthChecker, UpstreamHealth};
use crate::http_service::HttpService;
use crate::keys_cli;
use crate::pipeline::Shared;
use crate::reload::{Reloader, SighupReload, WatchReload};
use crate::secrets::read_secret;
use crate::snapshot::Snapshot;
use crate::telemetry::Telemetry;
use crate::upstream_pool::UpstreamPool;
use modelgate_plugins::ratelimit::Limiter;

/// Loads the config and runs the gateway until SIGTERM/SIGINT. Returns only on a start-up
/// failure, with a message for the operator.
pub fn serve(config_path: &Path, upgrade: bool) -> Result<(), String> {
    let invalid = |errors: Vec<ConfigError>| {
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        format!(
            "{} is not a valid config:\n{}",
            config_path.display(),
            lines.join("\n")
        )
    };
    let config = modelgate_config::load(config_path).map_err(invalid)?;
    if let Some(path) = &config.server.audit_log {
        crate::logging::audit_to_file(path)?;
    }
    if let Some(key) = keys_cli::bootstrap(&config)? {
        println!(
            "\nFirst run: issued API key {id} for all models (only its hash is stored).\n\
             It is shown once; keep it now:\n\n    {full}\n\n\
             Use it as `Authorization: Bearer <key>` or `x-api-key: <key>`, e.g.\n\
             curl -H 'x-api-key: <key>' http://{listen}/v2/models/{model}\n\
             Manage keys with `modelgate keys issue|list|revoke|rotate`.\n",
            id = key.id,
            full = key.full,
            listen = config.server.listen,
            model = config
                .routes
                .iter()
                .find_map(|r| r.model.as_deref())
                .unwrap_or("<model>"),
        );
    }
    let snapshot = Snapshot::build(config, 1, None).map_err(invalid)?;
    let settings = snapshot.config.server.clone();
    let inference = snapshot.config.inference.clone();
    let admin_token = settings.admin_token.as_ref().map(read_secret).transpose()?;

    let conf = ServerConf {
        pid_file: settings.pid_file.display().to_string(),
        upgrade_sock: settings.upgrade_sock.display().to_string(),
        threads: settings.threads,
        work_stealing: settings.work_stealing,
        grace_period_seconds: Some(settings.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(settings.grace_period.as_secs().max(1)),
        ..ServerConf::default()
    };
    // With `upgrade`, bootstrap waits on `upgrade_sock` for the old process's listening
    // sockets, which it sends on SIGQUIT before draining (Pingora's graceful upgrade).
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();
    // Pingora writes the pid file only when it daemonizes; a foreground gateway writes it
    // here (after an upgrade, the new process's pid replaces the old one's).
    if let Err(e) = std::fs::write(&settings.pid_file, format!("{}\n", std::process::id())) {
        log::warn!(
            "cannot write the pid file {}: {e}",
            settings.pid_file.display()
        );
    }

    let pool = InferencePool::new(inference.threads, inference.queue_depth)
        .map_err(|e| format!("cannot start inference threads: {e}"))?;
    let telemetry = Telemetry::start(snapshot.config.telemetry.traces.as_ref())?;
    if let Some(traces) = &snapshot.config.telemetry.traces {
        println!(
            "modelgate exporting traces to http://{}{} (sampling ratio {})",
            traces.endpoint.authority(),
            traces.endpoint.base_path,
            traces.sampling_ratio
        );
    }
    let shared = Arc::new(Shared {
        pool,
        upstream_pool: UpstreamPool::default(),
        limiter: Limiter::in_process(),
        telemetry,
    });
    start_idle_eviction(&shared);
    let reloader = Arc::new(Reloader::new(
        config_path.to_path_buf(),
        snapshot,
        shared.limiter.clone(),
    ));

    let flush = FlushTracesAtShutdown {
        shared: Arc::clone(&shared),
        grace: settings.grace_period,
    };
    let gateway = Gateway {
        snapshot: Arc::clone(&reloader.snapshot),
        shared,
    };
    let mut data = Service::new("modelgate data".into(), HttpService(gateway));
    data.add_tcp(&settings.listen.to_string());
    let health = Arc::new(UpstreamHealth::default());
    if let Some(interval) = settings.upstream_check_interval {
        server.add_service(background_service(
            "upstream health checks",
            HealthChecker {
                health: Arc::clone(&health),
                snapshot: Arc::clone(&reloader.snapshot),
                interval,
            },
        ));
    }
    let admin = Admin {
        reloader: Arc::clone(&reloader),
        token: admin_token,
        health,
        loopback: settings.admin_listen.ip().is_loopback(),
    };
    let mut admin = Service::new("modelgate admin".into(), HttpService(admin));
    admin.threads = Some(1);
    admin.add_tcp(&settings.admin_listen.to_string());
    server.add_service(data);
    server.add_service(admin);
    if let Some(interval) = settings.watch_interval {
        server.add_service(background_service(
            "file watch reload",
            WatchReload {
                reloader: Arc::clone(&reloader),
                interval,
            },
        ));
    }
    server.add_service(background_service("sighup reload", SighupReload(reloader)));
    server.add_service(background_service("trace flush", flush));

    println!(
        "modelgate listening on http://{} (admin http://{})",
        settings.listen, settings.admin_listen
    );
    server.run_forever()
}

/// Drops idle limiter state (fully refilled cells, past quota windows) once a minute, so
/// memory follows the active consumers only, and closes expired idle upstream connections.
fn start_idle_eviction(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    let spawned = std::thread::Builder::new()
        .name("modelgate-evict".into())
        .spawn(move || {
            // Size gauges and expired upstream connections every 10 s, idle limiter state
            // every 60 s.
            for round in 1u64.. {
                std::thread::sleep(std::time::Duration::from_secs(10));
                let Some(shared) = weak.upgrade() else { return };
                let closed = shared.upstream_pool.sweep();
                log::debug!("closed {closed} expired idle upstream connections");
                crate::metrics::METRICS.set_idle_upstream_connections(shared.upstream_pool.len());
                if round % 6 == 0 {
                    let evicted = shared.limiter.evict_idle();
                    log::debug!("limiter eviction: {evicted:?}");
                }
                use modelgate_plugins::ratelimit::LimitStore as _;
                crate::metrics::METRICS.set_limiter_stats(shared.limiter.store().stats());
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start idle-state eviction: {e}");
    }
}

/// At shutdown (SIGTERM/SIGINT), exports the spans still queued near the end of the grace
/// period: the batch thread sends every second meanwhile, and this catches the last ones.
struct FlushTracesAtShutdown {
    shared: Arc<Shared>,
    grace: std::time::Duration,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for FlushTracesAtShutdown {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        if !self.shared.telemetry.is_on() {
            return;
        }
        let _ = shutdown.changed().await;
        let margin = std::time::Duration::from_millis(500);
        tokio::time::sleep(self.grace.saturating_sub(margin)).await;
        let shared = Arc::clone(&self.shared);
        let _ = tokio::task::spawn_blocking(move || shared.telemetry.shutdown()).await;
    }
}
