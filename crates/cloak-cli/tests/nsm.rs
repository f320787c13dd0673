//! The launcher's NSM messages byte-checked against AWS's own `aws-nitro-enclaves-nsm-api`
//! crate (tools/nsm-oracle, built by scripts/test.sh): the Attestation request it sends to
//! `/dev/nsm` (public_key, user_data, nonce), for CBOR's length encodings at their boundaries
//! and with fields absent, and the NSM evidence source end to end with the device behind its
//! trait, answered with the crate's own response encodings.

mod common;

use std::path::{Path, PathBuf};

use cloak_launcher::provision::evidence::{
    nsm_attestation_request, nsm_attestation_response, EvidenceSource, Nsm, NsmDevice,
};

fn oracle_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools/nsm-oracle/target/release/nsm-oracle");
    if !bin.exists() {
        common::ok(std::process::Command::new("cargo").args([
            "build",
            "--release",
            "--quiet",
            "--locked",
            "--manifest-path",
            bin.join("../../../Cargo.toml").to_str().unwrap(),
        ]));
    }
    bin
}

/// The oracle's encoding; the arguments after the command go on stdin, one per line.
fn oracle(args: &[&str]) -> Vec<u8> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = std::process::Command::new(oracle_bin())
        .arg(args[0])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for a in &args[1..] {
        writeln!(stdin, "{a}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "nsm-oracle {} failed", args[0]);
    hex::decode(String::from_utf8(out.stdout).unwrap().trim()).unwrap()
}

fn arg(v: Option<&[u8]>) -> String {
    v.map_or("-".into(), hex::encode)
}

#[test]
fn attestation_requests_match_the_nsm_api_crate_byte_for_byte() {
    let pattern = |n: usize| (0..n).map(|i| (i * 7 + 3) as u8).collect::<Vec<u8>>();
    // Lengths at CBOR's header boundaries: 0, 23 (in the initial byte), 24 and 255 (one length
    // byte), 256 and 65535 (two), 65536 (four); 64/32/91/550 are what the launcher sends
    // (REPORTDATA binding, nonce, a P-256 SPKI, an RSA-4096 SPKI).
    let cases: Vec<[Option<Vec<u8>>; 3]> = vec![
        [Some(pattern(64)), Some(pattern(32)), Some(pattern(91))],
        [Some(pattern(64)), Some(pattern(32)), Some(pattern(550))],
        [None, None, None],
        [Some(vec![]), None, Some(vec![])],
        [Some(pattern(23)), Some(pattern(24)), Some(pattern(255))],
        [None, Some(pattern(256)), Some(pattern(65535))],
        [Some(pattern(65536)), None, Some(pattern(1))],
    ];
    for [user_data, nonce, public_key] in &cases {
        let ours = nsm_attestation_request(
            user_data.as_deref(),
            nonce.as_deref(),
            public_key.as_deref(),
        );
        let theirs = oracle(&[
            "request",
            &arg(user_data.as_deref()),
            &arg(nonce.as_deref()),
            &arg(public_key.as_deref()),
        ]);
        assert!(
            ours == theirs,
            "user_data {:?} nonce {:?} public_key {:?} bytes: ours {} vs the crate's {}",
            user_data.as_ref().map(Vec::len),
            nonce.as_ref().map(Vec::len),
            public_key.as_ref().map(Vec::len),
            hex::encode(&ours[..ours.len().min(64)]),
            hex::encode(&theirs[..theirs.len().min(64)])
        );
    }
}

/// `/dev/nsm` behind the trait: records the request, answers with the crate's encoding.
struct Device {
    request: Vec<u8>,
    answer: Vec<u8>,
}

impl NsmDevice for Device {
    fn call(&mut self, request: &[u8]) -> std::io::Result<Vec<u8>> {
        self.request = request.to_vec();
        Ok(self.answer.clone())
    }
}

#[test]
fn the_nsm_source_sends_the_crates_request_and_reads_its_responses() {
    let key = cloak_launcher::provision::generate_key(cloak_launcher::KeySpec::Ec { curve: 256 })
        .unwrap();
    let nonce = [0x5au8; 32];
    let document = b"a COSE_Sign1 attestation document".to_vec();
    let mut nsm = Nsm {
        dev: Device {
            request: vec![],
            answer: oracle(&["attestation-response", &hex::encode(&document)]),
        },
    };
    assert_eq!(nsm.evidence(&key.spki, &nonce).unwrap(), document);
    let binding = cloak_attest::binding::report_data(&key.spki, &nonce);
    let expected = oracle(&[
        "request",
        &hex::encode(binding),
        &hex::encode(nonce),
        &hex::encode(&key.spki),
    ]);
    assert_eq!(hex::encode(&nsm.dev.request), hex::encode(expected));
    nsm.dev.answer = oracle(&["error-response"]);
    let e = nsm.evidence(&key.spki, &nonce).unwrap_err();
    assert!(
        e.contains("refused") && e.contains("InvalidArgument"),
        "{e}"
    );
    assert!(nsm_attestation_response(&oracle(&["error-response"])).is_err());
}
