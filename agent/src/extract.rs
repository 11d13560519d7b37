//! Pulling the kernel source and its launch plan out of a model's reply, and the Judge's advice
//! out of its reply. Models wrap code in prose and reasoning, tag fences inconsistently, repeat
//! earlier code, and get cut off mid-block; every such reply becomes either a usable result or a
//! typed error whose [`ExtractError::feedback`] is written to the model in the next round. The
//! caller keeps the raw reply (the LLM call record holds it) whatever happens here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A fenced block found in a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The info string's first word, lowercased ("" when untagged).
    pub lang: String,
    pub body: String,
    /// False when the reply ended before the closing fence.
    pub closed: bool,
    /// 1-based line of the opening fence in the text that was scanned.
    pub line: usize,
}

/// Kernel source and launch plan from a Coder reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtractedKernel {
    pub source: String,
    pub plan: String,
    /// Things worth knowing that did not stop extraction (missing closing fence, several
    /// candidate blocks).
    pub notes: Vec<String>,
}

/// Why a reply held no usable kernel + plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ExtractError {
    #[error("the reply is empty")]
    EmptyReply,
    #[error("the reply ended inside its <think> reasoning, before any answer")]
    UnfinishedReasoning,
    #[error("no CUDA code block in the reply (fenced blocks found: {found})")]
    NoKernelBlock { found: String },
    #[error("the CUDA block defines no __global__ function")]
    NoGlobalFunction,
    #[error("the CUDA block is cut off (no closing fence and unbalanced braces)")]
    TruncatedKernel,
    #[error("no TOML launch-plan block with [[launch]] in the reply")]
    NoPlanBlock,
    #[error("the TOML launch-plan block is cut off: {0}")]
    TruncatedPlan(String),
}

impl ExtractError {
    /// What to tell the Coder next round.
    pub fn feedback(&self) -> String {
        let format = "Reply with exactly one ```cuda block holding the complete device code and one ```toml block holding the launch plan (with at least one [[launch]] table).";
        match self {
            ExtractError::EmptyReply => format!("Your reply was empty. {format}"),
            ExtractError::UnfinishedReasoning => format!(
                "Your reply ran out of tokens while still reasoning, so it contained no code. Think more briefly. {format}"
            ),
            ExtractError::NoKernelBlock { found } => format!(
                "Your reply contained no CUDA code block (blocks found: {found}). {format}"
            ),
            ExtractError::NoGlobalFunction => format!(
                "Your ```cuda block defines no __global__ kernel; the launch plan can only launch __global__ functions (use extern \"C\" __global__). {format}"
            ),
            ExtractError::TruncatedKernel => format!(
                "Your reply was cut off inside the ```cuda block (no closing fence, unbalanced braces). Write a shorter kernel and less prose. {format}"
            ),
            ExtractError::NoPlanBlock => format!(
                "Your reply had CUDA code but no launch plan. {format}"
            ),
            ExtractError::TruncatedPlan(why) => format!(
                "Your reply was cut off inside the ```toml launch plan ({why}). Write less prose before the code. {format}"
            ),
        }
    }
}

/// Extracts one kernel source and one launch plan from a Coder reply.
///
/// Choice rules: `<think>` sections are ignored; the kernel is the last closed CUDA-like block
/// (`cuda`, `cu`, `c++`, `cpp`, `c`, ... or untagged) that contains `__global__`; the plan is the
/// last closed `toml` (or untagged) block containing `[[launch]]`. A block without a closing fence
/// is used only when it looks complete (balanced braces for code; parses with a `[[launch]]` table
/// for the plan), and a note says so.
pub fn extract_kernel(reply: &str) -> Result<ExtractedKernel, ExtractError> {
    if reply.trim().is_empty() {
        return Err(ExtractError::EmptyReply);
    }
    let visible = strip_reasoning(reply);
    if visible.unfinished && visible.text.trim().is_empty() {
        return Err(ExtractError::UnfinishedReasoning);
    }
    let blocks = fenced_blocks(&visible.text);
    let mut notes = Vec::new();

    let kernel_blocks: Vec<&Block> = blocks.iter().filter(|b| kind_of(b) == Kind::Cuda).collect();
    let with_global: Vec<&&Block> = kernel_blocks
        .iter()
        .filter(|b| b.body.contains("__global__"))
        .collect();
    let kernel = match with_global.iter().rev().find(|b| b.closed) {
        Some(b) => *b,
        None => match with_global.last() {
            Some(b) if braces_balanced(&b.body) => {
                notes.push(format!(
                    "the CUDA block at line {} has no closing fence; used it because its braces balance",
                    b.line
                ));
                *b
            }
            Some(_) => return Err(ExtractError::TruncatedKernel),
            None if !kernel_blocks.is_empty() => return Err(ExtractError::NoGlobalFunction),
            None if visible.unfinished => return Err(ExtractError::UnfinishedReasoning),
            None => {
                return Err(ExtractError::NoKernelBlock {
                    found: describe(&blocks),
                })
            }
        },
    };
    if with_global.len() > 1 {
        notes.push(format!(
            "{} CUDA blocks define kernels; used the one at line {}",
            with_global.len(),
            kernel.line
        ));
    }

    let plan_blocks: Vec<&Block> = blocks
        .iter()
        .filter(|b| kind_of(b) == Kind::Toml && b.body.contains("[[launch]]"))
        .collect();
    let plan = match plan_blocks.iter().rev().find(|b| b.closed) {
        Some(b) => *b,
        None => match plan_blocks.last() {
            Some(b) => match b.body.parse::<toml::Table>() {
                Ok(_) => {
                    notes.push(format!(
                        "the TOML block at line {} has no closing fence; used it because it parses",
                        b.line
                    ));
                    *b
                }
                Err(e) => return Err(ExtractError::TruncatedPlan(e.message().trim().to_string())),
            },
            None => return Err(ExtractError::NoPlanBlock),
        },
    };

    Ok(ExtractedKernel {
        source: kernel.body.clone(),
        plan: plan.body.clone(),
        notes,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Cuda,
    Toml,
    Other,
}

fn kind_of(b: &Block) -> Kind {
    let lang = b.lang.as_str();
    let by_tag = match lang {
        "cuda" | "cu" | "cuh" | "c++" | "cpp" | "cxx" | "cc" | "c" | "h" | "hpp" | "cuda-c"
        | "cuda-cpp" | "cuda_cpp" | "nvcc" => Some(Kind::Cuda),
        "toml" => Some(Kind::Toml),
        "" | "text" | "plain" | "plaintext" | "txt" => None,
        l if l.ends_with(".cu") || l.ends_with(".cuh") || l.ends_with(".cpp") => Some(Kind::Cuda),
        l if l.ends_with(".toml") => Some(Kind::Toml),
        _ => Some(Kind::Other),
    };
    by_tag.unwrap_or_else(|| {
        // Untagged: decide by content.
        if b.body.contains("[[launch]]") && !b.body.contains("__global__") {
            Kind::Toml
        } else if b.body.contains("__global__") || b.body.contains("#include") {
            Kind::Cuda
        } else {
            Kind::Other
        }
    })
}

fn describe(blocks: &[Block]) -> String {
    if blocks.is_empty() {
        return "none".to_string();
    }
    blocks
        .iter()
        .map(|b| {
            if b.lang.is_empty() {
                "untagged".to_string()
            } else {
                b.lang.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The reply without its reasoning sections.
pub struct Visible {
    pub text: String,
    /// A `<think>` section was opened and never closed (the reply was cut off while reasoning).
    pub unfinished: bool,
}

/// Removes `<think>…</think>` and `<thinking>…</thinking>` sections (any case). A closing tag with
/// no opening one (some servers strip the opener) drops everything before it; an opening tag with
/// no closing one drops everything after it.
pub fn strip_reasoning(text: &str) -> Visible {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    let mut unfinished = false;
    // A closing tag before any opening tag: the reasoning started before the text we were given.
    let first_open = find_tag(&lower, 0, true);
    if let Some((cs, ce)) = find_tag(&lower, 0, false) {
        if first_open.is_none_or(|(os, _)| cs < os) {
            pos = ce;
        }
    }
    while let Some((os, oe)) = find_tag(&lower, pos, true) {
        out.push_str(&text[pos..os]);
        match find_tag(&lower, oe, false) {
            Some((_, ce)) => pos = ce,
            None => {
                unfinished = true;
                pos = text.len();
                break;
            }
        }
    }
    out.push_str(&text[pos..]);
    Visible {
        text: out,
        unfinished,
    }
}

/// Finds the next `<think>`/`<thinking>` (open) or `</think>`/`</thinking>` (close) tag at or
/// after `from` in lowercased text; returns its byte range.
fn find_tag(lower: &str, from: usize, open: bool) -> Option<(usize, usize)> {
    let tags: &[&str] = if open {
        &["<think>", "<thinking>"]
    } else {
        &["</think>", "</thinking>"]
    };
    tags.iter()
        .filter_map(|t| {
            lower[from..]
                .find(t)
                .map(|i| (from + i, from + i + t.len()))
        })
        .min()
}

/// All fenced blocks (``` or ~~~, three or more) in order. A block whose closing fence never
/// comes runs to the end of the text with `closed = false`.
pub fn fenced_blocks(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(open) = fence_open(lines[i]) else {
            i += 1;
            continue;
        };
        let mut body = Vec::new();
        let mut closed = false;
        let mut j = i + 1;
        while j < lines.len() {
            if is_fence_close(lines[j], &open) {
                closed = true;
                break;
            }
            body.push(strip_indent(lines[j], open.indent));
            j += 1;
        }
        let mut body = body.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        blocks.push(Block {
            lang: open.lang,
            body,
            closed,
            line: i + 1,
        });
        i = j + 1;
    }
    blocks
}

struct Fence {
    ch: char,
    len: usize,
    indent: usize,
    lang: String,
}

fn fence_open(line: &str) -> Option<Fence> {
    let trimmed = line.trim_start();
    let indent = line.len() - trimmed.len();
    let ch = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = trimmed.chars().take_while(|c| *c == ch).count();
    if len < 3 {
        return None;
    }
    let info = trimmed[len..].trim();
    // ```x``` on one line is inline code, not a fence.
    if ch == '`' && info.contains('`') {
        return None;
    }
    let lang = info
        .split(|c: char| c.is_whitespace() || c == '{' || c == ',' || c == ':')
        .next()
        .unwrap_or("")
        .trim_start_matches('.')
        .to_ascii_lowercase();
    Some(Fence {
        ch,
        len,
        indent,
        lang,
    })
}

fn is_fence_close(line: &str, open: &Fence) -> bool {
    let t = line.trim();
    t.len() >= open.len && t.chars().all(|c| c == open.ch)
}

fn strip_indent(line: &str, indent: usize) -> &str {
    let ws = line.len() - line.trim_start_matches([' ', '\t']).len();
    &line[ws.min(indent)..]
}

/// Whether `{}` balance in C-like source, ignoring comments, string and character literals. A
/// truncated block almost always ends inside a function body.
fn braces_balanced(src: &str) -> bool {
    let b = src.as_bytes();
    let mut depth: i64 = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                if i + 1 >= b.len() {
                    return false;
                }
                i += 1;
            }
            q @ (b'"' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != q && b[i] != b'\n' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    depth == 0
}

/// The Judge's advice: the JSON object it was asked for when it produced one, and a plain-text
/// rendering either way (what the Coder is shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeAdvice {
    /// Keys and values of the JSON object (non-string values as JSON text), if one was found.
    pub fields: Option<BTreeMap<String, String>>,
    pub text: String,
}

/// Longest advice text passed on when the Judge ignored the JSON format.
const MAX_FREE_TEXT_CHARS: usize = 4000;

/// Extracts the Judge's advice: a ```json block, else the first `{…}` object that parses, else
/// the reply's visible text (shortened).
pub fn extract_judge_advice(reply: &str) -> Result<JudgeAdvice, ExtractError> {
    if reply.trim().is_empty() {
        return Err(ExtractError::EmptyReply);
    }
    let visible = strip_reasoning(reply);
    if visible.text.trim().is_empty() {
        return Err(if visible.unfinished {
            ExtractError::UnfinishedReasoning
        } else {
            ExtractError::EmptyReply
        });
    }
    let from_fence = fenced_blocks(&visible.text)
        .into_iter()
        .rev()
        .filter(|b| b.lang == "json" || b.lang.is_empty())
        .find_map(|b| json_object(&b.body));
    let object = from_fence.or_else(|| first_json_object(&visible.text));
    match object {
        Some(fields) => {
            let text = fields
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("\n");
            Ok(JudgeAdvice {
                fields: Some(fields),
                text,
            })
        }
        None => {
            let t = visible.text.trim();
            let text = if t.chars().count() > MAX_FREE_TEXT_CHARS {
                let cut: String = t.chars().take(MAX_FREE_TEXT_CHARS).collect();
                format!("{cut}…")
            } else {
                t.to_string()
            };
            Ok(JudgeAdvice { fields: None, text })
        }
    }
}

fn json_object(s: &str) -> Option<BTreeMap<String, String>> {
    let v: serde_json::Value = serde_json::from_str(s.trim()).ok()?;
    let obj = v.as_object()?;
    if obj.is_empty() {
        return None;
    }
    Some(
        obj.iter()
            .map(|(k, v)| {
                let s = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect(),
    )
}

/// The first balanced `{…}` span (string-aware) that parses as a non-empty JSON object.
fn first_json_object(text: &str) -> Option<BTreeMap<String, String>> {
    let b = text.as_bytes();
    let mut start = 0;
    while let Some(off) = text[start..].find('{') {
        let s = start + off;
        let mut depth = 0i64;
        let mut in_str = false;
        let mut i = s;
        let mut end = None;
        while i < b.len() {
            let c = b[i];
            if in_str {
                if c == b'\\' {
                    i += 1;
                } else if c == b'"' {
                    in_str = false;
                }
            } else if c == b'"' {
                in_str = true;
            } else if c == b'{' {
                depth += 1;
            } else if c == b'}' {
                depth -= 1;
                if depth == 0 {
                    end = Some(i + 1);
                    break;
                }
            }
            i += 1;
        }
        if let Some(e) = end {
            if let Some(obj) = json_object(&text[s..e]) {
                return Some(obj);
            }
        }
        start = s + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL: &str = "extern \"C\" __global__ void add(const float* a, float* b, int n) {\n    int i = blockIdx.x * blockDim.x + threadIdx.x;\n    if (i < n) { b[i] = a[i] + 1.0f; }\n}\n";
    const PLAN: &str = "[[launch]]\nkernel = \"add\"\ngrid = [\"ceil_div(N, 256)\"]\nblock = [256]\nargs = [\"a\", \"b\", \"N\"]\n";

    fn reply(cuda_tag: &str, toml_tag: &str) -> String {
        format!(
            "Here is my kernel.\n\n```{cuda_tag}\n{KERNEL}```\n\nAnd the plan:\n\n```{toml_tag}\n{PLAN}```\nDone."
        )
    }

    #[test]
    fn common_tags() {
        for tag in [
            "cuda",
            "cu",
            "c++",
            "cpp",
            "c",
            "CUDA",
            "cuda title=\"k.cu\"",
            "kernel.cu",
            "",
        ] {
            let got = extract_kernel(&reply(tag, "toml")).unwrap_or_else(|e| panic!("{tag}: {e}"));
            assert_eq!(got.source, KERNEL, "{tag}");
            assert_eq!(got.plan, PLAN, "{tag}");
            assert!(got.notes.is_empty(), "{tag}: {:?}", got.notes);
        }
        let untagged_plan = extract_kernel(&reply("cuda", "")).expect("untagged plan");
        assert_eq!(untagged_plan.plan, PLAN);
    }

    #[test]
    fn tilde_fences_and_longer_fences() {
        let r = format!("~~~cuda\n{KERNEL}~~~\n\n````toml\n{PLAN}```\n````\n");
        let got = extract_kernel(&r).expect("tilde");
        assert_eq!(got.source, KERNEL);
        // The inner ``` is shorter than the ```` opener, so it is content.
        assert_eq!(got.plan, format!("{PLAN}```\n"));
    }

    #[test]
    fn indented_fences_are_dedented() {
        let indented_kernel: String = KERNEL.lines().map(|l| format!("   {l}\n")).collect();
        let indented_plan: String = PLAN.lines().map(|l| format!("   {l}\n")).collect();
        let r = format!("1. Kernel:\n   ```cuda\n{indented_kernel}   ```\n2. Plan:\n   ```toml\n{indented_plan}   ```\n");
        let got = extract_kernel(&r).expect("indented");
        assert_eq!(got.source, KERNEL);
        assert_eq!(got.plan, PLAN);
    }

    #[test]
    fn think_sections_are_ignored() {
        let draft = "```cuda\n__global__ void draft() {}\n```\n```toml\n[[launch]]\nkernel = \"draft\"\n```\n";
        let r = format!(
            "<think>\nLet me draft:\n{draft}Hmm, better:\n</think>\n{}",
            reply("cuda", "toml")
        );
        let got = extract_kernel(&r).expect("think");
        assert_eq!(got.source, KERNEL);
        assert!(got.notes.is_empty(), "{:?}", got.notes);
        // Opening tag stripped by the server: only the closing tag remains.
        let r = format!("drafting {draft}\n</think>\n{}", reply("cuda", "toml"));
        assert_eq!(extract_kernel(&r).expect("closing only").source, KERNEL);
        // Cut off while thinking.
        let r = format!("<think>\nI will write {draft} and then");
        assert_eq!(extract_kernel(&r), Err(ExtractError::UnfinishedReasoning));
    }

    #[test]
    fn several_blocks_choose_last_kernel_and_launch_plan() {
        let old = "```cuda\n__global__ void old_kernel() {}\n```\n";
        let helper = "```cpp\n__device__ float helper(float x) { return x; }\n```\n";
        let other_toml = "```toml\n[profile]\nx = 1\n```\n";
        let r = format!(
            "The previous version was:\n{old}\nA helper:\n{helper}\n{}\n{other_toml}",
            reply("cuda", "toml")
        );
        let got = extract_kernel(&r).expect("several");
        assert_eq!(got.source, KERNEL);
        assert_eq!(got.plan, PLAN);
        assert_eq!(got.notes.len(), 1, "{:?}", got.notes);
    }

    #[test]
    fn python_and_json_blocks_are_not_kernels() {
        let r = "```python\nimport torch\n```\n```json\n{\"a\": 1}\n```\n";
        assert_eq!(
            extract_kernel(r),
            Err(ExtractError::NoKernelBlock {
                found: "python, json".into()
            })
        );
        assert_eq!(
            extract_kernel("I cannot help with that."),
            Err(ExtractError::NoKernelBlock {
                found: "none".into()
            })
        );
    }

    #[test]
    fn missing_closing_fence_after_complete_code_is_accepted() {
        // The plan first, then a kernel whose closing fence never came (model stopped early).
        let r = format!("```toml\n{PLAN}```\n```cuda\n{KERNEL}");
        let got = extract_kernel(&r).expect("unterminated but complete");
        assert_eq!(got.source, KERNEL);
        assert!(got.notes[0].contains("no closing fence"), "{:?}", got.notes);
    }

    #[test]
    fn truncated_kernel_is_an_error() {
        let cut = &KERNEL[..KERNEL.len() - 10];
        let r = format!("Plan:\n```toml\n{PLAN}```\n```cuda\n{cut}");
        assert_eq!(extract_kernel(&r), Err(ExtractError::TruncatedKernel));
        // A brace inside a comment or string does not fool the balance check.
        let tricky = "__global__ void k() { // }\n printf(\"}\"); /* } */\n";
        assert!(!braces_balanced(tricky));
        assert!(braces_balanced(
            "__global__ void k() { char c = '}'; if (1) { } }"
        ));
    }

    #[test]
    fn truncated_plan_is_an_error() {
        let r = format!(
            "```cuda\n{KERNEL}```\n```toml\n[[launch]]\nkernel = \"add\"\ngrid = [\"ceil_div(N,"
        );
        match extract_kernel(&r) {
            Err(ExtractError::TruncatedPlan(_)) => {}
            other => panic!("{other:?}"),
        }
        // Cut at a line boundary: still parses, used with a note.
        let r = format!("```cuda\n{KERNEL}```\n```toml\n{PLAN}");
        let got = extract_kernel(&r).expect("complete lines");
        assert_eq!(got.plan, PLAN);
        assert_eq!(got.notes.len(), 1);
    }

    #[test]
    fn kernel_without_global_or_plan() {
        let r = format!("```cuda\n__device__ int f() {{ return 1; }}\n```\n```toml\n{PLAN}```");
        assert_eq!(extract_kernel(&r), Err(ExtractError::NoGlobalFunction));
        let r = format!("```cuda\n{KERNEL}```\n");
        assert_eq!(extract_kernel(&r), Err(ExtractError::NoPlanBlock));
        assert_eq!(extract_kernel("  \n"), Err(ExtractError::EmptyReply));
    }

    #[test]
    fn inline_triple_backticks_are_not_fences() {
        let r = format!("Use ```cuda``` blocks.\n{}", reply("cuda", "toml"));
        assert_eq!(extract_kernel(&r).expect("inline").source, KERNEL);
    }

    #[test]
    fn feedback_names_the_format() {
        for e in [
            ExtractError::EmptyReply,
            ExtractError::UnfinishedReasoning,
            ExtractError::NoKernelBlock {
                found: "none".into(),
            },
            ExtractError::NoGlobalFunction,
            ExtractError::TruncatedKernel,
            ExtractError::NoPlanBlock,
            ExtractError::TruncatedPlan("x".into()),
        ] {
            let f = e.feedback();
            assert!(f.contains("```cuda") && f.contains("[[launch]]"), "{f}");
        }
    }

    #[test]
    fn non_ascii_text_does_not_break_scanning() {
        let r = format!(
            "Voilà — «noyau» ✓\n<think>ü</think>{}",
            reply("cuda", "toml")
        );
        assert_eq!(extract_kernel(&r).expect("unicode").source, KERNEL);
        assert!(extract_judge_advice("<think>ö").is_err());
    }

    #[test]
    fn judge_json_in_fence_inline_or_free_text() {
        let fenced = "<think>hm {\"x\": 1}</think>Analysis...\n```json\n{\"critical_issue\": \"out-of-bounds read\", \"why_it_matters\": \"faults\", \"minimal_fix_hint\": \"guard i < n\"}\n```";
        let a = extract_judge_advice(fenced).expect("fenced");
        let f = a.fields.expect("fields");
        assert_eq!(f["critical_issue"], "out-of-bounds read");
        assert!(a.text.contains("minimal_fix_hint: guard i < n"));

        let inline = "The bottleneck: {\"bottleneck\": \"uncoalesced {loads}\", \"score\": 3} end";
        let a = extract_judge_advice(inline).expect("inline");
        let f = a.fields.expect("fields");
        assert_eq!(f["bottleneck"], "uncoalesced {loads}");
        assert_eq!(f["score"], "3");

        let free = extract_judge_advice("Use shared memory tiling. {not json}").expect("free");
        assert_eq!(free.fields, None);
        assert_eq!(free.text, "Use shared memory tiling. {not json}");

        assert_eq!(extract_judge_advice(""), Err(ExtractError::EmptyReply));
        assert_eq!(
            extract_judge_advice("<think>long"),
            Err(ExtractError::UnfinishedReasoning)
        );
    }

    /// Random splices of reply fragments, cut at random characters: extraction never panics,
    /// and whatever it accepts has a kernel and a launch table.
    #[test]
    fn random_replies_never_panic() {
        let pieces = [
            "```cuda\n",
            "```toml\n",
            "```\n",
            "~~~\n",
            "~~~~c++\n",
            "````\n",
            "<think>",
            "</think>",
            "<THINKING>",
            "{",
            "}",
            "\"}\"",
            "'{'",
            "/* { */",
            "// }\n",
            "[[launch]]\n",
            "kernel = \"k\"\n",
            "__global__ void k() ",
            "é✓ ",
            "\n",
            "  ",
            "```json\n{\"a\": 1}\n```\n",
            KERNEL,
            PLAN,
            "text ",
            "\r\n",
            "`",
            "~",
        ];
        let mut rng = fastrand::Rng::with_seed(0x6b65726e);
        for _ in 0..5000 {
            let n = rng.usize(0..14);
            let mut text: String = (0..n).map(|_| pieces[rng.usize(0..pieces.len())]).collect();
            if !text.is_empty() && rng.bool() {
                let cut = rng.usize(0..text.chars().count());
                text = text.chars().take(cut).collect();
            }
            if let Ok(x) = extract_kernel(&text) {
                assert!(x.source.contains("__global__"), "{text:?}");
                assert!(x.plan.contains("[[launch]]"), "{text:?}");
            }
            let _ = extract_judge_advice(&text);
            let _ = strip_reasoning(&text);
        }
    }
}
