//! Two SHA-384 computations in one pass over the same bytes, for PCR0 and PCR2.
//!
//! An EIF's application ramdisk is hashed twice: PCR0's running hash (which has already seen
//! the kernel, the command line and the bootstrap ramdisk) and PCR2's (which starts at the
//! ramdisk). SHA-512 is a chain of dependent 64-bit operations, so one stream leaves most of
//! a core idle; with AVX-512VL the two streams run side by side in the two 64-bit lanes of an
//! XMM register (rotates and three-input boolean functions are single instructions there).
//! Each lane keeps its own block alignment, so the streams may have seen different prefixes.
//!
//! [`engine`] decides once per process whether the PCRs use it: only on a CPU with AVX-512F and
//! AVX-512VL ([`supported`]), without `CLOAK_NO_AVX512` set, and after a known-answer self-test
//! against ring's SHA-384 ([`self_test`]); otherwise, or if the self-test fails (with a warning),
//! callers use two independent ring hashes. The arithmetic is FIPS 180-4 §6.4 with the SHA-384
//! initial value (§5.3.4).

use std::sync::OnceLock;

/// SHA-384's initial hash value.
const IV: [u64; 8] = [
    0xcbbb9d5dc1059ed8,
    0x629a292a367cd507,
    0x9159015a3070dd17,
    0x152fecd8f70e5939,
    0x67332667ffc00b31,
    0x8eb44a8768581511,
    0xdb0c2e0d64f98fa7,
    0x47b5481dbefa4fa4,
];

const K: [u64; 80] = [
    0x428a2f98d728ae22,
    0x7137449123ef65cd,
    0xb5c0fbcfec4d3b2f,
    0xe9b5dba58189dbbc,
    0x3956c25bf348b538,
    0x59f111f1b605d019,
    0x923f82a4af194f9b,
    0xab1c5ed5da6d8118,
    0xd807aa98a3030242,
    0x12835b0145706fbe,
    0x243185be4ee4b28c,
    0x550c7dc3d5ffb4e2,
    0x72be5d74f27b896f,
    0x80deb1fe3b1696b1,
    0x9bdc06a725c71235,
    0xc19bf174cf692694,
    0xe49b69c19ef14ad2,
    0xefbe4786384f25e3,
    0x0fc19dc68b8cd5b5,
    0x240ca1cc77ac9c65,
    0x2de92c6f592b0275,
    0x4a7484aa6ea6e483,
    0x5cb0a9dcbd41fbd4,
    0x76f988da831153b5,
    0x983e5152ee66dfab,
    0xa831c66d2db43210,
    0xb00327c898fb213f,
    0xbf597fc7beef0ee4,
    0xc6e00bf33da88fc2,
    0xd5a79147930aa725,
    0x06ca6351e003826f,
    0x142929670a0e6e70,
    0x27b70a8546d22ffc,
    0x2e1b21385c26c926,
    0x4d2c6dfc5ac42aed,
    0x53380d139d95b3df,
    0x650a73548baf63de,
    0x766a0abb3c77b2a8,
    0x81c2c92e47edaee6,
    0x92722c851482353b,
    0xa2bfe8a14cf10364,
    0xa81a664bbc423001,
    0xc24b8b70d0f89791,
    0xc76c51a30654be30,
    0xd192e819d6ef5218,
    0xd69906245565a910,
    0xf40e35855771202a,
    0x106aa07032bbd1b8,
    0x19a4c116b8d2d0c8,
    0x1e376c085141ab53,
    0x2748774cdf8eeb99,
    0x34b0bcb5e19b48a8,
    0x391c0cb3c5c95a63,
    0x4ed8aa4ae3418acb,
    0x5b9cca4f7763e373,
    0x682e6ff3d6b2b8a3,
    0x748f82ee5defb2fc,
    0x78a5636f43172f60,
    0x84c87814a1f0ab72,
    0x8cc702081a6439ec,
    0x90befffa23631e28,
    0xa4506cebde82bde9,
    0xbef9a3f7b2c67915,
    0xc67178f2e372532b,
    0xca273eceea26619c,
    0xd186b8c721c0c207,
    0xeada7dd6cde0eb1e,
    0xf57d4f7fee6ed178,
    0x06f067aa72176fba,
    0x0a637dc5a2c898a6,
    0x113f9804bef90dae,
    0x1b710b35131c471b,
    0x28db77f523047d84,
    0x32caab7b40c72493,
    0x3c9ebe0a15c9bebc,
    0x431d67c49c100d4c,
    0x4cc5d4becb3e42b6,
    0x597f299cfc657e2a,
    0x5fcb6fab3ad6faec,
    0x6c44198c4a475817,
];

/// Whether this CPU runs two SHA-384 lanes at once (AVX-512F with VL).
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The engine that hashes PCR0 and PCR2 of an application ramdisk side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Both hashes in the two 64-bit lanes of AVX-512VL registers, on one thread.
    Lanes,
    /// ring's SHA-384 on two threads.
    Threads,
}

/// The engine chosen and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The engine.
    pub engine: Engine,
    /// Why it was chosen, for reports and warnings.
    pub reason: String,
}

/// Choose the engine from the facts: whether the CPU `has_avx512vl`, whether the user `opted_out`
/// (`CLOAK_NO_AVX512`), and, only when the lanes could be used, their `self_test`. A failed
/// self-test logs a warning and chooses ring. Pure apart from the warning, so tests can call it
/// with any facts on any CPU.
pub fn choose(
    has_avx512vl: bool,
    opted_out: bool,
    self_test: impl FnOnce() -> Result<(), String>,
) -> Choice {
    let choice = |engine, reason: &str| Choice {
        engine,
        reason: reason.to_string(),
    };
    if !has_avx512vl {
        return choice(Engine::Threads, "this CPU has no AVX-512F with AVX-512VL");
    }
    if opted_out {
        return choice(Engine::Threads, "CLOAK_NO_AVX512 is set");
    }
    match self_test() {
        Ok(()) => choice(Engine::Lanes, "AVX-512VL, known-answer self-test passed"),
        Err(e) => {
            let reason = format!(
                "the two-lane SHA-384 failed its known-answer self-test ({e}); \
                 the PCRs are computed with ring's SHA-384 instead"
            );
            tracing::warn!("{reason}");
            Choice {
                engine: Engine::Threads,
                reason,
            }
        }
    }
}

/// The engine of this process, chosen at its first use (see [`choose`]).
pub fn engine() -> &'static Choice {
    static CHOICE: OnceLock<Choice> = OnceLock::new();
    CHOICE.get_or_init(|| {
        choose(
            supported(),
            std::env::var_os("CLOAK_NO_AVX512").is_some(),
            || self_test(&lanes),
        )
    })
}

/// A two-lane hash under test: `(SHA-384(prefix ‖ shared), SHA-384(shared))`, with `shared` fed
/// to both lanes at once in pieces of `chunk` bytes.
pub type TwoLaneHash<'a> = &'a dyn Fn(&[u8], &[u8], usize) -> ([u8; 48], [u8; 48]);

/// The AVX-512VL engine as a [`TwoLaneHash`] (AVX-512VL required: check [`supported`] first).
pub fn lanes(prefix: &[u8], shared: &[u8], chunk: usize) -> ([u8; 48], [u8; 48]) {
    let mut a = Lane::default();
    update1(&mut a, prefix);
    let mut b = Lane::default();
    for c in shared.chunks(chunk.max(1)) {
        update2(&mut a, &mut b, c);
    }
    (finish(a), finish(b))
}

/// Known answers for `hash` from ring's SHA-384: lane offsets around the block and padding
/// boundaries (0, 1, 111, 112, 127, 128, 129 bytes of prefix), several lengths and chunkings.
pub fn self_test(hash: TwoLaneHash) -> Result<(), String> {
    let bytes: Vec<u8> = (0..1200u32).map(|i| (i * 31 + 7) as u8).collect();
    let ring = |parts: &[&[u8]]| {
        let mut c = ring::digest::Context::new(&ring::digest::SHA384);
        for p in parts {
            c.update(p);
        }
        c.finish()
    };
    for prefix_len in [0, 1, 111, 112, 127, 128, 129] {
        for (shared_len, chunk) in [(0, 1), (3, 1), (300, 7), (1000, 128), (1071, 1000)] {
            let prefix = &bytes[..prefix_len];
            let shared = &bytes[100..100 + shared_len];
            let (a, b) = hash(prefix, shared, chunk);
            if a[..] != *ring(&[prefix, shared]).as_ref() || b[..] != *ring(&[shared]).as_ref() {
                return Err(format!(
                    "prefix of {prefix_len} bytes, {shared_len} bytes in pieces of {chunk}"
                ));
            }
        }
    }
    Ok(())
}

/// Whether the compression function can run: AVX-512VL, or the unit tests' scalar kernel.
fn usable() -> bool {
    #[cfg(test)]
    if tests::SCALAR.with(std::cell::Cell::get) {
        return true;
    }
    supported()
}

/// One running SHA-384.
#[derive(Clone)]
pub struct Lane {
    state: [u64; 8],
    buf: [u8; 128],
    buffered: usize,
    len: u128,
}

impl Default for Lane {
    fn default() -> Self {
        Lane {
            state: IV,
            buf: [0; 128],
            buffered: 0,
            len: 0,
        }
    }
}

impl Lane {
    /// Take `data` into the lane: returns the block completed from the buffer (if any), the
    /// whole blocks of `data` after it, and leaves the tail in the buffer.
    fn split<'d>(&mut self, data: &'d [u8]) -> (Option<[u8; 128]>, &'d [u8]) {
        self.len += data.len() as u128;
        let mut rest = data;
        let mut first = None;
        if self.buffered > 0 {
            let take = (128 - self.buffered).min(rest.len());
            self.buf[self.buffered..self.buffered + take].copy_from_slice(&rest[..take]);
            self.buffered += take;
            rest = &rest[take..];
            if self.buffered < 128 {
                return (None, &[]);
            }
            first = Some(self.buf);
            self.buffered = 0;
        }
        let whole = rest.len() / 128 * 128;
        let tail = &rest[whole..];
        self.buf[..tail.len()].copy_from_slice(tail);
        self.buffered = tail.len();
        (first, &rest[..whole])
    }

    /// The padded final block(s) of this lane.
    fn padding(&self) -> Vec<u8> {
        let mut last = self.buf[..self.buffered].to_vec();
        last.push(0x80);
        while last.len() % 128 != 112 {
            last.push(0);
        }
        last.extend_from_slice(&(self.len * 8).to_be_bytes());
        last
    }
}

/// Feed the same bytes to two lanes (AVX-512VL required: check [`supported`] first).
pub fn update2(a: &mut Lane, b: &mut Lane, data: &[u8]) {
    assert!(usable(), "sha384x2::update2 needs AVX-512VL");
    let (fa, wa) = a.split(data);
    let (fb, wb) = b.split(data);
    let mut ia = Blocks {
        first: fa,
        whole: wa,
    };
    let mut ib = Blocks {
        first: fb,
        whole: wb,
    };
    while ia.remaining() > 0 && ib.remaining() > 0 {
        // Runs of whole blocks go through in one call, a buffer block as a pair of one.
        let n = if ia.first.is_some() || ib.first.is_some() {
            1
        } else {
            ia.whole.len().min(ib.whole.len()) / 128
        };
        let (xa, xb) = (ia.take(n), ib.take(n));
        compress2(&mut a.state, &xa, &mut b.state, &xb);
    }
    // Both lanes took the same bytes, so at most one has one block left.
    for (lane, mut it) in [(a, ia), (b, ib)] {
        while it.remaining() > 0 {
            let x = it.take(1);
            compress1(&mut lane.state, &x);
        }
    }
}

/// Feed bytes to one lane.
pub fn update1(a: &mut Lane, data: &[u8]) {
    assert!(usable(), "sha384x2::update1 needs AVX-512VL");
    let (fa, wa) = a.split(data);
    if let Some(first) = fa {
        compress1(&mut a.state, &first);
    }
    if !wa.is_empty() {
        compress1(&mut a.state, wa);
    }
}

/// The digest of a lane.
pub fn finish(mut a: Lane) -> [u8; 48] {
    assert!(usable(), "sha384x2::finish needs AVX-512VL");
    let pad = a.padding();
    compress1(&mut a.state, &pad);
    let mut out = [0u8; 48];
    for (i, w) in a.state[..6].iter().enumerate() {
        out[8 * i..8 * i + 8].copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// A lane's blocks: an optional copied buffer block, then a run of whole blocks in the data.
struct Blocks<'d> {
    first: Option<[u8; 128]>,
    whole: &'d [u8],
}

impl<'d> Blocks<'d> {
    fn remaining(&self) -> usize {
        usize::from(self.first.is_some()) + self.whole.len() / 128
    }
    /// Hand out `n` blocks (just the buffer block when it comes first).
    fn take(&mut self, n: usize) -> std::borrow::Cow<'d, [u8]> {
        if let Some(f) = self.first.take() {
            return std::borrow::Cow::Owned(f.to_vec());
        }
        let (x, rest) = self.whole.split_at(128 * n);
        self.whole = rest;
        std::borrow::Cow::Borrowed(x)
    }
}

/// One lane alone (the second lane computes on a copy and is thrown away).
fn compress1(state: &mut [u64; 8], blocks: &[u8]) {
    let mut dummy = IV;
    compress2(state, blocks, &mut dummy, blocks);
}

/// Run the compression function over equally many blocks in each lane.
fn compress2(sa: &mut [u64; 8], ba: &[u8], sb: &mut [u64; 8], bb: &[u8]) {
    assert_eq!(ba.len(), bb.len());
    assert_eq!(ba.len() % 128, 0);
    #[cfg(test)]
    if tests::SCALAR.with(std::cell::Cell::get) {
        tests::scalar_compress(sa, ba);
        tests::scalar_compress(sb, bb);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: callers checked `supported()` (AVX-512F and AVX-512VL); the slices are whole
    // blocks of equal length (asserted above).
    unsafe {
        x86::compress2(sa, ba, sb, bb)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (sa, ba, sb, bb);
        unreachable!("supported() is false off x86_64")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::K;

    #[inline]
    #[target_feature(enable = "avx512f,avx512vl")]
    fn xor3(a: __m128i, b: __m128i, c: __m128i) -> __m128i {
        _mm_ternarylogic_epi64::<0x96>(a, b, c)
    }

    /// Words `2k` and `2k+1` of both lanes' blocks (big-endian) as two registers.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl")]
    fn words(a: &[u8], b: &[u8], k: usize) -> (__m128i, __m128i) {
        let swap = _mm_set_epi8(8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
        let ra: &[u8; 16] = a[16 * k..16 * k + 16].try_into().unwrap();
        let rb: &[u8; 16] = b[16 * k..16 * k + 16].try_into().unwrap();
        // SAFETY: both references are 16 readable bytes; loadu has no alignment requirement.
        let (va, vb) = unsafe {
            (
                _mm_loadu_si128(ra.as_ptr().cast()),
                _mm_loadu_si128(rb.as_ptr().cast()),
            )
        };
        let va = _mm_shuffle_epi8(va, swap);
        let vb = _mm_shuffle_epi8(vb, swap);
        (_mm_unpacklo_epi64(va, vb), _mm_unpackhi_epi64(va, vb))
    }

    /// `v` unchanged, but opaque to the optimiser: keeps it from reassociating a round's
    /// additions, which would put the message word and constant on the critical path.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl")]
    fn opaque(mut v: __m128i) -> __m128i {
        // SAFETY: an empty instruction sequence; it only pins `v` in a register.
        unsafe {
            std::arch::asm!("/* {0:x} */", inout(zmm_reg) v, options(pure, nomem, nostack, preserves_flags));
        }
        v
    }

    /// One round; the caller rotates the names instead of moving registers. The chain from
    /// `e` to the next `e` (and `a`) is four operations: Σ1/Ch, two additions, then `d +`.
    macro_rules! round {
        ($a:expr, $b:expr, $c:expr, $d:expr, $e:expr, $f:expr, $g:expr, $h:expr, $kw:expr) => {
            let hk = opaque(_mm_add_epi64($h, $kw));
            let s1 = xor3(
                _mm_ror_epi64::<14>($e),
                _mm_ror_epi64::<18>($e),
                _mm_ror_epi64::<41>($e),
            );
            let ch = _mm_ternarylogic_epi64::<0xCA>($e, $f, $g);
            let t1 = _mm_add_epi64(opaque(_mm_add_epi64(hk, ch)), s1);
            let s0 = xor3(
                _mm_ror_epi64::<28>($a),
                _mm_ror_epi64::<34>($a),
                _mm_ror_epi64::<39>($a),
            );
            let maj = _mm_ternarylogic_epi64::<0xE8>($a, $b, $c);
            $d = _mm_add_epi64($d, t1);
            $h = _mm_add_epi64(t1, opaque(_mm_add_epi64(s0, maj)));
        };
    }

    #[target_feature(enable = "avx512f,avx512vl")]
    pub(super) fn compress2(sa: &mut [u64; 8], ba: &[u8], sb: &mut [u64; 8], bb: &[u8]) {
        let mut state = [_mm_setzero_si128(); 8];
        for i in 0..8 {
            state[i] = _mm_set_epi64x(sb[i] as i64, sa[i] as i64);
        }
        for (xa, xb) in ba.chunks_exact(128).zip(bb.chunks_exact(128)) {
            // The whole message schedule first, constants added: the rounds then only load.
            let mut w = [_mm_setzero_si128(); 80];
            for k in 0..8 {
                (w[2 * k], w[2 * k + 1]) = words(xa, xb, k);
            }
            // w[t-2] and w[t-1] stay in registers: reloading the word just stored would put
            // store-to-load forwarding on the schedule's critical path.
            let (mut w2, mut w1) = (w[14], w[15]);
            for t in 16..80 {
                let w15 = w[t - 15];
                let s0 = xor3(
                    _mm_ror_epi64::<1>(w15),
                    _mm_ror_epi64::<8>(w15),
                    _mm_srli_epi64::<7>(w15),
                );
                let s1 = xor3(
                    _mm_ror_epi64::<19>(w2),
                    _mm_ror_epi64::<61>(w2),
                    _mm_srli_epi64::<6>(w2),
                );
                let new = _mm_add_epi64(_mm_add_epi64(w[t - 16], s0), _mm_add_epi64(w[t - 7], s1));
                w[t] = new;
                (w2, w1) = (w1, new);
            }
            for (t, slot) in w.iter_mut().enumerate() {
                *slot = _mm_add_epi64(*slot, _mm_set1_epi64x(K[t] as i64));
            }
            let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = state;
            for kw in w.chunks_exact(8) {
                round!(a, b, c, d, e, f, g, h, kw[0]);
                round!(h, a, b, c, d, e, f, g, kw[1]);
                round!(g, h, a, b, c, d, e, f, kw[2]);
                round!(f, g, h, a, b, c, d, e, kw[3]);
                round!(e, f, g, h, a, b, c, d, kw[4]);
                round!(d, e, f, g, h, a, b, c, kw[5]);
                round!(c, d, e, f, g, h, a, b, kw[6]);
                round!(b, c, d, e, f, g, h, a, kw[7]);
            }
            for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
                *s = _mm_add_epi64(*s, v);
            }
        }
        for i in 0..8 {
            let mut pair = [0u64; 2];
            // SAFETY: `pair` is 16 writable bytes; storeu has no alignment requirement.
            unsafe { _mm_storeu_si128(pair.as_mut_ptr().cast(), state[i]) };
            sa[i] = pair[0];
            sb[i] = pair[1];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_noise as data;
    use crate::test_path;
    use sha2::{Digest, Sha384};
    use std::cell::Cell;

    thread_local! {
        /// Set by a test: this thread's lanes use [`scalar_compress`] instead of AVX-512VL, so
        /// the lane bookkeeping (buffers, offsets, padding) is tested on every CPU.
        pub(super) static SCALAR: Cell<bool> = const { Cell::new(false) };
    }

    /// FIPS 180-4 §6.4.2, one plain 64-bit word at a time.
    pub(super) fn scalar_compress(state: &mut [u64; 8], blocks: &[u8]) {
        for block in blocks.chunks_exact(128) {
            let mut w = [0u64; 80];
            for (t, word) in block.chunks_exact(8).enumerate() {
                w[t] = u64::from_be_bytes(word.try_into().unwrap());
            }
            for t in 16..80 {
                let s0 = w[t - 15].rotate_right(1) ^ w[t - 15].rotate_right(8) ^ (w[t - 15] >> 7);
                let s1 = w[t - 2].rotate_right(19) ^ w[t - 2].rotate_right(61) ^ (w[t - 2] >> 6);
                w[t] = w[t - 16]
                    .wrapping_add(s0)
                    .wrapping_add(w[t - 7])
                    .wrapping_add(s1);
            }
            let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
            for t in 0..80 {
                let t1 = h
                    .wrapping_add(e.rotate_right(14) ^ e.rotate_right(18) ^ e.rotate_right(41))
                    .wrapping_add((e & f) ^ (!e & g))
                    .wrapping_add(K[t])
                    .wrapping_add(w[t]);
                let t2 = (a.rotate_right(28) ^ a.rotate_right(34) ^ a.rotate_right(39))
                    .wrapping_add((a & b) ^ (a & c) ^ (b & c));
                (h, g, f, e, d, c, b) = (g, f, e, d.wrapping_add(t1), c, b, a);
                a = t1.wrapping_add(t2);
            }
            for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
                *s = s.wrapping_add(v);
            }
        }
    }

    /// The CPU path of the two-lane kernel: tested here, or said (and counted) not to be.
    fn avx512_path(test: &str) -> bool {
        let path = format!("sha384x2 AVX-512VL kernel ({test})");
        if supported() {
            test_path(&path, true, "AVX-512F and AVX-512VL present");
            true
        } else {
            test_path(&path, false, "this CPU has no AVX-512F with AVX-512VL");
            false
        }
    }

    /// Lane a first sees a prefix of every length 0..=130 (its blocks are misaligned against lane
    /// b's by that much), then both see the same bytes in chunks of odd sizes.
    fn lanes_equal_sha2_for_every_offset_and_chunking() {
        let shared = data(5000, 1);
        for prefix_len in (0..=130).chain([255, 256, 257, 1000]) {
            let prefix = data(prefix_len, 2 + prefix_len as u64);
            for chunk in [1usize, 7, 127, 128, 129, 300, 5000] {
                let (a, b) = lanes(&prefix, &shared, chunk);
                let mut ra = Sha384::new();
                ra.update(&prefix);
                ra.update(&shared);
                let rb = Sha384::digest(&shared);
                assert_eq!(
                    a[..],
                    ra.finalize()[..],
                    "prefix {prefix_len} chunk {chunk}"
                );
                assert_eq!(b[..], rb[..], "prefix {prefix_len} chunk {chunk}");
            }
        }
    }

    #[test]
    fn lane_bookkeeping_equals_sha2_with_the_scalar_kernel() {
        SCALAR.with(|s| s.set(true));
        lanes_equal_sha2_for_every_offset_and_chunking();
        assert_eq!(self_test(&lanes), Ok(()));
    }

    #[test]
    fn both_avx512_lanes_equal_sha2_for_every_offset_and_chunking() {
        if avx512_path("every offset and chunking") {
            lanes_equal_sha2_for_every_offset_and_chunking();
            assert_eq!(self_test(&lanes), Ok(()), "the real engine's self-test");
        }
    }

    #[test]
    fn known_answers() {
        // FIPS 180-4 examples (SHA-384 of "abc" and of nothing), with either kernel.
        let abc = "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7";
        let empty = "38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da274edebfe76f65fbd51ad2f14898b95b";
        for scalar in [true, false] {
            if !scalar && !avx512_path("FIPS 180-4 examples") {
                continue;
            }
            SCALAR.with(|s| s.set(scalar));
            let mut a = Lane::default();
            update1(&mut a, b"abc");
            assert_eq!(hex::encode(finish(a)), abc, "scalar {scalar}");
            assert_eq!(
                hex::encode(finish(Lane::default())),
                empty,
                "scalar {scalar}"
            );
        }
    }

    /// A correct two-lane hash built from sha2, and wrong ones that differ from it only in one
    /// lane, or only at one block offset (the kind of bug a miscompiled kernel has).
    fn reference(prefix: &[u8], shared: &[u8], _chunk: usize) -> ([u8; 48], [u8; 48]) {
        let a = Sha384::new().chain_update(prefix).chain_update(shared);
        (a.finalize().into(), Sha384::digest(shared).into())
    }

    #[test]
    fn the_self_test_passes_a_correct_engine_and_catches_wrong_ones() {
        assert_eq!(self_test(&reference), Ok(()));
        let lane_b_wrong = |p: &[u8], s: &[u8], c: usize| {
            let (a, mut b) = reference(p, s, c);
            b[47] ^= 1;
            (a, b)
        };
        assert!(self_test(&lane_b_wrong).is_err());
        let wrong_at_112 = |p: &[u8], s: &[u8], c: usize| {
            let (mut a, b) = reference(p, s, c);
            if p.len() == 112 {
                a[0] ^= 0x80;
            }
            (a, b)
        };
        let err = self_test(&wrong_at_112).unwrap_err();
        assert!(err.contains("prefix of 112 bytes"), "{err}");
    }

    #[test]
    fn the_engine_is_chosen_from_cpu_opt_out_and_self_test_on_any_cpu() {
        let untested = || -> Result<(), String> { panic!("self-test run without AVX-512VL") };
        let c = choose(false, false, untested);
        assert_eq!(c.engine, Engine::Threads);
        assert!(c.reason.contains("no AVX-512F"), "{}", c.reason);
        let c = choose(true, true, untested);
        assert_eq!(c.engine, Engine::Threads);
        assert!(c.reason.contains("CLOAK_NO_AVX512"), "{}", c.reason);
        assert_eq!(
            choose(true, false, || self_test(&reference)).engine,
            Engine::Lanes
        );
        // An engine that fails its known answers is never used: ring computes the PCRs.
        let broken = |p: &[u8], s: &[u8], c: usize| {
            let (mut a, b) = reference(p, s, c);
            a[5] ^= 4;
            (a, b)
        };
        let c = choose(true, false, || self_test(&broken));
        assert_eq!(c.engine, Engine::Threads);
        assert!(
            c.reason.contains("failed its known-answer self-test"),
            "{}",
            c.reason
        );
    }

    #[test]
    fn this_process_uses_the_lanes_exactly_when_the_cpu_has_them() {
        let opted_out = std::env::var_os("CLOAK_NO_AVX512").is_some();
        let expected = if supported() && !opted_out {
            Engine::Lanes
        } else {
            Engine::Threads
        };
        assert_eq!(engine().engine, expected, "{}", engine().reason);
        avx512_path("the process engine");
    }
}
