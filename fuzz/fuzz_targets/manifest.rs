//! `formats::parse` (the first byte picks the Content-Type), then `select_layer` or `select_platform`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::manifest(data));
