//! Certificate requests made by the openssl CLI: every key type the manager issues for, the
//! names they ask for, the key evidence must bind; tampered requests fail.
#![cfg(feature = "verify")]

use cloak_attest::csr::{self, KeyType};
use rstest::rstest;
use std::process::Command;

/// (PEM request, DER SubjectPublicKeyInfo of its key) from openssl.
fn openssl_csr(newkey: &[&str], addext: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (key, req, spki) = (
        dir.path().join("k.pem"),
        dir.path().join("r.pem"),
        dir.path().join("spki.der"),
    );
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-new", "-nodes", "-subj", "/CN=app.example/O=cloak"])
        .args(newkey);
    for e in addext {
        cmd.args(["-addext", e]);
    }
    let out = cmd
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&req)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&spki)
        .output()
        .unwrap();
    assert!(out.status.success());
    (std::fs::read(req).unwrap(), std::fs::read(spki).unwrap())
}

#[rstest]
#[case::ec_p256(&["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], KeyType::EcP256)]
#[case::ec_p384(&["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-sha384"], KeyType::EcP384)]
#[case::rsa_2048(&["-newkey", "rsa:2048"], KeyType::Rsa { bits: 2048 })]
#[case::rsa_3072(&["-newkey", "rsa:3072", "-sha384"], KeyType::Rsa { bits: 3072 })]
#[case::rsa_4096(&["-newkey", "rsa:4096", "-sha512"], KeyType::Rsa { bits: 4096 })]
fn openssl_requests_parse_with_their_key_and_names(#[case] newkey: &[&str], #[case] key: KeyType) {
    let (pem, spki) = openssl_csr(
        newkey,
        &["subjectAltName=DNS:app.example,DNS:*.app.example,IP:10.0.0.7,IP:::1"],
    );
    let c = csr::parse(&pem).unwrap();
    assert_eq!(c.key, key);
    assert_eq!(c.spki_der, spki);
    assert!(c.subject.contains("CN=app.example"), "{}", c.subject);
    assert_eq!(c.dns_names, ["app.example", "*.app.example"]);
    assert_eq!(
        c.ip_addresses,
        [
            "10.0.0.7".parse::<std::net::IpAddr>().unwrap(),
            "::1".parse().unwrap()
        ]
    );
    assert_eq!(c.requested_extensions, ["2.5.29.17"]);
}

#[test]
fn a_request_without_extensions_and_one_with_a_custom_extension_parse() {
    let (pem, _) = openssl_csr(
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &[],
    );
    let c = csr::parse(&pem).unwrap();
    assert!(c.dns_names.is_empty() && c.requested_extensions.is_empty());
    let (pem, _) = openssl_csr(
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &["1.2.3.4.5=DER:0500"],
    );
    assert_eq!(
        csr::parse(&pem).unwrap().requested_extensions,
        ["1.2.3.4.5"]
    );
}

#[test]
fn every_flipped_byte_of_a_request_is_refused_or_changes_nothing_it_reports() {
    let (pem, _) = openssl_csr(
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &["subjectAltName=DNS:a.example"],
    );
    let der = {
        let b64: String = String::from_utf8(pem)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    };
    let original = csr::parse(&der).unwrap();
    for i in 0..der.len() {
        let mut m = der.clone();
        m[i] ^= 0x01;
        if let Ok(c) = csr::parse(&m) {
            panic!("byte {i} flipped and still accepted: {c:?} (was {original:?})");
        }
    }
}

#[test]
fn other_input_is_refused_with_a_reason() {
    for junk in [
        &b"hello"[..],
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        &[0x30, 0x03, 0x02, 0x01, 0x00],
    ] {
        let e = csr::parse(junk).unwrap_err();
        assert_eq!(e.code(), "bad_csr", "{e}");
    }
}
