//! The few X.509 operations evidence needs: parse, validity, and ECDSA signatures checked over
//! the certificate's own TBS bytes (never a re-encoding) with ring.

use ring::signature::{self, VerificationAlgorithm};
use x509_cert_03::der::{self, Decode, Encode};
use x509_cert_03::spki::SubjectPublicKeyInfoOwned;
use x509_cert_03::Certificate;

const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const P256: &str = "1.2.840.10045.3.1.7";
const P384: &str = "1.3.132.0.34";

/// A parsed certificate with its DER.
pub(crate) struct Cert<'a> {
    pub der: &'a [u8],
    pub cert: Certificate,
}

impl<'a> Cert<'a> {
    pub fn parse(der: &'a [u8]) -> Result<Self, String> {
        let cert =
            Certificate::from_der(der).map_err(|e| format!("not a DER X.509 certificate: {e}"))?;
        Ok(Cert { der, cert })
    }

    /// The subject as RFC 4514 text, for messages.
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate().subject().to_string()
    }

    /// notBefore and notAfter in Unix seconds.
    pub fn validity(&self) -> (u64, u64) {
        let v = self.cert.tbs_certificate().validity();
        (
            v.not_before.to_unix_duration().as_secs(),
            v.not_after.to_unix_duration().as_secs(),
        )
    }

    pub fn spki(&self) -> &SubjectPublicKeyInfoOwned {
        self.cert.tbs_certificate().subject_public_key_info()
    }

    /// The DER of the SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Result<Vec<u8>, String> {
        self.spki()
            .to_der()
            .map_err(|e| format!("cannot encode the public key: {e}"))
    }

    /// Check that `issuer`'s key signed this certificate.
    pub fn verify_signed_by(&self, issuer: &SubjectPublicKeyInfoOwned) -> Result<(), String> {
        let outer = self.cert.signature_algorithm();
        if outer != self.cert.tbs_certificate().signature() {
            return Err(
                "the signature algorithm inside the certificate differs from the outer one".into(),
            );
        }
        let tbs = first_tlv_inside(self.der).ok_or("cannot locate the TBS certificate")?;
        let sig = self
            .cert
            .signature()
            .as_bytes()
            .ok_or("the signature has unused bits")?;
        verify_ecdsa_der(issuer, &outer.oid.to_string(), tbs, sig)
    }
}

/// The curve of an EC SubjectPublicKeyInfo and its SEC1 point.
fn ec_key(spki: &SubjectPublicKeyInfoOwned) -> Result<(&'static str, &[u8]), String> {
    if spki.algorithm.oid.to_string() != EC_PUBLIC_KEY {
        return Err(format!(
            "public key algorithm {} is not EC",
            spki.algorithm.oid
        ));
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok())
        .map(|o| o.to_string())
        .ok_or("EC public key without a named curve")?;
    let curve = match curve.as_str() {
        P256 => "P-256",
        P384 => "P-384",
        other => return Err(format!("EC curve {other} is not P-256 or P-384")),
    };
    let point = spki
        .subject_public_key
        .as_bytes()
        .ok_or("public key has unused bits")?;
    Ok((curve, point))
}

/// Verify a DER-encoded ECDSA signature (as in certificates) made with `alg_oid`.
pub(crate) fn verify_ecdsa_der(
    key: &SubjectPublicKeyInfoOwned,
    alg_oid: &str,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), String> {
    let (curve, point) = ec_key(key)?;
    let alg: &dyn VerificationAlgorithm = match (curve, alg_oid) {
        ("P-256", ECDSA_SHA256) => &signature::ECDSA_P256_SHA256_ASN1,
        ("P-256", ECDSA_SHA384) => &signature::ECDSA_P256_SHA384_ASN1,
        ("P-384", ECDSA_SHA256) => &signature::ECDSA_P384_SHA256_ASN1,
        ("P-384", ECDSA_SHA384) => &signature::ECDSA_P384_SHA384_ASN1,
        (_, other) => {
            return Err(format!(
                "signature algorithm {other} is not ECDSA with SHA-256/384"
            ))
        }
    };
    signature::UnparsedPublicKey::new(alg, point)
        .verify(msg, sig)
        .map_err(|_| format!("ECDSA {curve} signature does not verify"))
}

/// Verify a DER RSA PKCS#1 v1.5 signature made with `alg_oid` (SHA-256/384/512); returns the
/// modulus size in bits (2048 to 8192).
pub(crate) fn verify_rsa_der(
    key: &SubjectPublicKeyInfoOwned,
    alg_oid: &str,
    msg: &[u8],
    sig: &[u8],
) -> Result<usize, String> {
    let rsa_key = key
        .subject_public_key
        .as_bytes()
        .ok_or("public key has unused bits")?;
    let bits = rsa_modulus_bits(rsa_key).ok_or("the RSA public key is not DER RSAPublicKey")?;
    let alg: &dyn VerificationAlgorithm = match alg_oid {
        "1.2.840.113549.1.1.11" => &signature::RSA_PKCS1_2048_8192_SHA256,
        "1.2.840.113549.1.1.12" => &signature::RSA_PKCS1_2048_8192_SHA384,
        "1.2.840.113549.1.1.13" => &signature::RSA_PKCS1_2048_8192_SHA512,
        other => {
            return Err(format!(
                "signature algorithm {other} is not RSA PKCS#1 v1.5 with SHA-256/384/512"
            ))
        }
    };
    signature::UnparsedPublicKey::new(alg, rsa_key)
        .verify(msg, sig)
        .map_err(|_| {
            format!("RSA-{bits} signature does not verify (keys of 2048 to 8192 bits are accepted)")
        })?;
    Ok(bits)
}

/// The bit length of the modulus of a DER RSAPublicKey.
fn rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    let (_, inner) = tlv(der)?;
    if inner.first() != Some(&0x02) {
        return None;
    }
    let (_, n) = tlv(inner)?;
    let n = match n {
        [0, rest @ ..] => rest,
        n => n,
    };
    let top = *n.first()?;
    Some(n.len() * 8 - top.leading_zeros() as usize)
}

/// Verify a raw `r || s` ECDSA P-384/SHA-384 signature (COSE ES384).
pub(crate) fn verify_es384(
    key: &SubjectPublicKeyInfoOwned,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), String> {
    let (curve, point) = ec_key(key)?;
    if curve != "P-384" {
        return Err(format!(
            "ES384 needs a P-384 key, the certificate has {curve}"
        ));
    }
    signature::UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
        .verify(msg, sig)
        .map_err(|_| "ES384 signature does not verify".to_string())
}

/// The first TLV inside the outer DER SEQUENCE (the TBS part of a certificate).
pub(crate) fn first_tlv_inside(der: &[u8]) -> Option<&[u8]> {
    let (_, inner) = tlv(der)?;
    let (len, _) = tlv(inner)?;
    inner.get(..len)
}

/// Length of the first TLV in `b` (header included) and its contents.
fn tlv(b: &[u8]) -> Option<(usize, &[u8])> {
    let first = *b.get(1)?;
    let (hdr, len) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = b.get(2..2 + n)?;
        (
            2 + n,
            bytes.iter().fold(0usize, |a, &x| (a << 8) | usize::from(x)),
        )
    };
    let end = hdr.checked_add(len)?;
    Some((end, b.get(hdr..end)?))
}

/// The contents of every PEM block labelled `label` in `text`; blocks that are not base64 are
/// left out (the DER parser then reports what is missing).
pub(crate) fn pem_blocks(text: &[u8], label: &str) -> Vec<Vec<u8>> {
    use base64::Engine;
    let Ok(text) = std::str::from_utf8(text) else {
        return Vec::new();
    };
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let body = &rest[start + begin.len()..];
        let Some(stop) = body.find(&end) else { break };
        let b64: String = body[..stop]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
            out.push(der);
        }
        rest = &body[stop + end.len()..];
    }
    out
}

/// The canonical PEM of DER certificates: 64-column base64 lines, `\n` line ends.
pub(crate) fn pem_encode(ders: &[Vec<u8>], label: &str) -> String {
    use base64::Engine;
    let mut out = String::new();
    for der in ders {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        out.push_str(&format!("-----BEGIN {label}-----\n"));
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
    }
    out
}
