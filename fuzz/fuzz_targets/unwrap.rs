//! `unwrap_slice` with both picks: no panic, and never more output than the cap (1 MiB, and 64 bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::unwrap(data));
