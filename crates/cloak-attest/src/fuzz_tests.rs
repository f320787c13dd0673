//! Mutation fuzzing of every parser that reads evidence: no input may panic, and no mutated
//! input may verify. Deterministic (seeded), so a failure reproduces.
//!
//! Counts: `CLOAK_ATTEST_FUZZ_PARSE` mutated inputs per parser (default 100,000) through the
//! parsers alone (certificate requests with their signature check), and `CLOAK_ATTEST_FUZZ_VERIFY` (default 500) per kind through the whole
//! verifier with its signatures; `scripts/fuzz-attest.sh` runs 100,000 of those per kind.

use crate::cbor;
use crate::cose::Sign1;
use crate::x509::{pem_blocks, Cert};
use crate::{detect, nitro, ratls, sgx, simulated, verifier, At, Collateral, Input, Policy};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

fn vector(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that sit on parser boundaries: CBOR heads with huge lengths, DER long forms, 0/ff.
const INTERESTING: [u8; 12] = [
    0x00, 0xff, 0x7f, 0x80, 0x81, 0x82, 0x5b, 0x9b, 0xbb, 0xd8, 0xf6, 0x1b,
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut m = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        if m.is_empty() {
            m.push(rng.next() as u8);
            continue;
        }
        let i = rng.below(m.len());
        match rng.below(8) {
            0 => m[i] ^= 1 << rng.below(8),
            1 => m[i] = rng.next() as u8,
            2 => m[i] = INTERESTING[rng.below(INTERESTING.len())],
            3 => m.insert(i, rng.next() as u8),
            4 => {
                let n = 1 + rng.below(16.min(m.len() - i));
                m.drain(i..i + n);
            }
            5 => m.truncate(i),
            6 => {
                let n = 1 + rng.below(64.min(m.len() - i));
                let chunk = m[i..i + n].to_vec();
                let j = rng.below(m.len());
                m.splice(j..j, chunk);
            }
            _ => {
                // a little-endian length field nearby set to something large
                let v = (rng.next() as u32).to_le_bytes();
                for (k, b) in v.iter().enumerate() {
                    if let Some(x) = m.get_mut(i + k) {
                        *x = *b;
                    }
                }
            }
        }
    }
    m
}

/// Run `f` on `n` mutations of the seeds; a panic fails with the input in hex.
fn fuzz(name: &str, seeds: &[Vec<u8>], n: usize, mut f: impl FnMut(&[u8], &[u8])) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    for k in 0..n {
        let seed = &seeds[k % seeds.len()];
        let m = mutate(&mut rng, seed);
        if catch_unwind(AssertUnwindSafe(|| f(seed, &m))).is_err() {
            let first = seed.iter().zip(&m).position(|(a, b)| a != b);
            panic!(
                "{name}: input {k} ({} bytes, seed {}, first difference at {first:?}): {}",
                m.len(),
                seed.len(),
                hex::encode(&m)
            );
        }
    }
}

fn quotes() -> Vec<Vec<u8>> {
    let hex_quote = String::from_utf8(vector("sgx-dcap/automata_quotev3.hex")).unwrap();
    vec![
        vector("sgx-dcap/sgx_quote"),
        vector("sgx-dcap/tdx_quote"),
        hex::decode(hex_quote.trim()).unwrap(),
    ]
}

fn nitro_docs() -> Vec<Vec<u8>> {
    [
        "nitro_attest_attestation.cose",
        "ev_valid-attestation-doc-bytes",
        "anjuna_attester_testdata_sample_attestation_doc_full.bin",
    ]
    .iter()
    .map(|f| vector(&format!("nitro-attestation/{f}")))
    .collect()
}

fn certs() -> Vec<Vec<u8>> {
    ["gramine-cert.pem", "rats-tls-cert.pem"]
        .iter()
        .map(|f| pem_blocks(&vector(&format!("sgx-dcap/{f}")), "CERTIFICATE").remove(0))
        .collect()
}

#[test]
fn fuzz_quote_parser() {
    let n = count("CLOAK_ATTEST_FUZZ_PARSE", 100_000);
    fuzz("quote", &quotes(), n, |_, m| {
        if let Ok((q, _)) = sgx::parse_quote(m, crate::EvidenceKind::DcapQuote) {
            let _ = q.raw_cert_chain();
        }
        let _ = detect(m);
    });
}

#[test]
fn fuzz_cose_and_nitro_payload_parsers() {
    let n = count("CLOAK_ATTEST_FUZZ_PARSE", 100_000);
    fuzz("cose", &nitro_docs(), n, |_, m| {
        if let Ok(s) = Sign1::decode(m) {
            let _ = s.to_be_signed();
            let _ = nitro::parse_payload(&s.payload);
            let _ = simulated::parse_payload(&s.payload);
        }
        let _ = cbor::decode(m);
    });
}

#[test]
fn fuzz_ratls_certificate_parser() {
    let n = count("CLOAK_ATTEST_FUZZ_PARSE", 100_000);
    fuzz("ra-tls", &certs(), n, |_, m| {
        if let Ok(c) = Cert::parse(m) {
            let _ = c.subject();
            let _ = c.validity();
            let _ = c.spki_der();
            let _ = c.verify_signed_by(c.spki());
            if let Ok(e) = ratls::extract(&c, None) {
                let _ = sgx::parse_quote(&e.quote, crate::EvidenceKind::RaTlsCertificate);
            }
        }
    });
}

/// Certificate requests from openssl (EC P-384 and RSA 2048, with names), parsed and their
/// signatures checked: no panic, and no mutation accepted.
#[test]
fn fuzz_csr_parser() {
    let n = count("CLOAK_ATTEST_FUZZ_PARSE", 100_000);
    let seeds: Vec<Vec<u8>> = ["csr-p384.pem", "csr-rsa2048.pem"]
        .iter()
        .map(|f| pem_blocks(&vector(&format!("csr/{f}")), "CERTIFICATE REQUEST").remove(0))
        .collect();
    for s in &seeds {
        crate::csr::parse(s).unwrap();
    }
    fuzz("csr", &seeds, n, |seed, m| {
        if m != seed {
            if let Ok(c) = crate::csr::parse(m) {
                panic!("a mutated request was accepted: {c:?}");
            }
        }
    });
}

/// Full verification of mutated evidence of each kind: never a panic, never an accept.
#[test]
fn fuzz_verifiers_never_accept_a_mutation() {
    let n = count("CLOAK_ATTEST_FUZZ_VERIFY", 500);
    let lenient = Policy {
        allow_debug: true,
        accepted_tcb_statuses: None,
        max_age_secs: u64::MAX,
        ..Policy::default()
    };
    let run = |name: &str, seeds: Vec<Vec<u8>>, col: Option<Collateral>, at: At| {
        let input = Input {
            at,
            collateral: col.as_ref(),
            policy: &lenient,
            simulation_key: None,
        };
        for s in &seeds {
            let ev = detect(s).unwrap();
            verifier(ev.kind)
                .verify(&ev.bytes, &input)
                .unwrap_or_else(|e| panic!("{name} seed: {e}"));
        }
        fuzz(name, &seeds, n, |seed, m| {
            if m == seed {
                return;
            }
            let Ok(ev) = detect(m) else { return };
            if let Ok(c) = verifier(ev.kind).verify(&ev.bytes, &input) {
                panic!("{name}: a mutated input was accepted: {c:?}");
            }
        });
    };
    let sample_col = Collateral::from_json(&vector("sgx-dcap/sgx_quote_collateral.json")).unwrap();
    run(
        "verify quote",
        vec![vector("sgx-dcap/sgx_quote")],
        Some(sample_col),
        At::Time(1_750_330_571),
    );
    run("verify nitro", nitro_docs(), None, At::EvidenceTimestamp);
    let col = Collateral::from_json(&vector("sgx-dcap/col_quotev3_0825.json")).unwrap();
    run("verify ra-tls", certs(), Some(col), At::Time(1_755_234_498));
}
