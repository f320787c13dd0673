//! Simulated evidence for machines without a TEE: produce it (the launcher; no `verify`
//! feature needed) and verify it (the manager). The format is in the crate docs.

use crate::cbor::Value;
use crate::cose;
use crate::{Error, Measurements, Result};
use p256::ecdsa::signature::Signer;
use p256::pkcs8::DecodePrivateKey;

/// Format version written into every simulated document.
pub const FORMAT_VERSION: u64 = 1;

/// The value of the `tee` field: the SIMULATED marker.
pub const TEE_MARKER: &str = "simulated";

/// What a simulated document says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// When it was produced, Unix milliseconds.
    pub timestamp_ms: u64,
    /// The measurements it claims (PCRs for the Nitro stand-in, SGX identity otherwise; TDX
    /// measurements are not part of format version 1).
    pub measurements: Measurements,
    /// Application data (like Nitro's `user_data`).
    pub user_data: Option<Vec<u8>>,
    /// The verifier's nonce.
    pub nonce: Option<Vec<u8>>,
    /// The public key to bind (SubjectPublicKeyInfo DER, by convention).
    pub public_key: Option<Vec<u8>>,
}

/// The ECDSA P-256 key simulated evidence is signed with. Its `Debug` output shows no key.
pub struct SimulationSigningKey(p256::ecdsa::SigningKey);

impl std::fmt::Debug for SimulationSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimulationSigningKey(P-256, private)")
    }
}

impl SimulationSigningKey {
    /// Read a P-256 private key: PEM (`PRIVATE KEY` PKCS#8 or `EC PRIVATE KEY` SEC1) or DER
    /// PKCS#8, e.g. from `openssl ecparam -name prime256v1 -genkey -noout`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |detail: &str| Error::BadKey {
            what: "simulation signing key",
            detail: format!(
                "{detail}; expected an ECDSA P-256 private key (PKCS#8 or SEC1, PEM or DER)"
            ),
        };
        let key = match std::str::from_utf8(bytes) {
            Ok(text) if text.contains("-----BEGIN EC PRIVATE KEY-----") => {
                p256::SecretKey::from_sec1_pem(text).map_err(|_| bad("unreadable SEC1 PEM"))?
            }
            Ok(text) if text.contains("-----BEGIN") => {
                p256::SecretKey::from_pkcs8_pem(text).map_err(|_| bad("unreadable PKCS#8 PEM"))?
            }
            _ => p256::SecretKey::from_pkcs8_der(bytes)
                .or_else(|_| p256::SecretKey::from_sec1_der(bytes))
                .map_err(|_| bad("unreadable DER"))?,
        };
        Ok(SimulationSigningKey(key.into()))
    }

    /// The public half as an uncompressed SEC1 point (what [`SimulationPublicKey`] reads).
    pub fn public_sec1(&self) -> Vec<u8> {
        self.0
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }
}

/// Produce simulated evidence: a COSE_Sign1 (ES256) over `doc`, signed with `key`.
/// Deterministic (RFC 6979 nonces), so it needs no random source. TDX measurements are not
/// part of format version 1 and are refused.
pub fn produce(key: &SimulationSigningKey, doc: &Document) -> Result<Vec<u8>> {
    let payload = encode_payload(doc)?;
    let protected = cose::protected_header(cose::ES256);
    let sig: p256::ecdsa::Signature = key.0.sign(&cose::to_be_signed(&protected, &payload));
    Ok(cose::encode(&protected, &payload, &sig.to_bytes()))
}

fn encode_payload(doc: &Document) -> Result<Vec<u8>> {
    let opt = |b: &Option<Vec<u8>>| b.clone().map_or(Value::Null, Value::Bytes);
    let text = |s: &str| Value::Text(s.into());
    let measurements = match &doc.measurements {
        Measurements::Pcrs(pcrs) => Value::Map(vec![(
            text("pcrs"),
            Value::Map(
                pcrs.iter()
                    .map(|(i, v)| (Value::Unsigned(u64::from(*i)), Value::Bytes(v.clone())))
                    .collect(),
            ),
        )]),
        Measurements::Sgx(m) => Value::Map(vec![
            (text("mrenclave"), Value::Bytes(m.mrenclave.to_vec())),
            (text("mrsigner"), Value::Bytes(m.mrsigner.to_vec())),
            (text("isvprodid"), Value::Unsigned(m.isvprodid.into())),
            (text("isvsvn"), Value::Unsigned(m.isvsvn.into())),
        ]),
        Measurements::Tdx(_) => {
            return Err(Error::Malformed {
                kind: crate::EvidenceKind::Simulated,
                detail: "TDX measurements are not part of simulated evidence format version 1; use PCRs or SGX measurements".into(),
            })
        }
    };
    Ok(Value::Map(vec![
        (text("tee"), text(TEE_MARKER)),
        (text("version"), Value::Unsigned(FORMAT_VERSION)),
        (text("timestamp"), Value::Unsigned(doc.timestamp_ms)),
        (text("measurements"), measurements),
        (text("user_data"), opt(&doc.user_data)),
        (text("nonce"), opt(&doc.nonce)),
        (text("public_key"), opt(&doc.public_key)),
    ])
    .encode())
}

#[cfg(feature = "verify")]
pub(crate) use verify::{check_age, check_keys, opt_bytes, pcr_map};
#[cfg(feature = "verify")]
pub use verify::{parse_payload, Simulated, SimulationPublicKey};

#[cfg(feature = "verify")]
mod verify {
    use super::*;
    use crate::cbor;
    use crate::{At, Claims, EvidenceKind, Input, SgxMeasurements, Tee, Times, Verifier};
    use p256::ecdsa::signature::Verifier as _;
    use p256::pkcs8::DecodePublicKey;
    use std::collections::BTreeMap;

    const KIND: EvidenceKind = EvidenceKind::Simulated;

    /// The public key simulated evidence is checked against.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct SimulationPublicKey(p256::ecdsa::VerifyingKey);

    impl SimulationPublicKey {
        /// Read a P-256 public key: PEM `PUBLIC KEY`, DER SubjectPublicKeyInfo, or a SEC1 point.
        pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
            let key = match std::str::from_utf8(bytes) {
                Ok(text) if text.contains("-----BEGIN") => {
                    p256::ecdsa::VerifyingKey::from_public_key_pem(text).ok()
                }
                _ => p256::ecdsa::VerifyingKey::from_public_key_der(bytes)
                    .or_else(|_| p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes))
                    .ok(),
            };
            key.map(SimulationPublicKey).ok_or_else(|| Error::BadKey {
                what: "simulation public key",
                detail: "expected an ECDSA P-256 public key (PEM or DER SubjectPublicKeyInfo, or a SEC1 point)".into(),
            })
        }
    }

    /// Verifies simulated evidence; see the crate docs for the format.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Simulated;

    impl Verifier for Simulated {
        fn kind(&self) -> EvidenceKind {
            KIND
        }

        fn verify(&self, evidence: &[u8], input: &Input<'_>) -> Result<Claims> {
            if !input.policy.allow_simulated {
                return Err(Error::SimulationNotAllowed);
            }
            let key = input.simulation_key.ok_or(Error::SimulationKeyMissing)?;
            let sign1 = cose::Sign1::decode(evidence).map_err(|e| Error::malformed(KIND, e))?;
            if sign1.alg != cose::ES256 {
                return Err(Error::malformed(
                    KIND,
                    format!("algorithm {} (expected ES256, -7)", sign1.alg),
                ));
            }
            let sig = p256::ecdsa::Signature::from_slice(&sign1.signature).map_err(|_| {
                Error::BadSignature {
                    item: "simulated evidence".into(),
                    detail: format!(
                        "signature is {} bytes, expected 64 (r || s)",
                        sign1.signature.len()
                    ),
                }
            })?;
            key.0
                .verify(&sign1.to_be_signed(), &sig)
                .map_err(|_| Error::BadSignature {
                    item: "simulated evidence".into(),
                    detail: "not signed by the configured simulation key".into(),
                })?;
            let doc = parse_payload(&sign1.payload)?;
            let ts = doc.timestamp_ms / 1000;
            let at = match input.at {
                At::Time(t) => t,
                At::EvidenceTimestamp => ts,
            };
            let max_age = input.policy.max_age_secs;
            check_age(KIND, ts, at, max_age)?;
            Ok(Claims {
                tee: Tee::Simulated,
                kind: KIND,
                simulated: true,
                measurements: doc.measurements,
                debug: false,
                tcb: None,
                report_data: None,
                user_data: doc.user_data,
                nonce: doc.nonce,
                public_key: doc.public_key,
                module_id: None,
                times: Times {
                    checked_at: at,
                    evidence_timestamp_ms: Some(doc.timestamp_ms),
                    valid_from: ts,
                    valid_until: ts.saturating_add(max_age),
                    valid_until_item: "maximum age".into(),
                },
            })
        }
    }

    /// Reject evidence made after `at` or more than `max_age` seconds before it.
    pub(crate) fn check_age(kind: EvidenceKind, ts: u64, at: u64, max_age: u64) -> Result<()> {
        if ts > at {
            return Err(Error::FromTheFuture {
                kind,
                timestamp: ts,
                at,
            });
        }
        if at - ts > max_age {
            return Err(Error::TooOld {
                kind,
                timestamp: ts,
                at,
                age: at - ts,
                max_age,
            });
        }
        Ok(())
    }

    /// Parse the payload of simulated evidence (signature not checked here).
    pub fn parse_payload(payload: &[u8]) -> Result<Document> {
        let bad = |d: String| Error::malformed(KIND, d);
        let value = cbor::decode(payload).map_err(|e| bad(format!("payload: {e}")))?;
        let Value::Map(entries) = &value else {
            return Err(bad("payload is not a map".into()));
        };
        let known = [
            "tee",
            "version",
            "timestamp",
            "measurements",
            "user_data",
            "nonce",
            "public_key",
        ];
        check_keys(entries, &known).map_err(bad)?;
        match value.get("tee") {
            Some(Value::Text(t)) if t == TEE_MARKER => {}
            _ => return Err(bad(format!("tee is not \"{TEE_MARKER}\""))),
        }
        match value.get("version") {
            Some(Value::Unsigned(FORMAT_VERSION)) => {}
            _ => return Err(bad(format!("version is not {FORMAT_VERSION}"))),
        }
        let Some(Value::Unsigned(timestamp_ms)) = value.get("timestamp") else {
            return Err(bad("timestamp is not an unsigned integer".into()));
        };
        let m = value
            .get("measurements")
            .ok_or_else(|| bad("no measurements".into()))?;
        let measurements = if let Some(pcrs) = m.get("pcrs") {
            Measurements::Pcrs(pcr_map(pcrs).map_err(bad)?)
        } else {
            let Value::Map(me) = m else {
                return Err(bad("measurements is not a map".into()));
            };
            check_keys(me, &["mrenclave", "mrsigner", "isvprodid", "isvsvn"]).map_err(bad)?;
            let arr = |k: &str| -> Result<[u8; 32]> {
                match m.get(k) {
                    Some(Value::Bytes(b)) => b
                        .as_slice()
                        .try_into()
                        .map_err(|_| bad(format!("{k} is not 32 bytes"))),
                    _ => Err(bad(format!("{k} missing"))),
                }
            };
            let u16_of = |k: &str| -> Result<u16> {
                match m.get(k) {
                    Some(Value::Unsigned(n)) => {
                        u16::try_from(*n).map_err(|_| bad(format!("{k} is over 65535")))
                    }
                    _ => Err(bad(format!("{k} missing"))),
                }
            };
            Measurements::Sgx(SgxMeasurements {
                mrenclave: arr("mrenclave")?,
                mrsigner: arr("mrsigner")?,
                isvprodid: u16_of("isvprodid")?,
                isvsvn: u16_of("isvsvn")?,
            })
        };
        Ok(Document {
            timestamp_ms: *timestamp_ms,
            measurements,
            user_data: opt_bytes(&value, "user_data").map_err(bad)?,
            nonce: opt_bytes(&value, "nonce").map_err(bad)?,
            public_key: opt_bytes(&value, "public_key").map_err(bad)?,
        })
    }

    /// Every key is known text and appears once.
    pub(crate) fn check_keys(entries: &[(Value, Value)], known: &[&str]) -> Result<(), String> {
        let mut seen = Vec::new();
        for (k, _) in entries {
            let Value::Text(k) = k else {
                return Err("a map key is not text".into());
            };
            if !known.contains(&k.as_str()) {
                return Err(format!("unknown field {k:?}"));
            }
            if seen.contains(&k) {
                return Err(format!("field {k:?} appears twice"));
            }
            seen.push(k);
        }
        Ok(())
    }

    /// An optional byte string: absent or CBOR null is `None`.
    pub(crate) fn opt_bytes(v: &Value, key: &str) -> Result<Option<Vec<u8>>, String> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bytes(b)) => Ok(Some(b.clone())),
            Some(_) => Err(format!("{key} is neither a byte string nor null")),
        }
    }

    /// `{index => bstr}` with indices below 32, each once, values of 32, 48 or 64 bytes.
    pub(crate) fn pcr_map(v: &Value) -> Result<BTreeMap<u16, Vec<u8>>, String> {
        let Value::Map(entries) = v else {
            return Err("pcrs is not a map".into());
        };
        let mut pcrs = BTreeMap::new();
        for (k, v) in entries {
            let (Value::Unsigned(i), Value::Bytes(b)) = (k, v) else {
                return Err("a PCR entry is not uint => bstr".into());
            };
            let i = u16::try_from(*i)
                .ok()
                .filter(|i| *i < 32)
                .ok_or(format!("PCR index {i} is over 31"))?;
            if ![32, 48, 64].contains(&b.len()) {
                return Err(format!(
                    "PCR{i} is {} bytes, expected 32, 48 or 64",
                    b.len()
                ));
            }
            if pcrs.insert(i, b.clone()).is_some() {
                return Err(format!("PCR{i} appears twice"));
            }
        }
        Ok(pcrs)
    }
}
