//! Simulated evidence: produced with keys OpenSSL generates, verified only when allowed and
//! against the configured key, marked simulated.
#![cfg(feature = "verify")]

use cloak_attest::simulated::{produce, Document, SimulationSigningKey};
use cloak_attest::{
    detect, extension, verifier, At, Claims, Error, EvidenceKind, Input, Measurements, Policy,
    SgxMeasurements, SimulationPublicKey, Tee,
};
use rstest::rstest;
use std::collections::BTreeMap;
use std::process::Command;

struct Keys {
    _dir: tempfile::TempDir,
    private: Vec<u8>,
    public: Vec<u8>,
}

/// A P-256 key pair from the openssl CLI; `genpkey` writes PKCS#8, `ecparam` SEC1.
fn openssl_keys(sec1: bool) -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let pubkey = dir.path().join("pub.pem");
    let status = if sec1 {
        Command::new("openssl")
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(&key)
            .status()
    } else {
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(&key)
            .status()
    };
    assert!(status.unwrap().success());
    assert!(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&pubkey)
        .status()
        .unwrap()
        .success());
    Keys {
        private: std::fs::read(&key).unwrap(),
        public: std::fs::read(&pubkey).unwrap(),
        _dir: dir,
    }
}

const TS_MS: u64 = 1_764_547_200_123; // 2025-12-01T00:00:00.123Z

fn nitro_like() -> Document {
    let mut pcrs = BTreeMap::new();
    for i in [0u16, 1, 2, 8] {
        pcrs.insert(i, vec![i as u8 + 1; 48]);
    }
    Document {
        timestamp_ms: TS_MS,
        measurements: Measurements::Pcrs(pcrs),
        user_data: Some(b"build 42".to_vec()),
        nonce: Some(vec![7; 16]),
        public_key: Some(vec![0x30, 0x59, 1, 2, 3]),
    }
}

fn verify(
    ev: &[u8],
    at: At,
    policy: &Policy,
    key: Option<&SimulationPublicKey>,
) -> Result<Claims, Error> {
    let e = detect(ev)?;
    assert_eq!(e.kind, EvidenceKind::Simulated);
    verifier(e.kind).verify(
        &e.bytes,
        &Input {
            at,
            collateral: None,
            policy,
            simulation_key: key,
        },
    )
}

fn allowed() -> Policy {
    Policy {
        allow_simulated: true,
        ..Policy::default()
    }
}

#[rstest]
#[case::pkcs8(false)]
#[case::sec1(true)]
fn simulated_evidence_round_trips_with_openssl_keys(#[case] sec1: bool) {
    let keys = openssl_keys(sec1);
    let signing = SimulationSigningKey::from_bytes(&keys.private).unwrap();
    let public = SimulationPublicKey::from_bytes(&keys.public).unwrap();
    let doc = nitro_like();
    let ev = produce(&signing, &doc).unwrap();
    let c = verify(&ev, At::EvidenceTimestamp, &allowed(), Some(&public)).unwrap();
    assert_eq!(
        (c.tee, c.kind, c.simulated, c.debug),
        (Tee::Simulated, EvidenceKind::Simulated, true, false)
    );
    assert_eq!(c.measurements, doc.measurements);
    assert_eq!(
        (c.user_data, c.nonce, c.public_key),
        (doc.user_data, doc.nonce, doc.public_key)
    );
    assert_eq!(c.times.evidence_timestamp_ms, Some(TS_MS));
    assert_eq!(
        (c.times.valid_from, c.times.valid_until),
        (TS_MS / 1000, TS_MS / 1000 + 300)
    );
    // the public key also reads as a SEC1 point
    let point = SimulationPublicKey::from_bytes(&signing.public_sec1()).unwrap();
    assert_eq!(point, public);
}

#[test]
fn simulated_sgx_measurements_and_null_fields_round_trip() {
    let keys = openssl_keys(false);
    let signing = SimulationSigningKey::from_bytes(&keys.private).unwrap();
    let doc = Document {
        timestamp_ms: TS_MS,
        measurements: Measurements::Sgx(SgxMeasurements {
            mrenclave: [1; 32],
            mrsigner: [2; 32],
            isvprodid: 7,
            isvsvn: 3,
        }),
        user_data: None,
        nonce: None,
        public_key: None,
    };
    let c = verify(
        &produce(&signing, &doc).unwrap(),
        At::Time(TS_MS / 1000 + 10),
        &allowed(),
        Some(&SimulationPublicKey::from_bytes(&keys.public).unwrap()),
    )
    .unwrap();
    assert_eq!(c.measurements, doc.measurements);
    assert_eq!((c.user_data, c.nonce, c.public_key), (None, None, None));
}

#[test]
fn simulated_evidence_is_refused_unless_the_policy_allows_it() {
    let keys = openssl_keys(false);
    let ev = produce(
        &SimulationSigningKey::from_bytes(&keys.private).unwrap(),
        &nitro_like(),
    )
    .unwrap();
    let public = SimulationPublicKey::from_bytes(&keys.public).unwrap();
    let e = verify(
        &ev,
        At::EvidenceTimestamp,
        &Policy::default(),
        Some(&public),
    )
    .unwrap_err();
    assert_eq!(e.code(), "simulation_not_allowed", "{e}");
    let e = verify(&ev, At::EvidenceTimestamp, &allowed(), None).unwrap_err();
    assert_eq!(e.code(), "simulation_key_missing", "{e}");
}

#[test]
fn simulated_evidence_signed_by_another_key_is_refused() {
    let (a, b) = (openssl_keys(false), openssl_keys(false));
    let ev = produce(
        &SimulationSigningKey::from_bytes(&a.private).unwrap(),
        &nitro_like(),
    )
    .unwrap();
    let e = verify(
        &ev,
        At::EvidenceTimestamp,
        &allowed(),
        Some(&SimulationPublicKey::from_bytes(&b.public).unwrap()),
    )
    .unwrap_err();
    assert_eq!(e.code(), "bad_signature", "{e}");
}

#[test]
fn every_flipped_byte_of_simulated_evidence_is_refused() {
    let keys = openssl_keys(false);
    let ev = produce(
        &SimulationSigningKey::from_bytes(&keys.private).unwrap(),
        &nitro_like(),
    )
    .unwrap();
    let public = SimulationPublicKey::from_bytes(&keys.public).unwrap();
    for i in 0..ev.len() {
        let mut m = ev.clone();
        m[i] ^= 0x01;
        let r = detect(&m).and_then(|e| {
            verifier(e.kind).verify(
                &e.bytes,
                &Input {
                    at: At::EvidenceTimestamp,
                    collateral: None,
                    policy: &allowed(),
                    simulation_key: Some(&public),
                },
            )
        });
        assert!(r.is_err(), "byte {i} flipped and still accepted");
    }
}

#[rstest]
#[case::one_second_early(TS_MS / 1000 - 1, "evidence_from_the_future")]
#[case::one_second_too_old(TS_MS / 1000 + 301, "evidence_too_old")]
fn simulated_evidence_outside_its_window_fails(#[case] at: u64, #[case] code: &str) {
    let keys = openssl_keys(false);
    let ev = produce(
        &SimulationSigningKey::from_bytes(&keys.private).unwrap(),
        &nitro_like(),
    )
    .unwrap();
    let public = SimulationPublicKey::from_bytes(&keys.public).unwrap();
    let e = verify(&ev, At::Time(at), &allowed(), Some(&public)).unwrap_err();
    assert_eq!(e.code(), code, "{e}");
}

#[test]
fn the_signing_key_never_prints() {
    let keys = openssl_keys(false);
    let k = SimulationSigningKey::from_bytes(&keys.private).unwrap();
    let shown = format!("{k:?}");
    assert!(
        !shown.contains("BEGIN") && shown.contains("private"),
        "{shown}"
    );
    let e = SimulationSigningKey::from_bytes(
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap_err();
    assert!(!e.to_string().contains("AAAA"), "{e}");
}

#[test]
fn simulated_claims_carry_the_simulated_marker_into_the_extension() {
    let keys = openssl_keys(false);
    let ev = produce(
        &SimulationSigningKey::from_bytes(&keys.private).unwrap(),
        &nitro_like(),
    )
    .unwrap();
    let public = SimulationPublicKey::from_bytes(&keys.public).unwrap();
    let claims = verify(&ev, At::EvidenceTimestamp, &allowed(), Some(&public)).unwrap();
    let exts = extension::encode(&claims, &ev, "build-7").unwrap();
    assert_eq!(exts.len(), 1);
    assert_eq!(exts[0].oid, extension::CLOAK_EVIDENCE_OID);
    let back = extension::decode(&[(exts[0].oid.to_string(), exts[0].value.clone())]).unwrap();
    assert_eq!(back.claims, claims);
    assert!(back.claims.simulated);
    assert_eq!(back.build_id, "build-7");
    assert_eq!(back.evidence.as_deref(), Some(&ev[..]));
}

#[test]
fn tdx_measurements_are_refused_by_the_producer() {
    let keys = openssl_keys(false);
    let doc = Document {
        measurements: Measurements::Tdx(Box::new(cloak_attest::TdxMeasurements {
            mr_td: [0; 48],
            rtmrs: [[0; 48]; 4],
            mr_config_id: [0; 48],
            mr_owner: [0; 48],
            mr_owner_config: [0; 48],
            mr_seam: [0; 48],
        })),
        ..nitro_like()
    };
    let e = produce(
        &SimulationSigningKey::from_bytes(&keys.private).unwrap(),
        &doc,
    )
    .unwrap_err();
    assert_eq!(e.code(), "malformed_evidence", "{e}");
}
