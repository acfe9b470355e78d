//! The gRPC `ModuleCache` service: translates between the wire types and the core, nothing more.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::cache::{self, Cache, Outcome, PinTarget, RawRequest, Refused, RequestField};
use crate::digest::Sha256;
use crate::error::Error;
use crate::metrics::Eviction;
use crate::policy::PullPolicy;
use crate::proto::{self, module_cache_server::ModuleCache};
use crate::source::ModuleUrl;

/// Largest module chunk in a Fetch stream. Every open stream holds a few chunks in memory (one being
/// read, [`crate::transport::SEND_BUFFER`] queued), so the chunk size sets what many concurrent streams
/// cost; HTTP/2 sends 16 KiB frames anyway, and 32 KiB chunks served as fast as 64 KiB and 1 MiB ones
/// (docs/benchmarks.md, targets 2 and 5).
pub const CHUNK_SIZE: usize = 32 << 10;

pub struct Service {
    cache: Arc<Cache>,
}

impl Service {
    pub fn new(cache: Arc<Cache>) -> Self {
        Service { cache }
    }

    pub fn into_server(self) -> proto::module_cache_server::ModuleCacheServer<Self> {
        proto::module_cache_server::ModuleCacheServer::new(self)
    }

    fn set_pinned(&self, request: proto::PinRequest, pinned: bool) -> Result<Sha256, Error> {
        match request.target {
            Some(proto::pin_request::Target::Url(url)) => {
                let url = ModuleUrl::parse(url.trim())?;
                self.cache.set_pinned(PinTarget::Url(&url), pinned)
            }
            Some(proto::pin_request::Target::Sha256(digest)) => {
                self.cache.set_pinned(PinTarget::Digest(digest.trim().parse()?), pinned)
            }
            None => Err(Error::InvalidArgument("pin needs a url or a sha256".into())),
        }
    }
}

/// Validates a wire request into a core request.
pub(crate) fn core_request(req: &proto::FetchRequest) -> Result<cache::Request, Error> {
    Ok(cache::Request::parse(&raw_request(req)?)?)
}

/// The wire request as the core's raw request; refuses a pull policy outside the enum.
fn raw_request(req: &proto::FetchRequest) -> Result<RawRequest, Refused> {
    let policy = match proto::PullPolicy::try_from(req.pull_policy) {
        Ok(proto::PullPolicy::UnspecifiedPolicy) => PullPolicy::Unspecified,
        Ok(proto::PullPolicy::IfNotPresent) => PullPolicy::IfNotPresent,
        Ok(proto::PullPolicy::Always) => PullPolicy::Always,
        Err(_) => {
            return Err(Refused::new(
                RequestField::PullPolicy,
                Error::InvalidArgument(format!(
                    "pull_policy {} is not one of UNSPECIFIED_POLICY, IfNotPresent, Always",
                    req.pull_policy
                )),
            ))
        }
    };
    Ok(RawRequest {
        url: req.url.clone(),
        sha256: req.sha256.clone(),
        policy,
        pull_secret: req.pull_secret.clone(),
        resource_name: req.resource_name.clone(),
        resource_version: req.resource_version.clone(),
    })
}

/// The core's raw request on the wire: what `wasmcache warm` sends for a WasmPlugin.
pub(crate) fn wire_request(raw: RawRequest) -> proto::FetchRequest {
    proto::FetchRequest {
        url: raw.url,
        sha256: raw.sha256,
        pull_policy: match raw.policy {
            PullPolicy::Unspecified => proto::PullPolicy::UnspecifiedPolicy,
            PullPolicy::IfNotPresent => proto::PullPolicy::IfNotPresent,
            PullPolicy::Always => proto::PullPolicy::Always,
        } as i32,
        pull_secret: raw.pull_secret,
        resource_name: raw.resource_name,
        resource_version: raw.resource_version,
    }
}

fn timestamp(unix_ms: u64) -> Option<prost_types::Timestamp> {
    (unix_ms > 0).then(|| prost_types::Timestamp {
        seconds: (unix_ms / 1000) as i64,
        nanos: ((unix_ms % 1000) * 1_000_000) as i32,
    })
}

fn module_info(m: &cache::Module) -> proto::ModuleInfo {
    proto::ModuleInfo {
        sha256: m.digest.to_string(),
        size: m.size,
        source_url: m.source_url.clone(),
        manifest_digest: m.manifest_digest.map(|d| d.prefixed()).unwrap_or_default(),
        path: m.path.display().to_string(),
        fetched_at: timestamp(m.fetched_at_ms),
        outcome: match m.outcome {
            Outcome::Hit => proto::Outcome::Hit,
            Outcome::Fetched => proto::Outcome::Fetched,
            Outcome::Refreshed => proto::Outcome::Refreshed,
            Outcome::Stale => proto::Outcome::Stale,
        } as i32,
        lease_expires_at: m.lease_until_ms.and_then(timestamp),
        verified_by: m.verified_by.clone().unwrap_or_default(),
    }
}

/// Logs the end of a request once: the URL without credentials, digests, outcome, size, duration and
/// the resource that asked. The raw request URL is never logged: it may carry credentials.
fn log_result(wire: &proto::FetchRequest, started: Instant, result: Result<&cache::Module, &Error>) {
    let duration_ms = started.elapsed().as_millis() as u64;
    let (resource, version) = (&wire.resource_name, &wire.resource_version);
    match result {
        Ok(m) => tracing::info!(
            url = %m.source_url,
            sha256 = %m.digest,
            manifest_digest = %m.manifest_digest.map(|d| d.prefixed()).unwrap_or_default(),
            outcome = ?m.outcome,
            bytes = m.size,
            duration_ms,
            resource = %resource,
            resource_version = %version,
            verified_by = m.verified_by.as_deref().unwrap_or(""),
            "module served"
        ),
        Err(e) => tracing::warn!(
            url = %ModuleUrl::parse(wire.url.trim()).map(|u| u.to_string()).unwrap_or_else(|_| "<invalid>".into()),
            // The digest asked for, when one was: nothing was served.
            sha256 = %wire.sha256.trim(),
            manifest_digest = "",
            outcome = "FAILED",
            bytes = 0u64,
            code = ?e.code(),
            reason = e.reason(),
            cause = %e,
            duration_ms,
            resource = %resource,
            resource_version = %version,
            "request failed"
        ),
    }
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<proto::FetchResponse, Status>> + Send>>;

/// A byte range of an opened blob as chunks of at most [`CHUNK_SIZE`], each read at its offset into a
/// buffer of its exact size, up to an end within the size the store verified (so no read is spent on
/// finding the end). The gRPC stream sends the whole blob, the admin listener a requested range.
///
/// The reads run on the runtime's worker rather than on the blocking pool: a blob is served only after
/// the store verified it by hashing it, so its pages are normally in the page cache and a chunk read is a
/// memory copy of a few microseconds, about what a hand-off to the blocking pool costs by itself.
pub(crate) struct BlobChunks {
    file: std::fs::File,
    offset: u64,
    end: u64,
}

impl BlobChunks {
    /// Bytes `start..end` of `file`.
    pub(crate) fn new(file: std::fs::File, start: u64, end: u64) -> Self {
        BlobChunks {
            file,
            offset: start,
            end,
        }
    }
}

impl Stream for BlobChunks {
    type Item = std::io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<Option<Self::Item>> {
        use std::os::unix::fs::FileExt;
        let this = self.get_mut();
        if this.offset >= this.end {
            return std::task::Poll::Ready(None);
        }
        let len = (this.end - this.offset).min(CHUNK_SIZE as u64) as usize;
        let mut chunk = vec![0u8; len];
        let read = this.file.read_exact_at(&mut chunk, this.offset);
        // A failed read ends the stream after its error.
        this.offset = if read.is_ok() {
            this.offset + len as u64
        } else {
            this.end
        };
        std::task::Poll::Ready(Some(read.map(|()| Bytes::from(chunk))))
    }
}

#[tonic::async_trait]
impl ModuleCache for Service {
    type FetchStream = FetchStream;

    async fn fetch(&self, request: Request<proto::FetchRequest>) -> Result<Response<FetchStream>, Status> {
        let wire = request.into_inner();
        let started = Instant::now();
        let result = async {
            let req = core_request(&wire)?;
            self.cache.get(&req).await
        }
        .await;
        log_result(&wire, started, result.as_ref().map(|(m, _)| m));
        let (module, blob) = result?;
        let info = proto::FetchResponse {
            msg: Some(proto::fetch_response::Msg::Info(module_info(&module))),
        };
        // The hold travels with the stream: the module is not evicted while it is being sent.
        let hold = blob.hold;
        let metrics = self.cache.metrics().clone();
        let chunks = BlobChunks::new(blob.file, 0, blob.size).map(move |chunk| {
            let _ = &hold;
            chunk
                .map(|bytes| {
                    metrics.served(bytes.len() as u64);
                    proto::FetchResponse {
                        msg: Some(proto::fetch_response::Msg::Chunk(bytes)),
                    }
                })
                .map_err(|e| Status::from(Error::Internal(format!("reading cached module: {e}"))))
        });
        let stream = futures_util::stream::once(async { Ok(info) }).chain(chunks);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn resolve(&self, request: Request<proto::FetchRequest>) -> Result<Response<proto::ModuleInfo>, Status> {
        let wire = request.into_inner();
        let started = Instant::now();
        let result = async {
            let req = core_request(&wire)?;
            self.cache.resolve(&req).await
        }
        .await;
        log_result(&wire, started, result.as_ref());
        Ok(Response::new(module_info(&result?)))
    }

    async fn list(&self, _: Request<proto::ListRequest>) -> Result<Response<proto::ListResponse>, Status> {
        let cache = self.cache.clone();
        let listed = tokio::task::spawn_blocking(move || cache.list())
            .await
            .map_err(|e| Error::Internal(format!("list task failed: {e}")))??;
        let modules = listed
            .into_iter()
            .map(|l| proto::CachedModule {
                sha256: l.digest.to_string(),
                size: l.size,
                urls: l.urls,
                path: l.path.display().to_string(),
                fetched_at: timestamp(l.fetched_at_ms),
                last_used: timestamp(l.last_used_ms),
                pinned: l.pinned,
                verified_by: l.verified_by.into_iter().collect(),
            })
            .collect();
        Ok(Response::new(proto::ListResponse { modules }))
    }

    async fn remove(&self, request: Request<proto::RemoveRequest>) -> Result<Response<proto::RemoveResponse>, Status> {
        let removed = match request.into_inner().target {
            Some(proto::remove_request::Target::Url(url)) => {
                let url = ModuleUrl::parse(url.trim()).map_err(Error::from)?;
                self.cache.remove_url(&url)?
            }
            Some(proto::remove_request::Target::Sha256(digest)) => {
                let digest: Sha256 = digest.trim().parse().map_err(Error::from)?;
                self.cache.remove_digest(&digest)?
            }
            None => return Err(Error::InvalidArgument("remove needs a url or a sha256".into()).into()),
        };
        tracing::info!(digests = ?removed.digests, urls = ?removed.urls, "removed from cache");
        Ok(Response::new(proto::RemoveResponse {
            removed_sha256: removed.digests.iter().map(ToString::to_string).collect(),
            removed_urls: removed.urls,
        }))
    }

    async fn pin(&self, request: Request<proto::PinRequest>) -> Result<Response<proto::PinResponse>, Status> {
        let digest = self.set_pinned(request.into_inner(), true)?;
        tracing::info!(%digest, "module pinned");
        Ok(Response::new(proto::PinResponse {
            sha256: digest.to_string(),
        }))
    }

    async fn unpin(&self, request: Request<proto::PinRequest>) -> Result<Response<proto::PinResponse>, Status> {
        let digest = self.set_pinned(request.into_inner(), false)?;
        tracing::info!(%digest, "module unpinned");
        Ok(Response::new(proto::PinResponse {
            sha256: digest.to_string(),
        }))
    }

    async fn gc(&self, _: Request<proto::GcRequest>) -> Result<Response<proto::GcResponse>, Status> {
        let report = self.cache.sweep().await?;
        let removed = report
            .removed
            .into_iter()
            .map(|(digest, size, why, urls)| proto::EvictedModule {
                sha256: digest.to_string(),
                size,
                reason: Eviction::from(why).label().to_string(),
                urls,
            })
            .collect();
        Ok(Response::new(proto::GcResponse {
            removed,
            bytes_after: report.bytes_after,
            over_limit: report.over_limit,
        }))
    }

    async fn verify(&self, _: Request<proto::VerifyRequest>) -> Result<Response<proto::VerifyResponse>, Status> {
        let (checked, bad) = self.cache.verify().await?;
        Ok(Response::new(proto::VerifyResponse {
            checked: checked as u64,
            quarantined_sha256: bad.iter().map(ToString::to_string).collect(),
        }))
    }

    type WarmStream = WarmStream;

    async fn warm(&self, request: Request<proto::WarmRequest>) -> Result<Response<WarmStream>, Status> {
        let request = request.into_inner();
        if request.items.len() > MAX_WARM_ITEMS {
            return Err(Error::InvalidArgument(format!(
                "warm takes at most {MAX_WARM_ITEMS} items, got {}",
                request.items.len()
            ))
            .into());
        }
        let concurrency = match request.concurrency {
            0 => DEFAULT_WARM_CONCURRENCY,
            n => (n as usize).min(MAX_WARM_CONCURRENCY),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let cache = self.cache.clone();
        // The work runs inside the response stream: when the client goes away, it stops (fetches
        // already started finish in the cache).
        let driver = futures_util::stream::iter(request.items).for_each_concurrent(concurrency, move |item| {
            let cache = cache.clone();
            let tx = tx.clone();
            async move { warm_one(&cache, item, &tx).await }
        });
        let driver = futures_util::stream::once(driver).filter_map(|()| async { None });
        let events = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok);
        Ok(Response::new(Box::pin(futures_util::stream::select(events, driver))))
    }
}

/// Largest warm-up request: a cluster's worth of plugins, with room.
const MAX_WARM_ITEMS: usize = 10_000;
const DEFAULT_WARM_CONCURRENCY: usize = 4;
/// Most items one warm-up fetches at once; `wasmcache warm --concurrency` refuses more.
pub const MAX_WARM_CONCURRENCY: usize = 64;
/// How often a warm-up reports download progress.
const WARM_PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

type WarmStream = Pin<Box<dyn Stream<Item = Result<proto::WarmEvent, Status>> + Send>>;

/// Warms one item, sending its start, its progress while it downloads, and its end.
async fn warm_one(cache: &Cache, item: proto::WarmItem, tx: &tokio::sync::mpsc::Sender<proto::WarmEvent>) {
    use proto::warm_event::Event;
    let send = |event: Event| {
        let id = item.id.clone();
        async move {
            // A closed channel means the client left; the remaining events have no reader.
            let _ = tx.send(proto::WarmEvent { id, event: Some(event) }).await;
        }
    };
    send(Event::Started(proto::WarmStarted {})).await;
    let started = Instant::now();
    let wire_request = item.request.clone().unwrap_or_default();
    let request = match item
        .request
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("warm item has no request".into()))
    {
        Ok(wire) => core_request(wire),
        Err(e) => Err(e),
    };
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            log_result(&wire_request, started, Err(&e));
            send(Event::Failed(proto::WarmFailed {
                code: e.code() as i32,
                message: e.to_string(),
            }))
            .await;
            return;
        }
    };
    let fetch = cache.get(&request);
    tokio::pin!(fetch);
    let mut ticker = tokio::time::interval(WARM_PROGRESS_EVERY);
    let mut reported = 0;
    let result = loop {
        tokio::select! {
            result = &mut fetch => break result,
            _ = ticker.tick() => {
                if let Some(bytes) = cache.progress(&request.url).filter(|&b| b != reported) {
                    reported = bytes;
                    send(Event::Progress(proto::WarmProgress { bytes })).await;
                }
            }
        }
    };
    log_result(&wire_request, started, result.as_ref().map(|(m, _)| m));
    match result {
        Ok((module, _)) => send(Event::Done(module_info(&module))).await,
        Err(e) => {
            send(Event::Failed(proto::WarmFailed {
                code: e.code() as i32,
                message: e.to_string(),
            }))
            .await
        }
    }
}
