//! The 1808-byte SIGSTRUCT: built, signed (RSA-3072, e = 3, PKCS#1 v1.5 over SHA-256, with
//! Q1/Q2), parsed and verified. MRSIGNER is SHA-256 of the little-endian modulus field.

use num_bigint::BigUint;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::key::Signer;

/// Size of a SIGSTRUCT.
pub const SIZE: usize = 1808;
const HEADER: [u8; 16] = [6, 0, 0, 0, 0xe1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0];
const HEADER2: [u8; 16] = [1, 1, 0, 0, 0x60, 0, 0, 0, 0x60, 0, 0, 0, 1, 0, 0, 0];
/// DigestInfo prefix of SHA-256 in EMSA-PKCS1-v1_5.
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const MODULUS_LEN: usize = 384;

/// Offsets of the fields (from `sgx_arch.h`).
mod off {
    pub const VENDOR: usize = 0x10;
    pub const DATE: usize = 0x14;
    pub const HEADER2: usize = 0x18;
    pub const MODULUS: usize = 0x80;
    pub const EXPONENT: usize = 0x200;
    pub const SIGNATURE: usize = 0x204;
    pub const MISCSELECT: usize = 0x384;
    pub const MISCMASK: usize = 0x388;
    pub const ATTRIBUTES: usize = 0x3a0;
    pub const ATTRIBUTEMASK: usize = 0x3b0;
    pub const ENCLAVEHASH: usize = 0x3c0;
    pub const ISVPRODID: usize = 0x400;
    pub const ISVSVN: usize = 0x402;
    pub const Q1: usize = 0x410;
    pub const Q2: usize = 0x590;
}

/// What goes into a SIGSTRUCT besides the key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// `(year, month, day)`; encoded "BCD-like" (2024-12-31 → 0x20241231).
    pub date: (u16, u8, u8),
    /// MRENCLAVE.
    pub mrenclave: [u8; 32],
    /// ISVPRODID.
    pub isvprodid: u16,
    /// ISVSVN.
    pub isvsvn: u16,
    /// ATTRIBUTES.FLAGS (MODE64BIT, DEBUG…).
    pub flags: u64,
    /// ATTRIBUTES.XFRM.
    pub xfrm: u64,
    /// ATTRIBUTEMASK.FLAGS.
    pub flags_mask: u64,
    /// ATTRIBUTEMASK.XFRM.
    pub xfrm_mask: u64,
    /// MISCSELECT.
    pub miscselect: u32,
    /// MISCMASK.
    pub miscmask: u32,
}

fn bcd_date((y, m, d): (u16, u8, u8)) -> Result<u32> {
    let text = format!("{y:04}{m:02}{d:02}");
    u32::from_str_radix(&text, 16)
        .map_err(|_| Error::Manifest(format!("invalid SIGSTRUCT date {y}-{m}-{d}")))
}

/// Parse `YYYY-MM-DD` (`0000-00-00` allowed, as Gramine does).
pub fn parse_date(s: &str) -> Result<(u16, u8, u8)> {
    let bad = || Error::Manifest(format!("date {s:?} is not YYYY-MM-DD"));
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let (y, m, d) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    if m > 12 || d > 31 {
        return Err(bad());
    }
    Ok((y, m, d))
}

fn le_to_big(le: &[u8]) -> BigUint {
    BigUint::from_bytes_le(le)
}

fn put_le(out: &mut [u8], v: &BigUint) {
    let b = v.to_bytes_le();
    out.fill(0);
    out[..b.len()].copy_from_slice(&b);
}

/// Build and sign a SIGSTRUCT with `signer`.
pub fn sign(body: &Body, signer: &dyn Signer) -> Result<[u8; SIZE]> {
    let modulus_be = signer.modulus_be();
    if modulus_be.len() != MODULUS_LEN || signer.exponent() != 3 {
        return Err(Error::Key {
            key: signer.describe(),
            reason: "SGX needs an RSA-3072 key with public exponent 3 (openssl genrsa -3 -out key.pem 3072)".into(),
        });
    }
    let mut s = [0u8; SIZE];
    s[..16].copy_from_slice(&HEADER);
    s[off::VENDOR..off::VENDOR + 4].copy_from_slice(&0u32.to_le_bytes());
    s[off::DATE..off::DATE + 4].copy_from_slice(&bcd_date(body.date)?.to_le_bytes());
    s[off::HEADER2..off::HEADER2 + 16].copy_from_slice(&HEADER2);
    let mut modulus_le = modulus_be.clone();
    modulus_le.reverse();
    s[off::MODULUS..off::MODULUS + MODULUS_LEN].copy_from_slice(&modulus_le);
    s[off::EXPONENT..off::EXPONENT + 4].copy_from_slice(&3u32.to_le_bytes());
    s[off::MISCSELECT..off::MISCSELECT + 4].copy_from_slice(&body.miscselect.to_le_bytes());
    s[off::MISCMASK..off::MISCMASK + 4].copy_from_slice(&body.miscmask.to_le_bytes());
    s[off::ATTRIBUTES..off::ATTRIBUTES + 8].copy_from_slice(&body.flags.to_le_bytes());
    s[off::ATTRIBUTES + 8..off::ATTRIBUTES + 16].copy_from_slice(&body.xfrm.to_le_bytes());
    s[off::ATTRIBUTEMASK..off::ATTRIBUTEMASK + 8].copy_from_slice(&body.flags_mask.to_le_bytes());
    s[off::ATTRIBUTEMASK + 8..off::ATTRIBUTEMASK + 16]
        .copy_from_slice(&body.xfrm_mask.to_le_bytes());
    s[off::ENCLAVEHASH..off::ENCLAVEHASH + 32].copy_from_slice(&body.mrenclave);
    s[off::ISVPRODID..off::ISVPRODID + 2].copy_from_slice(&body.isvprodid.to_le_bytes());
    s[off::ISVSVN..off::ISVSVN + 2].copy_from_slice(&body.isvsvn.to_le_bytes());
    let signed = signed_bytes(&s);
    let sig_be = signer.sign_pkcs1v15_sha256(&signed)?;
    let sig = BigUint::from_bytes_be(&sig_be);
    let n = BigUint::from_bytes_be(&modulus_be);
    let s2 = &sig * &sig;
    let q1 = &s2 / &n;
    let q2 = ((&s2 % &n) * &sig) / &n;
    put_le(&mut s[off::SIGNATURE..off::SIGNATURE + MODULUS_LEN], &sig);
    put_le(&mut s[off::Q1..off::Q1 + MODULUS_LEN], &q1);
    put_le(&mut s[off::Q2..off::Q2 + MODULUS_LEN], &q2);
    Ok(s)
}

/// The bytes the signature covers: 0..128 and 900..1028.
pub fn signed_bytes(s: &[u8; SIZE]) -> Vec<u8> {
    [&s[..128], &s[off::MISCSELECT..off::MISCSELECT + 128]].concat()
}

/// EMSA-PKCS1-v1_5 encoding of SHA-256(`data`) for a 3072-bit modulus.
pub fn emsa_pkcs1v15_sha256(data: &[u8]) -> Vec<u8> {
    let mut em = vec![0xffu8; MODULUS_LEN];
    em[0] = 0;
    em[1] = 1;
    let t_len = SHA256_DIGEST_INFO.len() + 32;
    em[MODULUS_LEN - t_len - 1] = 0;
    em[MODULUS_LEN - t_len..MODULUS_LEN - 32].copy_from_slice(&SHA256_DIGEST_INFO);
    em[MODULUS_LEN - 32..].copy_from_slice(&Sha256::digest(data));
    em
}

/// A parsed SIGSTRUCT, as `gramine-sgx-sigstruct-view` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    /// MRENCLAVE (hex).
    pub mr_enclave: String,
    /// MRSIGNER = SHA-256 of the little-endian modulus (hex).
    pub mr_signer: String,
    /// ISVPRODID.
    pub isv_prod_id: u16,
    /// ISVSVN.
    pub isv_svn: u16,
    /// Date, `YYYY-MM-DD`.
    pub date: String,
    /// ATTRIBUTES.FLAGS (hex).
    pub flags: String,
    /// ATTRIBUTES.XFRM (hex).
    pub xfrm: String,
    /// ATTRIBUTEMASK.FLAGS (hex).
    pub flags_mask: String,
    /// ATTRIBUTEMASK.XFRM (hex).
    pub xfrm_mask: String,
    /// MISCSELECT (hex).
    pub misc_select: String,
    /// MISCMASK (hex).
    pub misc_mask: String,
    /// Whether DEBUG is set.
    pub debug: bool,
    /// RSA public exponent.
    pub exponent: u32,
    /// Whether the signature and Q1/Q2 verify.
    pub signature_valid: bool,
}

fn u16_at(s: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([s[o], s[o + 1]])
}
fn u32_at(s: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(s[o..o + 4].try_into().expect("4 bytes"))
}
fn u64_at(s: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(s[o..o + 8].try_into().expect("8 bytes"))
}

/// MRSIGNER of a SIGSTRUCT.
pub fn mrsigner(s: &[u8; SIZE]) -> [u8; 32] {
    Sha256::digest(&s[off::MODULUS..off::MODULUS + MODULUS_LEN]).into()
}

/// MRENCLAVE recorded in a SIGSTRUCT.
pub fn enclave_hash(s: &[u8; SIZE]) -> [u8; 32] {
    s[off::ENCLAVEHASH..off::ENCLAVEHASH + 32]
        .try_into()
        .expect("32 bytes")
}

/// Check the structure, the signature (s³ mod n = EMSA-PKCS1-v1_5(SHA-256(signed bytes))) and Q1/Q2.
pub fn verify(s: &[u8; SIZE], what: &str) -> Result<()> {
    let bad = |reason: &str| Error::Sigstruct {
        what: what.into(),
        reason: reason.into(),
    };
    if s[..16] != HEADER || s[off::HEADER2..off::HEADER2 + 16] != HEADER2 {
        return Err(bad("bad header; this is not a SIGSTRUCT"));
    }
    if u32_at(s, off::EXPONENT) != 3 {
        return Err(bad("exponent is not 3"));
    }
    let n = le_to_big(&s[off::MODULUS..off::MODULUS + MODULUS_LEN]);
    let sig = le_to_big(&s[off::SIGNATURE..off::SIGNATURE + MODULUS_LEN]);
    if sig >= n {
        return Err(bad("signature is not below the modulus"));
    }
    let em = BigUint::from_bytes_be(&emsa_pkcs1v15_sha256(&signed_bytes(s)));
    if sig.modpow(&BigUint::from(3u32), &n) != em {
        return Err(bad(
            "the signature does not match the signed fields (tampered or signed with another key)",
        ));
    }
    let s2 = &sig * &sig;
    if le_to_big(&s[off::Q1..off::Q1 + MODULUS_LEN]) != &s2 / &n
        || le_to_big(&s[off::Q2..off::Q2 + MODULUS_LEN]) != ((&s2 % &n) * &sig) / &n
    {
        return Err(bad("Q1/Q2 are inconsistent with the signature"));
    }
    Ok(())
}

/// Parse bytes as a SIGSTRUCT (1808 bytes exactly).
pub fn parse(bytes: &[u8], what: &str) -> Result<[u8; SIZE]> {
    bytes.try_into().map_err(|_| Error::Sigstruct {
        what: what.into(),
        reason: format!("{} bytes, a SIGSTRUCT has {SIZE}", bytes.len()),
    })
}

/// All fields for display.
pub fn view(s: &[u8; SIZE], what: &str) -> View {
    let date = u32_at(s, off::DATE);
    let flags = u64_at(s, off::ATTRIBUTES);
    View {
        mr_enclave: hex::encode(enclave_hash(s)),
        mr_signer: hex::encode(mrsigner(s)),
        isv_prod_id: u16_at(s, off::ISVPRODID),
        isv_svn: u16_at(s, off::ISVSVN),
        date: format!(
            "{:04x}-{:02x}-{:02x}",
            date >> 16,
            (date >> 8) & 0xff,
            date & 0xff
        ),
        flags: format!("{flags:#018x}"),
        xfrm: format!("{:#018x}", u64_at(s, off::ATTRIBUTES + 8)),
        flags_mask: format!("{:#018x}", u64_at(s, off::ATTRIBUTEMASK)),
        xfrm_mask: format!("{:#018x}", u64_at(s, off::ATTRIBUTEMASK + 8)),
        misc_select: format!("{:#010x}", u32_at(s, off::MISCSELECT)),
        misc_mask: format!("{:#010x}", u32_at(s, off::MISCMASK)),
        debug: flags & 0x2 != 0,
        exponent: u32_at(s, off::EXPONENT),
        signature_valid: verify(s, what).is_ok(),
    }
}
