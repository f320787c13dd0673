//! Content digests and readers that verify digest and size while streaming.

use std::fmt;
use std::io::{self, Read};
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use crate::error::{Error, Result};

/// A `sha256:<64 hex>` content digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Digest(Sha256::digest(data).into())
    }

    /// Wrap a raw SHA-256 value.
    pub fn from_sha256(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    /// The raw SHA-256 value.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 hex digits without the algorithm prefix (the blob's file name in a layout).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidDigest {
            digest: s.to_string(),
            reason,
        };
        let (alg, hex_part) = s
            .split_once(':')
            .ok_or_else(|| invalid("expected ALGORITHM:HEX"))?;
        if alg != "sha256" {
            return Err(invalid("only sha256 digests are supported"));
        }
        if hex_part.len() != 64
            || !hex_part
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(invalid("a sha256 digest has 64 lower-case hex digits"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| invalid("bad hex"))?;
        Ok(Digest(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental digest and byte count, checked against an expected digest and size.
#[derive(Clone)]
pub struct Verifier {
    what: String,
    /// `None`: size only (someone else already checks the digest of this stream).
    expected: Option<Digest>,
    size: Option<u64>,
    hasher: Sha256,
    seen: u64,
    done: bool,
}

impl Verifier {
    /// Verify content named `what` against `expected` and, when known, `size`.
    pub fn new(what: impl Into<String>, expected: Digest, size: Option<u64>) -> Self {
        Verifier {
            what: what.into(),
            expected: Some(expected),
            size,
            hasher: Sha256::new(),
            seen: 0,
            done: false,
        }
    }

    /// Check only the size, for streams whose digest is verified by another layer (oci-client
    /// verifies every blob it pulls; hashing twice would halve throughput).
    pub fn size_only(what: impl Into<String>, size: u64) -> Self {
        Verifier {
            what: what.into(),
            expected: None,
            size: Some(size),
            hasher: Sha256::new(),
            seen: 0,
            done: false,
        }
    }

    /// Feed the next chunk; fails as soon as more bytes arrive than announced.
    pub fn update(&mut self, chunk: &[u8]) -> Result<()> {
        self.seen += chunk.len() as u64;
        if let Some(size) = self.size {
            if self.seen > size {
                return Err(Error::SizeMismatch {
                    what: self.what.clone(),
                    expected: size,
                    actual: self.seen,
                    more: true,
                });
            }
        }
        if self.expected.is_some() {
            self.hasher.update(chunk);
        }
        Ok(())
    }

    /// Check size and digest at end of stream.
    pub fn finish(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        if let Some(size) = self.size {
            if self.seen != size {
                return Err(Error::SizeMismatch {
                    what: self.what.clone(),
                    expected: size,
                    actual: self.seen,
                    more: false,
                });
            }
        }
        if let Some(expected) = self.expected {
            let actual = Digest(self.hasher.clone().finalize().into());
            if actual != expected {
                return Err(Error::DigestMismatch {
                    what: self.what.clone(),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        self.done = true;
        Ok(())
    }
}

fn to_io(err: Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

/// A blocking reader that fails with [`Error::DigestMismatch`] / [`Error::SizeMismatch`]
/// (wrapped in `io::Error`) when the stream does not match its descriptor. The check at
/// end of stream happens on the read that returns 0, so read to EOF before trusting data.
pub struct VerifyingReader<R> {
    inner: R,
    verifier: Verifier,
}

impl<R: Read> VerifyingReader<R> {
    /// Wrap `inner`.
    pub fn new(inner: R, verifier: Verifier) -> Self {
        VerifyingReader { inner, verifier }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.verifier.finish().map_err(to_io)?;
        } else {
            self.verifier.update(&buf[..n]).map_err(to_io)?;
        }
        Ok(n)
    }
}

/// The async counterpart of [`VerifyingReader`].
pub struct AsyncVerifyingReader<R> {
    inner: R,
    verifier: Verifier,
}

impl<R> AsyncVerifyingReader<R> {
    /// Wrap `inner`.
    pub fn new(inner: R, verifier: Verifier) -> Self {
        AsyncVerifyingReader { inner, verifier }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for AsyncVerifyingReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                let res = if new.is_empty() && buf.remaining() > 0 {
                    this.verifier.finish()
                } else {
                    this.verifier.update(new)
                };
                Poll::Ready(res.map_err(to_io))
            }
            other => other,
        }
    }
}

/// Hashes what passes through a writer (for content we produce ourselves).
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: io::Write> HashingWriter<W> {
    /// Wrap `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// The digest and size of everything written, and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        (
            Digest(self.hasher.finalize().into()),
            self.written,
            self.inner,
        )
    }
}

impl<W: io::Write> io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let d = Digest::of(b"hello");
        let s = d.to_string();
        assert_eq!(
            s,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(s.parse::<Digest>().unwrap(), d);
    }

    #[rstest::rstest]
    #[case::no_colon("sha256")]
    #[case::other_alg("sha512:abcd")]
    #[case::short("sha256:abcd")]
    #[case::upper("sha256:2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824")]
    #[case::traversal("sha256:../../../../etc/passwd00000000000000000000000000000000000000")]
    fn rejects_bad_digests(#[case] input: &str) {
        assert!(matches!(
            input.parse::<Digest>(),
            Err(Error::InvalidDigest { .. })
        ));
    }

    fn read_all(data: &[u8], digest: Digest, size: Option<u64>) -> Result<Vec<u8>> {
        let mut r = VerifyingReader::new(data, Verifier::new("blob", digest, size));
        let mut out = Vec::new();
        r.read_to_end(&mut out)
            .map_err(|e| Error::from_stream("blob", e))?;
        Ok(out)
    }

    #[test]
    fn verifying_reader_accepts_matching_content() {
        assert_eq!(
            read_all(b"abc", Digest::of(b"abc"), Some(3)).unwrap(),
            b"abc"
        );
    }

    #[test]
    fn verifying_reader_rejects_wrong_digest_truncation_and_excess() {
        assert!(matches!(
            read_all(b"abd", Digest::of(b"abc"), Some(3)),
            Err(Error::DigestMismatch { .. })
        ));
        assert!(matches!(
            read_all(b"ab", Digest::of(b"abc"), Some(3)),
            Err(Error::SizeMismatch { more: false, .. })
        ));
        assert!(matches!(
            read_all(b"abcd", Digest::of(b"abc"), Some(3)),
            Err(Error::SizeMismatch { more: true, .. })
        ));
    }
}
