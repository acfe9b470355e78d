//! `wasmplugin::load("f.yaml", text)` on arbitrary UTF-8: no panic, bounded messages, and loaded plugins
//! round-trip through JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|text: &str| checks::wasmplugin(text));
