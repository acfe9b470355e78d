//! `DockerConfig::parse` on arbitrary bytes: errors and `Debug` never repeat an `auth`, `password` or token value.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::pull_secret(data));
