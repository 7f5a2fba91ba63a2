//! The `modelgate` command: `serve`, `check` and `keys`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use modelgate::keys_cli::{self, IssueRequest};
use modelgate::snapshot::Snapshot;

/// mimalloc: fewer cycles per request than the system allocator on the proxy's hot path
/// (see docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A hardened model-serving gateway.
#[derive(Parser)]
#[command(name = "modelgate", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const DEFAULT_CONFIG: &str = "config/modelgate.toml";

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Take the listening sockets over from a running gateway (graceful upgrade): start
        /// the new binary with this flag, then send the old process SIGQUIT.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a config file (parse, validate, build) without serving; exit 1 on errors.
    Check {
        /// Config file.
        file: PathBuf,
    },
    /// Compute an extraction-detector profile for an embedded model from benign traffic.
    Calibrate {
        /// Config file (finds the model's route, ONNX file and metadata).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Model name.
        #[arg(long)]
        model: String,
        /// Benign rows: `{"rows": [[...], ...]}` (the held-out file format).
        #[arg(long)]
        benign: PathBuf,
        /// Where to write the profile JSON.
        #[arg(long)]
        out: PathBuf,
    },
    /// Manage API keys in the key store the config names.
    Keys {
        /// Config file.
        #[arg(long, default_value = DEFAULT_CONFIG, global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Issue a key; prints it once.
    Issue {
        #[arg(long)]
        consumer: String,
        #[arg(long)]
        plan: String,
        /// Comma-separated model names, or "*" for all.
        #[arg(long, value_delimiter = ',', required = true)]
        models: Vec<String>,
        /// Consumer group (e.g. an organisation).
        #[arg(long)]
        group: Option<String>,
        /// Lifetime, e.g. 90d or 12h.
        #[arg(long, value_parser = parse_duration)]
        expires: Option<Duration>,
    },
    /// List keys (never secrets).
    List,
    /// Revoke a key by id.
    Revoke { id: String },
    /// Give a key a new secret; the old one works until the grace period ends.
    Rotate {
        id: String,
        #[arg(long, value_parser = parse_duration, default_value = "24h")]
        grace: Duration,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    modelgate_config::parse_duration(text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    modelgate::logging::init();
    match cli.command {
        Command::Serve { config, upgrade } => report(modelgate::server::serve(&config, upgrade), 2),
        Command::Check { file } => match Snapshot::load(&file, 0, None) {
            Ok(snapshot) => {
                println!("{}: OK ({} routes)", file.display(), snapshot.routes.len());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for e in &errors {
                    eprintln!("{e}");
                }
                eprintln!("{}: {} error(s)", file.display(), errors.len());
                ExitCode::from(1)
            }
        },
        Command::Keys { config, command } => report(keys(&config, command), 1),
        Command::Calibrate {
            config,
            model,
            benign,
            out,
        } => report(calibrate(&config, &model, &benign, &out), 1),
    }
}

fn calibrate(config_path: &Path, model: &str, benign: &Path, out: &Path) -> Result<(), String> {
    let config = load_config(config_path)?;
    let profile = modelgate::calibrate_cli::run(&config, model, benign)?;
    std::fs::write(out, profile).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    eprintln!(
        "wrote the extraction profile for {model} to {}",
        out.display()
    );
    Ok(())
}

fn load_config(config_path: &Path) -> Result<modelgate_config::Config, String> {
    modelgate_config::load(config_path).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!(
            "{} is not a valid config:\n  {}",
            config_path.display(),
            lines.join("\n  ")
        )
    })
}

fn keys(config_path: &Path, command: KeysCommand) -> Result<(), String> {
    let config = load_config(config_path)?;
    if let Some(path) = &config.server.audit_log {
        modelgate::logging::audit_to_file(path)?;
    }
    match command {
        KeysCommand::Issue {
            consumer,
            plan,
            models,
            group,
            expires,
        } => {
            let key = keys_cli::issue(
                &config,
                IssueRequest {
                    consumer,
                    plan,
                    models,
                    group,
                    expires_in: expires,
                },
            )?;
            println!("{}", key.full);
            eprintln!(
                "issued key {} — shown once, only its hash is stored; the gateway accepts it \
                 from its next reload (at once when it watches its files)",
                key.id
            );
        }
        KeysCommand::List => {
            println!(
                "{:<16}  {:<20}  {:<12}  {:<8}  {:<11}  {:<11}  models",
                "id", "consumer", "plan", "status", "created", "expires"
            );
            for k in keys_cli::list(&config)? {
                println!(
                    "{:<16}  {:<20}  {:<12}  {:<8}  {:<11}  {:<11}  {}",
                    k.id,
                    k.consumer,
                    k.plan,
                    format!("{:?}", k.status).to_lowercase(),
                    k.created,
                    k.expires.map_or("never".to_string(), |e| e.to_string()),
                    k.models.join(",")
                );
            }
        }
        KeysCommand::Revoke { id } => {
            keys_cli::revoke(&config, &id)?;
            eprintln!("revoked key {id}; reload the gateway to apply");
        }
        KeysCommand::Rotate { id, grace } => {
            let key = keys_cli::rotate(&config, &id, grace)?;
            println!("{}", key.full);
            eprintln!(
                "rotated key {id}; the old secret works for {}s more — shown once",
                grace.as_secs()
            );
        }
    }
    Ok(())
}

fn report(result: Result<(), String>, failure_code: u8) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("modelgate: {message}");
            ExitCode::from(failure_code)
        }
    }
}
