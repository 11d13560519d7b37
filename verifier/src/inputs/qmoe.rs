//! QMoE's sub-1-bit format for the `qmoe_dictionary` and `qmoe_stream` generators: a dictionary of
//! the 2^16 most probable ternary digit sequences, and ternary weight rows greedily coded with it
//! into 16-bit codewords.
//!
//! QMoE (Frantar & Alistarh 2023) models each weight as an independent ternary digit: 0 with
//! probability 0.885 (the quantised weights are about 88.5% zeros), 1 and 2 with 0.0575 each.
//! Its dictionary holds the 2^16 most probable sequences of 1..14 digit pairs; a best-first
//! enumeration by probability yields them prefix-closed (a sequence is more probable than each of
//! its extensions), so a greedy longest match always ends on an entry.
//!
//! Entry format (the task's): two 32-bit halves, L (pairs) in bits 0..3 of both, digit d at
//! bits 4+2*(d%14) of half d/14; unused digit fields are zero, as in QMoE (whose kernel reads all
//! 28 fields of every codeword and relies on that).
//!
//! Where this departs from IST-DASLab/qmoe on purpose: its table is in order of probability and
//! breaks ties among equally probable sequences by floating-point rounding and list order; here
//! the tie order and the table order are drawn per table, so a kernel cannot hard-code either. Its
//! packer ends a row exactly at the row length (the last codeword is the match cut short there);
//! here the last codeword is the longest match over digits drawn past the row's end, so decoders
//! meet the task's rule that digits past the row length are dropped.

use super::rng::Stream;
use super::HostTensor;
use crate::dtype::DType;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Codewords are 16 bits.
pub const ENTRIES: usize = 1 << 16;
const MAX_PAIRS: usize = 14;
pub const MAX_DIGITS: usize = 2 * MAX_PAIRS;
const P_ZERO: f64 = 0.885;
const P_NONZERO: f64 = (1.0 - P_ZERO) / 2.0;

/// One ternary digit of QMoE's model.
fn draw_digit(s: &mut Stream) -> u8 {
    let u = s.uniform();
    if u < P_ZERO {
        0
    } else if u < P_ZERO + P_NONZERO {
        1
    } else {
        2
    }
}

/// A candidate sequence in the best-first enumeration: most probable first; equally probable
/// sequences (those with as many zeros) in an order drawn per table.
struct Candidate {
    log_p: f64,
    tie: u64,
    digits: Vec<u8>,
}

impl PartialEq for Candidate {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Candidate {
    fn cmp(&self, o: &Self) -> Ordering {
        self.log_p
            .total_cmp(&o.log_p)
            .then(self.tie.cmp(&o.tie))
            .then_with(|| o.digits.cmp(&self.digits))
    }
}

fn log_p(digits: &[u8]) -> f64 {
    let zeros = digits.iter().filter(|&&d| d == 0).count() as f64;
    // Computed from the counts alone, so sequences with as many zeros tie exactly.
    zeros * P_ZERO.ln() + (digits.len() as f64 - zeros) * P_NONZERO.ln()
}

/// The digit sequences of the dictionary, most probable first. Sequences as probable as the
/// 2^16th are many (all those with its count of zeros and length); which of them make the cut
/// is drawn per table, and so is the order among equals.
pub fn sequences(key: u64) -> Vec<Vec<u8>> {
    let mut s = Stream::at(key, 0);
    let mut heap = BinaryHeap::new();
    let push = |heap: &mut BinaryHeap<Candidate>, s: &mut Stream, prefix: &[u8]| {
        for pair in 0..9u8 {
            let mut digits = prefix.to_vec();
            digits.extend([pair / 3, pair % 3]);
            heap.push(Candidate {
                log_p: log_p(&digits),
                tie: s.next_u64(),
                digits,
            });
        }
    };
    push(&mut heap, &mut s, &[]);
    let mut out = Vec::with_capacity(ENTRIES);
    while out.len() < ENTRIES {
        let Some(c) = heap.pop() else { break };
        if c.digits.len() < MAX_DIGITS {
            push(&mut heap, &mut s, &c.digits);
        }
        out.push(c.digits);
    }
    out
}

/// The two 32-bit halves of a dictionary entry.
fn encode_entry(digits: &[u8]) -> [u32; 2] {
    let l = (digits.len() / 2) as u32;
    let mut h = [l, l];
    for (d, &v) in digits.iter().enumerate() {
        h[d / 14] |= u32::from(v) << (4 + 2 * (d % 14));
    }
    h
}

/// The dictionary as the task stores it (i32 [65536, 2], row-major): the entries of
/// [`sequences`] in an order drawn per table, so codeword values carry no fixed meaning and a
/// kernel cannot hard-code the table.
pub fn dictionary(key: u64) -> Result<Vec<i32>, String> {
    let seqs = sequences(key);
    if seqs.len() != ENTRIES {
        return Err(format!(
            "qmoe_dictionary: only {} sequences of at most 14 pairs",
            seqs.len()
        ));
    }
    let mut order: Vec<usize> = (0..ENTRIES).collect();
    Stream::at(key, 1).shuffle(&mut order);
    Ok(order
        .into_iter()
        .flat_map(|i| encode_entry(&seqs[i]).map(|h| h as i32))
        .collect())
}

/// A dictionary as a decoder and a greedy encoder read it.
pub struct Dictionary {
    /// The two halves of every codeword.
    words: Vec<[u32; 2]>,
    /// A trie over digit pairs (pair value 3*a + b): children, and the codeword ending at
    /// each node, if any. Node 0 is the root.
    children: Vec<[u32; 9]>,
    code: Vec<Option<u16>>,
}

const NONE: u32 = u32::MAX;

impl Dictionary {
    /// Reads the `dec` input: it must be i32 [65536, 2].
    pub fn from_dec(dec: &HostTensor) -> Result<Dictionary, String> {
        if dec.dtype != DType::I32 || dec.dims != [ENTRIES as u64, 2] {
            return Err(format!(
                "qmoe_stream: `dec` must be an i32 [65536, 2] dictionary, not {} {:?}",
                dec.dtype, dec.dims
            ));
        }
        let words: Vec<[u32; 2]> = dec
            .bytes
            .chunks_exact(8)
            .map(|c| {
                [
                    u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                    u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                ]
            })
            .collect();
        let mut dict = Dictionary {
            words,
            children: vec![[NONE; 9]],
            code: vec![None],
        };
        for c in 0..ENTRIES {
            let digits = dict.digits(c as u16);
            // Sequences with digit 3 never match ternary weights.
            if digits.iter().any(|&d| d > 2) {
                continue;
            }
            let mut node = 0usize;
            for p in digits.chunks_exact(2) {
                let pair = usize::from(3 * p[0] + p[1]);
                if dict.children[node][pair] == NONE {
                    dict.children[node][pair] = dict.children.len() as u32;
                    dict.children.push([NONE; 9]);
                    dict.code.push(None);
                }
                node = dict.children[node][pair] as usize;
            }
            // The first of duplicate entries wins.
            if dict.code[node].is_none() {
                dict.code[node] = Some(c as u16);
            }
        }
        Ok(dict)
    }

    /// How many digits codeword `c` yields: min(2 * L, 28), L from bits 0..3 of half 0.
    pub fn len_of(&self, c: u16) -> usize {
        (2 * (self.words[usize::from(c)][0] & 15) as usize).min(MAX_DIGITS)
    }

    /// The digits codeword `c` yields.
    pub fn digits(&self, c: u16) -> Vec<u8> {
        let h = self.words[usize::from(c)];
        (0..self.len_of(c))
            .map(|d| ((h[d / 14] >> (4 + 2 * (d % 14))) & 3) as u8)
            .collect()
    }

    /// The longest entry that `digits` starts with (`digits` has an even length).
    fn longest_match(&self, digits: &[u8]) -> Option<(u16, usize)> {
        let mut node = 0usize;
        let mut best = None;
        for (i, p) in digits.chunks_exact(2).take(MAX_PAIRS).enumerate() {
            let next = self.children[node][usize::from(3 * p[0] + p[1])];
            if next == NONE {
                break;
            }
            node = next as usize;
            if let Some(c) = self.code[node] {
                best = Some((c, 2 * (i + 1)));
            }
        }
        best
    }

    /// Row `r`'s codewords: its `w` weights (see [`row_digits`]) greedily coded, longest match
    /// first. The last codeword may run past `w`, over digits drawn from the same model.
    pub fn encode_row(&self, key: u64, r: u64, w: usize) -> Result<Vec<u16>, String> {
        let digits = row_digits(key, r, w + MAX_DIGITS);
        let mut out = Vec::with_capacity(w / 8 + 1);
        let mut pos = 0usize;
        while pos < w {
            let (c, n) = self.longest_match(&digits[pos..]).ok_or_else(|| {
                format!(
                    "qmoe_stream: the dictionary has no entry for the digit pair {}{} (is `dec` a qmoe_dictionary?)",
                    digits[pos],
                    digits[pos + 1]
                )
            })?;
            out.push(c);
            pos += n;
        }
        Ok(out)
    }

    /// Row offsets (rows + 1) of a stream of `rows` rows of `w` weights, read as a decoder
    /// would: a row ends with the codeword that reaches its `w`th digit.
    pub fn row_offsets(&self, stream: &[u16], rows: usize, w: usize) -> Result<Vec<i128>, String> {
        let mut offs = Vec::with_capacity(rows + 1);
        let mut c = 0usize;
        for r in 0..rows {
            offs.push(c as i128);
            let mut got = 0usize;
            while got < w {
                let code = stream.get(c).ok_or_else(|| {
                    format!(
                        "qmoe_stream row_offsets: the codewords end inside row {r} of {rows} (after {got} of {w} digits)"
                    )
                })?;
                let n = self.len_of(*code);
                if n == 0 {
                    return Err(format!(
                        "qmoe_stream row_offsets: codeword {code} (at {c}) yields no digits"
                    ));
                }
                got += n;
                c += 1;
            }
        }
        offs.push(c as i128);
        Ok(offs)
    }

    /// The codewords of `rows` rows of `w` weights, back to back, then random codewords up to
    /// `capacity`. Rows are coded in parallel; each draws from its own stream.
    pub fn stream(
        &self,
        key: u64,
        rows: u64,
        w: usize,
        capacity: usize,
    ) -> Result<Vec<u16>, String> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(32) as u64;
        let per = rows.div_ceil(threads).max(1);
        let parts: Vec<Result<Vec<u16>, String>> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..rows.div_ceil(per))
                .map(|t| {
                    sc.spawn(move || {
                        let mut out = Vec::new();
                        for r in t * per..((t + 1) * per).min(rows) {
                            out.extend(self.encode_row(key, r, w)?);
                        }
                        Ok(out)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("qmoe_stream: a worker thread panicked".into()))
                })
                .collect()
        });
        let mut out = Vec::with_capacity(capacity);
        for p in parts {
            out.extend(p?);
        }
        if out.len() > capacity {
            return Err(format!(
                "qmoe_stream: {rows} rows of {w} weights need {} codewords, more than the {capacity} the tensor holds",
                out.len()
            ));
        }
        // Past the last row's stream, one more stream of padding codewords.
        let mut s = Stream::at(key, u64::MAX);
        out.resize_with(capacity, || s.below(ENTRIES as u64) as u16);
        Ok(out)
    }
}

/// The first `n` ternary digits of row `r` (weights at t < W, the rest past the row's end).
pub fn row_digits(key: u64, r: u64, n: usize) -> Vec<u8> {
    let mut s = Stream::at(key, r);
    (0..n).map(|_| draw_digit(&mut s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec_tensor(key: u64) -> HostTensor {
        let d = dictionary(key).expect("a dictionary");
        HostTensor {
            dtype: DType::I32,
            dims: vec![ENTRIES as u64, 2],
            bytes: d.iter().flat_map(|e| e.to_le_bytes()).collect(),
        }
    }

    #[test]
    fn dictionaries_are_qmoe_tables_that_vary_by_draw() {
        let a = dictionary(3).unwrap();
        assert_eq!(a, dictionary(3).unwrap(), "deterministic per key");
        let b = dictionary(4).unwrap();
        assert_ne!(a, b, "entry order differs per draw");
        let dict = Dictionary::from_dec(&dec_tensor(3)).unwrap();
        let mut seen = std::collections::HashSet::new();
        let mut lengths = [0usize; MAX_PAIRS + 1];
        for c in 0..ENTRIES {
            let h = dict.words[c];
            let l = (h[0] & 15) as usize;
            assert_eq!(h[1] & 15, h[0] & 15, "L in both halves of {c}");
            assert!((1..=MAX_PAIRS).contains(&l), "L = {l} at {c}");
            lengths[l] += 1;
            let digits = dict.digits(c as u16);
            assert!(digits.iter().all(|&d| d <= 2), "digit 3 in {c}");
            // Unused digit fields are zero.
            let mut used = [h[0] & 15, h[1] & 15];
            for (d, &v) in digits.iter().enumerate() {
                used[d / 14] |= u32::from(v) << (4 + 2 * (d % 14));
            }
            assert_eq!(used, h, "stray bits in {c}");
            assert!(seen.insert(digits), "duplicate entry {c}");
        }
        assert!(lengths[1..].iter().all(|&n| n > 0), "every L: {lengths:?}");
        assert_eq!(lengths[1], 9, "every single pair");
        // Prefix-closed: every entry's one-pair-shorter prefix is an entry.
        for d in &seen {
            if d.len() > 2 {
                assert!(seen.contains(&d[..d.len() - 2]), "prefix of {d:?}");
            }
        }
        // The 2^16 most probable: nothing left out is more probable than anything taken.
        let least = seen.iter().map(|d| log_p(d)).fold(f64::MAX, f64::min);
        for d in &seen {
            if d.len() < MAX_DIGITS {
                for pair in 0..9u8 {
                    let mut e = d.clone();
                    e.extend([pair / 3, pair % 3]);
                    if !seen.contains(&e) {
                        assert!(log_p(&e) <= least, "{e:?} left out");
                    }
                }
            }
        }
        // Draws differ in membership at the cut too, not only in order.
        let other: std::collections::HashSet<Vec<u8>> = sequences(4).into_iter().collect();
        assert_ne!(
            seen, other,
            "the cut among equally probable sequences is drawn"
        );
    }

    #[test]
    fn streams_decode_to_the_drawn_weights() {
        let dict = Dictionary::from_dec(&dec_tensor(11)).unwrap();
        let (rows, w) = (64u64, 3072usize);
        let cap = rows as usize * w / 6;
        let stream = dict.stream(5, rows, w, cap).unwrap();
        assert_eq!(stream.len(), cap);
        let offs = dict.row_offsets(&stream, rows as usize, w).unwrap();
        assert_eq!(offs.len(), rows as usize + 1);
        assert!(offs.windows(2).all(|p| p[0] < p[1]), "monotone");
        let used = offs[rows as usize] as usize;
        let mut digits_total = 0usize;
        for r in 0..rows as usize {
            let want = row_digits(5, r as u64, w);
            let mut got = Vec::new();
            for &c in &stream[offs[r] as usize..offs[r + 1] as usize] {
                got.extend(dict.digits(c));
            }
            assert!(
                got.len() >= w && got.len() - dict.len_of(stream[offs[r + 1] as usize - 1]) < w
            );
            assert_eq!(&got[..w], &want[..], "row {r}");
            digits_total += got.len();
        }
        // The same rows coded one by one give the stream; padding only after the last row.
        let direct: Vec<u16> = (0..rows)
            .flat_map(|r| dict.encode_row(5, r, w).unwrap())
            .collect();
        assert_eq!(&stream[..used], &direct[..]);
        assert!(used < cap, "room for padding");
        // QMoE's rate: about 21.7 weights per codeword (0.74 bits a weight) at this row length.
        let per = (rows as usize * w) as f64 / used as f64;
        assert!((21.0..22.5).contains(&per), "{per} weights per codeword");
        assert!(digits_total - rows as usize * w < rows as usize * MAX_DIGITS);
        // Weights follow the model.
        let zeros = (0..rows)
            .flat_map(|r| row_digits(5, r, w))
            .filter(|&d| d == 0)
            .count() as f64
            / (rows as f64 * w as f64);
        assert!((zeros - P_ZERO).abs() < 0.005, "{zeros} zeros");
        // Too little room is an error, not a truncated stream.
        assert!(dict.stream(5, rows, w, used - 1).is_err());
        assert!(dict
            .row_offsets(&stream[..used - 1], rows as usize, w)
            .is_err());
    }

    #[test]
    fn short_rows_and_bad_dictionaries() {
        let dict = Dictionary::from_dec(&dec_tensor(2)).unwrap();
        let s = dict.stream(9, 3, 16, 64).unwrap();
        let offs = dict.row_offsets(&s, 3, 16).unwrap();
        assert_eq!(offs[0], 0);
        let wrong = HostTensor {
            dtype: DType::I32,
            dims: vec![ENTRIES as u64],
            bytes: vec![0; ENTRIES * 4],
        };
        assert!(Dictionary::from_dec(&wrong).is_err());
        // A table of all-L-zero words: no entry matches, and nothing decodes.
        let zeros = HostTensor {
            dtype: DType::I32,
            dims: vec![ENTRIES as u64, 2],
            bytes: vec![0; ENTRIES * 8],
        };
        let z = Dictionary::from_dec(&zeros).unwrap();
        assert!(z.encode_row(1, 0, 16).is_err());
        assert!(z.row_offsets(&[0u16; 4], 1, 16).is_err());
    }

    /// A task whose inputs are made by both generators: the wiring (dependencies, keys, parts,
    /// dtypes) gives a stream that decodes to the weights drawn under `w_comp`'s key.
    #[test]
    fn generated_task_inputs_agree_with_each_other() {
        use crate::inputs::{generate, tensor_key, Variant};
        use crate::task::Task;
        let text = |cap: &str| wiring_task(cap, ROW_OFF);
        let path = std::path::Path::new("qmoe_wiring/task.toml");
        let task = Task::parse(path, &text("H * ceil_div(W, 10) + 8")).expect("parses");
        let sh = &task.shapes[0];
        let gen = |name: &str, seed: u64| {
            let d = task.input(name).expect("declared");
            generate(&task, d, sh, seed, Variant::Base).expect("generates")
        };
        let (dec, cw, off) = (gen("dec", 1), gen("w_comp", 1), gen("row_off", 1));
        assert_eq!(dec, gen("dec", 1), "deterministic");
        assert_ne!(dec.bytes, gen("dec", 2).bytes, "a table per draw");
        let dict = Dictionary::from_dec(&dec).unwrap();
        let key = tensor_key(&task, "w_comp", sh, 1, Variant::Base);
        let offs: Vec<usize> = (0..38).map(|i| off.get_f64(i) as usize).collect();
        assert_eq!(offs[0], 0);
        for r in 0..37 {
            let mut got = Vec::new();
            for i in offs[r]..offs[r + 1] {
                got.extend(dict.digits(cw.get_bits(i) as u16));
            }
            assert_eq!(&got[..432], &row_digits(key, r as u64, 432)[..], "row {r}");
        }
        assert!(offs[37] < cw.numel() as usize, "a capacity tail");
        // Too little capacity is a clear error.
        let small = Task::parse(path, &text("H")).expect("parses");
        let d = small.input("w_comp").expect("declared");
        let e = generate(&small, d, sh, 1, Variant::Base).unwrap_err();
        assert!(e.message.contains("codewords, more than the 37"), "{e}");
    }

    const ROW_OFF: &str = r#"{ generator = "qmoe_stream", part = "row_offsets", dec = "dec", codewords = "w_comp", row_len = "W" }"#;

    /// A small task with a `qmoe_dictionary`, codewords of capacity `cap` and `row_off` made by
    /// `row_off_init`.
    fn wiring_task(cap: &str, row_off_init: &str) -> String {
        format!(
            r#"id = "qmoe_wiring"
title = "t"
category = "quantization"
[params]
H = {{ min = 1 }}
W = {{ min = 16 }}
[[shapes]]
name = "s"
H = 37
W = 432
[[inputs]]
name = "dec"
dtype = "i32"
shape = [65536, 2]
init = {{ generator = "qmoe_dictionary" }}
[[inputs]]
name = "w_comp"
dtype = "u16"
shape = ["{cap}"]
init = {{ generator = "qmoe_stream", part = "codewords", dec = "dec", rows = "H", row_len = "W" }}
[[inputs]]
name = "row_off"
dtype = "i32"
shape = ["H + 1"]
init = {row_off_init}
[[outputs]]
name = "y"
dtype = "f32"
shape = ["H"]
[check]
metric = "normalized_max"
tol = 1e-2
[roofline]
bytes = "H * W"
flops = "H * W"
peak = "fp32"
"#
        )
    }

    #[test]
    fn stream_keys_are_checked_at_load() {
        let errors = |init: &str| {
            crate::task::Task::parse(
                std::path::Path::new("t/task.toml"),
                &wiring_task("H * W", init),
            )
            .err()
            .map(|e| format!("{:?}", e.diagnostics()))
            .unwrap_or_default()
        };
        assert_eq!(errors(ROW_OFF), "");
        let e = errors(
            r#"{ generator = "qmoe_stream", part = "row_offsets", dec = "dec", codewords = "w_comp" }"#,
        );
        assert!(e.contains("row_len"), "no row_len: {e}");
        let e = errors(
            r#"{ generator = "qmoe_stream", part = "row_offsets", dec = "dec", row_len = "W" }"#,
        );
        assert!(
            e.contains("codewords"),
            "row_offsets without codewords: {e}"
        );
        let e = errors(
            r#"{ generator = "qmoe_stream", part = "row_offsets", dec = "dec", codewords = "w_comp", row_len = "W", rows = "H" }"#,
        );
        assert!(e.contains("rows"), "row_offsets takes no rows: {e}");
        let e = errors(
            r#"{ generator = "qmoe_stream", part = "row_offsets", dec = "w_comp", codewords = "w_comp", row_len = "W" }"#,
        );
        assert!(
            e.contains("must be an i32 input"),
            "dec of the wrong dtype: {e}"
        );
        let e = errors(
            r#"{ generator = "qmoe_stream", part = "row_offsets", dec = "dec", codewords = "dec", row_len = "W" }"#,
        );
        assert!(
            e.contains("must be a u16 input"),
            "codewords of the wrong dtype: {e}"
        );
        let e = errors(
            r#"{ generator = "qmoe_stream", part = "row_offsets", dec = "dec", codewords = "w_comp", row_len = "V" }"#,
        );
        assert!(e.contains("`V`"), "unknown name in row_len: {e}");
        let e = errors(
            r#"{ generator = "qmoe_stream", part = "codewords", dec = "dec", row_len = "W" }"#,
        );
        assert!(e.contains("missing required key `rows`"), "{e}");
        let e = errors(
            r#"{ generator = "qmoe_stream", part = "codewords", dec = "dec", rows = "H", row_len = "W" }"#,
        );
        assert!(e.contains("cannot make dtype i32"), "codewords as i32: {e}");
    }
}
