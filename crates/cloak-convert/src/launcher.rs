//! The launcher binary shipped into converted images. It runs with nothing but the image's own
//! files around it (and as PID 1 of a Nitro enclave, before any library exists), so it must be
//! a statically linked x86-64 executable: a dynamically linked one makes the kernel panic with
//! "Failed to execute /init" at boot, long after the conversion said it succeeded.

use std::path::{Path, PathBuf};

use cloak_sgx::elf::{dynamic_info, machine, EM_AARCH64, EM_X86_64};

use crate::error::{Error, Result};

/// What to do to get a usable launcher (every refusal ends with it).
pub const HINT: &str = "install cloak with `bash scripts/install.sh [PREFIX]` (it puts a static launcher \
in PREFIX/lib/cloak/, where cloak looks), or build one with `bash scripts/build-launcher.sh` and pass \
--launcher target/x86_64-unknown-linux-gnu/release/cloak-launcher";

/// Refuse a launcher that is unreadable, not an ELF executable, built for another architecture
/// than x86-64, or dynamically linked (`PT_INTERP`, or `DT_NEEDED` libraries).
pub fn check(path: &Path) -> Result<()> {
    let bad =
        |why: String| Error::Options(format!("the launcher {} {why}; {HINT}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot be read ({e})")))?;
    check_bytes(&bytes).map_err(bad)
}

fn check_bytes(bytes: &[u8]) -> std::result::Result<(), String> {
    let what = "the launcher";
    let arch = machine(bytes, what).map_err(|e| format!("is not a usable ELF executable ({e})"))?;
    if arch != EM_X86_64 {
        let name = match arch {
            EM_AARCH64 => "arm64 (aarch64)".to_string(),
            other => format!("ELF machine {other}"),
        };
        return Err(format!(
            "is built for {name}; converted images are linux/amd64 and need an x86-64 launcher"
        ));
    }
    let info = dynamic_info(bytes, what).map_err(|e| format!("cannot be read as ELF ({e})"))?;
    if info.interpreter.is_some() || !info.needed.is_empty() {
        let mut parts = Vec::new();
        if let Some(i) = &info.interpreter {
            parts.push(format!("program interpreter {i}"));
        }
        if !info.needed.is_empty() {
            parts.push(format!("needs {}", info.needed.join(", ")));
        }
        return Err(format!(
            "is dynamically linked ({}), so it cannot run inside an image that lacks those \
             libraries, nor as a Nitro enclave's /init (a plain `cargo build` produces such a \
             launcher)",
            parts.join("; ")
        ));
    }
    Ok(())
}

/// Where the static launcher is when `--launcher` is not given: the first of these that is a
/// static x86-64 executable (see [`check`]):
/// `PREFIX/lib/cloak/cloak-launcher` for `PREFIX/bin/cloak` (what `scripts/install.sh`
/// installs), the workspace's static build (`scripts/build-launcher.sh`), and `cloak-launcher`
/// beside the executable. When none qualifies, the first that exists is returned, so that
/// the conversion refuses it with the reason and the install hint (a plain `cargo build` leaves
/// a dynamically linked launcher beside `cloak`).
pub fn default_path() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let dir = exe.as_ref().and_then(|e| e.parent());
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(prefix) = dir.and_then(|d| d.parent()) {
        candidates.push(prefix.join("lib/cloak/cloak-launcher"));
    }
    if let Some(t) = exe.as_ref().and_then(|e| {
        e.ancestors()
            .find(|a| a.join("x86_64-unknown-linux-gnu").is_dir())
    }) {
        candidates.push(t.join("x86_64-unknown-linux-gnu/release/cloak-launcher"));
    }
    // Last: in a cargo target dir this is the dynamically linked debug build (tens of MiB that
    // `check` would read only to refuse).
    if let Some(d) = dir {
        candidates.push(d.join("cloak-launcher"));
    }
    candidates
        .iter()
        .find(|p| check(p).is_ok())
        .or_else(|| candidates.iter().find(|p| p.exists()))
        .or(candidates.first())
        .cloned()
        .unwrap_or_else(|| PathBuf::from("cloak-launcher"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 header with one program header of type `ptype` (no DT_NEEDED).
    fn elf(machine: u16, ptype: Option<u32>) -> Vec<u8> {
        let mut b = vec![0u8; 0x40 + 56 + 32];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // 64-bit
        b[5] = 1; // little-endian
        b[0x10] = 2; // ET_EXEC
        b[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        if let Some(t) = ptype {
            b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
            b[0x40..0x44].copy_from_slice(&t.to_le_bytes());
            // PT_INTERP: the name right after the program header
            let name_at = (0x40 + 56) as u64;
            b[0x48..0x50].copy_from_slice(&name_at.to_le_bytes());
            b[0x60..0x68].copy_from_slice(&20u64.to_le_bytes());
            b[0x40 + 56..0x40 + 56 + 19].copy_from_slice(b"/lib/ld-musl-x86_64");
        }
        b
    }

    #[test]
    fn a_dynamically_linked_host_executable_is_refused_with_the_hint() {
        // /bin/sh of the build machine is a dynamically linked glibc executable.
        let err = check(Path::new("/bin/sh")).unwrap_err().to_string();
        assert!(err.contains("is dynamically linked"), "{err}");
        assert!(err.contains("libc.so.6"), "{err}");
        assert!(err.contains("scripts/install.sh"), "{err}");
    }

    #[test]
    fn architecture_interpreter_and_garbage_are_named() {
        assert_eq!(check_bytes(&elf(EM_X86_64, None)), Ok(()));
        let arm = check_bytes(&elf(EM_AARCH64, None)).unwrap_err();
        assert!(arm.contains("arm64"), "{arm}");
        let interp = check_bytes(&elf(EM_X86_64, Some(3))).unwrap_err();
        assert!(
            interp.contains("program interpreter /lib/ld-musl-x86_64"),
            "{interp}"
        );
        let garbage = check_bytes(b"#!/bin/sh\necho hi\n").unwrap_err();
        assert!(garbage.contains("not a usable ELF"), "{garbage}");
        let missing = check(Path::new("/nonexistent/cloak-launcher"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("cannot be read"), "{missing}");
    }

    #[test]
    fn the_static_build_passes_when_it_was_built() {
        // scripts/build-launcher.sh puts it there (scripts/test.sh runs it first).
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/x86_64-unknown-linux-gnu/release/cloak-launcher");
        assert!(
            p.exists(),
            "{} is missing: run scripts/build-launcher.sh",
            p.display()
        );
        check(&p).unwrap();
    }
}
