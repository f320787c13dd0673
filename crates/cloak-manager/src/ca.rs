//! The manager's certificate authority: an ECDSA P-384 root and an issuing key (path length 0),
//! created on first start and kept in the database with their private keys sealed under the
//! master key, so every replica signs with the same CA.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P384_SHA384,
};
use sqlx::Row;

use crate::error::{Error, Result};
use crate::secrets::MasterKey;
use crate::store::Db;

/// The CA as loaded by one replica.
pub struct Ca {
    /// PEM of the root certificate.
    pub root_pem: String,
    /// PEM of the issuing certificate (signed by the root).
    pub issuing_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca(*****)")
    }
}

impl Ca {
    /// The chain a client verifies with: issuing certificate, then the root.
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.issuing_pem, self.root_pem)
    }

    /// Signs `params` for the key `spki_der`.
    pub fn sign(&self, params: &CertificateParams, spki_der: &[u8]) -> Result<rcgen::Certificate> {
        let spki = rcgen::SubjectPublicKeyInfo::from_der(spki_der)
            .map_err(|e| Error::field("csr", format!("the public key cannot be used: {e}")))?;
        params
            .signed_by(&spki, &self.issuer)
            .map_err(|e| Error::Internal(format!("signing a certificate: {e}")))
    }
}

fn ca_params(cn: &str, path_len: Option<u8>, days: i64, now: i64) -> Result<CertificateParams> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "cloak manager");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::from_unix_timestamp(now)
        .map_err(|e| Error::Internal(format!("clock: {e}")))?;
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::days(days);
    Ok(p)
}

/// Loads the CA, creating it on first use (once, even with replicas starting together).
pub async fn load_or_create(db: &Db, master: &MasterKey, now: i64) -> Result<Ca> {
    if let Some(ca) = load(db, master).await? {
        return Ok(ca);
    }
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)
        .map_err(|e| Error::Internal(format!("CA key: {e}")))?;
    let root_params = ca_params("cloak manager root CA", None, 3650, now)?;
    let root = root_params
        .self_signed(&root_key)
        .map_err(|e| Error::Internal(format!("CA certificate: {e}")))?;
    let root_issuer = Issuer::new(root_params, root_key);
    let issuing_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)
        .map_err(|e| Error::Internal(format!("CA key: {e}")))?;
    let issuing = ca_params("cloak manager issuing CA", Some(0), 1825, now)?
        .signed_by(&issuing_key, &root_issuer)
        .map_err(|e| Error::Internal(format!("CA certificate: {e}")))?;
    let root_sealed = master.seal("ca:root:key", root_issuer.key().serialize_der().as_slice());
    let issuing_sealed = master.seal("ca:issuing:key", issuing_key.serialize_der().as_slice());
    let mut tx = db.begin().await?;
    // Another replica may have created it in between: the first insert wins.
    let inserted = sqlx::query(
        "INSERT INTO ca_keys (name, cert_pem, key_sealed, created_at) VALUES ('root', $1, $2, $5), \
         ('issuing', $3, $4, $5) ON CONFLICT (name) DO NOTHING",
    )
    .bind(root.pem())
    .bind(root_sealed)
    .bind(issuing.pem())
    .bind(issuing_sealed)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    if inserted > 0 {
        tracing::info!("created the manager's certificate authority (ECDSA P-384)");
    }
    load(db, master)
        .await?
        .ok_or_else(|| Error::Internal("the CA vanished after its creation".into()))
}

async fn load(db: &Db, master: &MasterKey) -> Result<Option<Ca>> {
    let rows = sqlx::query("SELECT name, cert_pem, key_sealed FROM ca_keys")
        .fetch_all(db.reader())
        .await?;
    let mut root = None;
    let mut issuing = None;
    for r in &rows {
        let name: String = r.try_get(0)?;
        let pem: String = r.try_get(1)?;
        let sealed: Vec<u8> = r.try_get(2)?;
        match name.as_str() {
            "root" => root = Some(pem),
            "issuing" => issuing = Some((pem, sealed)),
            _ => {}
        }
    }
    let (Some(root_pem), Some((issuing_pem, sealed))) = (root, issuing) else {
        return Ok(None);
    };
    let der = master.open("ca:issuing:key", &sealed)?;
    let key = KeyPair::try_from(der.as_slice())
        .map_err(|e| Error::Internal(format!("the stored CA key: {e}")))?;
    let issuer = Issuer::from_ca_cert_pem(&issuing_pem, key)
        .map_err(|e| Error::Internal(format!("the stored CA certificate: {e}")))?;
    Ok(Some(Ca {
        root_pem,
        issuing_pem,
        issuer,
    }))
}

/// Re-seals the CA keys under the primary of `keys` (master key rotation); returns how many.
pub async fn reseal_all(db: &Db, keys: &MasterKey) -> Result<usize> {
    let mut tx = db.begin().await?;
    let rows = sqlx::query("SELECT name, key_sealed FROM ca_keys")
        .fetch_all(&mut *tx)
        .await?;
    let mut n = 0;
    for r in &rows {
        let name: String = r.try_get(0)?;
        let sealed: Vec<u8> = r.try_get(1)?;
        if keys.is_current(&sealed) {
            continue;
        }
        let context = format!("ca:{name}:key");
        let plain = keys.open(&context, &sealed)?;
        sqlx::query("UPDATE ca_keys SET key_sealed = $1 WHERE name = $2")
            .bind(keys.seal(&context, &plain))
            .bind(&name)
            .execute(&mut *tx)
            .await?;
        n += 1;
    }
    tx.commit().await?;
    Ok(n)
}
