//! Logging: access and audit records are one JSON object per line, everything else
//! `[time level target] message`, on stderr (`RUST_LOG` filters, e.g. `access=off`).
//! With `server.audit_log` set, audit records go to that file instead (appended, created
//! with mode 0600), a stream of its own that operators can ship and keep apart.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// The audit file, once [`audit_to_file`] has opened it.
static AUDIT_FILE: OnceLock<Mutex<File>> = OnceLock::new();

struct Logger {
    stderr: env_logger::Logger,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target() == "audit" && AUDIT_FILE.get().is_some() || self.stderr.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.target() == "audit"
            && let Some(file) = AUDIT_FILE.get()
        {
            if let Ok(mut file) = file.lock() {
                // One write per record, so concurrent records never interleave.
                let _ = file.write_all(format!("{}\n", record.args()).as_bytes());
            }
            return;
        }
        self.stderr.log(record);
    }

    fn flush(&self) {
        self.stderr.flush();
    }
}

/// Installs the process logger. Call once, first thing.
pub fn init() {
    let stderr = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,pingora_core=warn,pingora_proxy=warn"),
    )
    .format(|buf, record| match record.target() {
        "access" | "audit" => writeln!(buf, "{}", record.args()),
        target => writeln!(
            buf,
            "[{} {} {target}] {}",
            buf.timestamp_millis(),
            record.level(),
            record.args()
        ),
    })
    .build();
    let max = stderr.filter().max(log::LevelFilter::Info);
    if log::set_boxed_logger(Box::new(Logger { stderr })).is_ok() {
        log::set_max_level(max);
    }
}

/// Sends audit records to `path` from now on (appending; the file is created with mode
/// 0600). A second call keeps the first file: the audit log changes only on restart.
pub fn audit_to_file(path: &Path) -> Result<(), String> {
    if AUDIT_FILE.get().is_some() {
        return Ok(());
    }
    let file = open_append_private(path)
        .map_err(|e| format!("cannot open the audit log {}: {e}", path.display()))?;
    let _ = AUDIT_FILE.set(Mutex::new(file));
    Ok(())
}

fn open_append_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}
