//! `ModuleUrl::parse` on arbitrary UTF-8: a parsed URL displays without credentials and parses again to the
//! same display; errors never repeat a userinfo password.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|raw: &str| checks::url(raw));
