//! The README's test command (`bash .ci/run`) and a plain `cargo test` must build the same artifacts, so that one
//! after the other does not double `target/`: build settings live in `.cargo/config.toml` and `Cargo.toml`, and
//! `.ci/run` exports none of the variables that change what cargo builds.

use std::path::Path;

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

/// Variables that change cargo's fingerprints or profile, and so the artifacts a build reuses.
const BUILD_VARIABLES: &[&str] = &[
    "CARGO_INCREMENTAL",
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_PROFILE_",
    "CARGO_BUILD_",
    "CARGO_TARGET_DIR",
];

#[test]
fn ci_run_sets_no_variable_that_changes_the_build() {
    let script = read(".ci/run");
    for line in script.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        for variable in BUILD_VARIABLES {
            assert!(
                !line.contains(variable),
                ".ci/run sets {variable} (\"{line}\"): put the setting in .cargo/config.toml so cargo test builds the same"
            );
        }
    }
}

#[test]
fn the_incremental_cache_is_off_for_every_build() {
    let config: toml::Table = read(".cargo/config.toml").parse().expect(".cargo/config.toml is TOML");
    assert_eq!(config["build"]["incremental"].as_bool(), Some(false));
}
