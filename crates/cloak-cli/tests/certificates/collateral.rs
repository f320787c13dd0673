//! DCAP collateral from a PCCS: a fake PCCS (a small HTTP server here, serving the vector's
//! collateral on Intel's v4 paths, then answering 500) shows that the cached collateral keeps
//! issuance going through the outage, that a refresh is attempted once it is due, and that
//! issuance is refused naming the expired item once the cache is past its nextUpdate. Then
//! `cloak manager collateral import` loads the same collateral into a manager without a PCCS.

use super::sgx::{collateral, gramine, gramine_app, vector, RATLS_AT};
use super::*;
use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize};

struct FakePccs {
    url: String,
    failing: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
    answers: Arc<std::sync::Mutex<Answers>>,
}

/// Percent-encodes everything but unreserved characters (issuer chain headers).
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What a fake PCCS answers: the bodies and issuer-chain headers of one collateral.
struct Answers {
    pck_crl: Vec<u8>,
    tcb: String,
    qe: String,
    pck_chain: String,
    tcb_chain: String,
    qe_chain: String,
    root_crl_hex: String,
}

impl Answers {
    fn of(col: &Value) -> Answers {
        let s = |k: &str| col[k].as_str().unwrap().to_string();
        Answers {
            pck_crl: hex::decode(s("pck_crl")).unwrap(),
            tcb: format!(
                r#"{{"tcbInfo":{},"signature":"{}"}}"#,
                s("tcb_info"),
                s("tcb_info_signature")
            ),
            qe: format!(
                r#"{{"enclaveIdentity":{},"signature":"{}"}}"#,
                s("qe_identity"),
                s("qe_identity_signature")
            ),
            pck_chain: url_encode(&s("pck_crl_issuer_chain")),
            tcb_chain: url_encode(&s("tcb_info_issuer_chain")),
            qe_chain: url_encode(&s("qe_identity_issuer_chain")),
            root_crl_hex: s("root_ca_crl"),
        }
    }
}

impl FakePccs {
    /// Serves `col` (QuoteCollateralV3 JSON) as a PCCS does.
    fn start(col: &Value) -> FakePccs {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let failing = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let answers = Arc::new(std::sync::Mutex::new(Answers::of(col)));
        let (f, n, served) = (failing.clone(), requests.clone(), answers.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                n.fetch_add(1, Ordering::SeqCst);
                let a = served.lock().unwrap();
                let path = line.split(' ').nth(1).unwrap_or("").to_ascii_lowercase();
                let (status, header, body): (&str, String, Vec<u8>) = if f.load(Ordering::SeqCst) {
                    (
                        "500 Internal Server Error",
                        String::new(),
                        b"PCCS is down".to_vec(),
                    )
                } else if path.starts_with("/sgx/certification/v4/pckcrl?ca=platform") {
                    (
                        "200 OK",
                        format!("SGX-PCK-CRL-Issuer-Chain: {}\r\n", a.pck_chain),
                        a.pck_crl.clone(),
                    )
                } else if path.starts_with("/sgx/certification/v4/tcb?fmspc=00606a000000") {
                    (
                        "200 OK",
                        format!("TCB-Info-Issuer-Chain: {}\r\n", a.tcb_chain),
                        a.tcb.clone().into_bytes(),
                    )
                } else if path.starts_with("/sgx/certification/v4/qe/identity") {
                    (
                        "200 OK",
                        format!("SGX-Enclave-Identity-Issuer-Chain: {}\r\n", a.qe_chain),
                        a.qe.clone().into_bytes(),
                    )
                } else if path == "/sgx/certification/v4/rootcacrl" {
                    ("200 OK", String::new(), a.root_crl_hex.clone().into_bytes())
                } else {
                    ("404 Not Found", String::new(), Vec::new())
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\n{header}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(&body);
            }
        });
        FakePccs {
            url,
            failing,
            requests,
            answers,
        }
    }

    /// From now on answers `col`.
    fn serve(&self, col: &Value) {
        *self.answers.lock().unwrap() = Answers::of(col);
    }

    fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// The earliest expiry of the vector's collateral and the item it belongs to.
fn earliest_expiry() -> (i64, String) {
    let col =
        cloak_attest::Collateral::from_json(&vector("sgx-dcap/col_quotev3_0825.json")).unwrap();
    let d = col
        .validity()
        .unwrap()
        .into_iter()
        .min_by_key(|d| d.not_after)
        .unwrap();
    (d.not_after as i64, d.item)
}

fn pccs_flow(postgres: bool) {
    let col = collateral("sgx-dcap/col_quotev3_0825.json");
    let pccs = FakePccs::start(&col);
    let (der, claims) = gramine();
    let pccs_url = pccs.url.clone();
    let s = Server::start_with(postgres, RATLS_AT, |st| st.pccs_url = Some(pccs_url));
    let admin = s.admin();
    let anon = s.anonymous();
    let (app, build) = gramine_app(&admin, "pccs", &claims);
    approve(&admin, &build);
    // No collateral in the request: the manager fetches it for the quote's FMSPC and PCK CA.
    let body = json!({"app_id": app.app_id, "evidence": b64(&der)});
    let issued: Value = anon.post("/v1/certificates", &body).unwrap();
    assert_eq!(issued["status"], "ISSUED", "{issued}");
    let fetched = pccs.count();
    assert_eq!(fetched, 4, "pckcrl, tcb, qe/identity, rootcacrl");

    // The PCCS goes down: the cached collateral serves, without asking it while fresh.
    pccs.failing.store(true, Ordering::SeqCst);
    let issued: Value = anon.post("/v1/certificates", &body).unwrap();
    assert_eq!(issued["status"], "ISSUED", "{issued}");
    assert_eq!(pccs.count(), fetched);

    // Past half its life the cache is due for a refresh: the PCCS is asked, fails, and the
    // cached collateral still serves until its nextUpdate.
    let (not_after, item) = earliest_expiry();
    s.clock.0.store(not_after, Ordering::SeqCst);
    let issued: Value = anon.post("/v1/certificates", &body).unwrap();
    assert_eq!(issued["status"], "ISSUED", "{issued}");
    assert!(pccs.count() > fetched, "a due refresh asks the PCCS");

    // One second later the cached collateral has expired: refused, naming the item and time.
    s.clock.0.store(not_after + 1, Ordering::SeqCst);
    let (status, why) = refusal(anon.post("/v1/certificates", &body));
    assert_eq!(status, 403);
    // (The README's window ends at 2025-09-14T04:36:46Z: that item's nextUpdate.)
    assert_eq!(not_after, 1_757_824_606);
    assert!(
        why.starts_with("collateral_expired:")
            && why.contains(&item)
            && why.contains("2025-09-14T04:36:46Z"),
        "{why}"
    );

    // A manager without a PCCS and without cached collateral says what to do.
    let bare = Server::start(postgres, RATLS_AT);
    let admin = bare.admin();
    let (app, build) = gramine_app(&admin, "offline", &claims);
    approve(&admin, &build);
    let body = json!({"app_id": app.app_id, "evidence": b64(&der)});
    let (status, why) = refusal(bare.anonymous().post("/v1/certificates", &body));
    assert_eq!(status, 503);
    assert!(
        why.starts_with("collateral_unavailable:") && why.contains("collateral import"),
        "{why}"
    );
    // The operator imports the collateral offline; issuance works without a PCCS.
    let dir = bare.dir.path().join("collateral");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("00606a000000.json"),
        vector("sgx-dcap/col_quotev3_0825.json"),
    )
    .unwrap();
    let mut import = Command::new(env!("CARGO_BIN_EXE_cloak"));
    import
        .args([
            "manager",
            "collateral",
            "import",
            "--output",
            "json",
            "--data-dir",
        ])
        .arg(bare.dir.path().join("data"));
    if postgres {
        import.arg("--database-url").arg(&bare.database_url);
    }
    let out = import.arg(&dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report[0]["key"], "sgx:00606a000000:platform", "{report}");
    assert_eq!(report[0]["stored"], true);
    let issued: Value = bare.anonymous().post("/v1/certificates", &body).unwrap();
    assert_eq!(issued["status"], "ISSUED", "{issued}");
    // A file that is not collateral is refused, naming it.
    std::fs::write(dir.join("zz-broken.json"), b"{}").unwrap();
    let mut again = Command::new(env!("CARGO_BIN_EXE_cloak"));
    again
        .args(["manager", "collateral", "import", "--data-dir"])
        .arg(bare.dir.path().join("data"));
    if postgres {
        again.arg("--database-url").arg(&bare.database_url);
    }
    let out = again.arg(&dir).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zz-broken.json"), "{err}");
}

#[test]
fn cached_collateral_carries_issuance_through_a_pccs_outage_until_its_next_update_sqlite() {
    pccs_flow(false);
}

#[test]
fn cached_collateral_carries_issuance_through_a_pccs_outage_until_its_next_update_postgres() {
    pccs_flow(true);
}

/// A hostile PCCS: every answer is an endless body (no Content-Length, 64 KiB at a time, then
/// silence with the connection held open). The manager stops reading at its limit and says so,
/// instead of buffering until the request's time runs out.
#[test]
fn a_pccs_answering_without_end_is_cut_off_at_the_size_limit() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nSGX-PCK-CRL-Issuer-Chain: x\r\n\r\n"
                );
                let chunk = vec![0x30u8; 64 * 1024];
                for _ in 0..64 {
                    if conn.write_all(&chunk).is_err() {
                        return;
                    }
                }
                // Hold the connection: a reader waiting for the end waits for the timeout.
                std::thread::sleep(std::time::Duration::from_secs(120));
            });
        }
    });
    let (der, claims) = gramine();
    let s = Server::start_with(false, RATLS_AT, |st| st.pccs_url = Some(url));
    let admin = s.admin();
    let (app, build) = gramine_app(&admin, "endless-pccs", &claims);
    approve(&admin, &build);
    let body = json!({"app_id": app.app_id, "evidence": b64(&der)});
    let (status, why) = refusal(s.anonymous().post("/v1/certificates", &body));
    assert_eq!(status, 503);
    assert!(
        why.starts_with("collateral_unavailable:") && why.contains("more than 1048576 bytes"),
        "{why}"
    );
}

/// The vector's collateral as Intel would publish it after a TCB recovery: TCB evaluation data
/// number 18 instead of 17 (its signature no longer verifies: a manager verifying with it
/// refuses with bad_signature, which tells which collateral it used).
fn after_a_tcb_recovery() -> Value {
    let mut col = collateral("sgx-dcap/col_quotev3_0825.json");
    let tcb = col["tcb_info"].as_str().unwrap();
    assert!(tcb.contains("\"tcbEvaluationDataNumber\":17,"));
    col["tcb_info"] = Value::String(tcb.replace(
        "\"tcbEvaluationDataNumber\":17,",
        "\"tcbEvaluationDataNumber\":18,",
    ));
    col
}

/// A workload brings genuine collateral older than the manager's own (from before a TCB
/// recovery, still before its nextUpdate): the manager verifies with its own, newer one.
#[test]
fn collateral_older_than_the_managers_own_is_not_used() {
    let (der, claims) = gramine();
    let s = Server::start(false, RATLS_AT);
    let admin = s.admin();
    let (app, build) = gramine_app(&admin, "rollback", &claims);
    approve(&admin, &build);
    let old = collateral("sgx-dcap/col_quotev3_0825.json");
    let body = json!({"app_id": app.app_id, "evidence": b64(&der), "collateral": old});
    // Before the manager knows newer collateral, the request's serves.
    let issued: Value = s.anonymous().post("/v1/certificates", &body).unwrap();
    assert_eq!(issued["status"], "ISSUED", "{issued}");

    let dir = s.dir.path().join("newer");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("00606a000000.json"),
        serde_json::to_vec(&after_a_tcb_recovery()).unwrap(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cloak"))
        .args(["manager", "collateral", "import", "--data-dir"])
        .arg(s.dir.path().join("data"))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, why) = refusal(s.anonymous().post("/v1/certificates", &body));
    assert_eq!(status, 403, "{why}");
    assert!(
        why.starts_with("bad_signature:") && why.contains("TCB info"),
        "the manager's own collateral (evaluation number 18) was not the one used: {why}"
    );
}

/// A PCCS answers older collateral than the manager cached (hostile, or restored from an old
/// backup): the cache keeps the newer one.
#[test]
fn a_pccs_answering_older_collateral_does_not_replace_the_cache() {
    let (der, claims) = gramine();
    let pccs = FakePccs::start(&after_a_tcb_recovery());
    let pccs_url = pccs.url.clone();
    let s = Server::start_with(false, RATLS_AT, |st| st.pccs_url = Some(pccs_url));
    let admin = s.admin();
    let (app, build) = gramine_app(&admin, "pccs-rollback", &claims);
    approve(&admin, &build);
    let body = json!({"app_id": app.app_id, "evidence": b64(&der)});
    let (_, why) = refusal(s.anonymous().post("/v1/certificates", &body));
    assert!(why.starts_with("bad_signature:"), "{why}");
    let fetched = pccs.count();

    // Due for a refresh, the PCCS answers the older (genuine) collateral.
    pccs.serve(&collateral("sgx-dcap/col_quotev3_0825.json"));
    let (not_after, _) = earliest_expiry();
    s.clock.0.store(not_after, Ordering::SeqCst);
    let (_, why) = refusal(s.anonymous().post("/v1/certificates", &body));
    assert!(pccs.count() > fetched, "a due refresh asks the PCCS");
    assert!(
        why.starts_with("bad_signature:") && why.contains("TCB info"),
        "the older collateral replaced the cached one: {why}"
    );
}
