//! The launcher's start-up overhead against the manager's own issuance time, in one run (see
//! scripts/bench-launcher.sh). A manager runs in-process on a loopback port (SQLite, simulated
//! attestation allowed) with an approved build; then, alternating, RUNS times each:
//!
//! - issuance (the ceiling): `POST /v1/attestation/nonce` + `POST /v1/certificates` with a key,
//!   CSR and evidence made beforehand (only the two HTTPS requests are timed), through the
//!   launcher's own HTTPS client;
//! - launcher: `provision()` for one EC P-256 certificate with simulated evidence: key
//!   generation, nonce, evidence, CSR, certificate, files, and the app-config fetch over mutual
//!   TLS (a second connection), i.e. everything the launcher does before exec.
//!
//! Prints medians, p90 and the overhead (launcher − issuance) against the 50 ms goal, then the
//! median RSA-3072 key generation time on its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloak_api::{App, Build, Client, Task};
use cloak_attest::simulated::{produce, Document, SimulationSigningKey};
use cloak_launcher::provision::evidence::{parse_measurements, Simulated};
use cloak_launcher::provision::{self, generate_key, Target};
use cloak_launcher::{CertSpec, KeySpec, ManagerConfig};
use serde_json::json;

#[derive(Debug)]
struct WallClock;
impl cloak_manager::Clock for WallClock {
    fn now(&self) -> i64 {
        cloak_manager::now()
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}
fn p90(v: &mut [Duration]) -> Duration {
    v.sort();
    v[(v.len() * 9 / 10).min(v.len() - 1)]
}
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "bench-admin-password-1").unwrap();
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let sim_key = SimulationSigningKey::from_bytes(&kp.serialize_der()).unwrap();
    std::fs::write(dir.path().join("sim.pub"), sim_key.public_sec1()).unwrap();
    let config = cloak_manager::Config::resolve(cloak_manager::config::Settings {
        data_dir: Some(dir.path().join("data")),
        admin_user: Some("admin".into()),
        admin_password_file: Some(pw),
        allow_simulated_attestation: Some(true),
        simulation_public_key: Some(dir.path().join("sim.pub")),
        // Two nonces a run from one address: the default budget (60 a minute) would refuse
        // the runs past the thirtieth.
        nonce_rate_per_minute: Some(1_000_000),
        ..Default::default()
    })
    .unwrap();
    config.prepare_data_dir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let state = rt
        .block_on(cloak_manager::server::prepare(
            config.clone(),
            Arc::new(WallClock),
        ))
        .unwrap();
    let (tls, _) = rt
        .block_on(cloak_manager::server::tls_config_with_client_auth(
            &config, &state,
        ))
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        rt.block_on(cloak_manager::server::serve(
            state,
            listener,
            Some(tls),
            std::future::pending(),
        ))
    });
    let ca = std::fs::read_to_string(config.data_dir.join("tls.crt")).unwrap();

    let mut admin = Client::new(&url, Some(ca.as_bytes())).unwrap();
    admin.login("admin", "bench-admin-password-1").unwrap();
    let app: App = admin
        .post(
            "/v1/apps",
            &json!({"name": "bench", "input_image_name": "r/in", "output_image_name": "r/out"}),
        )
        .unwrap();
    let m = json!({"mrenclave": "a1".repeat(32), "mrsigner": "b2".repeat(32), "isvprodid": 1, "isvsvn": 1});
    let build: Build = admin
        .post(
            "/v1/builds",
            &json!({"app_id": app.app_id,
            "docker_info": {"docker_image_name": "r/out", "docker_version": "1"},
            "attributes": {"sgx": m},
            "advanced_settings": {"certificates": [{"subject": "bench"}]}}),
        )
        .unwrap();
    let _: Task = admin
        .patch(
            &format!("/v1/tasks/{}", build.task_id),
            &json!({"status": "APPROVED"}),
        )
        .unwrap();
    let _: serde_json::Value = admin
        .post(
            "/v1/app_configs",
            &json!({"name": "c", "app_id": app.app_id,
            "app_config": {"env:MODE": {"contents": "bench"}}}),
        )
        .unwrap();

    let spec = CertSpec {
        subject: "bench".into(),
        key: KeySpec::Ec { curve: 256 },
        key_path: "/key.pem".into(),
        cert_path: "/cert.pem".into(),
        chain_path: Some("/chain.pem".into()),
    };
    let cfg = ManagerConfig {
        url: url.clone(),
        ca_pem: ca.clone(),
        app_id: app.app_id.clone(),
        certificates: vec![spec.clone()],
        allow_simulated: true,
        retry_seconds: 5,
        vsock_port: None,
        add_ca_to_trust_store: false,
        renew_before_seconds: 0,
    };
    let client = provision::Client::new(&cfg, None).unwrap();
    let measurements = parse_measurements(&m.to_string()).unwrap();
    let mut source = Simulated {
        key: SimulationSigningKey::from_bytes(&kp.serialize_der()).unwrap(),
        measurements: measurements.clone(),
    };
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let target = Target::new(root, None);
    let http = provision::http::Manager::new(&url, &ca, None).unwrap();

    let (mut issuance, mut launcher) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        // Issuance alone: everything but the two requests is prepared outside the timing.
        let key = generate_key(KeySpec::Ec { curve: 256 }).unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "bench");
        let csr_kp = rcgen::KeyPair::try_from(key.pkcs8.as_slice()).unwrap();
        let csr = p.serialize_request(&csr_kp).unwrap().pem().unwrap();
        let t0 = Instant::now();
        let (_, n) = http
            .request("POST", "/v1/attestation/nonce", Some(&json!({})))
            .ok()
            .unwrap();
        let t_nonce = t0.elapsed();
        let nonce_hex = serde_json::from_slice::<serde_json::Value>(&n).unwrap()["nonce"]
            .as_str()
            .unwrap()
            .to_string();
        let ev = produce(
            &sim_key,
            &Document {
                timestamp_ms: cloak_manager::now_ms() as u64,
                measurements: measurements.clone(),
                user_data: None,
                nonce: Some(hex::decode(&nonce_hex).unwrap()),
                public_key: Some(key.spki.clone()),
            },
        )
        .unwrap();
        use base64::Engine;
        let body = json!({"app_id": app.app_id, "csr": csr, "nonce": nonce_hex,
                          "evidence": base64::engine::general_purpose::STANDARD.encode(ev)});
        let t1 = Instant::now();
        let (status, _) = http
            .request("POST", "/v1/certificates", Some(&body))
            .ok()
            .unwrap();
        assert_eq!(status, 201);
        issuance.push(t_nonce + t1.elapsed());

        let t = Instant::now();
        provision::provision(&cfg, &client, &mut source, &target).unwrap();
        launcher.push(t.elapsed());
    }
    let (mi, ml) = (median(&mut issuance), median(&mut launcher));
    let overhead = ms(ml) - ms(mi);
    println!("| case (RUNS={runs}) | median ms | p90 ms |");
    println!("|---|---|---|");
    println!(
        "| manager issuance (nonce + certificate, the ceiling) | {:.1} | {:.1} |",
        ms(mi),
        ms(p90(&mut issuance))
    );
    println!(
        "| launcher start-up (EC P-256, simulated, incl. config fetch) | {:.1} | {:.1} |",
        ms(ml),
        ms(p90(&mut launcher))
    );
    println!();
    println!(
        "launcher overhead beyond issuance: {overhead:.1} ms (goal <= 50 ms: {})",
        if overhead <= 50.0 { "met" } else { "NOT met" }
    );
    let mut rsa = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        generate_key(KeySpec::Rsa { bits: 3072 }).unwrap();
        rsa.push(t.elapsed());
    }
    println!(
        "RSA-3072 key generation: median {:.0} ms of 5 (max {:.0} ms)",
        ms(median(&mut rsa)),
        ms(*rsa.iter().max().unwrap())
    );
}
