//! JWE key wrapping (`keywrap/jwe`), limited to the profile ocicrypt uses.
//!
//! Writing: `RSA-OAEP` for RSA recipients, `ECDH-ES+A256KW` for EC ones, content encrypted with
//! `A256GCM`; one message for all recipients, flattened JSON for one and general JSON for
//! several (what go-jose's `FullSerialize` gives). Reading: compact, flattened and general
//! forms; `RSA-OAEP`, `RSA-OAEP-256`, `ECDH-ES` (direct) and `ECDH-ES+A128KW/A192KW/A256KW`;
//! `A128GCM`, `A192GCM`, `A256GCM`. Every key is tried against every recipient.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::engine::{general_purpose::GeneralPurpose, DecodePaddingMode, GeneralPurposeConfig};
use base64::{alphabet, Engine};
use elliptic_curve::sec1::{FromEncodedPoint, ModulusSize, ToEncodedPoint};
use elliptic_curve::{AffinePoint, CurveArithmetic, FieldBytesSize, JwkParameters};
use rand::RngCore;
use rsa::Oaep;
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::error::{Error, Result};
use crate::keys::{PrivateKey, PublicKey, Secret};

/// Unpadded base64url, tolerant of padding when reading.
pub(crate) const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn field(v: &Value, k: &str) -> Option<Vec<u8>> {
    B64URL.decode(v.get(k)?.as_str()?).ok()
}

/// RFC 7518 §4.6.2 Concat KDF with SHA-256 (`apu`/`apv` as given, usually empty).
fn concat_kdf(z: &[u8], alg: &str, apu: &[u8], apv: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 1u32;
    while out.len() < len {
        let mut h = sha2::Sha256::new();
        h.update(counter.to_be_bytes());
        h.update(z);
        for part in [alg.as_bytes(), apu, apv] {
            h.update((part.len() as u32).to_be_bytes());
            h.update(part);
        }
        h.update(((len * 8) as u32).to_be_bytes());
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// An ephemeral ECDH on curve `C`: the `epk` JWK and the shared secret Z.
fn ecdh_ephemeral<C>(to: &elliptic_curve::PublicKey<C>) -> (Value, Vec<u8>)
where
    C: CurveArithmetic + JwkParameters,
    AffinePoint<C>: FromEncodedPoint<C> + ToEncodedPoint<C>,
    FieldBytesSize<C>: ModulusSize,
{
    let eph = elliptic_curve::ecdh::EphemeralSecret::<C>::random(&mut rand::rngs::OsRng);
    let shared = eph.diffie_hellman(to);
    let epk: Value = serde_json::from_str(&eph.public_key().to_jwk_string()).expect("JWK is JSON");
    (epk, shared.raw_secret_bytes().to_vec())
}

/// Z for a received `epk` and our secret key on curve `C`.
fn ecdh_static<C>(secret: &elliptic_curve::SecretKey<C>, epk: &Value) -> Option<Vec<u8>>
where
    C: CurveArithmetic + JwkParameters,
    AffinePoint<C>: FromEncodedPoint<C> + ToEncodedPoint<C>,
    FieldBytesSize<C>: ModulusSize,
{
    let their = elliptic_curve::PublicKey::<C>::from_jwk_str(&epk.to_string()).ok()?;
    let shared =
        elliptic_curve::ecdh::diffie_hellman(secret.to_nonzero_scalar(), their.as_affine());
    Some(shared.raw_secret_bytes().to_vec())
}

fn kw_wrap(kek: &[u8], cek: &[u8]) -> Vec<u8> {
    match kek.len() {
        16 => aes_kw::KekAes128::new(kek.into()).wrap_vec(cek),
        24 => aes_kw::KekAes192::new(kek.into()).wrap_vec(cek),
        _ => aes_kw::KekAes256::new(kek.into()).wrap_vec(cek),
    }
    .expect("a 32-byte CEK wraps")
}

fn kw_unwrap(kek: &[u8], wrapped: &[u8]) -> Option<Vec<u8>> {
    match kek.len() {
        16 => aes_kw::KekAes128::new(kek.into()).unwrap_vec(wrapped),
        24 => aes_kw::KekAes192::new(kek.into()).unwrap_vec(wrapped),
        32 => aes_kw::KekAes256::new(kek.into()).unwrap_vec(wrapped),
        _ => return None,
    }
    .ok()
}

/// One recipient of a JWE message.
#[derive(Clone, Debug)]
pub struct JweRecipient {
    /// Its public key.
    pub key: PublicKey,
    /// Key management algorithm; `None` is ocicrypt's default (`RSA-OAEP` for RSA,
    /// `ECDH-ES+A256KW` for EC). A JWK's `alg` sets it, as in ocicrypt ≥ 1.1.10.
    pub alg: Option<String>,
    /// Written into the recipient's header.
    pub kid: Option<String>,
}

/// The key management algorithms cloak writes for a key type.
pub fn check_alg(key: &PublicKey, alg: &str) -> std::result::Result<(), String> {
    let ok = match key {
        PublicKey::Rsa(_) => ["RSA-OAEP", "RSA-OAEP-256"].contains(&alg),
        _ => ["ECDH-ES+A128KW", "ECDH-ES+A192KW", "ECDH-ES+A256KW"].contains(&alg),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "alg {alg} does not fit a {} key (RSA: RSA-OAEP, RSA-OAEP-256; EC: ECDH-ES+A128KW, ECDH-ES+A192KW, ECDH-ES+A256KW)",
            key.kind()
        ))
    }
}

/// `(header, encrypted_key)` for one recipient of a 32-byte CEK.
fn wrap_for(r: &JweRecipient, cek: &[u8]) -> Result<(Value, Vec<u8>)> {
    let (mut header, key) = wrap_key(&r.key, cek, r.alg.as_deref())?;
    if let Some(kid) = &r.kid {
        header["kid"] = kid.as_str().into();
    }
    Ok((header, key))
}

fn wrap_key(to: &PublicKey, cek: &[u8], alg: Option<&str>) -> Result<(Value, Vec<u8>)> {
    if let Some(alg) = alg {
        check_alg(to, alg).map_err(Error::Wrap)?;
    }
    let ec = |(epk, z): (Value, Vec<u8>)| {
        let alg = alg.unwrap_or("ECDH-ES+A256KW");
        let len = match alg {
            "ECDH-ES+A128KW" => 16,
            "ECDH-ES+A192KW" => 24,
            _ => 32,
        };
        let kek = concat_kdf(&z, alg, &[], &[], len);
        (json!({"alg": alg, "epk": epk}), kw_wrap(&kek, cek))
    };
    Ok(match to {
        PublicKey::Rsa(k) => {
            let alg = alg.unwrap_or("RSA-OAEP");
            let mut rng = rand::rngs::OsRng;
            let wrapped = if alg == "RSA-OAEP-256" {
                k.encrypt(&mut rng, Oaep::new::<sha2::Sha256>(), cek)
            } else {
                k.encrypt(&mut rng, Oaep::new::<sha1::Sha1>(), cek)
            }
            .map_err(|e| Error::Wrap(format!("{alg}: {e}")))?;
            (json!({ "alg": alg }), wrapped)
        }
        PublicKey::P256(k) => ec(ecdh_ephemeral(k)),
        PublicKey::P384(k) => ec(ecdh_ephemeral(k)),
        PublicKey::P521(k) => ec(ecdh_ephemeral(k)),
    })
}

/// Wrap `payload` (the private options JSON) for `recipients` with ocicrypt's default
/// algorithms, as go-jose's `NewMultiEncrypter(A256GCM, …).FullSerialize()` does.
pub fn wrap(payload: &[u8], recipients: &[PublicKey]) -> Result<Vec<u8>> {
    let recipients: Vec<JweRecipient> = recipients
        .iter()
        .map(|k| JweRecipient {
            key: k.clone(),
            alg: None,
            kid: None,
        })
        .collect();
    wrap_recipients(payload, &recipients)
}

/// [`wrap`], with per-recipient algorithm and `kid`.
pub fn wrap_recipients(payload: &[u8], recipients: &[JweRecipient]) -> Result<Vec<u8>> {
    if recipients.is_empty() {
        return Err(Error::Wrap("no JWE recipients".into()));
    }
    let mut cek = [0u8; 32];
    let mut iv = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut cek);
    rand::rngs::OsRng.fill_bytes(&mut iv);
    let mut headers = Vec::new();
    for r in recipients {
        headers.push(wrap_for(r, &cek)?);
    }
    let protected = if headers.len() == 1 {
        let mut h = headers[0].0.clone();
        h["enc"] = "A256GCM".into();
        h
    } else {
        json!({"enc": "A256GCM"})
    };
    let protected_b64 = B64URL.encode(serde_json::to_vec(&protected).expect("JSON"));
    let sealed = aes_gcm::Aes256Gcm::new_from_slice(&cek)
        .expect("32-byte key")
        .encrypt(
            aes_gcm::Nonce::from_slice(&iv),
            Payload {
                msg: payload,
                aad: protected_b64.as_bytes(),
            },
        )
        .map_err(|_| Error::Wrap("AES-GCM failed".into()))?;
    let (ciphertext, tag) = sealed.split_at(sealed.len() - 16);
    let mut out = json!({
        "protected": protected_b64,
        "iv": B64URL.encode(iv),
        "ciphertext": B64URL.encode(ciphertext),
        "tag": B64URL.encode(tag),
    });
    if headers.len() == 1 {
        out["encrypted_key"] = B64URL.encode(&headers[0].1).into();
    } else {
        out["recipients"] = headers
            .into_iter()
            .map(|(h, k)| json!({"header": h, "encrypted_key": B64URL.encode(k)}))
            .collect();
    }
    Ok(serde_json::to_vec(&out).expect("JSON"))
}

/// How many recipients one JWE message holds (for summaries; 1 when unreadable).
pub fn recipient_count(jwe: &[u8]) -> usize {
    serde_json::from_slice::<Value>(jwe)
        .ok()
        .and_then(|v| v.get("recipients").and_then(Value::as_array).map(Vec::len))
        .unwrap_or(1)
}

fn header_kid(v: &Value) -> Option<String> {
    v.get("kid").and_then(Value::as_str).map(str::to_string)
}

/// `entry` without the recipients whose `kid` is `kid`: the remaining message (`None` when no
/// recipient is left) and how many were removed. Other recipients stay valid: each one's
/// wrapped key is independent and the protected header of a general JWE holds only `enc`.
pub fn without_kid(entry: &[u8], kid: &str) -> (Option<Vec<u8>>, usize) {
    let keep = |n| (Some(entry.to_vec()), n);
    let Ok(mut v) = serde_json::from_slice::<Value>(entry) else {
        return keep(0);
    };
    let protected: Value = v
        .get("protected")
        .and_then(Value::as_str)
        .and_then(|p| B64URL.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    match v.get_mut("recipients").and_then(Value::as_array_mut) {
        Some(list) => {
            let before = list.len();
            list.retain(|r| r.get("header").and_then(header_kid).as_deref() != Some(kid));
            let removed = before - list.len();
            if list.is_empty() {
                (None, removed)
            } else if removed == 0 {
                keep(0)
            } else {
                (Some(serde_json::to_vec(&v).expect("JSON")), removed)
            }
        }
        None => {
            let own = header_kid(&protected).or_else(|| v.get("header").and_then(header_kid));
            if own.as_deref() == Some(kid) {
                (None, 1)
            } else {
                keep(0)
            }
        }
    }
}

fn merged_header(protected: &Value, unprotected: Option<&Value>, per: Option<&Value>) -> Value {
    let mut h = serde_json::Map::new();
    for part in [Some(protected), unprotected, per].into_iter().flatten() {
        if let Some(o) = part.as_object() {
            for (k, v) in o {
                h.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(h)
}

/// The CEK of one recipient for `key`, if it opens it.
fn unwrap_cek(key: &Secret, header: &Value, wrapped: &[u8]) -> Option<Vec<u8>> {
    let alg = header.get("alg")?.as_str()?;
    match (key, alg) {
        // Blinded (RUSTSEC-2023-0071): the private-key operation sees a random multiple of
        // the attacker's ciphertext, not the ciphertext itself.
        (Secret::Rsa(k), "RSA-OAEP") => k
            .decrypt_blinded(&mut rand::rngs::OsRng, Oaep::new::<sha1::Sha1>(), wrapped)
            .ok(),
        (Secret::Rsa(k), "RSA-OAEP-256") => k
            .decrypt_blinded(&mut rand::rngs::OsRng, Oaep::new::<sha2::Sha256>(), wrapped)
            .ok(),
        (Secret::Rsa(_), _) => None,
        (ec, alg) if alg.starts_with("ECDH-ES") => {
            let epk = header.get("epk")?;
            let z = match ec {
                Secret::P256(k) => ecdh_static(k, epk)?,
                Secret::P384(k) => ecdh_static(k, epk)?,
                Secret::P521(k) => ecdh_static(k, epk)?,
                Secret::Rsa(_) => return None,
            };
            let apu = field(header, "apu").unwrap_or_default();
            let apv = field(header, "apv").unwrap_or_default();
            match alg {
                "ECDH-ES" => {
                    let enc = header.get("enc")?.as_str()?;
                    Some(concat_kdf(&z, enc, &apu, &apv, enc_key_len(enc)?))
                }
                "ECDH-ES+A128KW" => kw_unwrap(&concat_kdf(&z, alg, &apu, &apv, 16), wrapped),
                "ECDH-ES+A192KW" => kw_unwrap(&concat_kdf(&z, alg, &apu, &apv, 24), wrapped),
                "ECDH-ES+A256KW" => kw_unwrap(&concat_kdf(&z, alg, &apu, &apv, 32), wrapped),
                _ => None,
            }
        }
        _ => None,
    }
}

fn enc_key_len(enc: &str) -> Option<usize> {
    match enc {
        "A128GCM" => Some(16),
        "A192GCM" => Some(24),
        "A256GCM" => Some(32),
        _ => None,
    }
}

fn open_content(
    enc: &str,
    cek: &[u8],
    iv: &[u8],
    ct: &[u8],
    tag: &[u8],
    aad: &[u8],
) -> Option<Vec<u8>> {
    if iv.len() != 12 || enc_key_len(enc)? != cek.len() {
        return None;
    }
    let mut msg = ct.to_vec();
    msg.extend_from_slice(tag);
    let payload = Payload { msg: &msg, aad };
    let nonce = aes_gcm::Nonce::from_slice(iv);
    match enc {
        "A128GCM" => aes_gcm::Aes128Gcm::new_from_slice(cek)
            .ok()?
            .decrypt(nonce, payload)
            .ok(),
        "A192GCM" => {
            aes_gcm::AesGcm::<aes::Aes192, aes_gcm::aead::consts::U12>::new_from_slice(cek)
                .ok()?
                .decrypt(nonce, payload)
                .ok()
        }
        _ => aes_gcm::Aes256Gcm::new_from_slice(cek)
            .ok()?
            .decrypt(nonce, payload)
            .ok(),
    }
}

/// Try to open one JWE message with `keys`; `Ok(None)` when no key fits any recipient.
pub fn unwrap(jwe: &[u8], keys: &[PrivateKey]) -> Result<Option<Vec<u8>>> {
    let text = std::str::from_utf8(jwe).unwrap_or("").trim();
    let json: Value = if text.starts_with('{') {
        serde_json::from_str(text)
            .map_err(|e| Error::Unwrap(format!("a JWE is not valid JSON: {e}")))?
    } else {
        let p: Vec<&str> = text.split('.').collect();
        if p.len() != 5 {
            return Err(Error::Unwrap(
                "a JWE entry is neither JSON nor compact serialization".into(),
            ));
        }
        json!({"protected": p[0], "encrypted_key": p[1], "iv": p[2], "ciphertext": p[3], "tag": p[4]})
    };
    let protected_b64 = json.get("protected").and_then(Value::as_str).unwrap_or("");
    let protected: Value = B64URL
        .decode(protected_b64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let recipients: Vec<Value> = match json.get("recipients").and_then(Value::as_array) {
        Some(r) => r.clone(),
        None => vec![json.clone()],
    };
    let (Some(iv), Some(ciphertext), Some(tag)) = (
        field(&json, "iv"),
        field(&json, "ciphertext"),
        field(&json, "tag"),
    ) else {
        return Err(Error::Unwrap("a JWE lacks iv, ciphertext or tag".into()));
    };
    let mut aad = protected_b64.as_bytes().to_vec();
    if let Some(extra) = json.get("aad").and_then(Value::as_str) {
        aad.push(b'.');
        aad.extend_from_slice(extra.as_bytes());
    }
    for r in &recipients {
        let header = merged_header(&protected, json.get("unprotected"), r.get("header"));
        let Some(enc) = header.get("enc").and_then(Value::as_str) else {
            continue;
        };
        let wrapped = field(r, "encrypted_key").unwrap_or_default();
        for key in keys {
            let Some(cek) = unwrap_cek(&key.secret, &header, &wrapped) else {
                continue;
            };
            if let Some(p) = open_content(enc, &cek, &iv, &ciphertext, &tag, &aad) {
                return Ok(Some(p));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: Secret) -> PrivateKey {
        PrivateKey {
            secret,
            source: "test".into(),
        }
    }

    #[test]
    fn every_recipient_of_a_general_jwe_opens_it_and_others_do_not() {
        let mut rng = rand::rngs::OsRng;
        let keys = [
            key(Secret::P256(p256::SecretKey::random(&mut rng))),
            key(Secret::P384(p384::SecretKey::random(&mut rng))),
            key(Secret::P521(p521::SecretKey::random(&mut rng))),
            key(Secret::Rsa(Box::new(
                rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap(),
            ))),
        ];
        let publics: Vec<_> = keys.iter().map(PrivateKey::public).collect();
        let msg = wrap(b"private options", &publics).unwrap();
        assert_eq!(recipient_count(&msg), 4);
        for k in &keys {
            let got = unwrap(&msg, std::slice::from_ref(k)).unwrap();
            assert_eq!(got.as_deref(), Some(&b"private options"[..]), "{k:?}");
        }
        let stranger = key(Secret::P384(p384::SecretKey::random(&mut rng)));
        assert_eq!(unwrap(&msg, &[stranger]).unwrap(), None);
        // One recipient: flattened form with alg and epk in the protected header.
        let one = wrap(b"x", &publics[1..2]).unwrap();
        let v: Value = serde_json::from_slice(&one).unwrap();
        let p: Value =
            serde_json::from_slice(&B64URL.decode(v["protected"].as_str().unwrap()).unwrap())
                .unwrap();
        assert_eq!(p["alg"], "ECDH-ES+A256KW");
        assert_eq!(p["enc"], "A256GCM");
        assert_eq!(p["epk"]["crv"], "P-384");
        assert!(v.get("recipients").is_none());
    }

    #[test]
    fn other_algorithms_and_the_compact_form_are_read() {
        let mut rng = rand::rngs::OsRng;
        let rsa = key(Secret::Rsa(Box::new(
            rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap(),
        )));
        let ec = key(Secret::P256(p256::SecretKey::random(&mut rng)));
        for (k, alg) in [
            (&rsa, "RSA-OAEP-256"),
            (&ec, "ECDH-ES+A128KW"),
            (&ec, "ECDH-ES+A192KW"),
        ] {
            let r = JweRecipient {
                key: k.public(),
                alg: Some(alg.into()),
                kid: Some("k1".into()),
            };
            let msg = wrap_recipients(b"opts", std::slice::from_ref(&r)).unwrap();
            let v: Value = serde_json::from_slice(&msg).unwrap();
            let p: Value =
                serde_json::from_slice(&B64URL.decode(v["protected"].as_str().unwrap()).unwrap())
                    .unwrap();
            assert_eq!(
                (p["alg"].as_str(), p["kid"].as_str()),
                (Some(alg), Some("k1"))
            );
            assert_eq!(
                unwrap(&msg, std::slice::from_ref(k)).unwrap().as_deref(),
                Some(&b"opts"[..])
            );
            // The same message in compact serialization.
            let compact = ["protected", "encrypted_key", "iv", "ciphertext", "tag"]
                .map(|f| v[f].as_str().unwrap().to_string())
                .join(".");
            assert_eq!(
                unwrap(compact.as_bytes(), std::slice::from_ref(k))
                    .unwrap()
                    .as_deref(),
                Some(&b"opts"[..])
            );
        }
        assert!(check_alg(&rsa.public(), "ECDH-ES+A256KW").is_err());
        assert!(check_alg(&ec.public(), "RSA-OAEP").is_err());
    }

    #[test]
    fn concat_kdf_matches_rfc7518_appendix_c() {
        // RFC 7518 Appendix C: Z, "A128GCM", apu "Alice", apv "Bob" → VqqN6vgjbSBcIijNcacQGg
        let z = [
            158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49,
            110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196,
        ];
        let k = concat_kdf(&z, "A128GCM", b"Alice", b"Bob", 16);
        assert_eq!(B64URL.encode(k), "VqqN6vgjbSBcIijNcacQGg");
    }
}
