//! Just enough ELF64 for enclaves: the `PT_LOAD` segments of the PAL (measured into
//! MRENCLAVE) and, for the untrusted loader, `PT_INTERP` and `DT_NEEDED`.

use crate::error::{Error, Result};

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;

/// Dynamic-linking facts of one ELF file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DynamicInfo {
    /// The program interpreter (`/lib64/ld-linux-x86-64.so.2`), if any.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` sonames, in order.
    pub needed: Vec<String>,
}

struct Phdr {
    kind: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    b.get(off..off + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
}

fn cstr(b: &[u8], off: usize) -> Option<String> {
    let rest = b.get(off..)?;
    let end = rest.iter().position(|&c| c == 0)?;
    String::from_utf8(rest[..end].to_vec()).ok()
}

fn program_headers(bytes: &[u8], what: &str) -> Result<Vec<Phdr>> {
    let bad = |reason: &str| Error::Elf {
        what: what.to_string(),
        reason: reason.to_string(),
    };
    if bytes.get(..4) != Some(b"\x7fELF") {
        return Err(bad("no ELF magic"));
    }
    if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Err(bad("not 64-bit little-endian"));
    }
    let phoff = u64_at(bytes, 0x20).ok_or_else(|| bad("truncated header"))? as usize;
    let phentsize = u16_at(bytes, 0x36).ok_or_else(|| bad("truncated header"))? as usize;
    let phnum = u16_at(bytes, 0x38).ok_or_else(|| bad("truncated header"))? as usize;
    if phentsize < 56 {
        return Err(bad("program header entries too small"));
    }
    let mut phdrs = Vec::with_capacity(phnum);
    for i in 0..phnum {
        let at = phoff
            .checked_add(i * phentsize)
            .ok_or_else(|| bad("bad program header offset"))?;
        let field = |o| u64_at(bytes, at + o).ok_or_else(|| bad("truncated program headers"));
        phdrs.push(Phdr {
            kind: u32_at(bytes, at).ok_or_else(|| bad("truncated program headers"))?,
            flags: u32_at(bytes, at + 4).ok_or_else(|| bad("truncated program headers"))?,
            offset: field(8)?,
            vaddr: field(16)?,
            filesz: field(32)?,
            memsz: field(40)?,
        });
    }
    Ok(phdrs)
}

/// A `PT_LOAD` segment with its file bytes.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Virtual address.
    pub vaddr: u64,
    /// Size in memory (≥ `filesz`; the rest is zero, e.g. bss).
    pub memsz: u64,
    /// Bytes in the file.
    pub filesz: u64,
    /// Offset in the file.
    pub offset: u64,
    /// `p_flags` (R = 4, W = 2, X = 1).
    pub flags: u32,
    /// The file bytes `[offset, offset + filesz)`.
    pub data: Vec<u8>,
}

/// The entry point and the `PT_LOAD` segments, in program-header order.
pub fn load_segments(bytes: &[u8]) -> Result<(u64, Vec<Segment>)> {
    let what = "libpal.so";
    let bad = |reason: &str| Error::Elf {
        what: what.to_string(),
        reason: reason.to_string(),
    };
    let phdrs = program_headers(bytes, what)?;
    let entry = u64_at(bytes, 0x18).ok_or_else(|| bad("truncated header"))?;
    let mut segments = Vec::new();
    for p in phdrs.iter().filter(|p| p.kind == PT_LOAD) {
        if p.filesz > p.memsz {
            return Err(bad("a PT_LOAD segment has filesz > memsz"));
        }
        let data = bytes
            .get(p.offset as usize..(p.offset + p.filesz) as usize)
            .ok_or_else(|| bad("a PT_LOAD segment lies outside the file"))?
            .to_vec();
        segments.push(Segment {
            vaddr: p.vaddr,
            memsz: p.memsz,
            filesz: p.filesz,
            offset: p.offset,
            flags: p.flags,
            data,
        });
    }
    if segments.is_empty() {
        return Err(bad("no PT_LOAD segment"));
    }
    Ok((entry, segments))
}

/// `e_machine` of x86-64.
pub const EM_X86_64: u16 = 62;
/// `e_machine` of AArch64.
pub const EM_AARCH64: u16 = 183;

/// The `e_machine` field of a 64-bit little-endian ELF file (`EM_X86_64`, `EM_AARCH64`, …).
pub fn machine(bytes: &[u8], what: &str) -> Result<u16> {
    program_headers(bytes, what)?;
    u16_at(bytes, 0x12).ok_or_else(|| Error::Elf {
        what: what.to_string(),
        reason: "truncated header".into(),
    })
}

/// Parse `bytes` (a whole ELF file) named `what`.
pub fn dynamic_info(bytes: &[u8], what: &str) -> Result<DynamicInfo> {
    let bad = |reason: &str| Error::Elf {
        what: what.to_string(),
        reason: reason.to_string(),
    };
    let phdrs = program_headers(bytes, what)?;
    let mut info = DynamicInfo::default();
    if let Some(p) = phdrs.iter().find(|p| p.kind == PT_INTERP) {
        info.interpreter =
            Some(cstr(bytes, p.offset as usize).ok_or_else(|| bad("bad PT_INTERP"))?);
    }
    let Some(dynamic) = phdrs.iter().find(|p| p.kind == PT_DYNAMIC) else {
        return Ok(info); // static
    };
    let mut needed_offsets = Vec::new();
    let mut strtab_vaddr = None;
    let end = (dynamic.offset + dynamic.filesz) as usize;
    let mut at = dynamic.offset as usize;
    while at + 16 <= end {
        let tag = u64_at(bytes, at).ok_or_else(|| bad("truncated dynamic section"))?;
        let val = u64_at(bytes, at + 8).ok_or_else(|| bad("truncated dynamic section"))?;
        match tag {
            DT_NULL => break,
            DT_NEEDED => needed_offsets.push(val),
            DT_STRTAB => strtab_vaddr = Some(val),
            _ => {}
        }
        at += 16;
    }
    if needed_offsets.is_empty() {
        return Ok(info);
    }
    let strtab_vaddr = strtab_vaddr.ok_or_else(|| bad("DT_NEEDED without DT_STRTAB"))?;
    let strtab = phdrs
        .iter()
        .find(|p| p.kind == PT_LOAD && p.vaddr <= strtab_vaddr && strtab_vaddr < p.vaddr + p.filesz)
        .map(|p| strtab_vaddr - p.vaddr + p.offset)
        .ok_or_else(|| bad("string table outside every PT_LOAD segment"))?;
    for off in needed_offsets {
        info.needed
            .push(cstr(bytes, (strtab + off) as usize).ok_or_else(|| bad("bad DT_NEEDED name"))?);
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_real_dynamic_executable() {
        // /bin/sh on the build machine is a dynamically linked glibc executable.
        let bytes = std::fs::read("/bin/sh").unwrap();
        let info = dynamic_info(&bytes, "/bin/sh").unwrap();
        assert_eq!(
            info.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert!(
            info.needed.iter().any(|n| n == "libc.so.6"),
            "{:?}",
            info.needed
        );
    }

    #[rstest::rstest]
    #[case::empty(&b""[..])]
    #[case::text(&b"#!/bin/sh\necho hi\n"[..])]
    #[case::truncated(&b"\x7fELF\x02\x01\x01\x00"[..])]
    fn refuses_non_elf_input_without_panicking(#[case] bytes: &[u8]) {
        let err = dynamic_info(bytes, "X").unwrap_err().to_string();
        assert!(err.contains("X is not a usable"), "{err}");
    }
}
