//! Integer expressions over task parameters: shapes, grids, buffer lengths, `when` conditions and
//! roofline formulas.
//!
//! Written by hand rather than taken from a crate: the maintained general-purpose evaluators are
//! either licensed AGPL (evalexpr ≥ 12) or evaluate in floating point (meval, fasteval, exmex),
//! and shape arithmetic must be exact 64-bit integer arithmetic in which overflow and division by
//! zero are errors. The grammar is small on purpose:
//!
//! ```text
//! expr    := or
//! or      := and  ( "||" and )*
//! and     := cmp  ( "&&" cmp )*
//! cmp     := add  ( ("==" | "!=" | "<" | "<=" | ">" | ">=") add )?
//! add     := mul  ( ("+" | "-") mul )*
//! mul     := unary ( ("*" | "/" | "%") unary )*
//! unary   := ("-" | "!") unary | primary
//! primary := INT | NAME | NAME "(" expr ("," expr)* ")" | "(" expr ")"
//! ```
//!
//! Functions: `min(a, b, ...)`, `max(a, b, ...)`, `ceil_div(a, b)`, `round_up(a, b)` and
//! `if(cond, then, else)`. Comparisons and logic yield 1 or 0; any non-zero value is true.
//! `/` and `%` truncate toward zero, as in C. `if`, `&&` and `||` evaluate lazily, so
//! `if(N > 0, K / N, 0)` is fine for `N = 0`.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// Names the evaluator resolves: task parameters, usually.
pub trait Env {
    fn lookup(&self, name: &str) -> Option<i64>;
}

impl Env for HashMap<String, i64> {
    fn lookup(&self, name: &str) -> Option<i64> {
        self.get(name).copied()
    }
}

impl Env for std::collections::BTreeMap<String, i64> {
    fn lookup(&self, name: &str) -> Option<i64> {
        self.get(name).copied()
    }
}

impl<F: Fn(&str) -> Option<i64>> Env for F {
    fn lookup(&self, name: &str) -> Option<i64> {
        self(name)
    }
}

/// What went wrong, and where in the expression text (byte offsets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at column {} of `{source_text}`)", .start + 1)]
pub struct ExprError {
    pub kind: ExprErrorKind,
    pub message: String,
    pub start: usize,
    pub end: usize,
    pub source_text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExprErrorKind {
    Syntax,
    UnknownName,
    UnknownFunction,
    Arity,
    Overflow,
    DivisionByZero,
}

/// The built-in functions, for error messages and documentation.
pub const FUNCTIONS: &[&str] = &["min", "max", "ceil_div", "round_up", "if"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Min,
    Max,
    CeilDiv,
    RoundUp,
    If,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Int(i64),
    Name(String),
    Neg(Box<Spanned>),
    Not(Box<Spanned>),
    Bin(BinOp, Box<Spanned>, Box<Spanned>),
    Call(Func, Vec<Spanned>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Spanned {
    node: Node,
    start: usize,
    end: usize,
}

/// A parsed expression: parse once, evaluate for many shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    text: String,
    root: Spanned,
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Longest expression text accepted; deeper nesting than this is certainly not a shape formula,
/// and the bound keeps the recursive-descent parser's stack use small.
const MAX_LEN: usize = 4096;
const MAX_DEPTH: usize = 64;

impl Expr {
    pub fn parse(text: &str) -> Result<Expr, ExprError> {
        if text.len() > MAX_LEN {
            return Err(ExprError {
                kind: ExprErrorKind::Syntax,
                message: format!(
                    "expression is {} bytes long; the limit is {MAX_LEN}",
                    text.len()
                ),
                start: 0,
                end: 0,
                source_text: text.chars().take(60).collect::<String>() + "...",
            });
        }
        let tokens = lex(text)?;
        let mut p = Parser {
            text,
            tokens,
            pos: 0,
            depth: 0,
        };
        let root = p.expr()?;
        if let Some(t) = p.tokens.get(p.pos) {
            return Err(p.err_at(
                t.start,
                t.end,
                format!("unexpected `{}`", &text[t.start..t.end]),
            ));
        }
        Ok(Expr {
            text: text.to_string(),
            root,
        })
    }

    /// A literal constant, for defaults built in code.
    pub fn constant(v: i64) -> Expr {
        Expr {
            text: v.to_string(),
            root: Spanned {
                node: Node::Int(v),
                start: 0,
                end: v.to_string().len(),
            },
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Every name the expression refers to (not the function names).
    pub fn names(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        collect_names(&self.root, &mut out);
        out
    }

    /// The first name not resolved by `known`, with its position, for static validation.
    pub fn check_names(&self, known: impl Fn(&str) -> bool) -> Result<(), ExprError> {
        let mut bad = None;
        find_unknown(&self.root, &known, &mut bad);
        match bad {
            None => Ok(()),
            Some((name, start, end)) => Err(ExprError {
                kind: ExprErrorKind::UnknownName,
                message: format!("unknown name `{name}`"),
                start,
                end,
                source_text: self.text.clone(),
            }),
        }
    }

    pub fn eval(&self, env: &dyn Env) -> Result<i64, ExprError> {
        eval(&self.root, env).map_err(|(kind, message, start, end)| ExprError {
            kind,
            message,
            start,
            end,
            source_text: self.text.clone(),
        })
    }

    /// Evaluates as a condition: non-zero is true.
    pub fn eval_bool(&self, env: &dyn Env) -> Result<bool, ExprError> {
        Ok(self.eval(env)? != 0)
    }
}

fn collect_names(n: &Spanned, out: &mut BTreeSet<String>) {
    match &n.node {
        Node::Int(_) => {}
        Node::Name(s) => {
            out.insert(s.clone());
        }
        Node::Neg(a) | Node::Not(a) => collect_names(a, out),
        Node::Bin(_, a, b) => {
            collect_names(a, out);
            collect_names(b, out);
        }
        Node::Call(_, args) => args.iter().for_each(|a| collect_names(a, out)),
    }
}

fn find_unknown(
    n: &Spanned,
    known: &dyn Fn(&str) -> bool,
    bad: &mut Option<(String, usize, usize)>,
) {
    if bad.is_some() {
        return;
    }
    match &n.node {
        Node::Int(_) => {}
        Node::Name(s) => {
            if !known(s) {
                *bad = Some((s.clone(), n.start, n.end));
            }
        }
        Node::Neg(a) | Node::Not(a) => find_unknown(a, known, bad),
        Node::Bin(_, a, b) => {
            find_unknown(a, known, bad);
            find_unknown(b, known, bad);
        }
        Node::Call(_, args) => args.iter().for_each(|a| find_unknown(a, known, bad)),
    }
}

type EvalErr = (ExprErrorKind, String, usize, usize);

fn eval(n: &Spanned, env: &dyn Env) -> Result<i64, EvalErr> {
    let overflow = |what: String| (ExprErrorKind::Overflow, what, n.start, n.end);
    match &n.node {
        Node::Int(v) => Ok(*v),
        Node::Name(s) => env.lookup(s).ok_or_else(|| {
            (
                ExprErrorKind::UnknownName,
                format!("unknown name `{s}`"),
                n.start,
                n.end,
            )
        }),
        Node::Neg(a) => {
            let v = eval(a, env)?;
            v.checked_neg()
                .ok_or_else(|| overflow(format!("integer overflow in -({v})")))
        }
        Node::Not(a) => Ok((eval(a, env)? == 0) as i64),
        Node::Bin(BinOp::And, a, b) => Ok((eval(a, env)? != 0 && eval(b, env)? != 0) as i64),
        Node::Bin(BinOp::Or, a, b) => Ok((eval(a, env)? != 0 || eval(b, env)? != 0) as i64),
        Node::Bin(op, a, b) => {
            let (x, y) = (eval(a, env)?, eval(b, env)?);
            let r = match op {
                BinOp::Add => x.checked_add(y),
                BinOp::Sub => x.checked_sub(y),
                BinOp::Mul => x.checked_mul(y),
                BinOp::Div | BinOp::Rem if y == 0 => {
                    return Err((
                        ExprErrorKind::DivisionByZero,
                        format!("division by zero in {x} {} 0", op.symbol()),
                        n.start,
                        n.end,
                    ))
                }
                BinOp::Div => x.checked_div(y),
                BinOp::Rem => x.checked_rem(y),
                BinOp::Eq => Some((x == y) as i64),
                BinOp::Ne => Some((x != y) as i64),
                BinOp::Lt => Some((x < y) as i64),
                BinOp::Le => Some((x <= y) as i64),
                BinOp::Gt => Some((x > y) as i64),
                BinOp::Ge => Some((x >= y) as i64),
                BinOp::And | BinOp::Or => unreachable!("handled above"),
            };
            r.ok_or_else(|| overflow(format!("integer overflow in {x} {} {y}", op.symbol())))
        }
        Node::Call(Func::If, args) => {
            if eval(&args[0], env)? != 0 {
                eval(&args[1], env)
            } else {
                eval(&args[2], env)
            }
        }
        Node::Call(f, args) => {
            let vals = args
                .iter()
                .map(|a| eval(a, env))
                .collect::<Result<Vec<_>, _>>()?;
            match f {
                Func::Min => Ok(vals.iter().copied().min().unwrap_or(0)),
                Func::Max => Ok(vals.iter().copied().max().unwrap_or(0)),
                Func::CeilDiv | Func::RoundUp => {
                    let (a, b) = (vals[0], vals[1]);
                    if b == 0 {
                        return Err((
                            ExprErrorKind::DivisionByZero,
                            format!("division by zero in {}({a}, 0)", func_name(*f)),
                            n.start,
                            n.end,
                        ));
                    }
                    let q = ceil_div(a, b).ok_or_else(|| {
                        overflow(format!("integer overflow in ceil_div({a}, {b})"))
                    })?;
                    if *f == Func::CeilDiv {
                        Ok(q)
                    } else {
                        q.checked_mul(b).ok_or_else(|| {
                            overflow(format!("integer overflow in round_up({a}, {b})"))
                        })
                    }
                }
                Func::If => unreachable!("handled above"),
            }
        }
    }
}

/// Ceiling division that is exact for negative operands too.
fn ceil_div(a: i64, b: i64) -> Option<i64> {
    let q = a.checked_div(b)?;
    let r = a.checked_rem(b)?;
    if r != 0 && ((r > 0) == (b > 0)) {
        q.checked_add(1)
    } else {
        Some(q)
    }
}

fn func_name(f: Func) -> &'static str {
    match f {
        Func::Min => "min",
        Func::Max => "max",
        Func::CeilDiv => "ceil_div",
        Func::RoundUp => "round_up",
        Func::If => "if",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Int(i64),
    Ident(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

fn syntax(text: &str, start: usize, end: usize, message: String) -> ExprError {
    ExprError {
        kind: ExprErrorKind::Syntax,
        message,
        start,
        end,
        source_text: text.to_string(),
    }
}

fn lex(text: &str) -> Result<Vec<Token>, ExprError> {
    const OPS: &[&str] = &[
        "==", "!=", "<=", ">=", "&&", "||", "+", "-", "*", "/", "%", "<", ">", "!",
    ];
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() {
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
            {
                i += 1;
            }
            let lit = &text[start..i];
            let digits: String = lit.chars().filter(|&c| c != '_').collect();
            let v = digits.parse::<i64>().map_err(|_| {
                let why = if digits.chars().all(|c| c.is_ascii_digit()) {
                    "does not fit in a 64-bit signed integer"
                } else {
                    "is not an integer (expressions are integer-only)"
                };
                syntax(text, start, i, format!("number `{lit}` {why}"))
            })?;
            out.push(Token {
                tok: Tok::Int(v),
                start,
                end: i,
            });
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Ident(text[start..i].to_string()),
                start,
                end: i,
            });
            continue;
        }
        let single = match c {
            b'(' => Some(Tok::LParen),
            b')' => Some(Tok::RParen),
            b',' => Some(Tok::Comma),
            _ => None,
        };
        if let Some(tok) = single {
            i += 1;
            out.push(Token { tok, start, end: i });
            continue;
        }
        if let Some(op) = OPS.iter().find(|op| text[i..].starts_with(**op)) {
            i += op.len();
            out.push(Token {
                tok: Tok::Op(op),
                start,
                end: i,
            });
            continue;
        }
        let ch = text[i..].chars().next().unwrap_or('?');
        return Err(syntax(
            text,
            start,
            start + ch.len_utf8(),
            format!("unexpected character `{ch}`"),
        ));
    }
    Ok(out)
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn err_at(&self, start: usize, end: usize, message: String) -> ExprError {
        syntax(self.text, start, end, message)
    }

    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn end_pos(&self) -> usize {
        self.text.len()
    }

    fn eat_op(&mut self, ops: &[&'static str]) -> Option<&'static str> {
        if let Some(Tok::Op(o)) = self.peek() {
            if let Some(found) = ops.iter().find(|x| *x == o) {
                self.pos += 1;
                return Some(found);
            }
        }
        None
    }

    fn expr(&mut self) -> Result<Spanned, ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let at = self.tokens.get(self.pos).map(|t| t.start).unwrap_or(0);
            return Err(self.err_at(
                at,
                at,
                format!("expression nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        let r = self.or();
        self.depth -= 1;
        r
    }

    fn binary_level(
        &mut self,
        ops: &[&'static str],
        next: fn(&mut Self) -> Result<Spanned, ExprError>,
        chain: bool,
    ) -> Result<Spanned, ExprError> {
        let mut lhs = next(self)?;
        while let Some(op) = self.eat_op(ops) {
            let rhs = next(self)?;
            let (start, end) = (lhs.start, rhs.end);
            lhs = Spanned {
                node: Node::Bin(to_binop(op), Box::new(lhs), Box::new(rhs)),
                start,
                end,
            };
            if !chain {
                if let Some(Tok::Op(o)) = self.peek() {
                    if ops.contains(o) {
                        let t = &self.tokens[self.pos];
                        return Err(self.err_at(
                            t.start,
                            t.end,
                            "comparisons do not chain; use && between them".to_string(),
                        ));
                    }
                }
                break;
            }
        }
        Ok(lhs)
    }

    fn or(&mut self) -> Result<Spanned, ExprError> {
        self.binary_level(&["||"], Self::and, true)
    }

    fn and(&mut self) -> Result<Spanned, ExprError> {
        self.binary_level(&["&&"], Self::cmp, true)
    }

    fn cmp(&mut self) -> Result<Spanned, ExprError> {
        self.binary_level(&["==", "!=", "<=", ">=", "<", ">"], Self::add, false)
    }

    fn add(&mut self) -> Result<Spanned, ExprError> {
        self.binary_level(&["+", "-"], Self::mul, true)
    }

    fn mul(&mut self) -> Result<Spanned, ExprError> {
        self.binary_level(&["*", "/", "%"], Self::unary, true)
    }

    fn unary(&mut self) -> Result<Spanned, ExprError> {
        let start = self.tokens.get(self.pos).map(|t| t.start).unwrap_or(0);
        if let Some(op) = self.eat_op(&["-", "!"]) {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(self.err_at(
                    start,
                    start,
                    format!("expression nested deeper than {MAX_DEPTH} levels"),
                ));
            }
            let inner = self.unary()?;
            self.depth -= 1;
            let end = inner.end;
            // Fold `-INT` into a literal: keeps ASTs of negative constants flat.
            if op == "-" {
                if let Node::Int(v) = inner.node {
                    return Ok(Spanned {
                        node: Node::Int(-v),
                        start,
                        end,
                    });
                }
            }
            let node = if op == "-" {
                Node::Neg(Box::new(inner))
            } else {
                Node::Not(Box::new(inner))
            };
            return Ok(Spanned { node, start, end });
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Spanned, ExprError> {
        let Some(t) = self.tokens.get(self.pos).cloned() else {
            let at = self.end_pos();
            return Err(self.err_at(
                at,
                at,
                "expression ends where a value was expected".to_string(),
            ));
        };
        self.pos += 1;
        match t.tok {
            Tok::Int(v) => Ok(Spanned {
                node: Node::Int(v),
                start: t.start,
                end: t.end,
            }),
            Tok::LParen => {
                let inner = self.expr()?;
                self.expect_rparen(t.start)?;
                Ok(inner)
            }
            Tok::Ident(name) => {
                if self.peek() != Some(&Tok::LParen) {
                    return Ok(Spanned {
                        node: Node::Name(name),
                        start: t.start,
                        end: t.end,
                    });
                }
                let func = match name.as_str() {
                    "min" => Func::Min,
                    "max" => Func::Max,
                    "ceil_div" => Func::CeilDiv,
                    "round_up" => Func::RoundUp,
                    "if" => Func::If,
                    _ => {
                        return Err(ExprError {
                            kind: ExprErrorKind::UnknownFunction,
                            message: format!(
                                "unknown function `{name}` (known: {})",
                                FUNCTIONS.join(", ")
                            ),
                            start: t.start,
                            end: t.end,
                            source_text: self.text.to_string(),
                        })
                    }
                };
                let open = self.tokens[self.pos].start;
                self.pos += 1;
                let mut args = vec![self.expr()?];
                while self.peek() == Some(&Tok::Comma) {
                    self.pos += 1;
                    args.push(self.expr()?);
                }
                let end = self.expect_rparen(open)?;
                let ok = match func {
                    Func::Min | Func::Max => args.len() >= 2,
                    Func::CeilDiv | Func::RoundUp => args.len() == 2,
                    Func::If => args.len() == 3,
                };
                if !ok {
                    let want = match func {
                        Func::Min | Func::Max => "at least 2 arguments",
                        Func::CeilDiv | Func::RoundUp => "2 arguments",
                        Func::If => "3 arguments (condition, then, else)",
                    };
                    return Err(ExprError {
                        kind: ExprErrorKind::Arity,
                        message: format!("`{name}` takes {want}, got {}", args.len()),
                        start: t.start,
                        end,
                        source_text: self.text.to_string(),
                    });
                }
                Ok(Spanned {
                    node: Node::Call(func, args),
                    start: t.start,
                    end,
                })
            }
            Tok::RParen | Tok::Comma | Tok::Op(_) => Err(self.err_at(
                t.start,
                t.end,
                format!(
                    "unexpected `{}` where a value was expected",
                    &self.text[t.start..t.end]
                ),
            )),
        }
    }

    fn expect_rparen(&mut self, open: usize) -> Result<usize, ExprError> {
        match self.tokens.get(self.pos) {
            Some(Token {
                tok: Tok::RParen,
                end,
                ..
            }) => {
                let end = *end;
                self.pos += 1;
                Ok(end)
            }
            Some(t) => Err(self.err_at(
                t.start,
                t.end,
                format!(
                    "expected `)` (to close the `(` at column {}), found `{}`",
                    open + 1,
                    &self.text[t.start..t.end]
                ),
            )),
            None => Err(self.err_at(
                open,
                open + 1,
                format!("unclosed `(` at column {}", open + 1),
            )),
        }
    }
}

fn to_binop(op: &str) -> BinOp {
    match op {
        "+" => BinOp::Add,
        "-" => BinOp::Sub,
        "*" => BinOp::Mul,
        "/" => BinOp::Div,
        "%" => BinOp::Rem,
        "==" => BinOp::Eq,
        "!=" => BinOp::Ne,
        "<" => BinOp::Lt,
        "<=" => BinOp::Le,
        ">" => BinOp::Gt,
        ">=" => BinOp::Ge,
        "&&" => BinOp::And,
        _ => BinOp::Or,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, i64)]) -> HashMap<String, i64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn ev(s: &str, e: &HashMap<String, i64>) -> Result<i64, ExprError> {
        Expr::parse(s)?.eval(e)
    }

    #[test]
    fn arithmetic_and_precedence() {
        let e = env(&[("N", 4096), ("K", 8192), ("B", 3)]);
        assert_eq!(
            ev("N*K/2 + N*K/64 + 2*B*(K+N)", &e).unwrap(),
            4096 * 8192 / 2 + 4096 * 8192 / 64 + 2 * 3 * (8192 + 4096)
        );
        assert_eq!(ev("1 + 2 * 3", &e).unwrap(), 7);
        assert_eq!(ev("(1 + 2) * 3", &e).unwrap(), 9);
        assert_eq!(ev("10 - 3 - 2", &e).unwrap(), 5);
        assert_eq!(ev("7 / 2", &e).unwrap(), 3);
        assert_eq!(ev("-7 / 2", &e).unwrap(), -3);
        assert_eq!(ev("-7 % 2", &e).unwrap(), -1);
        assert_eq!(ev("1_000_000", &e).unwrap(), 1_000_000);
        assert_eq!(ev("--3", &e).unwrap(), 3);
    }

    #[test]
    fn functions() {
        let e = env(&[("N", 1000)]);
        assert_eq!(ev("ceil_div(N, 128)", &e).unwrap(), 8);
        assert_eq!(ev("ceil_div(1024, 128)", &e).unwrap(), 8);
        assert_eq!(ev("ceil_div(-5, 2)", &e).unwrap(), -2);
        assert_eq!(ev("round_up(N, 64)", &e).unwrap(), 1024);
        assert_eq!(ev("min(N, 5, 7)", &e).unwrap(), 5);
        assert_eq!(ev("max(N, 5, 7)", &e).unwrap(), 1000);
        assert_eq!(ev("if(N > 512, 1, 2)", &e).unwrap(), 1);
    }

    #[test]
    fn comparisons_and_logic() {
        let e = env(&[("B", 4)]);
        assert_eq!(ev("B <= 8", &e).unwrap(), 1);
        assert_eq!(ev("B <= 8 && B > 4", &e).unwrap(), 0);
        assert_eq!(ev("B == 1 || B == 4", &e).unwrap(), 1);
        assert_eq!(ev("!(B == 4)", &e).unwrap(), 0);
        assert!(Expr::parse("B != 3").unwrap().eval_bool(&e).unwrap());
    }

    #[test]
    fn lazy_evaluation_avoids_errors_in_untaken_branches() {
        let e = env(&[("N", 0)]);
        assert_eq!(ev("if(N > 0, 10 / N, 0)", &e).unwrap(), 0);
        assert_eq!(ev("N != 0 && 10 / N > 1", &e).unwrap(), 0);
        assert_eq!(ev("N == 0 || 10 / N > 1", &e).unwrap(), 1);
    }

    #[test]
    fn overflow_is_an_error() {
        let e = env(&[("N", i64::MAX)]);
        let err = ev("N + 1", &e).unwrap_err();
        assert_eq!(err.kind, ExprErrorKind::Overflow);
        assert!(err.message.contains("overflow"), "{err}");
        assert_eq!(ev("N * 2", &e).unwrap_err().kind, ExprErrorKind::Overflow);
        assert_eq!(ev("-N - 2", &e).unwrap_err().kind, ExprErrorKind::Overflow);
        assert_eq!(
            ev("(-N - 1) / -1", &e).unwrap_err().kind,
            ExprErrorKind::Overflow
        );
        assert_eq!(
            ev("round_up(N, 2)", &e).unwrap_err().kind,
            ExprErrorKind::Overflow
        );
    }

    #[test]
    fn division_by_zero_is_an_error() {
        let e = env(&[("Z", 0)]);
        for s in ["1 / Z", "1 % Z", "ceil_div(4, Z)", "round_up(4, Z)"] {
            let err = ev(s, &e).unwrap_err();
            assert_eq!(err.kind, ExprErrorKind::DivisionByZero, "{s}");
        }
    }

    #[test]
    fn unknown_names_are_reported_with_position() {
        let e = env(&[("N", 1)]);
        let err = ev("N * Q", &e).unwrap_err();
        assert_eq!(err.kind, ExprErrorKind::UnknownName);
        assert_eq!((err.start, err.end), (4, 5));
        assert!(err.to_string().contains("`Q`"), "{err}");
        let ex = Expr::parse("ceil_div(M, T) + N").unwrap();
        assert_eq!(
            ex.names().into_iter().collect::<Vec<_>>(),
            vec!["M", "N", "T"]
        );
        let err = ex.check_names(|n| n == "M" || n == "N").unwrap_err();
        assert!(err.message.contains("`T`"));
    }

    #[test]
    fn malformed_expressions_are_errors_not_panics() {
        let cases = [
            ("", ExprErrorKind::Syntax),
            ("1 +", ExprErrorKind::Syntax),
            ("(1 + 2", ExprErrorKind::Syntax),
            ("1 + 2)", ExprErrorKind::Syntax),
            ("N ** 2", ExprErrorKind::Syntax),
            ("1.5 * N", ExprErrorKind::Syntax),
            ("99999999999999999999", ExprErrorKind::Syntax),
            ("N $ 2", ExprErrorKind::Syntax),
            ("sqrt(N)", ExprErrorKind::UnknownFunction),
            ("ceil_div(N)", ExprErrorKind::Arity),
            ("if(N, 1)", ExprErrorKind::Arity),
            ("min(N)", ExprErrorKind::Arity),
            ("1 < 2 < 3", ExprErrorKind::Syntax),
            ("min(1,,2)", ExprErrorKind::Syntax),
            ("N é", ExprErrorKind::Syntax),
        ];
        for (s, kind) in cases {
            let err = Expr::parse(s).unwrap_err();
            assert_eq!(err.kind, kind, "{s}: {err}");
        }
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let s = "(".repeat(500) + "1" + &")".repeat(500);
        assert_eq!(Expr::parse(&s).unwrap_err().kind, ExprErrorKind::Syntax);
        let s = "-".repeat(500) + "1";
        assert!(Expr::parse(&s).is_err());
        let s = "1+".repeat(3000) + "1";
        assert!(Expr::parse(&s).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every short string over a hostile alphabet parses or errors.
        let alphabet: Vec<char> = "N1(),+-*/%<>=!&|_ ifminax9".chars().collect();
        let mut state: u64 = 0x9E3779B97F4A7C15;
        let e = env(&[("N", 3)]);
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 12) as usize;
            let s: String = (0..len)
                .map(|i| alphabet[((state >> (i * 5)) % alphabet.len() as u64) as usize])
                .collect();
            if let Ok(x) = Expr::parse(&s) {
                let _ = x.eval(&e);
            }
        }
    }
}
