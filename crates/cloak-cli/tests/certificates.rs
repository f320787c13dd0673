//! Attested certificate issuance over real HTTP: the manager runs in-process on a real port with
//! an injected clock (fixed inside each vector's window; no production flag changes time), on
//! SQLite and on a real PostgreSQL.

#[path = "certificates/collateral.rs"]
mod collateral;
mod common;
#[path = "certificates/crl.rs"]
mod crl;
#[path = "certificates/keys.rs"]
mod keys;
#[path = "certificates/nonce.rs"]
mod nonce;
#[path = "certificates/sgx.rs"]
mod sgx;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use cloak_api::{App, Build, Client, ClientError, Task};
use cloak_attest::simulated::{produce, Document, SimulationSigningKey};
use cloak_attest::Measurements;
use cloak_manager::config::Settings;
use cloak_manager::Config;
use common::postgres::Postgres;
use serde_json::{json, Value};

const ADMIN_PASSWORD: &str = "admin-password-for-tests-1";

#[derive(Debug)]
struct TestClock(AtomicI64);

impl cloak_manager::Clock for TestClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Server {
    url: String,
    /// The manager's TLS certificate (PEM).
    ca: Vec<u8>,
    clock: Arc<TestClock>,
    dir: tempfile::TempDir,
    /// The database (a PostgreSQL URL, or the SQLite URL in the data dir).
    database_url: String,
    sim_key: SimulationSigningKey,
}

impl Server {
    fn start(postgres: bool, now: i64) -> Server {
        Server::start_with(postgres, now, |_| {})
    }

    /// [`Server::start`] with settings changed by `tweak` (e.g. a PCCS URL).
    fn start_with(postgres: bool, now: i64, tweak: impl FnOnce(&mut Settings)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let pw = dir.path().join("admin-password");
        std::fs::write(&pw, ADMIN_PASSWORD).unwrap();
        // The launchers' simulation key (P-256); the manager gets its public half.
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let sim_key = SimulationSigningKey::from_bytes(&kp.serialize_der()).unwrap();
        let sim_pub = dir.path().join("simulation.pub");
        std::fs::write(&sim_pub, sim_key.public_sec1()).unwrap();
        let mut settings = Settings {
            data_dir: Some(data),
            database_url: postgres.then(|| Postgres::shared().database()),
            admin_user: Some("admin".into()),
            admin_password_file: Some(pw),
            allow_simulated_attestation: Some(true),
            simulation_public_key: Some(sim_pub),
            ..Default::default()
        };
        tweak(&mut settings);
        let config = Config::resolve(settings).unwrap();
        config.prepare_data_dir().unwrap();
        let clock = Arc::new(TestClock(AtomicI64::new(now)));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = rt
            .block_on(cloak_manager::server::prepare(
                config.clone(),
                clock.clone(),
            ))
            .unwrap();
        let (tls, _) = cloak_manager::server::tls_config(&config).unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            rt.block_on(cloak_manager::server::serve(
                state,
                listener,
                Some(tls),
                std::future::pending(),
            ))
        });
        Server {
            url: format!("https://{addr}"),
            ca: std::fs::read(config.data_dir.join("tls.crt")).unwrap(),
            clock,
            dir,
            database_url: config.database_url.clone(),
            sim_key,
        }
    }

    fn admin(&self) -> Client {
        let mut c = Client::new(&self.url, Some(&self.ca)).unwrap();
        c.login("admin", ADMIN_PASSWORD).unwrap();
        c
    }

    fn anonymous(&self) -> Client {
        Client::new(&self.url, Some(&self.ca)).unwrap()
    }
}

fn refusal(r: Result<Value, ClientError>) -> (u16, String) {
    match r {
        Ok(v) => panic!("unexpectedly issued: {v}"),
        Err(ClientError::Api {
            status,
            kind,
            detail,
            ..
        }) => (status, format!("{kind}: {detail}")),
        Err(e) => panic!("{e}"),
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A CSR for a fresh P-256 key with `cn`; returns (CSR PEM, SPKI DER).
fn csr(cn: &str) -> (String, Vec<u8>) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let req = params.serialize_request(&kp).unwrap();
    (
        req.pem().unwrap(),
        rcgen::PublicKeyData::subject_public_key_info(&kp),
    )
}

fn approve(admin: &Client, build: &Build) {
    let t: Task = admin
        .patch(
            &format!("/v1/tasks/{}", build.task_id),
            &json!({"status": "APPROVED"}),
        )
        .unwrap();
    assert_eq!(t.status.status, "SUCCESS");
}

/// `openssl verify` of an issued leaf against the chain served at GET /v1/ca.
fn openssl_verifies(dir: &Path, chain: &Value, leaf: &str, at: i64) {
    std::fs::write(dir.join("root.pem"), chain["root"].as_str().unwrap()).unwrap();
    std::fs::write(dir.join("chain.pem"), chain["chain"].as_str().unwrap()).unwrap();
    std::fs::write(dir.join("leaf.pem"), leaf).unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-attime", &at.to_string(), "-CAfile"])
        .arg(dir.join("root.pem"))
        .arg("-untrusted")
        .arg(dir.join("chain.pem"))
        .arg(dir.join("leaf.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

fn simulated_flow(postgres: bool) {
    let now = 1_780_000_000;
    let s = Server::start(postgres, now);
    let admin = s.admin();
    let app: App = admin
        .post(
            "/v1/apps",
            &json!({"name": "nitro-sim", "input_image_name": "r/in", "output_image_name": "r/out"}),
        )
        .unwrap();
    let pcr = |b: u8| vec![b; 48];
    let build: Build = admin
        .post(
            "/v1/builds",
            &json!({"app_id": app.app_id,
                    "docker_info": {"docker_image_name": "r/out", "docker_version": "1"},
                    "attributes": {"nitro_enclave": {"pcr0": hex::encode(pcr(0xa0)), "pcr1": hex::encode(pcr(0xa1)), "pcr2": hex::encode(pcr(0xa2))}},
                    "advanced_settings": {"certificates": [{"issuer": "MANAGER_CA", "subject": "nitro-app", "sans": ["app.example.com"]}]}}),
        )
        .unwrap();
    let evidence = |pcr0: u8, nonce: &[u8], spki: &[u8], at: i64| -> String {
        let mut pcrs = std::collections::BTreeMap::new();
        pcrs.insert(0u16, pcr(pcr0));
        pcrs.insert(1, pcr(0xa1));
        pcrs.insert(2, pcr(0xa2));
        b64(&produce(
            &s.sim_key,
            &Document {
                timestamp_ms: at as u64 * 1000,
                measurements: Measurements::Pcrs(pcrs),
                user_data: None,
                nonce: Some(nonce.to_vec()),
                public_key: Some(spki.to_vec()),
            },
        )
        .unwrap())
    };
    let anon = s.anonymous();
    let nonce = || -> Vec<u8> {
        let n: Value = anon.post("/v1/attestation/nonce", &json!({})).unwrap();
        hex::decode(n["nonce"].as_str().unwrap()).unwrap()
    };
    let request = |csr: &str, ev: String, n: &[u8]| -> Result<Value, ClientError> {
        anon.post(
            "/v1/certificates",
            &json!({"app_id": app.app_id, "csr": csr, "evidence": ev, "nonce": hex::encode(n)}),
        )
    };
    let (csr_pem, spki) = csr("nitro-app");

    // Before approval: refused, with the reason and the record.
    let n = nonce();
    let (status, why) = refusal(request(&csr_pem, evidence(0xa0, &n, &spki, now), &n));
    assert_eq!(status, 403);
    assert!(
        why.starts_with("not_whitelisted:") && why.contains(&build.task_id),
        "{why}"
    );

    approve(&admin, &build);
    let n = nonce();
    let issued: Value = request(&csr_pem, evidence(0xa0, &n, &spki, now), &n).unwrap();
    assert_eq!(issued["status"], "ISSUED");
    assert_eq!(issued["simulated"], true);
    assert!(issued["detail"].as_str().unwrap().contains("SIMULATED"));
    let leaf = issued["certificate"].as_str().unwrap();
    let chain: Value = anon.get("/v1/ca").unwrap();
    openssl_verifies(s.dir.path(), &chain, leaf, now);
    // The evidence extension parses back to the claims, marked simulated, with the build id.
    let embedded = cloak_attest::extension::decode_certificate(&pem_to_der(leaf)).unwrap();
    assert_eq!(embedded.build_id, build.build_id);
    assert!(embedded.claims.simulated);
    assert_eq!(embedded.claims.nonce.as_deref(), Some(n.as_slice()));
    let rec: Value = admin
        .get(&format!(
            "/v1/certificates/{}",
            issued["certificate_id"].as_str().unwrap()
        ))
        .unwrap();
    assert_eq!(rec["status"], "ISSUED");

    // Replay: the same nonce again.
    let (_, why) = refusal(request(&csr_pem, evidence(0xa0, &n, &spki, now), &n));
    assert!(why.starts_with("nonce_reused:"), "{why}");
    // An unknown nonce, and an expired one.
    let fake = [7u8; 32];
    let (_, why) = refusal(request(&csr_pem, evidence(0xa0, &fake, &spki, now), &fake));
    assert!(why.starts_with("nonce_unknown:"), "{why}");
    let n = nonce();
    s.clock.0.store(now + 301, Ordering::SeqCst);
    let (_, why) = refusal(request(&csr_pem, evidence(0xa0, &n, &spki, now + 301), &n));
    assert!(why.starts_with("nonce_expired:"), "{why}");
    s.clock.0.store(now, Ordering::SeqCst);
    // A CSR whose key is not the one bound in the evidence.
    let (other_csr, _) = csr("nitro-app");
    let n = nonce();
    let (_, why) = refusal(request(&other_csr, evidence(0xa0, &n, &spki, now), &n));
    assert!(why.starts_with("key_not_bound:"), "{why}");
    // A subject the build does not name.
    let (bad_cn, bad_spki) = csr("someone-else");
    let n = nonce();
    let (_, why) = refusal(request(&bad_cn, evidence(0xa0, &n, &bad_spki, now), &n));
    assert!(why.starts_with("subject_not_allowed:"), "{why}");
    // Another PCR0.
    let n = nonce();
    let (_, why) = refusal(request(&csr_pem, evidence(0xee, &n, &spki, now), &n));
    assert!(why.starts_with("unknown_measurement:"), "{why}");
    // Old evidence.
    let n = nonce();
    let (_, why) = refusal(request(&csr_pem, evidence(0xa0, &n, &spki, now - 3600), &n));
    assert!(why.starts_with("evidence_too_old:"), "{why}");
    // The dry run says the same without using the nonce.
    let n = nonce();
    let dry: Value = admin
        .post(
            "/v1/attestation/evaluate",
            &json!({"app_id": app.app_id, "csr": csr_pem, "evidence": evidence(0xa0, &n, &spki, now), "nonce": hex::encode(&n)}),
        )
        .unwrap();
    assert_eq!(dry["verdict"], "ACCEPTED", "{dry}");
    // After revocation: refused.
    let _: Build = admin
        .post(
            &format!("/v1/builds/{}/revoke", build.build_id),
            &json!({"reason": "test revocation"}),
        )
        .unwrap();
    let (_, why) = refusal(request(&csr_pem, evidence(0xa0, &n, &spki, now), &n));
    assert!(
        why.starts_with("revoked:") && why.contains("test revocation"),
        "{why}"
    );
    // Every attempt that got past the nonce is audited; the reused, unknown and expired
    // nonces above are not (anyone can send those: see nonce.rs).
    let audit: Value = admin
        .get("/v1/audit?action=Certificate%20Requested%20by%20Application&limit=100")
        .unwrap();
    assert_eq!(audit["items"].as_array().unwrap().len(), 7);
}

#[test]
fn simulated_evidence_gets_a_certificate_only_for_a_whitelisted_build_sqlite() {
    simulated_flow(false);
}

#[test]
fn simulated_evidence_gets_a_certificate_only_for_a_whitelisted_build_postgres() {
    simulated_flow(true);
}

#[test]
fn simulated_evidence_is_refused_unless_the_manager_allows_it() {
    // Simulation is off by default: the flag without the key, and the key without the flag.
    let err = Config::resolve(Settings {
        allow_simulated_attestation: Some(true),
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("--simulation-public-key"), "{err}");
    let c = Config::resolve(Settings::default()).unwrap();
    assert!(!c.allow_simulated_attestation);
}

/// A real Nitro document (nitro-attest's fixture, RSA public_key, no nonce) at its own time.
fn real_nitro_document(postgres: bool) {
    let doc = sgx::vector("nitro-attestation/nitro_attest_attestation.cose");
    let at = 1_736_179_625 + 5;
    let claims = cloak_attest::verify(
        &doc,
        &cloak_attest::Input {
            at: cloak_attest::At::Time(at as u64),
            collateral: None,
            policy: &cloak_attest::Policy::default(),
            simulation_key: None,
        },
    )
    .unwrap();
    let Measurements::Pcrs(pcrs) = &claims.measurements else {
        panic!()
    };
    let s = Server::start(postgres, at);
    let admin = s.admin();
    let app: App = admin
        .post(
            "/v1/apps",
            &json!({"name": "nitro-real", "input_image_name": "r/in", "output_image_name": "r/out",
                    "certificate_policy": {"require_nonce": false}}),
        )
        .unwrap();
    let build: Build = admin
        .post(
            "/v1/builds",
            &json!({"app_id": app.app_id,
                    "docker_info": {"docker_image_name": "r/out", "docker_version": "1"},
                    "attributes": {"nitro_enclave": {"pcr0": hex::encode(&pcrs[&0]), "pcr1": hex::encode(&pcrs[&1]), "pcr2": hex::encode(&pcrs[&2])}},
                    "advanced_settings": {"certificates": [{"subject": "enclave"}]}}),
        )
        .unwrap();
    let anon = s.anonymous();
    // No CSR: the certificate is for the document's own public_key.
    let body = json!({"app_id": app.app_id, "evidence": b64(&doc)});
    let (_, why) = refusal(anon.post("/v1/certificates", &body));
    assert!(why.starts_with("not_whitelisted:"), "{why}");
    approve(&admin, &build);
    let issued: Value = anon.post("/v1/certificates", &body).unwrap();
    assert_eq!(issued["tee"], "nitro");
    assert_eq!(issued["simulated"], false);
    let chain: Value = anon.get("/v1/ca").unwrap();
    openssl_verifies(
        s.dir.path(),
        &chain,
        issued["certificate"].as_str().unwrap(),
        at,
    );
    let embedded = cloak_attest::extension::decode_certificate(&pem_to_der(
        issued["certificate"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(embedded.claims.measurements, claims.measurements);
    assert_eq!(embedded.evidence.as_deref(), Some(doc.as_slice()));
    // A second later than the leaf allows, or far past the document's age: refused with the time.
    s.clock.0.store(at + 3600, Ordering::SeqCst);
    let (_, why) = refusal(anon.post("/v1/certificates", &body));
    assert!(
        why.starts_with("evidence_too_old:") || why.starts_with("certificate_expired:"),
        "{why}"
    );
    // The app's default policy wants a nonce, which a static document cannot bind.
    s.clock.0.store(at, Ordering::SeqCst);
    let strict: App = admin
        .post(
            "/v1/apps",
            &json!({"name": "strict", "input_image_name": "r/in", "output_image_name": "r/out"}),
        )
        .unwrap();
    let (_, why) = refusal(anon.post(
        "/v1/certificates",
        &json!({"app_id": strict.app_id, "evidence": b64(&doc)}),
    ));
    assert!(why.starts_with("nonce_required:"), "{why}");
}

#[test]
fn a_real_nitro_document_gets_a_certificate_once_whitelisted_sqlite() {
    real_nitro_document(false);
}

#[test]
fn a_real_nitro_document_gets_a_certificate_once_whitelisted_postgres() {
    real_nitro_document(true);
}
