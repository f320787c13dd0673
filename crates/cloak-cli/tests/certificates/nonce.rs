//! `POST /v1/attestation/nonce` is unauthenticated: each client address gets a bounded number a
//! minute (counted in the database, so every replica enforces the same budget), and the number of
//! unexpired nonces is capped; both refusals are 429 with Retry-After.

use super::*;

#[test]
fn nonces_are_rate_limited_per_client_address_and_capped_overall() {
    let now: i64 = 1_780_000_000; // 40 s into its minute: the window ends at now + 20
    let s = Server::start_with(false, now, |st| {
        st.nonce_rate_per_minute = Some(5);
        st.max_outstanding_nonces = Some(8);
        // The client address comes from the proxy's X-Forwarded-For entry.
        st.trust_forwarded_for = Some(true);
    });
    let http = reqwest::blocking::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&s.ca).unwrap()])
        .build()
        .unwrap();
    let ask = |from: &str| -> (u16, Option<String>, Value) {
        let r = http
            .post(format!("{}/v1/attestation/nonce", s.url))
            .header("X-Forwarded-For", from)
            .json(&json!({}))
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        (status, retry, r.json().unwrap())
    };
    for i in 0..5 {
        let (status, _, body) = ask("192.0.2.1");
        assert_eq!(status, 200, "nonce {i}: {body}");
    }
    // The sixth from the same address in the same minute.
    let (status, retry, body) = ask("192.0.2.1");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["type"], "rate_limited");
    assert!(
        body["detail"].as_str().unwrap().contains("192.0.2.1"),
        "{body}"
    );
    assert_eq!(retry.as_deref(), Some("20"));
    // Another address has its own budget, until the overall cap (8 outstanding) is reached.
    for i in 0..3 {
        let (status, _, body) = ask("192.0.2.2");
        assert_eq!(status, 200, "nonce {i}: {body}");
    }
    let (status, retry, body) = ask("192.0.2.2");
    assert_eq!(status, 429, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("outstanding"),
        "{body}"
    );
    assert_eq!(retry.as_deref(), Some("300"));
    // A new minute resets the per-address count, but the 8 nonces are still outstanding.
    s.clock.0.store(now + 21, Ordering::SeqCst);
    let (status, _, body) = ask("192.0.2.3");
    assert_eq!(status, 429, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("outstanding"),
        "{body}"
    );
    // Once they expire (5 minutes), nonces are handed out again, also to the first address.
    s.clock.0.store(now + 301, Ordering::SeqCst);
    let (status, _, body) = ask("192.0.2.1");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["nonce"].as_str().unwrap().len(), 64);

    // An IPv6 host holds a whole /64: its addresses share one budget (else one host would
    // have 2^64 budgets and could take every outstanding nonce, starving all launchers).
    for i in 1..=5 {
        let (status, _, body) = ask(&format!("2001:db8:1:2::{i:x}"));
        assert_eq!(status, 200, "nonce {i}: {body}");
    }
    let (status, _, body) = ask("2001:db8:1:2:ffff:ffff:ffff:ffff");
    assert_eq!(status, 429, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("2001:db8:1:2::/64"),
        "{body}"
    );
    let (status, _, body) = ask("2001:db8:1:3::1");
    assert_eq!(status, 200, "another /64: {body}");
}

/// `POST /v1/certificates` is unauthenticated too. Refusals decided before a nonce of this
/// manager was consumed (unknown, expired or reused nonces, malformed evidence) leave no
/// certificate record and no audit record: otherwise anyone knowing an app id (it is in the
/// image) could grow the database and the account's audit chain at line rate. Requests
/// without a nonce (apps whose policy allows that) share the per-address budget of nonces.
#[test]
fn certificate_requests_without_a_fresh_nonce_leave_no_record_and_nonce_less_ones_are_rate_limited()
{
    let now: i64 = 1_780_000_000; // 40 s into its minute
    let s = Server::start_with(false, now, |st| st.nonce_rate_per_minute = Some(5));
    let admin = s.admin();
    let anon = s.anonymous();
    let app: App = admin
        .post(
            "/v1/apps",
            &json!({"name": "flooded", "input_image_name": "r/in", "output_image_name": "r/out"}),
        )
        .unwrap();
    for i in 0..20u8 {
        let body = json!({"app_id": app.app_id, "evidence": b64(b"junk"),
                          "nonce": hex::encode([i; 32])});
        let (status, why) = refusal(anon.post("/v1/certificates", &body));
        assert_eq!(status, 403, "{why}");
        assert!(why.starts_with("nonce_unknown:"), "{why}");
    }
    let audited = |admin: &Client| -> usize {
        let audit: Value = admin
            .get("/v1/audit?action=Certificate%20Requested%20by%20Application&limit=100")
            .unwrap();
        audit["items"].as_array().unwrap().len()
    };
    assert_eq!(audited(&admin), 0);

    let open: App = admin
        .post(
            "/v1/apps",
            &json!({"name": "no-nonce", "input_image_name": "r/in2", "output_image_name": "r/out2",
                    "certificate_policy": {"require_nonce": false}}),
        )
        .unwrap();
    let body = json!({"app_id": open.app_id, "evidence": b64(b"junk")});
    for i in 0..5 {
        let (status, why) = refusal(anon.post("/v1/certificates", &body));
        assert_ne!(status, 429, "request {i}: {why}");
    }
    let (status, why) = refusal(anon.post("/v1/certificates", &body));
    assert_eq!(status, 429, "{why}");
    assert!(why.starts_with("rate_limited:"), "{why}");
    // A new minute, a new budget.
    s.clock.0.store(now + 21, Ordering::SeqCst);
    let (status, why) = refusal(anon.post("/v1/certificates", &body));
    assert_ne!(status, 429, "{why}");
}
