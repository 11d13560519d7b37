//! The JSON lines a `ksmith worker` and its parent exchange: whatever one reads may come from a
//! process that crashed mid-write.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verifier::protocol::{Request, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Request::from_line(data) {
        let line = r.to_line();
        if let Err(e) = Request::from_line(line.as_bytes()) {
            panic!("request does not survive a round trip: {line}: {e}");
        }
    }
    if let Ok(r) = Response::from_line(data) {
        let line = r.to_line();
        if let Err(e) = Response::from_line(line.as_bytes()) {
            panic!("response does not survive a round trip: {line}: {e}");
        }
    }
});
