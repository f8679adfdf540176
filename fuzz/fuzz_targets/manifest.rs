//! Fuzzes manifest parsing and path validation: no input may panic, a
//! manifest that parses must round-trip exactly, and every path it accepts
//! must stay inside the tree it is joined to.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use pqsync_core::{validate_path, Manifest};

fn assert_contained(p: &str) {
    let root = Path::new("/srv/db");
    let joined = root.join(p);
    assert!(joined.starts_with(root), "{p:?} escapes the root");
    for c in Path::new(p).components() {
        assert!(matches!(c, Component::Normal(_)), "{p:?} has component {c:?}");
    }
    assert!(!p.contains('\0') && !p.contains('\\') && !p.is_empty());
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::from_slice(data, "fuzz") {
        for key in m.files.keys() {
            assert_contained(key);
        }
        let out = m.to_json_pretty();
        let back = Manifest::from_slice(&out, "fuzz").expect("a written manifest parses");
        assert_eq!(back, m, "round trip changed the manifest");
        assert_eq!(back.to_json_pretty(), out, "output is not deterministic");
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if validate_path(s, "fuzz").is_ok() {
            assert_contained(s);
        }
    }
});
