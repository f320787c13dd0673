//! Bounds on the work one layer can cause, checked on the raw tar stream before tar-rs acts.
//!
//! tar-rs reads GNU long names (`L`, `K`) and PAX extended headers (`x`) whole into memory
//! before it hands out the entry they describe, so their sizes must be checked from the
//! header first. [`TarGuard`] sits between the decompressor and tar-rs and follows the
//! archive's block structure exactly as tar-rs does (header, GNU sparse extension blocks,
//! data padded to 512 bytes, a PAX `size` record overriding the next header's size), so it
//! sees every header before tar-rs does and refuses a layer that is over a limit. After the
//! end-of-archive block it only passes bytes through (they are still hashed for the diff_id).

use std::io::{self, Read};

use crate::error::Error;
use crate::name::PATH_MAX;

/// Largest GNU long name or long link record (`L`, `K`): a name must fit in `PATH_MAX`.
pub const MAX_LONG_NAME: u64 = PATH_MAX as u64;
/// Largest PAX extended header (`x`, `g`), as Go's archive/tar (`maxSpecialFileSize`).
pub const MAX_PAX: u64 = 1 << 20;
/// Most GNU sparse extension blocks after one header (21 regions each).
pub const MAX_SPARSE_BLOCKS: u32 = 64;
/// Most bytes after the end-of-archive block (tar writers pad to a 10 KiB record; this
/// bounds how long a compressed tail of zeros can keep cloak hashing).
pub const MAX_TAIL: u64 = 1 << 20;
/// Most entries (tar members, not counting the long-name and PAX records that describe
/// them) in one layer.
pub const MAX_LAYER_ENTRIES: u64 = 1 << 20;

const BLOCK: usize = 512;

enum State {
    /// Collecting a 512-byte header block.
    Header,
    /// Collecting a GNU sparse extension block.
    SparseExt { blocks: u32, data: u64 },
    /// Inside an entry's data: `record` bytes of payload, then `pad` bytes of padding.
    Data { record: u64, pad: u64, pax: bool },
    /// After the end-of-archive block (counting the bytes that follow it), or once tar-rs
    /// will refuse the stream itself.
    End(u64),
}

/// Passes a tar stream through, refusing it (with an [`Error::Layer`] inside the I/O error)
/// as soon as a header is over one of the limits above.
pub struct TarGuard<R> {
    inner: R,
    layer: String,
    /// A docker archive rather than a layer (only changes the error's wording).
    archive: bool,
    state: State,
    block: [u8; BLOCK],
    filled: usize,
    pax: Vec<u8>,
    pending_pax_size: Option<u64>,
    entries: u64,
}

impl<R: Read> TarGuard<R> {
    /// Guard the uncompressed tar stream of layer `layer` (named in errors).
    pub fn new(inner: R, layer: &str) -> Self {
        TarGuard {
            inner,
            layer: layer.to_string(),
            archive: false,
            state: State::Header,
            block: [0; BLOCK],
            filled: 0,
            pax: Vec::new(),
            pending_pax_size: None,
            entries: 0,
        }
    }

    /// Guard a `docker save` archive (`what` names it in errors).
    pub fn archive(inner: R, what: &str) -> Self {
        TarGuard {
            archive: true,
            ..TarGuard::new(inner, what)
        }
    }

    /// The stream it reads.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn refuse(&self, reason: String) -> io::Error {
        io::Error::other(if self.archive {
            Error::Invalid(format!("{}: {reason}", self.layer))
        } else {
            Error::Layer {
                layer: self.layer.clone(),
                reason,
            }
        })
    }

    /// Follow the structure over `buf`; an error means the layer is refused.
    fn feed(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match &mut self.state {
                State::End(tail) => {
                    *tail += buf.len() as u64;
                    if *tail > MAX_TAIL {
                        return Err(self.refuse(format!(
                            "more than {MAX_TAIL} bytes follow the end of its tar archive (limit of cloak)"
                        )));
                    }
                    return Ok(());
                }
                State::Header | State::SparseExt { .. } => {
                    let n = (BLOCK - self.filled).min(buf.len());
                    self.block[self.filled..self.filled + n].copy_from_slice(&buf[..n]);
                    self.filled += n;
                    buf = &buf[n..];
                    if self.filled == BLOCK {
                        self.filled = 0;
                        self.block_done()?;
                    }
                }
                State::Data { record, pad, pax } => {
                    if *record > 0 {
                        let n = (*record).min(buf.len() as u64) as usize;
                        if *pax {
                            self.pax.extend_from_slice(&buf[..n]);
                        }
                        *record -= n as u64;
                        buf = &buf[n..];
                        if *record == 0 && *pax {
                            self.pending_pax_size = pax_size(&self.pax);
                            self.pax = Vec::new();
                        }
                    } else {
                        let n = (*pad).min(buf.len() as u64) as usize;
                        *pad -= n as u64;
                        buf = &buf[n..];
                    }
                    if matches!(
                        self.state,
                        State::Data {
                            record: 0,
                            pad: 0,
                            ..
                        }
                    ) {
                        self.state = State::Header;
                    }
                }
            }
        }
        Ok(())
    }

    fn block_done(&mut self) -> io::Result<()> {
        if let State::SparseExt { blocks, data } = self.state {
            // `isextended` of a GNU sparse extension block.
            self.state = if self.block[504] == 1 {
                if blocks + 1 > MAX_SPARSE_BLOCKS {
                    return Err(self.refuse(format!(
                        "entry #{}: a GNU sparse file with more than {MAX_SPARSE_BLOCKS} extension blocks (limit of cloak)",
                        self.entries
                    )));
                }
                State::SparseExt {
                    blocks: blocks + 1,
                    data,
                }
            } else {
                data_state(data, false)
            };
            return Ok(());
        }
        if self.block.iter().all(|b| *b == 0) {
            // tar-rs ends the archive at the first zero block.
            self.state = State::End(0);
            return Ok(());
        }
        let header = tar::Header::from_byte_slice(&self.block);
        let Ok(mut size) = header.entry_size() else {
            // tar-rs refuses this header itself.
            self.state = State::End(0);
            return Ok(());
        };
        let kind = header.entry_type();
        let extension = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        let recognized = header.as_gnu().is_some() || header.as_ustar().is_some();
        let described_by_next = recognized && extension && !kind.is_pax_global_extensions();
        if !described_by_next {
            // tar-rs hands this header out as an entry, with the pending PAX size applied
            // unless it is itself an extension header.
            let pax = self.pending_pax_size.take();
            if !extension {
                size = pax.unwrap_or(size);
            }
            self.entries += 1;
            if self.entries > MAX_LAYER_ENTRIES {
                return Err(self.refuse(format!(
                    "more than {MAX_LAYER_ENTRIES} entries in one layer (limit of cloak)"
                )));
            }
        }
        let no = self.entries + u64::from(described_by_next);
        let what = |name: &str| format!("entry #{no}: a {name} of {size} bytes");
        if (kind.is_gnu_longname() || kind.is_gnu_longlink()) && size > MAX_LONG_NAME {
            let name = if kind.is_gnu_longname() {
                "GNU long name"
            } else {
                "GNU long link name"
            };
            return Err(self.refuse(format!(
                "{}, over the limit of {MAX_LONG_NAME} bytes (PATH_MAX)",
                what(name)
            )));
        }
        if (kind.is_pax_local_extensions() || kind.is_pax_global_extensions()) && size > MAX_PAX {
            return Err(self.refuse(format!(
                "{}, over the limit of {MAX_PAX} bytes (as Go's archive/tar)",
                what("PAX extended header")
            )));
        }
        let collect = recognized && kind.is_pax_local_extensions();
        if collect {
            self.pax = Vec::with_capacity(size as usize);
        }
        let sparse_ext =
            !extension && kind.is_gnu_sparse() && header.as_gnu().is_some_and(|g| g.is_extended());
        self.state = if sparse_ext {
            State::SparseExt {
                blocks: 0,
                data: size,
            }
        } else {
            data_state(size, collect)
        };
        Ok(())
    }
}

fn data_state(size: u64, pax: bool) -> State {
    let Some(padded) = size.checked_add(BLOCK as u64 - 1) else {
        return State::End(0); // tar-rs: "size overflow"
    };
    let padded = padded & !(BLOCK as u64 - 1);
    if padded == 0 {
        return State::Header;
    }
    State::Data {
        record: size,
        pad: padded - size,
        pax,
    }
}

/// The `size` record of a PAX header, parsed exactly as tar-rs parses it.
fn pax_size(data: &[u8]) -> Option<u64> {
    for ext in tar::PaxExtensions::new(data) {
        let ext = ext.ok()?;
        if ext.key() != Ok("size") {
            continue;
        }
        return ext.value().ok()?.parse().ok();
    }
    None
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.feed(&buf[..n])?;
        Ok(n)
    }
}
