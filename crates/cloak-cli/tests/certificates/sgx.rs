//! SGX evidence end to end: the real Gramine RA-TLS certificate of ../shared/vectors (its quote
//! binds the certificate's own key, so the leaf is issued to that key) and the raw DCAP quote
//! vectors, whose REPORTDATA binds no key of ours ("Hello, world!" and the like): those go
//! through the dry run, POST /v1/attestation/evaluate, which checks everything but the binding
//! when no CSR is given, and refuses the binding when one is.

use super::*;

/// Inside the window of the RA-TLS vector and of automata's quotev3 (2025-08-15T05:08:18Z ..
/// 2025-09-14T04:36:46Z, see ../shared/vectors/sgx-dcap/README.md).
pub const RATLS_AT: i64 = 1_755_234_498 + 60;
/// Inside the window of dcap-qvl's sample quotes (2025-06-19T10:56:11Z .. 2025-07-19T10:01:18Z).
const SAMPLE_AT: i64 = 1_750_330_571 + 60;

/// A vector of cloak-attest's copy of ../shared/vectors (its NOTE.md says where each came from).
pub fn vector(rel: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cloak-attest/tests/vectors")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn collateral(rel: &str) -> Value {
    serde_json::from_slice(&vector(rel)).unwrap()
}

/// The Gramine certificate (DER) and its claims, verified here at `RATLS_AT`.
pub fn gramine() -> (Vec<u8>, cloak_attest::Claims) {
    let der = pem_to_der(&String::from_utf8(vector("sgx-dcap/gramine-cert.pem")).unwrap());
    let col =
        cloak_attest::Collateral::from_json(&vector("sgx-dcap/col_quotev3_0825.json")).unwrap();
    let policy = cloak_attest::Policy {
        allow_debug: true,
        accepted_tcb_statuses: None,
        ..Default::default()
    };
    let claims = cloak_attest::verify(
        &der,
        &cloak_attest::Input {
            at: cloak_attest::At::Time(RATLS_AT as u64),
            collateral: Some(&col),
            policy: &policy,
            simulation_key: None,
        },
    )
    .unwrap();
    (der, claims)
}

fn sgx_ids(claims: &cloak_attest::Claims) -> &cloak_attest::SgxMeasurements {
    match &claims.measurements {
        Measurements::Sgx(m) => m,
        other => panic!("not SGX: {other:?}"),
    }
}

/// An app whose policy takes the vector as it is (a debug enclave, TCB OutOfDate, no nonce: a
/// static certificate cannot bind one) and a debug build with its measurements.
pub fn gramine_app(admin: &Client, name: &str, claims: &cloak_attest::Claims) -> (App, Build) {
    let app: App = admin
        .post(
            "/v1/apps",
            &json!({"name": name, "input_image_name": "r/in", "output_image_name": "r/out",
                    "certificate_policy": {"require_nonce": false, "allow_debug": true,
                                           "allowed_tcb_statuses": ["OutOfDate"]}}),
        )
        .unwrap();
    let m = sgx_ids(claims);
    let build: Build = admin
        .post(
            "/v1/builds",
            &json!({"app_id": app.app_id,
                    "docker_info": {"docker_image_name": "r/out", "docker_version": "1"},
                    "mrenclave": hex::encode(m.mrenclave), "mrsigner": hex::encode(m.mrsigner),
                    "isvprodid": m.isvprodid, "isvsvn": m.isvsvn, "debug": true,
                    "advanced_settings": {"certificates": [{"issuer": "MANAGER_CA", "subject": "ratls-app"}]}}),
        )
        .unwrap();
    (app, build)
}

fn ratls_flow(postgres: bool) {
    let (der, claims) = gramine();
    assert_eq!(
        hex::encode(sgx_ids(&claims).mrenclave),
        "0866e7ca11b9f4efe4bf39b2607f4e1299f111920d96d95719080f01b62b7585"
    );
    let s = Server::start(postgres, RATLS_AT);
    let admin = s.admin();
    let anon = s.anonymous();
    let (app, build) = gramine_app(&admin, "gramine", &claims);
    let col = collateral("sgx-dcap/col_quotev3_0825.json");
    // No CSR: the certificate is for the RA-TLS certificate's own key, which its quote binds.
    let body = json!({"app_id": app.app_id, "evidence": b64(&der), "collateral": col});

    let (status, why) = refusal(anon.post("/v1/certificates", &body));
    assert_eq!(status, 403);
    assert!(
        why.starts_with("not_whitelisted:") && why.contains(&build.task_id),
        "{why}"
    );

    approve(&admin, &build);
    let issued: Value = anon.post("/v1/certificates", &body).unwrap();
    assert_eq!(issued["status"], "ISSUED", "{issued}");
    assert_eq!(issued["tee"], "sgx");
    assert_eq!(issued["simulated"], false);
    assert_eq!(issued["tcb_status"], "OutOfDate");
    assert_eq!(
        issued["advisory_ids"].as_array().unwrap().len(),
        10,
        "{issued}"
    );
    let leaf = issued["certificate"].as_str().unwrap();
    let chain: Value = anon.get("/v1/ca").unwrap();
    openssl_verifies(s.dir.path(), &chain, leaf, RATLS_AT);
    // The leaf certifies the RA-TLS key, and its evidence extension gives the claims back.
    let leaf_der = pem_to_der(leaf);
    let embedded = cloak_attest::extension::decode_certificate(&leaf_der).unwrap();
    assert_eq!(embedded.build_id, build.build_id);
    assert_eq!(embedded.claims.measurements, claims.measurements);
    assert_eq!(embedded.claims.tcb, claims.tcb);
    assert!(embedded.claims.debug && !embedded.claims.simulated);
    assert_eq!(embedded.claims.public_key, claims.public_key);
    let (quote, tcg_claims) = embedded.quote.expect("TCG DICE evidence extension");
    // The embedded quote is the one the RA-TLS certificate carries (its MRENCLAVE at 112).
    assert_eq!(&quote[112..144], &sgx_ids(&claims).mrenclave[..]);
    assert!(!tcg_claims.is_empty());
    assert_eq!(
        spki_of_pem_cert(s.dir.path(), leaf),
        claims.public_key.clone().unwrap()
    );

    // A CSR for another key: the quote binds the certificate's key, not this one.
    let (other_csr, _) = csr("ratls-app");
    let (_, why) = refusal(anon.post(
        "/v1/certificates",
        &json!({"app_id": app.app_id, "csr": other_csr, "evidence": b64(&der), "collateral": col}),
    ));
    assert!(why.starts_with("key_not_bound:"), "{why}");

    // Another MRENCLAVE: an app whose only (whitelisted) build has other measurements.
    let other: App = admin
        .post(
            "/v1/apps",
            &json!({"name": "other-enclave", "input_image_name": "r/in", "output_image_name": "r/out",
                    "certificate_policy": {"require_nonce": false, "allow_debug": true,
                                           "allowed_tcb_statuses": ["OutOfDate"]}}),
        )
        .unwrap();
    let m = sgx_ids(&claims);
    let other_build: Build = admin
        .post(
            "/v1/builds",
            &json!({"app_id": other.app_id,
                    "docker_info": {"docker_image_name": "r/out", "docker_version": "2"},
                    "mrenclave": "ab".repeat(32), "mrsigner": hex::encode(m.mrsigner),
                    "isvprodid": m.isvprodid, "isvsvn": m.isvsvn, "debug": true,
                    "advanced_settings": {"certificates": [{"subject": "ratls-app"}]}}),
        )
        .unwrap();
    approve(&admin, &other_build);
    let (_, why) = refusal(anon.post(
        "/v1/certificates",
        &json!({"app_id": other.app_id, "evidence": b64(&der), "collateral": col}),
    ));
    assert!(
        why.starts_with("unknown_measurement:") && why.contains("0866e7ca"),
        "{why}"
    );

    // After revocation.
    let _: Build = admin
        .post(
            &format!("/v1/builds/{}/revoke", build.build_id),
            &json!({"reason": "ratls revoked"}),
        )
        .unwrap();
    let (_, why) = refusal(anon.post("/v1/certificates", &body));
    assert!(
        why.starts_with("revoked:") && why.contains("ratls revoked"),
        "{why}"
    );
}

/// The SubjectPublicKeyInfo (DER) of a PEM certificate, as OpenSSL reads it.
pub fn spki_of_pem_cert(dir: &Path, pem: &str) -> Vec<u8> {
    let f = dir.join("spki-of.pem");
    std::fs::write(&f, pem).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in {} -noout -pubkey | openssl pkey -pubin -outform DER",
            f.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn gramine_ratls_certificate_gets_a_certificate_once_whitelisted_sqlite() {
    ratls_flow(false);
}

#[test]
fn gramine_ratls_certificate_gets_a_certificate_once_whitelisted_postgres() {
    ratls_flow(true);
}

/// The raw quote vectors bind "Hello, world!" and the like in REPORTDATA, not a key of ours, so
/// they cannot get a certificate: the dry run checks them (TCB policy, debug, measurements) and
/// names the binding it could not check; with a CSR the binding is refused.
#[test]
fn dcap_quote_vectors_through_the_dry_run() {
    let s = Server::start(false, SAMPLE_AT);
    let admin = s.admin();
    let quote = vector("sgx-dcap/sgx_quote");
    let col = collateral("sgx-dcap/sgx_quote_collateral.json");
    let app: App = admin
        .post(
            "/v1/apps",
            &json!({"name": "dcap", "input_image_name": "r/in", "output_image_name": "r/out",
                    "certificate_policy": {"require_nonce": false}}),
        )
        .unwrap();
    let build: Build = admin
        .post(
            "/v1/builds",
            &json!({"app_id": app.app_id,
                    "docker_info": {"docker_image_name": "r/out", "docker_version": "1"},
                    "mrenclave": "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb",
                    "mrsigner": "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6",
                    "isvprodid": 0, "isvsvn": 0,
                    "advanced_settings": {"certificates": [{"subject": "dcap-app"}]}}),
        )
        .unwrap();
    approve(&admin, &build);
    let eval = |ev: &[u8], col: &Value, csr: Option<&str>| -> Value {
        admin
            .post(
                "/v1/attestation/evaluate",
                &json!({"app_id": app.app_id, "evidence": b64(ev), "collateral": col, "csr": csr}),
            )
            .unwrap()
    };
    // The default TCB policy (UpToDate, SWHardeningNeeded) refuses the sample's status, naming it
    // and its advisories.
    let v = eval(&quote, &col, None);
    assert_eq!(v["verdict"], "REJECTED", "{v}");
    assert_eq!(v["reason_code"], "tcb_status", "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("ConfigurationAndSWHardeningNeeded") && detail.contains("INTEL-SA-00289"),
        "{detail}"
    );
    // Accepted once the app allows that status; the binding is named as not checked.
    let _: App = admin
        .patch(
            &format!("/v1/apps/{}", app.app_id),
            &json!({"certificate_policy": {"require_nonce": false,
                    "allowed_tcb_statuses": ["UpToDate", "SWHardeningNeeded", "ConfigurationAndSWHardeningNeeded"]}}),
        )
        .unwrap();
    let v = eval(&quote, &col, None);
    assert_eq!(v["verdict"], "ACCEPTED", "{v}");
    assert_eq!(v["build_id"], build.build_id.as_str());
    assert_eq!(v["tcb_status"], "ConfigurationAndSWHardeningNeeded");
    assert!(
        v["key_binding"]
            .as_str()
            .unwrap()
            .starts_with("not checked"),
        "{v}"
    );
    // With a CSR, its key is not what REPORTDATA holds.
    let (csr_pem, _) = csr("dcap-app");
    let v = eval(&quote, &col, Some(&csr_pem));
    assert_eq!(v["reason_code"], "key_not_bound", "{v}");
    // Issuance refuses without a key, before anything else is decided.
    let (status, why) = refusal(s.anonymous().post(
        "/v1/certificates",
        &json!({"app_id": app.app_id, "evidence": b64(&quote), "collateral": col}),
    ));
    assert_eq!(status, 400);
    assert!(why.starts_with("bad_csr:"), "{why}");
    // The debug quote (automata) is refused as debug.
    let v = eval(&vector("sgx-dcap/automata_quote_sgx_debug.bin"), &col, None);
    assert_eq!(v["reason_code"], "debug_enclave", "{v}");
    // The collateral of another platform does not verify this quote.
    let other_col = collateral("sgx-dcap/col_quotev3_0825.json");
    let v = eval(&quote, &other_col, None);
    assert_eq!(v["verdict"], "REJECTED", "{v}");
    // automata's quotev3 (SWHardeningNeeded) in its own window: verified, but no build has it.
    s.clock.0.store(RATLS_AT, Ordering::SeqCst);
    let hexq = String::from_utf8(vector("sgx-dcap/automata_quotev3.hex")).unwrap();
    let q3 = hex::decode(hexq.trim()).unwrap();
    // (The session expired with the clock's jump: log in again.)
    let v: Value = s
        .admin()
        .post(
            "/v1/attestation/evaluate",
            &json!({"app_id": app.app_id, "evidence": b64(&q3), "collateral": other_col}),
        )
        .unwrap();
    assert_eq!(v["reason_code"], "unknown_measurement", "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("a4f45c39dac622cb1dd32ddb35a52ec92db41d0fa88a1c911c49e59c534f61cd"),
        "{v}"
    );
    assert_eq!(v["tcb_status"], "SWHardeningNeeded");
}
