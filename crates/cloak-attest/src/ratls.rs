//! Gramine RA-TLS certificates: a self-signed certificate whose extension carries a DCAP quote
//! that binds the certificate's key. The TCG DICE evidence extension is read first, then the
//! legacy one (Gramine's `ra_tls_verify_common.c` does the same).

use crate::cbor::{self, Value};
use crate::sgx::verify_quote;
use crate::x509::Cert;
use crate::{At, Claims, Error, EvidenceKind, Input, Result, Verifier};
use sha2::{Digest, Sha256};

const KIND: EvidenceKind = EvidenceKind::RaTlsCertificate;

/// TCG DICE conceptual message wrapper / tagged evidence: CBOR `60000([quote, claims])`.
pub const TCG_DICE_EVIDENCE_OID: &str = "2.23.133.5.4.9";

/// Gramine's legacy quote extension, as really encoded (an old bug put the DER of
/// 1.2.840.113741.1337.6 into the OID's content): the raw quote.
pub const LEGACY_RA_TLS_OID: &str = "0.6.9.42.840.113741.1337.6";

/// CBOR tag of an Intel TEE quote in TCG DICE evidence (IANA).
pub(crate) const TAG_INTEL_QUOTE: u64 = 60000;

/// Which extension the quote was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Binding {
    /// TCG DICE: REPORTDATA[0..32] = SHA-256(claims), claims bind SHA-256(SPKI).
    Tcg,
    /// Legacy: REPORTDATA = SHA-256(SPKI) || 32 zero bytes.
    Legacy,
}

/// Verifies Gramine RA-TLS certificates (DER): the self-signature, the quote (with [`Input::collateral`]) and the binding of the
/// certificate's key to the quote's REPORTDATA.
#[derive(Debug, Clone, Copy, Default)]
pub struct RaTlsCertificate;

impl Verifier for RaTlsCertificate {
    fn kind(&self) -> EvidenceKind {
        KIND
    }

    fn verify(&self, evidence: &[u8], input: &Input<'_>) -> Result<Claims> {
        verify_ratls(evidence, input, None)
    }
}

/// The quote bytes and claims of one RA-TLS extension.
pub(crate) struct Extracted {
    pub binding: Binding,
    pub quote: Vec<u8>,
    pub tcg_claims: Option<Vec<u8>>,
}

/// Read the quote of an RA-TLS certificate, TCG first unless `only` names one extension.
pub(crate) fn extract(cert: &Cert<'_>, only: Option<Binding>) -> Result<Extracted> {
    let exts = cert
        .cert
        .tbs_certificate()
        .extensions()
        .map(|e| e.as_slice())
        .unwrap_or_default();
    let find = |oid: &str| {
        exts.iter()
            .find(|e| e.extn_id.to_string() == oid)
            .map(|e| e.extn_value.as_bytes())
    };
    if only != Some(Binding::Legacy) {
        if let Some(value) = find(TCG_DICE_EVIDENCE_OID) {
            let (quote, claims) = decode_tcg(value)
                .map_err(|e| Error::malformed(KIND, format!("TCG DICE evidence extension: {e}")))?;
            return Ok(Extracted {
                binding: Binding::Tcg,
                quote,
                tcg_claims: Some(claims),
            });
        }
    }
    if only != Some(Binding::Tcg) {
        if let Some(value) = find(LEGACY_RA_TLS_OID) {
            return Ok(Extracted {
                binding: Binding::Legacy,
                quote: value.to_vec(),
                tcg_claims: None,
            });
        }
    }
    Err(Error::malformed(
        KIND,
        format!("no quote extension ({TCG_DICE_EVIDENCE_OID} or {LEGACY_RA_TLS_OID}); is this an RA-TLS certificate?"),
    ))
}

/// `60000([bstr quote, bstr claims])` to its parts.
pub(crate) fn decode_tcg(value: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    match cbor::decode(value).map_err(|e| e.to_string())? {
        Value::Tag(TAG_INTEL_QUOTE, inner) => match *inner {
            Value::Array(items) => match <[Value; 2]>::try_from(items) {
                Ok([Value::Bytes(q), Value::Bytes(c)]) => Ok((q, c)),
                _ => Err("tag 60000 does not hold [bstr quote, bstr claims]".into()),
            },
            _ => Err("tag 60000 does not hold an array".into()),
        },
        _ => Err("not CBOR tag 60000 (Intel TEE quote)".into()),
    }
}

pub(crate) fn verify_ratls(der: &[u8], input: &Input<'_>, only: Option<Binding>) -> Result<Claims> {
    let collateral = input
        .collateral
        .ok_or(Error::CollateralRequired { kind: KIND })?;
    let At::Time(at) = input.at else {
        return Err(Error::TimeRequired { kind: KIND });
    };
    let cert = Cert::parse(der).map_err(|e| Error::malformed(KIND, e))?;
    cert.verify_signed_by(cert.spki())
        .map_err(|detail| Error::BadSignature {
            item: format!("RA-TLS certificate {} (self-signature)", cert.subject()),
            detail,
        })?;
    let spki = cert.spki_der().map_err(|e| Error::malformed(KIND, e))?;
    let key_hash: [u8; 32] = Sha256::digest(&spki).into();
    let ext = extract(&cert, only)?;

    // The claims must name this certificate's key before the quote is worth verifying.
    let mut nonce = None;
    if let Some(claims) = &ext.tcg_claims {
        let (bound, n) = decode_claims(claims)
            .map_err(|e| Error::malformed(KIND, format!("TCG claims: {e}")))?;
        if bound != key_hash {
            return Err(Error::KeyNotBound {
                what: "pubkey-hash in the TCG claims vs SHA-256 of the certificate's public key",
                expected: hex::encode(key_hash),
                actual: hex::encode(bound),
            });
        }
        nonce = n;
    }

    let mut claims = verify_quote(&ext.quote, collateral, at, input.policy, KIND)?;
    let report_data = claims.report_data.clone().unwrap_or_default();
    let expected: Vec<u8> = match &ext.tcg_claims {
        Some(c) => Sha256::digest(c).to_vec(),
        None => key_hash.iter().copied().chain([0u8; 32]).collect(),
    };
    let actual = match ext.binding {
        Binding::Tcg => report_data.get(..32).unwrap_or_default(),
        Binding::Legacy => &report_data[..],
    };
    if actual != expected.as_slice() {
        return Err(Error::KeyNotBound {
            what: match ext.binding {
                Binding::Tcg => "REPORTDATA[0..32] vs SHA-256 of the TCG claims",
                Binding::Legacy => {
                    "REPORTDATA vs SHA-256 of the certificate's public key || 32 zero bytes"
                }
            },
            expected: hex::encode(expected),
            actual: hex::encode(actual),
        });
    }

    // The certificate's own validity is not checked: it is self-signed, so its dates are
    // whatever the enclave chose (Gramine: 2001-2030) and attest nothing; freshness comes from
    // the quote's collateral. (librats' vector is past its notAfter inside its DCAP window.)
    claims.public_key = Some(spki);
    claims.nonce = nonce;
    Ok(claims)
}

/// `{"pubkey-hash": bstr .cbor [1, bstr], ? "nonce": bstr}` to (SHA-256 of the key, nonce).
fn decode_claims(claims: &[u8]) -> Result<([u8; 32], Option<Vec<u8>>), String> {
    let value = cbor::decode(claims).map_err(|e| e.to_string())?;
    let Value::Map(entries) = &value else {
        return Err("not a map".into());
    };
    let mut hash = None;
    let mut nonce = None;
    for (k, v) in entries {
        match (k, v) {
            (Value::Text(k), Value::Bytes(b)) if k == "pubkey-hash" && hash.is_none() => {
                let inner = cbor::decode(b).map_err(|e| format!("pubkey-hash: {e}"))?;
                let Value::Array(items) = inner else {
                    return Err("pubkey-hash is not an array".into());
                };
                match items.as_slice() {
                    [Value::Unsigned(1), Value::Bytes(h)] => {
                        hash = Some(
                            <[u8; 32]>::try_from(h.as_slice())
                                .map_err(|_| "pubkey-hash is not 32 bytes")?,
                        );
                    }
                    [Value::Unsigned(alg), _] => {
                        return Err(format!("pubkey-hash algorithm {alg}, expected 1 (SHA-256)"))
                    }
                    _ => return Err("pubkey-hash is not [alg, bstr]".into()),
                }
            }
            (Value::Text(k), Value::Bytes(b)) if k == "nonce" && nonce.is_none() => {
                nonce = Some(b.clone())
            }
            (Value::Text(k), _) if k == "pubkey-hash" || k == "nonce" => {
                return Err(format!("claim {k:?} repeated or not a byte string"))
            }
            // Other claims (librats adds its own) are covered by the REPORTDATA hash too.
            (Value::Text(_), _) => {}
            _ => return Err("a claim name is not text".into()),
        }
    }
    Ok((hash.ok_or("no pubkey-hash claim")?, nonce))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Collateral, Measurements, Policy};

    fn vector(rel: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/vectors/sgx-dcap")
                .join(rel),
        )
        .unwrap()
    }

    /// Gramine's certificate carries the quote twice; each binding is checked on its own.
    #[rstest::rstest]
    #[case::tcg(Binding::Tcg)]
    #[case::legacy(Binding::Legacy)]
    fn both_gramine_bindings_verify(#[case] binding: Binding) {
        let der = crate::x509::pem_blocks(&vector("gramine-cert.pem"), "CERTIFICATE").remove(0);
        let cert = Cert::parse(&der).unwrap();
        let ext = extract(&cert, Some(binding)).unwrap();
        assert_eq!(ext.binding, binding);
        if binding == Binding::Legacy {
            assert_eq!(ext.quote, vector("gramine-legacy-quote.bin"));
        }
        let col = Collateral::from_json(&vector("col_quotev3_0825.json")).unwrap();
        let policy = Policy {
            allow_debug: true,
            accepted_tcb_statuses: None,
            ..Policy::default()
        };
        let input = Input {
            at: At::Time(1_755_234_498),
            collateral: Some(&col),
            policy: &policy,
            simulation_key: None,
        };
        let c = verify_ratls(&der, &input, Some(binding)).unwrap();
        let Measurements::Sgx(m) = &c.measurements else {
            panic!()
        };
        assert_eq!(
            hex::encode(m.mrenclave),
            "0866e7ca11b9f4efe4bf39b2607f4e1299f111920d96d95719080f01b62b7585"
        );
        let key_hash = Sha256::digest(c.public_key.as_ref().unwrap());
        let rd = c.report_data.unwrap();
        match binding {
            Binding::Legacy => assert_eq!((&rd[..32], &rd[32..]), (&key_hash[..], &[0u8; 32][..])),
            Binding::Tcg => assert_ne!(&rd[..32], &key_hash[..]),
        }
    }
}
