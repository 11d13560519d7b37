use super::*;
use crate::task::Task;
use std::path::Path;
use std::time::Instant;

thread_local! {
    /// Forces [`par_fill`] onto one thread (and otherwise onto at least 3 parts), so tests can
    /// prove that splitting does not change values.
    pub(super) static SERIAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A task with one shape parameter `N` (and `R` rows) whose inputs are the given TOML lines.
fn task_with(inputs: &[&str]) -> Task {
    let mut text = String::from(
        "id = \"gen_test\"\ntitle = \"t\"\ncategory = \"test\"\n\
         [params]\nN = { min = 1 }\nR = { min = 1 }\n\
         [[shapes]]\nname = \"s\"\nN = 4096\nR = 8\n",
    );
    for i in inputs {
        text.push_str("[[inputs]]\n");
        text.push_str(i);
        text.push('\n');
    }
    text.push_str(
        "[[outputs]]\nname = \"y\"\ndtype = \"f32\"\nshape = [\"N\"]\n\
         [check]\nmetric = \"exact\"\n\
         [roofline]\nbytes = \"N\"\nflops = \"0\"\npeak = \"fp32\"\n",
    );
    match Task::parse(Path::new("test/task.toml"), &text) {
        Ok(t) => t,
        Err(e) => panic!("test task does not parse: {:?}\n{text}", e.diagnostics()),
    }
}

fn shape(n: i64, r: i64) -> Shape {
    Shape {
        name: "s".into(),
        values: [("N".to_string(), n), ("R".to_string(), r)]
            .into_iter()
            .collect(),
    }
}

fn gen(task: &Task, name: &str, sh: &Shape, seed: u64, v: Variant) -> HostTensor {
    let decl = task.input(name).expect("declared input");
    generate(task, decl, sh, seed, v).expect("generates")
}

fn values(t: &HostTensor) -> Vec<f64> {
    (0..t.numel() as usize).map(|i| t.get_f64(i)).collect()
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (
        m,
        (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n).sqrt(),
    )
}

#[test]
fn deterministic_and_keyed_by_everything() {
    let t = task_with(&[
        r#"name = "x"
dtype = "bf16"
shape = ["N"]
init = { dist = "normal", std = 1.0 }"#,
        r#"name = "w"
dtype = "bf16"
shape = ["N"]
init = { dist = "normal", std = 1.0 }"#,
    ]);
    let s = shape(1000, 2);
    let a = gen(&t, "x", &s, 1, Variant::Base);
    assert_eq!(a, gen(&t, "x", &s, 1, Variant::Base));
    assert_eq!(a.dims, vec![1000]);
    assert_eq!(a.bytes.len(), 2000);
    assert_ne!(a.bytes, gen(&t, "x", &s, 2, Variant::Base).bytes);
    assert_ne!(a.bytes, gen(&t, "w", &s, 1, Variant::Base).bytes);
    assert_ne!(
        a.bytes[..1000],
        gen(&t, "x", &shape(1000, 3), 1, Variant::Base).bytes[..1000]
    );
    // The shape's name does not matter, only its values.
    let mut renamed = s.clone();
    renamed.name = "heldout-3".into();
    assert_eq!(a, gen(&t, "x", &renamed, 1, Variant::Base));
    assert_eq!(a.checksum().len(), 64);
}

/// Values depend on element indices only: the same data whether or not it was split into
/// parallel parts, and a prefix of a longer tensor's data... is not promised (keys include
/// the shape), but splitting is.
#[test]
fn chunking_does_not_change_values() {
    let t = task_with(&[
        r#"name = "x"
dtype = "f32"
shape = ["N"]
init = { dist = "normal", std = 1.0 }"#,
        r#"name = "k"
dtype = "bf16"
shape = ["R", "N"]
init = { generator = "topk_distinct" }"#,
    ]);
    for (name, s) in [("x", shape(300_001, 3)), ("k", shape(20_001, 16))] {
        let decl = t.input(name).unwrap();
        let whole = gen(&t, name, &s, 9, Variant::Base);
        let key = tensor_key(&t, name, &s, 9, Variant::Base);
        let dims = whole.dims.clone();
        let init = decl.init.as_ref().unwrap();
        let mut serial = vec![0u8; whole.bytes.len()];
        SERIAL.with(|c| c.set(true));
        let no_deps = |n: &str| -> Result<HostTensor, String> { Err(format!("no input {n}")) };
        let at = Site {
            shape: &s,
            key,
            variant: Variant::Base,
            deps: &no_deps,
        };
        fill(init, decl.dtype, &dims, &at, &mut serial).unwrap();
        SERIAL.with(|c| c.set(false));
        assert_eq!(serial, whole.bytes, "{name}");
    }
}

#[test]
fn float_distributions_have_declared_moments_and_ranges() {
    let t = task_with(&[
        r#"name = "n"
dtype = "bf16"
shape = ["N"]
init = { dist = "normal", mean = 3.0, std = 2.0 }"#,
        r#"name = "u"
dtype = "bf16"
shape = ["N"]
init = { dist = "uniform", low = 0.5, high = 1.5 }"#,
        r#"name = "t"
dtype = "f32"
shape = ["N"]
init = { dist = "student_t", df = 3.0, scale = 1.0 }"#,
        r#"name = "c"
dtype = "f16"
shape = ["N"]
init = { dist = "constant", value = 0.1 }"#,
        r#"name = "e"
dtype = "e4m3"
shape = ["N"]
init = { dist = "normal", std = 100.0 }"#,
    ]);
    let s = shape(100_000, 1);
    let (m, sd) = mean_std(&values(&gen(&t, "n", &s, 1, Variant::Base)));
    assert!(
        (m - 3.0).abs() < 0.03 && (sd - 2.0).abs() < 0.03,
        "{m} {sd}"
    );
    let u = values(&gen(&t, "u", &s, 1, Variant::Base));
    assert!(u.iter().all(|v| (0.5..1.5).contains(v)));
    let (m, _) = mean_std(&u);
    assert!((m - 1.0).abs() < 0.01);
    let tv = values(&gen(&t, "t", &s, 1, Variant::Base));
    let big = tv.iter().filter(|v| v.abs() > 10.0).count();
    assert!(
        big > 20,
        "student_t(3) has heavy tails: {big} values beyond 10"
    );
    let c = values(&gen(&t, "c", &s, 1, Variant::Base));
    assert!(c.iter().all(|v| *v == half::f16::from_f32(0.1).to_f64()));
    // e4m3 saturates instead of producing NaN for values beyond 448.
    let e = values(&gen(&t, "e", &s, 1, Variant::Base));
    assert!(e.iter().all(|v| v.is_finite() && v.abs() <= 448.0));
    assert!(e.iter().any(|v| v.abs() == 448.0));
}

#[test]
fn randint_fits_integer_and_float_dtypes() {
    let t = task_with(&[
        r#"name = "q"
dtype = "u8"
shape = ["N"]
init = { dist = "randint", low = 0, high = 256 }"#,
        r#"name = "i"
dtype = "i64"
shape = ["N"]
init = { dist = "randint", low = -5, high = 5 }"#,
        r#"name = "f"
dtype = "bf16"
shape = ["N"]
init = { dist = "randint", low = -8, high = 9 }"#,
        r#"name = "bad"
dtype = "f16"
shape = ["N"]
init = { dist = "randint", low = 0, high = 5000 }"#,
        r#"name = "b"
dtype = "bool"
shape = ["N"]
init = { dist = "randint", low = 0, high = 2 }"#,
    ]);
    let s = shape(50_000, 1);
    let q = gen(&t, "q", &s, 4, Variant::Base);
    let mut seen = [false; 256];
    for b in &q.bytes {
        seen[*b as usize] = true;
    }
    assert!(seen.iter().all(|x| *x), "every byte value appears");
    let i = values(&gen(&t, "i", &s, 4, Variant::Base));
    assert!(i.iter().all(|v| (-5.0..5.0).contains(v)) && i.contains(&-5.0) && i.contains(&4.0));
    let f = values(&gen(&t, "f", &s, 4, Variant::Base));
    assert!(f
        .iter()
        .all(|v| v.fract() == 0.0 && (-8.0..9.0).contains(v)));
    let err = generate(&t, t.input("bad").unwrap(), &s, 4, Variant::Base).unwrap_err();
    assert!(
        err.to_string().contains("bad") && err.to_string().contains("not exact"),
        "{err}"
    );
    let b = gen(&t, "b", &s, 4, Variant::Base);
    assert!(b.bytes.iter().all(|x| *x <= 1) && b.bytes.contains(&1) && b.bytes.contains(&0));
}

#[test]
fn stress_is_heavy_tailed_rescaled_and_respects_opt_out() {
    let t = task_with(&[
        r#"name = "x"
dtype = "f32"
shape = ["N"]
init = { dist = "normal", std = 1.0 }"#,
        r#"name = "p"
dtype = "f32"
shape = ["N"]
init = { dist = "uniform", low = 0.0, high = 1.0, stress = false }"#,
        r#"name = "q"
dtype = "i32"
shape = ["N"]
init = { dist = "randint", low = 0, high = 10 }"#,
        r#"name = "h"
dtype = "f16"
shape = ["N"]
init = { dist = "normal", std = 1.0 }"#,
    ]);
    let s = shape(100_000, 1);
    let base = values(&gen(&t, "x", &s, 1, Variant::Base));
    let up = values(&gen(&t, "x", &s, 1, Variant::Stress(StressScale::Up)));
    let down = values(&gen(&t, "x", &s, 1, Variant::Stress(StressScale::Down)));
    let max_abs = |v: &[f64]| v.iter().fold(0f64, |a, x| a.max(x.abs()));
    let med_abs = |v: &[f64]| {
        let mut a: Vec<f64> = v.iter().map(|x| x.abs()).collect();
        a.sort_by(|x, y| x.total_cmp(y));
        a[a.len() / 2]
    };
    assert!(med_abs(&up) > 300.0 && med_abs(&down) < 3e-3, "rescaled");
    // Heavy tails: the max/median ratio is far beyond a normal's (~6.5 for 1e5 samples).
    assert!(max_abs(&up) / med_abs(&up) > 30.0);
    assert!(max_abs(&base) / med_abs(&base) < 10.0);
    // Opted-out and integer inputs do not change under stress.
    for name in ["p", "q"] {
        assert_eq!(
            gen(&t, name, &s, 1, Variant::Base).bytes.len(),
            gen(&t, name, &s, 1, Variant::Stress(StressScale::Up))
                .bytes
                .len()
        );
        let a = values(&gen(&t, name, &s, 1, Variant::Base));
        let b = values(&gen(&t, name, &s, 1, Variant::Stress(StressScale::Up)));
        let (ma, _) = mean_std(&a);
        let (mb, _) = mean_std(&b);
        assert!((ma - mb).abs() < 0.1, "{name} keeps its distribution");
        assert!(
            b.iter().all(|v| (0.0..10.0).contains(v)),
            "{name} keeps its range"
        );
    }
    let h = values(&gen(&t, "h", &s, 1, Variant::Stress(StressScale::Up)));
    assert!(
        h.iter().all(|v| v.is_finite()),
        "stress stays finite in f16"
    );
}

#[test]
fn structured_generators() {
    let t = task_with(&[
        r#"name = "nf4"
dtype = "f32"
shape = ["16"]
init = { generator = "nf4_table" }"#,
        r#"name = "dmap"
dtype = "f32"
shape = ["256"]
init = { generator = "dynamic_map_8bit" }"#,
        r#"name = "umap"
dtype = "f32"
shape = ["256"]
init = { generator = "dynamic_map_8bit", signed = false }"#,
        r#"name = "off"
dtype = "i32"
shape = ["R + 1"]
init = { generator = "sorted_offsets", total = "N", min_each = 3 }"#,
        r#"name = "perm"
dtype = "i32"
shape = ["N"]
init = { generator = "permutation" }"#,
        r#"name = "bits"
dtype = "u32"
shape = ["N"]
init = { generator = "sparse_bitmap", density = 0.25 }"#,
        r#"name = "bits_r"
dtype = "u64"
shape = ["N"]
init = { generator = "sparse_bitmap", density_percent = "R * 5" }"#,
        r#"name = "codes"
dtype = "u32"
shape = ["N"]
init = { generator = "packed_codes", bits = 3 }"#,
        r#"name = "cb"
dtype = "f16"
shape = ["R", "N"]
init = { generator = "codebook" }"#,
        r#"name = "tk"
dtype = "bf16"
shape = ["R", "N"]
init = { generator = "topk_distinct" }"#,
        r#"name = "tk8"
dtype = "e4m3"
shape = ["R", "N"]
init = { generator = "topk_distinct" }"#,
        r#"name = "nf4bad"
dtype = "f32"
shape = ["N"]
init = { generator = "nf4_table" }"#,
    ]);
    let s = shape(4096, 8);
    let nf4 = values(&gen(&t, "nf4", &s, 0, Variant::Base));
    assert_eq!(nf4[1], generators::NF4_LEVELS[1] as f32 as f64);
    assert!((nf4[1] + 0.6961928).abs() < 1e-7);
    assert_eq!(nf4[0], -1.0);
    assert_eq!(nf4[15], 1.0);
    assert_eq!(nf4[7], 0.0);

    let dm = values(&gen(&t, "dmap", &s, 0, Variant::Base));
    assert!(dm.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(dm[255], 1.0);
    assert_eq!(dm.iter().filter(|v| **v == 0.0).count(), 1);
    assert_eq!(dm.iter().filter(|v| **v > 0.0).count(), 128);
    // Largest below 1: the last midpoint of linspace(0.1, 1, 65) in float32.
    assert!((dm[254] - 0.99296875).abs() < 1e-7, "{}", dm[254]);
    // Smallest positive: 1e-6 * (0.1 + 1) / 2.
    let min_pos = dm
        .iter()
        .copied()
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min);
    assert!((min_pos - 5.5e-7).abs() < 1e-12, "{min_pos}");
    // Symmetric except for 1.0, which has no negative twin (bitsandbytes appends 0 and 1).
    assert!(dm.iter().all(|v| *v == 1.0 || dm.contains(&-v)));
    assert_eq!(dm.iter().filter(|v| **v < 0.0).count(), 127);
    let um = values(&gen(&t, "umap", &s, 0, Variant::Base));
    assert!(um.iter().all(|v| *v >= 0.0) && um[255] == 1.0);
    assert_eq!(um.iter().filter(|v| **v == 0.0).count(), 1);

    let off = values(&gen(&t, "off", &s, 5, Variant::Base));
    assert_eq!(off.len(), 9);
    assert_eq!(off[0], 0.0);
    assert_eq!(off[8], 4096.0);
    assert!(off.windows(2).all(|w| w[1] - w[0] >= 3.0));

    let mut p: Vec<i64> = values(&gen(&t, "perm", &s, 5, Variant::Base))
        .into_iter()
        .map(|v| v as i64)
        .collect();
    assert_ne!(p, (0..4096).collect::<Vec<i64>>());
    p.sort();
    assert_eq!(p, (0..4096).collect::<Vec<i64>>());

    let bits = gen(&t, "bits", &s, 5, Variant::Base);
    let ones: u32 = bits.bytes.iter().map(|b| b.count_ones()).sum();
    let frac = ones as f64 / (bits.bytes.len() * 8) as f64;
    assert!((frac - 0.25).abs() < 0.01, "{frac}");
    // density_percent follows the shape: R * 5 percent of the bits.
    for (r, want) in [(2, 0.10), (8, 0.40), (20, 1.0), (0, 0.0)] {
        let bits = gen(&t, "bits_r", &shape(4096, r), 5, Variant::Base);
        let ones: u32 = bits.bytes.iter().map(|b| b.count_ones()).sum();
        let frac = ones as f64 / (bits.bytes.len() * 8) as f64;
        assert!((frac - want).abs() < 0.01, "R = {r}: {frac}");
    }
    let decl = t.input("bits_r").expect("declared");
    let e = generate(&t, decl, &shape(4096, 21), 5, Variant::Base)
        .expect_err("105 percent")
        .to_string();
    assert!(e.contains("105") && e.contains("0 to 100"), "{e}");

    let codes = gen(&t, "codes", &s, 5, Variant::Base);
    let words: Vec<u64> = (0..4096).map(|i| codes.get_bits(i)).collect();
    assert!(
        words.iter().all(|w| w >> 30 == 0),
        "10 codes of 3 bits, top 2 bits clear"
    );
    let sevens = words.iter().filter(|w| **w & 7 == 7).count();
    assert!(sevens > 350 && sevens < 700, "{sevens}");

    let cb = values(&gen(&t, "cb", &s, 5, Variant::Base));
    for r in cb.chunks(4096) {
        assert!(r.windows(2).all(|w| w[0] <= w[1]));
    }
    let tk = values(&gen(&t, "tk", &s, 5, Variant::Base));
    for r in tk.chunks(4096) {
        let mut sorted = r.to_vec();
        sorted.sort_by(|a, b| a.total_cmp(b));
        assert!(sorted.windows(2).all(|w| w[0] < w[1]), "distinct in bf16");
        assert!(
            r.windows(2).any(|w| w[0] > w[1]),
            "not sorted: positions are random"
        );
    }
    let err = generate(&t, t.input("tk8").unwrap(), &s, 5, Variant::Base).unwrap_err();
    assert!(err.message.contains("cannot be distinct"), "{err}");
    let small = shape(200, 2);
    let tk8 = values(&gen(&t, "tk8", &small, 5, Variant::Base));
    for r in tk8.chunks(200) {
        let mut sorted = r.to_vec();
        sorted.sort_by(|a, b| a.total_cmp(b));
        assert!(sorted.windows(2).all(|w| w[0] < w[1]), "distinct in e4m3");
    }
    let err = generate(&t, t.input("nf4bad").unwrap(), &s, 0, Variant::Base).unwrap_err();
    assert!(err.message.contains("exactly 16"), "{err}");
    let err = generate(&t, t.input("off").unwrap(), &shape(10, 8), 0, Variant::Base).unwrap_err();
    assert!(err.message.contains("cannot reach total"), "{err}");
}

/// 256 MB of f32 normal. Debug builds are ~10x slower than release; the bound is generous.
#[test]
fn throughput_256mb_f32_normal() {
    let t = task_with(&[r#"name = "x"
dtype = "f32"
shape = ["N"]
init = { dist = "normal", std = 1.0 }"#]);
    let s = shape(64 << 20, 1);
    let start = Instant::now();
    let x = gen(&t, "x", &s, 1, Variant::Base);
    let secs = start.elapsed().as_secs_f64();
    let mb = x.bytes.len() as f64 / 1e6;
    eprintln!(
        "generated {mb:.0} MB f32 normal in {secs:.2} s: {:.0} MB/s ({} threads, {})",
        mb / secs,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    assert!(mb / secs > 10.0, "{:.1} MB/s", mb / secs);
}

#[test]
fn fresh_seeds_differ() {
    let seeds: std::collections::BTreeSet<u64> = (0..16).map(|_| fresh_seed()).collect();
    assert_eq!(seeds.len(), 16);
}

/// Logits [R, N/64, 64] (R rows of a tree of T = N/64 nodes over a vocabulary of 64), parent
/// codes [T] and draft tokens [R, T] that agree with the parent's argmax at rate `accept`.
fn draft_task(accept: &str, logits_init: &str) -> Task {
    task_with(&[
        &format!(
            "name = \"logits\"\ndtype = \"bf16\"\nshape = [\"R\", \"N / 64\", \"64\"]\ninit = {logits_init}"
        ),
        "name = \"parent_code\"\ndtype = \"i32\"\nshape = [\"N / 64\"]\ninit = { dist = \"randint\", low = -1000, high = 1000000 }",
        &format!(
            "name = \"tokens\"\ndtype = \"i32\"\nshape = [\"R\", \"N / 64\"]\ninit = {{ generator = \"draft_tokens\", logits = \"logits\", parents = \"parent_code\"{accept} }}"
        ),
    ])
}

/// The agreement rate of `tokens` with the argmax of their parents' logits (first maximum wins),
/// after checking every token is in the vocabulary.
fn agreement(t: &Task, sh: &Shape, seed: u64) -> f64 {
    let logits = gen(t, "logits", sh, seed, Variant::Base);
    let parents = gen(t, "parent_code", sh, seed, Variant::Base);
    let tokens = gen(t, "tokens", sh, seed, Variant::Base);
    let (rows, nodes, vocab) = (
        logits.dims[0] as usize,
        logits.dims[1] as usize,
        logits.dims[2] as usize,
    );
    let (mut agree, mut total) = (0, 0);
    for r in 0..rows {
        for i in 0..nodes {
            let tok = tokens.get_f64(r * nodes + i);
            assert!((0.0..vocab as f64).contains(&tok), "token {tok}");
            if i == 0 {
                continue;
            }
            let p = (parents.get_f64(i) as i64).rem_euclid(i as i64) as usize;
            let row: Vec<f64> = (0..vocab)
                .map(|j| logits.get_f64((r * nodes + p) * vocab + j))
                .collect();
            let best = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let am = row.iter().position(|x| *x == best).unwrap();
            agree += usize::from(tok as usize == am);
            total += 1;
        }
    }
    agree as f64 / total as f64
}

#[test]
fn draft_tokens_follow_their_parents_argmax_at_the_declared_rate() {
    let normal = "{ dist = \"normal\" }";
    let sh = shape(64 * 100, 40); // 40 sequences, trees of 100 nodes: 3960 edges
    let t = draft_task(", accept = 0.8", normal);
    let a = agreement(&t, &sh, 3);
    assert!((a - 0.8).abs() < 0.03, "agreement {a}");
    // Deterministic, and a different seed draws different tokens.
    assert_eq!(
        gen(&t, "tokens", &sh, 3, Variant::Base),
        gen(&t, "tokens", &sh, 3, Variant::Base)
    );
    assert_ne!(
        gen(&t, "tokens", &sh, 3, Variant::Base),
        gen(&t, "tokens", &sh, 4, Variant::Base)
    );
    assert_eq!(
        agreement(&draft_task(", accept = 1.0", normal), &sh, 5),
        1.0
    );
    assert_eq!(
        agreement(&draft_task(", accept = 0.0", normal), &sh, 5),
        0.0
    );
    // The default rate, and ties (integer logits in {0, 1}: many equal maxima) resolved to the
    // first maximum, as torch.argmax does.
    let a = agreement(&draft_task("", normal), &sh, 6);
    assert!((a - 0.75).abs() < 0.03, "default agreement {a}");
    let ties = draft_task(
        ", accept = 1.0",
        "{ dist = \"randint\", low = 0, high = 2 }",
    );
    assert_eq!(agreement(&ties, &sh, 7), 1.0);
    // Under the stress variant the tokens follow the stressed logits.
    let t = draft_task(", accept = 1.0", normal);
    let stressed = Variant::Stress(StressScale::Up);
    assert_ne!(
        gen(&t, "logits", &sh, 3, stressed),
        gen(&t, "logits", &sh, 3, Variant::Base)
    );
    let _ = gen(&t, "tokens", &sh, 3, stressed);
}

#[test]
fn draft_tokens_with_mismatched_dependencies_is_an_error_not_a_panic() {
    // Logits whose leading dimensions differ from the tokens'.
    let t = task_with(&[
        "name = \"logits\"\ndtype = \"f32\"\nshape = [\"R\", \"64\"]\ninit = { dist = \"normal\" }",
        "name = \"parent_code\"\ndtype = \"i32\"\nshape = [\"N\"]\ninit = { dist = \"randint\", low = 0, high = 9 }",
        "name = \"tokens\"\ndtype = \"i32\"\nshape = [\"R\", \"N\"]\ninit = { generator = \"draft_tokens\", logits = \"logits\", parents = \"parent_code\" }",
    ]);
    let decl = t.input("tokens").unwrap();
    let e = generate(&t, decl, &shape(16, 2), 1, Variant::Base).unwrap_err();
    assert!(
        e.to_string().contains("draft_tokens: logits are [2, 64]"),
        "{e}"
    );
}

#[test]
fn draft_tokens_must_read_earlier_inputs_of_the_right_kind() {
    let parse = |inputs: &[&str]| {
        let mut text = String::from(
            "id = \"gen_test\"\ntitle = \"t\"\ncategory = \"test\"\n[params]\nN = { min = 1 }\n\
             [[shapes]]\nname = \"s\"\nN = 8\n",
        );
        for i in inputs {
            text.push_str("[[inputs]]\n");
            text.push_str(i);
            text.push('\n');
        }
        text.push_str(
            "[[outputs]]\nname = \"y\"\ndtype = \"f32\"\nshape = [\"N\"]\n[check]\nmetric = \"exact\"\n\
             [roofline]\nbytes = \"N\"\nflops = \"0\"\npeak = \"fp32\"\n",
        );
        Task::parse(Path::new("test/task.toml"), &text)
            .err()
            .map(|e| format!("{:?}", e.diagnostics()))
            .unwrap_or_default()
    };
    let logits =
        "name = \"logits\"\ndtype = \"f32\"\nshape = [\"N\", \"8\"]\ninit = { dist = \"normal\" }";
    let parents = "name = \"pc\"\ndtype = \"i32\"\nshape = [\"N\"]\ninit = { dist = \"randint\", low = 0, high = 9 }";
    let tokens = |extra: &str| {
        format!("name = \"tok\"\ndtype = \"i32\"\nshape = [\"N\"]\ninit = {{ generator = \"draft_tokens\", {extra} }}")
    };
    assert_eq!(
        parse(&[
            logits,
            parents,
            &tokens("logits = \"logits\", parents = \"pc\"")
        ]),
        ""
    );
    // Declared after the tokens: not readable (this is also what rules out cycles).
    let e = parse(&[
        parents,
        &tokens("logits = \"logits\", parents = \"pc\""),
        logits,
    ]);
    assert!(
        e.contains("`logits` is not an input declared before this one (declared before: pc)"),
        "{e}"
    );
    let e = parse(&[
        logits,
        parents,
        &tokens("logits = \"logit\", parents = \"pc\""),
    ]);
    assert!(e.contains("did you mean `logits`?"), "{e}");
    let e = parse(&[
        logits,
        parents,
        &tokens("logits = \"pc\", parents = \"logits\""),
    ]);
    assert!(
        e.contains("`pc` is i32, but `logits` must be a float input"),
        "{e}"
    );
    assert!(
        e.contains("`logits` is f32, but `parents` must be an integer input"),
        "{e}"
    );
    let e = parse(&[logits, parents, &tokens("logits = \"logits\"")]);
    assert!(e.contains("parents"), "{e}");
    let e = parse(&[
        logits,
        parents,
        &tokens("logits = \"logits\", parents = \"pc\", accept = 1.5"),
    ]);
    assert!(e.contains("accept must be in [0, 1], found 1.5"), "{e}");
}

#[test]
fn outlier_columns_plant_whole_outlier_features() {
    let t = task_with(&[
        "name = \"x\"\ndtype = \"f16\"\nshape = [\"R\", \"N\"]\ninit = { generator = \"outlier_columns\", std = 1.0, outlier_std = 20.0, fraction = 0.005 }",
    ]);
    let sh = shape(4096, 64);
    // Columns whose largest magnitude reaches LLM.int8()'s threshold 6.
    let outliers = |v: Variant| -> Vec<usize> {
        let x = gen(&t, "x", &sh, 2, v);
        let (rows, cols) = (x.dims[0] as usize, x.dims[1] as usize);
        (0..cols)
            .filter(|&c| (0..rows).any(|r| x.get_f64(r * cols + c).abs() >= 6.0))
            .collect()
    };
    let base = outliers(Variant::Base);
    assert_eq!(base.len(), 20, "round(0.005 * 4096) columns: {base:?}");
    assert_eq!(base, outliers(Variant::Base), "deterministic");
    let x = gen(&t, "x", &sh, 2, Variant::Base);
    let col: Vec<f64> = (0..64).map(|r| x.get_f64(r * 4096 + base[0])).collect();
    let (_, sd) = mean_std(&col);
    assert!((10.0..30.0).contains(&sd), "outlier column spread {sd}");
    // Stress: scaled up, nearly every column crosses the threshold; scaled down, none does.
    assert!(outliers(Variant::Stress(StressScale::Up)).len() > 4000);
    assert!(outliers(Variant::Stress(StressScale::Down)).is_empty());
    // Another seed picks other columns; at least one column even when fraction * C < 0.5.
    assert_ne!(base, {
        let x = gen(&t, "x", &sh, 3, Variant::Base);
        (0..4096)
            .filter(|&c| (0..64).any(|r| x.get_f64(r * 4096 + c).abs() >= 6.0))
            .collect::<Vec<_>>()
    });
    let narrow = shape(64, 8);
    let x = gen(&t, "x", &narrow, 1, Variant::Base);
    let big = (0..64)
        .filter(|&c| (0..8).any(|r| x.get_f64(r * 64 + c).abs() >= 6.0))
        .count();
    assert!(big >= 1, "one planted column of 64");
}

#[test]
fn huffman_stream_keys_are_checked_at_load() {
    let parse = |stream: &str| {
        let text = format!(
            "id = \"gen_test\"\ntitle = \"t\"\ncategory = \"test\"\n[params]\nN = {{ min = 1 }}\nNCH = {{ min = 1 }}\n\
             [[shapes]]\nname = \"s\"\nN = 100\nNCH = 8\n\
             [[inputs]]\nname = \"lut\"\ndtype = \"i32\"\nshape = [\"65536\"]\ninit = {{ generator = \"huffman_lut\" }}\n\
             [[inputs]]\nname = \"bits\"\ndtype = \"u8\"\nshape = [\"8*NCH + 4\"]\ninit = {{ generator = \"huffman_stream\", part = \"bits\", lut = \"lut\", symbols = \"N\" }}\n\
             [[inputs]]\nname = \"g\"\ndtype = \"u8\"\nshape = [\"NCH\"]\ninit = {stream}\n\
             [[outputs]]\nname = \"y\"\ndtype = \"f32\"\nshape = [\"N\"]\n[check]\nmetric = \"exact\"\n\
             [roofline]\nbytes = \"N\"\nflops = \"0\"\npeak = \"fp32\"\n"
        );
        Task::parse(Path::new("test/task.toml"), &text)
            .err()
            .map(|e| format!("{:?}", e.diagnostics()))
            .unwrap_or_default()
    };
    let ok = parse(
        "{ generator = \"huffman_stream\", part = \"gaps\", lut = \"lut\", bits = \"bits\" }",
    );
    assert_eq!(ok, "");
    let e = parse(
        "{ generator = \"huffman_stream\", part = \"gapz\", lut = \"lut\", bits = \"bits\" }",
    );
    assert!(
        e.contains("unknown part `gapz`") && e.contains("did you mean `gaps`?"),
        "{e}"
    );
    let e = parse("{ generator = \"huffman_stream\", part = \"gaps\", lut = \"lut\" }");
    assert!(e.contains("bits"), "gaps without bits: {e}");
    let e = parse("{ generator = \"huffman_stream\", part = \"gaps\", lut = \"lut\", bits = \"bits\", symbols = \"N\" }");
    assert!(e.contains("symbols"), "gaps takes no symbols: {e}");
    let e = parse("{ generator = \"huffman_stream\", part = \"block_offsets\", lut = \"lut\", bits = \"bits\", symbols = \"N\" }");
    assert!(
        e.contains("cannot make dtype u8"),
        "block offsets are i32: {e}"
    );
}
