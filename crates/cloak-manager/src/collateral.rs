//! DCAP collateral for quotes and RA-TLS certificates: fetched from a PCCS or Intel PCS
//! (`--pccs-url`, the v4 API), cached in the database so every replica shares it, refreshed
//! halfway to its earliest `nextUpdate` (on use and by a background task), or imported by an
//! operator (`cloak manager collateral import`) for air-gapped sites.
//!
//! A PCCS outage does not stop attestation: the cached collateral is used until it expires,
//! and then verification fails closed naming the item and its time (cloak-attest's
//! `collateral_expired`). Collateral is not trusted because of where it came from: it is
//! verified against Intel's root with every quote.
//!
//! Paths (Intel PCCS / PCS v4, as dcap-qvl's collateral client uses them):
//! `{base}/{sgx|tdx}/certification/v4/tcb?fmspc=F` (issuer chain in `TCB-Info-Issuer-Chain` or
//! `SGX-TCB-Info-Issuer-Chain`), `{base}/{sgx|tdx}/certification/v4/qe/identity`
//! (`SGX-Enclave-Identity-Issuer-Chain`), `{base}/sgx/certification/v4/pckcrl?ca=C&encoding=der`
//! (`SGX-PCK-CRL-Issuer-Chain`), `{base}/sgx/certification/v4/rootcacrl` (PCCS: hex), else the
//! root CA's distribution point (Intel PCS).

use std::sync::OnceLock;
use std::time::Duration;

use cloak_attest::{Collateral, CollateralKey};
use dcap_qvl::QuoteCollateralV3;
use sqlx::Row;

use crate::error::{Error, Result};
use crate::State;

/// Where Intel publishes the SGX root CA's CRL (the root certificate's distribution point).
const INTEL_ROOT_CRL_URL: &str =
    "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der";
/// Largest PCCS answer read.
const MAX_BODY: usize = 1 << 20;
/// How long one PCCS request may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the background task looks for entries due for refresh.
pub const REFRESH_EVERY: Duration = Duration::from_secs(600);

/// One cache entry.
#[derive(Debug, Clone)]
pub struct Cached {
    pub collateral: Collateral,
    /// The earliest `nextUpdate` / `notAfter` of its items, and which item that is.
    pub not_after: i64,
    pub not_after_item: String,
    pub fetched_at: i64,
    /// `pccs:<url>` or `import:<file>`.
    pub source: String,
}

impl Cached {
    /// Due for a refresh once half its life (from fetch to earliest expiry) has passed.
    pub fn refresh_due(&self, now: i64) -> bool {
        now >= self.fetched_at + (self.not_after - self.fetched_at) / 2
    }
}

/// Why no collateral could be had.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error(
        "no DCAP collateral is cached for {key} and no PCCS is configured: start the manager \
         with --pccs-url URL, or import it with `cloak manager collateral import DIR`"
    )]
    NoSource { key: String },
    #[error(
        "no DCAP collateral is cached for {key} and the PCCS failed: {cause} (import it with \
         `cloak manager collateral import DIR` while the PCCS is down)"
    )]
    Fetch { key: String, cause: String },
    #[error("the collateral cache: {0}")]
    Store(#[from] Error),
}

/// The collateral for `key`: the cached entry, refreshed first when due and a PCCS is
/// configured (a failed refresh keeps the cached entry, with a warning).
pub async fn get(
    state: &State,
    key: &CollateralKey,
) -> std::result::Result<Collateral, Unavailable> {
    let now = state.clock.now();
    let cache_key = key.cache_key();
    let cached = load(state, &cache_key).await?;
    if let Some(c) = &cached {
        if !c.refresh_due(now) {
            return Ok(c.collateral.clone());
        }
    }
    let Some(url) = state.config.pccs_url.as_deref() else {
        return cached
            .map(|c| c.collateral)
            .ok_or(Unavailable::NoSource { key: cache_key });
    };
    match fetch(url, key).await {
        Ok(fresh) => {
            let entry =
                store_unless_older(state, &cache_key, cached.as_ref(), fresh, now, url).await?;
            Ok(entry.collateral)
        }
        Err(cause) => match cached {
            Some(c) => {
                tracing::warn!(key = %cache_key, %cause, not_after = c.not_after,
                    item = %c.not_after_item, "PCCS refresh failed: using the cached collateral");
                Ok(c.collateral)
            }
            None => Err(Unavailable::Fetch {
                key: cache_key,
                cause,
            }),
        },
    }
}

/// Refreshes every cached entry that is due (the background task; failures are logged).
pub async fn refresh_due(state: &State) -> Result<usize> {
    let Some(url) = state.config.pccs_url.clone() else {
        return Ok(0);
    };
    let now = state.clock.now();
    let rows = sqlx::query("SELECT cache_key FROM dcap_collateral")
        .fetch_all(state.db.reader())
        .await?;
    let mut refreshed = 0;
    for r in rows {
        let cache_key: String = r.try_get(0)?;
        let Some(c) = load(state, &cache_key).await? else {
            continue;
        };
        if !c.refresh_due(now) {
            continue;
        }
        let key = c
            .collateral
            .key()
            .map_err(|e| Error::Internal(e.to_string()))?;
        match fetch(&url, &key).await {
            Ok(fresh) => {
                store_unless_older(state, &cache_key, Some(&c), fresh, now, &url).await?;
                refreshed += 1;
            }
            Err(cause) => tracing::warn!(key = %cache_key, %cause, "PCCS refresh failed"),
        }
    }
    Ok(refreshed)
}

/// How long before its earliest expiry cached collateral is shown as a warning (the console's
/// overview). Intel issues TCB info and QE identity for 30 days and the cache refreshes at half
/// life, so an entry this close to its end has missed about eight days of refreshes.
pub const WARN_BEFORE: i64 = 7 * 86400;

/// A cached entry that expires before a given time (or has expired).
#[derive(Debug, Clone)]
pub struct Expiring {
    pub key: String,
    pub not_after: i64,
    pub not_after_item: String,
    pub source: String,
}

/// The cached entries whose earliest item expires before `before`, soonest first.
pub async fn expiring(state: &State, before: i64) -> Result<Vec<Expiring>> {
    let rows = sqlx::query(
        "SELECT cache_key, not_after, not_after_item, source FROM dcap_collateral \
         WHERE not_after < $1 ORDER BY not_after, cache_key",
    )
    .bind(before)
    .fetch_all(state.db.reader())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Expiring {
                key: r.try_get(0)?,
                not_after: r.try_get(1)?,
                not_after_item: r.try_get(2)?,
                source: r.try_get(3)?,
            })
        })
        .collect()
}

/// Runs [`refresh_due`] every [`REFRESH_EVERY`] for the life of the process.
pub fn spawn_refresher(state: State) {
    if state.config.pccs_url.is_none() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        loop {
            tick.tick().await;
            if let Err(e) = refresh_due(&state).await {
                tracing::warn!(error = %e, "collateral refresh");
            }
        }
    });
}

/// Caches what the PCCS answered, unless it is older than the cached entry in any item
/// ([`Collateral::older_than`]: a TCB evaluation data number, an issue date, a CRL): a PCCS
/// that is hostile, or restored from an old backup, must not roll the manager back to a TCB
/// rating from before a TCB recovery or a CRL without a later revocation. The cached entry
/// then stays (and serves until it expires).
async fn store_unless_older(
    state: &State,
    cache_key: &str,
    cached: Option<&Cached>,
    fresh: Collateral,
    now: i64,
    url: &str,
) -> Result<Cached> {
    if let Some(c) = cached {
        match fresh.older_than(&c.collateral) {
            Ok(None) => {}
            Ok(Some(why)) => {
                tracing::warn!(key = %cache_key, %url, older = %why,
                    "the PCCS answered collateral older than the cached one: keeping the cached");
                return Ok(c.clone());
            }
            Err(e) => {
                tracing::warn!(key = %cache_key, %url, error = %e,
                    "the PCCS answered unusable collateral: keeping the cached");
                return Ok(c.clone());
            }
        }
    }
    store(state, cache_key, fresh, now, &format!("pccs:{url}")).await
}

/// The collateral to verify `evidence` with when a request brings `given`: `given`, unless it
/// is older in any item ([`Collateral::older_than`]) than the manager's own for the same
/// platform (cached, or fetched from the PCCS), which then serves instead. Otherwise an
/// unauthenticated caller could pick the oldest genuine collateral still before its
/// nextUpdate: a TCB rating from before a TCB recovery, a PCK CRL from before a revocation.
/// Without collateral of its own the manager has nothing newer and uses `given`.
pub async fn newest(state: &State, evidence: &[u8], given: Collateral) -> Collateral {
    let Ok(key) = cloak_attest::collateral_key(evidence) else {
        return given;
    };
    match get(state, &key).await {
        Ok(own) => match given.older_than(&own) {
            Ok(None) => given,
            Ok(Some(why)) => {
                tracing::info!(key = %key.cache_key(), older = %why,
                    "the request's collateral is older than the manager's: using the manager's");
                own
            }
            // Unreadable dates: verification refuses it anyway; the manager's serves.
            Err(_) => own,
        },
        Err(_) => given,
    }
}

async fn load(state: &State, cache_key: &str) -> Result<Option<Cached>> {
    let Some(r) = sqlx::query(
        "SELECT collateral, not_after, not_after_item, fetched_at, source FROM dcap_collateral \
         WHERE cache_key = $1",
    )
    .bind(cache_key)
    .fetch_optional(state.db.reader())
    .await?
    else {
        return Ok(None);
    };
    let json: String = r.try_get(0)?;
    let collateral = Collateral::from_json(json.as_bytes())
        .map_err(|e| Error::Internal(format!("cached collateral {cache_key}: {e}")))?;
    Ok(Some(Cached {
        collateral,
        not_after: r.try_get(1)?,
        not_after_item: r.try_get(2)?,
        fetched_at: r.try_get(3)?,
        source: r.try_get(4)?,
    }))
}

/// Checks `collateral` (it parses, names its platform, has dates) and caches it under its key.
pub async fn store(
    state: &State,
    cache_key: &str,
    collateral: Collateral,
    now: i64,
    source: &str,
) -> Result<Cached> {
    let entry = entry(collateral, now, source)?;
    upsert(&state.db, cache_key, &entry).await?;
    Ok(entry)
}

fn entry(collateral: Collateral, now: i64, source: &str) -> Result<Cached> {
    let items = collateral
        .validity()
        .map_err(|e| Error::field("collateral", e.to_string()))?;
    let first = items
        .iter()
        .min_by_key(|d| d.not_after)
        .ok_or_else(|| Error::field("collateral", "has no dated item"))?;
    Ok(Cached {
        not_after: i64::try_from(first.not_after).unwrap_or(i64::MAX),
        not_after_item: first.item.clone(),
        collateral,
        fetched_at: now,
        source: source.into(),
    })
}

async fn upsert(db: &crate::store::Db, cache_key: &str, c: &Cached) -> Result<()> {
    let json = String::from_utf8(c.collateral.to_json())
        .map_err(|e| Error::Internal(format!("collateral JSON: {e}")))?;
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO dcap_collateral (cache_key, collateral, not_after, not_after_item, fetched_at, source) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (cache_key) DO UPDATE SET \
         collateral = excluded.collateral, not_after = excluded.not_after, \
         not_after_item = excluded.not_after_item, fetched_at = excluded.fetched_at, source = excluded.source",
    )
    .bind(cache_key)
    .bind(json)
    .bind(c.not_after)
    .bind(&c.not_after_item)
    .bind(c.fetched_at)
    .bind(&c.source)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// What `cloak manager collateral import` did with one file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    pub file: String,
    pub key: String,
    pub not_after: i64,
    pub not_after_item: String,
    /// False when the cache already held collateral that stays valid longer (kept).
    pub stored: bool,
}

/// Imports QuoteCollateralV3 JSON files (a file, or every `*.json` of a directory) into the
/// cache, keyed by what each names (TCB info FMSPC, PCK CRL issuer). Newer-or-equal replaces.
pub async fn import(
    db: &crate::store::Db,
    path: &std::path::Path,
    now: i64,
) -> Result<Vec<Imported>> {
    let files = if path.is_dir() {
        let mut v: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        v.sort();
        if v.is_empty() {
            return Err(Error::Config(format!(
                "{}: no *.json collateral files (QuoteCollateralV3 JSON, as `cloak attest verify --collateral` reads)",
                path.display()
            )));
        }
        v
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f).map_err(|e| Error::io(&f, e))?;
        let bad = |e: String| Error::Config(format!("{}: {e}", f.display()));
        let collateral = Collateral::from_json(&bytes).map_err(|e| bad(e.to_string()))?;
        let key = collateral.key().map_err(|e| bad(e.to_string()))?;
        let cache_key = key.cache_key();
        let e = entry(collateral, now, &format!("import:{}", f.display()))
            .map_err(|e| bad(e.to_string()))?;
        let existing: Option<i64> =
            sqlx::query_scalar("SELECT not_after FROM dcap_collateral WHERE cache_key = $1")
                .bind(&cache_key)
                .fetch_optional(db.reader())
                .await?;
        let stored = existing.is_none_or(|n| e.not_after >= n);
        if stored {
            upsert(db, &cache_key, &e).await?;
        }
        out.push(Imported {
            file: f.display().to_string(),
            key: cache_key,
            not_after: e.not_after,
            not_after_item: e.not_after_item,
            stored,
        });
    }
    Ok(out)
}

fn client() -> std::result::Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<std::result::Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .build()
                .map_err(|e| format!("cannot set up an HTTP client: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

struct Answer {
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

async fn get_url(url: &str) -> std::result::Result<Answer, String> {
    let mut resp = client()?
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("GET {url}: HTTP {status}"));
    }
    let headers = resp.headers().clone();
    // Bounded while it arrives: a hostile or broken PCCS must not make the manager buffer an
    // endless body (or hold one for the whole timeout) before the size is looked at.
    let too_big = || format!("GET {url}: more than {MAX_BODY} bytes");
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer { headers, body })
}

fn header(a: &Answer, url: &str, names: &[&str]) -> std::result::Result<String, String> {
    names
        .iter()
        .find_map(|n| a.headers.get(*n))
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .ok_or_else(|| format!("GET {url}: no {} header", names.join(" or ")))
}

/// `%XX` decoding (the issuer chains are URL-encoded PEM; `+` is literal there).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A CRL body: DER, or hex text of DER (what a PCCS answers).
fn crl_bytes(body: Vec<u8>) -> Vec<u8> {
    if body.first() == Some(&0x30) {
        return body;
    }
    std::str::from_utf8(&body)
        .ok()
        .and_then(|t| hex::decode(t.trim()).ok())
        .unwrap_or(body)
}

/// `{"<name>": {...}, "signature": "hex"}` to the exact text of the inner object (the signature
/// covers those bytes) and the signature.
fn signed_member(
    body: &[u8],
    name: &str,
    url: &str,
) -> std::result::Result<(String, Vec<u8>), String> {
    let text = std::str::from_utf8(body).map_err(|_| format!("GET {url}: not UTF-8"))?;
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("GET {url}: not JSON: {e}"))?;
    let sig = v
        .get("signature")
        .and_then(|s| s.as_str())
        .and_then(|s| hex::decode(s).ok())
        .ok_or_else(|| format!("GET {url}: no hex signature"))?;
    let raw = raw_member(text, name).ok_or_else(|| format!("GET {url}: no {name:?} object"))?;
    Ok((raw.to_string(), sig))
}

/// The exact text of the value of top-level member `name` of a JSON object.
fn raw_member<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let b = json.as_bytes();
    let mut i = 0;
    let mut depth = 0usize;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let end = skip_string(b, i)?;
                if depth == 1 && json.get(i + 1..end - 1) == Some(name) {
                    let mut j = end;
                    while b.get(j).is_some_and(u8::is_ascii_whitespace) {
                        j += 1;
                    }
                    if b.get(j) == Some(&b':') {
                        j += 1;
                        while b.get(j).is_some_and(u8::is_ascii_whitespace) {
                            j += 1;
                        }
                        let vend = skip_value(b, j)?;
                        return json.get(j..vend);
                    }
                }
                i = end;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.checked_sub(1)?,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Index after the string starting at `i` (a `"`).
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// Index after the JSON value starting at `j`.
fn skip_value(b: &[u8], j: usize) -> Option<usize> {
    match b.get(j)? {
        b'"' => skip_string(b, j),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut k = j;
            while k < b.len() {
                match b[k] {
                    b'"' => {
                        k = skip_string(b, k)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(k + 1);
                        }
                    }
                    _ => {}
                }
                k += 1;
            }
            None
        }
        _ => {
            let mut k = j;
            while k < b.len() && !matches!(b[k], b',' | b'}' | b']') {
                k += 1;
            }
            Some(k)
        }
    }
}

/// Fetches the collateral for `key` from the PCCS / PCS at `base`.
pub async fn fetch(base: &str, key: &CollateralKey) -> std::result::Result<Collateral, String> {
    let base = base
        .trim_end_matches('/')
        .trim_end_matches("/sgx/certification/v4")
        .trim_end_matches("/tdx/certification/v4");
    let tee = key.tee.as_str();
    let fmspc = hex::encode(key.fmspc);

    let url = format!(
        "{base}/sgx/certification/v4/pckcrl?ca={}&encoding=der",
        key.pck_ca
    );
    let a = get_url(&url).await?;
    let pck_crl_issuer_chain = header(&a, &url, &["SGX-PCK-CRL-Issuer-Chain"])?;
    let pck_crl = crl_bytes(a.body);

    let url = format!("{base}/{tee}/certification/v4/tcb?fmspc={fmspc}");
    let a = get_url(&url).await?;
    let tcb_info_issuer_chain = header(
        &a,
        &url,
        &["TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"],
    )?;
    let (tcb_info, tcb_info_signature) = signed_member(&a.body, "tcbInfo", &url)?;

    let url = format!("{base}/{tee}/certification/v4/qe/identity");
    let a = get_url(&url).await?;
    let qe_identity_issuer_chain = header(&a, &url, &["SGX-Enclave-Identity-Issuer-Chain"])?;
    let (qe_identity, qe_identity_signature) = signed_member(&a.body, "enclaveIdentity", &url)?;

    let url = format!("{base}/sgx/certification/v4/rootcacrl");
    let root_ca_crl = match get_url(&url).await {
        Ok(a) => crl_bytes(a.body),
        // Intel PCS has no rootcacrl path: the root's distribution point serves it.
        Err(first) => get_url(INTEL_ROOT_CRL_URL)
            .await
            .map(|a| a.body)
            .map_err(|e| format!("{first}; {e}"))?,
    };

    let collateral = Collateral(QuoteCollateralV3 {
        pck_crl_issuer_chain,
        root_ca_crl,
        pck_crl,
        tcb_info_issuer_chain,
        tcb_info,
        tcb_info_signature,
        qe_identity_issuer_chain,
        qe_identity,
        qe_identity_signature,
        pck_certificate_chain: None,
    });
    let got = collateral.key().map_err(|e| format!("{base}: {e}"))?;
    if got != *key {
        return Err(format!(
            "{base} answered collateral for {}, not {}",
            got.cache_key(),
            key.cache_key()
        ));
    }
    Ok(collateral)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_member_keeps_the_exact_text() {
        let body =
            r#"{ "signature" : "tcbInfo", "tcbInfo" : {"a":"}\"{","b":[1, {"c":2}]} , "x":1}"#;
        assert_eq!(
            raw_member(body, "tcbInfo"),
            Some(r#"{"a":"}\"{","b":[1, {"c":2}]}"#)
        );
        assert_eq!(raw_member(body, "c"), None);
        assert_eq!(raw_member("{\"tcbInfo\": ", "tcbInfo"), None);
    }

    #[test]
    fn percent_decoding_keeps_plus() {
        assert_eq!(percent_decode("a%2Bb+c%0A%"), "a+b+c\n%");
    }
}
