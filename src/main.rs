//! The `wasmcache` binary: parse the command line, set up logging, run one subcommand.
//!
//! `serve` sets up its own logging once its configuration is built, since the file, the environment and
//! the flags decide the log level and format.

use std::process::ExitCode;

use clap::Parser;
use wasmcache::cli::{Cli, Command};
use wasmcache::config::{LogConfig, EXIT_CONFIG};

/// EX_USAGE from sysexits.h: the command line was wrong.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
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
        wasmcache::cli::init_tracing(&LogConfig::client());
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
            Command::Serve(args) => return ExitCode::from(wasmcache::cli::serve::run(*args).await),
            Command::Config(args) => {
                return match wasmcache::cli::config::run(args) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("wasmcache: {e}");
                        ExitCode::from(EXIT_CONFIG)
                    }
                };
            }
            Command::Fetch(args) => wasmcache::cli::fetch::run(args).await,
            Command::Ls(args) => wasmcache::cli::ls::run(args).await,
            Command::Rm(args) => wasmcache::cli::rm::run(args).await,
            Command::Warm(args) => wasmcache::cli::warm::run(args).await,
            Command::Pin(args) => wasmcache::cli::pin::run(args, true).await,
            Command::Unpin(args) => wasmcache::cli::pin::run(args, false).await,
            Command::Gc(args) => wasmcache::cli::gc::run(args).await,
            Command::Verify(args) => wasmcache::cli::verify::run(args).await,
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
