//! How evidence binds a key and a verifier's nonce: one convention for the launcher (which
//! produces evidence) and the manager (which checks it against a CSR), per kind:
//!
//! | evidence | the key (SubjectPublicKeyInfo DER) | the nonce |
//! |---|---|---|
//! | SGX / TDX quote | REPORTDATA[0..32] = SHA-256(SPKI) | REPORTDATA[32..64] = SHA-256(nonce) |
//! | Nitro document, simulated evidence | `public_key` = SPKI | `nonce` = nonce |
//! | RA-TLS certificate | the certificate's own key = SPKI | the TCG claims' `nonce` = nonce |

use crate::{Claims, Error, EvidenceKind, Result};
use sha2::{Digest, Sha256};

/// The 64 bytes of REPORTDATA that bind `spki_der` and `nonce` in a quote.
pub fn report_data(spki_der: &[u8], nonce: &[u8]) -> [u8; 64] {
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(&Sha256::digest(spki_der));
    rd[32..].copy_from_slice(&Sha256::digest(nonce));
    rd
}

/// Check that verified `claims` bind the key `spki_der` and, when given, `nonce`.
pub fn check(claims: &Claims, spki_der: &[u8], nonce: Option<&[u8]>) -> Result<()> {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let opt_hex = |b: Option<&[u8]>| b.map_or_else(|| "none".to_string(), hex);
    match claims.kind {
        EvidenceKind::DcapQuote => {
            let actual = claims.report_data.as_deref().unwrap_or_default();
            let expected = report_data(spki_der, nonce.unwrap_or_default());
            let (what, range) = match nonce {
                Some(_) => ("REPORTDATA vs SHA-256(key) || SHA-256(nonce)", 0..64),
                None => ("REPORTDATA[0..32] vs SHA-256(key)", 0..32),
            };
            if actual.get(range.clone()) != Some(&expected[range.clone()]) {
                return Err(Error::KeyNotBound {
                    what,
                    expected: hex(&expected[range.clone()]),
                    actual: hex(actual.get(range).unwrap_or(actual)),
                });
            }
        }
        EvidenceKind::NitroDocument | EvidenceKind::Simulated | EvidenceKind::RaTlsCertificate => {
            if claims.public_key.as_deref() != Some(spki_der) {
                return Err(Error::KeyNotBound {
                    what: "the evidence's public key vs the requested key",
                    expected: hex(spki_der),
                    actual: opt_hex(claims.public_key.as_deref()),
                });
            }
            if let Some(n) = nonce {
                if claims.nonce.as_deref() != Some(n) {
                    return Err(Error::KeyNotBound {
                        what: "the evidence's nonce vs the nonce handed out",
                        expected: hex(n),
                        actual: opt_hex(claims.nonce.as_deref()),
                    });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Measurements, Tee, Times};

    fn claims(
        kind: EvidenceKind,
        report_data: Option<Vec<u8>>,
        key: Option<&[u8]>,
        nonce: Option<&[u8]>,
    ) -> Claims {
        Claims {
            tee: Tee::Simulated,
            kind,
            simulated: false,
            measurements: Measurements::Pcrs(Default::default()),
            debug: false,
            tcb: None,
            report_data,
            user_data: None,
            nonce: nonce.map(<[u8]>::to_vec),
            public_key: key.map(<[u8]>::to_vec),
            module_id: None,
            times: Times {
                checked_at: 0,
                evidence_timestamp_ms: None,
                valid_from: 0,
                valid_until: 0,
                valid_until_item: String::new(),
            },
        }
    }

    #[rstest::rstest]
    #[case::quote_bound(EvidenceKind::DcapQuote, true, true, None)]
    #[case::quote_other_key(EvidenceKind::DcapQuote, false, true, Some("SHA-256(key)"))]
    #[case::quote_other_nonce(EvidenceKind::DcapQuote, true, false, Some("SHA-256(nonce)"))]
    #[case::nitro_bound(EvidenceKind::NitroDocument, true, true, None)]
    #[case::nitro_other_key(EvidenceKind::NitroDocument, false, true, Some("public key"))]
    #[case::nitro_replayed_nonce(EvidenceKind::NitroDocument, true, false, Some("nonce"))]
    #[case::ratls_other_key(EvidenceKind::RaTlsCertificate, false, true, Some("public key"))]
    fn binding(
        #[case] kind: EvidenceKind,
        #[case] same_key: bool,
        #[case] same_nonce: bool,
        #[case] err: Option<&str>,
    ) {
        let (key, nonce) = (b"spki".as_slice(), b"nonce-1".as_slice());
        let ev_key: &[u8] = if same_key { key } else { b"other" };
        let ev_nonce: &[u8] = if same_nonce { nonce } else { b"nonce-0" };
        let c = match kind {
            EvidenceKind::DcapQuote => claims(
                kind,
                Some(report_data(ev_key, ev_nonce).to_vec()),
                None,
                None,
            ),
            _ => claims(kind, None, Some(ev_key), Some(ev_nonce)),
        };
        match (check(&c, key, Some(nonce)), err) {
            (Ok(()), None) => {}
            (Err(e), Some(what)) => {
                assert_eq!(e.code(), "key_not_bound");
                assert!(e.to_string().contains(what), "{e}");
            }
            (r, _) => panic!("{kind:?}: {r:?}"),
        }
    }
}
