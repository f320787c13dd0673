//! Signing keys the manager holds for its accounts: the SGX key that `signingKey:
//! {"default": {}}` signs with, generated on first use and sealed under the master key (bound
//! to its account). The private key never leaves the worker's memory: it is in no job, log,
//! response or audit record.

use serde_json::json;
use sha2::Digest as _;
use sqlx::Row;

use crate::audit::{self, Event};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::secrets::MasterKey;
use crate::store::Db;
use crate::State;

fn context(account_id: &str, kind: &str) -> String {
    format!("signing_key:{account_id}:{kind}")
}

/// The account's SGX signing key (PEM), generated and sealed on first use. Two workers that
/// race to create it both end with the one that was inserted first.
pub async fn account_sgx_key(state: &State, p: &Principal) -> Result<String> {
    if let Some(pem) = load(state, &p.account_id, "sgx").await? {
        return Ok(pem);
    }
    let pem = tokio::task::spawn_blocking(cloak_sgx::key::generate_pem)
        .await
        .map_err(|e| Error::Internal(format!("key generation: {e}")))?
        .map_err(|e| Error::Internal(format!("key generation: {e}")))?;
    let signer = cloak_sgx::key::FileSigner::from_pem(&pem, "new account key")
        .map_err(|e| Error::Internal(format!("key generation: {e}")))?;
    let key_id = hex::encode(sha2::Sha256::digest(cloak_sgx::key::Signer::modulus_be(
        &signer,
    )));
    let mut tx = state.db.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO signing_keys (account_id, kind, key_sealed, key_id, created_at) \
         VALUES ($1, 'sgx', $2, $3, $4) ON CONFLICT (account_id, kind) DO NOTHING",
    )
    .bind(&p.account_id)
    .bind(
        state
            .master()
            .seal(&context(&p.account_id, "sgx"), pem.as_bytes()),
    )
    .bind(&key_id)
    .bind(state.clock.now())
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 1 {
        audit::record(
            state,
            tx,
            p,
            Event {
                action: "Signing Key Generated",
                entity_type: "signing_key",
                entity_id: &key_id,
                details: json!({"kind": "sgx", "key_id": key_id,
                                "note": "RSA-3072 e=3, sealed under the master key"}),
            },
        )
        .await?;
    } else {
        tx.commit().await?;
    }
    load(state, &p.account_id, "sgx")
        .await?
        .ok_or_else(|| Error::Internal("the account's signing key vanished".into()))
}

/// An app's EIF signing key and certificate (PEM each), generated and sealed on first use:
/// P-384 and a self-signed certificate valid for ten years (nitro-cli refuses to run an EIF
/// whose signing certificate has expired), so PCR8 names the app across its builds. Kept in
/// `signing_keys` as kind `nitro:APP_ID`, key and certificate sealed together.
pub async fn app_nitro_key(state: &State, p: &Principal, app_id: &str) -> Result<(String, String)> {
    let kind = format!("nitro:{app_id}");
    let parse = |plain: String| -> Result<(String, String)> {
        let v: serde_json::Value = serde_json::from_str(&plain).map_err(|_| Error::Decrypt {
            what: context(&p.account_id, &kind),
        })?;
        match (v["key"].as_str(), v["cert"].as_str()) {
            (Some(k), Some(c)) => Ok((k.to_string(), c.to_string())),
            _ => Err(Error::Decrypt {
                what: context(&p.account_id, &kind),
            }),
        }
    };
    if let Some(plain) = load(state, &p.account_id, &kind).await? {
        return parse(plain);
    }
    let now = state.clock.now();
    let name = format!("cloak EIF signing, app {app_id}");
    let (key, cert) =
        tokio::task::spawn_blocking(move || -> std::result::Result<_, rcgen::Error> {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
            let mut params = rcgen::CertificateParams::default();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let at = time::OffsetDateTime::from_unix_timestamp(now)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            params.not_before = at - time::Duration::minutes(5);
            params.not_after = at + time::Duration::days(3653);
            let cert = params.self_signed(&key)?;
            Ok((key.serialize_pem(), cert.pem()))
        })
        .await
        .map_err(|e| Error::Internal(format!("key generation: {e}")))?
        .map_err(|e| Error::Internal(format!("key generation: {e}")))?;
    let pcr8 = cloak_convert::nitro::pcr8(cert.as_bytes())
        .map_err(|e| Error::Internal(format!("key generation: {e}")))?;
    let sealed = state.master().seal(
        &context(&p.account_id, &kind),
        json!({"key": key, "cert": cert}).to_string().as_bytes(),
    );
    let mut tx = state.db.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO signing_keys (account_id, kind, key_sealed, key_id, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id, kind) DO NOTHING",
    )
    .bind(&p.account_id)
    .bind(&kind)
    .bind(sealed)
    .bind(&pcr8)
    .bind(state.clock.now())
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 1 {
        audit::record(
            state,
            tx,
            p,
            Event {
                action: "Signing Key Generated",
                entity_type: "signing_key",
                entity_id: &pcr8,
                details: json!({"kind": "nitro", "app_id": app_id, "pcr8": pcr8,
                                "note": "P-384 and a self-signed certificate, sealed under the master key"}),
            },
        )
        .await?;
    } else {
        tx.commit().await?;
    }
    let plain = load(state, &p.account_id, &kind)
        .await?
        .ok_or_else(|| Error::Internal("the app's signing key vanished".into()))?;
    parse(plain)
}

async fn load(state: &State, account_id: &str, kind: &str) -> Result<Option<String>> {
    let row =
        sqlx::query("SELECT key_sealed FROM signing_keys WHERE account_id = $1 AND kind = $2")
            .bind(account_id)
            .bind(kind)
            .fetch_optional(state.db.writer())
            .await?;
    let Some(row) = row else { return Ok(None) };
    let sealed: Vec<u8> = row.try_get(0)?;
    let plain = state.master().open(&context(account_id, kind), &sealed)?;
    String::from_utf8(plain)
        .map(Some)
        .map_err(|_| Error::Decrypt {
            what: context(account_id, kind),
        })
}

/// Re-seals every signing key under `keys`' primary key (master key rotation).
pub async fn reseal_all(db: &Db, keys: &MasterKey) -> Result<usize> {
    let mut tx = db.begin().await?;
    let rows = sqlx::query("SELECT account_id, kind, key_sealed FROM signing_keys")
        .fetch_all(&mut *tx)
        .await?;
    let mut n = 0;
    for r in &rows {
        let (account, kind): (String, String) = (r.try_get(0)?, r.try_get(1)?);
        let sealed: Vec<u8> = r.try_get(2)?;
        if keys.is_current(&sealed) {
            continue;
        }
        let ctx = context(&account, &kind);
        let plain = keys.open(&ctx, &sealed)?;
        sqlx::query("UPDATE signing_keys SET key_sealed = $1 WHERE account_id = $2 AND kind = $3")
            .bind(keys.seal(&ctx, &plain))
            .bind(&account)
            .bind(&kind)
            .execute(&mut *tx)
            .await?;
        n += 1;
    }
    tx.commit().await?;
    Ok(n)
}
