//! The binary's whole `main`: parse the command line, set up logging, run one subcommand.
//!
//! `serve` sets up its own logging once its configuration is built, since the file, the environment and
//! the flags decide the log level and format.

use std::process::ExitCode;

use clap::Parser;

use super::{Cli, Command};
use crate::config::{LogConfig, EXIT_CONFIG};

/// EX_USAGE from sysexits.h: the command line was wrong.
const EXIT_USAGE: u8 = 64;

/// Parses the command line, sets up logging and the runtime, and runs one subcommand to its exit code.
pub fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if !matches!(cli.command, Command::Serve(_)) {
        // Client commands log warnings and errors (RUST_LOG may ask for more).
        super::init_tracing(&LogConfig::client());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wasmcache: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let result = match cli.command {
            Command::Serve(args) => return ExitCode::from(super::serve::run(*args).await),
            Command::Config(args) => {
                return match super::config::run(args) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("wasmcache: {e}");
                        ExitCode::from(EXIT_CONFIG)
                    }
                };
            }
            Command::Fetch(args) => super::fetch::run(args).await,
            Command::Ls(args) => super::ls::run(args).await,
            Command::Rm(args) => super::rm::run(args).await,
            Command::Warm(args) => super::warm::run(args).await,
            Command::Pin(args) => super::pin::run(args, true).await,
            Command::Unpin(args) => super::pin::run(args, false).await,
            Command::Gc(args) => super::gc::run(args).await,
            Command::Verify(args) => super::verify::run(args).await,
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wasmcache: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// glibc gives each thread that allocates under contention an arena of its own, up to 8 per core, and
/// rarely returns their freed pages: under a 1000-client load the daemon's RSS grew by ~70 MiB in a
/// minute with the default and by ~20 MiB with one arena. Two keep contention low on a node's share of
/// cores. `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it runs before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
