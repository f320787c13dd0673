//! The manager's certificate authority: an ECDSA P-384 root and an issuing key (path length 0),
//! created on first start and kept in the database with their private keys sealed under the
//! master key, so every replica signs with the same CA. Or imported (`cloak manager ca import`)
//! with the issuing key as a file, or in a PKCS#11 token: then the database holds the sealed
//! RFC 7512 URI (its PIN best as `pin-source=file:`) and each replica opens the token
//! (`ca_token`). Each process loads the CA once ([`get`]); restart replicas after an import.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P384_SHA384,
};
use sqlx::Row;

use crate::error::{Error, Result};
use crate::secrets::MasterKey;
use crate::store::Db;

/// How long a CRL from `GET /v1/ca/crl` is valid (its nextUpdate): relying parties that
/// cache it see a revocation at most this late.
pub const CRL_VALIDITY: i64 = 3600;

/// The CA as loaded by one replica.
pub struct Ca {
    /// PEM of the root certificate.
    pub root_pem: String,
    /// PEM of the issuing certificate (signed by the root).
    pub issuing_pem: String,
    issuer: Issuer<'static, CaKey>,
}

/// The issuing key: in memory (created, or imported from a file) or in a token.
#[derive(Debug)]
pub enum CaKey {
    Memory(Box<KeyPair>),
    Token(Box<crate::ca_token::TokenKey>),
}

impl rcgen::PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            CaKey::Memory(k) => k.der_bytes(),
            CaKey::Token(k) => k.der_bytes(),
        }
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            CaKey::Memory(k) => k.algorithm(),
            CaKey::Token(k) => k.algorithm(),
        }
    }
}

impl rcgen::SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        match self {
            CaKey::Memory(k) => k.sign(msg),
            CaKey::Token(k) => k.sign(msg),
        }
    }
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca(*****)")
    }
}

impl Ca {
    /// The chain a client verifies with: issuing certificate, then the root.
    pub fn chain_pem(&self) -> String {
        if self.issuing_pem == self.root_pem {
            // An imported one-level CA: the issuing certificate is the root.
            return self.issuing_pem.clone();
        }
        format!("{}{}", self.issuing_pem, self.root_pem)
    }

    /// Whether the issuing key is in a PKCS#11 token.
    pub fn in_token(&self) -> bool {
        matches!(self.issuer.key(), CaKey::Token(_))
    }

    /// A CRL signed by the issuing CA listing `revoked` (serial, revocation time); valid for
    /// `CRL_VALIDITY` from `now`, numbered by `now` (so later lists have larger numbers).
    pub fn crl(
        &self,
        revoked: &[(Vec<u8>, i64)],
        now: i64,
    ) -> Result<rcgen::CertificateRevocationList> {
        let t = |s: i64| {
            time::OffsetDateTime::from_unix_timestamp(s)
                .map_err(|e| Error::Internal(format!("CRL time: {e}")))
        };
        let params = rcgen::CertificateRevocationListParams {
            this_update: t(now)?,
            next_update: t(now + CRL_VALIDITY)?,
            crl_number: rcgen::SerialNumber::from(now.max(0).to_be_bytes().to_vec()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|(serial, at)| {
                    Ok(rcgen::RevokedCertParams {
                        serial_number: rcgen::SerialNumber::from(serial.clone()),
                        revocation_time: t(*at)?,
                        // The build was revoked: its certificates' subject stopped being trusted.
                        reason_code: Some(rcgen::RevocationReason::CessationOfOperation),
                        invalidity_date: None,
                    })
                })
                .collect::<Result<_>>()?,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer)
            .map_err(|e| Error::Internal(format!("signing the CRL: {e}")))
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

/// Validity of the root certificate, days.
const ROOT_DAYS: i64 = 3650;
/// Validity of the issuing certificate, days (it expires first).
const ISSUING_DAYS: i64 = 1825;

/// When the issuing certificate expires (Unix seconds), if the CA exists yet.
pub async fn expiry(db: &Db) -> Result<Option<i64>> {
    let created: Option<i64> =
        sqlx::query_scalar("SELECT created_at FROM ca_keys WHERE name = 'issuing'")
            .fetch_optional(db.reader())
            .await?;
    Ok(created.map(|c| c + ISSUING_DAYS * 86400))
}

/// Loads the CA, creating it on first use (once, even with replicas starting together).
pub async fn load_or_create(db: &Db, master: &MasterKey, now: i64) -> Result<Ca> {
    if let Some(ca) = load(db, master).await? {
        return Ok(ca);
    }
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)
        .map_err(|e| Error::Internal(format!("CA key: {e}")))?;
    let root_params = ca_params("cloak manager root CA", None, ROOT_DAYS, now)?;
    let root = root_params
        .self_signed(&root_key)
        .map_err(|e| Error::Internal(format!("CA certificate: {e}")))?;
    let root_issuer = Issuer::new(root_params, root_key);
    let issuing_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)
        .map_err(|e| Error::Internal(format!("CA key: {e}")))?;
    let issuing = ca_params("cloak manager issuing CA", Some(0), ISSUING_DAYS, now)?
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
    let key = match std::str::from_utf8(&der) {
        Ok(uri) if uri.starts_with("pkcs11:") => {
            let spki = cert_spki(&issuing_pem)?;
            CaKey::Token(Box::new(crate::ca_token::TokenKey::open(uri, &spki)?))
        }
        _ => CaKey::Memory(Box::new(
            KeyPair::try_from(der.as_slice())
                .map_err(|e| Error::Internal(format!("the stored CA key: {e}")))?,
        )),
    };
    let issuer = Issuer::from_ca_cert_pem(&issuing_pem, key)
        .map_err(|e| Error::Internal(format!("the stored CA certificate: {e}")))?;
    Ok(Some(Ca {
        root_pem,
        issuing_pem,
        issuer,
    }))
}

/// The CA of this process: loaded (or created) once, then shared by every request.
pub async fn get(state: &crate::State) -> Result<std::sync::Arc<Ca>> {
    state
        .ca
        .get_or_try_init(|| async {
            load_or_create(&state.db, &state.master(), state.clock.now())
                .await
                .map(std::sync::Arc::new)
        })
        .await
        .cloned()
}

fn pem_certs(pem: &str) -> Vec<Vec<u8>> {
    use base64::Engine;
    let mut out = Vec::new();
    let mut body = String::new();
    let mut inside = false;
    for line in pem.lines().map(str::trim) {
        if line == "-----BEGIN CERTIFICATE-----" {
            inside = true;
            body.clear();
        } else if line == "-----END CERTIFICATE-----" {
            if let Ok(d) = base64::engine::general_purpose::STANDARD.decode(&body) {
                out.push(d);
            }
            inside = false;
        } else if inside {
            body.push_str(line);
        }
    }
    out
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn cert_spki(pem: &str) -> Result<Vec<u8>> {
    let der = pem_certs(pem)
        .into_iter()
        .next()
        .ok_or_else(|| Error::Internal("the stored CA certificate is not PEM".into()))?;
    cloak_attest::extension::cert_facts(&der)
        .map(|f| f.spki_der)
        .map_err(|e| Error::Internal(format!("the stored CA certificate: {e}")))
}

/// The issuing key given to `cloak manager ca import`.
#[derive(Debug)]
pub enum ImportKey {
    /// PKCS#8 (or SEC1/PKCS#1 as rcgen reads them) PEM text of the key.
    Pem(String),
    /// An RFC 7512 URI of a key in a PKCS#11 token.
    Pkcs11(String),
}

/// What an import stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    pub issuing_subject: String,
    pub root_subject: String,
    pub key_in_token: bool,
    pub replaced: bool,
}

/// Replaces (with `replace`) or installs the CA: `cert_pem` holds the issuing CA certificate,
/// optionally followed by its root; `root_pem` gives the root otherwise; a self-signed issuing
/// certificate is its own root. Checked: both are CA certificates, the root signed the issuing
/// certificate (ECDSA), and the key is the issuing certificate's. Offline: the caller makes
/// sure no replica runs (each loads the CA once).
pub async fn import(
    db: &Db,
    master: &MasterKey,
    cert_pem: &str,
    root_pem: Option<&str>,
    key: ImportKey,
    replace: bool,
    now: i64,
) -> Result<Imported> {
    let bad = |what: &str, why: String| Error::field(what, why);
    let mut chain = pem_certs(cert_pem);
    if chain.is_empty() {
        return Err(bad("--cert", "holds no PEM certificate".into()));
    }
    if chain.len() > 2 {
        return Err(bad(
            "--cert",
            "holds more than the issuing CA and its root; intermediates between them are not \
             supported: give the CA that signs leaves and the root it chains to"
                .into(),
        ));
    }
    let issuing = chain.remove(0);
    let root = match (root_pem, chain.pop()) {
        (Some(r), None) => pem_certs(r)
            .into_iter()
            .next()
            .ok_or_else(|| bad("--root", "holds no PEM certificate".into()))?,
        (None, Some(r)) => r,
        (Some(_), Some(_)) => {
            return Err(bad(
                "--root",
                "the --cert file already holds a root after the issuing certificate: give one"
                    .into(),
            ))
        }
        (None, None) => issuing.clone(),
    };
    let facts = |der: &[u8], what: &str| {
        cloak_attest::extension::cert_facts(der).map_err(|e| bad(what, e.to_string()))
    };
    let issuing_facts = facts(&issuing, "--cert")?;
    let root_facts = facts(&root, "--root")?;
    for (f, what) in [(&issuing_facts, "--cert"), (&root_facts, "--root")] {
        if !f.is_ca {
            return Err(bad(
                what,
                format!(
                    "{} is not a CA certificate (basicConstraints cA is not set)",
                    f.subject
                ),
            ));
        }
        if (f.not_after as i64) < now {
            return Err(bad(
                what,
                format!("{} expired at {}", f.subject, f.not_after),
            ));
        }
    }
    cloak_attest::extension::verify_issued_by(&issuing, &root).map_err(|e| {
        bad(
            "--root",
            format!(
                "{} is not signed by {} ({e}); ECDSA P-256/P-384 CAs are supported",
                issuing_facts.subject, root_facts.subject
            ),
        )
    })?;
    // What webpki (the probe below) does not look at, OpenSSL and other relying parties do:
    // keyCertSign in a CA's keyUsage, a trust anchor's own constraints.
    for (f, what) in [(&issuing_facts, "--cert"), (&root_facts, "--root")] {
        if f.key_cert_sign == Some(false) {
            return Err(bad(
                what,
                format!(
                    "{}: its keyUsage lacks keyCertSign, so the certificates it signs do not verify",
                    f.subject
                ),
            ));
        }
    }
    if issuing != root && root_facts.path_len == Some(0) {
        return Err(bad(
            "--root",
            format!(
                "{} has basicConstraints pathlen:0: it may not certify the CA {} below it",
                root_facts.subject, issuing_facts.subject
            ),
        ));
    }
    let (sealed, signer) = match &key {
        ImportKey::Pem(text) => {
            let kp = KeyPair::from_pem(text)
                .map_err(|e| {
                bad(
                    "--key",
                    format!("not an unencrypted PKCS#8 EC P-256/P-384 or RSA key ({e}); convert one with `openssl pkcs8 -topk8 -nocrypt`"),
                )
            })?;
            if rcgen::PublicKeyData::subject_public_key_info(&kp) != issuing_facts.spki_der {
                return Err(bad(
                    "--key",
                    format!("is not the key of {}", issuing_facts.subject),
                ));
            }
            (
                master.seal("ca:issuing:key", kp.serialize_der().as_slice()),
                CaKey::Memory(Box::new(kp)),
            )
        }
        ImportKey::Pkcs11(uri) => {
            // Opens the token and signs a test message the certificate's key must verify.
            let token = crate::ca_token::TokenKey::open(uri, &issuing_facts.spki_der)?;
            (
                master.seal("ca:issuing:key", uri.as_bytes()),
                CaKey::Token(Box::new(token)),
            )
        }
    };
    probe(&issuing, &root, signer, now).map_err(|why| {
        bad(
            "--cert",
            format!(
                "{} cannot issue what relying parties accept: {why} (the issuing CA needs \
                 keyUsage keyCertSign and cRLSign, no extendedKeyUsage that excludes \
                 serverAuth or clientAuth, a validity covering now, and a chain to the root)",
                issuing_facts.subject
            ),
        )
    })?;
    let mut tx = db.begin().await?;
    let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ca_keys")
        .fetch_one(&mut *tx)
        .await?;
    if existing > 0 && !replace {
        return Err(Error::Conflict(
            "this manager already has a CA: give --replace to replace it (certificates it issued \
             stop verifying against the new chain)"
                .into(),
        ));
    }
    sqlx::query("DELETE FROM ca_keys").execute(&mut *tx).await?;
    sqlx::query(
        "INSERT INTO ca_keys (name, cert_pem, key_sealed, created_at) VALUES ('root', $1, $2, $5), \
         ('issuing', $3, $4, $5)",
    )
    .bind(pem_of(&root))
    // The root's key is not the manager's to keep: an empty placeholder.
    .bind(Vec::<u8>::new())
    .bind(pem_of(&issuing))
    .bind(sealed)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Imported {
        issuing_subject: issuing_facts.subject,
        root_subject: root_facts.subject,
        key_in_token: matches!(key, ImportKey::Pkcs11(_)),
        replaced: existing > 0,
    })
}

/// Signs a leaf (as `certs` does: serverAuth and clientAuth, a DNS name) and an empty CRL with
/// the imported CA and verifies both as the relying parties do (webpki, as in rustls: the
/// launcher pinning the chain, the manager's client-certificate verifier, CRL consumers), so a
/// CA whose certificates or CRLs would be refused is refused at import, not in production.
fn probe(issuing: &[u8], root: &[u8], key: CaKey, now: i64) -> std::result::Result<(), String> {
    use rcgen::{
        CertificateRevocationListParams, ExtendedKeyUsagePurpose, KeyIdMethod, SerialNumber,
    };
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
    use std::sync::Arc;
    let t = |s: i64| time::OffsetDateTime::from_unix_timestamp(s).map_err(|e| e.to_string());
    let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(issuing.to_vec()), key)
        .map_err(|e| e.to_string())?;
    let leaf_key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let name = "probe.cloak.invalid";
    let mut p = CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.not_before = t(now - 60)?;
    p.not_after = t(now + 3600)?;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let leaf = p
        .signed_by(&leaf_key, &issuer)
        .map_err(|e| format!("signing a leaf: {e}"))?;
    let crl = CertificateRevocationListParams {
        this_update: t(now - 60)?,
        next_update: t(now + 3600)?,
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .map_err(|e| format!("signing a CRL: {e}"))?;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(root.to_vec()))
        .map_err(|e| format!("the root as a trust anchor: {e}"))?;
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let intermediates: Vec<CertificateDer<'static>> = if issuing == root {
        Vec::new()
    } else {
        vec![CertificateDer::from(issuing.to_vec())]
    };
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.max(0) as u64));
    let client = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .with_crls([CertificateRevocationListDer::from(crl.der().to_vec())])
    .only_check_end_entity_revocation()
    .build()
    .map_err(|e| e.to_string())?;
    client
        .verify_client_cert(leaf.der(), &intermediates, at)
        .map_err(|e| format!("a client certificate it signs (with its CRL): {e}"))?;
    let server = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name).map_err(|e| e.to_string())?;
    server
        .verify_server_cert(leaf.der(), &intermediates, &server_name, &[], at)
        .map_err(|e| format!("a server certificate it signs: {e}"))?;
    Ok(())
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
        // An imported root's key is not kept (empty placeholder).
        if sealed.is_empty() || keys.is_current(&sealed) {
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
