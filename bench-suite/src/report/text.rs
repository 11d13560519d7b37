//! Markdown, CSV and JSON renderings of a run summary and of a leaderboard.

use super::summary::{Baseline, RunSummary};
use super::{Leaderboard, ReportError};
use crate::report::metrics::HEADLINE_P;
use std::fmt::Write;

/// A table value with a fixed number of decimals per kind (so columns line up): speedups
/// with 2, percentages with 1, counts with none; "–" when absent.
pub(crate) fn opt(v: Option<f64>, suffix: &str) -> String {
    match v {
        Some(x) if x.is_finite() => match suffix {
            "×" => format!("{x:.2}×"),
            "%" => format!("{x:.1}%"),
            _ => format!("{x:.0}{suffix}"),
        },
        _ => "–".to_string(),
    }
}

pub(crate) fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

pub(crate) fn p_label(p: f64) -> String {
    // f64's Display prints 1.0 as "1" and 1.5 as "1.5", as KernelBench names them.
    format!("fast_{p}")
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// `YYYY-MM-DD HH:MM UTC` from Unix milliseconds (civil-from-days, no time zone database).
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

pub fn run_markdown(s: &RunSummary) -> String {
    let mut o = String::new();
    let r = &s.run;
    let _ = writeln!(o, "# kernelsmith report — run `{}`\n", md_cell(&r.name));
    let _ = writeln!(
        o,
        "agent **{}** · kind {} · suite {} · status {} · GPU {} · git {} · {}\n",
        md_cell(&r.agent),
        md_cell(&r.kind),
        md_cell(if r.suite.is_empty() { "–" } else { &r.suite }),
        r.status,
        md_cell(&if r.gpus.is_empty() {
            "–".to_string()
        } else {
            r.gpus.join(", ")
        }),
        md_cell(if r.git_rev.is_empty() {
            "–"
        } else {
            &r.git_rev
        }),
        utc(r.created_at_ms)
    );
    let _ = writeln!(o, "| metric | value |\n|---|---|");
    let rows = summary_rows(s);
    for (k, v) in rows {
        let _ = writeln!(o, "| {k} | {v} |");
    }

    let _ = writeln!(
        o,
        "\n## fast_p\n\nfast_p = share of all N tasks with a correct kernel more than p times faster than the baseline (KernelBench; failures count, strict >).\n"
    );
    let _ = write!(o, "| baseline |");
    for p in HEADLINE_P {
        let _ = write!(o, " {} |", p_label(p));
    }
    let _ = writeln!(
        o,
        " geomean speedup | measured |\n|---|---|---|---|---|---|---|"
    );
    for b in &s.baselines {
        let _ = write!(o, "| {} |", b.baseline.label());
        for (_, v) in &b.fast_p {
            let _ = write!(o, " {} |", pct(*v));
        }
        let _ = writeln!(
            o,
            " {} | {}/{} |",
            opt(b.geomean_speedup, "×"),
            b.measured,
            s.tasks_total
        );
    }

    let _ = writeln!(
        o,
        "\n## By category\n\n| category | tasks | correct | fast_1 vs reference | geomean vs reference | median SOL |\n|---|---|---|---|---|---|"
    );
    for cat in &s.categories {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} |",
            md_cell(&cat.category),
            cat.tasks,
            cat.correct,
            pct(cat.fast_1_ref),
            opt(cat.geomean_speedup_ref, "×"),
            opt(cat.median_sol_pct, "%")
        );
    }

    let _ = writeln!(
        o,
        "\n## % of speed-of-light (best kernel per task)\n\n| SOL % | tasks |\n|---|---|"
    );
    for (label, n) in &s.sol_histogram {
        let _ = writeln!(o, "| {label} | {n} |");
    }

    if s.generations.len() > 1 {
        let _ = writeln!(
            o,
            "\n## Search progress\n\n| generation | tasks solved | geomean best speedup vs reference |\n|---|---|---|"
        );
        for g in &s.generations {
            let _ = writeln!(
                o,
                "| {} | {} | {} |",
                g.generation,
                g.solved,
                opt(g.geomean_best_speedup, "×")
            );
        }
    }

    let _ = writeln!(
        o,
        "\n## Tasks\n\n| task | category | result | vs reference | vs eager | vs torch.compile | SOL | candidates | best gen | tokens | cost | tokens to first correct |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for t in &s.tasks {
        let result = if t.correct {
            "correct".to_string()
        } else {
            t.main_failure().unwrap_or("not attempted").to_string()
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | ${:.4} | {} |",
            md_cell(&t.task),
            md_cell(&t.category),
            result,
            opt(t.speedup_ref, "×"),
            opt(t.speedup_eager, "×"),
            opt(t.speedup_compile, "×"),
            opt(t.sol_pct, "%"),
            t.candidates,
            t.best_generation.map_or("–".to_string(), |g| g.to_string()),
            t.tokens_in + t.tokens_out,
            t.cost_usd,
            t.tokens_to_first_correct
                .map_or("–".to_string(), |x| x.to_string())
        );
    }
    o
}

pub fn leaderboard_markdown(l: &Leaderboard) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# kernelsmith leaderboard\n\nRanked by fast_1 vs {} (share of all N tasks with a correct kernel more than 1× faster; failures count, strict >), then geometric-mean speedup.\n",
        l.baseline.label()
    );
    let header = leaderboard_header();
    let _ = writeln!(o, "| {} |", header.join(" | "));
    let _ = writeln!(o, "|{}", "---|".repeat(header.len()));
    for (i, s) in l.rows.iter().enumerate() {
        let cells: Vec<String> = leaderboard_cells(l, i, s)
            .iter()
            .map(|c| md_cell(c))
            .collect();
        let _ = writeln!(o, "| {} |", cells.join(" | "));
    }
    o
}

fn csv_opt(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

pub fn run_csv(s: &RunSummary) -> Result<String, ReportError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "run",
        "agent",
        "task",
        "category",
        "correct",
        "main_failure",
        "speedup_ref",
        "speedup_eager",
        "speedup_compile",
        "sol_pct",
        "candidates",
        "evaluations",
        "quarantined",
        "best_generation",
        "llm_calls",
        "tokens_in",
        "tokens_out",
        "cost_usd",
        "tokens_to_first_correct",
    ])?;
    for t in &s.tasks {
        w.write_record([
            s.run.name.clone(),
            s.run.agent.clone(),
            t.task.clone(),
            t.category.clone(),
            t.correct.to_string(),
            t.main_failure().unwrap_or("").to_string(),
            csv_opt(t.speedup_ref),
            csv_opt(t.speedup_eager),
            csv_opt(t.speedup_compile),
            csv_opt(t.sol_pct),
            t.candidates.to_string(),
            t.evaluations.to_string(),
            t.quarantined.to_string(),
            t.best_generation.map(|g| g.to_string()).unwrap_or_default(),
            t.llm_calls.to_string(),
            t.tokens_in.to_string(),
            t.tokens_out.to_string(),
            t.cost_usd.to_string(),
            t.tokens_to_first_correct
                .map(|x| x.to_string())
                .unwrap_or_default(),
        ])?;
    }
    finish_csv(w)
}

pub fn leaderboard_csv(l: &Leaderboard) -> Result<String, ReportError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = [
        "rank",
        "run",
        "agent",
        "kind",
        "suite",
        "tasks",
        "correct",
        "correctness_rate",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for b in Baseline::ALL {
        for p in HEADLINE_P {
            header.push(format!("{}_vs_{}", p_label(p), baseline_key(b)));
        }
        header.push(format!("geomean_speedup_vs_{}", baseline_key(b)));
    }
    header.extend(
        [
            "median_sol_pct",
            "llm_calls",
            "tokens_in",
            "tokens_out",
            "cost_usd",
            "cost_per_task",
            "tokens_per_task",
            "median_tokens_to_first_correct",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    w.write_record(&header)?;
    for (i, s) in l.rows.iter().enumerate() {
        let mut rec = vec![
            (i + 1).to_string(),
            s.run.name.clone(),
            s.run.agent.clone(),
            s.run.kind.clone(),
            s.run.suite.clone(),
            s.tasks_total.to_string(),
            s.tasks_correct.to_string(),
            s.correctness_rate.to_string(),
        ];
        for b in Baseline::ALL {
            for p in HEADLINE_P {
                rec.push(s.fast(b, p).to_string());
            }
            rec.push(csv_opt(s.baseline(b).and_then(|x| x.geomean_speedup)));
        }
        rec.extend([
            csv_opt(s.median_sol_pct),
            s.cost.llm_calls.to_string(),
            s.cost.tokens_in.to_string(),
            s.cost.tokens_out.to_string(),
            s.cost.cost_usd.to_string(),
            s.cost.cost_per_task.to_string(),
            s.cost.tokens_per_task.to_string(),
            csv_opt(s.cost.median_tokens_to_first_correct),
        ]);
        w.write_record(&rec)?;
    }
    finish_csv(w)
}

pub(crate) fn baseline_key(b: Baseline) -> &'static str {
    match b {
        Baseline::Reference => "reference",
        Baseline::Eager => "eager",
        Baseline::Compile => "compile",
    }
}

fn finish_csv(w: csv::Writer<Vec<u8>>) -> Result<String, ReportError> {
    let bytes = w
        .into_inner()
        .map_err(|e| ReportError::Csv(e.into_error().into()))?;
    // Every field written was a Rust String, so the bytes are UTF-8.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The run's headline figures as (label, value) rows, shared by the Markdown and HTML reports.
pub(super) fn summary_rows(s: &RunSummary) -> Vec<(&'static str, String)> {
    let c = &s.cost;
    vec![
        ("tasks (N)", s.tasks_total.to_string()),
        (
            "correct",
            format!("{} ({})", s.tasks_correct, pct(s.correctness_rate)),
        ),
        ("median % of speed-of-light", opt(s.median_sol_pct, "%")),
        (
            "quarantined results (not ranked)",
            s.quarantined.to_string(),
        ),
        ("LLM calls", c.llm_calls.to_string()),
        (
            "tokens in / out",
            format!("{} / {}", c.tokens_in, c.tokens_out),
        ),
        ("cost", format!("${:.4}", c.cost_usd)),
        ("cost per task", format!("${:.4}", c.cost_per_task)),
        ("tokens per task", format!("{:.0}", c.tokens_per_task)),
        (
            "median tokens to first correct kernel",
            opt(c.median_tokens_to_first_correct, ""),
        ),
    ]
}

/// The leaderboard's column headers, shared by the Markdown and HTML renderers.
pub(super) fn leaderboard_header() -> Vec<String> {
    let mut h: Vec<String> = ["#", "run", "agent", "suite", "N", "correct"]
        .map(String::from)
        .to_vec();
    h.extend(HEADLINE_P.iter().map(|&p| p_label(p)));
    h.extend(
        [
            "geomean vs reference",
            "vs eager",
            "vs torch.compile",
            "median SOL",
            "cost/task",
            "tokens/task",
            "tokens to first correct",
        ]
        .map(String::from),
    );
    h
}

/// Columns of [`leaderboard_header`] that hold text (left-aligned in HTML).
pub(super) const LEADERBOARD_TEXT_COLUMNS: std::ops::RangeInclusive<usize> = 1..=3;

/// One leaderboard row's cells (unescaped), in [`leaderboard_header`]'s order; `i` is the
/// row's index (rank - 1).
pub(super) fn leaderboard_cells(l: &Leaderboard, i: usize, s: &RunSummary) -> Vec<String> {
    let mut c = vec![
        (i + 1).to_string(),
        s.run.name.clone(),
        s.run.agent.clone(),
        s.run.suite.clone(),
        s.tasks_total.to_string(),
        pct(s.correctness_rate),
    ];
    c.extend(HEADLINE_P.iter().map(|&p| pct(s.fast(l.baseline, p))));
    let g = |b: Baseline| opt(s.baseline(b).and_then(|x| x.geomean_speedup), "×");
    c.extend([
        g(Baseline::Reference),
        g(Baseline::Eager),
        g(Baseline::Compile),
        opt(s.median_sol_pct, "%"),
        format!("${:.4}", s.cost.cost_per_task),
        format!("{:.0}", s.cost.tokens_per_task),
        opt(s.cost.median_tokens_to_first_correct, ""),
    ]);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(1_795_000_000_000), "2026-11-18 11:06 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00 UTC");
    }

    #[test]
    fn labels() {
        assert_eq!(p_label(0.0), "fast_0");
        assert_eq!(p_label(1.0), "fast_1");
        assert_eq!(p_label(1.5), "fast_1.5");
        assert_eq!(md_cell("a|b\nc"), "a\\|b c");
    }
}
