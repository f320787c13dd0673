//! Tell evidence kinds apart by their bytes, and undo the text encodings they travel in.

use crate::cbor::{self, Value};
use crate::cose::Sign1;
use crate::x509::pem_blocks;
use crate::{Error, EvidenceKind, Result};
use base64::Engine;

/// Evidence in its binary form, with its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// What it is.
    pub kind: EvidenceKind,
    /// Raw bytes: a binary quote, a COSE_Sign1, a DER certificate.
    pub bytes: Vec<u8>,
}

/// Detect the kind of `input`: a DCAP quote raw or as hex text; a COSE_Sign1 (Nitro document,
/// or simulated evidence when its payload says `tee: "simulated"`) raw or as base64 text; an
/// RA-TLS certificate as PEM or DER.
pub fn detect(input: &[u8]) -> Result<Evidence> {
    if let Some(der) = pem_blocks(input, "CERTIFICATE").into_iter().next() {
        return Ok(Evidence {
            kind: EvidenceKind::RaTlsCertificate,
            bytes: der,
        });
    }
    if let Some(kind) = binary_kind(input) {
        return Ok(Evidence {
            kind,
            bytes: input.to_vec(),
        });
    }
    if let Ok(text) = std::str::from_utf8(input) {
        let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let decoded = if !compact.is_empty() && compact.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(&compact).ok()
        } else {
            None
        }
        .or_else(|| {
            base64::engine::general_purpose::STANDARD
                .decode(&compact)
                .ok()
        });
        if let Some(bytes) = decoded {
            if let Some(kind) = binary_kind(&bytes) {
                return Ok(Evidence { kind, bytes });
            }
        }
    }
    let head: String = input.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Err(Error::UnknownKind(format!(
        "{} bytes starting with {head}",
        input.len()
    )))
}

fn binary_kind(b: &[u8]) -> Option<EvidenceKind> {
    let u16_at = |i: usize| b.get(i..i + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    if matches!(u16_at(0), Some(3..=5)) && u16_at(2) == Some(2) {
        return Some(EvidenceKind::DcapQuote);
    }
    match b.first()? {
        // COSE_Sign1: an untagged array of four.
        0x84 => {
            let simulated = Sign1::decode(b)
                .ok()
                .and_then(|s| cbor::decode(&s.payload).ok())
                .is_some_and(|p| matches!(p.get("tee"), Some(Value::Text(t)) if t == crate::simulated::TEE_MARKER));
            Some(if simulated {
                EvidenceKind::Simulated
            } else {
                EvidenceKind::NitroDocument
            })
        }
        // A DER certificate: SEQUENCE with a two-byte length spanning the input exactly.
        0x30 if b.get(1) == Some(&0x82)
            && b.len() >= 4
            && usize::from(u16::from_be_bytes([b[2], b[3]])) + 4 == b.len() =>
        {
            Some(EvidenceKind::RaTlsCertificate)
        }
        _ => None,
    }
}
