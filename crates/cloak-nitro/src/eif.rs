//! Enclave Image Files, version 4: a streaming writer that never holds a ramdisk in memory and
//! never leaves a half-written file at the output path, a reader that checks the CRC and
//! recomputes the PCRs, and the PCR formulas (SHA-384, as `shared/notes/nitro-eif.md` gives).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha384};

use crate::error::{Error, Result};
use crate::sha384x2;

const MAGIC: &[u8; 4] = b".eif";
const VERSION: u16 = 4;
const HEADER_SIZE: u64 = 548;
const SECTION_HEADER_SIZE: u64 = 12;
const MAX_SECTIONS: usize = 32;

/// Section types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SectionKind {
    /// The kernel (bzImage on x86_64).
    Kernel = 1,
    /// The kernel command line (no trailing NUL).
    Cmdline = 2,
    /// A newc cpio ramdisk.
    Ramdisk = 3,
    /// The PCR8 signature (CBOR).
    Signature = 4,
    /// JSON metadata (not measured).
    Metadata = 5,
}

impl SectionKind {
    fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Kernel,
            2 => Self::Cmdline,
            3 => Self::Ramdisk,
            4 => Self::Signature,
            5 => Self::Metadata,
            _ => return None,
        })
    }
}

/// PCR0/1/2 (hex SHA-384), in nitro-cli's field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Measurements {
    /// Always `Sha384`.
    #[serde(rename = "HashAlgorithm")]
    pub hash_algorithm: String,
    /// Kernel, cmdline and every ramdisk.
    #[serde(rename = "PCR0")]
    pub pcr0: String,
    /// Kernel, cmdline and the bootstrap ramdisk.
    #[serde(rename = "PCR1")]
    pub pcr1: String,
    /// The application ramdisks.
    #[serde(rename = "PCR2")]
    pub pcr2: String,
    /// The signing certificate, when signed.
    #[serde(rename = "PCR8", skip_serializing_if = "Option::is_none")]
    pub pcr8: Option<String>,
}

/// The running SHA-384 of a PCR. ring's SHA-512 assembly (BoringSSL's) is about twice as fast
/// as the `sha2` crate's here; `sha2` remains the reference in the tests.
struct Pcr(ring::digest::Context);

impl Pcr {
    fn new() -> Self {
        Pcr(ring::digest::Context::new(&ring::digest::SHA384))
    }
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    fn finish(self) -> Vec<u8> {
        self.0.finish().as_ref().to_vec()
    }
}

/// `SHA384(0^48 ‖ digest)`: a TPM-style extend of a zero register.
fn extend(inner: &[u8]) -> String {
    let mut outer = Sha384::new();
    outer.update([0u8; 48]);
    outer.update(inner);
    hex::encode(outer.finalize())
}

/// The three running hashes. Every byte of the application ramdisks goes into PCR0 and PCR2:
/// with the two-lane engine both run side by side in one thread ([`sha384x2::engine`]);
/// otherwise PCR0 runs on a second thread.
enum Pcrs {
    Lanes {
        p0: sha384x2::Lane,
        p1: Pcr,
        p2: sha384x2::Lane,
    },
    Threads {
        p0: Pcr,
        p1: Pcr,
        p2: Pcr,
    },
}

impl Pcrs {
    fn new() -> Self {
        if sha384x2::engine().engine == sha384x2::Engine::Lanes {
            Pcrs::Lanes {
                p0: Default::default(),
                p1: Pcr::new(),
                p2: Default::default(),
            }
        } else {
            Pcrs::Threads {
                p0: Pcr::new(),
                p1: Pcr::new(),
                p2: Pcr::new(),
            }
        }
    }
    fn update(&mut self, kind: SectionKind, ramdisk_index: usize, data: &[u8]) {
        let boot = match kind {
            SectionKind::Kernel | SectionKind::Cmdline => true,
            SectionKind::Ramdisk => ramdisk_index == 0,
            _ => return,
        };
        match self {
            Pcrs::Lanes { p0, p1, .. } if boot => {
                sha384x2::update1(p0, data);
                p1.update(data);
            }
            Pcrs::Lanes { p0, p2, .. } => sha384x2::update2(p0, p2, data),
            Pcrs::Threads { p0, p1, .. } if boot => {
                p0.update(data);
                p1.update(data);
            }
            Pcrs::Threads { p0, p2, .. } => {
                std::thread::scope(|scope| {
                    scope.spawn(|| p0.update(data));
                    p2.update(data);
                });
            }
        }
    }
    fn finish(self) -> Measurements {
        let (p0, p1, p2) = match self {
            Pcrs::Lanes { p0, p1, p2 } => (
                sha384x2::finish(p0).to_vec(),
                p1.finish(),
                sha384x2::finish(p2).to_vec(),
            ),
            Pcrs::Threads { p0, p1, p2 } => (p0.finish(), p1.finish(), p2.finish()),
        };
        Measurements {
            hash_algorithm: "Sha384".into(),
            pcr0: extend(&p0),
            pcr1: extend(&p1),
            pcr2: extend(&p2),
            pcr8: None,
        }
    }
}

/// EIF header flag of enclaves for Graviton (arm64) parents (AWS's `EIF_HDR_ARCH_ARM64`).
pub const FLAG_ARCH_ARM64: u16 = 0x1;

/// The kernel formats an EIF can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelFormat {
    /// An x86 bzImage (`HdrS` at 0x202): Nitro Enclaves on x86_64 parents, and `cloak run`.
    X86BzImage,
    /// An arm64 `Image` (`ARM\x64` at 56, Documentation/arch/arm64/booting.rst): Graviton parents.
    Arm64Image,
}

impl KernelFormat {
    /// The EIF header flags of an enclave with this kernel.
    pub fn eif_flags(self) -> u16 {
        match self {
            KernelFormat::X86BzImage => 0,
            KernelFormat::Arm64Image => FLAG_ARCH_ARM64,
        }
    }
}

/// What kind of kernel `bytes` (the file's first 0x206 bytes or more) start with.
pub fn kernel_format_of(bytes: &[u8]) -> Option<KernelFormat> {
    if bytes.get(0x202..0x206) == Some(b"HdrS") {
        Some(KernelFormat::X86BzImage)
    } else if bytes.get(56..60) == Some(b"ARM\x64") {
        Some(KernelFormat::Arm64Image)
    } else {
        None
    }
}

/// The format of the kernel file at `kernel`; an error names both accepted formats.
pub fn kernel_format(kernel: &Path) -> Result<KernelFormat> {
    let f = File::open(kernel).map_err(|e| Error::io("open kernel", kernel, e))?;
    let mut head = Vec::with_capacity(0x206);
    f.take(0x206)
        .read_to_end(&mut head)
        .map_err(|e| Error::io("read kernel", kernel, e))?;
    kernel_format_of(&head).ok_or_else(|| {
        Error::Input(format!(
            "{} is neither an x86 bzImage (\"HdrS\" at 0x202) nor an arm64 Image (\"ARM\\x64\" at 56); \
             pass the kernel from a nitro-cli blobs folder (bzImage, or Image on Graviton) or a \
             distribution's uncompressed vmlinuz/Image",
            kernel.display()
        ))
    })
}

/// Check that `kernel` is an x86 bzImage (`HdrS` at 0x202): what `cloak convert` (x86-64
/// launcher and images) and `cloak run` (qemu-system-x86_64) need.
pub fn check_bzimage(kernel: &Path) -> Result<()> {
    match kernel_format(kernel) {
        Ok(KernelFormat::X86BzImage) => Ok(()),
        Ok(KernelFormat::Arm64Image) => Err(Error::Input(format!(
            "{} is an arm64 Image kernel (Graviton); this needs an x86 bzImage: cloak converts \
             linux/amd64 images with an x86-64 launcher and boots x86 kernels only (an arm64 EIF \
             can be built from arm64 parts with `cloak eif build`)",
            kernel.display()
        ))),
        Err(Error::Input(_)) => Err(Error::Input(format!(
            "{} is not an x86 bzImage (no \"HdrS\" at 0x202); pass the kernel from a nitro-cli blobs folder or a distribution's vmlinuz",
            kernel.display()
        ))),
        Err(e) => Err(e),
    }
}

/// The metadata section in the shape AWS's readers require (`EifIdentityInfo`). `build_time`
/// should be deterministic (the image's creation time) so that EIF bytes are reproducible.
pub fn identity(
    name: &str,
    version: &str,
    kernel_version: &str,
    build_time: &str,
    docker_info: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "ImageName": name,
        "ImageVersion": version,
        "BuildMetadata": {
            "BuildTime": build_time,
            "BuildTool": "cloak",
            "BuildToolVersion": env!("CARGO_PKG_VERSION"),
            "OperatingSystem": "Linux",
            "KernelVersion": kernel_version,
        },
        "DockerInfo": docker_info,
        "CustomMetadata": null,
    })
}

/// Chunks of a ramdisk produced by another thread while the EIF is written.
pub type Chunks = std::sync::mpsc::Receiver<io::Result<Vec<u8>>>;

/// A ramdisk: a file, or a stream of chunks.
pub enum Part {
    /// A file on disk.
    File(PathBuf),
    /// Everything received from `chunks` until every sender is gone; an `Err` received
    /// aborts the EIF (nothing appears at the output path). The section's size is filled in
    /// afterwards. Written buffers go back through `spent` for reuse (see
    /// [`crate::appdisk::channel`]).
    Stream {
        /// The data.
        chunks: Chunks,
        /// Where spent buffers go.
        spent: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    },
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Part::File(p) => write!(f, "File({})", p.display()),
            Part::Stream { .. } => f.write_str("Stream"),
        }
    }
}

/// Checks the final EIF size before the file is put in place (e.g. against the enclave's memory).
pub type SizeCheck<'a> = &'a dyn Fn(u64) -> Result<()>;

/// What goes into an EIF.
pub struct EifSpec<'a> {
    /// bzImage.
    pub kernel: PathBuf,
    /// Command line (trimmed; written without NUL).
    pub cmdline: String,
    /// Ramdisks in order: bootstrap first, then the application's.
    pub ramdisks: Vec<Part>,
    /// Metadata JSON (deterministic: no build time unless the caller puts one).
    pub metadata: serde_json::Value,
    /// Sign the EIF (adds the signature section and PCR8).
    pub signer: Option<&'a crate::sign::EifSigner>,
    /// Refuse the EIF, once its size is known, before it reaches the output path.
    pub size_check: Option<SizeCheck<'a>>,
}

enum Source<'a> {
    File(PathBuf),
    Bytes(&'a [u8]),
    Stream(Chunks, Option<std::sync::mpsc::SyncSender<Vec<u8>>>),
}

/// Receives a section's bytes: CRC, PCRs and the file, in 1 MiB chunks.
struct SectionSink<'s, W: Write> {
    out: &'s mut W,
    crc: &'s mut crc32fast::Hasher,
    pcrs: &'s mut Pcrs,
    kind: SectionKind,
    ramdisk_index: usize,
    buf: Vec<u8>,
    total: u64,
}

impl<W: Write> SectionSink<'_, W> {
    fn process(&mut self) -> io::Result<()> {
        let chunk = &self.buf[..];
        if chunk.is_empty() {
            return Ok(());
        }
        self.total += chunk.len() as u64;
        self.crc.update(chunk);
        self.pcrs.update(self.kind, self.ramdisk_index, chunk);
        self.out.write_all(chunk)?;
        self.buf.clear();
        Ok(())
    }
}

impl<W: Write> Write for SectionSink<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.buf.capacity() - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.buf.capacity() {
            self.process()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.process()
    }
}

/// Start writing back what was written every this many bytes of a streamed section, so that
/// the final `fsync` has little left to do.
const WRITEBACK_EVERY: u64 = 32 << 20;

/// Ask the kernel to start writing `file`'s dirty pages back, without waiting.
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on an open descriptor; failure only loses the hint.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Bytes per direct write of a streamed section.
const DIRECT_CHUNK: usize = 4 << 20;
/// Alignment of direct writes (offsets, lengths and buffers), enough for 4 KiB-sector disks.
const ALIGN: usize = 4096;

/// Whether a direct write failed because the file system does not do direct I/O (EINVAL, or
/// EOPNOTSUPP, which is ENOTSUP on Linux) rather than because writing failed.
fn refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
    )
}

/// Writes a streamed section with `O_DIRECT`: its bulk goes from an aligned buffer straight
/// to the disk, without the page-cache copy that otherwise costs as much CPU as hashing it.
/// Bytes before the first aligned offset and after the last whole block go through `out`.
struct Direct {
    file: File,
    stage: Vec<u8>,
    start: usize,
    len: usize,
    /// File offset of `stage[start]`; aligned once `lead` is 0.
    offset: u64,
    /// Bytes still to write through `out` before the first aligned offset.
    lead: usize,
    /// The file system refused a direct write: everything goes through `out` from there on.
    refused: bool,
}

impl Direct {
    fn open(path: &Path, offset: u64) -> Option<Direct> {
        Self::open_skewed(path, offset, 0)
    }

    /// `skew` > 0 misaligns the buffer on purpose (tests: the kernel then refuses the writes).
    fn open_skewed(path: &Path, offset: u64, skew: usize) -> Option<Direct> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok()?;
        let stage = vec![0u8; DIRECT_CHUNK + ALIGN];
        let start = stage.as_ptr().align_offset(ALIGN);
        if start >= ALIGN {
            return None;
        }
        let lead = (ALIGN - (offset % ALIGN as u64) as usize) % ALIGN;
        Some(Direct {
            file,
            stage,
            start: start + skew.min(ALIGN - start % ALIGN),
            len: 0,
            offset: offset + lead as u64,
            lead,
            refused: false,
        })
    }

    fn write(&mut self, out: &mut BufWriter<File>, mut data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if self.lead > 0 || self.refused {
            let n = if self.refused {
                data.len()
            } else {
                self.lead.min(data.len())
            };
            out.write_all(&data[..n])?;
            self.lead = self.lead.saturating_sub(n);
            data = &data[n..];
        }
        while !data.is_empty() {
            let n = (DIRECT_CHUNK - self.len).min(data.len());
            let at = self.start + self.len;
            self.stage[at..at + n].copy_from_slice(&data[..n]);
            self.len += n;
            data = &data[n..];
            if self.len == DIRECT_CHUNK {
                let block = &self.stage[self.start..self.start + DIRECT_CHUNK];
                match self.file.write_all_at(block, self.offset) {
                    Ok(()) => {}
                    // Some file systems open with O_DIRECT but refuse the writes.
                    Err(e) if refused(&e) => {
                        out.seek(SeekFrom::Start(self.offset))?;
                        out.write_all(block)?;
                        self.refused = true;
                        self.len = 0;
                        return self.write(out, data);
                    }
                    Err(e) => return Err(e),
                }
                self.offset += DIRECT_CHUNK as u64;
                self.len = 0;
            }
        }
        Ok(())
    }

    /// Write the whole blocks left directly and the tail through `out`, leaving `out` at
    /// the section's end.
    fn finish(mut self, out: &mut BufWriter<File>) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if self.lead > 0 || self.refused {
            return Ok(()); // everything (else) went through `out`
        }
        let mut whole = self.len / ALIGN * ALIGN;
        if whole > 0 {
            match self
                .file
                .write_all_at(&self.stage[self.start..self.start + whole], self.offset)
            {
                Ok(()) => self.offset += whole as u64,
                Err(e) if refused(&e) => whole = 0,
                Err(e) => return Err(e),
            }
        }
        out.seek(SeekFrom::Start(self.offset))?;
        out.write_all(&self.stage[self.start + whole..self.start + self.len])?;
        self.len = 0;
        Ok(())
    }
}

/// A streamed section: this thread hashes each chunk (PCRs), a second one adds it to the
/// CRC and writes it, so hashing never waits for the disk. Returns the section's length.
fn stream_section(
    rx: Chunks,
    spent: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    out: &mut BufWriter<File>,
    path: &Path,
    crc: &mut crc32fast::Hasher,
    pcrs: &mut Pcrs,
    ramdisk_index: usize,
) -> io::Result<u64> {
    out.flush()?;
    let here = out.get_mut().stream_position()?;
    // Direct I/O where the file system has it (not tmpfs on older kernels, for one).
    let mut direct = Direct::open(path, here);
    std::thread::scope(|scope| {
        let (tx, written) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let writer = scope.spawn(move || -> io::Result<()> {
            let mut since_hint = 0u64;
            for chunk in written {
                crc.update(&chunk);
                match &mut direct {
                    Some(d) => d.write(out, &chunk)?,
                    None => {
                        out.write_all(&chunk)?;
                        since_hint += chunk.len() as u64;
                        if since_hint >= WRITEBACK_EVERY {
                            out.flush()?;
                            start_writeback(out.get_ref());
                            since_hint = 0;
                        }
                    }
                }
                if let Some(spent) = &spent {
                    let _ = spent.try_send(chunk);
                }
            }
            if let Some(d) = direct {
                d.finish(out)?;
            }
            out.flush()
        });
        let mut total = 0u64;
        let hashed = (|| -> io::Result<()> {
            for chunk in rx {
                let chunk = chunk?;
                total += chunk.len() as u64;
                pcrs.update(SectionKind::Ramdisk, ramdisk_index, &chunk);
                if tx.send(chunk).is_err() {
                    break; // the writer failed: its error is reported below
                }
            }
            Ok(())
        })();
        drop(tx);
        let wrote = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the EIF writer thread panicked")));
        hashed?;
        wrote?;
        Ok(total)
    })
}

/// Write the EIF to `out` (via a temporary file renamed at the end) and return its PCRs.
pub fn write(spec: EifSpec<'_>, out: &Path) -> Result<Measurements> {
    let flags = kernel_format(&spec.kernel)?.eif_flags();
    let cmdline = spec.cmdline.trim().as_bytes().to_vec();
    let metadata = serde_json::to_vec(&spec.metadata).expect("metadata serialises");
    // (kind, source, announced size: None for streams)
    let mut sections: Vec<(SectionKind, Source<'_>, Option<u64>)> = Vec::new();
    let size_of = |p: &Path| -> Result<u64> {
        Ok(std::fs::metadata(p)
            .map_err(|e| Error::io("stat", p, e))?
            .len())
    };
    sections.push((
        SectionKind::Kernel,
        Source::File(spec.kernel.clone()),
        Some(size_of(&spec.kernel)?),
    ));
    sections.push((
        SectionKind::Cmdline,
        Source::Bytes(&cmdline),
        Some(cmdline.len() as u64),
    ));
    sections.push((
        SectionKind::Metadata,
        Source::Bytes(&metadata),
        Some(metadata.len() as u64),
    ));
    for r in spec.ramdisks {
        match r {
            Part::File(p) => {
                let size = size_of(&p)?;
                sections.push((SectionKind::Ramdisk, Source::File(p), Some(size)));
            }
            Part::Stream { chunks, spent } => {
                sections.push((SectionKind::Ramdisk, Source::Stream(chunks, spent), None))
            }
        }
    }
    if sections.len() + usize::from(spec.signer.is_some()) > MAX_SECTIONS {
        return Err(Error::Input(format!(
            "too many sections; an EIF holds at most {MAX_SECTIONS}"
        )));
    }
    let signer = spec.signer;
    // (kind, size) of every section written, for the header built at the end.
    let mut layout: Vec<(SectionKind, u64)> = Vec::new();
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".eif-")
        .tempfile_in(dir)
        .map_err(|e| Error::io("create temporary EIF in", dir, e))?;
    let io_err = |e| Error::io("write EIF", out, e);
    let mut w = BufWriter::with_capacity(1 << 20, tmp.reopen().map_err(io_err)?);
    // Section headers and the file header are written last, at their offsets (a streamed
    // section's size is known only at its end, the signature's after all of them); the CRC
    // is assembled from the parts in file order.
    let mut crc = crc32fast::Hasher::new();
    let mut patches: Vec<(u64, [u8; 12])> = Vec::new();
    let mut pos = HEADER_SIZE;
    w.write_all(&[0u8; HEADER_SIZE as usize]).map_err(io_err)?;
    let mut pcrs = Pcrs::new();
    let mut ramdisk_index = 0;
    let section_header = |kind: SectionKind, size: u64| {
        let mut sh = [0u8; 12];
        sh[..2].copy_from_slice(&(kind as u16).to_be_bytes());
        sh[4..12].copy_from_slice(&size.to_be_bytes());
        sh
    };
    for (kind, src, announced) in sections {
        w.write_all(&[0u8; 12]).map_err(io_err)?;
        let mut data_crc = crc32fast::Hasher::new();
        let what = match &src {
            Source::File(p) => p.display().to_string(),
            Source::Bytes(_) => format!("{kind:?}"),
            Source::Stream(..) => format!("streamed ramdisk {ramdisk_index}"),
        };
        let size = match src {
            Source::Stream(rx, spent) => stream_section(
                rx,
                spent,
                &mut w,
                tmp.path(),
                &mut data_crc,
                &mut pcrs,
                ramdisk_index,
            )
            .map_err(|e| Error::Input(format!("{what} of {}: {e}", out.display())))?,
            src => {
                let mut sink = SectionSink {
                    out: &mut w,
                    crc: &mut data_crc,
                    pcrs: &mut pcrs,
                    kind,
                    ramdisk_index,
                    buf: Vec::with_capacity(1 << 20),
                    total: 0,
                };
                match src {
                    Source::Bytes(b) => sink.write_all(b).map_err(io_err)?,
                    Source::File(p) => {
                        let mut f = File::open(&p).map_err(|e| Error::io("open", &p, e))?;
                        io::copy(&mut f, &mut sink).map_err(|e| Error::io("read", &p, e))?;
                    }
                    Source::Stream(..) => unreachable!("handled above"),
                }
                sink.flush().map_err(io_err)?;
                sink.total
            }
        };
        if let Some(announced) = announced.filter(|a| *a != size) {
            return Err(Error::Input(format!(
                "{what}: {size} bytes where {announced} were announced"
            )));
        }
        let sh = section_header(kind, size);
        crc.update(&sh);
        crc.combine(&data_crc);
        patches.push((pos, sh));
        pos += SECTION_HEADER_SIZE + size;
        layout.push((kind, size));
        if kind == SectionKind::Ramdisk {
            ramdisk_index += 1;
        }
    }
    let mut m = pcrs.finish();
    if let Some(signer) = signer {
        let pcr0 = hex::decode(&m.pcr0).expect("hex we produced");
        let section = signer.section(&pcr0);
        let sh = section_header(SectionKind::Signature, section.len() as u64);
        crc.update(&sh);
        crc.update(&section);
        w.write_all(&sh).map_err(io_err)?;
        w.write_all(&section).map_err(io_err)?;
        pos += SECTION_HEADER_SIZE + section.len() as u64;
        layout.push((SectionKind::Signature, section.len() as u64));
        m.pcr8 = Some(crate::sign::pcr8(signer.cert_pem())?);
    }
    if let Some(check) = spec.size_check {
        check(pos)?;
    }
    let mut header = vec![0u8; HEADER_SIZE as usize];
    header[..4].copy_from_slice(MAGIC);
    header[4..6].copy_from_slice(&VERSION.to_be_bytes());
    header[6..8].copy_from_slice(&flags.to_be_bytes());
    header[8..16].copy_from_slice(&(1u64 << 30).to_be_bytes());
    header[16..24].copy_from_slice(&2u64.to_be_bytes());
    header[26..28].copy_from_slice(&(layout.len() as u16).to_be_bytes());
    let mut offset = HEADER_SIZE;
    for (i, (_, size)) in layout.iter().enumerate() {
        header[0x1c + 8 * i..0x1c + 8 * i + 8].copy_from_slice(&offset.to_be_bytes());
        header[0x11c + 8 * i..0x11c + 8 * i + 8].copy_from_slice(&size.to_be_bytes());
        offset += SECTION_HEADER_SIZE + size;
    }
    let mut total = crc32fast::Hasher::new();
    total.update(&header[..544]);
    total.combine(&crc);
    header[0x220..0x224].copy_from_slice(&total.finalize().to_be_bytes());
    let mut file = w.into_inner().map_err(|e| io_err(e.into_error()))?;
    for (at, sh) in &patches {
        file.seek(SeekFrom::Start(*at)).map_err(io_err)?;
        file.write_all(sh).map_err(io_err)?;
    }
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    file.write_all(&header).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    drop(file);
    tmp.persist(out)
        .map_err(|e| Error::io("rename EIF into place", out, e.error))?;
    Ok(m)
}

/// One section as found in a file.
#[derive(Debug, Clone, Serialize)]
pub struct SectionInfo {
    /// Its type.
    pub kind: SectionKind,
    /// File offset of its header.
    pub offset: u64,
    /// Data size.
    pub size: u64,
}

/// What `describe-eif` shows.
#[derive(Debug, Clone, Serialize)]
pub struct EifInfo {
    /// Format version.
    pub version: u16,
    /// Header flags (0 = x86_64, [`FLAG_ARCH_ARM64`] = Graviton).
    pub flags: u16,
    /// Sections in file order.
    pub sections: Vec<SectionInfo>,
    /// CRC stored in the header.
    pub stored_crc: u32,
    /// Whether the recomputed CRC matches.
    pub crc_ok: bool,
    /// Recomputed PCRs.
    pub measurements: Measurements,
    /// The command line.
    pub cmdline: String,
    /// The metadata JSON, if any.
    pub metadata: Option<serde_json::Value>,
    /// The signature section's verdict (PCR8, COSE signature over PCR0), when signed.
    pub signature: Option<crate::sign::SignatureCheck>,
}

/// Read and check an EIF, streaming every section once.
pub fn read(path: &Path) -> Result<EifInfo> {
    let bad =
        |reason: String| Error::Input(format!("{} is not a valid EIF: {reason}", path.display()));
    let mut f = BufReader::with_capacity(
        1 << 20,
        File::open(path).map_err(|e| Error::io("open", path, e))?,
    );
    let mut header = vec![0u8; HEADER_SIZE as usize];
    f.read_exact(&mut header)
        .map_err(|_| bad("shorter than its 548-byte header".into()))?;
    if &header[..4] != MAGIC {
        return Err(bad("no .eif magic".into()));
    }
    let be16 = |o: usize| u16::from_be_bytes([header[o], header[o + 1]]);
    let be64 = |o: usize| u64::from_be_bytes(header[o..o + 8].try_into().expect("8 bytes"));
    let version = be16(4);
    let flags = be16(6);
    let n = be16(26) as usize;
    if n > MAX_SECTIONS {
        return Err(bad(format!("{n} sections")));
    }
    let stored_crc = u32::from_be_bytes(header[0x220..0x224].try_into().expect("4 bytes"));
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[..544]);
    let mut pcrs = Pcrs::new();
    let mut sections = Vec::new();
    let (mut cmdline, mut metadata, mut signature) = (String::new(), None, None::<Vec<u8>>);
    let mut offset = HEADER_SIZE;
    let mut ramdisk_index = 0;
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..n {
        if be64(0x1c + 8 * i) != offset {
            return Err(bad(format!("section {i} is not where the header says")));
        }
        let mut sh = [0u8; 12];
        f.read_exact(&mut sh)
            .map_err(|_| bad(format!("truncated at section {i}")))?;
        let kind = SectionKind::from_u16(u16::from_be_bytes([sh[0], sh[1]]))
            .ok_or_else(|| bad(format!("section {i} has an unknown type")))?;
        let size = u64::from_be_bytes(sh[4..12].try_into().expect("8 bytes"));
        if size != be64(0x11c + 8 * i) {
            return Err(bad(format!("section {i} size disagrees with the header")));
        }
        crc.update(&sh);
        let mut left = size;
        let mut small = Vec::new();
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            f.read_exact(&mut buf[..want])
                .map_err(|_| bad(format!("section {i} is truncated")))?;
            crc.update(&buf[..want]);
            pcrs.update(kind, ramdisk_index, &buf[..want]);
            if matches!(
                kind,
                SectionKind::Cmdline | SectionKind::Metadata | SectionKind::Signature
            ) && small.len() < 1 << 20
            {
                small.extend_from_slice(&buf[..want]);
            }
            left -= want as u64;
        }
        match kind {
            SectionKind::Cmdline => cmdline = String::from_utf8_lossy(&small).to_string(),
            SectionKind::Metadata => metadata = serde_json::from_slice(&small).ok(),
            SectionKind::Signature => signature = Some(small),
            SectionKind::Ramdisk => ramdisk_index += 1,
            SectionKind::Kernel => {}
        }
        sections.push(SectionInfo { kind, offset, size });
        offset += SECTION_HEADER_SIZE + size;
    }
    let mut measurements = pcrs.finish();
    let signature = match signature {
        Some(bytes) => {
            let pcr0 = hex::decode(&measurements.pcr0).expect("hex we produced");
            // A malformed section is a failed signature check, not a failure to describe the EIF.
            match crate::sign::check(&bytes, &pcr0) {
                Ok(check) => {
                    measurements.pcr8 = Some(check.pcr8.clone());
                    Some(check)
                }
                Err(e) => Some(crate::sign::SignatureCheck {
                    pcr8: String::new(),
                    valid: false,
                    problem: Some(e.to_string()),
                }),
            }
        }
        None => None,
    };
    Ok(EifInfo {
        version,
        flags,
        sections,
        stored_crc,
        crc_ok: crc.finalize() == stored_crc,
        measurements,
        cmdline,
        metadata,
        signature,
    })
}

/// Read the kernel, cmdline and ramdisks of an EIF back out (for booting it under qemu).
pub fn extract(path: &Path, dir: &Path) -> Result<(PathBuf, String, Vec<PathBuf>)> {
    let info = read(path)?;
    if !info.crc_ok {
        return Err(Error::Input(format!(
            "{}: CRC mismatch; the file is corrupt",
            path.display()
        )));
    }
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut kernel = None;
    let mut ramdisks = Vec::new();
    for (i, s) in info.sections.iter().enumerate() {
        let target = match s.kind {
            SectionKind::Kernel => dir.join("kernel"),
            SectionKind::Ramdisk => dir.join(format!("ramdisk{i}")),
            _ => continue,
        };
        f.seek(SeekFrom::Start(s.offset + SECTION_HEADER_SIZE))
            .map_err(|e| Error::io("seek", path, e))?;
        let mut out = File::create(&target).map_err(|e| Error::io("create", &target, e))?;
        io::copy(&mut (&mut f).take(s.size), &mut out)
            .map_err(|e| Error::io("extract", &target, e))?;
        if s.kind == SectionKind::Kernel {
            kernel = Some(target);
        } else {
            ramdisks.push(target);
        }
    }
    let kernel =
        kernel.ok_or_else(|| Error::Input(format!("{} has no kernel section", path.display())))?;
    Ok((kernel, info.cmdline, ramdisks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_noise as noise;

    /// A file that passes `check_bzimage`.
    fn fake_kernel(dir: &Path) -> PathBuf {
        let mut k = noise(70_001, 9);
        k[0x202..0x206].copy_from_slice(b"HdrS");
        let p = dir.join("bzImage");
        std::fs::write(&p, k).unwrap();
        p
    }

    fn reference_pcr(parts: &[&[u8]]) -> String {
        let mut h = Sha384::new();
        for p in parts {
            h.update(p);
        }
        extend(&h.finalize())
    }

    #[test]
    fn both_pcr_engines_agree_with_sha2() {
        let kernel = noise(5_000, 1);
        let boot = noise(333, 2);
        let app = noise(3 << 20, 3);
        let mut engines = vec![Pcrs::Threads {
            p0: Pcr::new(),
            p1: Pcr::new(),
            p2: Pcr::new(),
        }];
        let path = "PCR engine with sha384x2 AVX-512VL lanes against sha2";
        if sha384x2::supported() {
            crate::test_path(path, true, "AVX-512F and AVX-512VL present");
            engines.push(Pcrs::Lanes {
                p0: Default::default(),
                p1: Pcr::new(),
                p2: Default::default(),
            });
        } else {
            crate::test_path(path, false, "this CPU has no AVX-512F with AVX-512VL");
        }
        for mut p in engines {
            p.update(SectionKind::Kernel, 0, &kernel);
            p.update(SectionKind::Metadata, 0, b"not measured");
            p.update(SectionKind::Ramdisk, 0, &boot);
            for c in app.chunks(100_003) {
                p.update(SectionKind::Ramdisk, 1, c);
            }
            let m = p.finish();
            assert_eq!(m.pcr0, reference_pcr(&[&kernel, &boot, &app]));
            assert_eq!(m.pcr1, reference_pcr(&[&kernel, &boot]));
            assert_eq!(m.pcr2, reference_pcr(&[&app]));
        }
    }

    /// An arm64 `Image` header (Documentation/arch/arm64/booting.rst): magic at 56.
    fn fake_arm64_image(dir: &Path) -> PathBuf {
        let mut k = noise(90_001, 11);
        k[0x202..0x206].copy_from_slice(b"xxxx");
        k[56..60].copy_from_slice(b"ARM\x64");
        let p = dir.join("Image");
        std::fs::write(&p, k).unwrap();
        p
    }

    #[test]
    fn an_arm64_image_kernel_builds_an_eif_flagged_for_graviton_and_is_named_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot");
        std::fs::write(&boot, noise(1000, 12)).unwrap();
        for (kernel, flags) in [
            (fake_kernel(dir.path()), 0),
            (fake_arm64_image(dir.path()), FLAG_ARCH_ARM64),
        ] {
            let out = dir.path().join(format!("k{flags}.eif"));
            let spec = EifSpec {
                kernel: kernel.clone(),
                cmdline: "console=ttyS0".into(),
                ramdisks: vec![Part::File(boot.clone())],
                metadata: serde_json::json!({}),
                signer: None,
                size_check: None,
            };
            let m = write(spec, &out).unwrap();
            let info = read(&out).unwrap();
            assert_eq!(info.flags, flags);
            assert!(info.crc_ok);
            assert_eq!(info.measurements.pcr0, m.pcr0);
        }
        // convert and run need x86: the refusal says what the file is and what the limit is
        let arm = fake_arm64_image(dir.path());
        let err = check_bzimage(&arm).unwrap_err().to_string();
        assert!(err.contains("is an arm64 Image kernel"), "{err}");
        let err = crate::vm::boot(
            &arm,
            "",
            &boot,
            &crate::vm::VmOptions {
                cpus: 1,
                mem_mib: 256,
                kvm: false,
                timeout: std::time::Duration::from_secs(1),
                publish: Vec::new(),
            },
            &mut std::io::sink(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("cloak run boots x86 bzImage kernels only"),
            "{err}"
        );
        // neither format: both are named
        let junk = dir.path().join("junk");
        std::fs::write(&junk, noise(4096, 13)).unwrap();
        let err = write(
            EifSpec {
                kernel: junk,
                cmdline: String::new(),
                ramdisks: vec![Part::File(boot.clone())],
                metadata: serde_json::json!({}),
                signer: None,
                size_check: None,
            },
            &dir.path().join("junk.eif"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("neither an x86 bzImage") && err.contains("nor an arm64 Image"),
            "{err}"
        );
        assert!(!dir.path().join("junk.eif").exists());
    }

    /// A streamed ramdisk of 9 MiB and a few bytes, starting at an unaligned offset and
    /// arriving in uneven chunks: written partly with O_DIRECT, partly buffered.
    #[test]
    fn a_streamed_ramdisk_lands_byte_for_byte_with_its_pcrs_and_crc() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = fake_kernel(dir.path());
        let boot = dir.path().join("boot");
        std::fs::write(&boot, noise(1234, 4)).unwrap();
        let app = noise((9 << 20) + 4321, 5);
        for chunk in [1 << 20, 777_777, 4096] {
            let (tx, rx) = std::sync::mpsc::sync_channel(4);
            let feed = app.clone();
            let producer = std::thread::spawn(move || {
                for c in feed.chunks(chunk) {
                    tx.send(Ok(c.to_vec())).unwrap();
                }
            });
            let out = dir.path().join(format!("s{chunk}.eif"));
            let m = write(
                EifSpec {
                    kernel: kernel.clone(),
                    cmdline: "console=ttyS0".into(),
                    ramdisks: vec![
                        Part::File(boot.clone()),
                        Part::Stream {
                            chunks: rx,
                            spent: None,
                        },
                    ],
                    metadata: serde_json::json!({"x": 1}),
                    signer: None,
                    size_check: None,
                },
                &out,
            )
            .unwrap();
            producer.join().unwrap();
            let info = read(&out).unwrap();
            assert!(info.crc_ok, "chunk {chunk}");
            assert_eq!(info.measurements.pcr2, reference_pcr(&[&app]));
            assert_eq!(info.measurements.pcr0, m.pcr0);
            let last = info.sections.last().unwrap();
            let bytes = std::fs::read(&out).unwrap();
            let at = (last.offset + SECTION_HEADER_SIZE) as usize;
            assert_eq!(
                &bytes[at..at + last.size as usize],
                &app[..],
                "chunk {chunk}"
            );
            assert_eq!(at + app.len(), bytes.len());
        }
    }

    /// Direct writes, and the buffered fallback when the kernel refuses them (here: a buffer
    /// misaligned on purpose), both land every byte where it belongs.
    #[test]
    fn direct_writes_and_their_buffered_fallback_write_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = noise(1000, 6);
        let data = noise((9 << 20) + 5, 7);
        for skew in [0, 1] {
            let path = dir.path().join(format!("skew{skew}"));
            let mut out = BufWriter::new(File::create(&path).unwrap());
            out.write_all(&prefix).unwrap();
            out.flush().unwrap();
            let Some(mut d) = Direct::open_skewed(&path, prefix.len() as u64, skew) else {
                let why = format!(
                    "the file system of {} refuses O_DIRECT",
                    dir.path().display()
                );
                crate::test_path("EIF writes with O_DIRECT", false, &why);
                return;
            };
            if skew == 0 {
                crate::test_path("EIF writes with O_DIRECT", true, "O_DIRECT accepted");
            }
            for c in data.chunks(777_777) {
                d.write(&mut out, c).unwrap();
            }
            assert_eq!(d.refused, skew > 0, "skew {skew}");
            d.finish(&mut out).unwrap();
            out.flush().unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(bytes.len(), prefix.len() + data.len(), "skew {skew}");
            assert!(bytes[..prefix.len()] == prefix[..] && bytes[prefix.len()..] == data[..]);
        }
    }

    #[test]
    fn an_aborted_stream_or_a_refused_size_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = fake_kernel(dir.path());
        let out = dir.path().join("out.eif");
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        tx.send(Ok(vec![1u8; 5000])).unwrap();
        tx.send(Err(io::Error::other("layer 3 is corrupt")))
            .unwrap();
        drop(tx);
        let spec = |rx| EifSpec {
            kernel: kernel.clone(),
            cmdline: String::new(),
            ramdisks: vec![Part::Stream {
                chunks: rx,
                spent: None,
            }],
            metadata: serde_json::Value::Null,
            signer: None,
            size_check: None,
        };
        let err = write(spec(rx), &out).unwrap_err().to_string();
        assert!(err.contains("layer 3 is corrupt"), "{err}");
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        tx.send(Ok(vec![1u8; 5000])).unwrap();
        drop(tx);
        let refuse = |size: u64| Err(Error::Input(format!("{size} bytes is too big")));
        let err = write(
            EifSpec {
                size_check: Some(&refuse),
                ..spec(rx)
            },
            &out,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("too big"), "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["bzImage"], "no EIF and no temporary file");
    }
}
