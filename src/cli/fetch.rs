//! `wasmcache fetch`: asks the daemon for a module, prints its info, optionally saves its bytes.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{rfc3339, CliError, SocketArg};
use crate::proto::{fetch_response::Msg, FetchRequest, ModuleInfo, Outcome, PullPolicy};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PolicyArg {
    IfNotPresent,
    Always,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub socket: SocketArg,
    /// Expected sha256 of the module (64 hex characters, `sha256:` prefix optional)
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Pull policy [default: unspecified, which behaves as if-not-present]
    #[arg(long, value_enum)]
    pub pull_policy: Option<PolicyArg>,
    /// Docker config JSON with registry credentials
    #[arg(long, value_name = "FILE")]
    pub pull_secret: Option<PathBuf>,
    /// Name of the resource asking (e.g. namespace/name of a WasmPlugin)
    #[arg(long, value_name = "NAME")]
    pub resource: Option<String>,
    /// Version of that resource; with --pull-policy always, a new version re-fetches
    #[arg(long, value_name = "V", requires = "resource")]
    pub resource_version: Option<String>,
    /// Write the module bytes to FILE
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the module info as one JSON object
    #[arg(long)]
    pub json: bool,
    pub url: String,
}

pub async fn run(args: Args) -> Result<(), CliError> {
    let pull_secret = match &args.pull_secret {
        Some(path) => {
            std::fs::read(path).map_err(|e| CliError(format!("reading --pull-secret {}: {e}", path.display())))?
        }
        None => Vec::new(),
    };
    let request = FetchRequest {
        url: args.url.clone(),
        sha256: args.sha256.clone().unwrap_or_default(),
        pull_policy: match args.pull_policy {
            None => PullPolicy::UnspecifiedPolicy,
            Some(PolicyArg::IfNotPresent) => PullPolicy::IfNotPresent,
            Some(PolicyArg::Always) => PullPolicy::Always,
        } as i32,
        pull_secret,
        resource_name: args.resource.clone().unwrap_or_default(),
        resource_version: args.resource_version.clone().unwrap_or_default(),
    };
    let mut client = args.socket.connect().await?;
    let info = match &args.output {
        None => client.resolve(request).await?.into_inner(),
        Some(path) => save(&mut client, request, path).await?,
    };
    print_info(&info, args.json);
    Ok(())
}

/// Writes the module to `path`: copied from the daemon's cached file when this process can read it (the
/// daemon is on this host, behind a Unix socket, and the cache directory is visible and readable), which
/// spares the stream and lets the kernel copy (or reflink) it; streamed over the socket otherwise. Either
/// way the bytes are the ones the daemon has just checked: answering Resolve, it opened the blob and re-hashed
/// it unless this process had verified it and it is unchanged since (same size, mtime and ctime).
async fn save(
    client: &mut crate::proto::module_cache_client::ModuleCacheClient<tonic::transport::Channel>,
    request: FetchRequest,
    path: &Path,
) -> Result<ModuleInfo, CliError> {
    let info = client.resolve(request.clone()).await?.into_inner();
    let cached = match std::fs::File::open(&info.path) {
        Ok(file) if file.metadata().is_ok_and(|m| m.is_file() && m.len() == info.size) => file,
        // Not visible from here (another mount namespace, permissions, evicted since): stream it. Pinned
        // to the digest Resolve answered and IfNotPresent, so upstream is not asked a second time and the
        // info printed is Resolve's, with its outcome.
        _ => {
            let pinned = FetchRequest {
                sha256: info.sha256.clone(),
                pull_policy: PullPolicy::IfNotPresent as i32,
                ..request
            };
            download(client, pinned, path).await?;
            return Ok(info);
        }
    };
    write_atomically(path, |out| {
        let copied = std::io::copy(&mut &cached, out)?;
        if copied != info.size {
            return Err(std::io::Error::other(format!(
                "cached file ended after {copied} of {} bytes",
                info.size
            )));
        }
        Ok(())
    })?;
    Ok(info)
}

/// Writes a temp file next to `path` with `fill`, syncs it, and renames it over `path`, so `path` is never
/// half-written; the temp file is removed on any failure.
fn write_atomically(path: &Path, fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>) -> Result<(), CliError> {
    let tmp = temp_path(path);
    let write_err = |e: std::io::Error| CliError(format!("writing {}: {e}", path.display()));
    let result = std::fs::File::create(&tmp).and_then(|mut file| {
        fill(&mut file)?;
        file.sync_all()
    });
    match result.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(write_err(e))
        }
    }
}

fn temp_path(path: &Path) -> PathBuf {
    path.with_file_name(format!(
        ".{}.part{}",
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ))
}

/// Bytes written to `--output` between two requests to start writing them back to disk.
const WRITEBACK_STEP: u64 = 4 << 20;

/// Streams the module into a temp file next to `path`, then renames it, so `path` is never half-written.
async fn download(
    client: &mut crate::proto::module_cache_client::ModuleCacheClient<tonic::transport::Channel>,
    request: FetchRequest,
    path: &std::path::Path,
) -> Result<ModuleInfo, CliError> {
    let mut stream = client.fetch(request).await?.into_inner();
    let tmp = temp_path(path);
    let write_err = |e: std::io::Error| CliError(format!("writing {}: {e}", path.display()));
    let mut file = std::fs::File::create(&tmp).map_err(write_err)?;
    let mut info = None;
    let result = async {
        let (mut written, mut writeback_from) = (0u64, 0u64);
        while let Some(message) = stream.message().await? {
            match message.msg {
                Some(Msg::Info(i)) => info = Some(i),
                Some(Msg::Chunk(bytes)) => {
                    file.write_all(&bytes).map_err(write_err)?;
                    written += bytes.len() as u64;
                    if written - writeback_from >= WRITEBACK_STEP {
                        // Disk writes overlap the stream, so the final fsync has little left to wait for.
                        let _ = crate::store::start_writeback(&file, writeback_from, written - writeback_from);
                        writeback_from = written;
                    }
                }
                None => {}
            }
        }
        file.sync_all().map_err(write_err)?;
        Ok::<_, CliError>(())
    }
    .await;
    let info = match (result, info) {
        (Ok(()), Some(info)) => info,
        (Err(e), _) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        (Ok(()), None) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(CliError("the daemon sent no module info".into()));
        }
    };
    let written = std::fs::metadata(&tmp).map_err(write_err)?.len();
    if written != info.size {
        let _ = std::fs::remove_file(&tmp);
        return Err(CliError(format!("stream ended after {written} of {} bytes", info.size)));
    }
    std::fs::rename(&tmp, path).map_err(write_err)?;
    Ok(info)
}

fn outcome_name(outcome: i32) -> &'static str {
    match Outcome::try_from(outcome) {
        Ok(Outcome::Hit) => "HIT",
        Ok(Outcome::Fetched) => "FETCHED",
        Ok(Outcome::Refreshed) => "REFRESHED",
        Ok(Outcome::Stale) => "STALE",
        _ => "UNSPECIFIED",
    }
}

fn print_info(info: &ModuleInfo, json: bool) {
    let fetched_at = rfc3339(info.fetched_at.as_ref());
    if json {
        let value = serde_json::json!({
            "sha256": info.sha256,
            "size": info.size,
            "source_url": info.source_url,
            "manifest_digest": info.manifest_digest,
            "path": info.path,
            "fetched_at": fetched_at,
            "outcome": outcome_name(info.outcome),
        });
        println!("{value}");
        return;
    }
    println!("sha256:          {}", info.sha256);
    println!("size:            {}", info.size);
    println!("source_url:      {}", info.source_url);
    if !info.manifest_digest.is_empty() {
        println!("manifest_digest: {}", info.manifest_digest);
    }
    println!("path:            {}", info.path);
    println!("fetched_at:      {fetched_at}");
    println!("outcome:         {}", outcome_name(info.outcome));
}
