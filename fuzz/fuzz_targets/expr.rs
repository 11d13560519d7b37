//! Shape and launch expressions as task and plan files write them: parse, print, evaluate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use verifier::expr::Expr;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(e) = Expr::parse(text) else { return };
    // Values at the edges of i64 as well as ordinary ones: evaluation reports overflow and
    // division by zero as errors.
    let envs: Vec<HashMap<String, i64>> = [
        [0, 1, -1, 7],
        [i64::MAX, i64::MIN, 2, 0],
        [4096, 128, 3, 65536],
    ]
    .into_iter()
    .map(|values| {
        ["M", "N", "K", "B"]
            .iter()
            .zip(values)
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    })
    .collect();
    for env in &envs {
        let _ = e.eval(env);
        let _ = e.eval_bool(env);
    }
    // What prints must parse again, to the same meaning (plans and reports show expressions as
    // text).
    let printed = e.to_string();
    let again = match Expr::parse(&printed) {
        Ok(again) => again,
        Err(err) => panic!("`{text}` printed as `{printed}`, which does not parse: {err}"),
    };
    for env in &envs {
        let (a, b) = (e.eval(env), again.eval(env));
        if a.as_ref().ok() != b.as_ref().ok() || a.is_ok() != b.is_ok() {
            panic!("`{text}` printed as `{printed}` evaluates differently: {a:?} vs {b:?}");
        }
        let (a, b) = (e.eval_bool(env), again.eval_bool(env));
        if a.as_ref().ok() != b.as_ref().ok() || a.is_ok() != b.is_ok() {
            panic!("`{text}` printed as `{printed}` tests differently: {a:?} vs {b:?}");
        }
    }
});
