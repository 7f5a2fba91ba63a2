//! `modelgate-loadtest` command line: `run` (load generator) and `upstream` (fast
//! fixed-response server).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use modelgate_loadtest::client::{RequestPool, Url, parse_header};
use modelgate_loadtest::runner::{self, RunConfig};
use modelgate_loadtest::samples::{Samples, build_infer_bodies, default_pool_size};
use modelgate_loadtest::schedule::{Mode, parse_duration};
use modelgate_loadtest::upstream::{self, UpstreamConfig};

/// Exit code for invalid arguments or unusable inputs.
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "modelgate-loadtest",
    version,
    about = "Open- and closed-loop HTTP/1.1 load generator for modelgate"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive HTTP/1.1 load at a URL over keep-alive connections.
    Run(Box<RunArgs>),
    /// Serve a fixed 200 response as fast as possible (benchmark upstream).
    Upstream(UpstreamArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Target URL, plain HTTP only (e.g. http://127.0.0.1:8080/v2/models/digits/infer).
    #[arg(long)]
    url: String,
    /// HTTP method [default: POST when a body is set, else GET].
    #[arg(long)]
    method: Option<String>,
    /// Samples file ({"rows": [[...], ...], "labels": [...]}) to build KServe v2 infer bodies from.
    #[arg(long, conflicts_with = "body_file")]
    samples: Option<PathBuf>,
    /// Send this file's contents as the body of every request.
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// Rows per infer request (shape [B, width]).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Name of the v2 input tensor.
    #[arg(long, default_value = "input")]
    input_name: String,
    /// Number of distinct pre-built bodies [default: enough to cover every row, at most 4096].
    #[arg(long)]
    pool: Option<usize>,
    /// Extra request header 'Name: value' (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// File with one API key per line: request i carries key i (cycling), so a run can
    /// stand for many consumers.
    #[arg(long, conflicts_with = "check_labels")]
    api_keys: Option<PathBuf>,
    /// Header the keys from --api-keys go in.
    #[arg(long, default_value = "x-api-key")]
    api_key_header: String,
    /// Number of keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Closed loop: outstanding requests (one per connection) [default: --connections].
    #[arg(long, conflicts_with = "rate")]
    concurrency: Option<usize>,
    /// Open loop: target requests per second (latency measured from intended send times).
    #[arg(long)]
    rate: Option<f64>,
    /// Measurement duration (e.g. 500ms, 10s, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured warmup before the measurement window.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    warmup: Duration,
    /// Per-request timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Runtime worker threads (1 = single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print the report as a single JSON object.
    #[arg(long)]
    json: bool,
    /// Check the `label` output of responses against the sample labels and report accuracy.
    #[arg(long, requires = "samples")]
    check_labels: bool,
}

#[derive(Args)]
struct UpstreamArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Delay before each response.
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    delay: Duration,
    /// Response body.
    #[arg(long, default_value = r#"{"ok":true}"#)]
    body: String,
    /// Runtime worker threads (1 = single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run(*args),
        Command::Upstream(args) => serve(args),
    }
}

fn usage_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(EXIT_USAGE)
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, String> {
    let built = match threads {
        0 => return Err("--threads must be at least 1".into()),
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    built.map_err(|e| format!("cannot start runtime: {e}"))
}

fn build_run_config(args: &RunArgs) -> Result<RunConfig, String> {
    let url = Url::parse(&args.url)?;
    let addr = url
        .resolve()
        .map_err(|e| format!("cannot resolve {}: {e}", url.authority))?;
    if args.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    if args.pool == Some(0) {
        return Err("--pool must be at least 1".into());
    }
    let (bodies, labels) = if let Some(path) = &args.samples {
        let samples = Samples::load(path)?;
        if args.check_labels && samples.labels.is_none() {
            return Err(format!(
                "--check-labels: {} has no \"labels\"",
                path.display()
            ));
        }
        let pool = args
            .pool
            .unwrap_or_else(|| default_pool_size(samples.rows.len(), args.batch));
        let built = build_infer_bodies(&samples, args.batch, &args.input_name, pool);
        (built.bodies, built.labels)
    } else if let Some(path) = &args.body_file {
        let body = std::fs::read(path)
            .map_err(|e| format!("cannot read body file {}: {e}", path.display()))?;
        (vec![body], None)
    } else {
        (Vec::new(), None)
    };
    let method = match &args.method {
        Some(m) if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) => {
            return Err(format!("invalid method {m:?}"));
        }
        Some(m) => m.to_ascii_uppercase(),
        None if bodies.is_empty() => "GET".to_owned(),
        None => "POST".to_owned(),
    };
    let mut pool = RequestPool::build(&method, &url, &args.headers, &bodies);
    if let Some(path) = &args.api_keys {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read API keys {}: {e}", path.display()))?;
        let keys: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
        if keys.is_empty() {
            return Err(format!("{} holds no API keys", path.display()));
        }
        if keys
            .iter()
            .any(|k| parse_header(&format!("{}: {k}", args.api_key_header)).is_err())
        {
            return Err(format!(
                "{}: a key is not a valid header value",
                path.display()
            ));
        }
        pool = pool.with_rotating_header(&args.api_key_header, &keys);
    }
    if let (true, Some(labels)) = (args.check_labels, labels) {
        pool = pool.with_labels(labels);
    }
    let mode = match args.rate {
        Some(rate) => Mode::Open { rate },
        None => Mode::Closed {
            concurrency: args.concurrency.unwrap_or(args.connections),
        },
    };
    let cfg = RunConfig {
        addr,
        pool: Arc::new(pool),
        connections: args.connections,
        mode,
        duration: args.duration,
        warmup: args.warmup,
        timeout: args.timeout,
        check_labels: args.check_labels,
    };
    cfg.validate()?;
    Ok(cfg)
}

fn run(args: RunArgs) -> ExitCode {
    let cfg = match build_run_config(&args) {
        Ok(cfg) => cfg,
        Err(e) => return usage_error(e),
    };
    let rt = match runtime(args.threads) {
        Ok(rt) => rt,
        Err(e) => return usage_error(e),
    };
    let report = match rt.block_on(runner::run(cfg)) {
        Ok(report) => report,
        Err(e) => return usage_error(e),
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("target:     {}", args.url);
        print!("{report}");
    }
    if report.stats.completed == 0 {
        eprintln!("error: no request completed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn serve(args: UpstreamArgs) -> ExitCode {
    let rt = match runtime(args.threads) {
        Ok(rt) => rt,
        Err(e) => return usage_error(e),
    };
    let cfg = UpstreamConfig {
        body: args.body.into_bytes(),
        delay: args.delay,
    };
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {addr}")
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("cannot write to stdout: {e}"))?;
        drop(stdout);
        upstream::serve(listener, cfg)
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => usage_error(e),
    }
}
