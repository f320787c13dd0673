//! A real registry in TLS + htpasswd mode, and a registry that dies in the middle of a push.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::images::{busybox, tar, Comp, Layout, T};
use common::registry::Registry;
use common::*;

#[test]
fn tls_registry_with_credentials_from_a_docker_config() {
    let reg = Registry::tls_htpasswd("alice", "s3cret-Pa55");
    let tmp = tempfile::tempdir().unwrap();
    let fixture = busybox(&tmp.path().join("bb"));
    let src = format!("oci:{}:1", fixture.display());
    let remote = format!("docker://{}/secure/bb:1", reg.addr());
    let cert_dir = reg.cert_dir();
    let cert_dir = cert_dir.to_str().unwrap();

    ok(cloak().env("DOCKER_CONFIG", reg.docker_config_dir()).args([
        "copy",
        "--dest-cert-dir",
        cert_dir,
        &src,
        &remote,
    ]));
    assert!(reg.has_tag("secure/bb:1"), "skopeo sees the pushed image");
    let out = ok(cloak().env("DOCKER_CONFIG", reg.docker_config_dir()).args([
        "inspect",
        "-o",
        "json",
        "--cert-dir",
        cert_dir,
        &remote,
    ]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["cmd"][0], "echo hello");

    // A wrong password names the registry and the cause, and never echoes the secret.
    let empty = tempfile::tempdir().unwrap();
    let err = fails(cloak().env("DOCKER_CONFIG", empty.path()).args([
        "copy",
        "--dest-cert-dir",
        cert_dir,
        "--dest-creds",
        "alice:Wr0ng-Secret-123",
        &src,
        &format!("docker://{}/secure/other:1", reg.addr()),
    ]));
    assert!(
        err.contains(&format!("registry {}", reg.addr())) && err.contains("authentication failed"),
        "{err}"
    );
    assert!(
        !err.contains("Wr0ng-Secret-123"),
        "the password leaked: {err}"
    );
    assert!(!reg.has_tag("secure/other:1"));

    // Without the CA the TLS failure is reported, not hidden.
    let err = fails(
        cloak()
            .env("DOCKER_CONFIG", reg.docker_config_dir())
            .args(["inspect", &remote]),
    );
    // The error line itself (not only a log line) names the registry and the cause.
    let line = err
        .lines()
        .find(|l| l.starts_with("cloak: error:"))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        line.contains(&format!("registry {}", reg.addr()))
            && line.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
}

/// Deterministic incompressible bytes (xorshift), so the push takes long enough to interrupt.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn registry_killed_mid_push_leaves_no_tag_and_the_same_command_then_succeeds() {
    let mut reg = Registry::plain();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("big");
    let mut layout = Layout::new(&dir);
    for i in 0..4u64 {
        let data = noise(48 << 20, i + 1);
        layout = layout.layer(
            Comp::Gzip,
            tar(&[T::File(&format!("blob{i}.bin"), 0o644, 0, &data)]),
        );
    }
    layout.finish("1", "amd64", serde_json::json!({"Cmd": ["/bin/true"]}));
    let src = format!("oci:{}:1", dir.display());
    let remote = format!("docker://{}/crash/big:1", reg.addr());
    let args = [
        "copy",
        "--quiet",
        "--jobs",
        "1",
        "--dest-tls-verify=false",
        &src,
        &remote,
    ];

    let mut child = cloak()
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until an upload is under way, then kill the registry as a crash would.
    let uploads = reg
        .storage()
        .join("docker/registry/v2/repositories/crash/big/_uploads");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !uploads.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        assert!(Instant::now() < deadline, "the push never started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the push finished before it could be interrupted"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    reg.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "cloak must fail when the registry dies"
    );
    assert!(
        err.contains(&reg.addr()) && !err.contains("panicked"),
        "{err}"
    );

    reg.restart();
    assert!(
        !reg.has_tag("crash/big:1"),
        "a tag points at a partial image"
    );
    ok(cloak().args(args));
    assert!(reg.has_tag("crash/big:1"));
    let back = tmp.path().join("back");
    ok(&mut skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &remote,
        &format!("oci:{}:1", back.display()),
    ]));
    // What came back is the source: the same manifest, hence the same config and layers, and
    // the same blobs byte for byte.
    let manifest_digest = |layout: &std::path::Path| {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(manifest_digest(&back), manifest_digest(&dir));
    let blobs = |layout: &std::path::Path| {
        let mut names: Vec<_> = std::fs::read_dir(layout.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    assert_eq!(blobs(&back), blobs(&dir));
    for name in blobs(&dir) {
        let blob =
            |layout: &std::path::Path| std::fs::read(layout.join("blobs/sha256").join(&name));
        assert!(
            blob(&back).unwrap() == blob(&dir).unwrap(),
            "{name:?} differs"
        );
    }
    let _ = std::io::stderr().flush();
}
