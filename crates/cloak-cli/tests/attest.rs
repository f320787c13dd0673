//! `cloak attest verify` on the real vectors (crates/cloak-attest/tests/vectors): detection from
//! the bytes, the JSON keys, exit status 1 with the reason outside a window, on debug and on TCB.

use std::path::PathBuf;
use std::process::{Command, Output};

fn vector(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../cloak-attest/tests/vectors")
        .join(rel)
}

fn cloak(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cloak"))
        .args(["attest", "verify"])
        .args(args)
        .output()
        .unwrap()
}

fn ok_json(out: Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn failed(out: Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

const KEYS: [&str; 14] = [
    "tee",
    "mrenclave",
    "mrsigner",
    "isvprodid",
    "isvsvn",
    "debug",
    "tcb_status",
    "advisory_ids",
    "report_data",
    "pcrs",
    "user_data",
    "nonce",
    "public_key",
    "timestamp",
];

fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn expected_keys() -> Vec<String> {
    let mut k: Vec<String> = KEYS.iter().map(|s| s.to_string()).collect();
    k.sort();
    k
}

#[test]
fn an_sgx_quote_verifies_at_a_time_inside_its_window_and_reports_its_tcb() {
    let q = vector("sgx-dcap/sgx_quote");
    let col = vector("sgx-dcap/sgx_quote_collateral.json");
    let v = ok_json(cloak(&[
        q.to_str().unwrap(),
        "--collateral",
        col.to_str().unwrap(),
        "--at",
        "2025-07-19T10:01:18Z",
        "--output",
        "json",
    ]));
    assert_eq!(keys(&v), expected_keys());
    assert_eq!(v["tee"], "sgx");
    assert_eq!(
        v["mrenclave"],
        "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    );
    assert_eq!(
        v["mrsigner"],
        "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
    );
    assert_eq!(
        (v["isvprodid"].as_u64(), v["isvsvn"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(v["debug"], false);
    assert_eq!(v["tcb_status"], "ConfigurationAndSWHardeningNeeded");
    assert_eq!(
        v["advisory_ids"],
        serde_json::json!(["INTEL-SA-00289", "INTEL-SA-00615"])
    );
    assert!(v["report_data"]
        .as_str()
        .unwrap()
        .starts_with(&hex::encode("Hello, world!")));
    assert!(v["pcrs"].is_null() && v["timestamp"].is_null());
}

#[test]
fn one_second_after_the_window_the_quote_fails_naming_the_expired_item() {
    let q = vector("sgx-dcap/sgx_quote");
    let col = vector("sgx-dcap/sgx_quote_collateral.json");
    let err = failed(cloak(&[
        q.to_str().unwrap(),
        "--collateral",
        col.to_str().unwrap(),
        "--at",
        "1752919279",
    ]));
    assert!(err.contains("collateral_expired"), "{err}");
    assert!(err.contains("2025-07-19T10:01:18Z"), "{err}");
}

#[test]
fn the_tcb_status_fails_only_when_accept_tcb_is_given() {
    let q = vector("sgx-dcap/automata_quotev3.hex");
    let col = vector("sgx-dcap/col_quotev3_0825.json");
    let base = [
        q.to_str().unwrap(),
        "--collateral",
        col.to_str().unwrap(),
        "--at",
        "2025-08-20T00:00:00Z",
    ];
    let v = ok_json(cloak(&[&base[..], &["-o", "json"]].concat()));
    assert_eq!(v["tcb_status"], "SWHardeningNeeded");
    assert_eq!(
        v["mrenclave"],
        "a4f45c39dac622cb1dd32ddb35a52ec92db41d0fa88a1c911c49e59c534f61cd"
    );
    let err = failed(cloak(&[&base[..], &["--accept-tcb", "UpToDate"]].concat()));
    assert!(
        err.contains("tcb_status")
            && err.contains("SWHardeningNeeded")
            && err.contains("INTEL-SA-00615"),
        "{err}"
    );
    ok_json(cloak(
        &[
            &base[..],
            &["--accept-tcb", "UpToDate,SWHardeningNeeded", "-o", "json"],
        ]
        .concat(),
    ));
}

#[test]
fn a_gramine_ratls_certificate_needs_allow_debug() {
    let cert = vector("sgx-dcap/gramine-cert.pem");
    let col = vector("sgx-dcap/col_quotev3_0825.json");
    let base = [
        cert.to_str().unwrap(),
        "--collateral",
        col.to_str().unwrap(),
        "--at",
        "2025-08-15T05:08:18Z",
    ];
    let err = failed(cloak(&base));
    assert!(err.contains("debug_enclave"), "{err}");
    let v = ok_json(cloak(
        &[&base[..], &["--allow-debug", "-o", "json"]].concat(),
    ));
    assert_eq!(
        v["mrenclave"],
        "0866e7ca11b9f4efe4bf39b2607f4e1299f111920d96d95719080f01b62b7585"
    );
    assert_eq!(
        (v["debug"].as_bool(), v["tcb_status"].as_str()),
        (Some(true), Some("OutOfDate"))
    );
    assert!(
        v["public_key"].as_str().unwrap().starts_with("30"),
        "the certificate's SubjectPublicKeyInfo"
    );
}

#[test]
fn a_nitro_document_verifies_at_its_own_timestamp_raw_and_base64() {
    let v = ok_json(cloak(&[
        vector("nitro-attestation/nitro_attest_attestation.cose")
            .to_str()
            .unwrap(),
        "-o",
        "json",
    ]));
    assert_eq!(keys(&v), expected_keys());
    assert_eq!(v["tee"], "nitro");
    assert_eq!(v["timestamp"].as_u64(), Some(1_736_179_625_472));
    assert_eq!(v["pcrs"].as_object().unwrap().len(), 16);
    assert_eq!(v["pcrs"]["0"].as_str().unwrap().len(), 96);
    assert!(v["mrenclave"].is_null() && v["tcb_status"].is_null());
    assert_eq!(v["public_key"].as_str().unwrap().len(), 294 * 2);

    let b64 = vector("nitro-attestation/ev_valid-attestation-doc-base64");
    let err = failed(cloak(&[b64.to_str().unwrap()]));
    assert!(err.contains("debug_enclave"), "{err}");
    let v = ok_json(cloak(&[
        b64.to_str().unwrap(),
        "--allow-debug",
        "-o",
        "json",
    ]));
    assert_eq!(v["debug"], true);
    assert_eq!(v["nonce"].as_str().unwrap().len(), 512);
}

#[test]
fn a_nitro_document_checked_later_than_its_maximum_age_fails() {
    let doc = vector("nitro-attestation/nitro_attest_attestation.cose");
    // 1736179625 + 300 s is the last second.
    ok_json(cloak(&[
        doc.to_str().unwrap(),
        "--at",
        "1736179925",
        "-o",
        "json",
    ]));
    let err = failed(cloak(&[doc.to_str().unwrap(), "--at", "1736179926"]));
    assert!(err.contains("evidence_too_old"), "{err}");
    let err = failed(cloak(&[
        doc.to_str().unwrap(),
        "--at",
        "2025-01-06T16:07:04Z",
    ]));
    assert!(err.contains("evidence_from_the_future"), "{err}");
}

#[test]
fn text_output_names_the_window() {
    let out = cloak(&[vector("nitro-attestation/nitro_attest_attestation.cose")
        .to_str()
        .unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("tee: nitro")
            && text.contains("valid from 2025-01-06T16:07:05Z until 2025-01-06T16:12:05Z"),
        "{text}"
    );
}

#[test]
fn bad_input_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, "hello").unwrap();
    let err = failed(cloak(&[junk.to_str().unwrap()]));
    assert!(
        err.contains("not evidence") && err.contains("junk"),
        "{err}"
    );

    let q = vector("sgx-dcap/sgx_quote");
    let err = failed(cloak(&[q.to_str().unwrap(), "--at", "1750330571"]));
    assert!(err.contains("--collateral"), "{err}");

    let err = failed(cloak(&[q.to_str().unwrap(), "--at", "tomorrow"]));
    assert!(err.contains("RFC 3339"), "{err}");
}

#[test]
fn simulated_evidence_needs_allow_simulated_and_is_marked() {
    use cloak_attest::simulated::{produce, Document, SimulationSigningKey};
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = (dir.path().join("sim.key"), dir.path().join("sim.pub"));
    assert!(Command::new("openssl")
        .args([
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out"
        ])
        .arg(&key)
        .status()
        .unwrap()
        .success());
    assert!(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap()
        .success());
    let signing = SimulationSigningKey::from_bytes(&std::fs::read(&key).unwrap()).unwrap();
    let doc = Document {
        timestamp_ms: 1_764_547_200_000,
        measurements: cloak_attest::Measurements::Pcrs([(0u16, vec![7; 48])].into_iter().collect()),
        user_data: None,
        nonce: Some(b"n".to_vec()),
        public_key: None,
    };
    let ev = dir.path().join("sim.cose");
    std::fs::write(&ev, produce(&signing, &doc).unwrap()).unwrap();
    let (ev, public) = (ev.to_str().unwrap(), public.to_str().unwrap());

    let err = failed(cloak(&[ev, "--simulation-key", public]));
    assert!(err.contains("simulation_not_allowed"), "{err}");
    let v = ok_json(cloak(&[
        ev,
        "--allow-simulated",
        "--simulation-key",
        public,
        "-o",
        "json",
    ]));
    assert_eq!(keys(&v), expected_keys());
    assert_eq!(
        (v["tee"].as_str(), v["nonce"].as_str()),
        (Some("simulated"), Some("6e"))
    );
    let out = cloak(&[ev, "--allow-simulated", "--simulation-key", public]);
    assert!(String::from_utf8(out.stdout).unwrap().contains("SIMULATED"));
}
