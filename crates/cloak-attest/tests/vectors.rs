//! Every real vector in tests/vectors verifies inside its window with the claims its README
//! gives and fails one second outside each end; tampering, debug and TCB policy fail with a
//! reason.
#![cfg(feature = "verify")]

use cloak_attest::{
    detect, verifier, At, Claims, Collateral, Error, EvidenceKind, Input, Measurements, Policy, Tee,
};
use rstest::rstest;
use std::path::PathBuf;

fn vector(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn collateral(rel: &str) -> Collateral {
    Collateral::from_json(&vector(rel)).unwrap()
}

/// Report everything, judge nothing but authenticity and time.
fn lenient() -> Policy {
    Policy {
        allow_debug: true,
        accepted_tcb_statuses: None,
        ..Policy::default()
    }
}

fn verify(
    evidence: &[u8],
    col: Option<&Collateral>,
    at: At,
    policy: &Policy,
) -> Result<Claims, Error> {
    let ev = detect(evidence)?;
    verifier(ev.kind).verify(
        &ev.bytes,
        &Input {
            at,
            collateral: col,
            policy,
            simulation_key: None,
        },
    )
}

fn secs(rfc3339: &str) -> u64 {
    cloak_attest::time::parse(rfc3339).unwrap()
}

struct Quote {
    evidence: &'static str,
    collateral: &'static str,
    from: &'static str,
    until: &'static str,
    tee: Tee,
    kind: EvidenceKind,
    status: &'static str,
    advisories: &'static [&'static str],
    debug: bool,
    mrenclave: &'static str,
    mrsigner: Option<&'static str>,
}

const SAMPLE: Quote = Quote {
    evidence: "sgx-dcap/sgx_quote",
    collateral: "sgx-dcap/sgx_quote_collateral.json",
    from: "2025-06-19T10:56:11Z",
    until: "2025-07-19T10:01:18Z",
    tee: Tee::Sgx,
    kind: EvidenceKind::DcapQuote,
    status: "ConfigurationAndSWHardeningNeeded",
    advisories: &["INTEL-SA-00289", "INTEL-SA-00615"],
    debug: false,
    mrenclave: "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb",
    mrsigner: Some("815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"),
};
const AUTOMATA_DEBUG: Quote = Quote {
    evidence: "sgx-dcap/automata_quote_sgx_debug.bin",
    debug: true,
    mrenclave: "a39d532e6ac9fe8ad9418851bbe26e1dee7408006505fce8580b511b97e704b4",
    mrsigner: None,
    status: "",
    advisories: &[],
    ..SAMPLE
};
const AUTOMATA_V3: Quote = Quote {
    evidence: "sgx-dcap/automata_quotev3.hex",
    collateral: "sgx-dcap/col_quotev3_0825.json",
    from: "2025-08-15T05:08:18Z",
    until: "2025-09-14T04:36:46Z",
    status: "SWHardeningNeeded",
    advisories: &["INTEL-SA-00615"],
    mrenclave: "a4f45c39dac622cb1dd32ddb35a52ec92db41d0fa88a1c911c49e59c534f61cd",
    mrsigner: None,
    ..SAMPLE
};
const GRAMINE: Quote = Quote {
    evidence: "sgx-dcap/gramine-cert.pem",
    kind: EvidenceKind::RaTlsCertificate,
    status: "OutOfDate",
    advisories: &[],
    debug: true,
    mrenclave: "0866e7ca11b9f4efe4bf39b2607f4e1299f111920d96d95719080f01b62b7585",
    mrsigner: Some("adc53501f21ced9b998e37a7a18e061c63e00315045fa57a49c18ef0a30d02ca"),
    ..AUTOMATA_V3
};
const RATS_TLS: Quote = Quote {
    evidence: "sgx-dcap/rats-tls-cert.pem",
    mrenclave: "",
    mrsigner: None,
    ..GRAMINE
};
const TDX: Quote = Quote {
    evidence: "sgx-dcap/tdx_quote",
    collateral: "sgx-dcap/tdx_quote_collateral.json",
    from: "2025-06-19T10:32:27Z",
    until: "2025-07-19T10:00:34Z",
    tee: Tee::Tdx,
    status: "UpToDate",
    advisories: &[],
    mrenclave: "",
    mrsigner: None,
    ..SAMPLE
};

const TDX_V5: Quote = Quote {
    evidence: "sgx-dcap/tdx_quote_td15ex",
    collateral: "sgx-dcap/tdx_quote_td15ex_collateral.json",
    from: "2026-10-08T00:09:46Z",
    until: "2026-11-06T23:45:11Z",
    ..TDX
};

#[rstest]
#[case::dcapqvl_sample(SAMPLE)]
#[case::automata_debug(AUTOMATA_DEBUG)]
#[case::automata_quotev3_hex(AUTOMATA_V3)]
#[case::gramine_ratls(GRAMINE)]
#[case::librats_ratls(RATS_TLS)]
#[case::tdx_v4(TDX)]
#[case::tdx_v5_td15(TDX_V5)]
fn quote_vectors_verify_exactly_inside_their_window(#[case] q: Quote) {
    let evidence = vector(q.evidence);
    let col = collateral(q.collateral);
    let (from, until) = (secs(q.from), secs(q.until));
    let policy = lenient();
    for at in [from, from + 1, until - 1, until] {
        let c = verify(&evidence, Some(&col), At::Time(at), &policy)
            .unwrap_or_else(|e| panic!("{} at {at}: {e}", q.evidence));
        assert_eq!(
            (c.tee, c.kind, c.debug, c.simulated),
            (q.tee, q.kind, q.debug, false)
        );
        assert_eq!(
            (c.times.valid_from, c.times.valid_until),
            (from, until),
            "{}",
            q.evidence
        );
        let tcb = c.tcb.as_ref().unwrap();
        if !q.status.is_empty() {
            assert_eq!(tcb.status, q.status);
        }
        if !q.advisories.is_empty() {
            assert_eq!(tcb.advisory_ids, q.advisories);
        }
        match &c.measurements {
            Measurements::Sgx(m) => {
                if !q.mrenclave.is_empty() {
                    assert_eq!(hex::encode(m.mrenclave), q.mrenclave);
                }
                if let Some(s) = q.mrsigner {
                    assert_eq!(hex::encode(m.mrsigner), s);
                }
            }
            Measurements::Tdx(_) => assert_eq!(q.tee, Tee::Tdx),
            Measurements::Pcrs(_) => panic!("PCRs from a quote"),
        }
    }
    let before = verify(&evidence, Some(&col), At::Time(from - 1), &policy).unwrap_err();
    assert_eq!(before.code(), "collateral_not_yet_valid", "{before}");
    let after = verify(&evidence, Some(&col), At::Time(until + 1), &policy).unwrap_err();
    assert_eq!(after.code(), "collateral_expired", "{after}");
    assert!(
        after.to_string().contains(q.until),
        "the message names when: {after}"
    );
}

#[test]
fn the_sample_quote_reports_its_identity_and_report_data() {
    let c = verify(
        &vector(SAMPLE.evidence),
        Some(&collateral(SAMPLE.collateral)),
        At::Time(secs(SAMPLE.from)),
        &lenient(),
    )
    .unwrap();
    let Measurements::Sgx(m) = &c.measurements else {
        panic!()
    };
    assert_eq!((m.isvprodid, m.isvsvn), (0, 0));
    let mut rd = b"Hello, world!".to_vec();
    rd.resize(64, 0);
    assert_eq!(c.report_data.as_deref(), Some(&rd[..]));
}

#[test]
fn gramine_ratls_binds_the_certificate_key_and_lists_its_advisories() {
    let c = verify(
        &vector(GRAMINE.evidence),
        Some(&collateral(GRAMINE.collateral)),
        At::Time(secs(GRAMINE.from)),
        &lenient(),
    )
    .unwrap();
    let spki = c.public_key.as_ref().expect("the bound key");
    assert!(spki.len() > 90, "a P-384 SubjectPublicKeyInfo");
    assert_eq!(c.tcb.as_ref().unwrap().advisory_ids.len(), 10);
}

#[test]
fn quotes_need_collateral_and_an_explicit_time() {
    let q = vector(SAMPLE.evidence);
    let e = verify(&q, None, At::Time(secs(SAMPLE.from)), &lenient()).unwrap_err();
    assert_eq!(e.code(), "collateral_required");
    let col = collateral(SAMPLE.collateral);
    let e = verify(&q, Some(&col), At::EvidenceTimestamp, &lenient()).unwrap_err();
    assert_eq!(e.code(), "time_required");
}

#[test]
fn collateral_for_another_platform_is_refused() {
    let e = verify(
        &vector(SAMPLE.evidence),
        Some(&collateral(AUTOMATA_V3.collateral)),
        At::Time(secs(AUTOMATA_V3.from)),
        &lenient(),
    )
    .unwrap_err();
    assert!(!e.to_string().is_empty());
    assert_ne!(e.code(), "", "{e}");
}

#[rstest]
#[case::automata(AUTOMATA_DEBUG, "debug_enclave")]
#[case::gramine(GRAMINE, "debug_enclave")]
fn debug_quotes_fail_unless_allowed(#[case] q: Quote, #[case] code: &str) {
    let strict = Policy {
        accepted_tcb_statuses: None,
        ..Policy::default()
    };
    let (ev, col) = (vector(q.evidence), collateral(q.collateral));
    let e = verify(&ev, Some(&col), At::Time(secs(q.from)), &strict).unwrap_err();
    assert_eq!(e.code(), code, "{e}");
    assert!(e.to_string().contains("debug"), "{e}");
    verify(&ev, Some(&col), At::Time(secs(q.from)), &lenient()).unwrap();
}

#[rstest]
#[case::sample_default_policy(SAMPLE, None, "ConfigurationAndSWHardeningNeeded", &["INTEL-SA-00289", "INTEL-SA-00615"])]
#[case::gramine_out_of_date(GRAMINE, None, "OutOfDate", &["INTEL-SA-00586"])]
#[case::v3_not_in_an_explicit_list(AUTOMATA_V3, Some(&["UpToDate"][..]), "SWHardeningNeeded", &["INTEL-SA-00615"])]
fn tcb_status_outside_the_list_fails_naming_status_and_advisories(
    #[case] q: Quote,
    #[case] accepted: Option<&[&str]>,
    #[case] status: &str,
    #[case] advisories: &[&str],
) {
    let mut policy = Policy {
        allow_debug: true,
        ..Policy::default()
    };
    if let Some(a) = accepted {
        policy.accepted_tcb_statuses = Some(a.iter().map(|s| s.to_string()).collect());
    }
    let e = verify(
        &vector(q.evidence),
        Some(&collateral(q.collateral)),
        At::Time(secs(q.from)),
        &policy,
    )
    .unwrap_err();
    assert_eq!(e.code(), "tcb_status", "{e}");
    let msg = e.to_string();
    assert!(msg.contains(status), "{msg}");
    for a in advisories {
        assert!(msg.contains(a), "{msg}");
    }
    // The same status, once accepted, verifies.
    policy.accepted_tcb_statuses = Some(vec![status.to_string()]);
    verify(
        &vector(q.evidence),
        Some(&collateral(q.collateral)),
        At::Time(secs(q.from)),
        &policy,
    )
    .unwrap();
}

fn flipped(mut bytes: Vec<u8>, at: usize) -> Vec<u8> {
    bytes[at] ^= 0x01;
    bytes
}

#[rstest]
#[case::report_body_mrenclave(112)]
#[case::report_data(400)]
#[case::header_qe_svn(8)]
#[case::quote_signature(436 + 10)]
#[case::attestation_key(436 + 64 + 5)]
#[case::qe_report(436 + 128 + 100)]
#[case::qe_report_signature(436 + 128 + 384 + 3)]
#[case::pck_chain_pem(3000)]
fn a_flipped_quote_byte_fails_with_a_reason(#[case] at: usize) {
    let col = collateral(SAMPLE.collateral);
    let q = flipped(vector(SAMPLE.evidence), at);
    let e = verify(&q, Some(&col), At::Time(secs(SAMPLE.from)), &lenient()).unwrap_err();
    assert!(
        [
            "bad_signature",
            "untrusted_chain",
            "malformed_evidence",
            "quote_rejected"
        ]
        .contains(&e.code()),
        "{}: {e}",
        e.code()
    );
}

#[rstest]
#[case::tcb_info("tcb_info")]
#[case::tcb_info_signature("tcb_info_signature")]
#[case::qe_identity("qe_identity")]
#[case::qe_identity_signature("qe_identity_signature")]
#[case::pck_crl("pck_crl")]
#[case::root_ca_crl("root_ca_crl")]
#[case::tcb_info_issuer_chain("tcb_info_issuer_chain")]
fn a_flipped_collateral_byte_fails_with_a_reason(#[case] field: &str) {
    let mut json: serde_json::Value = serde_json::from_slice(&vector(SAMPLE.collateral)).unwrap();
    let s = json[field].as_str().unwrap().to_string();
    // Flip a character in the middle to another one of the same class (hex stays hex, text
    // stays parseable), so that the signatures, not the parsers, must notice.
    let mid = s.len() / 2;
    let mut chars: Vec<char> = s.chars().collect();
    let c = chars[mid];
    chars[mid] = match c {
        '0'..='8' => ((c as u8) + 1) as char,
        '9' => '0',
        'a'..='e' | 'A'..='E' => ((c as u8) + 1) as char,
        'f' => 'a',
        'F' => 'A',
        _ => {
            let i = chars
                .iter()
                .position(|c| c.is_ascii_digit() && *c != '9')
                .unwrap();
            chars[i] = ((chars[i] as u8) + 1) as char;
            c
        }
    };
    json[field] = serde_json::Value::String(chars.into_iter().collect());
    let col = Collateral::from_json(json.to_string().as_bytes());
    let e = col
        .and_then(|col| {
            verify(
                &vector(SAMPLE.evidence),
                Some(&col),
                At::Time(secs(SAMPLE.from)),
                &lenient(),
            )
        })
        .unwrap_err();
    assert!(
        [
            "bad_signature",
            "untrusted_chain",
            "malformed_collateral",
            "quote_rejected"
        ]
        .contains(&e.code()),
        "{field}: {}: {e}",
        e.code()
    );
}

#[test]
fn zero_padding_after_a_quote_is_accepted_anything_else_refused() {
    let col = collateral(SAMPLE.collateral);
    let mut q = vector(SAMPLE.evidence);
    q.extend([0; 100]);
    verify(&q, Some(&col), At::Time(secs(SAMPLE.from)), &lenient()).unwrap();
    q.push(1);
    let e = verify(&q, Some(&col), At::Time(secs(SAMPLE.from)), &lenient()).unwrap_err();
    assert_eq!(e.code(), "malformed_evidence", "{e}");
}

#[test]
fn the_embedded_intel_root_is_the_pinned_one() {
    use sha2::Digest;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(cloak_attest::INTEL_SGX_ROOT_CA_DER)),
        "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
    );
}

#[test]
fn a_changed_copy_of_the_root_in_the_quote_is_refused() {
    // dcap-qvl uses its own root, so the copy in the quote is unused; a change there must not
    // pass either (base64 letter in the root certificate's signature).
    let mut q = vector(SAMPLE.evidence);
    let end = q.len() - 60;
    q[end] = if q[end] == b'A' { b'B' } else { b'A' };
    let e = verify(
        &q,
        Some(&collateral(SAMPLE.collateral)),
        At::Time(secs(SAMPLE.from)),
        &lenient(),
    )
    .unwrap_err();
    assert_eq!(e.code(), "malformed_evidence", "{e}");
}

#[rstest]
#[case::empty(0)]
#[case::inside_header(10)]
#[case::header_only(48)]
#[case::inside_body(300)]
#[case::body_only(432)]
#[case::after_signature_length(436)]
#[case::inside_qe_report(1000)]
#[case::inside_pck_chain(3000)]
#[case::last_byte(4599)]
fn a_truncated_quote_fails_as_malformed(#[case] len: usize) {
    let q = vector(SAMPLE.evidence);
    let col = collateral(SAMPLE.collateral);
    let e = verifier(EvidenceKind::DcapQuote)
        .verify(
            &q[..len],
            &Input {
                at: At::Time(secs(SAMPLE.from)),
                collateral: Some(&col),
                policy: &lenient(),
                simulation_key: None,
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), "malformed_evidence", "{len}: {e}");
}

#[test]
fn a_truncated_ratls_certificate_fails_as_malformed() {
    let der = detect(&vector(GRAMINE.evidence)).unwrap().bytes;
    let col = collateral(GRAMINE.collateral);
    for len in [0, 1, 100, der.len() / 2, der.len() - 1] {
        let e = verifier(EvidenceKind::RaTlsCertificate)
            .verify(
                &der[..len],
                &Input {
                    at: At::Time(secs(GRAMINE.from)),
                    collateral: Some(&col),
                    policy: &lenient(),
                    simulation_key: None,
                },
            )
            .unwrap_err();
        assert_eq!(e.code(), "malformed_evidence", "{len}: {e}");
    }
}

#[test]
fn an_expired_collateral_names_the_item_and_when() {
    let e = verify(
        &vector(SAMPLE.evidence),
        Some(&collateral(SAMPLE.collateral)),
        At::Time(secs(SAMPLE.until) + 86_400),
        &lenient(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.code(), "collateral_expired");
    assert!(
        msg.contains("QE identity")
            && msg.contains("2025-07-19T10:01:18Z")
            && msg.contains("2025-07-20T10:01:18Z"),
        "{msg}"
    );
}

/// FMSPCs and CAs as the notes give them (sample: 00a067110000 Processor CA; quotev3:
/// 00606a000000 Platform CA) and, for TDX, as its collateral's tcbInfo.fmspc and PCK CRL issuer
/// name them.
#[rstest]
#[case::sample(SAMPLE.evidence, Tee::Sgx, "00a067110000", "processor")]
#[case::quotev3_hex(AUTOMATA_V3.evidence, Tee::Sgx, "00606a000000", "platform")]
#[case::gramine_certificate(GRAMINE.evidence, Tee::Sgx, "00606a000000", "platform")]
#[case::tdx(TDX.evidence, Tee::Tdx, "b0c06f000000", "platform")]
fn the_collateral_key_names_fmspc_and_ca(
    #[case] file: &str,
    #[case] tee: Tee,
    #[case] fmspc: &str,
    #[case] ca: &str,
) {
    let k = cloak_attest::collateral_key(&vector(file)).unwrap();
    assert_eq!(k.tee, tee);
    assert_eq!((hex::encode(k.fmspc).as_str(), k.pck_ca), (fmspc, ca));
    let e = cloak_attest::collateral_key(b"junk").unwrap_err();
    assert_eq!(e.code(), "unknown_evidence_kind");
}
