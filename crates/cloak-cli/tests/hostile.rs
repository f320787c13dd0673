//! Hostile input: a registry that lies, and layers that try to escape the image root.
//! Each case ends with a clear error or a safe result, never a panic, never a partial image.

mod common;

use common::fake::{FakeRegistry, Fault};
use common::images::{busybox, single_layer, T};
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
