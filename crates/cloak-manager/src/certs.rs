//! Attested certificate issuance: single-use nonces, evidence verified with `cloak-attest` at the
//! manager's clock, the key bound in the evidence, the measurements matched against a build of
//! the app that is WHITELISTED now, and a short-lived leaf from the manager's CA with the
//! evidence embedded. Every attempt past the nonce is a certificate record (ISSUED or REJECTED,
//! with a stable reason code) and an audit record; refusals before it are answered and logged.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::audit::{self, Actor, Event};
use crate::error::{Error, Result};
use crate::State;
use cloak_api::App;
use cloak_attest::{At, Claims, Measurements, Policy};

/// Nonces live this long.
pub const NONCE_TTL: i64 = 300;
/// Largest evidence accepted (bytes, decoded).
const MAX_EVIDENCE: usize = 64 * 1024;

/// `POST /v1/attestation/nonce` answer.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NonceResponse {
    /// 32 random bytes, hex: bind them in the evidence (see cloak-attest's `binding`).
    pub nonce: String,
    pub expires_at: i64,
}

/// `POST /v1/certificates` and `POST /v1/attestation/evaluate`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    pub app_id: String,
    /// PKCS#10 request (PEM). Optional when the evidence carries the key itself (a Nitro
    /// document's `public_key`, an RA-TLS certificate's key): the certificate is then issued to it.
    #[serde(default)]
    pub csr: Option<String>,
    /// The evidence, base64: a DCAP quote, a Nitro document, an RA-TLS certificate (DER) or
    /// simulated evidence.
    pub evidence: String,
    /// The nonce from `POST /v1/attestation/nonce`, hex.
    #[serde(default)]
    pub nonce: Option<String>,
    /// DCAP collateral (QuoteCollateralV3 JSON) for quotes and RA-TLS certificates; it is
    /// verified against Intel's root like the quote.
    #[serde(default)]
    pub collateral: Option<Value>,
}

/// A certificate record (CCM's Certificate, with the verdict).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CertificateRecord {
    pub certificate_id: String,
    pub app_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// ISSUED or REJECTED.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tee: Option<String>,
    pub simulated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcb_status: Option<String>,
    pub advisory_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<i64>,
    /// The certificate (PEM), when issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// Issuing CA then root (PEM), when issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    pub request_id: String,
    pub created_at: i64,
}

/// `GET /v1/ca`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CaResponse {
    /// Issuing CA then root, PEM.
    pub chain: String,
    pub root: String,
}

/// What the checks decided, before anything is signed.
struct Verdict {
    claims: Claims,
    evidence: Vec<u8>,
    build_id: String,
    /// The key to certify; None only in a dry run without a CSR (binding not checked).
    spki: Option<Vec<u8>>,
    subject: String,
    dns_names: Vec<String>,
    validity: i64,
}

/// A refusal: a stable code and what was expected and found.
struct Refusal {
    code: &'static str,
    detail: String,
    claims: Option<Claims>,
    build_id: Option<String>,
}

fn refuse(code: &'static str, detail: impl Into<String>) -> Refusal {
    Refusal {
        code,
        detail: detail.into(),
        claims: None,
        build_id: None,
    }
}

/// The count of outstanding nonces as last taken from the database, plus what this replica
/// issued since. Counting is a scan of up to `max_outstanding_nonces` index entries, so it is
/// taken at most once a second. The cap may be passed by the requests in flight at once on a
/// replica (they read the same count), and across replicas by what the others issued within
/// that second; each client address is still held to its own rate.
#[derive(Debug, Default)]
pub struct NonceGauge(std::sync::Mutex<Option<Count>>);

#[derive(Debug, Clone, Copy)]
struct Count {
    /// When it was taken, on the monotonic clock and on the manager's (in seconds).
    at: std::time::Instant,
    now: i64,
    n: i64,
}

impl NonceGauge {
    const FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(1);

    /// The count, if taken less than a second ago by both clocks (nonces that expired since
    /// are still in it: near the cap, the count errs towards refusing).
    fn fresh(&self, now: i64) -> Option<i64> {
        let g = self.0.lock().expect("nonce gauge lock");
        g.filter(|c| c.at.elapsed() < Self::FRESH_FOR && (0..1).contains(&(now - c.now)))
            .map(|c| c.n)
    }

    fn counted(&self, now: i64, n: i64) {
        *self.0.lock().expect("nonce gauge lock") = Some(Count {
            at: std::time::Instant::now(),
            now,
            n,
        });
    }

    fn issued(&self) {
        if let Some(c) = self.0.lock().expect("nonce gauge lock").as_mut() {
            c.n += 1;
        }
    }
}

/// Issues a nonce (stored as a hash, single use). The route is unauthenticated, so each client
/// address gets `nonce_rate_per_minute` per fixed minute (counted in the database, so the limit
/// holds across replicas), and at most `max_outstanding_nonces` unexpired nonces exist at once.
///
/// The client's rate row is the one every request of that address updates: it is written last,
/// so that its lock is held for the commit only. Expired nonces and past rate windows are purged
/// by about one request in 64, not by each.
pub async fn nonce(state: &State, client: &str) -> Result<NonceResponse> {
    use rand::RngCore;
    let mut n = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut n);
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    if rand::rngs::OsRng.next_u32().is_multiple_of(64) {
        sqlx::query("DELETE FROM nonces WHERE expires_at < $1")
            .bind(now - NONCE_TTL)
            .execute(&mut *tx)
            .await?;
    }
    let outstanding = match state.nonce_gauge.fresh(now) {
        Some(n) => n,
        None => {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM nonces WHERE expires_at > $1")
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
            state.nonce_gauge.counted(now, n);
            n
        }
    };
    if outstanding >= state.config.max_outstanding_nonces {
        let first: Option<i64> =
            sqlx::query_scalar("SELECT MIN(expires_at) FROM nonces WHERE expires_at > $1")
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
        let wait = first.map_or(1, |f| (f - now).max(1));
        return Err(Error::RateLimited {
            detail: format!(
                "{outstanding} nonces are outstanding, the most this manager keeps \
                 (max-outstanding-nonces); retry in {wait} s"
            ),
            retry_after: wait as u64,
        });
    }
    sqlx::query("INSERT INTO nonces (nonce_hash, created_at, expires_at) VALUES ($1, $2, $3)")
        .bind(hex::encode(Sha256::digest(n)))
        .bind(now)
        .bind(now + NONCE_TTL)
        .execute(&mut *tx)
        .await?;
    // Last: the client's rate row is locked from here to the commit (a refusal rolls the
    // nonce back with the transaction).
    take_slot(&mut tx, state, client, now, "nonces").await?;
    tx.commit().await?;
    state.nonce_gauge.issued();
    Ok(NonceResponse {
        nonce: hex::encode(n),
        expires_at: now + NONCE_TTL,
    })
}

/// Takes one of `client`'s `nonce_rate_per_minute` slots of the current minute (shared by
/// nonces and nonce-less certificate requests), or refuses with 429. Counted in the
/// database, so the limit holds across replicas; a refusal rolls the count back with `tx`.
async fn take_slot(
    tx: &mut crate::store::Tx,
    state: &State,
    client: &str,
    now: i64,
    what: &str,
) -> Result<()> {
    let window = now - now.rem_euclid(60);
    let client = &rate_key(client);
    {
        use rand::RngCore;
        if rand::rngs::OsRng.next_u32().is_multiple_of(64) {
            sqlx::query("DELETE FROM nonce_rate WHERE window_start < $1")
                .bind(window)
                .execute(&mut **tx)
                .await?;
        }
    }
    // One statement counts and reads back (PostgreSQL serialises it on the row; SQLite has one
    // writer), so concurrent requests cannot both see the last free slot.
    let count: i64 = sqlx::query_scalar(
        "INSERT INTO nonce_rate (client, window_start, count) VALUES ($1, $2, 1) \
         ON CONFLICT (client) DO UPDATE SET count = CASE WHEN nonce_rate.window_start = excluded.window_start \
         THEN nonce_rate.count + 1 ELSE 1 END, window_start = excluded.window_start RETURNING count",
    )
    .bind(client)
    .bind(window)
    .fetch_one(&mut **tx)
    .await?;
    if count > state.config.nonce_rate_per_minute {
        return Err(Error::RateLimited {
            detail: format!(
                "too many {what} for {client}: {} a minute (nonces and certificate requests \
                 without one together); retry in {} s",
                state.config.nonce_rate_per_minute,
                window + 60 - now
            ),
            retry_after: (window + 60 - now).max(1) as u64,
        });
    }
    Ok(())
}

/// Whose budget a client address spends: an IPv4 address is one client, an IPv6 address its
/// /64 (one host is routinely given a whole /64, so per-address budgets would be 2^64 budgets
/// and the overall cap of outstanding nonces the only limit: a lever to starve every launcher).
fn rate_key(client: &str) -> String {
    match client.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        _ => client.to_string(),
    }
}

/// Refusals decided before a nonce of this manager was consumed: anyone can send them, as
/// often as they like, so they are answered (and logged) but leave no certificate record and
/// no audit record (which would let an unauthenticated caller grow the database and the
/// account's audit chain without bound).
const UNAUTHENTICATED_REFUSALS: [&str; 6] = [
    "malformed_evidence",
    "malformed_nonce",
    "nonce_required",
    "nonce_unknown",
    "nonce_expired",
    "nonce_reused",
];

async fn consume_nonce(state: &State, nonce: &[u8]) -> std::result::Result<(), Refusal> {
    let hash = hex::encode(Sha256::digest(nonce));
    let now = state.clock.now();
    let db = |e: sqlx::Error| refuse("internal", format!("database: {e}"));
    let row = sqlx::query("SELECT expires_at, used_at FROM nonces WHERE nonce_hash = $1")
        .bind(&hash)
        .fetch_optional(state.db.reader())
        .await
        .map_err(db)?;
    let Some(row) = row else {
        return Err(refuse(
            "nonce_unknown",
            "the nonce was not issued by this manager: get one from POST /v1/attestation/nonce",
        ));
    };
    let expires: i64 = row.try_get(0).map_err(db)?;
    if expires <= now {
        return Err(refuse(
            "nonce_expired",
            format!("the nonce expired at {expires} (now {now}); nonces live {NONCE_TTL} s"),
        ));
    }
    let mut tx = state
        .db
        .begin()
        .await
        .map_err(|e| refuse("internal", e.to_string()))?;
    let used = sqlx::query(
        "UPDATE nonces SET used_at = $1 WHERE nonce_hash = $2 AND used_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(&hash)
    .execute(&mut *tx)
    .await
    .map_err(db)?
    .rows_affected();
    tx.commit().await.map_err(db)?;
    if used != 1 {
        return Err(refuse(
            "nonce_reused",
            "the nonce was already used: get a new one",
        ));
    }
    Ok(())
}

fn hex_or_none(v: Option<&str>) -> String {
    v.unwrap_or("none").to_string()
}

/// One certificate a build may get: an entry of `advanced_settings.certificates` (the seed's
/// `certificates` conversion option, CCM's CertificateConfig).
struct AllowedCert {
    subject: String,
    sans: Vec<String>,
    /// `keyType` when the entry names one (`RSA`, `EC`); absent entries take any issued key.
    key_type: Option<String>,
    /// `keyParam`: `{"size": bits}` (RSA, or 256/384 for EC) or `{"curve": "P-256"}`.
    key_param: Option<Value>,
}

/// The allowed certificates of a build: subjects, their SANs (`altNames`, `sans` or
/// `subjectAltNames`) and key constraints.
fn allowed_subjects(build: &cloak_api::Build) -> Vec<AllowedCert> {
    build
        .advanced_settings
        .get("certificates")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|c| {
                    let subject = c.get("subject")?.as_str()?.to_string();
                    let sans = ["altNames", "sans", "subjectAltNames"]
                        .iter()
                        .find_map(|k| c.get(*k).and_then(Value::as_array))
                        .map(|a| {
                            a.iter()
                                .filter_map(|s| s.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    Some(AllowedCert {
                        subject,
                        sans,
                        key_type: c.get("keyType").and_then(Value::as_str).map(String::from),
                        key_param: c.get("keyParam").cloned(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `key` is the key the certificate entry asks for; the refusal says both.
fn key_allowed(
    entry: &AllowedCert,
    key: &cloak_attest::csr::KeyType,
) -> std::result::Result<(), String> {
    use cloak_attest::csr::KeyType;
    let actual = match key {
        KeyType::Rsa { bits } => format!("RSA {bits}"),
        KeyType::EcP256 => "EC P-256".into(),
        KeyType::EcP384 => "EC P-384".into(),
    };
    let Some(kt) = entry.key_type.as_deref() else {
        return Ok(());
    };
    let param = entry.key_param.as_ref();
    let size = param.and_then(|p| p.get("size")).and_then(Value::as_u64);
    let curve = param
        .and_then(|p| p.get("curve"))
        .and_then(Value::as_str)
        .map(str::to_ascii_uppercase);
    let expected = match kt.to_ascii_uppercase().as_str() {
        "RSA" => match size {
            Some(s) => format!("RSA {s}"),
            None => "RSA".into(),
        },
        "EC" | "ECDSA" => match (curve.as_deref(), size) {
            (Some("P-256" | "P256" | "SECP256R1" | "PRIME256V1"), _) | (None, Some(256)) => {
                "EC P-256".into()
            }
            (Some("P-384" | "P384" | "SECP384R1"), _) | (None, Some(384)) => "EC P-384".into(),
            (None, None) => "EC".into(),
            (c, s) => {
                return Err(format!(
                    "the build's certificate {} asks for EC with curve {c:?} size {s:?}; issued curves are P-256 and P-384",
                    entry.subject
                ))
            }
        },
        other => {
            return Err(format!(
                "the build's certificate {} asks for keyType {other:?}; issued key types are RSA and EC",
                entry.subject
            ))
        }
    };
    if actual == expected || actual.starts_with(&format!("{expected} ")) {
        Ok(())
    } else {
        Err(format!(
            "the build's certificate {} wants a key of {expected}; the CSR has {actual}",
            entry.subject
        ))
    }
}

fn cn_of(subject: &str) -> Option<String> {
    subject
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("CN=").map(String::from))
}

/// Whether the build's measurements are the claims'.
fn matches(build: &cloak_api::Build, claims: &Claims) -> bool {
    match &claims.measurements {
        Measurements::Sgx(m) => build.attributes.sgx.as_ref().is_some_and(|s| {
            s.mrenclave.as_deref() == Some(hex::encode(m.mrenclave).as_str())
                && s.mrsigner.as_deref() == Some(hex::encode(m.mrsigner).as_str())
                && s.isvprodid == Some(m.isvprodid)
                && s.isvsvn.is_some_and(|v| m.isvsvn >= v)
        }),
        Measurements::Pcrs(pcrs) => build.attributes.nitro_enclave.as_ref().is_some_and(|n| {
            let pcr = |i: u16| pcrs.get(&i).map(hex::encode);
            pcr(0).as_deref() == Some(n.pcr0.as_str())
                && pcr(1).as_deref() == Some(n.pcr1.as_str())
                && pcr(2).as_deref() == Some(n.pcr2.as_str())
                && n.pcr8
                    .as_ref()
                    .is_none_or(|p8| pcr(8).as_deref() == Some(p8.as_str()))
        }),
        Measurements::Tdx(_) => false,
    }
}

fn describe(claims: &Claims) -> String {
    match &claims.measurements {
        Measurements::Sgx(m) => format!(
            "mrenclave {} mrsigner {} isvprodid {} isvsvn {}",
            hex::encode(m.mrenclave),
            hex::encode(m.mrsigner),
            m.isvprodid,
            m.isvsvn
        ),
        Measurements::Pcrs(p) => format!(
            "pcr0 {} pcr1 {} pcr2 {}",
            hex_or_none(p.get(&0).map(hex::encode).as_deref()),
            hex_or_none(p.get(&1).map(hex::encode).as_deref()),
            hex_or_none(p.get(&2).map(hex::encode).as_deref())
        ),
        Measurements::Tdx(_) => "a TDX trust domain".into(),
    }
}

/// Runs every check; consumes the nonce when `consume` is set.
async fn check(
    state: &State,
    app: &App,
    req: &CertificateRequest,
    consume: bool,
) -> std::result::Result<Verdict, Refusal> {
    let evidence = base64::engine::general_purpose::STANDARD
        .decode(req.evidence.trim())
        .map_err(|_| refuse("malformed_evidence", "evidence: not base64"))?;
    if evidence.is_empty() || evidence.len() > MAX_EVIDENCE {
        return Err(refuse(
            "malformed_evidence",
            format!("evidence: must be 1 to {MAX_EVIDENCE} bytes"),
        ));
    }
    let policy = &app.certificate_policy;
    let require_nonce = policy.require_nonce.unwrap_or(true);
    let nonce = match &req.nonce {
        Some(n) => Some(
            hex::decode(n)
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| refuse("malformed_nonce", "nonce: must be 64 hex digits"))?,
        ),
        None if require_nonce => {
            return Err(refuse(
                "nonce_required",
                "nonce: required (POST /v1/attestation/nonce), unless the app's certificate policy sets require_nonce false",
            ))
        }
        None => None,
    };
    if let (Some(n), true) = (&nonce, consume) {
        consume_nonce(state, n).await?;
    }
    let csr = match &req.csr {
        Some(pem) => Some(
            // Every CSR fault is the caller's input (400), whatever cloak-attest calls it.
            cloak_attest::csr::parse(pem.as_bytes())
                .map_err(|e| refuse("bad_csr", format!("csr: {e}")))?,
        ),
        None => None,
    };
    if let Some(c) = &csr {
        match c.key {
            cloak_attest::csr::KeyType::EcP256 | cloak_attest::csr::KeyType::EcP384 => {}
            cloak_attest::csr::KeyType::Rsa { bits } if [2048, 3072, 4096].contains(&bits) => {}
            cloak_attest::csr::KeyType::Rsa { bits } => {
                return Err(refuse(
                    "bad_csr",
                    format!("csr: RSA keys must be 2048, 3072 or 4096 bits, not {bits}"),
                ))
            }
        }
    }
    // Collateral given with the request serves unless the manager's own (cache, PCCS) for the
    // platform the quote names is newer; without it, the manager's own. Either way it is
    // verified against Intel's root with the quote.
    let collateral = match &req.collateral {
        Some(v) => Some(
            crate::collateral::newest(
                state,
                &evidence,
                cloak_attest::Collateral::from_json(v.to_string().as_bytes())
                    .map_err(|e| refuse(e.code(), format!("collateral: {e}")))?,
            )
            .await,
        ),
        None => match cloak_attest::detect(&evidence).map(|e| e.kind) {
            Ok(
                cloak_attest::EvidenceKind::DcapQuote
                | cloak_attest::EvidenceKind::RaTlsCertificate,
            ) => {
                let key = cloak_attest::collateral_key(&evidence)
                    .map_err(|e| refuse(e.code(), e.to_string()))?;
                Some(
                    crate::collateral::get(state, &key)
                        .await
                        .map_err(|e| refuse("collateral_unavailable", e.to_string()))?,
                )
            }
            _ => None,
        },
    };
    let attest_policy = Policy {
        allow_debug: policy.allow_debug.unwrap_or(false),
        accepted_tcb_statuses: Some(policy.allowed_tcb_statuses.clone().unwrap_or_else(|| {
            cloak_attest::DEFAULT_TCB_STATUSES
                .map(String::from)
                .to_vec()
        })),
        allow_simulated: state.config.allow_simulated_attestation,
        max_age_secs: cloak_attest::DEFAULT_MAX_AGE_SECS,
    };
    let sim_key = state.config.simulation_key.as_ref();
    let input = cloak_attest::Input {
        at: At::Time(state.clock.now().max(0) as u64),
        collateral: collateral.as_ref(),
        policy: &attest_policy,
        simulation_key: sim_key,
    };
    let claims =
        cloak_attest::verify(&evidence, &input).map_err(|e| refuse(e.code(), e.to_string()))?;
    let with_claims = |mut r: Refusal, claims: &Claims| {
        r.claims = Some(claims.clone());
        r
    };
    // A dry run may lack the key (an operator checking a policy against a quote whose
    // REPORTDATA binds something else): every other check still runs, and the answer says the
    // binding was not checked. Issuance always needs it.
    let spki = match (&csr, &claims.public_key) {
        (Some(c), _) => Some(c.spki_der.clone()),
        (None, Some(k)) => Some(k.clone()),
        (None, None) if !consume => None,
        (None, None) => {
            return Err(with_claims(
                refuse(
                    "bad_csr",
                    "csr: required (this evidence carries no public key)",
                ),
                &claims,
            ))
        }
    };
    if let Some(spki) = &spki {
        cloak_attest::binding::check(&claims, spki, nonce.as_deref())
            .map_err(|e| with_claims(refuse(e.code(), e.to_string()), &claims))?;
    }
    // The builds of this app with these measurements, whatever their status.
    let builds = crate::builds::for_app(state, &app.app_id)
        .await
        .map_err(|e| refuse("internal", e.to_string()))?;
    let candidates: Vec<_> = builds.iter().filter(|b| matches(b, &claims)).collect();
    let Some(build) = candidates
        .iter()
        .find(|b| b.status.status == "WHITELISTED")
        .or_else(|| candidates.first())
    else {
        return Err(with_claims(
            refuse(
                "unknown_measurement",
                format!("no build of app {} has {}", app.name, describe(&claims)),
            ),
            &claims,
        ));
    };
    let r = |code: &'static str, detail: String| {
        let mut x = with_claims(refuse(code, detail), &claims);
        x.build_id = Some(build.build_id.clone());
        x
    };
    match build.status.status.as_str() {
        "WHITELISTED" => {}
        "PENDING" => {
            return Err(r(
                "not_whitelisted",
                format!(
                    "build {} is PENDING: its approval task {} has not reached its quorum",
                    build.build_id, build.task_id
                ),
            ))
        }
        _ => {
            return Err(r(
                "revoked",
                format!(
                    "build {} is REJECTED ({})",
                    build.build_id,
                    build.status_reason.as_deref().unwrap_or("no reason given")
                ),
            ))
        }
    }
    if claims.debug && !(build.debug && policy.allow_debug.unwrap_or(false)) {
        return Err(r(
            "debug_enclave",
            format!(
                "the evidence is from a debug enclave; build {} is {}a debug build and the app {} debug",
                build.build_id,
                if build.debug { "" } else { "not " },
                if policy.allow_debug.unwrap_or(false) { "allows" } else { "does not allow" }
            ),
        ));
    }
    let allowed = allowed_subjects(build);
    let (subject, dns_names) = match &csr {
        Some(c) => {
            let cn = cn_of(&c.subject).unwrap_or_default();
            let Some(entry) = allowed.iter().find(|a| a.subject == cn) else {
                return Err(r(
                    "subject_not_allowed",
                    format!(
                        "the CSR asks for CN={cn:?}; build {} allows {:?}",
                        build.build_id,
                        allowed
                            .iter()
                            .map(|a| a.subject.as_str())
                            .collect::<Vec<_>>()
                    ),
                ));
            };
            if let Some(bad) = c.dns_names.iter().find(|d| !entry.sans.contains(d)) {
                return Err(r(
                    "subject_not_allowed",
                    format!(
                        "the CSR asks for the SAN {bad:?}, which build {} does not list",
                        build.build_id
                    ),
                ));
            }
            if !c.ip_addresses.is_empty() {
                return Err(r(
                    "subject_not_allowed",
                    "IP address SANs are not issued".into(),
                ));
            }
            key_allowed(entry, &c.key).map_err(|d| r("key_type_not_allowed", d))?;
            (cn, c.dns_names.clone())
        }
        None => match allowed.first() {
            Some(a) => (a.subject.clone(), Vec::new()),
            None => {
                return Err(r(
                    "subject_not_allowed",
                    format!(
                        "build {} names no certificate (its certificates option is empty)",
                        build.build_id
                    ),
                ))
            }
        },
    };
    Ok(Verdict {
        validity: policy.validity_seconds.unwrap_or(86400),
        build_id: build.build_id.clone(),
        claims,
        evidence,
        spki,
        subject,
        dns_names,
    })
}

fn tcb_of(claims: Option<&Claims>) -> (Option<String>, Vec<String>) {
    claims
        .and_then(|c| c.tcb.as_ref())
        .map(|t| (Some(t.status.clone()), t.advisory_ids.clone()))
        .unwrap_or((None, Vec::new()))
}

fn sign(state: &State, ca: &crate::ca::Ca, v: &Verdict) -> Result<(String, i64)> {
    use rcgen::{
        CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        KeyUsagePurpose, SanType,
    };
    let now = state.clock.now();
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, v.subject.as_str());
    p.distinguished_name = dn;
    p.subject_alt_names = v
        .dns_names
        .iter()
        .filter_map(|d| d.clone().try_into().ok().map(SanType::DnsName))
        .collect();
    p.not_before = time::OffsetDateTime::from_unix_timestamp(now - 60)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let not_after = now + v.validity;
    p.not_after = time::OffsetDateTime::from_unix_timestamp(not_after)
        .map_err(|e| Error::Internal(e.to_string()))?;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let mut serial = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut serial);
    serial[0] &= 0x7f;
    p.serial_number = Some(serial.to_vec().into());
    for ext in cloak_attest::extension::encode(&v.claims, &v.evidence, &v.build_id)
        .map_err(|e| Error::Internal(format!("evidence extension: {e}")))?
    {
        let mut c = CustomExtension::from_oid_content(ext.oid_arcs, ext.value);
        c.set_criticality(false);
        p.custom_extensions.push(c);
    }
    let spki = v
        .spki
        .as_deref()
        .ok_or_else(|| Error::Internal("signing without a bound key".into()))?;
    let cert = ca.sign(&p, spki)?;
    Ok((cert.pem(), not_after))
}

async fn record(state: &State, app: &App, rec: &CertificateRecord, details: Value) -> Result<()> {
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "INSERT INTO certificates (certificate_id, account_id, app_id, build_id, status, reason_code, detail, \
         tee, simulated, tcb_status, advisory_ids, subject, not_after, cert_pem, request_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(&rec.certificate_id)
    .bind(&app_account(state, app).await?)
    .bind(&rec.app_id)
    .bind(rec.build_id.as_deref())
    .bind(&rec.status)
    .bind(rec.reason_code.as_deref())
    .bind(&rec.detail)
    .bind(rec.tee.as_deref())
    .bind(i64::from(rec.simulated))
    .bind(rec.tcb_status.as_deref())
    .bind(serde_json::to_string(&rec.advisory_ids).expect("serialisable"))
    .bind(rec.subject.as_deref())
    .bind(rec.not_after)
    .bind(rec.certificate.as_deref())
    .bind(&rec.request_id)
    .bind(rec.created_at)
    .execute(&mut *tx)
    .await?;
    let account = app_account(state, app).await?;
    audit::append(
        &state.db,
        &mut tx,
        &account,
        &Actor {
            kind: "system",
            id: format!("app:{}", app.app_id),
            name: format!("app {}", app.name),
        },
        Event {
            action: "Certificate Requested by Application",
            entity_type: "certificate",
            entity_id: &rec.certificate_id,
            details,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn app_account(state: &State, app: &App) -> Result<String> {
    sqlx::query_scalar("SELECT account_id FROM apps WHERE app_id = $1")
        .bind(&app.app_id)
        .fetch_one(state.db.reader())
        .await
        .map_err(Error::from)
}

/// `POST /v1/certificates`: checks, signs, records, audits.
pub async fn request(
    state: &State,
    req: CertificateRequest,
    request_id: &str,
    client: &str,
) -> Result<CertificateRecord> {
    let app_id = crate::validate::uuid("app_id", &req.app_id)?;
    let app = crate::apps::get_any(state, &app_id).await?;
    let ca = crate::ca::get(state).await?;
    let now = state.clock.now();
    // A request without a nonce (apps whose policy does not require one) costs a slot of the
    // client's per-minute budget, as a nonce does: each is recorded and audited.
    if req.nonce.is_none() {
        let mut tx = state.db.begin().await?;
        take_slot(&mut tx, state, client, now, "certificate requests").await?;
        tx.commit().await?;
    }
    let verdict = check(state, &app, &req, true).await;
    if let Err(r) = &verdict {
        if UNAUTHENTICATED_REFUSALS.contains(&r.code) {
            tracing::warn!(request_id, app_id = %app.app_id, %client, reason = r.code,
                           "certificate request refused before a nonce was consumed (not recorded)");
            return Err(Error::Refused {
                code: r.code,
                detail: format!("{} (request {request_id})", r.detail),
            });
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    let (rec, outcome) = match verdict {
        Ok(v) => {
            let (pem, not_after) = sign(state, &ca, &v)?;
            let (tcb_status, advisory_ids) = tcb_of(Some(&v.claims));
            let rec = CertificateRecord {
                certificate_id: id.clone(),
                app_id: app.app_id.clone(),
                build_id: Some(v.build_id.clone()),
                status: "ISSUED".into(),
                reason_code: None,
                detail: format!(
                    "issued to build {} for {}{}",
                    v.build_id,
                    describe(&v.claims),
                    if v.claims.simulated {
                        " (SIMULATED evidence)"
                    } else {
                        ""
                    }
                ),
                tee: Some(v.claims.tee.as_str().into()),
                simulated: v.claims.simulated,
                tcb_status,
                advisory_ids,
                subject: Some(v.subject.clone()),
                not_after: Some(not_after),
                certificate: Some(pem),
                chain: Some(ca.chain_pem()),
                request_id: request_id.into(),
                created_at: now,
            };
            (rec, Ok(()))
        }
        Err(r) => {
            let (tcb_status, advisory_ids) = tcb_of(r.claims.as_ref());
            let rec = CertificateRecord {
                certificate_id: id.clone(),
                app_id: app.app_id.clone(),
                build_id: r.build_id.clone(),
                status: "REJECTED".into(),
                reason_code: Some(r.code.to_string()),
                detail: r.detail.clone(),
                tee: r.claims.as_ref().map(|c| c.tee.as_str().into()),
                simulated: r.claims.as_ref().is_some_and(|c| c.simulated),
                tcb_status,
                advisory_ids,
                subject: None,
                not_after: None,
                certificate: None,
                chain: None,
                request_id: request_id.into(),
                created_at: now,
            };
            (rec, Err(r))
        }
    };
    let details = json!({
        "verdict": rec.status, "reason_code": rec.reason_code, "build_id": rec.build_id,
        "tee": rec.tee, "simulated": rec.simulated, "tcb_status": rec.tcb_status,
        "advisory_ids": rec.advisory_ids, "request_id": request_id,
    });
    record(state, &app, &rec, details).await?;
    tracing::info!(request_id, certificate_id = %id, verdict = %rec.status,
                   reason = rec.reason_code.as_deref().unwrap_or(""), simulated = rec.simulated,
                   "certificate request");
    match outcome {
        Ok(()) => Ok(rec),
        Err(r) => Err(Error::Refused {
            code: r.code,
            detail: format!(
                "{} (certificate record {id}, request {request_id})",
                r.detail
            ),
        }),
    }
}

/// `POST /v1/attestation/evaluate`: the same checks, nothing issued, no nonce used.
pub async fn evaluate(
    state: &State,
    p: &crate::auth::Principal,
    req: CertificateRequest,
) -> Result<Value> {
    let app_id = crate::validate::uuid("app_id", &req.app_id)?;
    let app = crate::apps::get(state, p, &app_id).await?;
    Ok(match check(state, &app, &req, false).await {
        Ok(v) => {
            let (tcb_status, advisory_ids) = tcb_of(Some(&v.claims));
            json!({"verdict": "ACCEPTED", "build_id": v.build_id, "subject": v.subject,
                   "tee": v.claims.tee.as_str(), "simulated": v.claims.simulated,
                   "measurements": describe(&v.claims), "tcb_status": tcb_status,
                   "advisory_ids": advisory_ids,
                   "key_binding": if v.spki.is_some() { "checked" } else {
                       "not checked: no CSR was given and the evidence carries no key" }})
        }
        Err(r) => {
            let (tcb_status, advisory_ids) = tcb_of(r.claims.as_ref());
            json!({"verdict": "REJECTED", "reason_code": r.code, "detail": r.detail,
                   "build_id": r.build_id, "tcb_status": tcb_status, "advisory_ids": advisory_ids})
        }
    })
}

/// `GET /v1/ca/crl`: the certificates issued to builds that are now REJECTED (revoked), and,
/// while the manager does not accept simulated evidence, those issued for simulated evidence
/// (revoked from their issuance), still within their validity, in a CRL signed by the issuing
/// CA. The CA is shared by every account, so the list spans them (it names serial numbers only).
pub async fn crl(state: &State) -> Result<rcgen::CertificateRevocationList> {
    let now = state.clock.now();
    let ca = crate::ca::get(state).await?;
    let rows = sqlx::query(
        "SELECT c.cert_pem, CASE WHEN b.status = 'REJECTED' THEN b.status_updated_at ELSE c.created_at END \
         FROM certificates c JOIN builds b ON b.build_id = c.build_id \
         WHERE c.status = 'ISSUED' AND c.not_after >= $1 \
         AND (b.status = 'REJECTED' OR (c.simulated <> 0 AND $2 = 0)) \
         ORDER BY c.created_at, c.certificate_id",
    )
    .bind(now)
    .bind(i64::from(state.config.allow_simulated_attestation))
    .fetch_all(state.db.reader())
    .await?;
    let mut revoked = Vec::with_capacity(rows.len());
    for r in rows {
        let pem: Option<String> = r.try_get(0)?;
        let at: i64 = r.try_get(1)?;
        let Some(pem) = pem else { continue };
        let der = pem_der(&pem)?;
        let serial = cloak_attest::extension::serial_of(&der)
            .map_err(|e| Error::Internal(format!("a stored certificate: {e}")))?;
        revoked.push((serial, at));
    }
    ca.crl(&revoked, now)
}

fn pem_der(pem: &str) -> Result<Vec<u8>> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| Error::Internal(format!("a stored certificate is not PEM: {e}")))
}

const RECORD_COLS: &str = "certificate_id, app_id, build_id, status, reason_code, detail, tee, \
    simulated, tcb_status, advisory_ids, subject, not_after, cert_pem, request_id, created_at";

fn record_from_row(r: &sqlx::any::AnyRow) -> Result<CertificateRecord> {
    let adv: String = r.try_get(9)?;
    Ok(CertificateRecord {
        certificate_id: r.try_get(0)?,
        app_id: r.try_get(1)?,
        build_id: r.try_get(2)?,
        status: r.try_get(3)?,
        reason_code: r.try_get(4)?,
        detail: r.try_get(5)?,
        tee: r.try_get(6)?,
        simulated: r.try_get::<i64, _>(7)? != 0,
        tcb_status: r.try_get(8)?,
        advisory_ids: serde_json::from_str(&adv).unwrap_or_default(),
        subject: r.try_get(10)?,
        not_after: r.try_get(11)?,
        certificate: r.try_get(12)?,
        chain: None,
        request_id: r.try_get(13)?,
        created_at: r.try_get(14)?,
    })
}

/// `GET /v1/certificates/{id}`.
pub async fn get(state: &State, p: &crate::auth::Principal, id: &str) -> Result<CertificateRecord> {
    let r = sqlx::query(&format!(
        "SELECT {RECORD_COLS} FROM certificates WHERE account_id = $1 AND certificate_id = $2"
    ))
    .bind(&p.account_id)
    .bind(id)
    .fetch_optional(state.db.reader())
    .await?
    .ok_or_else(|| Error::NotFound {
        kind: "certificate",
        id: id.into(),
    })?;
    record_from_row(&r)
}

/// The account's certificate records, newest first, optionally only ISSUED or REJECTED; with
/// the number that match.
pub async fn list(
    state: &State,
    p: &crate::auth::Principal,
    status: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(i64, Vec<CertificateRecord>)> {
    let status = match status.filter(|s| !s.is_empty()) {
        None => None,
        Some(s @ ("ISSUED" | "REJECTED")) => Some(s),
        Some(_) => return Err(Error::field("status", "must be ISSUED or REJECTED")),
    };
    let wh = if status.is_some() {
        "account_id = $1 AND status = $2"
    } else {
        "account_id = $1"
    };
    let count_sql = format!("SELECT COUNT(*) FROM certificates WHERE {wh}");
    let mut q = sqlx::query_scalar::<_, i64>(&count_sql).bind(&p.account_id);
    if let Some(s) = status {
        q = q.bind(s);
    }
    let n = q.fetch_one(state.db.reader()).await?;
    let sql = format!(
        "SELECT {RECORD_COLS} FROM certificates WHERE {wh} \
         ORDER BY created_at DESC, certificate_id LIMIT {limit} OFFSET {offset}"
    );
    let mut q = sqlx::query(&sql).bind(&p.account_id);
    if let Some(s) = status {
        q = q.bind(s);
    }
    let rows = q.fetch_all(state.db.reader()).await?;
    Ok((n, rows.iter().map(record_from_row).collect::<Result<_>>()?))
}
