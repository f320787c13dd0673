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
}
