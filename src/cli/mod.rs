//! The command line: one file per subcommand, each an Args struct and a `run`.

pub(crate) mod config;
mod entry;
pub(crate) mod fetch;
pub(crate) mod gc;
pub(crate) mod ls;
pub(crate) mod pin;
pub(crate) mod rm;
pub(crate) mod serve;
pub(crate) mod verify;
pub(crate) mod warm;

pub use entry::main;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::digest::Sha256;
use crate::proto::module_cache_client::ModuleCacheClient;

#[derive(Debug, Parser)]
#[command(
    name = "wasmcache",
    version,
    about = "Node-level cache of WebAssembly modules for Envoy proxies"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the daemon.
    Serve(Box<serve::Args>),
    /// Fetch a module through the daemon and print its info.
    Fetch(fetch::Args),
    /// List cached modules.
    Ls(ls::Args),
    /// Remove a URL or a module from the cache.
    Rm(ModuleArgs),
    /// Prefetch the modules of Istio WasmPlugin resources (from files or the cluster).
    Warm(warm::Args),
    /// Keep a module from eviction.
    Pin(ModuleArgs),
    /// Let a pinned module be evicted again.
    Unpin(ModuleArgs),
    /// Sweep the cache now and report what was removed.
    Gc(gc::Args),
    /// Re-hash every cached module; quarantine the ones that no longer match.
    Verify(verify::Args),
    /// Check a configuration file and print the effective configuration.
    Config(config::Args),
}

/// Where client commands find the daemon.
#[derive(Debug, clap::Args)]
pub(crate) struct SocketArg {
    /// The daemon's Unix socket [default: /run/wasmcache/wasmcache.sock for root, else under $XDG_RUNTIME_DIR]
    #[arg(long, env = "WASMCACHE_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

impl SocketArg {
    pub(crate) fn path(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(crate::config::default_socket)
    }

    pub(crate) async fn connect(&self) -> Result<ModuleCacheClient<tonic::transport::Channel>, CliError> {
        let path = self.path();
        let channel = crate::client::connect_unix(&path).await.map_err(|e| {
            CliError(format!(
                "cannot reach the daemon at {}: {}",
                path.display(),
                crate::fetch::net::innermost_cause(&e)
            ))
        })?;
        Ok(ModuleCacheClient::new(channel).max_decoding_message_size(4 << 20))
    }
}

/// The arguments of `rm`, `pin` and `unpin`: the daemon's socket and one module.
#[derive(Debug, clap::Args)]
pub(crate) struct ModuleArgs {
    #[command(flatten)]
    pub socket: SocketArg,
    /// A module URL, or a sha256 digest (64 hex characters, `sha256:` prefix optional)
    #[arg(value_name = "URL|DIGEST")]
    pub target: ModuleTarget,
}

/// What `rm`, `pin` and `unpin` act on: a module URL or a module digest, told apart when the command line is
/// parsed. Every URL the daemon accepts has a `scheme://`; anything else must be a whole sha256 digest, so a
/// mistyped or shortened digest is a usage error naming what a digest needs, instead of being sent to the
/// daemon as a URL and refused there as a malformed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ModuleTarget {
    Url(String),
    Digest(Sha256),
}

impl std::str::FromStr for ModuleTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        if text.contains("://") {
            return Ok(ModuleTarget::Url(text.to_string()));
        }
        if let Ok(digest) = text.parse::<Sha256>() {
            return Ok(ModuleTarget::Digest(digest));
        }
        let hex = text.strip_prefix("sha256:");
        let digits = hex.unwrap_or(text);
        let all_hex = !digits.is_empty() && digits.chars().all(|c| c.is_ascii_hexdigit());
        Err(match (hex, all_hex) {
            (_, true) => format!(
                "a sha256 digest needs 64 hex characters, got {} (digest prefixes are not matched; `wasmcache \
                 ls` lists whole digests)",
                digits.len()
            ),
            (Some(_), false) => {
                "a sha256 digest needs 64 hex characters after `sha256:`, and this has a non-hex character".into()
            }
            (None, false) => {
                "neither a URL (scheme://...) nor a sha256 digest (64 hex characters, `sha256:` prefix optional)".into()
            }
        })
    }
}

/// Logs to stderr, filtered by `RUST_LOG` when it is set, else by `log.level`; as text, or as one JSON object
/// per line.
pub(crate) fn init_tracing(log: &crate::config::LogConfig) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;

    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&log.level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        crate::config::LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        crate::config::LogFormat::Json => logs.json().flatten_event(true).with_ansi(false).init(),
    }
}

/// A client command failure: printed as one line on stderr, exit code 1.
#[derive(Debug)]
pub(crate) struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        CliError(format!("{:?}: {}", s.code(), s.message()))
    }
}

/// Formats a protobuf timestamp as RFC 3339 (empty when unset).
pub(crate) fn rfc3339(ts: Option<&prost_types::Timestamp>) -> String {
    match ts {
        Some(ts) if ts.seconds > 0 => {
            let t = std::time::UNIX_EPOCH + std::time::Duration::new(ts.seconds as u64, ts.nanos.max(0) as u32);
            humantime::format_rfc3339_seconds(t).to_string()
        }
        _ => String::new(),
    }
}

/// A `ModuleInfo.outcome` as the CLI prints it.
pub(crate) fn outcome_name(outcome: i32) -> &'static str {
    use crate::proto::Outcome;
    match Outcome::try_from(outcome) {
        Ok(Outcome::Hit) => "HIT",
        Ok(Outcome::Fetched) => "FETCHED",
        Ok(Outcome::Refreshed) => "REFRESHED",
        Ok(Outcome::Stale) => "STALE",
        _ => "UNSPECIFIED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_target_is_a_url_with_a_scheme_or_else_a_whole_digest() {
        let hex = "5f".repeat(32);
        let url = "oci://r.io/team/filter:v1";
        assert_eq!(url.parse(), Ok(ModuleTarget::Url(url.into())));
        for digest in [hex.clone(), format!("sha256:{hex}"), hex.to_uppercase()] {
            assert_eq!(
                digest.parse(),
                Ok(ModuleTarget::Digest(hex.parse().unwrap())),
                "{digest}"
            );
        }
        for (bad, says) in [
            ("5f3c", "64 hex characters, got 4"),
            ("sha256:5f3c", "64 hex characters, got 4"),
            ("sha256:xyz", "non-hex"),
            ("r.io/team/filter:v1", "neither a URL"),
        ] {
            let err = bad.parse::<ModuleTarget>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
