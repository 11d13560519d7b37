//! The parameter sizes of a kernel, read from its PTX `.entry` declaration: what
//! `cuFuncGetParamInfo` reports on a GPU, available on a CPU-only machine, so a plan whose
//! arguments do not match the kernel's parameters is found by `tasks check` and dry runs.

/// Bytes of each parameter of the entry `symbol` (mangled, as in the CUBIN), in order; `None`
/// when the PTX has no such entry or a declaration this parser does not understand.
pub fn entry_params(ptx: &str, symbol: &str) -> Option<Vec<usize>> {
    let mut opened = None;
    for (i, l) in ptx.lines().enumerate() {
        let Some((_, rest)) = l.trim().split_once(".entry ") else {
            continue;
        };
        let rest = rest.trim();
        // `name()` on one line declares no parameters; `name(` opens a list.
        if rest.strip_suffix("()").is_some_and(|n| n.trim() == symbol) {
            return Some(Vec::new());
        }
        if rest.strip_suffix('(').is_some_and(|n| n.trim() == symbol) {
            opened = Some(i);
            break;
        }
    }
    let decl = opened?;
    let mut sizes = Vec::new();
    for line in ptx.lines().skip(decl + 1) {
        let l = line.trim();
        if l.starts_with(')') {
            return Some(sizes);
        }
        if l.is_empty() {
            continue;
        }
        sizes.push(param_size(l.trim_end_matches(','))?);
    }
    None
}

/// `.param .u64 .ptr .global .align 8 name`, `.param .f32 name`,
/// `.param .align 8 .b8 name[16]`.
fn param_size(decl: &str) -> Option<usize> {
    let mut words = decl.split_whitespace();
    if words.next()? != ".param" {
        return None;
    }
    let mut elem = None;
    let mut name = "";
    let mut words = words.peekable();
    while let Some(w) = words.next() {
        match w {
            ".align" => {
                words.next()?;
            }
            ".ptr" | ".global" | ".const" | ".shared" | ".local" => {}
            t if t.starts_with('.') => elem = Some(type_size(t)?),
            n => name = n,
        }
    }
    let elem = elem?;
    match name.split_once('[') {
        Some((_, count)) => count
            .trim_end_matches(']')
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_mul(elem)),
        None => Some(elem),
    }
}

fn type_size(t: &str) -> Option<usize> {
    Some(match t {
        ".b8" | ".u8" | ".s8" => 1,
        ".b16" | ".u16" | ".s16" | ".f16" | ".bf16" => 2,
        ".b32" | ".u32" | ".s32" | ".f32" => 4,
        ".b64" | ".u64" | ".s64" | ".f64" => 8,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PTX: &str = "\
.version 9.0
.target sm_90
.address_size 64

.weak .entry _Z12tilus_repackILi3EEvPKhPjii(
\t.param .u64 _Z12tilus_repackILi3EEvPKhPjii_param_0,
\t.param .u64 .ptr .global .align 4 _Z12tilus_repackILi3EEvPKhPjii_param_1,
\t.param .u32 _Z12tilus_repackILi3EEvPKhPjii_param_2,
\t.param .f64 _Z12tilus_repackILi3EEvPKhPjii_param_3
)
.maxntid 256, 1, 1
{
}
.visible .entry by_value(
\t.param .align 64 .b8 by_value_param_0[128],
\t.param .f32 by_value_param_1
)
{
}
.visible .entry no_params()
{
}
";

    #[test]
    fn sizes_come_from_each_entrys_declaration() {
        assert_eq!(
            entry_params(PTX, "_Z12tilus_repackILi3EEvPKhPjii"),
            Some(vec![8, 8, 4, 8])
        );
        assert_eq!(entry_params(PTX, "by_value"), Some(vec![128, 4]));
        assert_eq!(entry_params(PTX, "no_params"), Some(vec![]));
        assert_eq!(entry_params(PTX, "missing"), None);
        // A prefix of another symbol is not that symbol.
        assert_eq!(entry_params(PTX, "_Z12tilus_repack"), None);
    }

    #[test]
    fn an_entry_without_parameters_or_with_unknown_declarations() {
        let ptx = ".visible .entry empty(\n)\n{\n}\n";
        assert_eq!(entry_params(ptx, "empty"), Some(vec![]));
        let odd = ".visible .entry odd(\n\t.param .v2 odd_param_0\n)\n";
        assert_eq!(entry_params(odd, "odd"), None);
        let open = ".visible .entry open(\n\t.param .u32 open_param_0,\n";
        assert_eq!(entry_params(open, "open"), None);
        let huge =
            ".visible .entry huge(\n\t.param .align 8 .b64 huge_param_0[18446744073709551615]\n)\n";
        assert_eq!(entry_params(huge, "huge"), None);
    }
}
