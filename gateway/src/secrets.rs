//! Secrets named by the config (env var or file), read when a snapshot is built.

use modelgate_config::SecretSource;

/// The secret's bytes (a file's content without its trailing newline). The error names the
/// source, never the value; an empty secret is an error.
pub fn read_secret(source: &SecretSource) -> Result<Vec<u8>, String> {
    let value = match source {
        SecretSource::Env(var) => std::env::var(var)
            .map_err(|_| format!("environment variable {var} is not set"))?
            .into_bytes(),
        SecretSource::File(path) => {
            let mut bytes = std::fs::read(path)
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            bytes
        }
    };
    if value.is_empty() {
        return Err(match source {
            SecretSource::Env(var) => format!("environment variable {var} is empty"),
            SecretSource::File(path) => format!("secret file {} is empty", path.display()),
        });
    }
    Ok(value)
}
