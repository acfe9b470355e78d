//! `wasmcache config`: work with the configuration file without starting the daemon.

use std::path::PathBuf;

use crate::config::{self, ConfigError, Overrides};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Action {
    /// Validate FILE and print the effective configuration as TOML
    ///
    /// Loads the defaults, FILE and the WASMCACHE_* variables as `serve` would (without flags), validates the
    /// result and prints it. On a problem, prints one line naming the key and the line, and exits with 78.
    Check {
        /// The TOML configuration file
        file: PathBuf,
    },
}

pub(crate) fn run(args: Args) -> Result<(), ConfigError> {
    match args.action {
        Action::Check { file } => {
            let config = config::load(Some(&file), &Overrides::default())?;
            print!(
                "# wasmcache: effective configuration from the defaults, {} and the environment\n{}",
                file.display(),
                config.to_toml()
            );
            Ok(())
        }
    }
}
