//! Cost of one verification per evidence kind, on the real vectors (run with
//! `cargo run -p cloak-attest --example verify_cost [ITERATIONS]`; the dev profile builds
//! dependencies at opt-level 2, `--release` gives the production figure).

use cloak_attest::simulated::{produce, Document, SimulationSigningKey};
use cloak_attest::{
    detect, verifier, At, Collateral, Input, Measurements, Policy, SimulationPublicKey,
};
use std::path::PathBuf;
use std::time::Instant;

fn vector(rel: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/vectors")
            .join(rel),
    )
    .unwrap()
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let policy = Policy {
        allow_debug: true,
        accepted_tcb_statuses: None,
        allow_simulated: true,
        max_age_secs: u64::MAX,
    };
    // A fixed P-256 key for the simulated case (test key, not a secret).
    let sk = SimulationSigningKey::from_bytes(&[
        0x30, 0x41, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
        0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x27, 0x30, 0x25,
        0x02, 0x01, 0x01, 0x04, 0x20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17,
        18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
    ])
    .expect("test key");
    let pk = SimulationPublicKey::from_bytes(&sk.public_sec1()).unwrap();
    let sim = produce(
        &sk,
        &Document {
            timestamp_ms: 1_764_547_200_000,
            measurements: Measurements::Pcrs([(0u16, vec![1; 48])].into_iter().collect()),
            user_data: None,
            nonce: Some(vec![0; 32]),
            public_key: None,
        },
    )
    .unwrap();
    let sample = Collateral::from_json(&vector("sgx-dcap/sgx_quote_collateral.json")).unwrap();
    let tdx = Collateral::from_json(&vector("sgx-dcap/tdx_quote_collateral.json")).unwrap();
    let v3 = Collateral::from_json(&vector("sgx-dcap/col_quotev3_0825.json")).unwrap();
    let cases: Vec<(&str, Vec<u8>, Option<&Collateral>, At)> = vec![
        (
            "SGX quote v3",
            vector("sgx-dcap/sgx_quote"),
            Some(&sample),
            At::Time(1_750_330_571),
        ),
        (
            "TDX quote v4",
            vector("sgx-dcap/tdx_quote"),
            Some(&tdx),
            At::Time(1_750_329_147),
        ),
        (
            "Gramine RA-TLS certificate",
            vector("sgx-dcap/gramine-cert.pem"),
            Some(&v3),
            At::Time(1_755_234_498),
        ),
        (
            "Nitro document",
            vector("nitro-attestation/nitro_attest_attestation.cose"),
            None,
            At::EvidenceTimestamp,
        ),
        ("simulated evidence", sim, None, At::EvidenceTimestamp),
    ];
    for (name, bytes, collateral, at) in cases {
        let ev = detect(&bytes).unwrap();
        let input = Input {
            at,
            collateral,
            policy: &policy,
            simulation_key: Some(&pk),
        };
        verifier(ev.kind).verify(&ev.bytes, &input).expect(name);
        let (start, cpu) = (Instant::now(), on_cpu_ns());
        for _ in 0..n {
            verifier(ev.kind).verify(&ev.bytes, &input).expect(name);
        }
        let wall = start.elapsed().as_secs_f64() * 1e3 / f64::from(n);
        let cpu = on_cpu_ns()
            .zip(cpu)
            .map(|(b, a)| (b - a) as f64 / 1e6 / f64::from(n));
        let cpu = cpu.map_or("n/a".to_string(), |c| format!("{c:.3} ms"));
        println!("{name:28} {wall:>8.3} ms wall, {cpu:>10} on CPU per verification ({n} runs)");
    }
}

/// Nanoseconds this thread has run on a CPU (Linux schedstat); wall time alone misleads on a
/// shared machine.
fn on_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
