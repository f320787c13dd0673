//! Valid inputs for each target, made with cloak's own writers: the starting corpus of
//! `scripts/fuzz.sh` (a fuzzer that starts from well-formed JWE, DER, EIF and tar reaches the
//! deep code in minutes instead of hours) and, in the tests, proof that each target really
//! reaches its parser's success path.

use std::collections::BTreeMap;
use std::path::Path;

/// DER `Name` of the fuzz PKCS7 recipient (`CN=fuzz`).
pub const ISSUER: &[u8] = &[
    0x30, 0x0f, 0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x04, b'f', b'u', b'z',
    b'z',
];
/// DER serial number `INTEGER 1` of the fuzz PKCS7 recipient.
pub const SERIAL: &[u8] = &[0x02, 0x01, 0x01];

fn tar_seed() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name(l).expect("link name");
        }
        b.append_data(&mut h, path, data).expect("tar entry");
    };
    add("etc/", tar::EntryType::Directory, None, b"");
    add(
        "etc/passwd",
        tar::EntryType::Regular,
        None,
        b"root:x:0:0::/:/bin/sh\n",
    );
    add("etc/hosts", tar::EntryType::Link, Some("etc/passwd"), b"");
    add("bin", tar::EntryType::Symlink, Some("usr/bin"), b"");
    add("usr/bin/sh", tar::EntryType::Regular, None, b"#!");
    add("etc/.wh.old", tar::EntryType::Regular, None, b"");
    add("var/.wh..wh..opq", tar::EntryType::Regular, None, b"");
    b.into_inner().expect("tar")
}

fn files_index_seed() -> Vec<u8> {
    use cloak_launcher::files::{IndexWriter, Record};
    let mut w = IndexWriter::new(1_700_000_000);
    for (id, path) in [(0, "rootfs/bin/sh"), (1, "rootfs/etc/passwd")] {
        w.push(&Record {
            id,
            empty: false,
            mode: 0o755,
            uid: 0,
            gid: 0,
            path: path.into(),
        })
        .expect("record");
    }
    w.finish()
}

/// An EIF from cloak's writer (a fake kernel with the bzImage magic, two small ramdisks),
/// signed when `openssl` is at hand to make a P-384 key and certificate.
fn eif_seeds(dir: &Path) -> Vec<(String, Vec<u8>)> {
    use cloak_nitro::eif::{self, EifSpec, Part};
    let mut kernel = vec![0x5a; 4096];
    kernel[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(dir.join("kernel"), kernel).expect("kernel");
    std::fs::write(dir.join("r1"), b"ramdisk one").expect("ramdisk");
    std::fs::write(dir.join("r2"), b"ramdisk two").expect("ramdisk");
    let openssl = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let signer = (openssl(&[
        "ecparam",
        "-name",
        "secp384r1",
        "-genkey",
        "-noout",
        "-out",
        "key.pem",
    ]) && openssl(&[
        "req", "-new", "-x509", "-key", "key.pem", "-out", "cert.pem", "-days", "2", "-subj",
        "/CN=fuzz",
    ]))
    .then(|| cloak_nitro::sign::EifSigner::from_files(&dir.join("key.pem"), &dir.join("cert.pem")))
    .and_then(Result::ok);
    let mut out = Vec::new();
    for (name, signer) in [("plain", None), ("signed", signer.as_ref())] {
        if name == "signed" && signer.is_none() {
            continue;
        }
        let path = dir.join(format!("{name}.eif"));
        eif::write(
            EifSpec {
                kernel: dir.join("kernel"),
                cmdline: "console=ttyS0".into(),
                ramdisks: vec![Part::File(dir.join("r1")), Part::File(dir.join("r2"))],
                metadata: eif::identity(
                    "fuzz",
                    "1",
                    "6.1",
                    "2024-01-01T00:00:00Z",
                    serde_json::json!({}),
                ),
                signer,
                size_check: None,
            },
            &path,
        )
        .expect("EIF");
        let mut bytes = vec![0u8];
        bytes.extend(std::fs::read(&path).expect("EIF"));
        out.push((format!("{name}-eif"), bytes));
    }
    out
}

fn sigstruct_seed() -> Vec<u8> {
    use cloak_sgx::sigstruct::{sign, Body};
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3072);
    let key = rsa::RsaPrivateKey::new_with_exp(&mut rng, 3072, &3u32.into()).expect("RSA-3072");
    let signer = cloak_sgx::key::FileSigner::from_key(key, "fuzz seed").expect("SGX key");
    let body = Body {
        date: (2024, 1, 2),
        mrenclave: [9; 32],
        isvprodid: 1,
        isvsvn: 2,
        flags: 4,
        xfrm: 3,
        flags_mask: !0,
        xfrm_mask: !0,
        miscselect: 0,
        miscmask: !0,
    };
    sign(&body, &signer).expect("SIGSTRUCT").to_vec()
}

/// `(target, seed name, bytes)` for every target that has well-formed inputs; `dir` is a
/// scratch directory.
pub fn all(dir: &Path) -> Vec<(&'static str, String, Vec<u8>)> {
    use cloak_crypt::{jwe, pkcs7, spec};
    let keys = crate::keys();
    let privopts = spec::private_options_json(&[1; 32], "sha256:00", &[2; 16]);
    let jwe_entry = jwe::wrap(&privopts, &[keys[0].public(), keys[1].public()]).expect("JWE");
    let pkcs7_entry = pkcs7::wrap(&privopts, &[crate::certificate()]).expect("PKCS7");
    let mut annotations = BTreeMap::new();
    annotations.insert("pubopts".to_string(), spec::public_options_json(&[3; 32]));
    annotations.insert(
        "keys.jwe".to_string(),
        spec::join_entries(std::slice::from_ref(&jwe_entry)),
    );
    annotations.insert(
        "keys.pkcs7".to_string(),
        spec::join_entries(std::slice::from_ref(&pkcs7_entry)),
    );
    annotations.insert(
        "keys.provider.fuzz".to_string(),
        spec::b64_encode(b"opaque"),
    );
    let annotations = annotations
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect::<String>();
    let mut out = vec![
        ("flatten", "tar".to_string(), tar_seed()),
        ("files_index", "index".to_string(), files_index_seed()),
        ("sigstruct", "signed".to_string(), sigstruct_seed()),
        ("jwe", "rsa-and-p256".to_string(), jwe_entry),
        ("pkcs7", "rsa".to_string(), pkcs7_entry),
        (
            "annotations",
            "three-schemes".to_string(),
            annotations.into_bytes(),
        ),
    ];
    for (name, bytes) in eif_seeds(dir) {
        out.push(("eif", name, bytes));
    }
    out
}
