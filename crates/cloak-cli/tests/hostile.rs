//! Hostile input: a registry that lies, and layers that try to escape the image root.
//! Each case ends with a clear error or a safe result, never a panic, never a partial image.

mod common;

use common::fake::{FakeRegistry, Fault};
use common::images::{busybox, hostile, single_layer, T};
use common::*;

fn assert_no_image_written(out: &std::path::Path) {
    // Either nothing was created, or a layout without any image in its index.
    if let Ok(index) = std::fs::read(out.join("index.json")) {
        let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
        assert!(
            index["manifests"].as_array().unwrap().is_empty(),
            "an image was committed: {index}"
        );
    }
    if let Ok(dir) = std::fs::read_dir(out.join("blobs/sha256")) {
        let names: Vec<String> = dir
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with(".tmp-")),
            "temporary blobs left behind: {names:?}"
        );
    }
}

/// The layer digests of the image tagged `1` in an OCI layout.
fn layer_digests(layout: &std::path::Path) -> Vec<String> {
    let read = |p: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let index = read(layout.join("index.json"));
    let md = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest = read(layout.join("blobs/sha256").join(&md[7..]));
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// Copy the busybox fixture from a fake registry with `fault`; returns the error, the
/// destination, the fixture's layer digests and the temporary directory.
fn copy_from_fake(fault: Fault) -> (String, std::path::PathBuf, Vec<String>, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = busybox(&tmp.path().join("bb"));
    let layers = layer_digests(&fixture);
    let fake = FakeRegistry::serve(&fixture, fault);
    let out = tmp.path().join("out");
    let err = fails(cloak().args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/hostile/bb:1", fake.addr),
        &format!("oci:{}:1", out.display()),
    ]));
    assert!(!err.contains("panicked"), "{err}");
    (err, out, layers, tmp)
}

#[test]
fn blob_with_wrong_digest_is_refused_and_nothing_is_committed() {
    let (err, out, layers, _tmp) = copy_from_fake(Fault::WrongBlobDigest);
    // The error names the blob, the digest it should have had and the one it had.
    assert!(
        layers.iter().any(|d| err.contains(&format!("blob {d}"))
            && err.contains(&format!("digest mismatch: expected {d}, got sha256:"))),
        "{err}"
    );
    assert_no_image_written(&out);
}

#[test]
fn truncated_blob_is_refused_and_nothing_is_committed() {
    let (err, out, layers, _tmp) = copy_from_fake(Fault::TruncatedBlob);
    // The error names the blob and the cause: the body ended before its Content-Length.
    assert!(
        layers.iter().any(|d| err.contains(&format!("blob {d}")))
            && err.contains("end of file before message length reached"),
        "{err}"
    );
    assert_no_image_written(&out);
}

#[test]
fn ten_mib_manifest_is_refused() {
    let (err, out, _, _tmp) = copy_from_fake(Fault::HugeManifest);
    assert!(err.contains("over the 4194304-byte limit"), "{err}");
    assert_no_image_written(&out);
}

#[test]
fn an_endless_manifest_is_refused_after_4_mib_without_reading_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = busybox(&tmp.path().join("bb"));
    let fake = FakeRegistry::serve(&fixture, Fault::EndlessManifest);
    let out = tmp.path().join("out");
    let err = fails(cloak().args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/hostile/bb:1", fake.addr),
        &format!("oci:{}:1", out.display()),
    ]));
    assert!(err.contains("over the 4194304-byte limit"), "{err}");
    // cloak hung up: of the 1 GiB on offer, little more than the limit (plus what socket
    // buffers hold) was ever written.
    let sent = fake
        .manifest_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(sent < 64 << 20, "{sent} bytes of manifest were sent");
    assert_no_image_written(&out);
}

#[test]
fn unknown_manifest_media_type_is_refused() {
    let (err, out, _, _tmp) = copy_from_fake(Fault::UnknownMediaType);
    assert!(
        err.contains("unsupported media type")
            && err.contains("application/vnd.example.unknown.v1+json"),
        "{err}"
    );
    assert_no_image_written(&out);
}

#[test]
fn dotdot_names_and_symlink_escapes_stay_inside_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("escape");
    let layout = single_layer(
        &tmp.path().join("h"),
        &[
            T::File("../escape", 0o644, 0, b"should stay inside"),
            T::Dir("etc/", 0o755, 0),
            T::Sym("etc/evil", "/etc/shadow"),
            T::Sym("link", "/"),
            T::File("link/tmp/x", 0o644, 0, b"through a symlink"),
            T::Sym("up", "../../../.."),
            T::File("up/y", 0o644, 0, b"through a relative symlink"),
        ],
    );
    let image = format!("oci:{}:1", layout.display());
    let tree = cloak_tree(&image, &[]);
    let paths: Vec<&str> = tree.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "/escape",
            "/etc",
            "/etc/evil",
            "/link",
            "/tmp",
            "/tmp/x",
            "/up",
            "/y"
        ]
    );
    assert_eq!(tree["/etc/evil"].target.as_deref(), Some("/etc/shadow"));
    // A copy moves blobs only; nothing is extracted anywhere.
    let out = tmp.path().join("copy");
    ok(cloak().args(["copy", &image, &format!("oci:{}:1", out.display())]));
    assert!(!outside.exists(), "a file was written outside the image");
    assert!(
        !std::path::Path::new("/tmp/x").exists()
            || std::fs::read("/tmp/x").unwrap() != b"through a symlink"
    );
}

#[test]
fn hardlink_to_outside_the_root_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = single_layer(
        &tmp.path().join("h"),
        &[
            T::File("inside", 0o644, 0, b"x"),
            T::Hard("stolen", "../../etc/passwd"),
        ],
    );
    let err = fails(cloak().args(["ls-files", &format!("oci:{}:1", layout.display())]));
    assert!(
        err.contains("hardlink stolen -> ../../etc/passwd") && err.contains("refused"),
        "{err}"
    );
}

#[test]
fn tampered_layout_blob_is_detected_on_read() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = busybox(&tmp.path().join("bb"));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let md = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(&md[7..])).unwrap())
            .unwrap();
    let layer = layout
        .join("blobs/sha256")
        .join(&manifest["layers"][0]["digest"].as_str().unwrap()[7..]);
    let mut bytes = std::fs::read(&layer).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&layer, bytes).unwrap();
    let out = tmp.path().join("out");
    let err = fails(cloak().args([
        "copy",
        &format!("oci:{}:1", layout.display()),
        &format!("oci:{}:1", out.display()),
    ]));
    let d = &layer_digests(&layout)[0];
    assert!(
        err.contains(&format!("digest mismatch: expected {d}, got sha256:")),
        "{err}"
    );
    assert_no_image_written(&out);
}

#[test]
fn hostile_names_and_layer_bombs_end_in_an_error_naming_entry_or_limit() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, want) in [
        (
            "nul-gnu-long-name",
            "entry cloak\\0x/run.json contains a NUL byte",
        ),
        (
            "nul-pax-path",
            "entry cloak\\0/run.json contains a NUL byte",
        ),
        (
            "nul-pax-linkpath",
            "link target /etc\\0/../cloak contains a NUL byte",
        ),
        ("not-utf8", "entry caf\\xe9 is not UTF-8"),
        (
            "deep-path",
            "has 2001 components, over the limit of 256 directory levels",
        ),
        (
            "long-path",
            "is 200000 bytes long, over the limit of 4095 bytes",
        ),
        (
            "huge-gnu-long-name",
            "a GNU long name of 1099511627776 bytes, over the limit of 4096 bytes",
        ),
        (
            "huge-pax-record",
            "a PAX extended header of 1099511627776 bytes, over the limit of 1048576 bytes",
        ),
        ("many-entries", "more than 1048576 entries in one layer"),
    ] {
        let image = hostile(&tmp.path().join(kind), kind);
        let err = fails(
            cloak()
                .arg("ls-files")
                .arg(format!("oci:{}:1", image.display())),
        );
        assert!(err.contains(want), "{kind}: {err}");
        assert!(
            err.contains("layer sha256:"),
            "{kind}: the layer is not named: {err}"
        );
        assert!(!err.contains("panicked"), "{kind}: {err}");
        std::fs::remove_dir_all(&image).unwrap();
    }
}

#[test]
fn whiteout_storms_end_with_the_right_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let image = hostile(&tmp.path().join("opq"), "many-opaque-markers");
    let out = ok(cloak()
        .args(["ls-files", "-o", "json"])
        .arg(format!("oci:{}:1", image.display())));
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let under_d: Vec<&str> = entries
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .filter(|p| p.starts_with("/d/"))
        .collect();
    // The opaque markers hide every lower file of /d; the 20 directories that lead to the
    // 10000 files the upper layer added stay, with those files.
    assert_eq!(under_d.len(), 10_020);
    assert!(
        under_d
            .iter()
            .all(|p| p.contains("/new") || !p[3..].contains('/')),
        "{under_d:?}"
    );
}

#[test]
fn control_characters_in_names_are_kept_and_printed_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let image = hostile(&tmp.path().join("ctl"), "control-chars");
    let out = ok(cloak()
        .arg("ls-files")
        .arg(format!("oci:{}:1", image.display())));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "one line per entry: {text:?}");
    assert!(
        lines[0].ends_with(" /evil\\n-rw-r--r-- 0:0 forged\\u{1b}[31m"),
        "{text:?}"
    );
    assert!(!text.contains('\x1b'));
    let json = ok(cloak()
        .args(["ls-files", "-o", "json"])
        .arg(format!("oci:{}:1", image.display())));
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(entries[0]["path"], "/evil\n-rw-r--r-- 0:0 forged\u{1b}[31m");
}
