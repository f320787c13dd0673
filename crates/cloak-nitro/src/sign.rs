//! The EIF signature section and PCR8: a COSE_Sign1 (ES384, untagged) over PCR0, and the signing
//! certificate, in the CBOR shape nitro-cli writes (byte strings serialised as arrays of uints,
//! a serde quirk readers expect). ECDSA in RustCrypto is deterministic (RFC 6979), so signed EIFs
//! stay reproducible.

use p384::ecdsa::signature::{Signer as _, Verifier as _};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::pkcs8::{DecodePrivateKey, DecodePublicKey};
use sha2::{Digest, Sha384};

use crate::error::{Error, Result};

/// COSE algorithm ES384.
const ES384: i64 = -35;

fn head(out: &mut Vec<u8>, major: u8, len: u64) {
    let m = major << 5;
    match len {
        0..=23 => out.push(m | len as u8),
        24..=0xff => out.extend([m | 24, len as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend((len as u16).to_be_bytes());
        }
        _ => {
            out.push(m | 26);
            out.extend((len as u32).to_be_bytes());
        }
    }
}

fn bstr(out: &mut Vec<u8>, b: &[u8]) {
    head(out, 2, b.len() as u64);
    out.extend_from_slice(b);
}

fn text(out: &mut Vec<u8>, s: &str) {
    head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// `Vec<u8>` as serde writes it to CBOR: an array of small unsigned integers.
fn uint_array(out: &mut Vec<u8>, b: &[u8]) {
    head(out, 4, b.len() as u64);
    for &x in b {
        head(out, 0, u64::from(x));
    }
}

fn protected_header() -> Vec<u8> {
    let mut p = Vec::new();
    head(&mut p, 5, 1);
    head(&mut p, 0, 1);
    head(&mut p, 1, (-1 - ES384) as u64);
    p
}

fn payload(pcr0: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    head(&mut p, 5, 2);
    text(&mut p, "register_index");
    head(&mut p, 0, 0);
    text(&mut p, "register_value");
    uint_array(&mut p, pcr0);
    p
}

fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut s = Vec::new();
    head(&mut s, 4, 4);
    text(&mut s, "Signature1");
    bstr(&mut s, protected);
    bstr(&mut s, &[]);
    bstr(&mut s, payload);
    s
}

/// The DER of the first certificate in a PEM file.
pub fn cert_der(pem: &[u8]) -> Result<Vec<u8>> {
    use base64::Engine;
    let text = std::str::from_utf8(pem)
        .map_err(|_| Error::Input("the signing certificate is not PEM text".into()))?;
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    if body.is_empty() {
        return Err(Error::Input(
            "no CERTIFICATE block in the signing certificate PEM".into(),
        ));
    }
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|_| Error::Input("the signing certificate PEM is not valid base64".into()))
}

/// PCR8: `SHA384(0^48 ‖ SHA384(DER(certificate)))`.
pub fn pcr8(cert_pem: &[u8]) -> Result<String> {
    let mut outer = Sha384::new();
    outer.update([0u8; 48]);
    outer.update(Sha384::digest(cert_der(cert_pem)?));
    Ok(hex::encode(outer.finalize()))
}

/// A P-384 key and its certificate.
pub struct EifSigner {
    key: SigningKey,
    cert_pem: Vec<u8>,
}

impl std::fmt::Debug for EifSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EifSigner { key: <redacted> }")
    }
}

impl EifSigner {
    /// Read a P-384 private key (PKCS#8 or SEC1 PEM) and its certificate (PEM).
    pub fn from_files(key: &std::path::Path, cert: &std::path::Path) -> Result<Self> {
        let pem =
            std::fs::read_to_string(key).map_err(|e| Error::io("read signing key", key, e))?;
        let cert_pem =
            std::fs::read(cert).map_err(|e| Error::io("read signing certificate", cert, e))?;
        Self::from_pem(
            &pem,
            cert_pem,
            &key.display().to_string(),
            &cert.display().to_string(),
        )
    }

    /// A P-384 private key (PKCS#8 or SEC1 PEM) and its certificate (PEM) held in memory;
    /// `key_name` and `cert_name` name them in errors (the key's bytes never appear).
    pub fn from_pem(
        key_pem: &str,
        cert_pem: Vec<u8>,
        key_name: &str,
        cert_name: &str,
    ) -> Result<Self> {
        let key_obj = SigningKey::from_pkcs8_pem(key_pem)
            .or_else(|_| p384::SecretKey::from_sec1_pem(key_pem).map(SigningKey::from))
            .map_err(|_| {
                Error::Input(format!(
                    "{key_name}: not a P-384 private key in PEM (create one with `openssl ecparam -name secp384r1 -genkey -noout -out key.pem`)"
                ))
            })?;
        let public = public_key(&cert_der(&cert_pem)?)?;
        if public != *key_obj.verifying_key() {
            return Err(Error::Input(format!(
                "{cert_name} does not certify the key in {key_name}"
            )));
        }
        Ok(EifSigner {
            key: key_obj,
            cert_pem,
        })
    }

    /// The certificate PEM.
    pub fn cert_pem(&self) -> &[u8] {
        &self.cert_pem
    }

    /// The signature section for an EIF whose PCR0 is `pcr0` (48 bytes).
    pub fn section(&self, pcr0: &[u8]) -> Vec<u8> {
        let protected = protected_header();
        let payload = payload(pcr0);
        let sig: Signature = self.key.sign(&sig_structure(&protected, &payload));
        let mut cose = Vec::new();
        head(&mut cose, 4, 4);
        bstr(&mut cose, &protected);
        head(&mut cose, 5, 0);
        bstr(&mut cose, &payload);
        bstr(&mut cose, &sig.to_bytes());
        let mut out = Vec::new();
        head(&mut out, 4, 1);
        head(&mut out, 5, 2);
        text(&mut out, "signing_certificate");
        uint_array(&mut out, &self.cert_pem);
        text(&mut out, "signature");
        uint_array(&mut out, &cose);
        out
    }
}

/// The SubjectPublicKeyInfo of a certificate (a minimal DER walk), as a P-384 key.
fn public_key(der: &[u8]) -> Result<VerifyingKey> {
    let bad = || Error::Input("the signing certificate is not a P-384 X.509 certificate".into());
    // (tag, header length, content length) of the TLV at `at`.
    let tlv = |at: usize| -> Option<(u8, usize, usize)> {
        let tag = *der.get(at)?;
        let first = *der.get(at + 1)? as usize;
        if first < 0x80 {
            return Some((tag, 2, first));
        }
        let n = first & 0x7f;
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *der.get(at + 2 + i)? as usize;
        }
        Some((tag, 2 + n, len))
    };
    let (_, h, _) = tlv(0).ok_or_else(bad)?; // Certificate
    let tbs = h;
    let (_, h, _) = tlv(tbs).ok_or_else(bad)?; // tbsCertificate
    let mut at = tbs + h;
    if tlv(at).ok_or_else(bad)?.0 == 0xa0 {
        let (_, h, l) = tlv(at).ok_or_else(bad)?;
        at += h + l; // [0] version
    }
    for _ in 0..5 {
        let (_, h, l) = tlv(at).ok_or_else(bad)?; // serial, signature, issuer, validity, subject
        at += h + l;
    }
    let (_, h, l) = tlv(at).ok_or_else(bad)?;
    let spki = der.get(at..at + h + l).ok_or_else(bad)?;
    VerifyingKey::from_public_key_der(spki).map_err(|_| bad())
}

/// What a signature section says, checked against the EIF's PCR0.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignatureCheck {
    /// PCR8 of the certificate.
    pub pcr8: String,
    /// Whether the COSE signature verifies with the certificate's key and covers this PCR0.
    pub valid: bool,
    /// Why not, when it does not.
    pub problem: Option<String>,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn head(&mut self) -> Option<(u8, u64)> {
        let first = *self.b.get(self.at)?;
        self.at += 1;
        let (major, info) = (first >> 5, first & 0x1f);
        let len = match info {
            0..=23 => u64::from(info),
            24 => {
                self.at += 1;
                u64::from(*self.b.get(self.at - 1)?)
            }
            25 => {
                self.at += 2;
                u64::from(u16::from_be_bytes(
                    self.b.get(self.at - 2..self.at)?.try_into().ok()?,
                ))
            }
            26 => {
                self.at += 4;
                u64::from(u32::from_be_bytes(
                    self.b.get(self.at - 4..self.at)?.try_into().ok()?,
                ))
            }
            _ => return None,
        };
        Some((major, len))
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let (major, len) = self.head()?;
        match major {
            2 => {
                let v = self.b.get(self.at..self.at + len as usize)?.to_vec();
                self.at += len as usize;
                Some(v)
            }
            4 => (0..len)
                .map(|_| match self.head()? {
                    (0, x) if x < 256 => Some(x as u8),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }
    fn text(&mut self) -> Option<String> {
        let (major, len) = self.head()?;
        if major != 3 {
            return None;
        }
        let v = std::str::from_utf8(self.b.get(self.at..self.at + len as usize)?)
            .ok()?
            .to_string();
        self.at += len as usize;
        Some(v)
    }
}

/// Check a signature section against `pcr0`.
pub fn check(section: &[u8], pcr0: &[u8]) -> Result<SignatureCheck> {
    let bad = || Error::Input("the signature section is not the CBOR nitro-cli writes".into());
    let mut r = Reader { b: section, at: 0 };
    if r.head() != Some((4, 1)) || r.head() != Some((5, 2)) {
        return Err(bad());
    }
    let (mut cert, mut cose) = (None, None);
    for _ in 0..2 {
        match r.text().ok_or_else(bad)?.as_str() {
            "signing_certificate" => cert = r.bytes(),
            "signature" => cose = r.bytes(),
            _ => return Err(bad()),
        }
    }
    let (cert, cose) = (cert.ok_or_else(bad)?, cose.ok_or_else(bad)?);
    let pcr8 = pcr8(&cert)?;
    let mut c = Reader { b: &cose, at: 0 };
    if c.head() != Some((4, 4)) {
        return Err(bad());
    }
    let protected = c.bytes().ok_or_else(bad)?;
    if c.head() != Some((5, 0)) {
        return Err(bad());
    }
    let payload_bytes = c.bytes().ok_or_else(bad)?;
    let sig = c.bytes().ok_or_else(bad)?;
    if r.at != section.len() || c.at != cose.len() {
        return Err(bad()); // trailing bytes: not what nitro-cli writes
    }
    let verdict = (|| -> std::result::Result<(), String> {
        if payload_bytes != payload(pcr0) {
            return Err("the signed payload is not this EIF's PCR0".into());
        }
        let key =
            public_key(&cert_der(&cert).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        let sig =
            Signature::from_slice(&sig).map_err(|_| "malformed ES384 signature".to_string())?;
        key.verify(&sig_structure(&protected, &payload_bytes), &sig)
            .map_err(|_| "the signature does not verify with the certificate's key".to_string())
    })();
    Ok(SignatureCheck {
        pcr8,
        valid: verdict.is_ok(),
        problem: verdict.err(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> (tempfile::TempDir, EifSigner) {
        let d = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let ok = std::process::Command::new("openssl")
                .args(args)
                .current_dir(d.path())
                .status()
                .unwrap();
            assert!(ok.success());
        };
        run(&[
            "ecparam",
            "-name",
            "secp384r1",
            "-genkey",
            "-noout",
            "-out",
            "key.pem",
        ]);
        run(&[
            "req", "-new", "-x509", "-key", "key.pem", "-out", "cert.pem", "-days", "2", "-subj",
            "/CN=t",
        ]);
        let s =
            EifSigner::from_files(&d.path().join("key.pem"), &d.path().join("cert.pem")).unwrap();
        (d, s)
    }

    #[test]
    fn sections_verify_and_tampering_is_caught() {
        let (_d, s) = signer();
        let pcr0 = [7u8; 48];
        let section = s.section(&pcr0);
        let ok = check(&section, &pcr0).unwrap();
        assert!(ok.valid, "{:?}", ok.problem);
        let other = check(&section, &[8u8; 48]).unwrap();
        assert!(!other.valid && other.problem.unwrap().contains("PCR0"));
        // Every single-bit flip in the structure or the COSE part is malformed or invalid.
        // (The certificate PEM is not covered by the signature: PCR8, over its DER, binds it.)
        let cose_start = section
            .windows(10)
            .position(|w| w == b"\x69signature")
            .unwrap();
        for at in (0..4).chain((cose_start..section.len()).step_by(3)) {
            let mut t = section.clone();
            t[at] ^= 1;
            let caught = check(&t, &pcr0).map_or(true, |c| !c.valid);
            assert!(caught, "flip at {at} goes unnoticed");
        }
        assert_eq!(
            s.section(&pcr0),
            section,
            "RFC 6979: signing is deterministic"
        );
    }

    #[test]
    fn a_certificate_for_another_key_is_refused() {
        let (d, _) = signer();
        let (d2, _) = signer();
        let err = EifSigner::from_files(&d.path().join("key.pem"), &d2.path().join("cert.pem"))
            .unwrap_err();
        assert!(err.to_string().contains("does not certify"), "{err}");
    }
}
