//! Known answers from Gramine's own signer (`gramine-sgx-sign`, see tests/vectors/gramine/README.md):
//! cloak must reproduce every MRENCLAVE and every byte of every SIGSTRUCT from the same
//! `.manifest.sgx`, PAL, key and date.

use std::path::{Path, PathBuf};

use cloak_sgx::key::FileSigner;
use cloak_sgx::{elf, measure_and_sign, sigstruct};
use sha2::{Digest, Sha256};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/gramine")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One line of expected.txt: case name, PAL, MRENCLAVE Gramine printed, SHA-256 of its .sig.
struct Case {
    name: String,
    pal: String,
    mrenclave: String,
    sig_sha256: String,
}

fn cases() -> Vec<Case> {
    let text = String::from_utf8(read(&dir().join("expected.txt"))).unwrap();
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let [name, pal, mrenclave, sig_sha256] = fields.as_slice() else {
                panic!("bad line in expected.txt: {line:?}");
            };
            Case {
                name: name.to_string(),
                pal: pal.to_string(),
                mrenclave: mrenclave.to_string(),
                sig_sha256: sig_sha256.to_string(),
            }
        })
        .collect()
}

fn signing_date() -> (u16, u8, u8) {
    let text = String::from_utf8(read(&dir().join("GRAMINE_VERSION.toml"))).unwrap();
    let table: toml::Table = text.parse().unwrap();
    sigstruct::parse_date(table["date"].as_str().unwrap()).unwrap()
}

/// Every case Gramine signed is listed, and the list covers what the vectors claim to cover.
#[test]
fn the_vectors_cover_large_many_threads_edmm_and_every_manifest() {
    let names: Vec<String> = cases().into_iter().map(|c| c.name).collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(dir().join("cases"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".manifest.sgx").map(str::to_string)
        })
        .collect();
    on_disk.sort();
    let mut listed = names.clone();
    listed.sort();
    assert_eq!(
        listed, on_disk,
        "expected.txt and cases/*.manifest.sgx differ"
    );
    for want in [
        "default",
        "default-edmm",
        "large",
        "large-edmm",
        "threads",
        "threads-edmm",
        "attributes",
        "attributes-edmm",
        "skewed-pal",
    ] {
        assert!(names.iter().any(|n| n == want), "no case {want}");
    }
    for c in cases() {
        let manifest = read(&dir().join(format!("cases/{}.manifest.sgx", c.name)));
        let m = cloak_sgx::manifest::read(&manifest, &c.name).unwrap();
        assert_eq!(m.edmm, c.name.ends_with("-edmm"), "{}", c.name);
        if c.name.starts_with("large") {
            assert_eq!(m.enclave_size, 64 << 30, "{}", c.name);
        }
        if c.name.starts_with("threads") {
            assert_eq!(m.threads, 1024, "{}", c.name);
        }
    }
}

/// The PAL is a real multi-segment ELF: several PT_LOAD segments with different permissions, a
/// hole between two of them, bss over more than one page, and a page-unaligned segment start.
#[test]
fn the_pal_is_a_multi_segment_elf_with_a_hole_and_bss() {
    let (_, segs) = elf::load_segments(&read(&dir().join("pal.so"))).unwrap();
    assert!(segs.len() >= 4, "{} PT_LOAD segments", segs.len());
    assert_eq!(segs[0].vaddr, 0, "position-independent");
    let flags: std::collections::BTreeSet<u32> = segs.iter().map(|s| s.flags).collect();
    assert!(flags.len() >= 3, "permissions {flags:?}");
    let page = |x: u64| x / 4096;
    assert!(
        segs.windows(2)
            .any(|w| page(w[1].vaddr) > page(w[0].vaddr + w[0].memsz - 1) + 1),
        "no page between two segments is left out"
    );
    assert!(
        segs.iter()
            .any(|s| page(s.vaddr + s.memsz - 1) > page(s.vaddr + s.filesz)),
        "no bss beyond the page of the last file byte"
    );
    assert!(
        segs.iter().any(|s| s.vaddr % 4096 != 0),
        "all segments page-aligned"
    );

    // pal-skewed.so: the same file with one segment's offset no longer congruent with its vaddr
    // modulo the page size, where Gramine's page-wise mapping differs from "file bytes at vaddr".
    let (_, skewed) = elf::load_segments(&read(&dir().join("pal-skewed.so"))).unwrap();
    assert!(skewed.iter().any(|s| s.offset % 4096 != s.vaddr % 4096));
}

#[test]
fn mrenclave_and_sigstruct_match_gramine_byte_for_byte() {
    let dir = dir();
    let signer = FileSigner::from_pem_file(&dir.join("signing-key.pem")).unwrap();
    let date = signing_date();
    let cases = cases();
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for c in &cases {
        let manifest = read(&dir.join(format!("cases/{}.manifest.sgx", c.name)));
        let gramine_sig = read(&dir.join(format!("cases/{}.sig", c.name)));
        let pal = read(&dir.join(&c.pal));
        assert_eq!(
            hex::encode(Sha256::digest(&gramine_sig)),
            c.sig_sha256,
            "{}: the .sig and expected.txt disagree (regenerate the vectors)",
            c.name
        );
        assert_eq!(
            hex::encode(&gramine_sig[0x3c0..0x3e0]),
            c.mrenclave,
            "{}: the .sig and expected.txt disagree (regenerate the vectors)",
            c.name
        );
        let signed = measure_and_sign(&manifest, &pal, &signer, date).unwrap();
        if hex::encode(signed.mrenclave) != c.mrenclave {
            failures.push(format!(
                "{}: MRENCLAVE {} (Gramine {})",
                c.name,
                hex::encode(signed.mrenclave),
                c.mrenclave
            ));
        } else if signed.sigstruct[..] != gramine_sig[..] {
            let at = (0..sigstruct::SIZE)
                .find(|&i| signed.sigstruct[i] != gramine_sig[i])
                .unwrap();
            failures.push(format!(
                "{}: SIGSTRUCT differs first at byte {at:#x} (cloak {:#04x}, Gramine {:#04x})",
                c.name, signed.sigstruct[at], gramine_sig[at]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
