//! Static checks on kernel source before NVRTC sees it: which `__global__` functions it defines,
//! and whether every `#include` is on the allowlist.
//!
//! The include check is a security boundary: an `#include` can read any file on the machine into
//! the compile log, which goes back to the LLM. So it runs on the source as the preprocessor
//! sees it (line splices joined, comments removed, `%:` digraphs recognised) and rejects absolute
//! paths, `..`, computed includes and anything not on the allowlist.

use std::collections::BTreeSet;

/// Headers a kernel may include: CUDA's device-side headers, shipped with NVRTC / the toolkit.
pub const INCLUDE_ALLOWLIST: &[&str] = &[
    "cuda_fp16.h",
    "cuda_bf16.h",
    "cuda_fp8.h",
    "cuda_fp6.h",
    "cuda_fp4.h",
    "mma.h",
    "cooperative_groups.h",
    "cooperative_groups/reduce.h",
    "cooperative_groups/scan.h",
    "cooperative_groups/memcpy_async.h",
    "cuda_pipeline.h",
    "cuda_pipeline_primitives.h",
    "cuda_awbarrier.h",
    "cuda_awbarrier_primitives.h",
    "math_constants.h",
    "vector_types.h",
    "vector_functions.h",
    "cuda/pipeline",
    "cuda/barrier",
    "cuda/annotated_ptr",
    "cuda/atomic",
    "cuda/ptx",
];

/// Prefixes under which every header is allowed (libcu++'s standard library).
pub const INCLUDE_ALLOWED_PREFIXES: &[&str] = &["cuda/std/"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("line {line}: {message}")]
pub struct IncludeViolation {
    pub line: usize,
    pub message: String,
}

/// Source as the preprocessor's later phases see it, with a map back to physical lines.
struct Logical {
    text: String,
    /// Physical (1-based) line of each logical line.
    line_of: Vec<usize>,
}

/// Joins backslash-newline splices (translation phase 2) and blanks out comments (phase 3).
/// String and character literals are kept for the include check (`#include "x.h"` is one) and
/// blanked for the kernel scan (a `__global__` inside a string defines nothing).
fn preprocess(src: &str, keep_strings: bool) -> Logical {
    let mut spliced = String::with_capacity(src.len());
    let mut line_of = vec![1];
    let mut physical = 1;
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            // A backslash followed by optional spaces and a newline splices lines.
            let mut ws = String::new();
            while let Some(&n) = chars.peek() {
                if n == ' ' || n == '\t' || n == '\r' {
                    ws.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            if chars.peek() == Some(&'\n') {
                chars.next();
                physical += 1;
                continue;
            }
            spliced.push(c);
            spliced.push_str(&ws);
            continue;
        }
        if c == '\n' {
            physical += 1;
            line_of.push(physical);
        }
        spliced.push(c);
    }

    let mut out = String::with_capacity(spliced.len());
    let b: Vec<char> = spliced.chars().collect();
    let mut i = 0;
    let mut prev_alnum = false;
    while i < b.len() {
        let c = b[i];
        if c == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
            out.push(' ');
            prev_alnum = false;
            continue;
        }
        if c == '/' && b.get(i + 1) == Some(&'*') {
            i += 2;
            out.push(' ');
            while i < b.len() && !(b[i] == '*' && b.get(i + 1) == Some(&'/')) {
                if b[i] == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
            prev_alnum = false;
            continue;
        }
        // A quote after an alphanumeric is a C++14 digit separator (1'000), not a literal.
        if c == '"' || (c == '\'' && !prev_alnum) {
            out.push(c);
            i += 1;
            let push = |out: &mut String, ch: char| out.push(if keep_strings { ch } else { ' ' });
            while i < b.len() && b[i] != c && b[i] != '\n' {
                if b[i] == '\\' && i + 1 < b.len() {
                    push(&mut out, b[i]);
                    i += 1;
                }
                push(&mut out, b[i]);
                i += 1;
            }
            if i < b.len() && b[i] == c {
                out.push(c);
                i += 1;
            }
            prev_alnum = false;
            continue;
        }
        prev_alnum = c.is_alphanumeric() || c == '_';
        out.push(c);
        i += 1;
    }
    Logical { text: out, line_of }
}

/// Checks every include-like directive; returns all violations.
pub fn check_includes(src: &str) -> Vec<IncludeViolation> {
    let logical = preprocess(src, true);
    let mut bad = Vec::new();
    for (idx, line) in logical.text.lines().enumerate() {
        let physical = logical.line_of.get(idx).copied().unwrap_or(idx + 1);
        let t = line.trim_start();
        let rest = t
            .strip_prefix('#')
            .or_else(|| t.strip_prefix("%:"))
            .unwrap_or_default();
        if !t.starts_with('#') && !t.starts_with("%:") {
            check_has_include(line, physical, &mut bad);
            continue;
        }
        let rest = rest.trim_start();
        let directive: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let arg = rest[directive.len()..].trim();
        match directive.as_str() {
            "include" => {
                if let Err(m) = check_header_arg(arg) {
                    bad.push(IncludeViolation {
                        line: physical,
                        message: m,
                    });
                }
            }
            "include_next" | "import" | "embed" => bad.push(IncludeViolation {
                line: physical,
                message: format!("`#{directive}` is not allowed in kernel source"),
            }),
            _ => check_has_include(line, physical, &mut bad),
        }
    }
    bad
}

fn check_has_include(line: &str, physical: usize, bad: &mut Vec<IncludeViolation>) {
    for kw in ["__has_include_next", "__has_embed"] {
        if line.contains(kw) {
            bad.push(IncludeViolation {
                line: physical,
                message: format!("`{kw}` is not allowed in kernel source"),
            });
            return;
        }
    }
    let mut rest = line;
    while let Some(pos) = rest.find("__has_include") {
        let after = rest[pos + "__has_include".len()..].trim_start();
        let Some(inner) = after.strip_prefix('(') else {
            bad.push(IncludeViolation {
                line: physical,
                message: "`__has_include` must be followed by a header name in parentheses".into(),
            });
            return;
        };
        let arg: String = inner.chars().take_while(|&c| c != ')').collect();
        if let Err(m) = check_header_arg(arg.trim()) {
            bad.push(IncludeViolation {
                line: physical,
                message: format!("in __has_include: {m}"),
            });
        }
        rest = &after[1..];
    }
}

fn check_header_arg(arg: &str) -> Result<(), String> {
    let (open, close) = match arg.chars().next() {
        Some('<') => ('<', '>'),
        Some('"') => ('"', '"'),
        _ => {
            return Err(format!(
            "`#include {arg}`: only literal <header> or \"header\" names are allowed (no macros)"
        ))
        }
    };
    let inner = &arg[open.len_utf8()..];
    let Some(end) = inner.find(close) else {
        return Err(format!("`#include {arg}`: unterminated header name"));
    };
    let name = &inner[..end];
    let trailing = inner[end + 1..].trim();
    if !trailing.is_empty() {
        return Err(format!(
            "`#include {arg}`: unexpected text after the header name"
        ));
    }
    check_header_name(name)
}

/// Whether a header name may be included.
pub fn check_header_name(name: &str) -> Result<(), String> {
    if name.starts_with('/') || name.starts_with('~') || name.contains(':') {
        return Err(format!("`{name}`: absolute paths are not allowed"));
    }
    if name.split(['/', '\\']).any(|c| c == "..") {
        return Err(format!("`{name}`: `..` is not allowed in an include path"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
    {
        return Err(format!("`{name}`: unexpected characters in a header name"));
    }
    if INCLUDE_ALLOWLIST.contains(&name)
        || INCLUDE_ALLOWED_PREFIXES.iter().any(|p| name.starts_with(p))
    {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not on the include allowlist (allowed: {}, and {})",
            INCLUDE_ALLOWLIST.join(", "),
            INCLUDE_ALLOWED_PREFIXES
                .iter()
                .map(|p| format!("{p}*"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Attribute-like keywords that take a parenthesised argument between `__global__` and the
/// function name.
const SKIPPED_CALLS: &[&str] = &[
    "__launch_bounds__",
    "__cluster_dims__",
    "__maxnreg__",
    "__attribute__",
    "__align__",
    "alignas",
    "__declspec",
];

/// Names of the `__global__` functions the source defines (template names without arguments).
pub fn kernel_names(src: &str) -> BTreeSet<String> {
    let text = preprocess(src, false).text;
    let mut out = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(pos) = rest.find("__global__") {
        let before_ok = pos == 0
            || !rest[..pos]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[pos + "__global__".len()..];
        if !before_ok || rest.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(name) = name_after_global(rest) {
            out.insert(name);
        }
    }
    out
}

fn name_after_global(s: &str) -> Option<String> {
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut last_ident: Option<String> = None;
    while i < b.len() {
        let c = b[i];
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            let ident: String = b[start..i].iter().collect();
            let mut j = i;
            while j < b.len() && b[j].is_whitespace() {
                j += 1;
            }
            if b.get(j) == Some(&'(') {
                if SKIPPED_CALLS.contains(&ident.as_str()) {
                    // Skip the balanced parenthesised argument.
                    let mut depth = 0;
                    while j < b.len() {
                        match b[j] {
                            '(' => depth += 1,
                            ')' => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                        j += 1;
                    }
                    i = j + 1;
                    continue;
                }
                return Some(ident);
            }
            last_ident = Some(ident);
            continue;
        }
        if c == ';' || c == '{' || c == '}' {
            return None;
        }
        i += 1;
    }
    let _ = last_ident;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_kernel_names() {
        let src = r#"
            // __global__ void commented_out(float*) {}
            /* __global__ void also_commented(float*) {} */
            extern "C" __global__ void __launch_bounds__(256, 2) softmax(const float* x, float* y) {}
            template <int BM, int BN>
            __global__ void gemm(const float* a) {}
            extern "C" __global__ void
            split_line(int n) {}
            static const char* s = "__global__ void in_string(";
            __device__ void helper() {}
            #define GLOBAL __global__
        "#;
        let names = kernel_names(src);
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            vec!["gemm", "softmax", "split_line"]
        );
    }

    #[test]
    fn allowlisted_includes_pass() {
        let src = "#include <cuda_bf16.h>\n#  include \"cuda_fp16.h\"\n#include <cuda/std/cstdint>\n#include <cooperative_groups.h>\n";
        assert!(check_includes(src).is_empty(), "{:?}", check_includes(src));
    }

    #[test]
    fn hostile_includes_are_rejected_with_lines() {
        let cases = [
            ("#include </etc/passwd>", "absolute"),
            ("#include \"../../secrets.txt\"", ".."),
            ("#include \"cuda/std/../../../etc/passwd\"", ".."),
            ("#include <stdio.h>", "allowlist"),
            ("#include MY_HEADER", "literal"),
            ("%:include </etc/shadow>", "absolute"),
            ("#/* sneaky */include </etc/hosts>", "absolute"),
            ("#inc\\\nlude </etc/hosts>", "absolute"),
            ("#include_next <cuda_fp16.h>", "include_next"),
            ("#embed \"/etc/passwd\"", "embed"),
            ("#if __has_include(\"/etc/passwd\")\n#endif", "absolute"),
            ("#include <cuda_fp16.h> extra", "unexpected"),
            ("#include <cuda_fp16.h", "unterminated"),
            ("#include <C:/x.h>", "absolute"),
        ];
        for (src, what) in cases {
            let v = check_includes(src);
            assert_eq!(v.len(), 1, "{src}: {v:?}");
            assert!(v[0].message.contains(what), "{src}: {}", v[0].message);
            assert_eq!(v[0].line, 1, "{src}");
        }
    }

    #[test]
    fn line_numbers_survive_splices_and_block_comments() {
        let src = "int a; /* one\ntwo */\n#define X \\\n  1\n#include <stdio.h>\n";
        let v = check_includes(src);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].line, 5);
    }

    #[test]
    fn includes_inside_strings_and_comments_are_ignored() {
        let src = "// #include </etc/passwd>\nconst char* s = \"#include </etc/passwd>\";\n/*\n#include </etc/passwd>\n*/\n";
        assert!(check_includes(src).is_empty());
    }
}
