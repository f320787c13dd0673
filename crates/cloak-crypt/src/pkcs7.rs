//! PKCS7 key wrapping (`keywrap/pkcs7`): CMS EnvelopedData with RSA PKCS#1 v1.5 key transport
//! and AES-128-GCM content, in the exact encoding Go's pkcs7 package writes:
//!
//! ```text
//! SEQUENCE { OID envelopedData, [0] { SEQUENCE {
//!   INTEGER 0,
//!   SET OF SEQUENCE { INTEGER 0, SEQUENCE { issuer Name, serial INTEGER },
//!                     SEQUENCE { OID rsaEncryption }, OCTET STRING wrapped-key },
//!   SEQUENCE { OID data, SEQUENCE { OID aes128-GCM, 10 13 <30 11 84 0c NONCE 02 01 10> },
//!              [0] { OCTET STRING ciphertext‖tag } } } } }
//! ```
//!
//! The GCM parameters sit under a bogus *primitive* tag 0x10 holding a whole SEQUENCE with the
//! nonce as `[4] IMPLICIT`; OpenSSL cannot read that, skopeo and containerd write and expect
//! it. Decryption tries every RSA key against every recipient (no certificate is needed: the
//! PKCS#1 padding and the GCM tag tell a wrong key).

use aes_gcm::aead::{Aead, KeyInit};
use rand::RngCore;
use rsa::Pkcs1v15Encrypt;

use crate::error::{Error, Result};
use crate::keys::{Certificate, PrivateKey, Secret};

const OID_ENVELOPED: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_AES128_GCM: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x06];

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = body.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(body);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// Wrap `payload` for `recipients` as Go's `pkcs7.Encrypt` does.
pub fn wrap(payload: &[u8], recipients: &[Certificate]) -> Result<Vec<u8>> {
    if recipients.is_empty() {
        return Err(Error::Wrap("no PKCS7 recipients".into()));
    }
    let mut key = [0u8; 16];
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut key);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = aes_gcm::Aes128Gcm::new_from_slice(&key)
        .expect("16-byte key")
        .encrypt(aes_gcm::Nonce::from_slice(&nonce), payload)
        .map_err(|_| Error::Wrap("AES-GCM failed".into()))?;
    let mut infos = Vec::new();
    for cert in recipients {
        let wrapped = cert
            .key
            .encrypt(&mut rand::rngs::OsRng, Pkcs1v15Encrypt, &key)
            .map_err(|e| Error::Wrap(format!("RSA PKCS#1 v1.5: {e}")))?;
        infos.push(seq(&[
            &tlv(0x02, &[0]),
            &seq(&[&cert.issuer, &cert.serial]),
            &seq(&[&tlv(0x06, OID_RSA)]),
            &tlv(0x04, &wrapped),
        ]));
    }
    // DER orders SET OF by encoding, as Go's encoding/asn1 does.
    infos.sort();
    let gcm_params = seq(&[&tlv(0x84, &nonce), &tlv(0x02, &[16])]);
    let content_info = seq(&[
        &tlv(0x06, OID_DATA),
        &seq(&[&tlv(0x06, OID_AES128_GCM), &tlv(0x10, &gcm_params)]),
        &tlv(0xa0, &tlv(0x04, &sealed)),
    ]);
    let enveloped = seq(&[&tlv(0x02, &[0]), &tlv(0x31, &infos.concat()), &content_info]);
    Ok(seq(&[&tlv(0x06, OID_ENVELOPED), &tlv(0xa0, &enveloped)]))
}

/// A minimal DER reader: `(tag, body, rest)`.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, body, rest) = read_tlv(input)?;
    (t == tag).then_some((body, rest))
}

/// The whole TLV at the start of `input` and what follows.
fn split_tlv(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (_, body, rest) = read_tlv(input)?;
    let header = input.len() - rest.len() - body.len();
    Some((&input[..header + body.len()], rest))
}

/// `der` without the recipients identified by `issuer` (DER `Name`) and `serial` (DER
/// `INTEGER`): the remaining message (`None` when none is left) and how many were removed.
pub fn without_recipient(der: &[u8], issuer: &[u8], serial: &[u8]) -> (Option<Vec<u8>>, usize) {
    let wanted = seq(&[issuer, serial]);
    let parsed = (|| {
        let (ci, _) = expect(der, 0x30)?;
        let (_, rest) = expect(ci, 0x06)?;
        let (explicit, _) = expect(rest, 0xa0)?;
        let (env, _) = expect(explicit, 0x30)?;
        let (version, rest) = split_tlv(env)?;
        let (mut set, eci) = expect(rest, 0x31)?;
        let mut infos = Vec::new();
        while !set.is_empty() {
            let (info, next) = split_tlv(set)?;
            let (body, _) = expect(info, 0x30)?;
            let (_, r) = expect(body, 0x02)?;
            let (ias, _) = split_tlv(r)?;
            infos.push((info, ias == wanted.as_slice()));
            set = next;
        }
        Some((version, infos, eci))
    })();
    let Some((version, infos, eci)) = parsed else {
        return (Some(der.to_vec()), 0);
    };
    let removed = infos.iter().filter(|(_, m)| *m).count();
    if removed == 0 {
        return (Some(der.to_vec()), 0);
    }
    let kept: Vec<&[u8]> = infos.iter().filter(|(_, m)| !*m).map(|(i, _)| *i).collect();
    if kept.is_empty() {
        return (None, removed);
    }
    let enveloped = seq(&[version, &tlv(0x31, &kept.concat()), eci]);
    (
        Some(seq(&[&tlv(0x06, OID_ENVELOPED), &tlv(0xa0, &enveloped)])),
        removed,
    )
}

struct Parsed<'a> {
    wrapped_keys: Vec<&'a [u8]>,
    nonce: &'a [u8],
    sealed: &'a [u8],
}

fn parse(der: &[u8]) -> Option<Parsed<'_>> {
    let (ci, _) = expect(der, 0x30)?;
    let (oid, rest) = expect(ci, 0x06)?;
    if oid != OID_ENVELOPED {
        return None;
    }
    let (explicit, _) = expect(rest, 0xa0)?;
    let (env, _) = expect(explicit, 0x30)?;
    let (_version, rest) = expect(env, 0x02)?;
    let (mut set, rest) = expect(rest, 0x31)?;
    let mut wrapped_keys = Vec::new();
    while !set.is_empty() {
        let (ri, next) = expect(set, 0x30)?;
        set = next;
        let (_v, r) = expect(ri, 0x02)?;
        let (_ias, r) = expect(r, 0x30)?;
        let (alg, r) = expect(r, 0x30)?;
        let (alg_oid, _) = expect(alg, 0x06)?;
        let (key, _) = expect(r, 0x04)?;
        if alg_oid == OID_RSA {
            wrapped_keys.push(key);
        }
    }
    let (eci, _) = expect(rest, 0x30)?;
    let (_ct, r) = expect(eci, 0x06)?;
    let (alg, r) = expect(r, 0x30)?;
    let (alg_oid, params) = expect(alg, 0x06)?;
    if alg_oid != OID_AES128_GCM {
        return None;
    }
    // Go's bogus primitive 0x10, or a proper constructed SEQUENCE (0x30).
    let (t, body, _) = read_tlv(params)?;
    let gcm = match t {
        0x10 => expect(body, 0x30)?.0,
        0x30 => body,
        _ => return None,
    };
    let (t, nonce, _) = read_tlv(gcm)?;
    if t != 0x84 && t != 0x04 {
        return None;
    }
    // encryptedContent: [0] constructed around an OCTET STRING (Go), or [0] IMPLICIT primitive.
    let (t, body, _) = read_tlv(r)?;
    let sealed = match t {
        0xa0 => expect(body, 0x04)?.0,
        0x80 => body,
        _ => return None,
    };
    Some(Parsed {
        wrapped_keys,
        nonce,
        sealed,
    })
}

/// How many recipients a PKCS7 message holds.
pub fn recipient_count(der: &[u8]) -> usize {
    parse(der).map(|p| p.wrapped_keys.len()).unwrap_or(1)
}

/// Try to open one PKCS7 message with `keys` (RSA only); `Ok(None)` when none fits.
pub fn unwrap(der: &[u8], keys: &[PrivateKey]) -> Result<Option<Vec<u8>>> {
    let p = parse(der).ok_or_else(|| {
        Error::Unwrap("a PKCS7 entry is not an EnvelopedData with AES-128-GCM content".into())
    })?;
    if p.nonce.len() != 12 || p.sealed.len() < 16 {
        return Err(Error::Unwrap("PKCS7 GCM parameters are malformed".into()));
    }
    for wrapped in &p.wrapped_keys {
        for k in keys {
            let Secret::Rsa(rsa) = &k.secret else {
                continue;
            };
            // Blinded (RUSTSEC-2023-0071), and with implicit rejection: a wrapped key whose
            // padding is wrong yields a random content key that then fails GCM like a wrong
            // key does, so the two failures do not tell a padding oracle apart.
            let cek = rsa
                .decrypt_blinded(&mut rand::rngs::OsRng, Pkcs1v15Encrypt, wrapped)
                .ok()
                .filter(|cek| cek.len() == 16)
                .unwrap_or_else(|| {
                    let mut random = vec![0u8; 16];
                    rand::rngs::OsRng.fill_bytes(&mut random);
                    random
                });
            let cipher = aes_gcm::Aes128Gcm::new_from_slice(&cek).expect("a 16-byte key");
            if let Ok(plain) = cipher.decrypt(aes_gcm::Nonce::from_slice(p.nonce), p.sealed) {
                return Ok(Some(plain));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_gos_bogus_gcm_parameters() {
        let mut rng = rand::rngs::OsRng;
        let a = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let b = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let cert = |k: &rsa::RsaPrivateKey, serial: u8| Certificate {
            issuer: seq(&[]),
            serial: tlv(0x02, &[serial]),
            key: Box::new(k.to_public_key()),
        };
        let der = wrap(b"opts", &[cert(&a, 1), cert(&b, 2)]).unwrap();
        let _ = &a;
        // The 0x10 primitive holding the GCM SEQUENCE, exactly as Go writes it.
        let pos = der
            .windows(OID_AES128_GCM.len())
            .position(|w| w == OID_AES128_GCM)
            .unwrap();
        let after = &der[pos + OID_AES128_GCM.len()..];
        assert_eq!(&after[..6], &[0x10, 0x13, 0x30, 0x11, 0x84, 0x0c]);
        assert_eq!(&after[18..21], &[0x02, 0x01, 0x10]);
        assert_eq!(recipient_count(&der), 2);
        let key = |k: rsa::RsaPrivateKey| PrivateKey {
            secret: Secret::Rsa(Box::new(k)),
            source: "t".into(),
        };
        let other = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        assert_eq!(unwrap(&der, &[key(other)]).unwrap(), None);
        assert_eq!(
            unwrap(&der, &[key(b.clone())]).unwrap().as_deref(),
            Some(&b"opts"[..])
        );
        assert!(unwrap(b"\x30\x00", &[]).is_err());
        // Removing recipient 1 leaves a message recipient 2 still opens.
        let (rest, n) = without_recipient(&der, &seq(&[]), &tlv(0x02, &[1]));
        assert_eq!(n, 1);
        let rest = rest.unwrap();
        assert_eq!(recipient_count(&rest), 1);
        assert_eq!(unwrap(&rest, &[key(a.clone())]).unwrap(), None);
        let (none, n) = without_recipient(&rest, &seq(&[]), &tlv(0x02, &[2]));
        assert_eq!((none, n), (None, 1));
    }
}
