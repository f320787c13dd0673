use super::*;

/// A hand-built ELF64 shared object with two PT_LOAD segments: code (R+X, one partial page)
/// and data (R+W) whose memsz exceeds filesz (bss), at a page-unaligned vaddr, followed in the
/// file by bytes beyond filesz that must not be measured.
pub(crate) fn synthetic_pal() -> Vec<u8> {
    let mut f = vec![0u8; 0x3000];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little-endian
    f[6] = 1;
    f[0x10..0x12].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
    f[0x12..0x14].copy_from_slice(&62u16.to_le_bytes()); // x86_64
    f[0x18..0x20].copy_from_slice(&0x40u64.to_le_bytes()); // e_entry
    f[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    f[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
    f[0x38..0x3a].copy_from_slice(&3u16.to_le_bytes());
    let ph = |f: &mut Vec<u8>,
              i: usize,
              kind: u32,
              flags: u32,
              off: u64,
              vaddr: u64,
              filesz: u64,
              memsz: u64| {
        let at = 64 + i * 56;
        f[at..at + 4].copy_from_slice(&kind.to_le_bytes());
        f[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
        f[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
        f[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
        f[at + 32..at + 40].copy_from_slice(&filesz.to_le_bytes());
        f[at + 40..at + 48].copy_from_slice(&memsz.to_le_bytes());
    };
    ph(&mut f, 0, 1, 5, 0x1000, 0, 0x800, 0x800); // text
    ph(&mut f, 1, 0x6474e551, 6, 0, 0, 0, 0); // GNU_STACK, ignored
    ph(&mut f, 2, 1, 6, 0x2010, 0x2010, 0x100, 0x2100); // data + bss over 3 pages
    for (i, b) in f.iter_mut().enumerate().skip(0x1000) {
        *b = (i % 251) as u8 + 1;
    }
    f
}

#[test]
fn ecreate_and_eadd_records_match_the_notes() {
    let mut m = Measurer::new();
    m.ecreate(0x1000_0000);
    m.eadd(0x0ffff000, 0x201);
    let expected_ecreate = hex::decode("45435245415445000400000000000010000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000").unwrap();
    assert_eq!(&m.buf[..64], expected_ecreate.as_slice());
    let expected_eadd = hex::decode("4541444400000000").unwrap();
    assert_eq!(&m.buf[64..72], expected_eadd.as_slice());
    assert_eq!(&m.buf[72..80], &0x0ffff000u64.to_le_bytes());
    assert_eq!(&m.buf[80..88], &0x201u64.to_le_bytes());
    assert!(m.buf[88..128].iter().all(|b| *b == 0));
}

#[test]
fn layout_of_the_notes_example() {
    let layout = Layout {
        enclave_size: 0x1000_0000,
        threads: 4,
        edmm: false,
    };
    let (_, segs) = crate::elf::load_segments(&synthetic_pal()).unwrap();
    let p = place(&layout, 100, &segs).unwrap();
    assert_eq!(p.manifest, 0x0ffff000);
    assert_eq!(p.ssa, 0x0ffdf000);
    assert_eq!(p.tcs, 0x0ffdb000);
    assert_eq!(p.tls, 0x0ffd7000);
    assert_eq!(p.stacks, [0x0ff97000, 0x0ff57000, 0x0ff17000, 0x0fed7000]);
    assert_eq!(
        p.sig_stacks,
        [0x0fec7000, 0x0feb7000, 0x0fea7000, 0x0fe97000]
    );
    // text 0x0..0x800, data+bss 0x2010..0x4110 → [0, 0x5000)
    assert_eq!(p.pal_size, 0x5000);
    assert_eq!(p.pal, 0x0fe97000 - 0x5000);
}

/// A second, naive implementation: materialise every page, then hash the record list.
fn naive(manifest: &[u8], pal: &[u8], layout: &Layout) -> [u8; 32] {
    let (entry, segs) = crate::elf::load_segments(pal).unwrap();
    let p = place(layout, manifest.len() as u64, &segs).unwrap();
    let n = layout.threads;
    let mut pages: Vec<(u64, u64, Option<Vec<u8>>)> = Vec::new();
    let mut area = |start: u64, data: Vec<u8>, flags: u64| {
        for (i, c) in data.chunks(4096).enumerate() {
            pages.push((start + 4096 * i as u64, flags, Some(c.to_vec())));
        }
    };
    let mut mf = manifest.to_vec();
    mf.push(0);
    mf.resize(mf.len().div_ceil(4096) * 4096, 0);
    area(p.manifest, mf, 0x201);
    area(p.ssa, vec![0; (n * 0x8000) as usize], 0x203);
    let mut tcs = vec![0u8; (n * 4096) as usize];
    let mut tls = vec![0u8; (n * 4096) as usize];
    for t in 0..n as usize {
        let ssa_t = p.ssa + 0x8000 * t as u64;
        let w = |v: &mut Vec<u8>, o: usize, x: u64| v[o..o + 8].copy_from_slice(&x.to_le_bytes());
        let b = t * 4096;
        w(&mut tcs, b + 0x10, ssa_t);
        tcs[b + 0x1c] = 2;
        w(&mut tcs, b + 0x20, p.pal + entry);
        w(&mut tcs, b + 0x38, p.tls + 4096 * t as u64);
        tcs[b + 0x40..b + 0x44].copy_from_slice(&[0xff, 0x0f, 0, 0]);
        tcs[b + 0x44..b + 0x48].copy_from_slice(&[0xff, 0x0f, 0, 0]);
        for (o, x) in [
            (0x0, p.tls + 4096 * t as u64),
            (0x8, 0xbadbadbadbad),
            (0x110, layout.enclave_size),
            (0x118, p.tcs + 4096 * t as u64),
            (0x120, p.stacks[t] + 0x40000),
            (0x130, p.sig_stacks[t]),
            (0x138, p.sig_stacks[t] + 0x10000),
            (0x148, ssa_t),
            (0x150, ssa_t + 0x4000 - 0xb8),
            (0x1a0, manifest.len() as u64 + 1),
            (0x1a8, 0x10000),
            (0x1b0, p.pal),
        ] {
            w(&mut tls, b + o, x);
        }
    }
    area(p.tcs, tcs, 0x100);
    area(p.tls, tls, 0x203);
    for s in &p.stacks {
        area(*s, vec![0; 0x40000], 0x203);
    }
    for s in &p.sig_stacks {
        area(*s, vec![0; 0x10000], 0x203);
    }
    for s in &segs {
        let lo = s.vaddr / 4096 * 4096;
        let hi = (s.vaddr + s.memsz).div_ceil(4096) * 4096;
        let mut mem = vec![0u8; (hi - lo) as usize];
        let at = (s.vaddr - lo) as usize;
        mem[at..at + s.filesz as usize]
            .copy_from_slice(&pal[s.offset as usize..(s.offset + s.filesz) as usize]);
        let flags = 0x200 | [0, 4, 2, 6, 1, 5, 3, 7][s.flags as usize & 7] as u64;
        area(p.pal + lo, mem, flags);
    }
    if !layout.edmm {
        let mut a = 0x10000;
        while a < p.pal {
            pages.push((a, 0x207, None));
            a += 4096;
        }
    }
    let mut h = Sha256::new();
    let mut rec = [0u8; 64];
    rec[..8].copy_from_slice(b"ECREATE\0");
    rec[8] = 4;
    rec[12..20].copy_from_slice(&layout.enclave_size.to_le_bytes());
    h.update(rec);
    for (off, flags, data) in pages {
        let mut rec = [0u8; 64];
        rec[..4].copy_from_slice(b"EADD");
        rec[8..16].copy_from_slice(&off.to_le_bytes());
        rec[16..24].copy_from_slice(&flags.to_le_bytes());
        h.update(rec);
        if let Some(d) = data {
            for i in 0..16 {
                let mut rec = [0u8; 64];
                rec[..7].copy_from_slice(b"EEXTEND");
                rec[8..16].copy_from_slice(&(off + 256 * i as u64).to_le_bytes());
                h.update(rec);
                h.update(&d[256 * i..256 * (i + 1)]);
            }
        }
    }
    h.finalize().into()
}

#[rstest::rstest]
#[case::one_thread_4m(0x40_0000, 1, false, 10)]
#[case::two_threads_8m_edmm(0x80_0000, 2, true, 5000)]
#[case::four_threads_16m_multi_page_manifest(0x100_0000, 4, false, 9000)]
fn fast_measurement_equals_the_naive_one(
    #[case] size: u64,
    #[case] threads: u64,
    #[case] edmm: bool,
    #[case] mlen: usize,
) {
    let manifest: Vec<u8> = (0..mlen).map(|i| b'a' + (i % 26) as u8).collect();
    let layout = Layout {
        enclave_size: size,
        threads,
        edmm,
    };
    let pal = synthetic_pal();
    assert_eq!(
        mrenclave(&manifest, &pal, &layout).unwrap(),
        naive(&manifest, &pal, &layout)
    );
}

#[test]
fn every_input_moves_the_measurement() {
    let pal = synthetic_pal();
    let base = Layout {
        enclave_size: 0x40_0000,
        threads: 1,
        edmm: false,
    };
    let m0 = mrenclave(b"a = 1\n", &pal, &base).unwrap();
    assert_ne!(
        m0,
        mrenclave(b"a = 2\n", &pal, &base).unwrap(),
        "manifest byte"
    );
    assert_ne!(
        m0,
        mrenclave(b"a = 1\n", &pal, &Layout { edmm: true, ..base }).unwrap(),
        "edmm"
    );
    assert_ne!(
        m0,
        mrenclave(
            b"a = 1\n",
            &pal,
            &Layout {
                enclave_size: 0x80_0000,
                ..base
            }
        )
        .unwrap(),
        "size"
    );
    let mut pal2 = pal.clone();
    pal2[0x1100] ^= 1;
    assert_ne!(
        m0,
        mrenclave(b"a = 1\n", &pal2, &base).unwrap(),
        "pal text byte"
    );
    let mut pal3 = pal.clone();
    pal3[0x2200] ^= 1; // beyond the data segment's filesz: not measured
    assert_eq!(
        m0,
        mrenclave(b"a = 1\n", &pal3, &base).unwrap(),
        "bytes after filesz"
    );
}

#[rstest::rstest]
#[case::too_small(0x10_0000, 4, "too small")]
#[case::not_power_of_two(0x30_0000, 1, "power of two")]
#[case::zero_threads(0x40_0000, 0, "1..=4096")]
#[case::too_many_threads(0x40_0000, 4097, "1..=4096")]
#[case::beyond_1_tib(1 << 41, 4, "exceeds 1024G")]
#[case::beyond_any_machine(1 << 62, 4, "exceeds 1024G")]
fn bad_layouts_are_refused(#[case] size: u64, #[case] threads: u64, #[case] msg: &str) {
    let err = mrenclave(
        b"x",
        &synthetic_pal(),
        &Layout {
            enclave_size: size,
            threads,
            edmm: false,
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains(msg), "{err}");
}

#[test]
fn manifest_with_nul_is_refused() {
    let err = mrenclave(
        b"a\0b",
        &synthetic_pal(),
        &Layout {
            enclave_size: 0x40_0000,
            threads: 1,
            edmm: false,
        },
    );
    assert!(err.unwrap_err().to_string().contains("NUL"));
}

#[test]
fn manifests_name_at_most_1024g() {
    use crate::manifest::{enclave_size, read};
    assert_eq!(enclave_size("1024G").unwrap(), 1 << 40);
    let err = enclave_size("2048G").unwrap_err().to_string();
    assert!(err.contains("exceeds 1024G"), "{err}");
    let huge = format!("[sgx]\nenclave_size = \"{:#x}\"\n", 1u64 << 62);
    let err = read(huge.as_bytes(), "app.manifest.sgx")
        .unwrap_err()
        .to_string();
    assert!(err.contains("exceeds 1024G"), "{err}");
}

#[test]
fn a_pal_that_is_not_position_independent_is_refused() {
    // The synthetic PAL moved up by 4 MiB: Gramine would place it at 0x400000, not top-down.
    let mut pal = synthetic_pal();
    for i in [0, 2] {
        let at = 64 + i * 56 + 16;
        let vaddr = u64::from_le_bytes(pal[at..at + 8].try_into().unwrap());
        pal[at..at + 8].copy_from_slice(&(vaddr + 0x40_0000).to_le_bytes());
    }
    let err = mrenclave(
        b"x",
        &pal,
        &Layout {
            enclave_size: 0x1000_0000,
            threads: 1,
            edmm: false,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("lowest PT_LOAD segment is at 0x400000")
            && err.contains("position-independent"),
        "{err}"
    );
}
