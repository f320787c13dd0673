//! Real AWS Nitro attestation documents: each verifies inside its window (its timestamp to its
//! leaf certificate's notAfter, both read independently with openssl from the documents) with
//! the README's claims, fails one second outside, and fails when tampered with.
#![cfg(feature = "verify")]

use cloak_attest::{
    detect, verifier, At, Claims, Error, EvidenceKind, Input, Measurements, Policy, Tee,
};
use rstest::rstest;
use std::path::PathBuf;

fn vector(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/nitro-attestation")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn verify(evidence: &[u8], at: At, policy: &Policy) -> Result<Claims, Error> {
    let ev = detect(evidence)?;
    assert_eq!(ev.kind, EvidenceKind::NitroDocument);
    verifier(ev.kind).verify(
        &ev.bytes,
        &Input {
            at,
            collateral: None,
            policy,
            simulation_key: None,
        },
    )
}

fn secs(t: &str) -> u64 {
    cloak_attest::time::parse(t).unwrap()
}

struct Doc {
    file: &'static str,
    timestamp_ms: u64,
    /// The leaf certificate's notAfter (`openssl x509 -enddate`), the earliest in each chain.
    leaf_not_after: &'static str,
    debug: bool,
    /// PCRs that are not all zero.
    nonzero_pcrs: &'static [u16],
    public_key_len: Option<usize>,
    user_data: Option<&'static [u8]>,
    nonce_len: Option<usize>,
}

const DAY: u64 = 86_400;

#[rstest]
#[case::nitro_attest(Doc { file: "nitro_attest_attestation.cose", timestamp_ms: 1_736_179_625_472, leaf_not_after: "2025-01-06T19:07:05Z", debug: false, nonzero_pcrs: &[0, 1, 2, 3, 4], public_key_len: Some(294), user_data: None, nonce_len: None })]
#[case::anjuna_prod(Doc { file: "anjuna_attestdoc_testdata_sample_prod_doc.bin", timestamp_ms: 1_616_018_515_685, leaf_not_after: "2021-03-18T01:01:55Z", debug: false, nonzero_pcrs: &[0, 1, 2, 4], public_key_len: None, user_data: None, nonce_len: None })]
#[case::anjuna_public_key(Doc { file: "anjuna_attestdoc_testdata_sample_prod_doc_with_publickey.bin", timestamp_ms: 1_616_602_241_734, leaf_not_after: "2021-03-24T19:06:22Z", debug: false, nonzero_pcrs: &[0, 1, 2, 3, 4], public_key_len: Some(294), user_data: None, nonce_len: None })]
#[case::anjuna_user_data(Doc { file: "anjuna_attester_testdata_sample_prod_doc.bin", timestamp_ms: 1_695_337_797_673, leaf_not_after: "2023-09-22T02:09:51Z", debug: false, nonzero_pcrs: &[0, 1, 2, 3, 4], public_key_len: None, user_data: Some(b"Hello World!\n"), nonce_len: None })]
#[case::anjuna_full_debug(Doc { file: "anjuna_attester_testdata_sample_attestation_doc_full.bin", timestamp_ms: 1_706_120_065_635, leaf_not_after: "2024-01-24T21:14:17Z", debug: true, nonzero_pcrs: &[3, 4], public_key_len: Some(294), user_data: Some(b"Hello World!\n"), nonce_len: Some(6) })]
#[case::evervault_signed_eif(Doc { file: "ev_valid-attestation-doc-bytes", timestamp_ms: 1_665_651_482_136, leaf_not_after: "2022-10-13T11:58:02Z", debug: false, nonzero_pcrs: &[0, 1, 2, 3, 4, 8], public_key_len: None, user_data: None, nonce_len: Some(256) })]
#[case::evervault_debug(Doc { file: "ev_debug-mode-attestation-doc-bytes", timestamp_ms: 1_665_582_606_081, leaf_not_after: "2022-10-12T16:49:54Z", debug: true, nonzero_pcrs: &[3, 4], public_key_len: Some(19), user_data: Some(b"hello, world!"), nonce_len: None })]
#[case::evervault_base64(Doc { file: "ev_valid-attestation-doc-base64", timestamp_ms: 1_695_049_410_860, leaf_not_after: "2023-09-18T17:37:12Z", debug: true, nonzero_pcrs: &[3, 4], public_key_len: None, user_data: Some(&[0x30, 0x59, 0x30, 0x13]), nonce_len: Some(256) })]
#[case::ppmag_debug(Doc { file: "nitro_ad_debug.bin", timestamp_ms: 1_614_963_709_526, leaf_not_after: "2021-03-05T20:01:49Z", debug: true, nonzero_pcrs: &[3, 4], public_key_len: None, user_data: None, nonce_len: None })]
#[case::ppmag_debug_base64(Doc { file: "ad_debug_mode.b64", timestamp_ms: 1_614_963_709_526, leaf_not_after: "2021-03-05T20:01:49Z", debug: true, nonzero_pcrs: &[3, 4], public_key_len: None, user_data: None, nonce_len: None })]
fn nitro_documents_verify_exactly_inside_their_window(#[case] d: Doc) {
    let doc = vector(d.file);
    let policy = Policy {
        allow_debug: true,
        max_age_secs: DAY,
        ..Policy::default()
    };
    let (from, until) = (d.timestamp_ms / 1000, secs(d.leaf_not_after));
    let own =
        verify(&doc, At::EvidenceTimestamp, &policy).unwrap_or_else(|e| panic!("{}: {e}", d.file));
    for at in [from, until] {
        let c = verify(&doc, At::Time(at), &policy)
            .unwrap_or_else(|e| panic!("{} at {at}: {e}", d.file));
        assert_eq!(c.measurements, own.measurements);
    }
    let c = own;
    assert_eq!(
        (c.tee, c.kind, c.simulated, c.debug),
        (Tee::Nitro, EvidenceKind::NitroDocument, false, d.debug)
    );
    assert_eq!(c.times.evidence_timestamp_ms, Some(d.timestamp_ms));
    assert_eq!(
        (c.times.checked_at, c.times.valid_from, c.times.valid_until),
        (from, from, until)
    );
    let Measurements::Pcrs(pcrs) = &c.measurements else {
        panic!()
    };
    assert_eq!(pcrs.len(), 16);
    assert!(pcrs.values().all(|v| v.len() == 48));
    let nonzero: Vec<u16> = pcrs
        .iter()
        .filter(|(_, v)| v.iter().any(|b| *b != 0))
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(nonzero, d.nonzero_pcrs);
    assert_eq!(c.public_key.as_ref().map(Vec::len), d.public_key_len);
    // user_data: the README's value, or for a key its DER prefix
    assert_eq!(c.user_data.is_some(), d.user_data.is_some());
    if let (Some(have), Some(want)) = (&c.user_data, d.user_data) {
        assert!(have.starts_with(want), "{have:?}");
    }
    assert_eq!(c.nonce.as_ref().map(Vec::len), d.nonce_len);
    assert!(
        c.module_id.as_deref().is_some_and(|m| m.starts_with('i')),
        "{:?}",
        c.module_id
    );

    // A second early the document is from the future, and when its leaf certificate was
    // issued in the same second (three vectors), that certificate is not valid yet either.
    let before = verify(&doc, At::Time(from - 1), &policy).unwrap_err();
    assert!(
        ["evidence_from_the_future", "certificate_not_yet_valid"].contains(&before.code()),
        "{before}"
    );
    let after = verify(&doc, At::Time(until + 1), &policy).unwrap_err();
    assert_eq!(after.code(), "certificate_expired", "{after}");
    assert!(after.to_string().contains(d.leaf_not_after), "{after}");
}

#[test]
fn the_maximum_age_ends_the_window_when_it_comes_first() {
    let doc = vector("nitro_attest_attestation.cose");
    let policy = Policy::default();
    let ts = 1_736_179_625;
    let c = verify(&doc, At::Time(ts + policy.max_age_secs), &policy).unwrap();
    assert_eq!(
        (c.times.valid_until, c.times.valid_until_item.as_str()),
        (ts + 300, "maximum age")
    );
    let e = verify(&doc, At::Time(ts + policy.max_age_secs + 1), &policy).unwrap_err();
    assert_eq!(e.code(), "evidence_too_old", "{e}");
    assert!(e.to_string().contains("301 s"), "{e}");
}

#[test]
fn checked_at_the_current_time_the_chain_has_expired() {
    let e = verify(
        &vector("nitro_attest_attestation.cose"),
        At::Time(secs("2026-12-01T00:00:00Z")),
        &Policy {
            max_age_secs: u64::MAX,
            ..Policy::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.code(), "certificate_expired", "{e}");
}

#[rstest]
#[case::anjuna_full("anjuna_attester_testdata_sample_attestation_doc_full.bin")]
#[case::evervault("ev_debug-mode-attestation-doc-bytes")]
#[case::ppmag("nitro_ad_debug.bin")]
fn debug_documents_fail_unless_allowed(#[case] file: &str) {
    let e = verify(&vector(file), At::EvidenceTimestamp, &Policy::default()).unwrap_err();
    assert_eq!(e.code(), "debug_enclave", "{e}");
    assert!(e.to_string().contains("PCR0-2 all zero"), "{e}");
}

/// Where `needle` starts in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

#[rstest]
#[case::payload_pcr0(Part::Pcr0)]
#[case::payload_timestamp(Part::Timestamp)]
#[case::payload_module_id(Part::ModuleId)]
#[case::payload_public_key(Part::PublicKey)]
#[case::leaf_certificate(Part::Leaf)]
#[case::intermediate_certificate(Part::Intermediate)]
#[case::signature_first_byte(Part::SignatureStart)]
#[case::signature_last_byte(Part::SignatureEnd)]
#[case::protected_header(Part::Protected)]
fn a_flipped_byte_fails_with_a_reason(#[case] part: Part) {
    let mut doc = vector("nitro_attest_attestation.cose");
    let at = match part {
        Part::Pcr0 => {
            // PCR0's value follows the key 0 and the 48-byte bstr header 58 30.
            find(&doc, &[0x00, 0x58, 0x30]) + 10
        }
        Part::Timestamp => find(&doc, b"timestamp") + 12,
        Part::ModuleId => find(&doc, b"module_id") + 15,
        Part::PublicKey => find(&doc, b"public_key") + 40,
        Part::Leaf => find(&doc, b"certificate") + 200,
        Part::Intermediate => find(&doc, b"cabundle") + 1200,
        Part::SignatureStart => doc.len() - 96,
        Part::SignatureEnd => doc.len() - 1,
        Part::Protected => 3,
    };
    doc[at] ^= 0x01;
    let e = verify(&doc, At::EvidenceTimestamp, &Policy::default()).unwrap_err();
    assert!(
        ["bad_signature", "untrusted_chain", "malformed_evidence"].contains(&e.code()),
        "{part:?}: {}: {e}",
        e.code()
    );
}

#[derive(Debug, Clone, Copy)]
enum Part {
    Pcr0,
    Timestamp,
    ModuleId,
    PublicKey,
    Leaf,
    Intermediate,
    SignatureStart,
    SignatureEnd,
    Protected,
}

#[rstest]
#[case::truncated_by_one(1)]
#[case::truncated_by_half(2400)]
fn a_truncated_document_fails(#[case] cut: usize) {
    let doc = vector("nitro_attest_attestation.cose");
    let e = verify(
        &doc[..doc.len() - cut],
        At::EvidenceTimestamp,
        &Policy::default(),
    )
    .unwrap_err();
    assert_eq!(e.code(), "malformed_evidence", "{e}");
}

#[test]
fn a_document_whose_chain_starts_elsewhere_fails() {
    // Swap the root for another real certificate of the same length class: the first cabundle
    // entry no longer is the pinned root.
    let mut doc = vector("nitro_attest_attestation.cose");
    let root = cloak_attest::AWS_NITRO_ROOT_DER;
    let at = find(&doc, root);
    doc[at + root.len() - 5] ^= 0x01;
    let e = verify(&doc, At::EvidenceTimestamp, &Policy::default()).unwrap_err();
    assert_eq!(e.code(), "untrusted_chain", "{e}");
}

#[test]
fn the_embedded_root_is_the_pinned_aws_root() {
    use sha2::Digest;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(cloak_attest::AWS_NITRO_ROOT_DER)),
        "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
    );
    let pem = String::from_utf8(vector("root.pem")).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
        cloak_attest::AWS_NITRO_ROOT_DER
    );
}
