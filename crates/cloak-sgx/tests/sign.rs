//! SIGSTRUCT signing checked by independent means: num-bigint arithmetic (s³ mod n equals the
//! PKCS#1 v1.5 encoding; Q1, Q2) and OpenSSL's verifier. The PKCS#11 token is in pkcs11.rs.

use std::path::Path;
use std::process::Command;

use cloak_sgx::key::{FileSigner, Signer};
use cloak_sgx::sigstruct::{self, Body};
use num_bigint::BigUint;
use sha2::{Digest, Sha256};

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (run scripts/install-deps.sh)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openssl_key(dir: &Path, name: &str, args: &[&str]) -> std::path::PathBuf {
    let p = dir.join(name);
    run(Command::new("openssl")
        .arg("genrsa")
        .args(args)
        .arg("-out")
        .arg(&p)
        .arg("3072"));
    p
}

fn body() -> Body {
    Body {
        date: (2026, 11, 24),
        mrenclave: [0xab; 32],
        isvprodid: 7,
        isvsvn: 3,
        flags: 0x4,
        xfrm: 0x3,
        flags_mask: u64::MAX,
        xfrm_mask: 0xfffffffffff9ff1b,
        miscselect: 0,
        miscmask: u32::MAX,
    }
}

#[test]
fn sigstruct_verifies_independently_and_mrsigner_is_the_modulus_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let key = openssl_key(tmp.path(), "key.pem", &["-3"]);
    let signer = FileSigner::from_pem_file(&key).unwrap();
    let s = sigstruct::sign(&body(), &signer).unwrap();
    assert_eq!(s.len(), 1808);
    assert_eq!(
        &s[0x14..0x18],
        &[0x24, 0x11, 0x26, 0x20],
        "BCD date 2026-11-24"
    );

    // s³ mod n == EMSA-PKCS1-v1_5(SHA-256(bytes 0..128 ‖ 900..1028)), computed here by hand.
    let le = |r: std::ops::Range<usize>| BigUint::from_bytes_le(&s[r]);
    let (n, sig, q1, q2) = (
        le(0x80..0x200),
        le(0x204..0x384),
        le(0x410..0x590),
        le(0x590..0x710),
    );
    let signed = [&s[..128], &s[900..1028]].concat();
    let mut em = vec![0u8, 1];
    em.extend(std::iter::repeat_n(0xff, 384 - 3 - 19 - 32));
    em.push(0);
    em.extend(hex::decode("3031300d060960864801650304020105000420").unwrap());
    em.extend(Sha256::digest(&signed));
    assert_eq!(
        sig.modpow(&BigUint::from(3u32), &n),
        BigUint::from_bytes_be(&em)
    );
    assert_eq!(q1, &sig * &sig / &n);
    assert_eq!(q2, (&sig * &sig % &n) * &sig / &n);
    assert_eq!(
        sigstruct::mrsigner(&s),
        <[u8; 32]>::from(Sha256::digest(&s[0x80..0x200]))
    );

    // OpenSSL agrees that the signature is RSASSA-PKCS1-v1_5/SHA-256 by this key.
    std::fs::write(tmp.path().join("signed.bin"), &signed).unwrap();
    let mut sig_be = s[0x204..0x384].to_vec();
    sig_be.reverse();
    std::fs::write(tmp.path().join("sig.bin"), &sig_be).unwrap();
    run(Command::new("openssl")
        .current_dir(tmp.path())
        .args(["rsa", "-in", "key.pem", "-pubout", "-out", "pub.pem"]));
    run(Command::new("openssl").current_dir(tmp.path()).args([
        "dgst",
        "-sha256",
        "-verify",
        "pub.pem",
        "-signature",
        "sig.bin",
        "signed.bin",
    ]));

    sigstruct::verify(&s, "test").unwrap();
    let view = sigstruct::view(&s, "test");
    assert!(view.signature_valid);
    assert_eq!(
        (view.isv_prod_id, view.isv_svn, view.date.as_str()),
        (7, 3, "2026-11-24")
    );
}

#[test]
fn tampering_with_any_signed_field_breaks_verification() {
    let tmp = tempfile::tempdir().unwrap();
    let signer = FileSigner::from_pem_file(&openssl_key(tmp.path(), "key.pem", &["-3"])).unwrap();
    let s = sigstruct::sign(&body(), &signer).unwrap();
    for at in [0x14, 0x3c0, 0x400, 0x3a0] {
        let mut t = s;
        t[at] ^= 1;
        let err = sigstruct::verify(&t, "tampered").unwrap_err().to_string();
        assert!(err.contains("does not match"), "offset {at:#x}: {err}");
    }
}

#[test]
fn keys_that_are_not_rsa3072_e3_are_refused_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let e65537 = openssl_key(tmp.path(), "f4.pem", &[]);
    let err = FileSigner::from_pem_file(&e65537).unwrap_err().to_string();
    assert!(
        err.contains("f4.pem") && err.contains("openssl genrsa -3"),
        "{err}"
    );
    let p = tmp.path().join("small.pem");
    run(Command::new("openssl")
        .args(["genrsa", "-3", "-out"])
        .arg(&p)
        .arg("2048"));
    let err = FileSigner::from_pem_file(&p).unwrap_err().to_string();
    assert!(err.contains("RSA-2048"), "{err}");
    std::fs::write(tmp.path().join("junk.pem"), "not a key").unwrap();
    let err = FileSigner::from_pem_file(&tmp.path().join("junk.pem"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("junk.pem") && !err.contains("not a key"),
        "{err}"
    );
}

#[test]
fn default_key_is_created_once_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("cloak/sgx-signing-key.pem");
    let a = cloak_sgx::key::default_signer(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let b = cloak_sgx::key::default_signer(&path).unwrap();
    assert_eq!(a.modulus_be(), b.modulus_be(), "the key is reused");
}
