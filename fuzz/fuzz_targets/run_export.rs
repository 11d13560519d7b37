//! `ksmith db import FILE`: a run export from another machine, parsed and imported into a
//! SQLite store in one transaction. What imports must export again to the same document.
#![no_main]

use bench_suite::store::{RunExport, Store};
use libfuzzer_sys::fuzz_target;
use std::cell::{Cell, RefCell};

thread_local! {
    static STORE: RefCell<Option<Store>> = const { RefCell::new(None) };
    static IMPORTS: Cell<u64> = const { Cell::new(0) };
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(export) = RunExport::from_json(text, "fuzz.json") else {
        return;
    };
    STORE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let dir = std::env::temp_dir().join(format!("ksmith-fuzz-{}", std::process::id()));
            let url = format!("sqlite://{}/ksmith.db", dir.display());
            *slot = Some(Store::open(&url).expect("the fuzz store opens"));
        }
        let Some(store) = slot.as_ref() else { return };
        let n = IMPORTS.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        let name = format!("fuzz-{n}");
        if store.import_run(&export, Some(&name), "fuzz.json").is_err() {
            return;
        }
        let again = store.export_run(&name).expect("an imported run exports");
        let json = again.to_json().expect("an export serializes");
        let back = RunExport::from_json(&json, "re-export.json").expect("a re-export parses");
        assert_eq!(
            back, again,
            "a re-export does not survive its own round trip"
        );
        assert_eq!(again.items.len(), export.items.len());
        assert_eq!(again.candidates.len(), export.candidates.len());
        assert_eq!(again.evaluations.len(), export.evaluations.len());
        assert_eq!(again.llm_calls.len(), export.llm_calls.len());
    });
});
