//! MRENCLAVE exactly as Gramine's signer lays out and measures an enclave (SGX1 and EDMM).
//!
//! Areas are placed top-down from `enclave_size` in the order manifest, SSA, TCS, TLS, stacks,
//! signal stacks, PAL; every page of those is EADDed and EEXTENDed (16 × 256 bytes), then the
//! free heap between 0x10000 and the PAL is EADDed without EEXTEND (omitted with EDMM). The heap
//! records differ only in their offset, so they are generated into a reused buffer and never
//! materialised as pages: a 64 GiB enclave (≈16.7 M records) hashes 1 GiB of records.

use sha2::{Digest, Sha256};

use crate::elf::{load_segments, Segment};
use crate::error::{Error, Result};

/// Page size.
pub const PAGE: u64 = 0x1000;
const SSA_FRAME_SIZE: u64 = 0x4000;
const SSA_FRAME_NUM: u64 = 2;
const STACK_SIZE: u64 = 0x40000;
const SIG_STACK_SIZE: u64 = 0x10000;
/// Lowest address an area may occupy (`MMAP_MIN_ADDR`); the heap starts here.
pub const HEAP_MIN: u64 = 0x10000;
const CANARY: u64 = 0xbadbadbadbad;
const GPR_SIZE: u64 = 0xb8;

const FLAG_R: u64 = 0x1;
const FLAG_W: u64 = 0x2;
const FLAG_X: u64 = 0x4;
const PT_TCS: u64 = 0x100;
const PT_REG: u64 = 0x200;

/// The inputs of a measurement.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// `sgx.enclave_size` in bytes.
    pub enclave_size: u64,
    /// `sgx.max_threads`.
    pub threads: u64,
    /// `sgx.edmm_enable`: the free heap is not EADDed.
    pub edmm: bool,
}

fn roundup(x: u64) -> u64 {
    x.div_ceil(PAGE) * PAGE
}
fn rounddown(x: u64) -> u64 {
    x / PAGE * PAGE
}

/// Where each area landed (for tests and diagnostics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Manifest area start.
    pub manifest: u64,
    /// SSA area start.
    pub ssa: u64,
    /// TCS area start.
    pub tcs: u64,
    /// TLS area start.
    pub tls: u64,
    /// Stack of each thread (thread 0 highest).
    pub stacks: Vec<u64>,
    /// Signal stack of each thread.
    pub sig_stacks: Vec<u64>,
    /// PAL area start (= heap_max).
    pub pal: u64,
    /// PAL area size.
    pub pal_size: u64,
}

/// Compute the placement of every area.
pub fn place(layout: &Layout, manifest_len: u64, segments: &[Segment]) -> Result<Placement> {
    let n = layout.threads;
    let mut last = layout.enclave_size;
    let mut alloc = |size: u64| -> Result<u64> {
        let size = roundup(size);
        let addr =
            last.checked_sub(size)
                .filter(|a| *a >= HEAP_MIN)
                .ok_or(Error::EnclaveTooSmall {
                    enclave_size: layout.enclave_size,
                    threads: n,
                })?;
        last = addr;
        Ok(addr)
    };
    let manifest = alloc(manifest_len + 1)?;
    let ssa = alloc(n * SSA_FRAME_NUM * SSA_FRAME_SIZE)?;
    let tcs = alloc(n * PAGE)?;
    let tls = alloc(n * PAGE)?;
    let stacks = (0..n)
        .map(|_| alloc(STACK_SIZE))
        .collect::<Result<Vec<_>>>()?;
    let sig_stacks = (0..n)
        .map(|_| alloc(SIG_STACK_SIZE))
        .collect::<Result<Vec<_>>>()?;
    let lo = segments
        .iter()
        .map(|s| rounddown(s.vaddr))
        .min()
        .unwrap_or(0);
    let hi = segments
        .iter()
        .map(|s| roundup(s.vaddr + s.memsz))
        .max()
        .unwrap_or(0);
    let pal_size = hi - lo;
    let pal = alloc(pal_size)?;
    Ok(Placement {
        manifest,
        ssa,
        tcs,
        tls,
        stacks,
        sig_stacks,
        pal,
        pal_size,
    })
}

/// Streams measurement records into SHA-256.
struct Measurer {
    hasher: Sha256,
    buf: Vec<u8>,
}

impl Measurer {
    fn new() -> Self {
        Measurer {
            hasher: Sha256::new(),
            buf: Vec::with_capacity(1 << 16),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.buf.len() + bytes.len() > self.buf.capacity() {
            self.hasher.update(&self.buf);
            self.buf.clear();
        }
        self.buf.extend_from_slice(bytes);
    }

    fn ecreate(&mut self, size: u64) {
        let mut r = [0u8; 64];
        r[..8].copy_from_slice(b"ECREATE\0");
        r[8..12].copy_from_slice(&((SSA_FRAME_SIZE / PAGE) as u32).to_le_bytes());
        r[12..20].copy_from_slice(&size.to_le_bytes());
        self.push(&r);
    }

    fn eadd(&mut self, offset: u64, flags: u64) {
        let mut r = [0u8; 64];
        r[..8].copy_from_slice(b"EADD\0\0\0\0");
        r[8..16].copy_from_slice(&offset.to_le_bytes());
        r[16..24].copy_from_slice(&flags.to_le_bytes());
        self.push(&r);
    }

    /// EADD + 16 × EEXTEND of one page.
    fn page(&mut self, offset: u64, flags: u64, content: &[u8; PAGE as usize]) {
        self.eadd(offset, flags);
        for (i, chunk) in content.chunks(256).enumerate() {
            let mut r = [0u8; 64];
            r[..8].copy_from_slice(b"EEXTEND\0");
            r[8..16].copy_from_slice(&(offset + 256 * i as u64).to_le_bytes());
            self.push(&r);
            self.push(chunk);
        }
    }

    fn zero_pages(&mut self, start: u64, size: u64, flags: u64) {
        let zero = [0u8; PAGE as usize];
        for p in (start..start + size).step_by(PAGE as usize) {
            self.page(p, flags, &zero);
        }
    }

    /// The unmeasured heap: EADD records only, generated 1024 at a time into one buffer.
    fn heap(&mut self, start: u64, end: u64) {
        self.hasher.update(&self.buf);
        self.buf.clear();
        let mut block = vec![0u8; 64 * 1024];
        for r in block.chunks_mut(64) {
            r[..8].copy_from_slice(b"EADD\0\0\0\0");
            r[16..24].copy_from_slice(&(PT_REG | FLAG_R | FLAG_W | FLAG_X).to_le_bytes());
        }
        let mut page = start;
        while page < end {
            let n = ((end - page) / PAGE).min(1024) as usize;
            for r in block.chunks_mut(64).take(n) {
                r[8..16].copy_from_slice(&page.to_le_bytes());
                page += PAGE;
            }
            self.hasher.update(&block[..n * 64]);
        }
    }

    fn finish(mut self) -> [u8; 32] {
        self.hasher.update(&self.buf);
        self.hasher.finalize().into()
    }
}

fn put(page: &mut [u8; PAGE as usize], off: usize, v: u64) {
    page[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// MRENCLAVE of `manifest` (the exact `.manifest.sgx` bytes) with `libpal` (ELF bytes).
pub fn mrenclave(manifest: &[u8], libpal: &[u8], layout: &Layout) -> Result<[u8; 32]> {
    if manifest.contains(&0) {
        return Err(Error::Manifest(
            "the manifest contains a NUL byte; the loader would measure less than the file".into(),
        ));
    }
    if !layout.enclave_size.is_power_of_two() {
        return Err(Error::Manifest(format!(
            "sgx.enclave_size {:#x} is not a power of two",
            layout.enclave_size
        )));
    }
    crate::manifest::check_enclave_size(layout.enclave_size)?;
    if !(1..=4096).contains(&layout.threads) {
        return Err(Error::Manifest(format!(
            "sgx.max_threads = {} is outside 1..=4096",
            layout.threads
        )));
    }
    let (entry, segments) = load_segments(libpal)?;
    match segments.iter().map(|s| rounddown(s.vaddr)).min() {
        None => {
            return Err(Error::Elf {
                what: "libpal.so".into(),
                reason: "it has no PT_LOAD segment".into(),
            })
        }
        Some(lowest) if lowest != 0 => {
            // Gramine's signer (and loader) put such a PAL at that fixed address instead of
            // top-down, and the loader then adds the free heap over it: refuse rather than
            // compute an MRENCLAVE no Gramine enclave has.
            return Err(Error::Elf {
                what: "libpal.so".into(),
                reason: format!(
                    "its lowest PT_LOAD segment is at {lowest:#x}, not 0: Gramine loads only a \
                     position-independent PAL (use the libpal.so of a Gramine build)"
                ),
            });
        }
        Some(_) => {}
    }
    let p = place(layout, manifest.len() as u64, &segments)?;
    let n = layout.threads;
    let mut m = Measurer::new();
    m.ecreate(layout.enclave_size);

    // manifest: file bytes + NUL, zero-padded, read-only
    let mlen = manifest.len() as u64 + 1;
    for (i, pg) in (p.manifest..p.manifest + roundup(mlen))
        .step_by(PAGE as usize)
        .enumerate()
    {
        let mut content = [0u8; PAGE as usize];
        let from = i * PAGE as usize;
        if from < manifest.len() {
            let to = (from + PAGE as usize).min(manifest.len());
            content[..to - from].copy_from_slice(&manifest[from..to]);
        }
        m.page(pg, PT_REG | FLAG_R, &content);
    }
    m.zero_pages(
        p.ssa,
        n * SSA_FRAME_NUM * SSA_FRAME_SIZE,
        PT_REG | FLAG_R | FLAG_W,
    );
    for t in 0..n {
        let mut tcs = [0u8; PAGE as usize];
        let ssa_t = p.ssa + SSA_FRAME_NUM * SSA_FRAME_SIZE * t;
        put(&mut tcs, 0x10, ssa_t);
        tcs[0x1c..0x20].copy_from_slice(&(SSA_FRAME_NUM as u32).to_le_bytes());
        put(&mut tcs, 0x20, p.pal + entry);
        put(&mut tcs, 0x38, p.tls + PAGE * t);
        tcs[0x40..0x44].copy_from_slice(&0xfffu32.to_le_bytes());
        tcs[0x44..0x48].copy_from_slice(&0xfffu32.to_le_bytes());
        m.page(p.tcs + PAGE * t, PT_TCS, &tcs);
    }
    for t in 0..n {
        let mut tls = [0u8; PAGE as usize];
        let ssa_t = p.ssa + SSA_FRAME_NUM * SSA_FRAME_SIZE * t;
        put(&mut tls, 0x0, p.tls + PAGE * t);
        put(&mut tls, 0x8, CANARY);
        put(&mut tls, 0x110, layout.enclave_size);
        put(&mut tls, 0x118, p.tcs + PAGE * t);
        put(&mut tls, 0x120, p.stacks[t as usize] + STACK_SIZE);
        put(&mut tls, 0x130, p.sig_stacks[t as usize]);
        put(&mut tls, 0x138, p.sig_stacks[t as usize] + SIG_STACK_SIZE);
        put(&mut tls, 0x148, ssa_t);
        put(&mut tls, 0x150, ssa_t + SSA_FRAME_SIZE - GPR_SIZE);
        put(&mut tls, 0x1a0, mlen);
        put(&mut tls, 0x1a8, HEAP_MIN);
        put(&mut tls, 0x1b0, p.pal);
        m.page(p.tls + PAGE * t, PT_REG | FLAG_R | FLAG_W, &tls);
    }
    for s in &p.stacks {
        m.zero_pages(*s, STACK_SIZE, PT_REG | FLAG_R | FLAG_W);
    }
    for s in &p.sig_stacks {
        m.zero_pages(*s, SIG_STACK_SIZE, PT_REG | FLAG_R | FLAG_W);
    }
    for s in &segments {
        let flags = PT_REG
            | if s.flags & 4 != 0 { FLAG_R } else { 0 }
            | if s.flags & 2 != 0 { FLAG_W } else { 0 }
            | if s.flags & 1 != 0 { FLAG_X } else { 0 };
        // As Gramine's signer and loader map a segment: file page rounddown(offset) at
        // rounddown(vaddr), bytes outside [offset, offset + filesz) zeroed. (Identical to placing
        // the file bytes at vaddr when offset and vaddr are congruent modulo the page size, as the
        // ELF specification requires; Gramine does not check that, so neither does this.)
        let first = rounddown(s.vaddr);
        let end = roundup(s.vaddr + s.memsz);
        let file_first = rounddown(s.offset);
        for page_va in (first..end).step_by(PAGE as usize) {
            let mut content = [0u8; PAGE as usize];
            let file_lo = file_first + (page_va - first);
            let lo = file_lo.max(s.offset);
            let hi = (file_lo + PAGE).min(s.offset + s.filesz);
            if lo < hi {
                content[(lo - file_lo) as usize..(hi - file_lo) as usize]
                    .copy_from_slice(&s.data[(lo - s.offset) as usize..(hi - s.offset) as usize]);
            }
            m.page(p.pal + page_va, flags, &content);
        }
    }
    if !layout.edmm {
        m.heap(HEAP_MIN, p.pal);
    }
    Ok(m.finish())
}

#[cfg(test)]
mod tests;
