//! ocicrypt interop with skopeo (Debian 12's 1.9.3, built with ocicrypt 1.0.3) in both
//! directions, every key format, recipient changes without re-encryption, the keyprovider
//! protocol, and refusals of tampered input with no output written.
//!
//! What that skopeo lacks, and so is tested against cloak's own reader or a protocol peer here:
//! keyprovider recipients (`provider:` arrived in ocicrypt 1.1.0; a Python provider written
//! from Go's JSON shapes stands in), password-protected decryption keys (`file:pass` is broken
//! in 1.0.3), EC JWK recipients, SEC1 PEM decryption keys, and adding recipients (skopeo
//! silently leaves an encrypted image as it is).

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

fn ec_pair(dir: &Path, name: &str, curve: &str) -> (PathBuf, PathBuf) {
    let k = dir.join(format!("{name}.pem"));
    let p = dir.join(format!("{name}.pub.pem"));
    ok(Command::new("openssl")
        .args(["genpkey", "-algorithm", "EC", "-pkeyopt"])
        .arg(format!("ec_paramgen_curve:{curve}"))
        .arg("-out")
        .arg(&k));
    ok(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&k)
        .arg("-out")
        .arg(&p));
    (k, p)
}

fn certificate(dir: &Path, key: &Path, name: &str) -> PathBuf {
    let c = dir.join(format!("{name}.crt"));
    ok(Command::new("openssl")
        .args(["req", "-x509", "-new", "-subj"])
        .arg(format!("/CN={name}"))
        .args(["-days", "30", "-key"])
        .arg(key)
        .arg("-out")
        .arg(&c));
    c
}

/// A JWK built from `openssl pkey -text` (an independent source of the key's numbers).
fn jwk(key: &Path, private: bool) -> serde_json::Value {
    use base64::Engine;
    let text = String::from_utf8(
        ok(Command::new("openssl")
            .args(["pkey", "-text", "-noout", "-in"])
            .arg(key))
        .stdout,
    )
    .unwrap();
    let hex_after = |label: &str| -> Vec<u8> {
        let mut lines = text.lines().skip_while(|l| !l.starts_with(label)).skip(1);
        let mut hex = String::new();
        for l in lines.by_ref() {
            if !l.starts_with(' ') {
                break;
            }
            hex.push_str(&l.trim().replace(':', ""));
        }
        let mut b = hex::decode(hex).unwrap();
        while b.len() > 1 && b[0] == 0 {
            b.remove(0);
        }
        b
    };
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    if text.contains("modulus:") {
        let mut j =
            serde_json::json!({"kty": "RSA", "n": b64(&hex_after("modulus:")), "e": "AQAB"});
        if private {
            for (k, l) in [
                ("d", "privateExponent:"),
                ("p", "prime1:"),
                ("q", "prime2:"),
                ("dp", "exponent1:"),
                ("dq", "exponent2:"),
                ("qi", "coefficient:"),
            ] {
                j[k] = b64(&hex_after(l)).into();
            }
        }
        j
    } else {
        let (crv, n) = if text.contains("P-256") {
            ("P-256", 32)
        } else if text.contains("P-384") {
            ("P-384", 48)
        } else {
            ("P-521", 66)
        };
        let point = hex_after("pub:");
        assert_eq!(point[0], 4);
        let mut j = serde_json::json!({"kty": "EC", "crv": crv, "x": b64(&point[1..1 + n]), "y": b64(&point[1 + n..])});
        if private {
            let mut d = hex_after("priv:");
            while d.len() < n {
                d.insert(0, 0);
            }
            j["d"] = b64(&d).into();
        }
        j
    }
}

fn manifest(layout: &Path) -> serde_json::Value {
    json(&blob(
        layout,
        json(&layout.join("index.json"))["manifests"][0]["digest"]
            .as_str()
            .unwrap(),
    ))
}

fn layer_digests(layout: &Path) -> Vec<String> {
    manifest(layout)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// Digests of the layers that were compressed in `original`: skopeo compresses plain tar
/// layers on any copy, so only those are comparable across a skopeo round trip.
fn same_compressed_layers(original: &Path, other: &Path, what: &str) {
    let m = manifest(original);
    let theirs = layer_digests(other);
    for (i, l) in m["layers"].as_array().unwrap().iter().enumerate() {
        if l["mediaType"].as_str().unwrap().ends_with("tar") {
            continue;
        }
        assert_eq!(
            l["digest"].as_str().unwrap(),
            theirs[i],
            "{what}: layer {i}"
        );
    }
}

fn oci(dir: &Path) -> String {
    format!("oci:{}:1", dir.display())
}

fn cloak_decrypt(enc: &Path, out: &Path, keys: &[&str]) {
    let mut c = cloak();
    c.args(["decrypt", "--quiet"]);
    for k in keys {
        c.arg("--key").arg(k);
    }
    ok(c.arg(oci(enc)).arg(oci(out)));
}

fn skopeo_decrypt(enc: &Path, out: &Path, keys: &[&Path]) -> std::process::Output {
    let mut c = Command::new("skopeo");
    c.args(["copy", "-q"]);
    for k in keys {
        c.arg("--decryption-key").arg(k);
    }
    run(c.arg(oci(enc)).arg(oci(out)))
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

/// (name, fixture, encryption arguments, key sets that must each decrypt the result)
type Case<'a, K> = (&'a str, &'a Path, Vec<String>, Vec<Vec<K>>);

/// Every key material of the suite, made once per test with openssl.
struct Keys {
    rsa: (PathBuf, PathBuf),
    rsa3072: (PathBuf, PathBuf),
    ec: Vec<(PathBuf, PathBuf)>,
    cert: PathBuf,
}

fn keys(dir: &Path) -> Keys {
    let rsa = rsa_pair(dir, "alice", "2048");
    let cert = certificate(dir, &rsa.0, "alice");
    Keys {
        rsa3072: rsa_pair(dir, "bob", "3072"),
        ec: ["P-256", "P-384", "P-521"]
            .iter()
            .map(|c| ec_pair(dir, &format!("ec-{c}"), c))
            .collect(),
        rsa,
        cert,
    }
}

#[test]
fn skopeo_encrypted_images_decrypt_to_the_original_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let k = keys(t);
    let bb = busybox(&t.join("bb"));
    let ml = multilayer(&t.join("ml"), false);
    let s = |p: &Path| p.display().to_string();
    // (name, fixture, skopeo arguments, keys that must each open it alone)
    let cases: Vec<Case<String>> = vec![
        (
            "jwe-rsa-ec-rsa3072",
            &bb,
            vec![
                format!("jwe:{}", s(&k.rsa.1)),
                format!("jwe:{}", s(&k.ec[1].1)),
                format!("jwe:{}", s(&k.rsa3072.1)),
            ],
            // The third recipient too: ocicrypt-rs fails there, cloak tries every recipient.
            vec![
                vec![s(&k.rsa.0)],
                vec![s(&k.ec[1].0)],
                vec![s(&k.rsa3072.0)],
            ],
        ),
        (
            "jwe-ec-p256-p521",
            &bb,
            vec![
                format!("jwe:{}", s(&k.ec[0].1)),
                format!("jwe:{}", s(&k.ec[2].1)),
            ],
            vec![vec![s(&k.ec[0].0)], vec![s(&k.ec[2].0)]],
        ),
        (
            "pkcs7",
            &bb,
            vec![format!("pkcs7:{}", s(&k.cert))],
            vec![vec![s(&k.rsa.0)]],
        ),
        (
            "jwe-and-pkcs7",
            &ml,
            vec![
                format!("jwe:{}", s(&k.ec[0].1)),
                format!("pkcs7:{}", s(&k.cert)),
            ],
            vec![vec![s(&k.ec[0].0)], vec![s(&k.rsa.0)]],
        ),
        (
            "only-the-top-layer",
            &ml,
            vec![
                format!("jwe:{}", s(&k.rsa.1)),
                "--encrypt-layer".into(),
                "-1".into(),
            ],
            vec![vec![s(&k.rsa.0)]],
        ),
        (
            "zstd",
            &ml,
            vec![
                format!("jwe:{}", s(&k.rsa.1)),
                "--dest-compress-format".into(),
                "zstd".into(),
            ],
            vec![vec![s(&k.rsa.0)]],
        ),
    ];
    for (name, fixture, skopeo_args, key_sets) in cases {
        let enc = t.join(format!("{name}-enc"));
        let mut c = Command::new("skopeo");
        c.args(["copy", "-q"]);
        let mut it = skopeo_args.iter();
        while let Some(a) = it.next() {
            if a.starts_with("--") {
                c.arg(a).arg(it.next().unwrap());
            } else {
                c.arg("--encryption-key").arg(a);
            }
        }
        ok(c.arg(oci(fixture)).arg(oci(&enc)));
        let enc_manifest = manifest(&enc);
        // inspect shows the schemes and recipient counts, never key material.
        let inspect: serde_json::Value =
            serde_json::from_slice(&ok(cloak().args(["inspect", "-o", "json", &oci(&enc)])).stdout)
                .unwrap();
        let encrypted: Vec<_> = inspect["layers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["encrypted"] == true)
            .collect();
        assert!(!encrypted.is_empty(), "{name}: nothing encrypted");
        let recipients = &encrypted[0]["encryption"]["recipients"];
        let jwe_count = skopeo_args.iter().filter(|a| a.starts_with("jwe:")).count();
        if jwe_count > 0 {
            assert_eq!(recipients["jwe"], jwe_count, "{name}: {inspect}");
        }
        if skopeo_args.iter().any(|a| a.starts_with("pkcs7:")) {
            assert_eq!(recipients["pkcs7"], 1, "{name}: {inspect}");
        }
        assert!(!inspect.to_string().contains("symkey"));
        if name == "only-the-top-layer" {
            assert_eq!(encrypted.len(), 1);
            assert_eq!(inspect["layers"][2]["encrypted"], true);
        }
        let original = from_dir(&umoci_unpack(fixture, "1", &t.join(format!("{name}-orig"))));
        for (i, ks) in key_sets.iter().enumerate() {
            let dec = t.join(format!("{name}-dec{i}"));
            let keys: Vec<&str> = ks.iter().map(String::as_str).collect();
            cloak_decrypt(&enc, &dec, &keys);
            let m = manifest(&dec);
            // Config (so every diff_id) untouched; nothing encrypted is left.
            assert_eq!(m["config"], enc_manifest["config"], "{name}");
            assert!(
                m["layers"].as_array().unwrap().iter().all(|l| {
                    !l["mediaType"].as_str().unwrap().ends_with("+encrypted")
                        && l["annotations"].as_object().is_none_or(|a| {
                            a.keys()
                                .all(|k| !k.starts_with("org.opencontainers.image.enc."))
                        })
                }),
                "{name}: {m}"
            );
            if name != "zstd" {
                // Decryption restores the very blobs skopeo encrypted.
                same_compressed_layers(fixture, &dec, name);
            }
            // umoci cannot read zstd: skopeo recompresses cloak's output to gzip first.
            let unpackable = if name == "zstd" {
                let gz = dec.with_extension("gzip");
                ok(Command::new("skopeo")
                    .args(["copy", "-q", "--dest-compress-format", "gzip"])
                    .arg(oci(&dec))
                    .arg(oci(&gz)));
                gz
            } else {
                dec.clone()
            };
            let ours = from_dir(&umoci_unpack(
                &unpackable,
                "1",
                &dec.with_extension("bundle"),
            ));
            assert_same(&format!("{name}: decrypted with {ks:?}"), &original, &ours);
        }
    }
}

#[test]
fn cloak_encrypted_images_decrypt_with_skopeo_to_the_same_root_filesystem() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let k = keys(t);
    let bb = busybox(&t.join("bb"));
    let ml = multilayer(&t.join("ml"), false);
    // umoci cannot unpack zstd layers: this one is compared by layer digests only.
    let zstd = multilayer(&t.join("ml-zstd"), true);
    let s = |p: &Path| p.display().to_string();
    // (name, fixture, cloak arguments, skopeo key sets that must each decrypt it)
    let cases: Vec<Case<PathBuf>> = vec![
        (
            "rsa",
            &bb,
            vec![format!("jwe:{}", s(&k.rsa.1))],
            vec![vec![k.rsa.0.clone()]],
        ),
        (
            "ec-all-curves-and-rsa3072",
            &ml,
            vec![
                format!("jwe:{}", s(&k.ec[0].1)),
                format!("jwe:{}", s(&k.ec[1].1)),
                format!("jwe:{}", s(&k.ec[2].1)),
                format!("jwe:{}", s(&k.rsa3072.1)),
            ],
            k.ec.iter()
                .map(|e| vec![e.0.clone()])
                .chain([vec![k.rsa3072.0.clone()]])
                .collect(),
        ),
        // skopeo needs the certificate beside the key for pkcs7.
        (
            "pkcs7",
            &ml,
            vec![format!("pkcs7:{}", s(&k.cert))],
            vec![vec![k.rsa.0.clone(), k.cert.clone()]],
        ),
        (
            "top-layer-only",
            &ml,
            vec![
                format!("jwe:{}", s(&k.rsa.1)),
                "--layer".into(),
                "-1".into(),
            ],
            vec![vec![k.rsa.0.clone()]],
        ),
        // A certificate as a JWE recipient, and a public JWK.
        (
            "jwe-certificate",
            &bb,
            vec![format!("jwe:{}", s(&k.cert))],
            vec![vec![k.rsa.0.clone()]],
        ),
    ];
    let pub_jwk = t.join("ec384.pub.jwk");
    std::fs::write(&pub_jwk, jwk(&k.ec[1].0, false).to_string()).unwrap();
    let mut cases = cases;
    cases.push((
        "ec-public-jwk",
        &bb,
        vec![format!("jwe:{}", s(&pub_jwk))],
        vec![vec![k.ec[1].0.clone()]],
    ));
    // A JWK's "alg" picks the algorithm (as in ocicrypt >= 1.1.10); skopeo 1.9.3 reads both.
    let mut oaep256 = jwk(&k.rsa.0, false);
    oaep256["alg"] = "RSA-OAEP-256".into();
    let oaep256_path = t.join("rsa-oaep-256.jwk");
    std::fs::write(&oaep256_path, oaep256.to_string()).unwrap();
    let mut a128kw = jwk(&k.ec[0].0, false);
    a128kw["alg"] = "ECDH-ES+A128KW".into();
    let a128kw_path = t.join("ec-a128kw.jwk");
    std::fs::write(&a128kw_path, a128kw.to_string()).unwrap();
    cases.push((
        "jwk-alg",
        &bb,
        vec![
            format!("jwe:{}", s(&oaep256_path)),
            format!("jwe:{}", s(&a128kw_path)),
        ],
        vec![vec![k.rsa.0.clone()], vec![k.ec[0].0.clone()]],
    ));
    cases.push((
        "zstd",
        &zstd,
        vec![format!("jwe:{}", s(&k.ec[0].1))],
        vec![vec![k.ec[0].0.clone()]],
    ));
    for (name, fixture, args, key_sets) in cases {
        let enc = t.join(format!("{name}-enc"));
        let mut c = cloak();
        c.args(["encrypt", "--quiet", "-o", "json"]);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a.starts_with("--") {
                c.arg(a).arg(it.next().unwrap());
            } else {
                c.arg("--recipient").arg(a);
            }
        }
        let report: serde_json::Value =
            serde_json::from_slice(&ok(c.arg(oci(fixture)).arg(oci(&enc))).stdout).unwrap();
        let m = manifest(&enc);
        let layers = m["layers"].as_array().unwrap();
        assert_eq!(report["layers"].as_array().unwrap().len(), layers.len());
        for (i, l) in layers.iter().enumerate() {
            let encrypted = l["mediaType"].as_str().unwrap().ends_with("+encrypted");
            assert_eq!(
                encrypted,
                name != "top-layer-only" || i == layers.len() - 1,
                "{name}: {m}"
            );
            if encrypted {
                // Public options: cipher and HMAC only, never a nonce.
                use base64::Engine;
                let pubopts: serde_json::Value = serde_json::from_slice(
                    &base64::engine::general_purpose::STANDARD
                        .decode(
                            l["annotations"]["org.opencontainers.image.enc.pubopts"]
                                .as_str()
                                .unwrap(),
                        )
                        .unwrap(),
                )
                .unwrap();
                assert_eq!(pubopts["cipher"], "AES_256_CTR_HMAC_SHA256");
                assert_eq!(pubopts["cipheroptions"], serde_json::json!({}));
            }
        }
        if name == "jwk-alg" {
            use base64::Engine;
            let entry = layers[0]["annotations"]["org.opencontainers.image.enc.keys.jwe"]
                .as_str()
                .unwrap();
            let jwe: serde_json::Value = serde_json::from_slice(
                &base64::engine::general_purpose::STANDARD
                    .decode(entry)
                    .unwrap(),
            )
            .unwrap();
            let algs: Vec<&str> = jwe["recipients"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["header"]["alg"].as_str().unwrap())
                .collect();
            assert_eq!(algs, ["RSA-OAEP-256", "ECDH-ES+A128KW"]);
        }
        let original = (name != "zstd")
            .then(|| from_dir(&umoci_unpack(fixture, "1", &t.join(format!("{name}-orig")))));
        for (i, ks) in key_sets.iter().enumerate() {
            let dec = t.join(format!("{name}-skopeo{i}"));
            let keys: Vec<&Path> = ks.iter().map(PathBuf::as_path).collect();
            let out = skopeo_decrypt(&enc, &dec, &keys);
            assert!(
                out.status.success(),
                "{name}: skopeo could not decrypt with {ks:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            same_compressed_layers(fixture, &dec, &format!("{name}: skopeo's decryption"));
            if let Some(original) = &original {
                let theirs = from_dir(&umoci_unpack(&dec, "1", &dec.with_extension("bundle")));
                assert_same(
                    &format!("{name}: skopeo decrypted with {ks:?}"),
                    original,
                    &theirs,
                );
            }
        }
        // A key that is no recipient opens nothing, in skopeo either.
        let out = skopeo_decrypt(&enc, &t.join(format!("{name}-stranger")), &[&k.rsa3072.0]);
        if !args.iter().any(|a| a.contains("bob")) {
            assert!(!out.status.success(), "{name}: a stranger's key decrypted");
        }
    }
    // Encrypting an encrypted layer again is refused (skopeo silently does nothing).
    let enc = t.join("rsa-enc");
    let err = fails(
        cloak()
            .args(["encrypt", "--recipient"])
            .arg(format!("jwe:{}", s(&k.ec[0].1)))
            .arg(oci(&enc))
            .arg(oci(&t.join("twice"))),
    );
    assert!(
        err.contains("already encrypted") && err.contains("--add-recipient"),
        "{err}"
    );
    assert!(!t.join("twice").exists());
}

#[test]
fn every_key_format_opens_its_recipient() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let k = keys(t);
    let bb = busybox(&t.join("bb"));
    let enc = t.join("enc");
    ok(Command::new("skopeo")
        .args(["copy", "-q", "--encryption-key"])
        .arg(format!("jwe:{}", k.rsa.1.display()))
        .arg("--encryption-key")
        .arg(format!("jwe:{}", k.ec[0].1.display()))
        .arg(oci(&bb))
        .arg(oci(&enc)));
    let convert = |name: &str, args: &[&str], from: &Path| -> PathBuf {
        let out = t.join(name);
        ok(Command::new("openssl")
            .args(args)
            .arg("-in")
            .arg(from)
            .arg("-out")
            .arg(&out));
        out
    };
    let s = |p: PathBuf| p.display().to_string();
    let rsa_pkcs1 = convert("rsa.pkcs1.pem", &["rsa", "-traditional"], &k.rsa.0);
    assert!(std::fs::read_to_string(&rsa_pkcs1)
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));
    let rsa_der = convert("rsa.pkcs8.der", &["pkey", "-outform", "DER"], &k.rsa.0);
    let ec_sec1 = convert("ec.sec1.pem", &["ec"], &k.ec[0].0);
    assert!(std::fs::read_to_string(&ec_sec1)
        .unwrap()
        .contains("BEGIN EC PRIVATE KEY"));
    let ec_sec1_der = convert("ec.sec1.der", &["ec", "-outform", "DER"], &k.ec[0].0);
    let ec_enc = convert(
        "ec.p8.enc.pem",
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:s3cret",
        ],
        &k.ec[0].0,
    );
    let rsa_jwk = t.join("rsa.jwk");
    std::fs::write(&rsa_jwk, jwk(&k.rsa.0, true).to_string()).unwrap();
    let ec_jwk = t.join("ec.jwk");
    std::fs::write(&ec_jwk, jwk(&k.ec[0].0, true).to_string()).unwrap();
    let pwfile = t.join("pw");
    std::fs::write(&pwfile, "s3cret\n").unwrap();
    for (i, key) in [
        s(rsa_pkcs1),
        s(rsa_der),
        s(ec_sec1),
        s(ec_sec1_der),
        format!("{}:pass:s3cret", ec_enc.display()),
        format!("{}:env:CLOAK_TEST_KEY_PASSWORD", ec_enc.display()),
        format!("{}:file:{}", ec_enc.display(), pwfile.display()),
        s(rsa_jwk),
        s(ec_jwk),
    ]
    .iter()
    .enumerate()
    {
        let dec = t.join(format!("dec{i}"));
        // The password for `env:` is in the child's environment only (tests run in parallel).
        ok(cloak()
            .env("CLOAK_TEST_KEY_PASSWORD", "s3cret")
            .args(["decrypt", "--quiet", "--key", key])
            .arg(oci(&enc))
            .arg(oci(&dec)));
        assert_eq!(layer_digests(&dec), layer_digests(&bb), "{key}");
    }
    // Clear refusals that name the key file, never a password.
    for (key, msg) in [
        (ec_enc.display().to_string(), "password-protected"),
        (
            format!("{}:pass:wrong-pw", ec_enc.display()),
            "wrong password",
        ),
        (k.rsa.1.display().to_string(), "not a private key"),
    ] {
        let out = t.join("refused");
        let err = fails(
            cloak()
                .args(["decrypt", "--key", &key])
                .arg(oci(&enc))
                .arg(oci(&out)),
        );
        assert!(err.contains(msg), "{key}: {err}");
        assert!(
            !err.contains("wrong-pw") && !err.contains("s3cret"),
            "{err}"
        );
        assert!(!out.exists());
    }
}

#[test]
fn recipients_change_without_re_encryption() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let k = keys(t);
    let ml = multilayer(&t.join("ml"), false);
    let r = |scheme: &str, p: &Path| format!("{scheme}:{}", p.display());
    let enc = t.join("enc");
    ok(cloak()
        .args([
            "encrypt",
            "-q",
            "--recipient",
            &r("jwe", &k.rsa.1),
            "--recipient",
            &r("pkcs7", &k.cert),
        ])
        .arg(oci(&ml))
        .arg(oci(&enc)));
    // Add an EC recipient using the RSA key to open the layer keys.
    let added = t.join("added");
    ok(cloak()
        .args(["encrypt", "-q", "--key"])
        .arg(&k.rsa.0)
        .args(["--add-recipient", &r("jwe", &k.ec[2].1)])
        .arg(oci(&enc))
        .arg(oci(&added)));
    assert_eq!(
        layer_digests(&added),
        layer_digests(&enc),
        "blobs must not be re-encrypted"
    );
    let out = skopeo_decrypt(&added, &t.join("added-dec"), &[&k.ec[2].0]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    same_compressed_layers(&ml, &t.join("added-dec"), "added");
    // Remove the first JWE recipient (found by the key id cloak wrote) and the PKCS7 one.
    let removed = t.join("removed");
    ok(cloak()
        .args([
            "encrypt",
            "-q",
            "--remove-recipient",
            &r("jwe", &k.rsa.1),
            "--remove-recipient",
            &r("pkcs7", &k.cert),
        ])
        .arg(oci(&added))
        .arg(oci(&removed)));
    assert_eq!(layer_digests(&removed), layer_digests(&enc));
    let out = skopeo_decrypt(&removed, &t.join("removed-rsa"), &[&k.rsa.0, &k.cert]);
    assert!(!out.status.success(), "a removed recipient still decrypts");
    let err = fails(
        cloak()
            .args(["decrypt", "--key"])
            .arg(&k.rsa.0)
            .arg(oci(&removed))
            .arg(oci(&t.join("x"))),
    );
    assert!(
        err.contains("missing private key needed for decryption")
            && err.contains("jwe (1 recipient)"),
        "{err}"
    );
    cloak_decrypt(
        &removed,
        &t.join("removed-ec"),
        &[&k.ec[2].0.display().to_string()],
    );
    // Refusals, each without output: removing the last recipient, an unknown one, adding without a key.
    for (args, msg) in [
        (
            vec!["--remove-recipient".to_string(), r("jwe", &k.ec[2].1)],
            "would leave layer",
        ),
        (
            vec!["--remove-recipient".to_string(), r("jwe", &k.ec[0].1)],
            "no layer has this recipient",
        ),
        (
            vec!["--add-recipient".to_string(), r("jwe", &k.ec[0].1)],
            "needs the layer keys",
        ),
    ] {
        let out = t.join("refused");
        let err = fails(
            cloak()
                .arg("encrypt")
                .args(&args)
                .arg(oci(&removed))
                .arg(oci(&out)),
        );
        assert!(err.contains(msg), "{args:?}: {err}");
        assert!(!out.exists());
    }
}

/// A keyprovider in Python, written from Go's JSON shapes (ocicrypt `keyprovider.go`): it
/// checks each request's structure, logs it, and "wraps" by XOR with its parameter. It answers
/// wrap requests with a base64 string and unwrap requests with an integer array, the two
/// encodings real providers use.
const PROVIDER: &str = r#"
import base64, json, os, sys
req = json.load(sys.stdin)
with open(sys.argv[1], "a") as log:
    log.write(json.dumps(req) + "\n")
def xor(data, key):
    return bytes(b ^ key[i % len(key)] for i, b in enumerate(data))
if req["op"] == "keywrap":
    assert req["keyunwrapparams"] == {"dc": None, "annotation": None}, req
    params = req["keywrapparams"]["ec"]["Parameters"]["pytest"]
    key = base64.b64decode(params[0])
    opts = base64.b64decode(req["keywrapparams"]["optsdata"])
    json.loads(opts)
    blob = b"pytest:" + key + b":" + xor(opts, key)
    print(json.dumps({"keywrapresults": {"annotation": base64.b64encode(blob).decode()}}))
elif req["op"] == "keyunwrap":
    assert req["keywrapparams"] == {"ec": None, "optsdata": None}, req
    blob = base64.b64decode(req["keyunwrapparams"]["annotation"])
    _, key, wrapped = blob.split(b":", 2)
    opts = xor(wrapped, key)
    # A hostile provider (or a forged wrapped key) can hand back any private options.
    if os.environ.get("TAMPER") == "digest":
        o = json.loads(opts); o["digest"] = "sha256:" + "1" * 64; opts = json.dumps(o).encode()
    if os.environ.get("TAMPER") == "nonce":
        o = json.loads(opts); del o["cipheroptions"]["nonce"]; opts = json.dumps(o).encode()
    print(json.dumps({"keyunwrapresults": {"optsdata": list(opts)}}))
else:
    sys.exit("unknown op")
"#;

/// The same provider behind grpcio (an independent HTTP/2 + gRPC stack), with the service and
/// message shapes of ocicrypt's `keyprovider.proto` encoded by hand (one `bytes` field, 1).
const GRPC_PROVIDER: &str = r#"
import base64, json, sys, grpc
from concurrent import futures
def decode(msg):
    assert msg[0] == 0x0a, msg[:4]
    n, shift, i = 0, 0, 1
    while True:
        b = msg[i]; i += 1
        n |= (b & 0x7f) << shift; shift += 7
        if not b & 0x80:
            break
    return msg[i:i + n]
def encode(data):
    out, n = bytearray([0x0a]), len(data)
    while n >= 0x80:
        out.append((n & 0x7f) | 0x80); n >>= 7
    out.append(n)
    return bytes(out) + data
def xor(data, key):
    return bytes(b ^ key[i % len(key)] for i, b in enumerate(data))
def wrap(request, context):
    req = json.loads(decode(request))
    assert req["op"] == "keywrap", req
    key = base64.b64decode(req["keywrapparams"]["ec"]["Parameters"]["grpctest"][0])
    opts = base64.b64decode(req["keywrapparams"]["optsdata"])
    blob = key + b":" + xor(opts, key)
    return encode(json.dumps({"keywrapresults": {"annotation": list(blob)}}).encode())
def unwrap(request, context):
    req = json.loads(decode(request))
    assert req["op"] == "keyunwrap", req
    key, wrapped = base64.b64decode(req["keyunwrapparams"]["annotation"]).split(b":", 1)
    if key != b"grpc-k3y":
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "not attested")
    opts = xor(wrapped, key)
    return encode(json.dumps({"keyunwrapresults": {"optsdata": base64.b64encode(opts).decode()}}).encode())
ident = lambda b: b
handler = grpc.method_handlers_generic_handler("keyprovider.KeyProviderService", {
    "WrapKey": grpc.unary_unary_rpc_method_handler(wrap, request_deserializer=ident, response_serializer=ident),
    "UnWrapKey": grpc.unary_unary_rpc_method_handler(unwrap, request_deserializer=ident, response_serializer=ident),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_generic_rpc_handlers((handler,))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
server.wait_for_termination()
"#;

#[test]
fn grpc_keyproviders_speak_gos_protocol() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let script = t.join("grpc_provider.py");
    std::fs::write(&script, GRPC_PROVIDER).unwrap();
    let server = Command::new("python3")
        .arg(&script)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with grpcio (scripts/install-deps.sh installs it)");
    let mut line = String::new();
    let mut server = server;
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = KillOnDrop(server);
    let port: u16 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the gRPC provider did not start: {line:?}"));
    let config = t.join("ocicrypt.json");
    std::fs::write(
        &config,
        serde_json::json!({"key-providers": {"grpctest": {"grpc": format!("127.0.0.1:{port}")}}})
            .to_string(),
    )
    .unwrap();
    let bb = busybox(&t.join("bb"));
    for (params, expect_ok) in [("grpc-k3y", true), ("other", false)] {
        let enc = t.join(format!("enc-{params}"));
        ok(cloak()
            .args(["encrypt", "-q", "--keyprovider-config"])
            .arg(&config)
            .arg("--recipient")
            .arg(format!("provider:grpctest:{params}"))
            .arg(oci(&bb))
            .arg(oci(&enc)));
        let dec = t.join(format!("dec-{params}"));
        let out = run(cloak()
            .args(["decrypt", "-q", "--keyprovider-config"])
            .arg(&config)
            .arg(oci(&enc))
            .arg(oci(&dec)));
        if expect_ok {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(layer_digests(&dec), layer_digests(&bb));
        } else {
            // The provider's refusal (a gRPC status) reaches the user; nothing is written.
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("grpctest") && err.contains("not attested"),
                "{err}"
            );
            assert!(!dec.exists());
        }
    }
}

#[test]
fn keyprovider_commands_speak_gos_protocol() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let script = t.join("provider.py");
    std::fs::write(&script, PROVIDER).unwrap();
    let log = t.join("requests.log");
    let config = t.join("ocicrypt.json");
    std::fs::write(
        &config,
        serde_json::json!({"key-providers": {"pytest": {"cmd": {"path": "python3", "args": [script, log]}}}}).to_string(),
    )
    .unwrap();
    let bb = busybox(&t.join("bb"));
    let enc = t.join("enc");
    ok(cloak()
        .args(["encrypt", "-q", "--recipient", "provider:pytest:k3y"])
        .env("OCICRYPT_KEYPROVIDER_CONFIG", &config)
        .arg(oci(&bb))
        .arg(oci(&enc)));
    let m = manifest(&enc);
    assert!(
        m["layers"][0]["annotations"]["org.opencontainers.image.enc.keys.provider.pytest"]
            .is_string(),
        "{m}"
    );
    let dec = t.join("dec");
    ok(cloak()
        .args(["decrypt", "-q", "--keyprovider-config"])
        .arg(&config)
        .arg(oci(&enc))
        .arg(oci(&dec)));
    assert_eq!(layer_digests(&dec), layer_digests(&bb));
    let requests: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        requests
            .iter()
            .map(|r| r["op"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["keywrap", "keyunwrap"]
    );
    // Private options that do not belong to the blob are refused, where skopeo would go on:
    // another source digest (it ignores the digest), no nonce (it invents a random one).
    for (tamper, msg) in [
        ("digest", "the private options were made for sha256:1111"),
        ("nonce", "carry no 16-byte nonce"),
    ] {
        let out = t.join(format!("tampered-{tamper}"));
        let err = fails(
            cloak()
                .args(["decrypt", "--keyprovider-config"])
                .arg(&config)
                .env("TAMPER", tamper)
                .arg(oci(&enc))
                .arg(oci(&out)),
        );
        assert!(err.contains(msg), "{tamper}: {err}");
        assert!(!out.exists(), "{tamper}: output written");
    }
    // Without the provider configured: the missing-key message names the provider scheme.
    let err = fails(
        cloak()
            .args(["decrypt", "--key"])
            .arg(rsa_pair(t, "x", "2048").0)
            .arg(oci(&enc))
            .arg(oci(&t.join("none"))),
    );
    assert!(
        err.contains("missing private key needed for decryption")
            && err.contains("provider.pytest (1 recipient)"),
        "{err}"
    );
    // A failing provider's message comes through; no output is written.
    std::fs::write(
        &config,
        r#"{"key-providers": {"pytest": {"cmd": {"path": "/bin/false"}}}}"#,
    )
    .unwrap();
    let err = fails(
        cloak()
            .args([
                "encrypt",
                "--recipient",
                "provider:pytest",
                "--keyprovider-config",
            ])
            .arg(&config)
            .arg(oci(&bb))
            .arg(oci(&t.join("failed"))),
    );
    assert!(
        err.contains("key provider pytest") && err.contains("/bin/false failed"),
        "{err}"
    );
    assert!(!t.join("failed").exists());
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

#[test]
fn layers_that_decrypt_to_the_same_blob_are_written_once() {
    use common::images::{tar, Comp, Layout, T};
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (key, public) = rsa_pair(t, "alice", "2048");
    // Two empty layers (as `RUN true` or `ENV` leave behind) around a real one, and the same
    // file layer twice: identical plain blobs, so decryption yields each digest twice.
    let src = t.join("src");
    let file = tar(&[T::File("hello", 0o644, 0, b"hello\n")]);
    Layout::new(&src)
        .layer(Comp::Gzip, tar(&[]))
        .layer(Comp::Gzip, file.clone())
        .layer(Comp::Gzip, tar(&[]))
        .layer(Comp::Tar, file.clone())
        .layer(Comp::Tar, file)
        .finish("1", "amd64", serde_json::json!({}));
    let plain = layer_digests(&src);
    assert_eq!((plain[0] == plain[2], plain[3] == plain[4]), (true, true));
    let enc = t.join("enc");
    ok(cloak()
        .args(["encrypt", "--quiet", "--recipient"])
        .arg(format!("jwe:{}", public.display()))
        .arg(oci(&src))
        .arg(oci(&enc)));
    let encrypted = layer_digests(&enc);
    let distinct: std::collections::BTreeSet<_> = encrypted.iter().collect();
    assert_eq!(
        distinct.len(),
        5,
        "each layer gets its own key: {encrypted:?}"
    );
    // Into a new OCI layout and into the one that already holds the encrypted image.
    for (name, out) in [("new layout", t.join("dec")), ("same layout", enc.clone())] {
        let mut c = cloak();
        c.args(["decrypt", "--quiet", "--key"])
            .arg(&key)
            .arg(oci(&enc));
        ok(c.arg(format!("oci:{}:plain", out.display())));
        let m = json(&blob(
            &out,
            json(&out.join("index.json"))["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == "plain")
                .unwrap()["digest"]
                .as_str()
                .unwrap(),
        ));
        let digests: Vec<_> = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(digests, plain, "{name}");
        // Independent readers: umoci verifies every blob it unpacks, skopeo copies them.
        let rootfs = umoci_unpack(&out, "plain", &t.join(format!("{name}-bundle")));
        assert_eq!(
            std::fs::read(rootfs.join("hello")).unwrap(),
            b"hello\n",
            "{name}"
        );
        ok(skopeo(&["copy", "-q"])
            .arg(format!("oci:{}:plain", out.display()))
            .arg(format!(
                "oci:{}:1",
                t.join(format!("{name}-copy")).display()
            )));
    }
}

#[test]
fn encryption_annotations_a_plain_source_carries_are_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (alice, alice_pub) = rsa_pair(t, "alice", "2048");
    let (mallory, mallory_pub) = rsa_pair(t, "mallory", "2048");
    let fixture = busybox(&t.join("bb"));
    // The attacker's real ocicrypt annotations, made by skopeo for the attacker's key...
    let theirs = t.join("theirs");
    ok(skopeo(&["copy", "-q", "--encryption-key"])
        .arg(format!("jwe:{}", mallory_pub.display()))
        .arg(oci(&fixture))
        .arg(oci(&theirs)));
    let planted = manifest(&theirs)["layers"][0]["annotations"].clone();
    assert!(planted["org.opencontainers.image.enc.keys.jwe"].is_string());
    // ...planted on the plain image's first layer, beside an annotation that must stay.
    let src = t.join("src");
    ok(Command::new("cp").arg("-a").arg(&fixture).arg(&src));
    rewrite(&src, |_, m, _| {
        let mut a = planted.clone();
        a["org.opencontainers.image.enc.keys.pkcs7"] = "AAAA".into();
        a["org.example.kept"] = "yes".into();
        m["layers"][0]["annotations"] = a;
    });
    let enc = t.join("enc");
    let out = ok(cloak()
        .args(["encrypt", "--recipient"])
        .arg(format!("jwe:{}", alice_pub.display()))
        .arg(oci(&src))
        .arg(oci(&enc)));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("layer 0")
            && stderr.contains("not encrypted but carries encryption annotations")
            && stderr.contains("org.opencontainers.image.enc.keys.jwe")
            && stderr.contains("org.opencontainers.image.enc.keys.pkcs7"),
        "{stderr}"
    );
    let a = &manifest(&enc)["layers"][0]["annotations"];
    assert_eq!(a["org.example.kept"], "yes");
    assert!(
        a.get("org.opencontainers.image.enc.keys.pkcs7").is_none(),
        "{a}"
    );
    assert_ne!(
        a["org.opencontainers.image.enc.pubopts"],
        planted["org.opencontainers.image.enc.pubopts"]
    );
    let inspect: serde_json::Value =
        serde_json::from_slice(&ok(cloak().args(["inspect", "-o", "json", &oci(&enc)])).stdout)
            .unwrap();
    assert_eq!(
        inspect["layers"][0]["encryption"]["recipients"]["jwe"], 1,
        "only alice: {inspect}"
    );
    // The attacker's key opens nothing; alice's opens the image with cloak and with skopeo.
    let err = fails(
        cloak()
            .args(["decrypt", "--key"])
            .arg(&mallory)
            .arg(oci(&enc))
            .arg(oci(&t.join("mallory-out"))),
    );
    assert!(err.contains("missing private key"), "{err}");
    cloak_decrypt(&enc, &t.join("dec"), &[alice.to_str().unwrap()]);
    let out = skopeo_decrypt(&enc, &t.join("skopeo-dec"), &[&alice]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(
        "decrypted by skopeo",
        &from_dir(&umoci_unpack(&fixture, "1", &t.join("orig-bundle"))),
        &from_dir(&umoci_unpack(
            &t.join("skopeo-dec"),
            "1",
            &t.join("dec-bundle"),
        )),
    );
}
