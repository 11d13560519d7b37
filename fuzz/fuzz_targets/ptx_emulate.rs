//! PTX text for the emulator: parsed, and its first kernel run on a tiny grid with a small
//! instruction budget. Whatever the text, the result is a parse error, a fault or a finished
//! run, never a panic or an unbounded allocation (scripts/fuzz.sh seeds it with the PTX of every
//! reference kernel).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = verifier::emulator::fuzz_run(text, 200_000);
});
