//! `wasmcache fetch`: asks the daemon for a module, prints its info, optionally saves its bytes.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{outcome_name, rfc3339, CliError, SocketArg};
use crate::proto::{fetch_response::Msg, FetchRequest, ModuleInfo, PullPolicy};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum PolicyArg {
    IfNotPresent,
    Always,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub socket: SocketArg,
    /// Expected sha256 of the module (64 hex characters, `sha256:` prefix optional)
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Pull policy [default: unspecified: always for an OCI reference tagged latest or untagged, if-not-present otherwise]
    // What policy::decide does with `PullPolicy::Unspecified` (the Kubernetes rule).
    #[arg(long, value_enum)]
    pub pull_policy: Option<PolicyArg>,
    /// Docker config JSON with registry credentials
    #[arg(long, value_name = "FILE")]
    pub pull_secret: Option<PathBuf>,
    /// Name of the resource asking (e.g. namespace/name of a WasmPlugin); needs --resource-version
    // The daemon records the pair and compares both: a name alone would be stored with an empty version,
    // which never matches, so `Always` would re-check upstream on every request.
    #[arg(long, value_name = "NAME", requires = "resource_version")]
    pub resource: Option<String>,
    /// Version of that resource; with --pull-policy always, a new version re-fetches; needs --resource
    #[arg(long, value_name = "V", requires = "resource")]
    pub resource_version: Option<String>,
    /// Write the module bytes to FILE (`-`: to standard output, and print no info)
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the module info as one JSON object
    #[arg(long)]
    pub json: bool,
    pub url: String,
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
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
        // Standard output carries the module and nothing else, so it can be piped.
        Some(path) if path.as_os_str() == "-" => return to_stdout(&mut client, request).await,
        None => client.resolve(request).await?.into_inner(),
        Some(path) => save(&mut client, request, path).await?,
    };
    print_info(&info, args.json);
    Ok(())
}

/// Streams the module to standard output, checking that what arrived is the whole module the daemon named.
async fn to_stdout(
    client: &mut crate::proto::module_cache_client::ModuleCacheClient<tonic::transport::Channel>,
    request: FetchRequest,
) -> Result<(), CliError> {
    let mut stream = client.fetch(request).await?.into_inner();
    let mut out = crate::digest::HashingWriter::new(std::io::stdout().lock());
    let mut info = None;
    let write_err = |e: std::io::Error| CliError(format!("writing to standard output: {e}"));
    while let Some(message) = stream.message().await? {
        match message.msg {
            Some(Msg::Info(i)) => info = Some(i),
            Some(Msg::Chunk(bytes)) => out.write_all(&bytes).map_err(write_err)?,
            None => {}
        }
    }
    out.flush().map_err(write_err)?;
    let info = info.ok_or_else(|| CliError("the daemon sent no module info".into()))?;
    let (digest, size) = (out.sha256(), out.written());
    if size != info.size || digest.to_string() != info.sha256 {
        return Err(CliError(format!(
            "the stream ended after {size} of {} bytes, or does not hash to sha256:{}",
            info.size, info.sha256
        )));
    }
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
    write_atomically(path, async |out| {
        let copied = std::io::copy(&mut &cached, out).map_err(write_err(path))?;
        if copied != info.size {
            return Err(write_err(path)(std::io::Error::other(format!(
                "cached file ended after {copied} of {} bytes",
                info.size
            ))));
        }
        Ok(())
    })
    .await?;
    Ok(info)
}

/// Writes a temp file next to `path` with `fill`, syncs it, and renames it over `path`, so `path` is never
/// half-written; the temp file is removed on any failure.
async fn write_atomically(
    path: &Path,
    fill: impl AsyncFnOnce(&mut std::fs::File) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let tmp = path.with_file_name(format!(
        ".{}.part{}",
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    let result = async {
        let mut file = std::fs::File::create(&tmp).map_err(write_err(path))?;
        fill(&mut file).await?;
        file.sync_all().map_err(write_err(path))?;
        std::fs::rename(&tmp, path).map_err(write_err(path))
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_err(path: &Path) -> impl Fn(std::io::Error) -> CliError + '_ {
    move |e| CliError(format!("writing {}: {e}", path.display()))
}

/// Streams the module into `path` (see [`write_atomically`]).
async fn download(
    client: &mut crate::proto::module_cache_client::ModuleCacheClient<tonic::transport::Channel>,
    request: FetchRequest,
    path: &Path,
) -> Result<(), CliError> {
    let mut stream = client.fetch(request).await?.into_inner();
    write_atomically(path, async |file| {
        let mut info = None;
        let mut written = 0u64;
        // Disk writes overlap the stream, so the final fsync has little left to wait for.
        let mut writeback = crate::store::Writeback::default();
        while let Some(message) = stream.message().await? {
            match message.msg {
                Some(Msg::Info(i)) => info = Some(i),
                Some(Msg::Chunk(bytes)) => {
                    file.write_all(&bytes).map_err(write_err(path))?;
                    written += bytes.len() as u64;
                    writeback.wrote(file, bytes.len() as u64);
                }
                None => {}
            }
        }
        let info = info.ok_or_else(|| CliError("the daemon sent no module info".into()))?;
        if written != info.size {
            return Err(CliError(format!("stream ended after {written} of {} bytes", info.size)));
        }
        Ok(())
    })
    .await
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
            "verified_by": info.verified_by,
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
    if !info.verified_by.is_empty() {
        println!("verified_by:     {}", info.verified_by);
    }
}
