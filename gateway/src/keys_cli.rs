//! `modelgate keys ...`: issue, list, revoke and rotate API keys in the store the config
//! names. Secrets are printed once, at issue/rotate time; the store keeps only hashes.
//! Changes reach a running gateway at its next reload (SIGHUP or `POST /admin/reload`).

use std::time::Duration;

use modelgate_config::Config;
use modelgate_plugins::auth::keys::{
    IssuedKey, KeyRecord, KeyStatus, PreviousSecret, SecretHasher,
};
use modelgate_plugins::auth::keystore;

use crate::authn::{secret_hasher, unix_now};

/// What `keys issue` needs.
pub struct IssueRequest {
    pub consumer: String,
    pub plan: String,
    pub models: Vec<String>,
    pub group: Option<String>,
    pub expires_in: Option<Duration>,
}

fn store_and_hasher(config: &Config) -> Result<(std::path::PathBuf, SecretHasher), String> {
    let path = config
        .auth
        .key_store
        .clone()
        .ok_or("the config has no auth.key_store")?;
    Ok((path, secret_hasher(&config.auth)?))
}

/// Issues a key and records its hash; returns the full key (shown once) and its id.
pub fn issue(config: &Config, request: IssueRequest) -> Result<IssuedKey, String> {
    if request.consumer.trim().is_empty() || request.plan.trim().is_empty() {
        return Err("--consumer and --plan must not be empty".into());
    }
    if request.models.is_empty() {
        return Err("--models needs at least one model name (or \"*\")".into());
    }
    let (path, hasher) = store_and_hasher(config)?;
    let key = IssuedKey::generate()?;
    let now = unix_now();
    let record = KeyRecord {
        id: key.id.clone(),
        consumer: request.consumer,
        plan: request.plan,
        models: request.models,
        group: request.group,
        created: now,
        expires: request.expires_in.map(|d| now + d.as_secs()),
        status: KeyStatus::Active,
        hash: key.hash(&hasher),
        previous: Vec::new(),
    };
    keystore::update(&path, |store| {
        store.keys.push(record);
        Ok(())
    })?;
    log::info!(target: "audit", "{}", serde_json::json!({"event": "key_issued", "key_id": key.id, "time": now}));
    Ok(key)
}

/// Every key record (hashes are never printed by the CLI).
pub fn list(config: &Config) -> Result<Vec<KeyRecord>, String> {
    let (path, _) = store_and_hasher(config)?;
    Ok(keystore::load(&path)?.keys)
}

/// Marks a key revoked; refused from the next reload on.
pub fn revoke(config: &Config, id: &str) -> Result<(), String> {
    let (path, _) = store_and_hasher(config)?;
    keystore::update(&path, |store| {
        let key = store
            .keys
            .iter_mut()
            .find(|k| k.id == id)
            .ok_or_else(|| format!("no key with id {id}"))?;
        key.status = KeyStatus::Revoked;
        Ok(())
    })?;
    log::info!(target: "audit", "{}", serde_json::json!({"event": "key_revoked", "key_id": id, "time": unix_now()}));
    Ok(())
}

/// Gives a key a new secret; the old one keeps working for `grace`.
pub fn rotate(config: &Config, id: &str, grace: Duration) -> Result<IssuedKey, String> {
    let (path, hasher) = store_and_hasher(config)?;
    let key = IssuedKey::rotate(id)?;
    let now = unix_now();
    keystore::update(&path, |store| {
        let record = store
            .keys
            .iter_mut()
            .find(|k| k.id == id)
            .ok_or_else(|| format!("no key with id {id}"))?;
        if record.status == KeyStatus::Revoked {
            return Err(format!("key {id} is revoked"));
        }
        record.previous.retain(|p| p.valid_until > now);
        if !grace.is_zero() {
            record.previous.push(PreviousSecret {
                hash: record.hash.clone(),
                valid_until: now + grace.as_secs(),
            });
        }
        record.hash = key.hash(&hasher);
        Ok(())
    })?;
    log::info!(target: "audit", "{}", serde_json::json!({"event": "key_rotated", "key_id": id, "grace_s": grace.as_secs(), "time": now}));
    Ok(key)
}

/// On first run with `bootstrap_key = true` and an empty store: issues one key for all
/// models and returns it so `serve` can print it once.
pub fn bootstrap(config: &Config) -> Result<Option<IssuedKey>, String> {
    let Some(path) = &config.auth.key_store else {
        return Ok(None);
    };
    if !config.auth.bootstrap_key || !keystore::load(path)?.keys.is_empty() {
        return Ok(None);
    }
    issue(
        config,
        IssueRequest {
            consumer: "first-run".into(),
            plan: "default".into(),
            models: vec!["*".into()],
            group: None,
            expires_in: None,
        },
    )
    .map(Some)
}
