//! COSE_Sign1 (RFC 9052 §4.2), as Nitro documents and simulated evidence use it: untagged,
//! protected header `{1: alg}`, empty unprotected header, payload embedded, signature raw
//! `r || s`. Everything outside the signature is fixed, so no byte can change unnoticed.

use crate::cbor::{self, Value};

/// COSE algorithm ES256 (ECDSA P-256, SHA-256).
pub(crate) const ES256: i64 = -7;
/// COSE algorithm ES384 (ECDSA P-384, SHA-384).
#[cfg_attr(not(feature = "verify"), allow(dead_code))]
pub(crate) const ES384: i64 = -35;

/// A decoded COSE_Sign1.
#[cfg_attr(not(feature = "verify"), allow(dead_code))]
pub(crate) struct Sign1 {
    pub protected: Vec<u8>,
    pub alg: i64,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

#[cfg_attr(not(feature = "verify"), allow(dead_code))]
impl Sign1 {
    /// Decode and check the envelope's shape; the signature is not checked here.
    pub fn decode(bytes: &[u8]) -> Result<Sign1, String> {
        let value = cbor::decode(bytes).map_err(|e| format!("not CBOR: {e}"))?;
        let Value::Array(items) = value else {
            return Err("not an untagged COSE_Sign1 array".into());
        };
        let [protected, unprotected, payload, signature]: [Value; 4] = items
            .try_into()
            .map_err(|v: Vec<Value>| format!("COSE_Sign1 has {} elements, expected 4", v.len()))?;
        let (
            Value::Bytes(protected),
            Value::Map(unprotected),
            Value::Bytes(payload),
            Value::Bytes(signature),
        ) = (protected, unprotected, payload, signature)
        else {
            return Err("COSE_Sign1 elements are not [bstr, map, bstr, bstr]".into());
        };
        if !unprotected.is_empty() {
            return Err("the unprotected header is not empty (it is not signed)".into());
        }
        let header = cbor::decode(&protected).map_err(|e| format!("protected header: {e}"))?;
        let Value::Map(entries) = &header else {
            return Err("protected header is not a map".into());
        };
        if entries.len() != 1 || header.encode() != protected {
            return Err(format!(
                "protected header has {} entries or a non-canonical encoding, expected only the algorithm",
                entries.len()
            ));
        }
        let alg = header
            .get_int(1)
            .and_then(Value::as_i64)
            .ok_or("protected header has no integer algorithm (label 1)")?;
        Ok(Sign1 {
            protected,
            alg,
            payload,
            signature,
        })
    }

    /// The bytes the signature covers.
    pub fn to_be_signed(&self) -> Vec<u8> {
        to_be_signed(&self.protected, &self.payload)
    }
}

/// `Sig_structure1 = ["Signature1", protected, external_aad = h'', payload]`.
pub(crate) fn to_be_signed(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    Value::Array(vec![
        Value::Text("Signature1".into()),
        Value::Bytes(protected.to_vec()),
        Value::Bytes(Vec::new()),
        Value::Bytes(payload.to_vec()),
    ])
    .encode()
}

/// Encode an untagged COSE_Sign1.
pub(crate) fn encode(protected: &[u8], payload: &[u8], signature: &[u8]) -> Vec<u8> {
    Value::Array(vec![
        Value::Bytes(protected.to_vec()),
        Value::Map(Vec::new()),
        Value::Bytes(payload.to_vec()),
        Value::Bytes(signature.to_vec()),
    ])
    .encode()
}

/// The protected header `{1: alg}`.
pub(crate) fn protected_header(alg: i64) -> Vec<u8> {
    let alg = if alg < 0 {
        Value::Negative((-1 - alg) as u64)
    } else {
        Value::Unsigned(alg as u64)
    };
    Value::Map(vec![(Value::Unsigned(1), alg)]).encode()
}
