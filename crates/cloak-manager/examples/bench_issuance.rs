//! Certificate issuance under load (run by scripts/bench-issuance.sh): the manager in-process on
//! SQLite with an injected clock inside each vector's window, wrk with 16 connections POSTing
//! /v1/certificates over HTTPS, against the ceiling: the same verification and signing
//! in-process on every core, with no HTTP and no database.
//!
//! Cases: the Gramine RA-TLS certificate (a DCAP quote inside; collateral from the database
//! cache, imported as an operator would) and the real Nitro document of nitro-attest. They are
//! the vectors that bind a key the manager can certify: the raw DCAP quote vectors bind
//! "Hello, world!", so no leaf can be issued for them. Neither binds a nonce (they are static),
//! so the apps set require_nonce false and each request is a full issuance (record + audit).
//!
//! Usage: bench_issuance VECTORS_DIR SECONDS

use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use cloak_api::{App, Build, Client, Task};
use cloak_manager::config::Settings;
use cloak_manager::Config;
use serde_json::{json, Value};

#[derive(Debug)]
struct FixedClock(AtomicI64);

impl cloak_manager::Clock for FixedClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Case {
    name: &'static str,
    evidence: Vec<u8>,
    at: i64,
    collateral: Option<std::path::PathBuf>,
    build: Value,
    policy: Value,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Issuances per second in-process: verification, binding check, extension and signature.
fn ceiling(case: &Case, secs: f64) -> f64 {
    let collateral = case
        .collateral
        .as_ref()
        .map(|p| cloak_attest::Collateral::from_json(&std::fs::read(p).unwrap()).unwrap());
    let policy = cloak_attest::Policy {
        allow_debug: true,
        accepted_tcb_statuses: None,
        ..Default::default()
    };
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let deadline = Instant::now() + std::time::Duration::from_secs_f64(secs);
    let done: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (issuer, collateral, policy) = (&issuer, collateral.as_ref(), &policy);
                s.spawn(move || {
                    let mut n = 0;
                    while Instant::now() < deadline {
                        let claims = cloak_attest::verify(
                            &case.evidence,
                            &cloak_attest::Input {
                                at: cloak_attest::At::Time(case.at as u64),
                                collateral,
                                policy,
                                simulation_key: None,
                            },
                        )
                        .unwrap();
                        let spki = claims.public_key.clone().unwrap();
                        cloak_attest::binding::check(&claims, &spki, None).unwrap();
                        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
                        p.distinguished_name
                            .push(rcgen::DnType::CommonName, "bench");
                        for ext in cloak_attest::extension::encode(&claims, &case.evidence, "bench")
                            .unwrap()
                        {
                            let mut c =
                                rcgen::CustomExtension::from_oid_content(ext.oid_arcs, ext.value);
                            c.set_criticality(false);
                            p.custom_extensions.push(c);
                        }
                        let key = rcgen::SubjectPublicKeyInfo::from_der(&spki).unwrap();
                        std::hint::black_box(p.signed_by(&key, issuer).unwrap());
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    done as f64 / secs
}

/// Starts a manager at `case.at`, registers and approves the build; returns (URL, body).
fn serve(case: &Case, dir: &std::path::Path) -> (String, String) {
    let pw = dir.join("pw");
    std::fs::write(&pw, "bench-admin-password-1").unwrap();
    let config = Config::resolve(Settings {
        data_dir: Some(dir.join("data")),
        admin_user: Some("admin".into()),
        admin_password_file: Some(pw),
        max_connections: Some(16),
        // Nonce-less requests spend the client address's budget, and every wrk connection is
        // 127.0.0.1 under a fixed clock: with the default (60 a minute) the limiter, not
        // issuance, would be measured. The budget is still counted on every request.
        nonce_rate_per_minute: Some(1_000_000),
        ..Default::default()
    })
    .unwrap();
    config.prepare_data_dir().unwrap();
    let clock = Arc::new(FixedClock(AtomicI64::new(case.at)));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let state = rt
        .block_on(cloak_manager::server::prepare(config.clone(), clock))
        .unwrap();
    if let Some(c) = &case.collateral {
        rt.block_on(cloak_manager::collateral::import(&state.db, c, case.at))
            .unwrap();
    }
    let (tls, _) = cloak_manager::server::tls_config(&config).unwrap();
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
    let ca = std::fs::read(config.data_dir.join("tls.crt")).unwrap();
    let mut admin = Client::new(&url, Some(&ca)).unwrap();
    admin.login("admin", "bench-admin-password-1").unwrap();
    let app: App = admin
        .post(
            "/v1/apps",
            &json!({"name": case.name, "input_image_name": "r/in", "output_image_name": "r/out",
                    "certificate_policy": case.policy}),
        )
        .unwrap();
    let mut build = case.build.clone();
    build["app_id"] = json!(app.app_id);
    let build: Build = admin.post("/v1/builds", &build).unwrap();
    let _: Task = admin
        .patch(
            &format!("/v1/tasks/{}", build.task_id),
            &json!({"status": "APPROVED"}),
        )
        .unwrap();
    let body = json!({"app_id": app.app_id, "evidence": b64(&case.evidence)});
    // One request first: it must be issued (and it loads the CA).
    let first: Value = Client::new(&url, Some(&ca))
        .unwrap()
        .post("/v1/certificates", &body)
        .unwrap();
    assert_eq!(first["status"], "ISSUED", "{first}");
    (url, body.to_string())
}

/// wrk: (requests/s, p50 ms, p99 ms, non-2xx).
fn load(url: &str, body: &str, dir: &std::path::Path, secs: u64) -> (f64, f64, f64, u64) {
    let lua = dir.join("post.lua");
    std::fs::write(
        &lua,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [[{body}]]\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new("wrk")
        .args(["-t2", "-c16", "--latency", "-d"])
        .arg(format!("{secs}s"))
        .arg("-s")
        .arg(&lua)
        .arg(format!("{url}/v1/certificates"))
        .output()
        .expect("wrk (scripts/install-deps.sh)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let ms = |v: &str| -> f64 {
        let split = v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len());
        let (num, unit) = v.split_at(split);
        let n: f64 = num.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            _ => f64::NAN,
        }
    };
    let field = |prefix: &str| -> Option<String> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1).map(String::from))
    };
    let rps: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let p50 = field("50%").map_or(f64::NAN, |v| ms(&v));
    let p99 = field("99%").map_or(f64::NAN, |v| ms(&v));
    let non2xx: u64 = text
        .lines()
        .find(|l| l.contains("Non-2xx"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if rps.is_nan() || non2xx > 0 {
        eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    }
    (rps, p50, p99, non2xx)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map_or(f64::NAN, |k| k / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let vectors = std::path::PathBuf::from(
        args.get(1)
            .expect("usage: bench_issuance VECTORS_DIR SECONDS"),
    );
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let pem = std::fs::read_to_string(vectors.join("sgx-dcap/gramine-cert.pem")).unwrap();
    let der = base64::engine::general_purpose::STANDARD
        .decode(
            pem.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    let nitro =
        std::fs::read(vectors.join("nitro-attestation/nitro_attest_attestation.cose")).unwrap();
    let nitro_at = 1_736_179_625 + 5;
    let nitro_claims = cloak_attest::verify(
        &nitro,
        &cloak_attest::Input {
            at: cloak_attest::At::Time(nitro_at as u64),
            collateral: None,
            policy: &cloak_attest::Policy::default(),
            simulation_key: None,
        },
    )
    .unwrap();
    let cloak_attest::Measurements::Pcrs(pcrs) = &nitro_claims.measurements else {
        panic!("the Nitro vector has no PCRs")
    };
    let cases = [
        Case {
            name: "ra-tls-dcap",
            evidence: der,
            at: 1_755_234_498 + 60,
            collateral: Some(vectors.join("sgx-dcap/col_quotev3_0825.json")),
            build: json!({"docker_info": {"docker_image_name": "r/out", "docker_version": "1"},
                "mrenclave": "0866e7ca11b9f4efe4bf39b2607f4e1299f111920d96d95719080f01b62b7585",
                "mrsigner": "adc53501f21ced9b998e37a7a18e061c63e00315045fa57a49c18ef0a30d02ca",
                "isvprodid": 0, "isvsvn": 0, "debug": true,
                "advanced_settings": {"certificates": [{"subject": "bench"}]}}),
            policy: json!({"require_nonce": false, "allow_debug": true,
                           "allowed_tcb_statuses": ["OutOfDate"]}),
        },
        Case {
            name: "nitro",
            evidence: nitro,
            at: nitro_at,
            collateral: None,
            build: json!({"docker_info": {"docker_image_name": "r/out", "docker_version": "1"},
                "attributes": {"nitro_enclave": {"pcr0": hex::encode(&pcrs[&0]),
                    "pcr1": hex::encode(&pcrs[&1]), "pcr2": hex::encode(&pcrs[&2])}},
                "advanced_settings": {"certificates": [{"subject": "bench"}]}}),
            policy: json!({"require_nonce": false}),
        },
    ];
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!("| case | HTTP certs/s (c=16) | p50 (ms) | p99 (ms) | non-2xx | ceiling certs/s in-process ({threads} threads) | HTTP / ceiling |");
    println!("|---|---|---|---|---|---|---|");
    for case in &cases {
        let dir = tempfile::tempdir().unwrap();
        let c = ceiling(case, secs as f64 / 2.0);
        let (url, body) = serve(case, dir.path());
        let (rps, p50, p99, non2xx) = load(&url, &body, dir.path(), secs);
        println!(
            "| {} | {rps:.0} | {p50:.1} | {p99:.1} | {non2xx} | {c:.0} | {:.2} |",
            case.name,
            rps / c
        );
        std::io::stdout().flush().unwrap();
    }
    println!(
        "\npeak RSS of the process (manager, ceiling threads, setup): {:.0} MiB",
        peak_rss_mib()
    );
}
