//! Hostile RA-TLS certificates made with the openssl CLI: a validly self-signed certificate
//! that carries Gramine's real quote extension for a key that is not its own.
#![cfg(feature = "verify")]

use cloak_attest::{detect, verifier, At, Collateral, Input, Policy, Verifier};
use std::path::PathBuf;
use std::process::Command;

fn vector(rel: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/vectors/sgx-dcap")
            .join(rel),
    )
    .unwrap()
}

/// The extnValue contents of `oid` in Gramine's certificate, read with openssl's asn1parse.
fn gramine_extension(dir: &std::path::Path, oid: &str) -> Vec<u8> {
    let pem = dir.join("gramine.pem");
    std::fs::write(&pem, vector("gramine-cert.pem")).unwrap();
    let out = Command::new("openssl")
        .args(["asn1parse", "-in"])
        .arg(&pem)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.contains(&format!(":{oid}")))
        .unwrap_or_else(|| panic!("{oid} not in\n{text}"));
    // the OCTET STRING after the OID (and after a critical flag, if any)
    let octet = lines[i + 1..]
        .iter()
        .find(|l| l.contains("OCTET STRING"))
        .unwrap();
    let offset: usize = octet
        .trim()
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let out = Command::new("openssl")
        .args(["asn1parse", "-in"])
        .arg(&pem)
        .args(["-strparse", &offset.to_string(), "-noout", "-out"])
        .arg(dir.join("value.bin"))
        .output()
        .unwrap();
    if out.status.success() {
        return std::fs::read(dir.join("value.bin")).unwrap();
    }
    // not DER inside (raw CBOR or a raw quote): take the OCTET STRING's bytes from the hex dump
    let hex_part = octet.rsplit(":[HEX DUMP]:").next().unwrap();
    hex::decode(hex_part.trim()).unwrap()
}

fn forged(oid: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let value = gramine_extension(dir.path(), oid);
    let conf = dir.path().join("ext.cnf");
    std::fs::write(
        &conf,
        format!(
            "[req]\ndistinguished_name=dn\nprompt=no\n[dn]\nCN=RATLS\n[v3]\n{oid}=DER:{}\n",
            hex::encode(value)
        ),
    )
    .unwrap();
    let cert = dir.path().join("forged.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-nodes",
            "-days",
            "3650",
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
    std::fs::read(cert).unwrap()
}

#[test]
fn a_certificate_whose_key_the_quote_does_not_bind_is_refused() {
    for oid in [
        cloak_attest::TCG_DICE_EVIDENCE_OID,
        cloak_attest::LEGACY_RA_TLS_OID,
    ] {
        let pem = forged(oid);
        let ev = detect(&pem).unwrap();
        let col = Collateral::from_json(&vector("col_quotev3_0825.json")).unwrap();
        let policy = Policy {
            allow_debug: true,
            accepted_tcb_statuses: None,
            ..Policy::default()
        };
        let e = verifier(ev.kind)
            .verify(
                &ev.bytes,
                &Input {
                    at: At::Time(1_755_234_498),
                    collateral: Some(&col),
                    policy: &policy,
                    simulation_key: None,
                },
            )
            .unwrap_err();
        assert_eq!(e.code(), "key_not_bound", "{oid}: {e}");
        assert!(e.to_string().contains("expected"), "{e}");
    }
}

#[test]
fn a_flipped_byte_anywhere_in_the_gramine_certificate_is_refused() {
    let der = detect(&vector("gramine-cert.pem")).unwrap().bytes;
    let col = Collateral::from_json(&vector("col_quotev3_0825.json")).unwrap();
    let policy = Policy {
        allow_debug: true,
        accepted_tcb_statuses: None,
        ..Policy::default()
    };
    let input = Input {
        at: At::Time(1_755_234_498),
        collateral: Some(&col),
        policy: &policy,
        simulation_key: None,
    };
    // every 37th byte: subject, validity, key, both extensions, signature
    for i in (0..der.len()).step_by(37) {
        let mut m = der.clone();
        m[i] ^= 0x01;
        let r = cloak_attest::RaTlsCertificate.verify(&m, &input);
        let e = r.expect_err(&format!("byte {i} flipped and still accepted"));
        assert!(!e.code().is_empty());
    }
}
