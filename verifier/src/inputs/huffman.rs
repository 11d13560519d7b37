//! DFloat11-style streams for the `huffman_lut` and `huffman_stream` generators: a canonical
//! Huffman code of bf16 exponents as a flat 16-bit decode table, streams coded with it, and the
//! chunk gaps and block offsets a decoder needs, read off the stream exactly as a decoder would.
//!
//! Table entry `lut[w]` for the next 16 stream bits `w` is `symbol | length << 8`; the decoder
//! takes `length = ((e >> 8) - 1) % 16 + 1`. Chunks are 64 bits; blocks are 512 chunks.

use super::rng::Stream;

const CHUNK_BITS: u64 = 64;
const BLOCK_CHUNKS: u64 = 512;
const MAX_LEN: u32 = 16;

/// The decode table of a canonical Huffman code for the exponents of bf16 N(0, sigma) weights,
/// sigma = 2^-3 .. 2^-9 and each exponent's probability scaled by a factor in [1/2, 2] (weight
/// matrices differ), exponents rarer than 2^-14 left out, lengths at most 16 bits.
pub fn lut(key: u64) -> Result<Vec<i32>, String> {
    let mut s = Stream::at(key, 0);
    let shift = 3 + s.below(7) as i32; // sigma = 2^-shift
                                       // P(2^k <= |z| < 2^(k+1)) for z ~ N(0, 1): exponent field k - shift + 127.
    let mut probs: Vec<(u8, f64)> = (-40..6)
        .filter_map(|k: i32| {
            let field = k - shift + 127;
            let p = 2.0 * normal_mass(2f64.powi(k), 2f64.powi(k + 1));
            ((1..255).contains(&field) && p > 0.0).then_some((field as u8, p))
        })
        .map(|(f, p)| (f, p * (0.7 * (2.0 * s.uniform() - 1.0)).exp2()))
        .collect();
    let mut cutoff = 2f64.powi(-14);
    loop {
        let total: f64 = probs.iter().map(|x| x.1).sum();
        probs.retain(|(_, p)| p / total >= cutoff);
        let lengths = huffman_lengths(&probs.iter().map(|x| x.1).collect::<Vec<_>>());
        if lengths.iter().all(|&l| l <= MAX_LEN) {
            return Ok(table(&probs, &lengths));
        }
        if probs.len() <= 2 {
            return Err("huffman_lut: no code of at most 16 bits".into());
        }
        cutoff *= 2.0;
    }
}

/// Mass of the standard normal on [a, b] (0 <= a < b), by Simpson's rule (the density is smooth
/// and the octaves are short relative to its curvature, so 256 panels are plenty).
fn normal_mass(a: f64, b: f64) -> f64 {
    let f = |x: f64| (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let n = 256;
    let h = (b - a) / n as f64;
    let inner: f64 = (1..n)
        .map(|i| f(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 })
        .sum();
    h / 3.0 * (f(a) + f(b) + inner)
}

/// Huffman code lengths for `p` (at least one symbol; one symbol gets length 1).
fn huffman_lengths(p: &[f64]) -> Vec<u32> {
    let mut len = vec![0u32; p.len()];
    if p.len() == 1 {
        len[0] = 1;
        return len;
    }
    // (weight, members): merge the two lightest until one is left; each merge deepens members.
    let mut nodes: Vec<(f64, Vec<usize>)> =
        p.iter().enumerate().map(|(i, &w)| (w, vec![i])).collect();
    while nodes.len() > 1 {
        nodes.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (wa, ma) = nodes.pop().unwrap_or_default();
        let (wb, mb) = nodes.pop().unwrap_or_default();
        for &i in ma.iter().chain(&mb) {
            len[i] += 1;
        }
        nodes.push((wa + wb, ma.into_iter().chain(mb).collect()));
    }
    len
}

/// The flat decode table of the canonical code with these lengths (codes ordered by length,
/// then symbol).
fn table(symbols: &[(u8, f64)], lengths: &[u32]) -> Vec<i32> {
    let mut order: Vec<usize> = (0..symbols.len()).collect();
    order.sort_by_key(|&i| (lengths[i], symbols[i].0));
    let mut lut = vec![0i32; 1 << 16];
    let (mut code, mut prev) = (0u32, 0u32);
    let mut next = 0usize;
    for i in order {
        let l = lengths[i];
        code <<= l - prev;
        prev = l;
        let span = 1usize << (MAX_LEN - l);
        let first = (code as usize) << (MAX_LEN - l);
        for e in &mut lut[first..first + span] {
            *e = i32::from(symbols[i].0) | ((l as i32) << 8);
        }
        next = first + span;
        code += 1;
    }
    // A complete code fills the table; with one symbol the rest decodes as that symbol too.
    let fill = lut[0];
    for e in &mut lut[next..] {
        *e = fill;
    }
    lut
}

/// A decode table as the kernel reads it.
pub struct Table {
    /// (symbol, length) for every 16-bit window.
    entries: Vec<(u8, u32)>,
}

impl Table {
    pub fn from_lut(lut: &super::HostTensor) -> Result<Table, String> {
        if lut.numel() != 1 << 16 || !lut.dtype.is_integer() {
            return Err(format!(
                "huffman_stream: `lut` must be an integer table of 65536 entries, not {} x {}",
                lut.dtype,
                lut.numel()
            ));
        }
        let entries = (0..1 << 16)
            .map(|i| {
                let e = lut.get_f64(i) as i64;
                ((e & 0xFF) as u8, (((e >> 8) - 1).rem_euclid(16) + 1) as u32)
            })
            .collect();
        Ok(Table { entries })
    }

    /// Writes `n` symbols, each drawn with probability 2^-length (a uniform 16-bit window picks
    /// its table entry; its top `length` bits are the code), MSB-first into `out`; codes that do
    /// not fit are cut off, and the bits after the last code are zero.
    pub fn encode(&self, n: u64, key: u64, out: &mut [u8]) -> Result<(), String> {
        out.fill(0);
        let cap = out.len() as u64 * 8;
        let mut s = Stream::at(key, 0);
        let mut pos = 0u64;
        for _ in 0..n {
            let w = s.below(1 << 16) as u32;
            let l = self.entries[w as usize].1;
            let code = w >> (MAX_LEN - l);
            for b in (0..l).rev() {
                if pos >= cap {
                    return Ok(());
                }
                if (code >> b) & 1 == 1 {
                    out[(pos / 8) as usize] |= 0x80 >> (pos % 8);
                }
                pos += 1;
            }
        }
        Ok(())
    }

    /// The bit position of every code a decoder reads in `bits`: from bit 0, code after code,
    /// while the code starts before the lookahead (the last 4 bytes).
    pub fn code_starts(&self, bits: &[u8]) -> Result<Vec<u64>, String> {
        if bits.len() < 4 {
            return Err("huffman_stream: `bits` holds less than its 4 lookahead bytes".into());
        }
        let end = (bits.len() as u64 - 4) * 8;
        let byte = |i: u64| u32::from(bits.get(i as usize).copied().unwrap_or(0));
        let mut starts = Vec::new();
        let mut pos = 0u64;
        while pos < end {
            starts.push(pos);
            let b = pos / 8;
            let window = (byte(b) << 16) | (byte(b + 1) << 8) | byte(b + 2);
            let w = (window >> (8 - (pos % 8))) & 0xFFFF;
            pos += u64::from(self.entries[w as usize].1);
        }
        Ok(starts)
    }
}

/// gaps[c]: offset of the first code starting in chunk c (every chunk has one: codes are at
/// most 16 bits).
pub fn gaps(starts: &[u64], chunks: usize) -> Result<Vec<i128>, String> {
    let mut out = Vec::with_capacity(chunks);
    let mut i = 0usize;
    for c in 0..chunks as u64 {
        while i < starts.len() && starts[i] < c * CHUNK_BITS {
            i += 1;
        }
        match starts.get(i) {
            Some(&p) if p < (c + 1) * CHUNK_BITS => out.push(i128::from(p - c * CHUNK_BITS)),
            _ => {
                return Err(format!(
                    "huffman_stream gaps: no code starts in chunk {c} (is `bits` 8 bytes per chunk + 4?)"
                ))
            }
        }
    }
    Ok(out)
}

/// block_offsets[b]: codes starting before block b (512 chunks), at most `n`; the last is `n`.
pub fn block_offsets(starts: &[u64], len: usize, n: u64) -> Vec<i128> {
    (0..len as u64)
        .map(|b| {
            if b + 1 == len as u64 {
                return i128::from(n);
            }
            let limit = b * BLOCK_CHUNKS * CHUNK_BITS;
            let count = starts.partition_point(|&p| p < limit) as u64;
            i128::from(count.min(n))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::inputs::HostTensor;

    fn table_of(key: u64) -> (Table, Vec<i32>) {
        let l = lut(key).expect("a code");
        let t = HostTensor {
            dtype: DType::I32,
            dims: vec![1 << 16],
            bytes: l.iter().flat_map(|e| e.to_le_bytes()).collect(),
        };
        (Table::from_lut(&t).expect("table"), l)
    }

    #[test]
    fn tables_are_complete_canonical_codes_that_vary_by_draw() {
        let mut seen = std::collections::BTreeSet::new();
        for key in 0..20u64 {
            let (t, raw) = table_of(key);
            // Every window decodes; runs of 2^(16 - length) equal entries, aligned: a prefix code
            // whose Kraft sum is exactly 1.
            let mut kraft = 0.0;
            let mut w = 0usize;
            while w < 1 << 16 {
                let (sym, l) = t.entries[w];
                assert!((1..=16).contains(&l));
                let span = 1usize << (16 - l);
                assert_eq!(w % span, 0, "aligned code at {w}");
                assert!(t.entries[w..w + span].iter().all(|e| *e == (sym, l)));
                kraft += 2f64.powi(-(l as i32));
                w += span;
            }
            assert!((kraft - 1.0).abs() < 1e-12, "kraft {kraft}");
            assert_eq!(raw, table_of(key).1, "deterministic");
            seen.insert(raw);
        }
        assert!(seen.len() > 10, "tables differ between draws");
    }

    #[test]
    fn streams_decode_to_the_drawn_symbols_and_index_them_as_a_decoder_would() {
        let (t, _) = table_of(7);
        let n = 100_000u64;
        // Room for the whole stream (about 2.6 bits a symbol) plus padding chunks.
        let chunks = (n * 3).div_ceil(64) as usize;
        let mut bits = vec![0u8; 8 * chunks + 4];
        t.encode(n, 99, &mut bits).unwrap();
        let starts = t.code_starts(&bits).unwrap();
        assert!(starts.len() as u64 > n, "padding decodes too");
        let mut s = Stream::at(99, 0);
        let peek = |pos: u64| {
            let b = |i: u64| u32::from(bits.get(i as usize).copied().unwrap_or(0));
            let p = pos / 8;
            (((b(p) << 16) | (b(p + 1) << 8) | b(p + 2)) >> (8 - pos % 8)) & 0xFFFF
        };
        let mut total_bits = 0u64;
        for &p in &starts[..n as usize] {
            let w = s.below(1 << 16) as usize;
            assert_eq!(
                t.entries[peek(p) as usize].0,
                t.entries[w].0,
                "symbol at bit {p}"
            );
            total_bits += u64::from(t.entries[w].1);
        }
        let per = total_bits as f64 / n as f64;
        assert!((2.3..2.9).contains(&per), "{per} bits per exponent");
        let g = gaps(&starts, chunks).unwrap();
        assert!(g.iter().all(|&x| (0..16).contains(&x)));
        let nblk = chunks.div_ceil(512) + 1;
        let offs = block_offsets(&starts, nblk, n);
        assert_eq!((offs[0], offs[nblk - 1]), (0, n as i128));
        assert!(offs.windows(2).all(|w| w[0] <= w[1]));
        // A stream cut short: fewer symbols fit, offsets stay at most n, the last is n.
        let mut short = vec![0u8; 8 * 1000 + 4];
        t.encode(n, 99, &mut short).unwrap();
        let st = t.code_starts(&short).unwrap();
        let offs = block_offsets(&st, 3, n);
        assert_eq!(offs[2], n as i128);
        assert!(offs[1] < n as i128);
        assert!(t.code_starts(&[0u8; 3]).is_err());
    }
}
