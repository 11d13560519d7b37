//! Content addresses: of a candidate (source + plan) and of an evaluation (candidate content +
//! task version + GPU + protocol). Same address, same result: it is looked up, not re-measured.

use sha2::{Digest, Sha256};

/// Hashes fields with their lengths so that no two different field lists collide by shifting
/// text from one field into the next.
fn hash_fields(domain: &str, fields: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    for f in fields {
        h.update((f.len() as u64).to_le_bytes());
        h.update(f.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The content hash of a kernel: its device code and its launch plan, byte for byte.
pub fn candidate_hash(source: &str, plan: &str) -> String {
    hash_fields("ksmith-candidate-v1", &[source, plan])
}

/// Everything that decides an evaluation's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalKey<'a> {
    /// [`candidate_hash`] of the kernel.
    pub candidate_hash: &'a str,
    /// Content hash of the task version (task.toml, spec.py, reference).
    pub task_hash: &'a str,
    /// [`super::NewGpu::gpu_key`], or "none" for compile-only evaluations.
    pub gpu_key: &'a str,
    /// Verification protocol and harness version: a changed verifier must not reuse old verdicts.
    pub protocol: &'a str,
}

impl EvalKey<'_> {
    pub fn digest(&self) -> String {
        hash_fields(
            "ksmith-evaluation-v1",
            &[
                self.candidate_hash,
                self.task_hash,
                self.gpu_key,
                self.protocol,
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_boundaries_matter() {
        assert_ne!(candidate_hash("ab", "c"), candidate_hash("a", "bc"));
        assert_eq!(candidate_hash("ab", "c"), candidate_hash("ab", "c"));
        assert_eq!(candidate_hash("", "").len(), 64);
    }

    #[test]
    fn every_key_field_changes_the_digest() {
        let base = EvalKey {
            candidate_hash: "c",
            task_hash: "t",
            gpu_key: "g",
            protocol: "p",
        };
        let d = base.digest();
        for k in [
            EvalKey {
                candidate_hash: "x",
                ..base.clone()
            },
            EvalKey {
                task_hash: "x",
                ..base.clone()
            },
            EvalKey {
                gpu_key: "x",
                ..base.clone()
            },
            EvalKey {
                protocol: "x",
                ..base.clone()
            },
        ] {
            assert_ne!(k.digest(), d);
        }
    }
}
