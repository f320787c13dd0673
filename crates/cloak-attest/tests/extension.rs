//! Verified evidence encoded for X.509 extensions parses back to the same claims; the
//! extensions survive a real certificate (openssl puts them in, x509 parsing takes them out).
#![cfg(feature = "verify")]

use cloak_attest::extension::{self, CLOAK_EVIDENCE_OID, TCG_DICE_EVIDENCE_OID};
use cloak_attest::{detect, verifier, At, Claims, Collateral, Input, Policy};
use rstest::rstest;
use std::path::PathBuf;
use std::process::Command;

fn vector(rel: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/vectors")
            .join(rel),
    )
    .unwrap()
}

fn verified(file: &str, col: Option<&str>, at: At) -> (Vec<u8>, Claims) {
    let ev = detect(&vector(file)).unwrap();
    let col = col.map(|c| Collateral::from_json(&vector(c)).unwrap());
    let policy = Policy {
        allow_debug: true,
        accepted_tcb_statuses: None,
        ..Policy::default()
    };
    let claims = verifier(ev.kind)
        .verify(
            &ev.bytes,
            &Input {
                at,
                collateral: col.as_ref(),
                policy: &policy,
                simulation_key: None,
            },
        )
        .unwrap();
    (ev.bytes, claims)
}

fn as_pairs(exts: &[extension::CertExtension]) -> Vec<(String, Vec<u8>)> {
    exts.iter()
        .map(|e| (e.oid.to_string(), e.value.clone()))
        .collect()
}

#[rstest]
#[case::sgx_quote(
    "sgx-dcap/sgx_quote",
    Some("sgx-dcap/sgx_quote_collateral.json"),
    At::Time(1_750_330_571),
    2
)]
#[case::tdx_quote(
    "sgx-dcap/tdx_quote",
    Some("sgx-dcap/tdx_quote_collateral.json"),
    At::Time(1_750_329_147),
    2
)]
#[case::gramine_ratls("sgx-dcap/gramine-cert.pem", Some("sgx-dcap/col_quotev3_0825.json"), At::Time(1_755_234_498 /* 2025-08-15T05:08:18Z */), 2)]
#[case::nitro(
    "nitro-attestation/nitro_attest_attestation.cose",
    None,
    At::EvidenceTimestamp,
    1
)]
fn evidence_extensions_parse_back_to_the_claims(
    #[case] file: &str,
    #[case] col: Option<&str>,
    #[case] at: At,
    #[case] n: usize,
) {
    let (bytes, claims) = verified(file, col, at);
    let exts = extension::encode(&claims, &bytes, "build-1").unwrap();
    assert_eq!(exts.len(), n);
    let back = extension::decode(&as_pairs(&exts)).unwrap();
    assert_eq!(back.claims, claims);
    assert_eq!(back.build_id, "build-1");
    assert!(!back.claims.simulated);
    if n == 2 {
        assert_eq!(exts[0].oid, TCG_DICE_EVIDENCE_OID);
        assert!(back.quote.is_some());
    } else {
        assert_eq!(back.evidence.as_deref(), Some(&bytes[..]));
    }
}

#[test]
fn a_quote_extension_that_disagrees_with_the_claims_is_refused() {
    let (bytes, claims) = verified(
        "sgx-dcap/sgx_quote",
        Some("sgx-dcap/sgx_quote_collateral.json"),
        At::Time(1_750_330_571),
    );
    let (other, _) = verified(
        "sgx-dcap/automata_quote_sgx_debug.bin",
        Some("sgx-dcap/sgx_quote_collateral.json"),
        At::Time(1_750_330_571),
    );
    let mut pairs = as_pairs(&extension::encode(&claims, &bytes, "b").unwrap());
    let theirs = as_pairs(&extension::encode(&claims, &other, "b").unwrap());
    pairs[0] = theirs[0].clone();
    let e = extension::decode(&pairs).unwrap_err();
    assert_eq!(e.code(), "malformed_extension", "{e}");
    // and without the cloak extension there is nothing to read
    let e = extension::decode(&pairs[..1]).unwrap_err();
    assert!(e.to_string().contains(CLOAK_EVIDENCE_OID), "{e}");
}

#[test]
fn every_truncation_of_the_cloak_extension_is_refused() {
    let (bytes, claims) = verified(
        "nitro-attestation/nitro_attest_attestation.cose",
        None,
        At::EvidenceTimestamp,
    );
    let ext = extension::encode(&claims, &bytes, "build-1")
        .unwrap()
        .remove(0);
    for cut in 0..ext.value.len() {
        let r = extension::decode(&[(ext.oid.to_string(), ext.value[..cut].to_vec())]);
        assert!(r.is_err(), "cut at {cut}");
    }
}

/// openssl writes the extensions into a certificate; reading them out of its DER gives the
/// claims back.
#[test]
fn extensions_survive_an_openssl_certificate() {
    let (bytes, claims) = verified(
        "sgx-dcap/sgx_quote",
        Some("sgx-dcap/sgx_quote_collateral.json"),
        At::Time(1_750_330_571),
    );
    let exts = extension::encode(&claims, &bytes, "build-9").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ext.cnf");
    let mut text = String::from("[req]\ndistinguished_name=dn\nprompt=no\n[dn]\nCN=test\n[v3]\n");
    for e in &exts {
        text.push_str(&format!("{}=DER:{}\n", e.oid, hex::encode(&e.value)));
    }
    std::fs::write(&conf, text).unwrap();
    let cert = dir.path().join("cert.der");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-outform",
            "DER",
        ])
        .arg("-keyout")
        .arg(dir.path().join("k.pem"))
        .arg("-config")
        .arg(&conf)
        .args(["-extensions", "v3", "-out"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let der = std::fs::read(&cert).unwrap();
    let pairs = extension::extensions_of(&der).unwrap();
    let back = extension::decode(&pairs).unwrap();
    assert_eq!(back.claims, claims);
    assert_eq!(back.build_id, "build-9");
}
