//! `AES_256_CTR_HMAC_SHA256`, as Go's ocicrypt does it: AES-256 in CTR mode with the whole
//! 128-bit counter block incremented big-endian, and HMAC-SHA256 (same key) over the ciphertext.

use std::io::{self, Read};

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type Ctr = ctr::Ctr128BE<aes::Aes256>;

/// Decrypts while reading. Bytes it yields are not authentic until [`Decryptor::verify`]
/// succeeds at the end: callers write to a temporary file and keep it only then.
pub struct Decryptor<R> {
    inner: R,
    ctr: Ctr,
    mac: Hmac<Sha256>,
}

impl<R: Read> Decryptor<R> {
    /// `key` is 32 bytes, `nonce` the 16-byte initial counter block.
    pub fn new(inner: R, key: &[u8], nonce: &[u8; 16]) -> Option<Self> {
        Some(Decryptor {
            inner,
            ctr: Ctr::new_from_slices(key, nonce).ok()?,
            mac: <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?,
        })
    }

    /// Whether the ciphertext read so far authenticates against `expected`.
    pub fn verify(self, expected: &[u8]) -> bool {
        self.mac.verify_slice(expected).is_ok()
    }
}

impl<R: Read> Read for Decryptor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.mac.update(&buf[..n]);
        self.ctr.apply_keystream(&mut buf[..n]);
        Ok(n)
    }
}

/// Encrypts while reading: yields ciphertext, and [`Encryptor::finish`] gives the HMAC.
pub struct Encryptor<R> {
    inner: R,
    ctr: Ctr,
    mac: Hmac<Sha256>,
}

impl<R: Read> Encryptor<R> {
    /// `key` is 32 bytes, `nonce` the 16-byte initial counter block.
    pub fn new(inner: R, key: &[u8; 32], nonce: &[u8; 16]) -> Self {
        Encryptor {
            inner,
            ctr: Ctr::new(key.into(), nonce.into()),
            mac: <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length"),
        }
    }

    /// The HMAC-SHA256 of all ciphertext produced.
    pub fn finish(self) -> [u8; 32] {
        self.mac.finalize().into_bytes().into()
    }
}

impl<R: Read> Read for Encryptor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ctr.apply_keystream(&mut buf[..n]);
        self.mac.update(&buf[..n]);
        Ok(n)
    }
}

/// Encrypt `plain` (tests and tools): returns ciphertext and HMAC.
pub fn encrypt(plain: &[u8], key: &[u8], nonce: &[u8; 16]) -> (Vec<u8>, Vec<u8>) {
    let mut c = plain.to_vec();
    Ctr::new_from_slices(key, nonce)
        .expect("32-byte key, 16-byte nonce")
        .apply_keystream(&mut c);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(&c);
    let tag = mac.finalize().into_bytes().to_vec();
    (c, tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_carries_across_all_128_bits_like_go() {
        // A nonce whose low 64 bits overflow after one block: a 64-bit counter would wrap
        // differently from Go's cipher.NewCTR, which increments the whole block.
        let key = [7u8; 32];
        let mut nonce = [0u8; 16];
        nonce[8..].copy_from_slice(&[0xff; 8]);
        let plain = vec![0u8; 64];
        let (c, tag) = encrypt(&plain, &key, &nonce);
        // Second block's keystream = AES(key, nonce + 1) with the carry into byte 7.
        use aes::cipher::{BlockEncrypt, KeyInit};
        let aes = aes::Aes256::new_from_slice(&key).unwrap();
        let mut block = [0u8; 16];
        block[7] = 1;
        let mut b = aes::Block::from(block);
        aes.encrypt_block(&mut b);
        assert_eq!(&c[16..32], b.as_slice());
        let mut d = Decryptor::new(&c[..], &key, &nonce).unwrap();
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        assert_eq!(out, plain);
        assert!(d.verify(&tag));
    }

    #[test]
    fn the_streaming_encryptor_matches_the_one_shot_one() {
        let plain: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let (c, tag) = encrypt(&plain, &[9u8; 32], &[3u8; 16]);
        let mut e = Encryptor::new(&plain[..], &[9u8; 32], &[3u8; 16]);
        let mut out = Vec::new();
        // Odd read sizes cross block boundaries.
        let mut buf = [0u8; 1000 + 7];
        loop {
            let n = e.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, c);
        assert_eq!(e.finish().to_vec(), tag);
    }

    #[test]
    fn a_flipped_bit_fails_the_hmac() {
        let (mut c, tag) = encrypt(b"layer bytes", &[1u8; 32], &[2u8; 16]);
        c[3] ^= 1;
        let mut d = Decryptor::new(&c[..], &[1u8; 32], &[2u8; 16]).unwrap();
        std::io::copy(&mut d, &mut std::io::sink()).unwrap();
        assert!(!d.verify(&tag));
    }
}
