//! Images encrypted by skopeo (Debian 12's 1.9.3, ocicrypt 1.0.3) with JWE/RSA recipients are
//! decrypted by cloak to the original layers; tampering of every kind is refused with no output.
//! This slice covers RSA JWE only: EC keys, PKCS7, encryption by cloak and recipient
//! rewrapping are not implemented yet.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::images::{busybox, multilayer};
use common::tree::{assert_same, from_dir};
use common::*;
use sha2::Digest as _;

fn rsa_pair(dir: &Path, name: &str, bits: &str) -> (PathBuf, PathBuf) {
    let k = dir.join(format!("{name}.pem"));
    let p = dir.join(format!("{name}.pub.pem"));
    ok(Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&k)
        .arg(bits));
    ok(Command::new("openssl")
        .arg("rsa")
        .arg("-in")
        .arg(&k)
        .arg("-pubout")
        .arg("-out")
        .arg(&p));
    (k, p)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs/sha256").join(&digest[7..])
}

fn put(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let d = format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)));
    std::fs::write(blob(layout, &d), bytes).unwrap();
    (d, bytes.len())
}

/// Edit the manifest of `layout:1` (and its config through `config`), re-hashing what changed.
fn rewrite(
    layout: &Path,
    edit: impl FnOnce(&Path, &mut serde_json::Value, &mut serde_json::Value),
) {
    let mut index = json(&layout.join("index.json"));
    let md = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut manifest = json(&blob(layout, &md));
    let mut config = json(&blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    edit(layout, &mut manifest, &mut config);
    let (cd, cs) = put(layout, &serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = cd.into();
    manifest["config"]["size"] = cs.into();
    let (nd, ns) = put(layout, &serde_json::to_vec(&manifest).unwrap());
    index["manifests"][0]["digest"] = nd.into();
    index["manifests"][0]["size"] = ns.into();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

#[test]
fn skopeo_encrypted_images_decrypt_to_the_original_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let (k1, p1) = rsa_pair(tmp.path(), "alice", "2048");
    let (k2, p2) = rsa_pair(tmp.path(), "bob", "3072");
    for (name, fixture, extra) in [
        ("busybox", busybox(&tmp.path().join("bb")), vec![]),
        (
            "multilayer-some",
            multilayer(&tmp.path().join("ml"), false),
            vec!["--encrypt-layer", "0"],
        ),
    ] {
        let enc = tmp.path().join(format!("{name}-enc"));
        let mut args = vec!["copy".to_string()];
        args.extend(["--encryption-key".into(), format!("jwe:{}", p1.display())]);
        args.extend(["--encryption-key".into(), format!("jwe:{}", p2.display())]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(format!("oci:{}:1", fixture.display()));
        args.push(format!("oci:{}:1", enc.display()));
        ok(Command::new("skopeo").args(&args));
        let inspect: serde_json::Value = serde_json::from_slice(
            &ok(cloak().args(["inspect", "-o", "json", &format!("oci:{}:1", enc.display())]))
                .stdout,
        )
        .unwrap();
        assert!(
            inspect["layers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["encrypted"] == true),
            "{name}: nothing encrypted"
        );

        // Either recipient's key decrypts; the result unpacks like skopeo's own decryption.
        for key in [&k1, &k2] {
            let dec = tmp.path().join(format!(
                "{name}-dec-{}",
                key.file_stem().unwrap().to_string_lossy()
            ));
            ok(cloak()
                .args(["decrypt", "--key"])
                .arg(key)
                .arg(format!("oci:{}:1", enc.display()))
                .arg(format!("oci:{}:1", dec.display())));
            let ours = from_dir(&umoci_unpack(&dec, "1", &dec.with_extension("bundle")));
            let by_skopeo = tmp.path().join(format!("{name}-skopeo-dec"));
            if !by_skopeo.exists() {
                ok(Command::new("skopeo")
                    .args(["copy", "--decryption-key"])
                    .arg(key)
                    .arg(format!("oci:{}:1", enc.display()))
                    .arg(format!("oci:{}:1", by_skopeo.display())));
            }
            let theirs = from_dir(&umoci_unpack(
                &by_skopeo,
                "1",
                &by_skopeo
                    .with_extension(format!("b{}", key.file_stem().unwrap().to_string_lossy())),
            ));
            assert_same(
                &format!("{name}: cloak vs skopeo decryption"),
                &theirs,
                &ours,
            );
            // The config (and so every diff_id) is untouched.
            let m = json(&blob(
                &dec,
                json(&dec.join("index.json"))["manifests"][0]["digest"]
                    .as_str()
                    .unwrap(),
            ));
            let me = json(&blob(
                &enc,
                json(&enc.join("index.json"))["manifests"][0]["digest"]
                    .as_str()
                    .unwrap(),
            ));
            assert_eq!(m["config"], me["config"]);
            assert!(m["layers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|l| !l["mediaType"].as_str().unwrap().ends_with("+encrypted")));
        }
    }
}

#[test]
fn tampering_and_missing_keys_are_refused_without_output() {
    let tmp = tempfile::tempdir().unwrap();
    let (k1, p1) = rsa_pair(tmp.path(), "alice", "2048");
    let (other, _) = rsa_pair(tmp.path(), "mallory", "2048");
    let fixture = busybox(&tmp.path().join("bb"));
    let enc = tmp.path().join("enc");
    ok(Command::new("skopeo")
        .args(["copy", "--encryption-key"])
        .arg(format!("jwe:{}", p1.display()))
        .arg(format!("oci:{}:1", fixture.display()))
        .arg(format!("oci:{}:1", enc.display())));
    let variant = |name: &str,
                   edit: &dyn Fn(&Path, &mut serde_json::Value, &mut serde_json::Value)|
     -> PathBuf {
        let dir = tmp.path().join(name);
        ok(Command::new("cp").arg("-a").arg(&enc).arg(&dir));
        rewrite(&dir, |l, m, c| edit(l, m, c));
        dir
    };
    let flipped = variant("flipped", &|l, m, _| {
        let d = m["layers"][0]["digest"].as_str().unwrap().to_string();
        let mut bytes = std::fs::read(blob(l, &d)).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        let (nd, _) = put(l, &bytes);
        m["layers"][0]["digest"] = nd.into();
    });
    let nonce = variant("nonce", &|_, m, _| {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD;
        let ann = &mut m["layers"][0]["annotations"]["org.opencontainers.image.enc.pubopts"];
        let mut pubopts: serde_json::Value =
            serde_json::from_slice(&b.decode(ann.as_str().unwrap()).unwrap()).unwrap();
        pubopts["cipheroptions"]["nonce"] = b.encode([0u8; 16]).into();
        *ann = b.encode(serde_json::to_vec(&pubopts).unwrap()).into();
    });
    let diff_id = variant("diff-id", &|_, _, c| {
        c["rootfs"]["diff_ids"][0] = format!("sha256:{}", "0".repeat(64)).into();
    });
    let swapped = variant("swapped", &|l, m, _| {
        // Another image's encrypted layer under this image's wrapped keys.
        let other_enc = l.with_file_name("other-enc");
        if !other_enc.exists() {
            let other = common::images::single_layer(
                &l.with_file_name("other"),
                &[common::images::T::File("x", 0o644, 0, b"other")],
            );
            let mut c = Command::new("skopeo");
            c.args(["copy", "--encryption-key"]).arg(format!(
                "jwe:{}",
                l.with_file_name("alice.pub.pem").display()
            ));
            ok(c.arg(format!("oci:{}:1", other.display()))
                .arg(format!("oci:{}:1", other_enc.display())));
        }
        let om = json(&blob(
            &other_enc,
            json(&other_enc.join("index.json"))["manifests"][0]["digest"]
                .as_str()
                .unwrap(),
        ));
        let od = om["layers"][0]["digest"].as_str().unwrap();
        let (nd, ns) = put(l, &std::fs::read(blob(&other_enc, od)).unwrap());
        m["layers"][0]["digest"] = nd.into();
        m["layers"][0]["size"] = ns.into();
    });
    for (name, layout, key, msg) in [
        ("flipped ciphertext bit", flipped, &k1, "HMAC mismatch"),
        ("public nonce injection", nonce, &k1, "try to set the nonce"),
        ("wrong diff_id", diff_id, &k1, "is not the config's"),
        ("swapped layer blob", swapped, &k1, "HMAC mismatch"),
        (
            "missing key",
            enc.clone(),
            &other,
            "missing private key needed for decryption",
        ),
    ] {
        let out_dir = tmp.path().join(format!("out-{}", name.replace(' ', "-")));
        let err = fails(
            cloak()
                .args(["decrypt", "--key"])
                .arg(key)
                .arg(format!("oci:{}:1", layout.display()))
                .arg(format!("oci:{}:1", out_dir.display())),
        );
        assert!(err.contains(msg), "{name}: {err}");
        assert!(!out_dir.exists(), "{name}: output written");
    }
}
