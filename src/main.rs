//! The `wasmcache` binary: parse the command line, set up logging, run one subcommand.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use wasmcache::cli::{Cli, Command};

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
    init_tracing(matches!(cli.command, Command::Serve(_)));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wasmcache: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let result = match cli.command {
            Command::Serve(args) => {
                return match wasmcache::cli::serve::run(*args).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!(cause = %e, "wasmcache stopped");
                        eprintln!("wasmcache: {e}");
                        ExitCode::from(e.exit_code() as u8)
                    }
                };
            }
            Command::Fetch(args) => wasmcache::cli::fetch::run(args).await,
            Command::Ls(args) => wasmcache::cli::ls::run(args).await,
            Command::Rm(args) => wasmcache::cli::rm::run(args).await,
            Command::Warm(args) => wasmcache::cli::warm::run(args).await,
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

/// Logs to stderr, filtered by RUST_LOG (default `info` for the daemon, `warn` for client commands).
fn init_tracing(daemon: bool) {
    let default = if daemon { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
