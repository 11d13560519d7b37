//! Evolutionary search (robust-kbench / AlphaEvolve style, DESIGN §7).
//!
//! Per task a population seeded with the hand-written reference and, per island, a first
//! translation by the Coder. Each generation every island breeds `offspring` children: a
//! crossover of two passing parents (with probability `crossover_rate`) or a mutation, i.e. a
//! Judge-guided rewrite of one parent (correction advice for a failing parent, optimization
//! advice for a measured one). Parents are drawn by fitness (passed, speedup, SOL%) plus a
//! diversity term (distance of the code from the island's best), with a seeded generator so a
//! resumed run draws the same parents. Every `migration_every` generations each island's best
//! moves to the next island. Lineage (parents, generation, island) goes to the observer.
//!
//! A generation's children are bred concurrently (their LLM calls overlap; evaluations queue
//! on the evaluator's slots) and joined in a fixed order, so the population, and with it every
//! later prompt, does not depend on which reply came back first.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::extract::{extract_judge_advice, extract_kernel};
use crate::llm::{ChatMessage, LlmCall, LlmCallRecord, LlmClient};
use crate::prompt::{tail_lines, CoderMode, KernelSnapshot, PromptContext, PromptRenderer};
use crate::r#loop::{
    history_entry, Budget, CandidateOutcome, CandidateRecord, Evaluation, Evaluator,
    EvaluatorError, LoopObserver, LoopOutcome, Seed, Spend, StopReason,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvolveSettings {
    pub islands: u32,
    /// Children per island per generation.
    pub offspring: u32,
    /// Chance that a child is a crossover (when the island has two passing members).
    pub crossover_rate: f64,
    /// Weight of the diversity term against fitness in parent selection.
    pub diversity_weight: f64,
    /// Softmax temperature of parent selection (lower: greedier).
    pub temperature: f64,
    /// Members kept per island (the best always stays).
    pub population_cap: usize,
    /// Generations between migrations of each island's best to the next island; 0: never.
    pub migration_every: u32,
    /// Seed of parent selection (mixed with the task id).
    pub rng_seed: u64,
    /// History entries shown in prompts.
    pub history_len: usize,
}

impl Default for EvolveSettings {
    fn default() -> Self {
        EvolveSettings {
            islands: 2,
            offspring: 2,
            crossover_rate: 0.3,
            diversity_weight: 0.3,
            temperature: 0.5,
            population_cap: 8,
            migration_every: 2,
            rng_seed: 0x6b73_6d69_7468,
            history_len: 6,
        }
    }
}

/// The search for one task.
pub struct Evolution {
    pub coder: LlmClient,
    pub judge: LlmClient,
    pub renderer: Arc<PromptRenderer>,
    pub evaluator: Arc<dyn Evaluator>,
    pub observer: Arc<dyn LoopObserver>,
    pub budget: Budget,
    pub settings: EvolveSettings,
}

/// The calls and spend of one task, shared by concurrently bred children. The observer is told
/// about a call under the same lock that gives it its index, so `llm_call_index` always points
/// at the right call.
struct Ledger {
    calls: Vec<LlmCallRecord>,
    spend: Spend,
}

/// What one child is: its operator and parents (indices into the candidate list).
#[derive(Debug, Clone)]
enum Op {
    Initial {
        sibling: u32,
    },
    /// `sibling`: how many children of this generation were bred the same way before this one;
    /// it changes the prompt, so that a deterministic model does not write the same kernel twice.
    Mutate {
        parent: usize,
        sibling: u32,
    },
    Crossover {
        a: usize,
        b: usize,
        sibling: u32,
    },
}

impl Op {
    fn key(&self) -> (u8, usize, usize) {
        match self {
            Op::Initial { .. } => (0, 0, 0),
            Op::Mutate { parent, .. } => (1, *parent, 0),
            Op::Crossover { a, b, .. } => (2, (*a).min(*b), (*a).max(*b)),
        }
    }

    fn set_sibling(&mut self, k: u32) {
        match self {
            Op::Initial { sibling }
            | Op::Mutate { sibling, .. }
            | Op::Crossover { sibling, .. } => *sibling = k,
        }
    }
}

/// The note that sets a sibling apart from the children bred the same way before it.
fn sibling_note(k: u32) -> Option<String> {
    (k > 0).then(|| {
        format!(
            "{k} other child(ren) of the same parent(s) are being written in this generation. \
             Make this one different from the obvious first idea: take your idea number {} \
             in order of expected benefit.",
            k + 1
        )
    })
}

struct Child {
    island: u32,
    op: Op,
    record: Option<CandidateRecord>,
    harness: Option<String>,
}

/// Fitness of a candidate: None when it failed; passing kernels rank by speedup and SOL%
/// (an untimed dry-run pass ranks as 1).
pub fn fitness(c: &CandidateRecord) -> Option<f64> {
    let e = c.evaluation()?;
    if !e.verdict.passed() {
        return None;
    }
    let speed = e.speedup().unwrap_or(1.0);
    let sol: Vec<f64> = e.timings.iter().filter_map(|t| t.sol_pct).collect();
    let sol = if sol.is_empty() {
        0.0
    } else {
        sol.iter().sum::<f64>() / sol.len() as f64 / 100.0
    };
    Some(speed + 0.25 * sol)
}

/// Word-level Jaccard distance in [0, 1]: a cheap, deterministic measure of how different two
/// kernels are, used to keep selection from collapsing onto one design.
pub fn code_distance(a: &str, b: &str) -> f64 {
    let words = |s: &str| -> BTreeSet<String> {
        s.split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    };
    let (wa, wb) = (words(a), words(b));
    let union = wa.union(&wb).count();
    if union == 0 {
        return 0.0;
    }
    1.0 - wa.intersection(&wb).count() as f64 / union as f64
}

fn task_seed(task_id: &str, seed: u64) -> u64 {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in task_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Evolution {
    /// Runs the search; `seed` is the reference kernel (recorded as round 0 on every island).
    pub async fn run(&self, task_id: &str, ctx: PromptContext, seed: Option<Seed>) -> LoopOutcome {
        let started = Instant::now();
        let s = &self.settings;
        let islands = s.islands.max(1);
        let mut rng = fastrand::Rng::with_seed(task_seed(task_id, s.rng_seed));
        let ledger = Mutex::new(Ledger {
            calls: Vec::new(),
            spend: Spend::default(),
        });
        let mut cands: Vec<CandidateRecord> = Vec::new();
        let mut pops: Vec<Vec<usize>> = vec![Vec::new(); islands as usize];
        let mut stop = StopReason::RoundsDone;
        // Round numbers identify candidates within the task (lineage); 0 is the seed.
        let mut next_round: u32 = 1;

        let finish = |cands: Vec<CandidateRecord>, ledger: Mutex<Ledger>, stop: StopReason| {
            let mut l = ledger.into_inner().unwrap_or_else(|p| p.into_inner());
            l.spend.wall = started.elapsed();
            let best = best_of(&cands, 0..cands.len());
            LoopOutcome {
                candidates: cands,
                best,
                llm_calls: l.calls,
                spend: l.spend,
                stop,
            }
        };

        if let Some(seed) = seed {
            match self.evaluate(task_id, &seed.source, &seed.plan).await {
                Ok(e) => {
                    let rec = CandidateRecord {
                        round: 0,
                        action: seed.origin,
                        parent_round: None,
                        source: Some(seed.source),
                        plan: Some(seed.plan),
                        raw_reply: None,
                        extract_notes: Vec::new(),
                        advice: None,
                        outcome: CandidateOutcome::Evaluated(e),
                        llm_call_index: None,
                        generation: 0,
                        island: 0,
                        second_parent_round: None,
                    };
                    self.observer.on_candidate(task_id, &rec);
                    cands.push(rec);
                    for p in pops.iter_mut() {
                        p.push(0);
                    }
                }
                Err(e) => return finish(cands, ledger, StopReason::Evaluator(e.0)),
            }
        }

        // Generation 0 adds a first translation per island; generations 1..=rounds breed.
        for generation in 0..=self.budget.max_rounds {
            if let Some(r) = self.check_budget(&ledger, started) {
                stop = r;
                break;
            }
            let mut plans: Vec<(u32, Op)> = Vec::new();
            for island in 0..islands {
                if generation == 0 {
                    plans.push((island, Op::Initial { sibling: 0 }));
                    continue;
                }
                for _ in 0..s.offspring.max(1) {
                    let op = self.pick(&cands, &pops[island as usize], &mut rng);
                    plans.push((island, op));
                }
            }
            let mut seen: std::collections::BTreeMap<(u8, usize, usize), u32> =
                std::collections::BTreeMap::new();
            for (_, op) in plans.iter_mut() {
                let k = seen.entry(op.key()).or_insert(0);
                op.set_sibling(*k);
                *k += 1;
            }
            // A call budget cuts the generation short rather than overshooting it.
            if let Some(max) = self.budget.max_llm_calls {
                let used = lock(&ledger).spend.llm_calls;
                let room = max.saturating_sub(used) as usize;
                plans.truncate(room.max(1));
            }
            let base_round = next_round;
            next_round += plans.len() as u32;
            let futures = plans.into_iter().enumerate().map(|(k, (island, op))| {
                let ctx = self.island_context(&ctx, &cands, &pops[island as usize]);
                self.breed(
                    task_id,
                    ctx,
                    &cands,
                    &ledger,
                    Child {
                        island,
                        op,
                        record: None,
                        harness: None,
                    },
                    base_round + k as u32,
                    generation,
                )
            });
            let children = futures_join(futures).await;
            let mut harness = None;
            for child in children {
                if let Some(h) = child.harness {
                    harness.get_or_insert(h);
                }
                let Some(rec) = child.record else { continue };
                self.observer.on_candidate(task_id, &rec);
                let idx = cands.len();
                let has_kernel = rec.source.is_some();
                cands.push(rec);
                if has_kernel {
                    pops[child.island as usize].push(idx);
                }
            }
            if let Some(h) = harness {
                stop = StopReason::Evaluator(h);
                break;
            }
            for pop in pops.iter_mut() {
                self.cull(&cands, pop);
            }
            if s.migration_every > 0 && generation > 0 && generation % s.migration_every == 0 {
                self.migrate(&cands, &mut pops);
            }
            if let Some(r) = self.observer.should_stop() {
                stop = r;
                break;
            }
        }
        finish(cands, ledger, stop)
    }

    fn check_budget(&self, ledger: &Mutex<Ledger>, started: Instant) -> Option<StopReason> {
        let mut l = lock(ledger);
        l.spend.wall = started.elapsed();
        l.spend
            .exhausted(&self.budget)
            .or_else(|| self.observer.should_stop())
    }

    /// Selection score of each island member: fitness plus diversity from the island's best.
    fn scores(&self, cands: &[CandidateRecord], pop: &[usize]) -> Vec<f64> {
        let best = best_of(cands, pop.iter().copied());
        let best_src = best.and_then(|b| cands[b].source.as_deref()).unwrap_or("");
        pop.iter()
            .map(|&i| {
                let f = fitness(&cands[i]).unwrap_or(0.0);
                let d = cands[i]
                    .source
                    .as_deref()
                    .map_or(0.0, |s| code_distance(s, best_src));
                f + self.settings.diversity_weight * d
            })
            .collect()
    }

    /// Draws one member with probability proportional to exp(score / temperature).
    fn draw(&self, cands: &[CandidateRecord], pop: &[usize], rng: &mut fastrand::Rng) -> usize {
        let scores = self.scores(cands, pop);
        let t = self.settings.temperature.max(1e-3);
        let max = scores.iter().cloned().fold(f64::MIN, f64::max);
        let weights: Vec<f64> = scores.iter().map(|s| ((s - max) / t).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mut x = rng.f64() * total;
        for (k, w) in weights.iter().enumerate() {
            if x < *w {
                return pop[k];
            }
            x -= w;
        }
        pop[pop.len() - 1]
    }

    fn pick(&self, cands: &[CandidateRecord], pop: &[usize], rng: &mut fastrand::Rng) -> Op {
        if pop.is_empty() {
            return Op::Initial { sibling: 0 };
        }
        let passing: Vec<usize> = pop
            .iter()
            .copied()
            .filter(|&i| fitness(&cands[i]).is_some())
            .collect();
        let cross = rng.f64() < self.settings.crossover_rate;
        if cross && passing.len() >= 2 {
            let a = self.draw(cands, &passing, rng);
            let rest: Vec<usize> = passing.iter().copied().filter(|&i| i != a).collect();
            let b = self.draw(cands, &rest, rng);
            return Op::Crossover { a, b, sibling: 0 };
        }
        Op::Mutate {
            parent: self.draw(cands, pop, rng),
            sibling: 0,
        }
    }

    /// Keeps the `population_cap` best-scoring members (the best always).
    fn cull(&self, cands: &[CandidateRecord], pop: &mut Vec<usize>) {
        let cap = self.settings.population_cap.max(1);
        if pop.len() <= cap {
            return;
        }
        let scores = self.scores(cands, pop);
        let mut order: Vec<(usize, f64)> = pop.iter().copied().zip(scores).collect();
        // Higher score first; among equals the newer member (it carries more of the search).
        order.sort_by(|x, y| y.1.total_cmp(&x.1).then(y.0.cmp(&x.0)));
        let mut kept: Vec<usize> = order.into_iter().take(cap).map(|(i, _)| i).collect();
        if let Some(b) = best_of(cands, pop.iter().copied()) {
            if !kept.contains(&b) {
                kept.pop();
                kept.push(b);
            }
        }
        kept.sort_unstable();
        *pop = kept;
    }

    fn migrate(&self, cands: &[CandidateRecord], pops: &mut [Vec<usize>]) {
        let n = pops.len();
        if n < 2 {
            return;
        }
        let bests: Vec<Option<usize>> = pops
            .iter()
            .map(|p| best_of(cands, p.iter().copied()))
            .collect();
        for (i, b) in bests.into_iter().enumerate() {
            if let Some(b) = b {
                let dest = &mut pops[(i + 1) % n];
                if !dest.contains(&b) {
                    dest.push(b);
                }
            }
        }
    }

    fn island_context(
        &self,
        base: &PromptContext,
        cands: &[CandidateRecord],
        pop: &[usize],
    ) -> PromptContext {
        let mut ctx = base.clone();
        ctx.best = best_of(cands, 0..cands.len()).and_then(|b| cands[b].snapshot());
        let mut members: Vec<usize> = pop.to_vec();
        members.sort_unstable();
        let skip = members.len().saturating_sub(self.settings.history_len);
        ctx.history = members[skip..]
            .iter()
            .map(|&i| history_entry(&cands[i]))
            .collect();
        ctx
    }

    #[allow(clippy::too_many_arguments)]
    async fn breed(
        &self,
        task_id: &str,
        ctx: PromptContext,
        cands: &[CandidateRecord],
        ledger: &Mutex<Ledger>,
        mut child: Child,
        round: u32,
        generation: u32,
    ) -> Child {
        let snap = |i: usize| cands[i].snapshot();
        let (role, prompt, parents, advice) = match &child.op {
            Op::Initial { sibling } => {
                // Islands start from different designs, not k copies of the obvious one.
                let mut ctx = ctx.clone();
                if *sibling > 0 {
                    ctx.rules.extra.push(format!(
                        "{sibling} other first version(s) of this kernel are being written in \
                         parallel: choose a different design from the most obvious one (your \
                         idea number {} in order of expected benefit).",
                        sibling + 1
                    ));
                }
                (
                    "coder",
                    self.renderer.coder(&ctx, &CoderMode::Initial),
                    (None, None),
                    None,
                )
            }
            Op::Mutate { parent, sibling } => {
                let Some(p) = snap(*parent) else {
                    return child;
                };
                let advice = self
                    .advice(task_id, &ctx, &cands[*parent], &p, ledger)
                    .await;
                let direction = match (advice.clone(), sibling_note(*sibling)) {
                    (Some(a), Some(n)) => Some(format!("{a}\n\n{n}")),
                    (a, n) => a.or(n),
                };
                (
                    "mutate",
                    self.renderer.mutate(&ctx, &p, direction.as_deref()),
                    (Some(cands[*parent].round), None),
                    advice,
                )
            }
            Op::Crossover { a, b, sibling } => {
                // The pair in a fixed order; a repeated pair is told to differ from its siblings.
                let (a, b) = (a.min(b), a.max(b));
                let mut ctx = ctx.clone();
                if let Some(note) = sibling_note(*sibling) {
                    ctx.rules.extra.push(note);
                }
                let (Some(pa), Some(pb)) = (snap(*a), snap(*b)) else {
                    return child;
                };
                (
                    "crossover",
                    self.renderer.crossover(&ctx, &pa, &pb),
                    (Some(cands[*a].round), Some(cands[*b].round)),
                    None,
                )
            }
        };
        let action = match &child.op {
            Op::Initial { .. } => "initial",
            Op::Mutate { .. } => "mutate",
            Op::Crossover { .. } => "crossover",
        };
        let prompt = match prompt {
            Ok(p) => p,
            Err(e) => {
                child.harness = Some(format!("prompt failed: {e}"));
                return child;
            }
        };
        if self.stop_now(ledger) {
            return child;
        }
        let (call, index) = self.call(task_id, &self.coder, role, prompt, ledger).await;
        let mut rec = CandidateRecord {
            round,
            action: action.to_string(),
            parent_round: parents.0,
            source: None,
            plan: None,
            raw_reply: None,
            extract_notes: Vec::new(),
            advice,
            outcome: CandidateOutcome::LlmFailed(String::new()),
            llm_call_index: Some(index),
            generation,
            island: child.island,
            second_parent_round: parents.1,
        };
        let reply = match call.outcome {
            Ok(r) => r,
            Err(e) => {
                rec.outcome = CandidateOutcome::LlmFailed(e.to_string());
                child.record = Some(rec);
                return child;
            }
        };
        rec.raw_reply = Some(reply.content.clone());
        let x = match extract_kernel(&reply.content) {
            Ok(x) => x,
            Err(e) => {
                rec.outcome = CandidateOutcome::Malformed(e);
                child.record = Some(rec);
                return child;
            }
        };
        match self.evaluate(task_id, &x.source, &x.plan).await {
            Ok(e) => rec.outcome = CandidateOutcome::Evaluated(e),
            Err(e) => {
                child.harness = Some(e.0);
                return child;
            }
        }
        rec.source = Some(x.source);
        rec.plan = Some(x.plan);
        rec.extract_notes = x.notes;
        child.record = Some(rec);
        child
    }

    fn stop_now(&self, ledger: &Mutex<Ledger>) -> bool {
        let l = lock(ledger);
        l.spend.exhausted(&self.budget).is_some() || self.observer.should_stop().is_some()
    }

    /// The Judge's direction for a mutation: a diagnosis for a failing parent, one optimization
    /// for a measured one; none for an unmeasured pass (a dry run has no numbers to read).
    async fn advice(
        &self,
        task_id: &str,
        ctx: &PromptContext,
        parent: &CandidateRecord,
        snap: &KernelSnapshot,
        ledger: &Mutex<Ledger>,
    ) -> Option<String> {
        let e = parent.evaluation()?;
        let (role, prompt) = if e.verdict.passed() {
            if e.timings.is_empty() {
                return None;
            }
            (
                "judge_optimization",
                self.renderer.judge_optimization(ctx, snap),
            )
        } else {
            let feedback = tail_lines(&e.feedback, 150, 12_000);
            (
                "judge_correction",
                self.renderer.judge_correction(ctx, snap, &feedback),
            )
        };
        let prompt = prompt.ok()?;
        if self.stop_now(ledger) {
            return None;
        }
        let (call, _) = self.call(task_id, &self.judge, role, prompt, ledger).await;
        let reply = call.outcome.ok()?;
        extract_judge_advice(&reply.content).ok().map(|a| a.text)
    }

    async fn call(
        &self,
        task_id: &str,
        client: &LlmClient,
        role: &str,
        prompt: String,
        ledger: &Mutex<Ledger>,
    ) -> (LlmCall, usize) {
        let messages = [ChatMessage::user(prompt)];
        let request = client.request_body(&messages);
        let replayed = self
            .observer
            .replay_call(task_id, role, &request, &messages[0].content);
        let (call, fresh) = match replayed {
            Some(c) => (c, false),
            None => (client.chat(role, &messages).await, true),
        };
        let mut l = lock(ledger);
        if fresh {
            self.observer.on_llm_call(task_id, &call.record);
        } else {
            self.observer.on_llm_replayed(task_id, &call.record);
        }
        l.spend.add(&call.record);
        l.calls.push(call.record.clone());
        let index = l.calls.len() - 1;
        (call, index)
    }

    async fn evaluate(
        &self,
        task_id: &str,
        source: &str,
        plan: &str,
    ) -> Result<Evaluation, EvaluatorError> {
        let evaluator = Arc::clone(&self.evaluator);
        let (t, s, p) = (task_id.to_string(), source.to_string(), plan.to_string());
        tokio::task::spawn_blocking(move || evaluator.evaluate(&t, &s, &p))
            .await
            .map_err(|e| EvaluatorError(format!("evaluator thread failed: {e}")))?
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The index of the fittest passing candidate among `idx` (the earliest among equals).
fn best_of(cands: &[CandidateRecord], idx: impl IntoIterator<Item = usize>) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for i in idx {
        if let Some(f) = fitness(&cands[i]) {
            if best.is_none_or(|(_, bf)| f > bf) {
                best = Some((i, f));
            }
        }
    }
    best.map(|(i, _)| i)
}

/// Polls all futures concurrently on the current task and returns their outputs in order.
async fn futures_join<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (k, f) in pinned.iter_mut().enumerate() {
            if out[k].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[k] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Profile;
    use crate::prompt::ShapeTiming;
    use crate::r#loop::{NoObserver, Verdict, VerdictKind};

    struct Never;
    impl Evaluator for Never {
        fn evaluate(&self, _: &str, _: &str, _: &str) -> Result<Evaluation, EvaluatorError> {
            Err(EvaluatorError("not used".into()))
        }
    }

    fn evolution(settings: EvolveSettings) -> Evolution {
        let client =
            LlmClient::new("p", Profile::new("http://127.0.0.1:9/v1", "m"), None).expect("client");
        Evolution {
            coder: client.clone(),
            judge: client,
            renderer: Arc::new(PromptRenderer::builtin().expect("templates")),
            evaluator: Arc::new(Never),
            observer: Arc::new(NoObserver),
            budget: Budget::default(),
            settings,
        }
    }

    /// A candidate with `speedup` (None: failed to compile) and a source made of `words`.
    fn cand(round: u32, speedup: Option<f64>, words: &str) -> CandidateRecord {
        let evaluation = Evaluation {
            verdict: if speedup.is_some() {
                Verdict::CORRECT
            } else {
                Verdict::Checked(VerdictKind::CompileError)
            },
            feedback: String::new(),
            timings: speedup
                .map(|s| {
                    vec![ShapeTiming {
                        shape: "main".into(),
                        median_us: Some(100.0 / s),
                        reference_us: Some(100.0),
                        sol_pct: Some(50.0),
                        floor_us: None,
                    }]
                })
                .unwrap_or_default(),
            resources: None,
            profile_summary: None,
        };
        CandidateRecord {
            round,
            action: "mutate".into(),
            parent_round: None,
            source: Some(words.into()),
            plan: Some("[[launch]]".into()),
            raw_reply: None,
            extract_notes: Vec::new(),
            advice: None,
            outcome: CandidateOutcome::Evaluated(evaluation),
            llm_call_index: None,
            generation: 0,
            island: 0,
            second_parent_round: None,
        }
    }

    #[test]
    fn fitness_ranks_failures_out_and_speed_and_sol_in() {
        assert_eq!(fitness(&cand(0, None, "a")), None);
        let slow = fitness(&cand(0, Some(1.0), "a")).expect("passes");
        let fast = fitness(&cand(0, Some(2.0), "a")).expect("passes");
        assert!(fast > slow);
        assert!((slow - (1.0 + 0.25 * 0.5)).abs() < 1e-9, "{slow}");
    }

    #[test]
    fn selection_prefers_fit_parents_and_never_crosses_failures() {
        let ev = evolution(EvolveSettings {
            crossover_rate: 1.0,
            temperature: 0.1,
            diversity_weight: 0.0,
            ..EvolveSettings::default()
        });
        let cands = vec![
            cand(0, Some(1.0), "a b c"),
            cand(1, None, "a b d"),
            cand(2, Some(3.0), "a b e"),
            cand(3, Some(1.1), "x y z"),
        ];
        let pop = vec![0, 1, 2, 3];
        let mut rng = fastrand::Rng::with_seed(1);
        let mut firsts = [0usize; 4];
        for _ in 0..200 {
            match ev.pick(&cands, &pop, &mut rng) {
                Op::Crossover { a, b, .. } => {
                    assert_ne!(a, b);
                    assert!(
                        a != 1 && b != 1,
                        "a failing kernel is never a crossover parent"
                    );
                    firsts[a] += 1;
                }
                other => panic!("crossover_rate 1 with 3 passing members gave {other:?}"),
            }
        }
        assert!(
            firsts[2] > 150,
            "the fittest member dominates at low temperature: {firsts:?}"
        );
    }

    #[test]
    fn diversity_lifts_a_different_design_above_a_near_copy() {
        let ev = evolution(EvolveSettings {
            diversity_weight: 1.0,
            ..EvolveSettings::default()
        });
        // Best = 0; 1 is a near copy of it, 2 a different design, both equally fast.
        let cands = vec![
            cand(0, Some(2.0), "load tile smem sync reduce store"),
            cand(1, Some(1.0), "load tile smem sync reduce store out"),
            cand(2, Some(1.0), "warp shuffle vector register"),
        ];
        let s = ev.scores(&cands, &[0, 1, 2]);
        assert!(s[2] > s[1], "{s:?}");
    }

    #[test]
    fn culling_keeps_the_cap_and_always_the_best() {
        let ev = evolution(EvolveSettings {
            population_cap: 2,
            diversity_weight: 5.0,
            ..EvolveSettings::default()
        });
        let cands = vec![
            cand(0, Some(3.0), "best kernel"),
            cand(1, Some(1.0), "other one entirely"),
            cand(2, Some(1.0), "yet another design"),
            cand(3, None, "broken"),
        ];
        let mut pop = vec![0, 1, 2, 3];
        ev.cull(&cands, &mut pop);
        assert_eq!(pop.len(), 2);
        assert!(pop.contains(&0), "{pop:?}");
        assert!(!pop.contains(&3), "{pop:?}");
    }

    #[test]
    fn migration_moves_each_island_best_to_the_next() {
        let ev = evolution(EvolveSettings::default());
        let cands = vec![
            cand(0, Some(1.0), "a"),
            cand(1, Some(2.0), "b"),
            cand(2, Some(3.0), "c"),
        ];
        let mut pops = vec![vec![0, 1], vec![2]];
        ev.migrate(&cands, &mut pops);
        assert_eq!(pops, vec![vec![0, 1, 2], vec![2, 1]]);
    }

    #[test]
    fn repeated_ops_in_a_generation_get_distinct_sibling_numbers() {
        let a = Op::Crossover {
            a: 3,
            b: 1,
            sibling: 0,
        };
        let b = Op::Crossover {
            a: 1,
            b: 3,
            sibling: 0,
        };
        assert_eq!(a.key(), b.key());
        assert_eq!(sibling_note(0), None);
        assert!(sibling_note(2).is_some_and(|n| n.contains("idea number 3")));
    }

    #[test]
    fn distance_is_zero_for_same_words_and_one_for_disjoint() {
        assert_eq!(code_distance("a b c", "c b a"), 0.0);
        assert_eq!(code_distance("a b", "c d"), 1.0);
        let d = code_distance("float x = a[i];", "float y = a[i];");
        assert!(d > 0.0 && d < 1.0, "{d}");
    }

    #[test]
    fn task_seed_differs_by_task_and_is_stable() {
        assert_ne!(task_seed("a", 1), task_seed("b", 1));
        assert_eq!(task_seed("swiglu", 7), task_seed("swiglu", 7));
    }
}
