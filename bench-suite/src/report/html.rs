//! Self-contained HTML pages: inline CSS and inline SVG, no script, no external resource.

use super::metrics::HEADLINE_P;
use super::summary::{Baseline, RunSummary};
use super::svg::{self, esc, Bar, LineChart, Series};
use super::text::{
    leaderboard_cells, leaderboard_header, opt, p_label, pct, summary_rows, utc,
    LEADERBOARD_TEXT_COLUMNS,
};
use super::Leaderboard;
use std::fmt::Write;

const STYLE: &str = "body{font-family:'DejaVu Sans','Liberation Sans',Arial,sans-serif;margin:24px;color:#222;max-width:1400px}\
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc;padding-bottom:3px}\
.meta{color:#555;margin-bottom:16px}table{border-collapse:collapse;margin:8px 0;font-size:13px}\
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}\
td.l,th.l{text-align:left;white-space:nowrap}tr.fail td,td.failed{color:#a33}.charts{display:flex;flex-wrap:wrap;gap:16px}\
.chart{border:1px solid #ddd;max-width:100%;height:auto}.note{color:#666;font-size:12px}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n",
        esc(title)
    )
}

fn fast_p_table(o: &mut String, s: &RunSummary) {
    let _ = write!(
        o,
        "<table id=\"fastp\"><thead><tr><th class=\"l\">baseline</th>"
    );
    for p in HEADLINE_P {
        let _ = write!(o, "<th>{}</th>", p_label(p));
    }
    let _ = write!(
        o,
        "<th>geomean speedup</th><th>measured</th></tr></thead><tbody>"
    );
    for b in &s.baselines {
        let _ = write!(o, "<tr><td class=\"l\">{}</td>", b.baseline.label());
        for (_, v) in &b.fast_p {
            let _ = write!(o, "<td>{}</td>", pct(*v));
        }
        let _ = write!(
            o,
            "<td>{}</td><td>{}/{}</td></tr>",
            opt(b.geomean_speedup, "×"),
            b.measured,
            s.tasks_total
        );
    }
    o.push_str("</tbody></table>");
}

pub fn run_html(s: &RunSummary) -> String {
    let r = &s.run;
    let mut o = String::new();
    let _ = write!(
        o,
        "<h1>kernelsmith report — run <code>{}</code></h1><div class=\"meta\">agent <b>{}</b> · kind {} · suite {} · status {} · GPU {} · git {} · {}</div>",
        esc(&r.name),
        esc(&r.agent),
        esc(&r.kind),
        esc(if r.suite.is_empty() { "–" } else { &r.suite }),
        esc(&r.status),
        esc(&if r.gpus.is_empty() { "–".to_string() } else { r.gpus.join(", ") }),
        esc(if r.git_rev.is_empty() { "–" } else { &r.git_rev }),
        utc(r.created_at_ms)
    );
    let _ = write!(o, "<table id=\"summary\"><tbody>");
    let rows = summary_rows(s);
    for (k, v) in rows {
        let _ = write!(o, "<tr><th class=\"l\">{k}</th><td>{}</td></tr>", esc(&v));
    }
    o.push_str("</tbody></table>");

    o.push_str("<h2>fast_p</h2><p class=\"note\">Share of all N tasks with a correct kernel more than p times faster than the baseline, as KernelBench defines it: failures count in N, the comparison is strict.</p>");
    fast_p_table(&mut o, s);

    o.push_str("<h2>Charts</h2><div class=\"charts\">");
    let bars: Vec<Bar> = s
        .tasks
        .iter()
        .map(|t| Bar {
            label: t.task.clone(),
            value: if t.correct { t.speedup_ref } else { None },
            note: t.main_failure().unwrap_or("correct").to_string(),
        })
        .collect();
    o.push_str(&svg::speedup_bars(
        "chart-speedup",
        "Best speedup per task vs reference (log scale; × = no correct kernel)",
        "speedup vs reference",
        &bars,
    ));
    let series: Vec<Series> = s
        .baselines
        .iter()
        .filter(|b| b.measured > 0 || b.baseline == Baseline::Reference)
        .map(|b| Series {
            name: format!("vs {}", b.baseline.label()),
            points: b.curve.clone(),
            step: true,
        })
        .collect();
    o.push_str(&svg::line_chart(&LineChart {
        id: "chart-fastp",
        title: "fast_p over p",
        x_label: "p (speedup threshold)",
        y_label: "fast_p",
        series: &series,
        y_max: Some(1.0),
        markers: &[1.0, 1.5, 2.0],
        y_percent: true,
    }));
    o.push_str(&svg::histogram(
        "chart-sol",
        "% of speed-of-light, best kernel per task",
        "% of speed-of-light",
        &s.sol_histogram,
    ));
    if !s.generations.is_empty() {
        let series = [Series {
            name: "geomean best speedup".to_string(),
            points: s
                .generations
                .iter()
                .filter_map(|g| g.geomean_best_speedup.map(|v| (g.generation as f64, v)))
                .collect(),
            step: false,
        }];
        o.push_str(&svg::line_chart(&LineChart {
            id: "chart-generations",
            title: "Best speedup vs reference per generation (geomean over solved tasks)",
            x_label: "generation",
            y_label: "speedup vs reference",
            series: &series,
            y_max: None,
            markers: &[],
            y_percent: false,
        }));
    }
    o.push_str("</div>");

    o.push_str("<h2>By category</h2><table id=\"categories\"><thead><tr><th class=\"l\">category</th><th>tasks</th><th>correct</th><th>fast_1 vs reference</th><th>geomean vs reference</th><th>median SOL</th></tr></thead><tbody>");
    for cat in &s.categories {
        let _ = write!(
            o,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&cat.category),
            cat.tasks,
            cat.correct,
            pct(cat.fast_1_ref),
            opt(cat.geomean_speedup_ref, "×"),
            opt(cat.median_sol_pct, "%")
        );
    }
    o.push_str("</tbody></table>");

    if s.generations.len() > 1 {
        o.push_str("<h2>Search progress</h2><table id=\"generations\"><thead><tr><th>generation</th><th>tasks solved</th><th>geomean best speedup vs reference</th></tr></thead><tbody>");
        for g in &s.generations {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                g.generation,
                g.solved,
                opt(g.geomean_best_speedup, "×")
            );
        }
        o.push_str("</tbody></table>");
    }

    o.push_str("<h2>Tasks</h2><table id=\"tasks\"><thead><tr><th class=\"l\">task</th><th class=\"l\">category</th><th class=\"l\">result</th><th>vs reference</th><th>vs eager</th><th>vs torch.compile</th><th>SOL</th><th>candidates</th><th>best gen</th><th>tokens</th><th>cost</th><th>tokens to first correct</th></tr></thead><tbody>");
    for t in &s.tasks {
        let result = if t.correct {
            "correct"
        } else {
            t.main_failure().unwrap_or("not attempted")
        };
        let _ = write!(
            o,
            "<tr class=\"{}\" data-task=\"{}\"><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>${:.4}</td><td>{}</td></tr>",
            if t.correct { "ok" } else { "fail" },
            esc(&t.task),
            esc(&t.task),
            esc(&t.category),
            esc(result),
            opt(t.speedup_ref, "×"),
            opt(t.speedup_eager, "×"),
            opt(t.speedup_compile, "×"),
            opt(t.sol_pct, "%"),
            t.candidates,
            t.best_generation.map_or("–".to_string(), |g| g.to_string()),
            t.tokens_in + t.tokens_out,
            t.cost_usd,
            t.tokens_to_first_correct.map_or("–".to_string(), |x| x.to_string())
        );
    }
    o.push_str("</tbody></table>");
    page(&format!("kernelsmith report — {}", r.name), &o)
}

pub fn leaderboard_html(l: &Leaderboard) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<h1>kernelsmith leaderboard</h1><div class=\"meta\">{} runs · ranked by fast_1 vs {}, then geometric-mean speedup · failures count in N, strict &gt;</div>",
        l.rows.len(),
        l.baseline.label()
    );
    let class = |col: usize| {
        if LEADERBOARD_TEXT_COLUMNS.contains(&col) {
            " class=\"l\""
        } else {
            ""
        }
    };
    o.push_str("<table id=\"leaderboard\"><thead><tr>");
    for (col, h) in leaderboard_header().iter().enumerate() {
        let _ = write!(o, "<th{}>{}</th>", class(col), esc(h));
    }
    o.push_str("</tr></thead><tbody>");
    for (i, s) in l.rows.iter().enumerate() {
        let _ = write!(o, "<tr data-run=\"{}\">", esc(&s.run.name));
        for (col, c) in leaderboard_cells(l, i, s).iter().enumerate() {
            let _ = write!(o, "<td{}>{}</td>", class(col), esc(c));
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table><h2>Charts</h2><div class=\"charts\">");
    let series: Vec<Series> = l
        .rows
        .iter()
        .map(|s| Series {
            name: s.run.name.clone(),
            points: s
                .baseline(l.baseline)
                .map(|b| b.curve.clone())
                .unwrap_or_default(),
            step: true,
        })
        .collect();
    o.push_str(&svg::line_chart(&LineChart {
        id: "chart-fastp",
        title: &format!("fast_p over p vs {}", l.baseline.label()),
        x_label: "p (speedup threshold)",
        y_label: "fast_p",
        series: &series,
        y_max: Some(1.0),
        markers: &[1.0, 1.5, 2.0],
        y_percent: true,
    }));
    let bars: Vec<(String, f64)> = l
        .rows
        .iter()
        .map(|s| {
            (
                s.run.name.clone(),
                s.baseline(l.baseline)
                    .and_then(|b| b.geomean_speedup)
                    .unwrap_or(0.0),
            )
        })
        .collect();
    o.push_str(&svg::value_bars(
        "chart-geomean",
        &format!(
            "Geomean speedup vs {} (correct kernels)",
            l.baseline.label()
        ),
        "run",
        "speedup",
        &bars,
    ));
    o.push_str("</div>");
    per_task_matrix(&mut o, l);
    page("kernelsmith leaderboard", &o)
}

/// Task × run: the best speedup of each run on each task, or its main failure.
fn per_task_matrix(o: &mut String, l: &Leaderboard) {
    let mut tasks: Vec<(&str, &str)> = l
        .rows
        .iter()
        .flat_map(|s| {
            s.tasks
                .iter()
                .map(|t| (t.category.as_str(), t.task.as_str()))
        })
        .collect();
    tasks.sort_unstable();
    tasks.dedup();
    let _ = write!(
        o,
        "<h2>Per task</h2><p class=\"note\">Best speedup vs {} of each run's correct kernels; a failure shows the verdict seen most often.</p><table id=\"per-task\"><thead><tr><th class=\"l\">task</th><th class=\"l\">category</th>",
        l.baseline.label()
    );
    for s in &l.rows {
        let _ = write!(o, "<th>{}</th>", esc(&s.run.name));
    }
    o.push_str("</tr></thead><tbody>");
    for (cat, task) in tasks {
        let _ = write!(
            o,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td>",
            esc(task),
            esc(cat)
        );
        for s in &l.rows {
            match s.tasks.iter().find(|t| t.task == task) {
                None => o.push_str("<td>not run</td>"),
                Some(t) if t.correct => {
                    let _ = write!(o, "<td>{}</td>", opt(t.speedup(l.baseline), "×"));
                }
                Some(t) => {
                    let _ = write!(
                        o,
                        "<td class=\"failed\">{}</td>",
                        esc(t.main_failure().unwrap_or("not attempted"))
                    );
                }
            }
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>");
}
