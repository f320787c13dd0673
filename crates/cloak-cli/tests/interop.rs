//! cloak against independent peers: images cloak writes are read by skopeo and unpacked by umoci
//! identically, images skopeo writes are read by cloak the same way, and blobs keep their digests.

mod common;

use common::images::{busybox, multiarch, multilayer};
use common::registry::Registry;
use common::tree::{assert_same, from_dir};
use common::*;

fn manifest_digest(layout: &std::path::Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn blob_names(layout: &std::path::Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect()
}

#[test]
fn images_cloak_writes_are_read_identically_by_skopeo_and_umoci() {
    let reg = Registry::plain();
    let tmp = tempfile::tempdir().unwrap();
    for (name, fixture) in [
        ("busybox", busybox(&tmp.path().join("bb"))),
        ("multilayer", multilayer(&tmp.path().join("ml"), false)),
    ] {
        let src = format!("oci:{}:1", fixture.display());
        let expected = from_dir(&umoci_unpack(
            &fixture,
            "1",
            &tmp.path().join(format!("{name}-ref")),
        ));

        // flatten agrees with umoci on the source itself
        assert_same(
            &format!("{name}: cloak ls-files vs umoci"),
            &expected,
            &cloak_tree(&src, &[]),
        );

        // cloak → registry → skopeo → OCI layout → umoci
        let remote = format!("docker://{}/interop/{name}:1", reg.addr());
        let out = ok(cloak().args([
            "copy",
            "--dest-tls-verify=false",
            "-o",
            "json",
            &src,
            &remote,
        ]));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            report["digest"],
            manifest_digest(&fixture),
            "{name}: manifest digest kept bit for bit"
        );
        let via_skopeo = tmp.path().join(format!("{name}-skopeo"));
        ok(&mut skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &remote,
            &format!("oci:{}:1", via_skopeo.display()),
        ]));
        // skopeo compresses uncompressed layers on copy (multilayer has one), so only an
        // all-compressed image comes back from skopeo under the same manifest digest.
        if name == "busybox" {
            assert_eq!(manifest_digest(&via_skopeo), manifest_digest(&fixture));
        }
        let got = from_dir(&umoci_unpack(
            &via_skopeo,
            "1",
            &tmp.path().join(format!("{name}-b1")),
        ));
        assert_same(
            &format!("{name}: cloak→registry→skopeo→umoci"),
            &expected,
            &got,
        );

        // cloak: registry → OCI layout → umoci; every blob under its original name
        let local = tmp.path().join(format!("{name}-cloak"));
        ok(cloak().args([
            "copy",
            "--src-tls-verify=false",
            &remote,
            &format!("oci:{}:1", local.display()),
        ]));
        assert_eq!(manifest_digest(&local), manifest_digest(&fixture));
        assert_eq!(
            blob_names(&local),
            blob_names(&fixture),
            "{name}: same blobs, same digests"
        );
        let got = from_dir(&umoci_unpack(
            &local,
            "1",
            &tmp.path().join(format!("{name}-b2")),
        ));
        assert_same(&format!("{name}: registry→cloak→umoci"), &expected, &got);
    }
}

#[test]
fn images_skopeo_writes_are_read_identically_by_cloak() {
    let reg = Registry::plain();
    let tmp = tempfile::tempdir().unwrap();
    let fixture = multilayer(&tmp.path().join("ml"), false);
    let expected = from_dir(&umoci_unpack(&fixture, "1", &tmp.path().join("ref")));
    let remote = format!("docker://{}/from-skopeo/ml:1", reg.addr());
    ok(&mut skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:1", fixture.display()),
        &remote,
    ]));
    assert_same(
        "cloak ls-files of a skopeo push",
        &expected,
        &cloak_tree(&remote, &["--tls-verify=false"]),
    );
    let local = tmp.path().join("out");
    ok(cloak().args([
        "copy",
        "--src-tls-verify=false",
        &remote,
        &format!("oci:{}:1", local.display()),
    ]));
    let got = from_dir(&umoci_unpack(&local, "1", &tmp.path().join("b")));
    assert_same("skopeo→registry→cloak→umoci", &expected, &got);

    // docker-archive written by skopeo
    let archive = tmp.path().join("ml.tar");
    ok(&mut skopeo(&[
        "copy",
        &format!("oci:{}:1", fixture.display()),
        &format!("docker-archive:{}:ml:1", archive.display()),
    ]));
    let from_archive = format!("docker-archive:{}", archive.display());
    assert_same(
        "cloak ls-files of a docker-archive",
        &expected,
        &cloak_tree(&from_archive, &[]),
    );
    let local = tmp.path().join("from-archive");
    ok(cloak().args(["copy", &from_archive, &format!("oci:{}:1", local.display())]));
    let got = from_dir(&umoci_unpack(&local, "1", &tmp.path().join("b2")));
    assert_same("docker-archive→cloak→umoci", &expected, &got);
}

#[test]
fn zstd_layers_flatten_like_their_gzip_twins_and_cross_a_registry() {
    let reg = Registry::plain();
    let tmp = tempfile::tempdir().unwrap();
    let plain = multilayer(&tmp.path().join("tar"), false);
    let zstd = multilayer(&tmp.path().join("zstd"), true);
    let expected = cloak_tree(&format!("oci:{}:1", plain.display()), &[]);
    assert_same(
        "zstd vs tar layer",
        &expected,
        &cloak_tree(&format!("oci:{}:1", zstd.display()), &[]),
    );
    let remote = format!("docker://{}/zstd/ml:1", reg.addr());
    ok(cloak().args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:1", zstd.display()),
        &remote,
    ]));
    // skopeo reads the zstd image back bit for bit
    let back = tmp.path().join("back");
    ok(&mut skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &remote,
        &format!("oci:{}:1", back.display()),
    ]));
    assert_eq!(manifest_digest(&back), manifest_digest(&zstd));
    assert_same(
        "zstd through a registry",
        &expected,
        &cloak_tree(&remote, &["--tls-verify=false"]),
    );
}

#[test]
fn multi_arch_indexes_copy_whole_or_by_platform() {
    let reg = Registry::plain();
    let tmp = tempfile::tempdir().unwrap();
    let ma = multiarch(&tmp.path().join("ma"));
    let src = format!("oci:{}:1", ma.display());
    let remote = format!("docker://{}/multi/arch:1", reg.addr());
    ok(cloak().args(["copy", "--all", "--dest-tls-verify=false", &src, &remote]));
    let raw = ok(&mut skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &remote,
    ]))
    .stdout;
    let index: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        index["manifests"].as_array().unwrap().len(),
        2,
        "the index itself was pushed"
    );
    for arch in ["amd64", "arm64"] {
        let t = cloak_tree(
            &remote,
            &["--tls-verify=false", "--platform", &format!("linux/{arch}")],
        );
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(arch.as_bytes()));
        assert_eq!(
            t["/arch.txt"].sha256.as_deref(),
            Some(sha.as_str()),
            "{arch}"
        );
    }
    // Without --all one platform alone is copied (linux/amd64 unless --platform names another):
    // one image manifest, the index's entry for that platform, and only its blobs.
    let entries = index["manifests"].as_array().unwrap();
    for (arch, extra) in [
        ("amd64", vec![]),
        ("arm64", vec!["--platform", "linux/arm64"]),
    ] {
        let single = tmp.path().join(format!("single-{arch}"));
        let dest = format!("oci:{}:1", single.display());
        ok(cloak().arg("copy").args(&extra).args([&src, &dest]));
        let top: serde_json::Value =
            serde_json::from_slice(&std::fs::read(single.join("index.json")).unwrap()).unwrap();
        let copied = top["manifests"].as_array().unwrap();
        assert_eq!(copied.len(), 1, "{arch}: {top}");
        assert_eq!(
            copied[0]["mediaType"], "application/vnd.oci.image.manifest.v1+json",
            "{arch}: {top}"
        );
        let want = entries
            .iter()
            .find(|e| e["platform"]["architecture"] == arch)
            .unwrap();
        assert_eq!(copied[0]["digest"], want["digest"], "{arch}");
        let manifest: serde_json::Value =
            serde_json::from_slice(&ok(&mut skopeo(&["inspect", "--raw", &dest])).stdout).unwrap();
        let config: serde_json::Value = serde_json::from_slice(
            &ok(&mut skopeo(&["inspect", "--config", "--raw", &dest])).stdout,
        )
        .unwrap();
        assert_eq!(config["architecture"], arch);
        let blobs = std::fs::read_dir(single.join("blobs/sha256"))
            .unwrap()
            .count();
        assert_eq!(
            blobs,
            2 + manifest["layers"].as_array().unwrap().len(),
            "{arch}: manifest, config and layers only"
        );
        let t = cloak_tree(&dest, &[]);
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(arch.as_bytes()));
        assert_eq!(
            t["/arch.txt"].sha256.as_deref(),
            Some(sha.as_str()),
            "{arch}"
        );
    }
    let err = fails(cloak().args(["inspect", "--platform", "linux/s390x", &src]));
    assert!(
        err.contains("no image for platform linux/s390x") && err.contains("linux/arm64"),
        "{err}"
    );
}
