//! `modelgate check FILE`: every error with its path, exit status 1; a good file passes.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use modelgate_e2e::gateway::binary;
use modelgate_e2e::repo_root;

#[test]
fn shipped_config_passes() {
    let out = Command::new(binary())
        .arg("check")
        .arg(repo_root().join("config/modelgate.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}

#[test]
fn bad_config_lists_every_error_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[limits]
max_body_bytes = 0
[[routes]]
name = "a"
path_prefix = "/a"
[routes.http]
upstreams = ["http://127.0.0.1:1", "localhost:80"]
read_timeout = "forever"
[[routes]]
name = "b"
model = "b"
[routes.embedded]
onnx = "missing.onnx"
metadata = "missing.json"
"#,
    )
    .unwrap();
    let out = Command::new(binary())
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "limits.max_body_bytes: must be > 0",
        "routes[0].http.upstreams[1]: invalid URL \"localhost:80\"",
        "routes[0].http.read_timeout:",
        "routes[1].embedded.onnx: file",
        "routes[1].embedded.metadata: file",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn unloadable_model_is_reported_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.onnx");
    std::fs::write(&bogus, b"not an onnx file").unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[[routes]]\nname = \"d\"\nmodel = \"digits\"\npublic = true\n[routes.embedded]\nonnx = {:?}\nmetadata = {:?}\n",
            bogus,
            repo_root().join("models/digits.json")
        ),
    )
    .unwrap();
    let out = Command::new(binary())
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("routes[0].embedded: cannot load ONNX model")
    );
}

#[test]
fn calibrate_reproduces_the_shipped_extraction_profile() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("profile.json");
    let run = Command::new(binary())
        .args(["calibrate", "--model", "digits", "--config"])
        .arg(repo_root().join("config/modelgate.toml"))
        .arg("--benign")
        .arg(repo_root().join("models/digits_holdout.json"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let read = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    assert_eq!(
        read(&out),
        read(&repo_root().join("models/digits.profile.json"))
    );
    // A model the config does not serve is a clear error, not a panic.
    let run = Command::new(binary())
        .args([
            "calibrate",
            "--model",
            "nope",
            "--benign",
            "x",
            "--out",
            "y",
            "--config",
        ])
        .arg(repo_root().join("config/modelgate.toml"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("no route serves model \"nope\""));
}
