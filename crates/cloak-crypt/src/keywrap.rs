//! Recipients across schemes: parse `--recipient` arguments, wrap a layer's private options
//! for all of them, open a layer's annotations with the keys at hand, and add or remove
//! recipients of an already wrapped layer without touching its ciphertext.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::error::{Error, Result};
use crate::keyprovider::{self, Config};
use crate::keys::{self, Certificate, PrivateKey, PublicKey};
use crate::spec::{b64_encode, join_entries, wrapped_keys, KEYS_PREFIX};
use crate::{jwe, pkcs7};

/// One recipient of an encryption.
#[derive(Clone, Debug)]
pub enum Recipient {
    /// `jwe:FILE`: a public key (RSA or EC), a certificate or a JWK.
    Jwe {
        /// The argument, for messages.
        spec: String,
        /// The key.
        key: PublicKey,
        /// A JWK's `alg`, if it names one.
        alg: Option<String>,
    },
    /// `pkcs7:FILE`: an X.509 certificate with an RSA key.
    Pkcs7 {
        /// The argument.
        spec: String,
        /// The certificate.
        cert: Certificate,
    },
    /// `provider:NAME[:PARAMS]`: a configured keyprovider.
    Provider {
        /// Provider name (part of the annotation key).
        name: String,
        /// Parameters handed to it.
        params: Option<String>,
    },
}

impl Recipient {
    /// Parse `jwe:FILE`, `pkcs7:FILE` or `provider:NAME[:PARAMS]`.
    pub fn parse(spec: &str) -> Result<Self> {
        let err = |reason: &str| Error::Recipient {
            spec: spec.into(),
            reason: reason.into(),
        };
        let (scheme, rest) = spec.split_once(':').ok_or_else(|| {
            err("give the scheme: jwe:PUBLIC-KEY, pkcs7:CERTIFICATE or provider:NAME[:PARAMS]")
        })?;
        match scheme {
            "jwe" => {
                // A JWK may name its algorithm (ocicrypt ≥ 1.1.10 honours it too).
                let (key, alg) = keys::recipient_key_from_file(rest.as_ref())?;
                if let Some(alg) = &alg {
                    jwe::check_alg(&key, alg).map_err(|e| err(&e))?;
                }
                Ok(Recipient::Jwe {
                    spec: spec.into(),
                    key,
                    alg,
                })
            }
            "pkcs7" => Ok(Recipient::Pkcs7 {
                spec: spec.into(),
                cert: keys::certificate_from_file(rest.as_ref())?,
            }),
            "provider" => {
                let (name, params) = match rest.split_once(':') {
                    Some((n, p)) => (n, Some(p.to_string())),
                    None => (rest, None),
                };
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return Err(err("a provider name is letters, digits, '-', '_' and '.'"));
                }
                Ok(Recipient::Provider {
                    name: name.into(),
                    params,
                })
            }
            "pgp" => Err(err(
                "OpenPGP recipients are not supported by cloak; use jwe: (RSA or EC) or pkcs7:",
            )),
            _ => Err(err("unknown scheme: use jwe:, pkcs7: or provider:")),
        }
    }

    /// The annotation suffix it is stored under (`jwe`, `pkcs7`, `provider.NAME`).
    pub fn scheme(&self) -> String {
        match self {
            Recipient::Jwe { .. } => "jwe".into(),
            Recipient::Pkcs7 { .. } => "pkcs7".into(),
            Recipient::Provider { name, .. } => format!("provider.{name}"),
        }
    }
}

/// RFC 7638 thumbprint of a public key: cloak writes it as the recipient's `kid` so the
/// recipient can later be removed by its public key alone.
pub fn thumbprint(key: &PublicKey) -> String {
    use rsa::traits::PublicKeyParts;
    let b64 = |b: &[u8]| jwe::B64URL.encode(b);
    let canonical = match key {
        PublicKey::Rsa(k) => {
            json!({"e": b64(&k.e().to_bytes_be()), "kty": "RSA", "n": b64(&k.n().to_bytes_be())})
        }
        other => {
            let jwk: Value = serde_json::from_str(&match other {
                PublicKey::P256(k) => k.to_jwk_string(),
                PublicKey::P384(k) => k.to_jwk_string(),
                PublicKey::P521(k) => k.to_jwk_string(),
                PublicKey::Rsa(_) => unreachable!(),
            })
            .expect("JWK is JSON");
            json!({"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]})
        }
    };
    // serde_json's map is ordered: the members are already in lexicographic order.
    b64(&sha2::Sha256::digest(canonical.to_string().as_bytes()))
}

/// Wrap `privopts` for `recipients`: `scheme → one new entry` (one message per scheme holds
/// all of that scheme's recipients, as Go does).
pub fn wrap(
    privopts: &[u8],
    recipients: &[Recipient],
    providers: &Config,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let jwe_recipients: Vec<jwe::JweRecipient> = recipients
        .iter()
        .filter_map(|r| match r {
            Recipient::Jwe { key, alg, .. } => Some(jwe::JweRecipient {
                key: key.clone(),
                alg: alg.clone(),
                kid: Some(thumbprint(key)),
            }),
            _ => None,
        })
        .collect();
    if !jwe_recipients.is_empty() {
        out.insert(
            "jwe".to_string(),
            jwe::wrap_recipients(privopts, &jwe_recipients)?,
        );
    }
    let certs: Vec<Certificate> = recipients
        .iter()
        .filter_map(|r| match r {
            Recipient::Pkcs7 { cert, .. } => Some(cert.clone()),
            _ => None,
        })
        .collect();
    if !certs.is_empty() {
        out.insert("pkcs7".to_string(), pkcs7::wrap(privopts, &certs)?);
    }
    for r in recipients {
        if let Recipient::Provider { name, params } = r {
            out.insert(
                r.scheme(),
                keyprovider::wrap(providers, name, params.as_deref(), privopts)?,
            );
        }
    }
    Ok(out)
}

/// What opened a layer.
#[derive(Debug)]
pub struct Opened {
    /// The private options JSON.
    pub privopts: Vec<u8>,
    /// The scheme whose entry opened.
    pub scheme: String,
}

/// Open a layer's wrapped keys with `keys` (JWE and PKCS7) and the configured providers.
/// `Ok(None)` when nothing opens; malformed entries are skipped unless nothing else opens.
pub fn unwrap(
    annotations: &BTreeMap<String, String>,
    keys: &[PrivateKey],
    providers: &Config,
) -> Result<Option<Opened>> {
    let mut first_error = None;
    for (scheme, entries) in wrapped_keys(annotations) {
        for entry in entries {
            let r = match scheme.as_str() {
                "jwe" => jwe::unwrap(&entry, keys),
                "pkcs7" => pkcs7::unwrap(&entry, keys),
                s => match s.strip_prefix("provider.") {
                    Some(name) if providers.providers.contains_key(name) => {
                        keyprovider::unwrap(providers, name, &entry).map(Some)
                    }
                    _ => Ok(None),
                },
            };
            match r {
                Ok(Some(privopts)) => return Ok(Some(Opened { privopts, scheme })),
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// `jwe (2 recipients), pkcs7 (1 recipient)`: schemes and recipient counts, no secrets.
pub fn summary(annotations: &BTreeMap<String, String>) -> Vec<(String, usize)> {
    wrapped_keys(annotations)
        .into_iter()
        .map(|(scheme, entries)| {
            let n = entries
                .iter()
                .map(|e| match scheme.as_str() {
                    "jwe" => jwe::recipient_count(e),
                    "pkcs7" => pkcs7::recipient_count(e),
                    _ => 1,
                })
                .sum();
            (scheme, n)
        })
        .collect()
}

/// Human form of [`summary`].
pub fn describe(annotations: &BTreeMap<String, String>) -> String {
    let s = summary(annotations);
    if s.is_empty() {
        return "no recipients".into();
    }
    s.iter()
        .map(|(scheme, n)| format!("{scheme} ({n} recipient{})", if *n == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Append new entries to a layer's annotations (Go's `preWrapKeys`: `old,new`).
pub fn append(annotations: &mut BTreeMap<String, String>, wrapped: BTreeMap<String, Vec<u8>>) {
    for (scheme, entry) in wrapped {
        let key = format!("{KEYS_PREFIX}{scheme}");
        let value = b64_encode(&entry);
        annotations
            .entry(key)
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
}

/// Remove `recipient` from a layer's annotations; returns how many recipient entries went.
/// JWE recipients are found by the `kid` cloak writes (the key's thumbprint), PKCS7 ones by
/// issuer and serial number, providers by name.
pub fn remove(annotations: &mut BTreeMap<String, String>, recipient: &Recipient) -> usize {
    let key = format!("{KEYS_PREFIX}{}", recipient.scheme());
    let Some(entries) = wrapped_keys(annotations).remove(&recipient.scheme()) else {
        return 0;
    };
    if let Recipient::Provider { .. } = recipient {
        annotations.remove(&key);
        return entries.len();
    }
    let mut removed = 0;
    let mut kept = Vec::new();
    for entry in entries {
        let (rest, n) = match recipient {
            Recipient::Jwe { key, .. } => jwe::without_kid(&entry, &thumbprint(key)),
            Recipient::Pkcs7 { cert, .. } => {
                pkcs7::without_recipient(&entry, &cert.issuer, &cert.serial)
            }
            Recipient::Provider { .. } => unreachable!(),
        };
        removed += n;
        kept.extend(rest);
    }
    if kept.is_empty() {
        annotations.remove(&key);
    } else {
        annotations.insert(key, join_entries(&kept));
    }
    removed
}
