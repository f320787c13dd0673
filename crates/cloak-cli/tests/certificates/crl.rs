//! `GET /v1/ca/crl`: a CRL signed by the issuing CA that OpenSSL accepts, listing the
//! certificates of revoked builds (and only those), so `openssl verify -crl_check` refuses a
//! revoked build's leaf that it accepted before.

use super::*;

/// GET /v1/ca/crl with `accept`: (content type, body).
fn get_crl(s: &Server, accept: &str) -> (String, Vec<u8>) {
    let http = reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&s.ca).unwrap()])
        .build()
        .unwrap();
    let resp = http
        .get(format!("{}/v1/ca/crl", s.url))
        .header("Accept", accept)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    (ct, resp.bytes().unwrap().to_vec())
}

fn openssl_out(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_crl_lists_the_certificates_of_revoked_builds_and_openssl_accepts_it() {
    let now = 1_780_000_000;
    let s = Server::start(false, now);
    let admin = s.admin();
    let anon = s.anonymous();
    let dir = s.dir.path();
    let app: App = admin
        .post(
            "/v1/apps",
            &json!({"name": "crl", "input_image_name": "r/in", "output_image_name": "r/out",
                    "certificate_policy": {"require_nonce": false}}),
        )
        .unwrap();
    let pcr = |b: u8| vec![b; 48];
    // Two builds; one will be revoked.
    let mut builds = Vec::new();
    let mut leaves = Vec::new();
    for (i, pcr0) in [0xc0u8, 0xc1].into_iter().enumerate() {
        let build: Build = admin
            .post(
                "/v1/builds",
                &json!({"app_id": app.app_id,
                        "docker_info": {"docker_image_name": "r/out", "docker_version": format!("{i}")},
                        "attributes": {"nitro_enclave": {"pcr0": hex::encode(pcr(pcr0)), "pcr1": hex::encode(pcr(1)), "pcr2": hex::encode(pcr(2))}},
                        "advanced_settings": {"certificates": [{"subject": "crl-app"}]}}),
            )
            .unwrap();
        approve(&admin, &build);
        let (csr_pem, spki) = csr("crl-app");
        let mut pcrs = std::collections::BTreeMap::new();
        pcrs.insert(0u16, pcr(pcr0));
        pcrs.insert(1, pcr(1));
        pcrs.insert(2, pcr(2));
        let ev = produce(
            &s.sim_key,
            &Document {
                timestamp_ms: now as u64 * 1000,
                measurements: Measurements::Pcrs(pcrs),
                user_data: None,
                nonce: None,
                public_key: Some(spki),
            },
        )
        .unwrap();
        let issued: Value = anon
            .post(
                "/v1/certificates",
                &json!({"app_id": app.app_id, "csr": csr_pem, "evidence": b64(&ev)}),
            )
            .unwrap();
        let leaf = dir.join(format!("leaf{i}.pem"));
        std::fs::write(&leaf, issued["certificate"].as_str().unwrap()).unwrap();
        builds.push(build);
        leaves.push(leaf);
    }
    let chain: Value = anon.get("/v1/ca").unwrap();
    std::fs::write(dir.join("root.pem"), chain["root"].as_str().unwrap()).unwrap();
    std::fs::write(dir.join("chain.pem"), chain["chain"].as_str().unwrap()).unwrap();
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let serial = |leaf: &Path| -> String {
        let (ok, out) = openssl_out(&["x509", "-in", leaf.to_str().unwrap(), "-noout", "-serial"]);
        assert!(ok, "{out}");
        out.trim()
            .strip_prefix("serial=")
            .unwrap()
            .to_ascii_uppercase()
    };
    // After both lists were issued (the second at now + 10), inside every validity.
    let at = (now + 20).to_string();
    let check_crl = |name: &str| -> String {
        // Signed by the issuing CA: `openssl crl -verify` finds it in the chain.
        let (ok, out) = openssl_out(&[
            "crl",
            "-in",
            &p(name),
            "-CAfile",
            &p("chain.pem"),
            "-noout",
            "-verify",
            "-text",
        ]);
        assert!(ok && out.contains("verify OK"), "{out}");
        out
    };
    let verify_with_crl = |leaf: &Path, crl: &str| -> (bool, String) {
        openssl_out(&[
            "verify",
            "-attime",
            &at,
            "-crl_check",
            "-CRLfile",
            &p(crl),
            "-CAfile",
            &p("root.pem"),
            "-untrusted",
            &p("chain.pem"),
            leaf.to_str().unwrap(),
        ])
    };

    // Before any revocation: an empty list, DER by default and PEM on request.
    let (ct, der) = get_crl(&s, "application/pkix-crl");
    assert_eq!(ct, "application/pkix-crl");
    assert_eq!(der.first(), Some(&0x30));
    std::fs::write(dir.join("crl0.der"), &der).unwrap();
    let (ok, out) = openssl_out(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        &p("crl0.der"),
        "-out",
        &p("crl0.pem"),
    ]);
    assert!(ok, "{out}");
    let text = check_crl("crl0.pem");
    assert!(text.contains("No Revoked Certificates"), "{text}");
    for leaf in &leaves {
        let (ok, out) = verify_with_crl(leaf, "crl0.pem");
        assert!(ok, "{out}");
    }

    // Revoke the first build: its certificate is listed, the other is not.
    let _: Build = admin
        .post(
            &format!("/v1/builds/{}/revoke", builds[0].build_id),
            &json!({"reason": "compromised"}),
        )
        .unwrap();
    s.clock.0.store(now + 10, Ordering::SeqCst);
    let (ct, pem) = get_crl(&s, "application/x-pem-file");
    assert_eq!(ct, "application/x-pem-file");
    assert!(pem.starts_with(b"-----BEGIN X509 CRL-----"));
    std::fs::write(dir.join("crl1.pem"), &pem).unwrap();
    let text = check_crl("crl1.pem");
    let (revoked, kept) = (serial(&leaves[0]), serial(&leaves[1]));
    assert!(
        text.contains(&format!("Serial Number: {revoked}")),
        "{revoked}: {text}"
    );
    assert!(!text.contains(&kept), "{kept}: {text}");
    assert!(text.contains("Cessation Of Operation"), "{text}");
    let (ok, out) = verify_with_crl(&leaves[0], "crl1.pem");
    assert!(!ok && out.contains("revoked"), "{out}");
    let (ok, out) = verify_with_crl(&leaves[1], "crl1.pem");
    assert!(ok, "{out}");
}
