//! The structured generators of `tasks/README.md`. Each is deterministic from the tensor key;
//! per-word and per-row generators run in parallel with one stream per word or row.

use super::codec::{self, Overflow};
use super::rng::Stream;
use super::{huffman, par_fill, qmoe, HostTensor, Site, StressScale};
use crate::dtype::DType;
use crate::task::{Generator, HuffmanPart, QmoePart};
use std::sync::Mutex;

/// The 16 NF4 levels of QLoRA (Dettmers et al. 2023, appendix E; as shipped by bitsandbytes).
pub const NF4_LEVELS: [f64; 16] = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
];

/// `stress` is the variant's rescaling when the input takes part in the stress variant; only
/// generators of values that have a scale (outlier_columns) use it.
pub(super) fn fill(
    g: &Generator,
    dtype: DType,
    dims: &[u64],
    at: &Site,
    stress: Option<StressScale>,
    out: &mut [u8],
) -> Result<(), String> {
    let (shape, key, deps) = (at.shape, at.key, at.deps);
    let size = dtype.size_bytes();
    let numel = out.len() / size;
    match g {
        Generator::Nf4Table => write_table(out, dtype, &NF4_LEVELS, "nf4_table"),
        Generator::DynamicMap8bit { signed } => {
            write_table(out, dtype, &dynamic_map_8bit(*signed), "dynamic_map_8bit")
        }
        Generator::SortedOffsets { total, min_each } => {
            let total = total
                .eval(shape)
                .map_err(|e| format!("sorted_offsets total: {e}"))?;
            let offsets = sorted_offsets(numel, total, *min_each, key)?;
            write_ints(out, dtype, &offsets, "sorted_offsets")
        }
        Generator::Permutation => {
            if numel == 0 {
                return Ok(());
            }
            let mut p: Vec<i128> = (0..numel as i128).collect();
            Stream::at(key, 0).shuffle(&mut p);
            write_ints(out, dtype, &p, "permutation")
        }
        Generator::SparseBitmap { density } => {
            int_only(dtype, "sparse_bitmap")?;
            let bits = size * 8;
            let density = density
                .at(shape)
                .map_err(|e| format!("sparse_bitmap: {e}"))?;
            par_fill(out, size, 1, |first, part| {
                for (j, e) in part.chunks_exact_mut(size).enumerate() {
                    let mut s = Stream::at(key, first + j as u64);
                    let mut w: u64 = 0;
                    for b in 0..bits {
                        if s.uniform() < density {
                            w |= 1 << b;
                        }
                    }
                    e.copy_from_slice(&w.to_le_bytes()[..size]);
                }
            });
            Ok(())
        }
        Generator::PackedCodes { bits } => {
            int_only(dtype, "packed_codes")?;
            let bits = *bits as usize;
            if !(1..=8).contains(&bits) {
                return Err(format!("packed_codes bits must be 1 to 8, found {bits}"));
            }
            // Codes never straddle words; with widths that do not divide the word, the top
            // bits stay zero.
            let per_word = size * 8 / bits;
            let mask = (1u64 << bits) - 1;
            par_fill(out, size, 1, |first, part| {
                for (j, e) in part.chunks_exact_mut(size).enumerate() {
                    let mut s = Stream::at(key, first + j as u64);
                    let mut w: u64 = 0;
                    for c in 0..per_word {
                        w |= (s.next_u64() & mask) << (c * bits);
                    }
                    e.copy_from_slice(&w.to_le_bytes()[..size]);
                }
            });
            Ok(())
        }
        Generator::Codebook { std } => rows(out, dtype, dims, key, *std, false),
        Generator::TopkDistinct { std } => rows(out, dtype, dims, key, *std, true),
        Generator::OutlierColumns {
            std,
            outlier_std,
            fraction,
        } => outlier_columns(
            out,
            dtype,
            dims,
            key,
            (*std, *outlier_std, *fraction),
            stress,
        ),
        Generator::HuffmanLut => {
            if numel != 1 << 16 || dtype != DType::I32 {
                return Err(format!(
                    "huffman_lut makes an i32 table of 65536 entries, not {dtype} x {numel}"
                ));
            }
            let lut = huffman::lut(key)?;
            let lut: Vec<i128> = lut.into_iter().map(i128::from).collect();
            write_ints(out, dtype, &lut, "huffman_lut")
        }
        Generator::HuffmanStream {
            part,
            lut,
            bits,
            symbols,
        } => {
            let table = huffman::Table::from_lut(&deps(lut)?)?;
            let symbols = symbols
                .as_ref()
                .map(|e| {
                    e.eval(shape)
                        .map_err(|e| format!("huffman_stream symbols: {e}"))
                })
                .transpose()?
                .map(|n| u64::try_from(n).map_err(|_| format!("huffman_stream symbols: {n} < 0")))
                .transpose()?;
            match part {
                HuffmanPart::Bits => {
                    let n = symbols.ok_or("huffman_stream bits needs `symbols`")?;
                    table.encode(n, key, out)
                }
                HuffmanPart::Gaps | HuffmanPart::BlockOffsets => {
                    let name = bits.as_deref().ok_or("huffman_stream needs `bits`")?;
                    let stream = deps(name)?;
                    let starts = table.code_starts(&stream.bytes)?;
                    if *part == HuffmanPart::Gaps {
                        let gaps = huffman::gaps(&starts, numel)?;
                        write_ints(out, dtype, &gaps, "huffman_stream gaps")
                    } else {
                        let n = symbols.ok_or("huffman_stream block_offsets needs `symbols`")?;
                        let offs = huffman::block_offsets(&starts, numel, n);
                        write_ints(out, dtype, &offs, "huffman_stream block_offsets")
                    }
                }
            }
        }
        Generator::QmoeDictionary => {
            if dims != [qmoe::ENTRIES as u64, 2] || dtype != DType::I32 {
                return Err(format!(
                    "qmoe_dictionary makes an i32 [65536, 2] table, not {dtype} {dims:?}"
                ));
            }
            let dec: Vec<i128> = qmoe::dictionary(key)?.into_iter().map(i128::from).collect();
            write_ints(out, dtype, &dec, "qmoe_dictionary")
        }
        Generator::QmoeStream {
            part,
            dec,
            row_len,
            rows,
            codewords,
        } => {
            let dict = qmoe::Dictionary::from_dec(&deps(dec)?)?;
            let w = row_len
                .eval(shape)
                .map_err(|e| format!("qmoe_stream row_len: {e}"))?;
            let w = usize::try_from(w)
                .ok()
                .filter(|&w| w > 0)
                .ok_or_else(|| format!("qmoe_stream row_len must be positive, found {w}"))?;
            match part {
                QmoePart::Codewords => {
                    let rows = rows
                        .as_ref()
                        .ok_or("qmoe_stream codewords needs `rows`")?
                        .eval(shape)
                        .map_err(|e| format!("qmoe_stream rows: {e}"))?;
                    let rows = u64::try_from(rows)
                        .map_err(|_| format!("qmoe_stream rows must be >= 0, found {rows}"))?;
                    let stream = dict.stream(key, rows, w, numel)?;
                    let vals: Vec<i128> = stream.into_iter().map(i128::from).collect();
                    write_ints(out, dtype, &vals, "qmoe_stream codewords")
                }
                QmoePart::RowOffsets => {
                    let name = codewords
                        .as_ref()
                        .ok_or("qmoe_stream row_offsets needs `codewords`")?;
                    let cw = deps(name)?;
                    let stream: Vec<u16> = (0..cw.numel() as usize)
                        .map(|i| cw.get_bits(i) as u16)
                        .collect();
                    if numel == 0 {
                        return Err("qmoe_stream row_offsets needs rows + 1 >= 1 elements".into());
                    }
                    let offs = dict.row_offsets(&stream, numel - 1, w)?;
                    write_ints(out, dtype, &offs, "qmoe_stream row_offsets")
                }
            }
        }
        Generator::DraftTokens {
            logits,
            parents,
            accept,
        } => {
            int_only(dtype, "draft_tokens")?;
            let logits = deps(logits)?;
            let parents = deps(parents)?;
            let tokens = draft_tokens(dims, &logits, &parents, *accept, key)?;
            write_ints(out, dtype, &tokens, "draft_tokens")
        }
    }
}

/// See [`Generator::DraftTokens`]. `dims` is [..., T]; `logits` is [..., T, V] with the same
/// leading dimensions; `parents` holds T codes.
fn draft_tokens(
    dims: &[u64],
    logits: &HostTensor,
    parents: &HostTensor,
    accept: f64,
    key: u64,
) -> Result<Vec<i128>, String> {
    let t = *dims
        .last()
        .ok_or("draft_tokens fills a tensor of at least one dimension ([..., T])")?
        as usize;
    let v = match logits.dims.split_last() {
        Some((v, lead)) if lead == dims => *v as usize,
        _ => {
            return Err(format!(
                "draft_tokens: logits are {:?}, expected the tokens' dimensions {dims:?} plus a \
                 vocabulary dimension",
                logits.dims
            ))
        }
    };
    if parents.numel() != t as u64 {
        return Err(format!(
            "draft_tokens: parents hold {} codes for {t} tree nodes",
            parents.numel()
        ));
    }
    if v == 0 {
        return Err("draft_tokens: the vocabulary is empty".into());
    }
    let rows = dims.iter().product::<u64>() as usize / t.max(1);
    let parent_of: Vec<usize> = (0..t)
        .map(|i| {
            if i == 0 {
                0
            } else {
                let code = parents.get_bits(i) as i128;
                let code = if parents.dtype.is_signed() {
                    sign_extend(code, parents.dtype.size_bytes() * 8)
                } else {
                    code
                };
                code.rem_euclid(i as i128) as usize
            }
        })
        .collect();
    // The argmax of every logits row, rows split across threads (up to 2^30 logits).
    let argmax = |row: usize| -> usize {
        let base = row * v;
        let mut best = (logits.get_f64(base), 0usize);
        for j in 1..v {
            let x = logits.get_f64(base + j);
            // Strictly greater: the first of equal maxima wins (torch.argmax's rule; generated
            // logits are finite).
            if x > best.0 {
                best = (x, j);
            }
        }
        best.1
    };
    let mut am = vec![0usize; rows * t];
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(32);
    let per = am.len().div_ceil(threads).max(1);
    std::thread::scope(|sc| {
        for (c, part) in am.chunks_mut(per).enumerate() {
            let argmax = &argmax;
            sc.spawn(move || {
                for (k, a) in part.iter_mut().enumerate() {
                    *a = argmax(c * per + k);
                }
            });
        }
    });
    let mut out = vec![0i128; rows * t];
    for r in 0..rows {
        let mut s = Stream::at(key, r as u64);
        for i in 0..t {
            let tok = if i == 0 {
                s.below(v as u64) as usize
            } else {
                let am = am[r * t + parent_of[i]];
                if s.uniform() < accept || v == 1 {
                    am
                } else {
                    // Uniform over the other v - 1 tokens.
                    let o = s.below(v as u64 - 1) as usize;
                    if o >= am {
                        o + 1
                    } else {
                        o
                    }
                }
            };
            out[r * t + i] = tok as i128;
        }
    }
    Ok(out)
}

/// See [`Generator::OutlierColumns`]. `spread` is (std, outlier_std, fraction).
fn outlier_columns(
    out: &mut [u8],
    dtype: DType,
    dims: &[u64],
    key: u64,
    spread: (f64, f64, f64),
    stress: Option<StressScale>,
) -> Result<(), String> {
    if !dtype.is_float() {
        return Err(format!(
            "generator `outlier_columns` makes floats, not {dtype}"
        ));
    }
    let (std, outlier_std, fraction) = spread;
    let size = dtype.size_bytes();
    let cols = dims.last().copied().unwrap_or(1).max(1) as usize;
    let n_out = ((fraction * cols as f64).round() as usize).clamp(1, cols);
    // The outlier columns: the first n_out of a random permutation (its own stream, past every
    // element's index).
    let mut order: Vec<usize> = (0..cols).collect();
    let mut s = Stream::at(key, u64::MAX);
    for i in 0..n_out {
        let j = i + s.below((cols - i) as u64) as usize;
        order.swap(i, j);
    }
    let mut outlier = vec![false; cols];
    for &c in &order[..n_out] {
        outlier[c] = true;
    }
    let clamp = codec::max_finite(dtype).unwrap_or(f64::MAX);
    let factor = stress.map_or(1.0, |sc| super::stress_factor(dtype, sc));
    par_fill(out, size, 1, |first, part| {
        for (j, e) in part.chunks_exact_mut(size).enumerate() {
            let idx = first + j as u64;
            let mut s = Stream::at(key, idx);
            // Unit-variance Student-t (3 degrees of freedom) under stress, else normal.
            let z = match stress {
                Some(_) => s.student_t(3.0) / 3f64.sqrt(),
                None => s.normal_pair().0,
            };
            let sd = if outlier[(idx % cols as u64) as usize] {
                outlier_std
            } else {
                std
            };
            let v = (factor * sd * z).clamp(-clamp, clamp);
            codec::write_float(dtype, v, Overflow::Saturate, e);
        }
    });
    Ok(())
}

fn sign_extend(bits: i128, width: usize) -> i128 {
    let shift = 128 - width;
    (bits << shift) >> shift
}

fn int_only(dtype: DType, what: &str) -> Result<(), String> {
    if dtype.is_integer() {
        Ok(())
    } else {
        Err(format!(
            "generator `{what}` fills integer words, not {dtype}"
        ))
    }
}

fn write_table(out: &mut [u8], dtype: DType, table: &[f64], what: &str) -> Result<(), String> {
    let size = dtype.size_bytes();
    if !dtype.is_float() {
        return Err(format!("generator `{what}` makes floats, not {dtype}"));
    }
    if out.len() / size != table.len() {
        return Err(format!(
            "generator `{what}` makes exactly {} values but the tensor has {}",
            table.len(),
            out.len() / size
        ));
    }
    for (e, v) in out.chunks_exact_mut(size).zip(table) {
        codec::write_float(dtype, *v, Overflow::Saturate, e);
    }
    Ok(())
}

fn write_ints(out: &mut [u8], dtype: DType, vals: &[i128], what: &str) -> Result<(), String> {
    let (lo, hi) = dtype
        .int_range()
        .filter(|_| dtype.is_integer())
        .ok_or_else(|| format!("generator `{what}` makes integers, not {dtype}"))?;
    if let Some(v) = vals.iter().find(|v| **v < lo || **v > hi) {
        return Err(format!(
            "generator `{what}`: value {v} does not fit dtype {dtype}"
        ));
    }
    for (e, v) in out.chunks_exact_mut(dtype.size_bytes()).zip(vals) {
        codec::write_int(dtype, *v, e);
    }
    Ok(())
}

/// bitsandbytes' `create_dynamic_map(signed, max_exponent_bits=7, total_bits=8)`: for each
/// exponent 10^(i-6), i = 0..7, the midpoints of `linspace(0.1, 1, k+1)` (k = 2^i signed,
/// 2^(i+1) unsigned) scaled by it (and negated when signed), plus 0 and 1, sorted.
/// bitsandbytes computes in float32 (torch.linspace's default dtype): we do the same, using
/// PyTorch's two-sided linspace formula (start + i*step in the first half, end - (n-1-i)*step
/// in the second), so the table matches the library's to the bit.
pub fn dynamic_map_8bit(signed: bool) -> Vec<f64> {
    let max_exponent_bits = 7;
    let mut data: Vec<f32> = Vec::with_capacity(256);
    for i in 0..max_exponent_bits {
        let items = if signed {
            (1 << i) + 1
        } else {
            (1 << (i + 1)) + 1
        };
        let b = linspace_f32(0.1, 1.0, items);
        let scale = 10f64.powi(i - (max_exponent_bits - 1)) as f32;
        for w in b.windows(2) {
            let mean = (w[0] + w[1]) / 2.0;
            data.push(scale * mean);
            if signed {
                data.push(-scale * mean);
            }
        }
    }
    data.push(0.0);
    data.push(1.0);
    data.resize(256, 0.0);
    data.sort_by(|a, b| a.total_cmp(b));
    data.into_iter().map(f64::from).collect()
}

fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (steps - 1 - i) as f32
            }
        })
        .collect()
}

/// `n` non-decreasing offsets from 0 to `total`, each gap at least `min_each`. Gap sizes follow
/// random exponential weights with about one gap in eight empty (when `min_each` is 0), so
/// segment kernels meet empty, tiny and large segments.
fn sorted_offsets(n: usize, total: i64, min_each: i64, key: u64) -> Result<Vec<i128>, String> {
    if n == 0 {
        return Err("sorted_offsets needs at least one element".to_string());
    }
    if total < 0 || min_each < 0 {
        return Err(format!(
            "sorted_offsets needs total >= 0 and min_each >= 0 (total {total}, min_each {min_each})"
        ));
    }
    let gaps = (n - 1) as i128;
    let rest = total as i128 - gaps * min_each as i128;
    if rest < 0 || (n == 1 && total != 0) {
        return Err(format!(
            "sorted_offsets cannot reach total {total} with {n} offsets and min_each {min_each}"
        ));
    }
    let mut s = Stream::at(key, 0);
    let weights: Vec<f64> = (0..gaps)
        .map(|_| {
            if s.below(8) == 0 {
                0.0
            } else {
                -s.uniform_open0().ln()
            }
        })
        .collect();
    let sum: f64 = weights.iter().sum();
    let mut out = Vec::with_capacity(n);
    out.push(0i128);
    let mut acc = 0.0;
    let mut prev = 0i128;
    for (k, w) in weights.iter().enumerate() {
        acc += w;
        let share = if k + 1 == weights.len() {
            rest
        } else if sum > 0.0 {
            ((rest as f64 * acc / sum).floor() as i128).clamp(prev, rest)
        } else {
            0
        };
        prev = share;
        out.push((k as i128 + 1) * min_each as i128 + share);
    }
    Ok(out)
}

/// Normal values per row (last dimension); sorted rows (codebook) or rows without two equal
/// values after rounding to the dtype (topk_distinct).
fn rows(
    out: &mut [u8],
    dtype: DType,
    dims: &[u64],
    key: u64,
    std: f64,
    distinct: bool,
) -> Result<(), String> {
    let what = if distinct {
        "topk_distinct"
    } else {
        "codebook"
    };
    if !dtype.is_float() {
        return Err(format!("generator `{what}` makes floats, not {dtype}"));
    }
    let size = dtype.size_bytes();
    let row = dims.last().copied().unwrap_or(1).max(1) as usize;
    if distinct {
        if let Some(f) = codec::NarrowFloat::for_dtype(dtype) {
            // Finite values, with +0 and -0 counted once.
            let count = 2 * f.max_finite_code() as usize + 1;
            if row > count {
                return Err(format!(
                    "topk_distinct: rows of {row} cannot be distinct in {dtype} ({count} finite values)"
                ));
            }
        }
    }
    let failure: Mutex<Option<String>> = Mutex::new(None);
    par_fill(out, size, row, |first, part| {
        let first_row = first / row as u64;
        for (r, chunk) in part.chunks_mut(row * size).enumerate() {
            let mut s = Stream::at(key, first_row + r as u64);
            let n = chunk.len() / size;
            let mut vals: Vec<(f64, usize)> = (0..n)
                .map(|i| {
                    let (z, _) = s.normal_pair();
                    let v = codec::round_to(dtype, std * z, Overflow::Saturate);
                    (if v == 0.0 { 0.0 } else { v }, i)
                })
                .collect();
            vals.sort_by(|a, b| a.0.total_cmp(&b.0));
            if distinct {
                // Push duplicates up one representable step at a time, stacking at the largest
                // finite value; then push what stacked back down. With at most as many values
                // as the dtype has, both passes fit.
                let max = codec::max_finite(dtype).unwrap_or(f64::MAX);
                for k in 1..vals.len() {
                    if vals[k].0 <= vals[k - 1].0 {
                        vals[k].0 = codec::next_up(dtype, vals[k - 1].0).unwrap_or(max);
                    }
                }
                for k in (0..vals.len().saturating_sub(1)).rev() {
                    if vals[k].0 >= vals[k + 1].0 {
                        match codec::next_down(dtype, vals[k + 1].0) {
                            Some(v) => vals[k].0 = v,
                            None => {
                                if let Ok(mut f) = failure.lock() {
                                    *f = Some(format!(
                                        "topk_distinct: ran out of distinct {dtype} values"
                                    ));
                                }
                                return;
                            }
                        }
                    }
                }
                for (v, i) in vals {
                    codec::write_float(
                        dtype,
                        v,
                        Overflow::Saturate,
                        &mut chunk[i * size..(i + 1) * size],
                    );
                }
            } else {
                for (k, (v, _)) in vals.into_iter().enumerate() {
                    codec::write_float(
                        dtype,
                        v,
                        Overflow::Saturate,
                        &mut chunk[k * size..(k + 1) * size],
                    );
                }
            }
        }
    });
    match failure.into_inner() {
        Ok(None) => Ok(()),
        Ok(Some(e)) => Err(e),
        Err(_) => Err(format!("generator `{what}`: a worker thread panicked")),
    }
}
