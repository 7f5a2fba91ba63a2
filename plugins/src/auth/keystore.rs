//! The API key store file: JSON with one record per key (hashes only). Writes are atomic
//! (temp file, fsync, rename) under an exclusive lock, so a crash never loses or corrupts keys.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::keys::KeyRecord;

/// The file's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyStore {
    pub version: u32,
    pub keys: Vec<KeyRecord>,
}

/// Reads the store; a missing file is an empty store. Errors name the file.
pub fn load(path: &Path) -> Result<KeyStore, String> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("key store {} is not valid: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyStore {
            version: 1,
            keys: Vec::new(),
        }),
        Err(e) => Err(format!("cannot read key store {}: {e}", path.display())),
    }
}

/// Runs `change` on the current store and writes the result atomically, holding an
/// exclusive lock (`<store>.lock`) so concurrent writers do not lose each other's keys.
pub fn update<T>(
    path: &Path,
    change: impl FnOnce(&mut KeyStore) -> Result<T, String>,
) -> Result<T, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let lock_path = with_suffix(path, ".lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    let mut store = load(path)?;
    let result = change(&mut store)?;
    store.version = 1;
    write_atomic(path, &store)?;
    Ok(result)
}

fn write_atomic(path: &Path, store: &KeyStore) -> Result<(), String> {
    let json =
        serde_json::to_vec_pretty(store).map_err(|e| format!("cannot encode key store: {e}"))?;
    let tmp = with_suffix(path, ".tmp");
    let fail = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", tmp.display());
    let mut options = OpenOptions::new();
    options.create(true).write(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(|e| fail("create", e))?;
    file.write_all(&json).map_err(|e| fail("write", e))?;
    file.write_all(b"\n").map_err(|e| fail("write", e))?;
    file.sync_all().map_err(|e| fail("sync", e))?;
    fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        // Make the rename itself durable; best effort on filesystems that refuse it.
        let _ = d.sync_all();
    }
    Ok(())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::{IssuedKey, KeyStatus, SecretHasher};

    fn record(id: &str) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            consumer: "c".into(),
            plan: "p".into(),
            models: vec!["*".into()],
            group: None,
            created: 1,
            expires: None,
            status: KeyStatus::Active,
            hash: IssuedKey::generate()
                .unwrap()
                .hash(&SecretHasher::new(None)),
            previous: vec![],
        }
    }

    #[test]
    fn round_trips_and_missing_file_is_empty() {
        let dir = std::env::temp_dir().join(format!("mg-keystore-{}", std::process::id()));
        let path = dir.join("keys.json");
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(load(&path).unwrap().keys.len(), 0);
        update(&path, |s| {
            s.keys.push(record("a"));
            Ok(())
        })
        .unwrap();
        update(&path, |s| {
            s.keys.push(record("b"));
            Ok(())
        })
        .unwrap();
        let store = load(&path).unwrap();
        assert_eq!(
            store.keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(
            !with_suffix(&path, ".tmp").exists(),
            "temp file left behind"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        // A failed change leaves the file as it was.
        assert!(update(&path, |_| Err::<(), _>("no".to_string())).is_err());
        assert_eq!(load(&path).unwrap(), store);
        fs::write(&path, b"{not json").unwrap();
        assert!(load(&path).unwrap_err().contains("not valid"));
        let _ = fs::remove_dir_all(&dir);
    }
}
