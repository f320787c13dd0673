//! Enclave Image Files, version 4: a streaming writer that never holds a ramdisk in memory and
//! never leaves a half-written file at the output path, a reader that checks the CRC and
//! recomputes the PCRs, and the PCR formulas (SHA-384, as `shared/notes/nitro-eif.md` gives).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha384};

use crate::error::{Error, Result};

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
/// as the `sha2` crate's here, and two of these run over every byte of the application
/// ramdisk; `sha2` remains the reference in the tests.
struct Pcr(ring::digest::Context);

impl Pcr {
    fn new() -> Self {
        Pcr(ring::digest::Context::new(&ring::digest::SHA384))
    }
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
}

/// `SHA384(0^48 ‖ digest)`: a TPM-style extend of a zero register.
fn extend(h: Pcr) -> String {
    let inner = h.0.finish();
    let mut outer = Sha384::new();
    outer.update([0u8; 48]);
    outer.update(inner.as_ref());
    hex::encode(outer.finalize())
}

struct Pcrs {
    p0: Pcr,
    p1: Pcr,
    p2: Pcr,
}

impl Pcrs {
    fn new() -> Self {
        Pcrs {
            p0: Pcr::new(),
            p1: Pcr::new(),
            p2: Pcr::new(),
        }
    }
    fn update(&mut self, kind: SectionKind, ramdisk_index: usize, data: &[u8]) {
        match kind {
            SectionKind::Kernel | SectionKind::Cmdline => {
                self.p0.update(data);
                self.p1.update(data);
            }
            SectionKind::Ramdisk if ramdisk_index == 0 => {
                self.p0.update(data);
                self.p1.update(data);
            }
            SectionKind::Ramdisk => {
                self.p0.update(data);
                self.p2.update(data);
            }
            _ => {}
        }
    }
    fn finish(self) -> Measurements {
        Measurements {
            hash_algorithm: "Sha384".into(),
            pcr0: extend(self.p0),
            pcr1: extend(self.p1),
            pcr2: extend(self.p2),
            pcr8: None,
        }
    }
}

/// Check that `kernel` is an x86 bzImage (`HdrS` at 0x202).
pub fn check_bzimage(kernel: &Path) -> Result<()> {
    let mut f = File::open(kernel).map_err(|e| Error::io("open kernel", kernel, e))?;
    let mut magic = [0u8; 4];
    let ok = f.seek(SeekFrom::Start(0x202)).is_ok()
        && f.read_exact(&mut magic).is_ok()
        && &magic == b"HdrS";
    if !ok {
        return Err(Error::Input(format!(
            "{} is not an x86 bzImage (no \"HdrS\" at 0x202); pass the kernel from a nitro-cli blobs folder or a distribution's vmlinuz",
            kernel.display()
        )));
    }
    Ok(())
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

/// Writes a generated ramdisk into the EIF stream.
pub type Producer<'a> = Box<dyn FnOnce(&mut dyn Write) -> io::Result<()> + 'a>;

/// A ramdisk: a file, or bytes generated straight into the EIF (of a size known in advance).
pub enum Part<'a> {
    /// A file on disk.
    File(PathBuf),
    /// Written by the closure into the EIF stream; it must write exactly `size` bytes.
    Generated {
        /// Exact length.
        size: u64,
        /// Producer.
        write: Producer<'a>,
    },
}

impl std::fmt::Debug for Part<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Part::File(p) => write!(f, "File({})", p.display()),
            Part::Generated { size, .. } => write!(f, "Generated({size} bytes)"),
        }
    }
}

/// What goes into an EIF.
#[derive(Debug)]
pub struct EifSpec<'a> {
    /// bzImage.
    pub kernel: PathBuf,
    /// Command line (trimmed; written without NUL).
    pub cmdline: String,
    /// Ramdisks in order: bootstrap first, then the application's.
    pub ramdisks: Vec<Part<'a>>,
    /// Metadata JSON (deterministic: no build time unless the caller puts one).
    pub metadata: serde_json::Value,
    /// Sign the EIF (adds the signature section and PCR8).
    pub signer: Option<&'a crate::sign::EifSigner>,
}

enum Source<'a> {
    File(PathBuf),
    Bytes(&'a [u8]),
    Generated(Producer<'a>),
}

/// Receives a section's bytes: CRC, PCRs and the file, in 1 MiB chunks. Application ramdisks
/// feed two SHA-384s (PCR0 and PCR2); one of them runs on the second core.
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
        if self.kind == SectionKind::Ramdisk && self.ramdisk_index > 0 {
            let Pcrs { p0, p2, .. } = &mut *self.pcrs;
            let (crc, out) = (&mut *self.crc, &mut *self.out);
            std::thread::scope(|scope| -> io::Result<()> {
                scope.spawn(|| p0.update(chunk));
                p2.update(chunk);
                crc.update(chunk);
                out.write_all(chunk)
            })?;
        } else {
            self.crc.update(chunk);
            self.pcrs.update(self.kind, self.ramdisk_index, chunk);
            self.out.write_all(chunk)?;
        }
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

/// Write the EIF to `out` (via a temporary file renamed at the end) and return its PCRs.
pub fn write(spec: EifSpec<'_>, out: &Path) -> Result<Measurements> {
    check_bzimage(&spec.kernel)?;
    let cmdline = spec.cmdline.trim().as_bytes().to_vec();
    let metadata = serde_json::to_vec(&spec.metadata).expect("metadata serialises");
    let mut sections: Vec<(SectionKind, Source<'_>, u64)> = Vec::new();
    let size_of = |p: &Path| -> Result<u64> {
        Ok(std::fs::metadata(p)
            .map_err(|e| Error::io("stat", p, e))?
            .len())
    };
    sections.push((
        SectionKind::Kernel,
        Source::File(spec.kernel.clone()),
        size_of(&spec.kernel)?,
    ));
    sections.push((
        SectionKind::Cmdline,
        Source::Bytes(&cmdline),
        cmdline.len() as u64,
    ));
    sections.push((
        SectionKind::Metadata,
        Source::Bytes(&metadata),
        metadata.len() as u64,
    ));
    for r in spec.ramdisks {
        match r {
            Part::File(p) => {
                let size = size_of(&p)?;
                sections.push((SectionKind::Ramdisk, Source::File(p), size));
            }
            Part::Generated { size, write } => {
                sections.push((SectionKind::Ramdisk, Source::Generated(write), size))
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
    // The header goes in last (the signature's size is known only then); the CRC of the
    // sections is combined with the header's afterwards.
    let mut crc = crc32fast::Hasher::new();
    w.write_all(&[0u8; HEADER_SIZE as usize]).map_err(io_err)?;
    let mut pcrs = Pcrs::new();
    let mut ramdisk_index = 0;
    for (kind, src, size) in sections {
        layout.push((kind, size));
        let mut sh = [0u8; 12];
        sh[..2].copy_from_slice(&(kind as u16).to_be_bytes());
        sh[4..12].copy_from_slice(&size.to_be_bytes());
        crc.update(&sh);
        w.write_all(&sh).map_err(io_err)?;
        let mut sink = SectionSink {
            out: &mut w,
            crc: &mut crc,
            pcrs: &mut pcrs,
            kind,
            ramdisk_index,
            buf: Vec::with_capacity(1 << 20),
            total: 0,
        };
        let what = match &src {
            Source::File(p) => p.display().to_string(),
            Source::Bytes(_) => format!("{kind:?}"),
            Source::Generated(_) => format!("generated ramdisk {ramdisk_index}"),
        };
        match src {
            Source::Bytes(b) => sink.write_all(b).map_err(io_err)?,
            Source::File(p) => {
                let mut f = File::open(&p).map_err(|e| Error::io("open", &p, e))?;
                io::copy(&mut f, &mut sink).map_err(|e| Error::io("read", &p, e))?;
            }
            Source::Generated(write) => {
                write(&mut sink).map_err(|e| Error::Input(format!("{what}: {e}")))?
            }
        }
        sink.flush().map_err(io_err)?;
        if sink.total != size {
            return Err(Error::Input(format!(
                "{what}: {} bytes where {size} were announced",
                sink.total
            )));
        }
        if kind == SectionKind::Ramdisk {
            ramdisk_index += 1;
        }
    }
    let mut m = pcrs.finish();
    if let Some(signer) = signer {
        let pcr0 = hex::decode(&m.pcr0).expect("hex we produced");
        let section = signer.section(&pcr0);
        let mut sh = [0u8; 12];
        sh[..2].copy_from_slice(&(SectionKind::Signature as u16).to_be_bytes());
        sh[4..12].copy_from_slice(&(section.len() as u64).to_be_bytes());
        crc.update(&sh);
        crc.update(&section);
        w.write_all(&sh).map_err(io_err)?;
        w.write_all(&section).map_err(io_err)?;
        layout.push((SectionKind::Signature, section.len() as u64));
        m.pcr8 = Some(crate::sign::pcr8(signer.cert_pem())?);
    }
    let mut header = vec![0u8; HEADER_SIZE as usize];
    header[..4].copy_from_slice(MAGIC);
    header[4..6].copy_from_slice(&VERSION.to_be_bytes());
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
    /// Header flags (0 = x86_64).
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
