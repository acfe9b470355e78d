//! `wasmcache serve`: flags, environment and the `--config` file into a [`Config`], then logging, then the
//! server.
//!
//! The flags come from the settings table (`config/settings.rs`). No flag has a clap default: a flag that is
//! absent must let the environment, the file or the default decide (see [`Config::build`]); the defaults are
//! stated in the help text only.

use std::path::PathBuf;

use clap::{Arg, ArgMatches, Command};

use crate::config::{self, Config, ConfigError, LogFormat, Overrides};
use crate::server::{self, ServeError};

/// `serve`'s command line: `--config` and a flag for every setting in `config::SETTINGS`.
#[derive(Debug)]
pub(crate) struct Args {
    pub config: Option<PathBuf>,
    /// The settings given as flags: the top layer of [`Config::build`].
    pub settings: Overrides,
}

impl clap::Args for Args {
    fn augment_args(command: Command) -> Command {
        let command = command
            .arg(
                Arg::new("config")
                    .long("config")
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("TOML file with any of these settings (see the README) [env: WASMCACHE_CONFIG]"),
            )
            .after_help(
                "Every flag can also be set by an environment variable, WASMCACHE_ and the flag's name \
                 (WASMCACHE_FETCH_TIMEOUT=5s; lists comma-separated; WASMCACHE_NO_SERVE_STALE=true), and in the \
                 --config file. A flag wins over the environment, the environment over the file. `wasmcache \
                 config check FILE` prints the result.",
            );
        config::flags(command)
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

impl clap::FromArgMatches for Args {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Args {
            config: matches.get_one::<PathBuf>("config").cloned(),
            settings: Overrides::from_matches(matches),
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args {
    /// The configuration: defaults, the file (`--config` or `WASMCACHE_CONFIG`), the environment, the flags.
    pub(crate) fn into_config(self) -> Result<Config, ConfigError> {
        let path = self.config.clone().or_else(|| {
            std::env::var_os(config::CONFIG_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        config::load(path.as_deref(), &self.settings)
    }
}

/// Builds the configuration, starts logging as it says, and serves until a shutdown signal. Returns the
/// exit code: 0, 78 for a bad configuration, 1 for other failures, each reported on stderr (as a log event
/// only when logs are JSON, so that every line stays JSON).
pub(crate) async fn run(args: Args) -> u8 {
    // Asked for JSON logs on the command line or in the environment: even a configuration error (which
    // comes before logging is set up) is written as one JSON line.
    let json_requested = args.settings.log_format == Some(LogFormat::Json)
        || std::env::var("WASMCACHE_LOG_FORMAT").is_ok_and(|v| v.trim().eq_ignore_ascii_case("json"));
    let config = match args.into_config() {
        Ok(config) => config,
        Err(e) => {
            let message = ServeError::Config(e).to_string();
            if json_requested {
                let line = serde_json::json!({
                    "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
                    "level": "ERROR",
                    "message": "wasmcache stopped",
                    "cause": message,
                    "target": "wasmcache::cli::serve",
                });
                eprintln!("{line}");
            } else {
                eprintln!("wasmcache: {message}");
            }
            return config::EXIT_CONFIG;
        }
    };
    super::init_tracing(&config.log);
    let json = config.log.format == LogFormat::Json;
    match server::serve(config, crate::signal::shutdown()).await {
        Ok(()) => 0,
        Err(e) => {
            // Once: as a JSON log event when logs are JSON (every line stays JSON), else as one plain line.
            if json {
                tracing::error!(cause = %e, "wasmcache stopped");
            } else {
                eprintln!("wasmcache: {e}");
            }
            u8::try_from(e.exit_code()).unwrap_or(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::{Args as _, FromArgMatches as _};

    use super::*;

    fn parse(args: &[&str]) -> Args {
        let command = Args::augment_args(clap::Command::new("serve"));
        let matches = command
            .try_get_matches_from(std::iter::once("serve").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"));
        Args::from_arg_matches(&matches).unwrap()
    }

    #[test]
    fn every_flag_is_a_setting() {
        let command = Args::augment_args(clap::Command::new("serve"));
        let flags: Vec<&str> = command
            .get_arguments()
            .filter_map(|arg| arg.get_long())
            .filter(|flag| !matches!(*flag, "config" | "help"))
            .collect();
        for flag in &flags {
            config::setting_for(flag);
        }
        for setting in config::SETTINGS {
            assert!(flags.contains(&setting.flag), "--{} is missing", setting.flag);
        }
    }

    /// The help of a setting with a default states it, from the same value the configuration uses.
    #[test]
    fn help_states_the_defaults() {
        let mut command = Args::augment_args(clap::Command::new("serve"));
        let help = command.render_help().to_string();
        for line in [
            "[default: 15s]",
            "[default: 4MiB]",
            "[default: 127.0.0.1:9464]",
            "[default: linux/amd64]",
            "[default: off]",
            "[default: text]",
        ] {
            assert!(help.contains(line), "{line:?} missing from:\n{help}");
        }
        let defaults = config::Config::default();
        let grace = format!("[default: {}]", humantime::format_duration(defaults.shutdown_grace));
        assert!(help.contains(&grace), "{grace:?} missing from:\n{help}");
        assert!(!help.contains("[default: false]"), "switches state no default:\n{help}");
    }

    #[test]
    fn absent_flags_set_nothing() {
        assert!(parse(&[]).settings.keys().is_empty());
    }

    #[test]
    fn off_values_parse_to_none() {
        let overrides = parse(&[
            "--admin-listen",
            "off",
            "--max-cache-bytes",
            "0",
            "--registry-listen",
            "off",
        ])
        .settings;
        assert_eq!(overrides.admin_listen, Some(None));
        assert_eq!(overrides.registry_listen, Some(None));
        assert_eq!(overrides.max_cache_bytes, Some(None));
    }

    #[test]
    fn new_flags_reach_the_layer() {
        let overrides = parse(&[
            "--admin-listen",
            "127.0.0.1:1234",
            "--max-cache-bytes",
            "1G",
            "--module-expiry",
            "2h",
            "--purge-interval",
            "5m",
            "--log-level",
            "debug",
            "--log-format",
            "json",
        ])
        .settings;
        assert_eq!(overrides.admin_listen, Some(Some("127.0.0.1:1234".parse().unwrap())));
        assert_eq!(overrides.max_cache_bytes, Some(Some(1 << 30)));
        assert_eq!(overrides.module_expiry, Some(Duration::from_secs(7200)));
        assert_eq!(overrides.purge_interval, Some(Duration::from_secs(300)));
        assert_eq!(overrides.log_level.as_deref(), Some("debug"));
        assert_eq!(overrides.log_format, Some(LogFormat::Json));
    }
}
