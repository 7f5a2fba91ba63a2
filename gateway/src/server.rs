//! Starting the gateway: Pingora server, data and admin listeners, shared resources.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::connectors::ConnectorOptions;
use pingora::connectors::http::v1::Connector;
use pingora::proxy::http_proxy_service_with_name;
use pingora::server::Server;
use pingora::server::configuration::ServerConf;

use crate::admin::Admin;
use crate::embedded::InferencePool;
use crate::pipeline::Shared;
use crate::proxy::Gateway;
use crate::snapshot::Snapshot;

/// Loads the config and runs the gateway until SIGTERM/SIGINT. Returns only on a start-up
/// failure, with a message for the operator.
pub fn serve(config_path: &Path) -> Result<(), String> {
    let snapshot = Snapshot::load(config_path, 1).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        format!(
            "{} is not a valid config:\n{}",
            config_path.display(),
            lines.join("\n")
        )
    })?;
    let settings = snapshot.config.server.clone();
    let inference = snapshot.config.inference.clone();

    let conf = ServerConf {
        pid_file: settings.pid_file.display().to_string(),
        upgrade_sock: settings.upgrade_sock.display().to_string(),
        threads: settings.threads,
        grace_period_seconds: Some(settings.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(settings.grace_period.as_secs().max(1)),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let pool = InferencePool::new(inference.threads, inference.queue_depth)
        .map_err(|e| format!("cannot start inference threads: {e}"))?;
    let connector = Connector::new(Some(ConnectorOptions::from_server_conf(
        &server.configuration,
    )));
    let shared = Arc::new(Shared { pool, connector });
    let snapshot = Arc::new(ArcSwap::from_pointee(snapshot));

    let gateway = Gateway {
        snapshot: Arc::clone(&snapshot),
        shared,
    };
    let mut data = http_proxy_service_with_name(&server.configuration, gateway, "modelgate data");
    data.add_tcp(&settings.listen.to_string());
    let admin = Admin { snapshot };
    let mut admin = http_proxy_service_with_name(&server.configuration, admin, "modelgate admin");
    admin.threads = Some(1);
    admin.add_tcp(&settings.admin_listen.to_string());
    server.add_service(data);
    server.add_service(admin);

    println!(
        "modelgate listening on http://{} (admin http://{})",
        settings.listen, settings.admin_listen
    );
    server.run_forever()
}
