//! AWS Nitro Enclaves attestation documents: COSE_Sign1 ES384 over a CBOR payload whose
//! certificate chain must lead to the pinned AWS Nitro root.

use crate::cbor::{self, Value};
use crate::cose::{self, Sign1};
use crate::simulated::{check_age, check_keys, opt_bytes, pcr_map};
use crate::x509::{verify_es384, Cert};
use crate::{At, Claims, Error, EvidenceKind, Input, Measurements, Result, Tee, Times, Verifier};
use std::collections::BTreeMap;

const KIND: EvidenceKind = EvidenceKind::NitroDocument;

/// Most certificates a cabundle may hold (AWS sends four); each costs a signature check.
const MAX_CABUNDLE: usize = 8;

/// `AWS_NitroEnclaves_Root-G1` (CN=aws.nitro-enclaves, P-384, valid 2019-10-28 to 2049-10-28),
/// DER; SHA-256 641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b. From
/// <https://aws-nitro-enclaves.amazonaws.com/AWS_NitroEnclaves_Root-G1.zip> (the same file as
/// the vectors' `root.pem`; the fingerprint is checked by a test).
pub const AWS_NITRO_ROOT_DER: &[u8] = include_bytes!("aws-nitro-root-g1.der");

/// A Nitro document's payload (its signature not checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Payload {
    pub module_id: String,
    pub timestamp_ms: u64,
    pub pcrs: BTreeMap<u16, Vec<u8>>,
    pub certificate: Vec<u8>,
    pub cabundle: Vec<Vec<u8>>,
    pub public_key: Option<Vec<u8>>,
    pub user_data: Option<Vec<u8>>,
    pub nonce: Option<Vec<u8>>,
}

/// Verifies AWS Nitro attestation documents against [`AWS_NITRO_ROOT_DER`]: the chain at the
/// verification time, the ES384 signature, the document's age ([`crate::Policy::max_age_secs`])
/// and debug mode (PCR0, PCR1 and PCR2 all zero).
#[derive(Debug, Clone, Copy, Default)]
pub struct NitroDocument;

impl Verifier for NitroDocument {
    fn kind(&self) -> EvidenceKind {
        KIND
    }

    fn verify(&self, evidence: &[u8], input: &Input<'_>) -> Result<Claims> {
        let sign1 = Sign1::decode(evidence).map_err(|e| Error::malformed(KIND, e))?;
        if sign1.alg != cose::ES384 {
            return Err(Error::malformed(
                KIND,
                format!("algorithm {} (expected ES384, -35)", sign1.alg),
            ));
        }
        let doc = parse_payload(&sign1.payload)?;
        let ts = doc.timestamp_ms / 1000;
        let at = match input.at {
            At::Time(t) => t,
            At::EvidenceTimestamp => ts,
        };

        // The chain: cabundle[0] is the root, then intermediates, then the leaf `certificate`.
        if doc.cabundle.first().map(Vec::as_slice) != Some(AWS_NITRO_ROOT_DER) {
            return Err(Error::UntrustedChain {
                kind: KIND,
                detail: "the first cabundle certificate is not the pinned AWS Nitro root (SHA-256 641a0321…79bb5b)".into(),
            });
        }
        let mut issuer = Cert::parse(AWS_NITRO_ROOT_DER).map_err(|e| Error::malformed(KIND, e))?;
        let (mut from, mut until) = issuer.validity();
        let mut until_item = format!("certificate {} notAfter", issuer.subject());
        let mut from_item = format!("certificate {}", issuer.subject());
        let rest = doc.cabundle[1..]
            .iter()
            .chain(std::iter::once(&doc.certificate));
        for der in rest {
            let cert =
                Cert::parse(der).map_err(|e| Error::malformed(KIND, format!("cabundle: {e}")))?;
            cert.verify_signed_by(issuer.spki())
                .map_err(|detail| Error::UntrustedChain {
                    kind: KIND,
                    detail: format!("certificate {}: {detail}", cert.subject()),
                })?;
            let (nb, na) = cert.validity();
            if nb > from {
                from = nb;
                from_item = format!("certificate {}", cert.subject());
            }
            if na < until {
                until = na;
                until_item = format!("certificate {} notAfter", cert.subject());
            }
            issuer = cert;
        }
        verify_es384(issuer.spki(), &sign1.to_be_signed(), &sign1.signature).map_err(|detail| {
            Error::BadSignature {
                item: "Nitro attestation document payload".into(),
                detail: format!("{detail} under the leaf certificate {}", issuer.subject()),
            }
        })?;

        if at < from {
            return Err(Error::CertificateNotYetValid {
                item: from_item,
                not_before: from,
                at,
            });
        }
        if at > until {
            return Err(Error::CertificateExpired {
                item: until_item,
                not_after: until,
                at,
            });
        }
        let max_age = input.policy.max_age_secs;
        check_age(KIND, ts, at, max_age)?;
        if ts.saturating_add(max_age) < until {
            until = ts.saturating_add(max_age);
            until_item = "maximum age".into();
        }

        let zero = |i: u16| doc.pcrs.get(&i).is_some_and(|v| v.iter().all(|b| *b == 0));
        let debug = zero(0) && zero(1) && zero(2);
        if debug && !input.policy.allow_debug {
            return Err(Error::DebugEnclave {
                kind: KIND,
                what: "enclave (PCR0-2 all zero)",
            });
        }
        Ok(Claims {
            tee: Tee::Nitro,
            kind: KIND,
            simulated: false,
            measurements: Measurements::Pcrs(doc.pcrs),
            debug,
            tcb: None,
            report_data: None,
            user_data: doc.user_data,
            nonce: doc.nonce,
            public_key: doc.public_key,
            module_id: Some(doc.module_id),
            times: Times {
                checked_at: at,
                evidence_timestamp_ms: Some(doc.timestamp_ms),
                valid_from: from.max(ts),
                valid_until: until,
                valid_until_item: until_item,
            },
        })
    }
}

/// Parse a Nitro payload: every AWS field, each once, no others; optional ones may be null.
pub(crate) fn parse_payload(payload: &[u8]) -> Result<Payload> {
    let bad = |d: String| Error::malformed(KIND, d);
    let value = cbor::decode(payload).map_err(|e| bad(format!("payload: {e}")))?;
    let Value::Map(entries) = &value else {
        return Err(bad("payload is not a map".into()));
    };
    let known = [
        "module_id",
        "digest",
        "timestamp",
        "pcrs",
        "certificate",
        "cabundle",
        "public_key",
        "user_data",
        "nonce",
    ];
    check_keys(entries, &known).map_err(bad)?;
    let Some(Value::Text(module_id)) = value.get("module_id") else {
        return Err(bad("module_id is missing or not text".into()));
    };
    match value.get("digest") {
        Some(Value::Text(d)) if d == "SHA384" => {}
        _ => return Err(bad("digest is not \"SHA384\"".into())),
    }
    let Some(Value::Unsigned(timestamp_ms)) = value.get("timestamp") else {
        return Err(bad("timestamp is missing or not an unsigned integer".into()));
    };
    let pcrs = pcr_map(
        value
            .get("pcrs")
            .ok_or_else(|| bad("pcrs missing".into()))?,
    )
    .map_err(bad)?;
    let Some(Value::Bytes(certificate)) = value.get("certificate") else {
        return Err(bad("certificate is missing or not a byte string".into()));
    };
    let Some(Value::Array(bundle)) = value.get("cabundle") else {
        return Err(bad("cabundle is missing or not an array".into()));
    };
    if bundle.len() > MAX_CABUNDLE {
        return Err(bad(format!(
            "cabundle holds {} certificates, at most {MAX_CABUNDLE} are accepted",
            bundle.len()
        )));
    }
    let cabundle = bundle
        .iter()
        .map(|c| match c {
            Value::Bytes(b) => Ok(b.clone()),
            _ => Err(bad("a cabundle entry is not a byte string".into())),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Payload {
        module_id: module_id.clone(),
        timestamp_ms: *timestamp_ms,
        pcrs,
        certificate: certificate.clone(),
        cabundle,
        public_key: opt_bytes(&value, "public_key").map_err(bad)?,
        user_data: opt_bytes(&value, "user_data").map_err(bad)?,
        nonce: opt_bytes(&value, "nonce").map_err(bad)?,
    })
}
