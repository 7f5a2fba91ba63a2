//! The `modelgate` command: `serve` and `check`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use modelgate::snapshot::Snapshot;

/// A hardened model-serving gateway.
#[derive(Parser)]
#[command(name = "modelgate", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file.
        #[arg(long, default_value = "config/modelgate.toml")]
        config: PathBuf,
    },
    /// Validate a config file (parse, validate, build) without serving; exit 1 on errors.
    Check {
        /// Config file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,pingora_core=warn,pingora_proxy=warn"),
    )
    .init();
    match cli.command {
        Command::Serve { config } => match modelgate::server::serve(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("modelgate: {message}");
                ExitCode::from(2)
            }
        },
        Command::Check { file } => match Snapshot::load(&file, 0) {
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
    }
}
