//! PKCS#10 certificate requests, as the manager receives them with evidence: parsed strictly,
//! self-signature verified, key and requested names extracted. Custom requested extensions are
//! listed, not refused (rcgen's own CSR parser refuses them).

use crate::x509::{first_tlv_inside, pem_blocks, verify_ecdsa_der, verify_rsa_der};
use crate::{Error, Result};
use std::net::IpAddr;
use x509_cert_03::der::{Decode, Encode, Tagged};
use x509_cert_03::ext::pkix::name::GeneralName;
use x509_cert_03::ext::pkix::SubjectAltName;
use x509_cert_03::request::{CertReq, ExtensionReq};

const EXTENSION_REQUEST: &str = "1.2.840.113549.1.9.14";
const SUBJECT_ALT_NAME: &str = "2.5.29.17";

/// The key type of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on P-256.
    EcP256,
    /// ECDSA on P-384.
    EcP384,
    /// RSA with a modulus of this many bits.
    Rsa {
        /// Modulus size.
        bits: usize,
    },
}

/// A verified certificate request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csr {
    /// Subject as RFC 4514 text.
    pub subject: String,
    /// The SubjectPublicKeyInfo (DER): what evidence must bind (see [`crate::binding`]).
    pub spki_der: Vec<u8>,
    /// The key type.
    pub key: KeyType,
    /// DNS names requested in a subjectAltName extension request.
    pub dns_names: Vec<String>,
    /// IP addresses requested in a subjectAltName extension request.
    pub ip_addresses: Vec<IpAddr>,
    /// OIDs of every requested extension, in order.
    pub requested_extensions: Vec<String>,
}

fn bad(detail: impl Into<String>) -> Error {
    Error::BadCsr(detail.into())
}

/// Parse a certificate request (PEM `CERTIFICATE REQUEST` or DER) and verify its signature.
/// Keys: EC P-256, P-384, RSA of 2048 to 8192 bits.
pub fn parse(bytes: &[u8]) -> Result<Csr> {
    let der = match pem_blocks(bytes, "CERTIFICATE REQUEST").into_iter().next() {
        Some(der) => der,
        None if bytes.first() == Some(&0x30) => bytes.to_vec(),
        None => return Err(bad("neither PEM (CERTIFICATE REQUEST) nor DER")),
    };
    let req =
        CertReq::from_der(&der).map_err(|e| bad(format!("not a DER PKCS#10 request: {e}")))?;
    let spki = &req.info.public_key;
    let spki_der = spki.to_der().map_err(|e| bad(format!("public key: {e}")))?;
    let info = first_tlv_inside(&der).ok_or_else(|| bad("cannot locate the request info"))?;
    let sig = req
        .signature
        .as_bytes()
        .ok_or_else(|| bad("the signature has unused bits"))?;
    let alg = req.algorithm.oid.to_string();
    // The signature algorithm sits outside what is signed: only absent or NULL parameters (the
    // two encodings in use) may appear, or its bytes could change unnoticed.
    if let Some(p) = &req.algorithm.parameters {
        if p.tag() != x509_cert_03::der::Tag::Null || !p.value().is_empty() {
            return Err(bad(
                "the signature algorithm has parameters other than NULL",
            ));
        }
    }
    let key = match spki.algorithm.oid.to_string().as_str() {
        "1.2.840.10045.2.1" => {
            verify_ecdsa_der(spki, &alg, info, sig).map_err(|detail| Error::BadSignature {
                item: "certificate request".into(),
                detail,
            })?;
            match point_len(spki) {
                Some(65) => KeyType::EcP256,
                Some(97) => KeyType::EcP384,
                _ => return Err(bad("EC key is neither P-256 nor P-384")),
            }
        }
        "1.2.840.113549.1.1.1" => {
            let bits =
                verify_rsa_der(spki, &alg, info, sig).map_err(|detail| Error::BadSignature {
                    item: "certificate request".into(),
                    detail,
                })?;
            KeyType::Rsa { bits }
        }
        other => {
            return Err(bad(format!(
                "key algorithm {other} is not supported; use EC P-256/P-384 or RSA 2048/3072/4096"
            )))
        }
    };

    let mut csr = Csr {
        subject: req.info.subject.to_string(),
        spki_der,
        key,
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        requested_extensions: Vec::new(),
    };
    for attr in req
        .info
        .attributes
        .iter()
        .filter(|a| a.oid.to_string() == EXTENSION_REQUEST)
    {
        for value in attr.values.iter() {
            let exts: ExtensionReq = value
                .decode_as()
                .map_err(|e| bad(format!("extension request: {e}")))?;
            for ext in exts.0 {
                let oid = ext.extn_id.to_string();
                if oid == SUBJECT_ALT_NAME {
                    let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
                        .map_err(|e| bad(format!("subjectAltName: {e}")))?;
                    for name in san.0 {
                        match name {
                            GeneralName::DnsName(d) => csr.dns_names.push(d.to_string()),
                            GeneralName::IpAddress(ip) => {
                                csr.ip_addresses.push(ip_of(ip.as_bytes())?)
                            }
                            _ => {
                                return Err(bad(
                                    "subjectAltName holds a name that is neither DNS nor IP",
                                ))
                            }
                        }
                    }
                }
                csr.requested_extensions.push(oid);
            }
        }
    }
    Ok(csr)
}

fn point_len(spki: &x509_cert_03::spki::SubjectPublicKeyInfoOwned) -> Option<usize> {
    spki.subject_public_key.as_bytes().map(<[u8]>::len)
}

fn ip_of(b: &[u8]) -> Result<IpAddr> {
    match b.len() {
        4 => Ok(IpAddr::from(
            <[u8; 4]>::try_from(b).map_err(|_| bad("IPv4"))?,
        )),
        16 => Ok(IpAddr::from(
            <[u8; 16]>::try_from(b).map_err(|_| bad("IPv6"))?,
        )),
        n => Err(bad(format!("an IP address of {n} bytes"))),
    }
}
