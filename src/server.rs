//! Binding the listeners and serving the gRPC service until shutdown, then draining with a deadline.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::admin::AdminState;
use crate::cache::Cache;
use crate::config::{self, Config};
use crate::fetch::{FetchError, Fetchers};
use crate::metrics::Metrics;
use crate::proto::module_cache_server::ModuleCacheServer;
use crate::service::Service;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("opening the cache: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Fetch(#[from] FetchError),
    #[error("binding {what}: {source}")]
    Bind {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("another wasmcache is already serving on {0}")]
    AlreadyRunning(PathBuf),
    #[error("opening the cache: {0}")]
    Cache(crate::error::Error),
    #[error("{0}")]
    Cluster(crate::cluster::ClusterError),
}

impl ServeError {
    /// Bad configuration exits with EX_CONFIG (78), so supervisors can tell it from a crash.
    pub fn exit_code(&self) -> i32 {
        match self {
            ServeError::Config(_) | ServeError::Fetch(FetchError::Config(_)) | ServeError::Cluster(_) => 78,
            _ => 1,
        }
    }
}

/// The bound sockets the server accepts on.
pub struct Listeners {
    pub unix: UnixListener,
    /// The socket file to remove on exit: the one we created (none for a socket systemd passed).
    pub unix_path: Option<PathBuf>,
    pub tcp: Option<TcpListener>,
    /// The OCI registry endpoint (`--registry-listen`).
    pub registry: Option<RegistryListener>,
}

/// The registry endpoint's bound socket and, for TLS, its certificate (reloaded when its files change).
pub struct RegistryListener {
    pub listener: TcpListener,
    pub tls: Option<Arc<crate::registry::tls::CertReloader>>,
}

/// Binds `--registry-listen` and loads its certificate (checked already by validation; a file that changed
/// since is a configuration error here too).
async fn bind_registry(config: &Config) -> Result<Option<RegistryListener>, ServeError> {
    let Some(addr) = config.registry_listen else {
        return Ok(None);
    };
    let tls = match &config.registry_tls {
        Some(tls) => Some(Arc::new(
            crate::registry::tls::CertReloader::load(&tls.cert, &tls.key).map_err(|e| {
                ServeError::Config(config::ConfigError::Invalid {
                    key: "registry-tls-cert",
                    reason: e.to_string(),
                })
            })?,
        )),
        None => None,
    };
    let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind {
        what: format!("registry listener {addr}"),
        source,
    })?;
    tracing::info!(registry = %addr, tls = tls.is_some(), "registry endpoint up");
    Ok(Some(RegistryListener { listener, tls }))
}

/// Binds the Unix socket with `mode` (and `group`, when given), replacing a stale socket file but never a
/// live one.
pub fn bind_unix(path: &Path, mode: u32, group: Option<u32>) -> Result<UnixListener, ServeError> {
    let bind_err = |source| ServeError::Bind {
        what: path.display().to_string(),
        source,
    };
    if let Some(dir) = config::socket_dir(path) {
        std::fs::create_dir_all(dir).map_err(bind_err)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServeError::AlreadyRunning(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(bind_err)?;
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(bind_err)?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(bind_err)?;
    }
    Ok(listener)
}

/// Sorts sockets passed by systemd into the Unix listener and the TCP listener we serve on.
fn activated_listeners() -> Result<(Option<UnixListener>, Option<TcpListener>), ServeError> {
    let mut unix = None;
    let mut tcp = None;
    for fd in crate::systemd::take_listen_fds() {
        let as_unix = std::os::unix::net::UnixListener::from(fd);
        if as_unix.local_addr().is_ok() && unix.is_none() {
            as_unix.set_nonblocking(true).map_err(activation_err)?;
            unix = Some(UnixListener::from_std(as_unix).map_err(activation_err)?);
            continue;
        }
        let as_tcp = std::net::TcpListener::from(std::os::fd::OwnedFd::from(as_unix));
        if as_tcp.local_addr().is_ok() && tcp.is_none() {
            as_tcp.set_nonblocking(true).map_err(activation_err)?;
            tcp = Some(TcpListener::from_std(as_tcp).map_err(activation_err)?);
            continue;
        }
        tracing::warn!("ignoring a passed file descriptor that is not a listening socket we use");
    }
    Ok((unix, tcp))
}

fn activation_err(source: std::io::Error) -> ServeError {
    ServeError::Bind {
        what: "socket passed by systemd".into(),
        source,
    }
}

/// Opens the cache and binds the listeners that `config` names (or takes those systemd passed), tells
/// systemd it is ready, then serves until `shutdown`. The admin listener comes up first, so `/healthz`
/// answers (and `/readyz` says not yet) while the index opens.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    config.validate()?;
    let metrics = Arc::new(Metrics::new());
    let admin = AdminState::new(metrics.clone());
    let admin_stop = CancellationToken::new();
    let admin_task = match config.admin_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind {
                what: format!("admin listener {addr}"),
                source,
            })?;
            tracing::info!(admin = %addr, "admin listener up");
            Some(tokio::spawn(crate::admin::serve(
                listener,
                admin.clone(),
                admin_stop.clone(),
            )))
        }
        None => None,
    };
    let result = serve_with_admin(config, shutdown, metrics, &admin).await;
    admin.ready.store(false, Ordering::SeqCst);
    admin_stop.cancel();
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    result
}

async fn serve_with_admin(
    config: Config,
    shutdown: impl Future<Output = ()>,
    metrics: Arc<Metrics>,
    admin: &AdminState,
) -> Result<(), ServeError> {
    let fetchers = Arc::new(Fetchers::new(&config.fetch, metrics.clone())?);
    let dir = config.cache_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await
        .map_err(|e| ServeError::Bind {
            what: "cache".into(),
            source: std::io::Error::other(e),
        })??;
    let cache = Cache::new(
        Arc::new(store),
        fetchers,
        config.serve_stale,
        config.lifecycle.clone(),
        metrics,
    )
    .map_err(ServeError::Cache)?;
    cache.set_policy(config.verify.as_ref().map(|v| v.policy.clone()));
    let cache = Arc::new(cache);
    let reloads = PolicyReloads {
        path: config.verify.as_ref().map(|v| v.path.clone()),
        hangups: crate::signal::hangups(),
    };
    // Bound before the Unix socket, whose file a failure here would otherwise leave behind.
    let registry = bind_registry(&config).await?;
    let (activated_unix, activated_tcp) = activated_listeners()?;
    // A socket passed by systemd belongs to systemd: it is neither chmodded nor removed by us.
    let (unix, owned_path) = match activated_unix {
        Some(listener) => {
            tracing::info!("serving on the socket passed by systemd");
            (listener, None)
        }
        None => (
            bind_unix(
                &config.socket,
                config.socket_mode,
                config
                    .socket_group
                    .as_deref()
                    .map(config::resolve_group)
                    .transpose()
                    .map_err(|reason| {
                        ServeError::Config(config::ConfigError::Invalid {
                            key: "socket-group",
                            reason,
                        })
                    })?,
            )?,
            Some(config.socket.clone()),
        ),
    };
    let tcp = match (activated_tcp, config.listen) {
        (Some(listener), _) => Some(listener),
        (None, Some(addr)) => Some(TcpListener::bind(addr).await.map_err(|source| ServeError::Bind {
            what: addr.to_string(),
            source,
        })?),
        (None, None) => None,
    };
    let listeners = Listeners {
        unix,
        unix_path: owned_path,
        tcp,
        registry,
    };
    let watch = match config.watch.clone() {
        Some(watch) => {
            let client = crate::cluster::client(watch.kubeconfig.as_deref())
                .await
                .map_err(ServeError::Cluster)?;
            Some(crate::watch::run(client, watch, cache.clone()))
        }
        None => None,
    };
    let _ = admin.cache.set(cache.clone());
    admin.ready.store(true, Ordering::SeqCst);
    let (entries, bytes) = cache.store().usage();
    tracing::info!(
        socket = %config.socket.display(),
        listen = ?config.listen,
        cache_dir = %config.cache_dir.display(),
        modules = entries,
        bytes,
        "wasmcache ready"
    );
    crate::systemd::notify_or_log("READY=1");
    let shutdown = async move {
        match watch {
            // The watch runs until shutdown, then is dropped with everything it was doing.
            Some(watch) => tokio::select! {
                () = shutdown => {}
                () = watch => {}
            },
            None => shutdown.await,
        }
        admin.ready.store(false, Ordering::SeqCst);
    };
    run(listeners, cache, shutdown, config.shutdown_grace, reloads).await
}

/// Where the verification policy is reloaded from, and the hangups that ask for it.
pub struct PolicyReloads {
    pub path: Option<PathBuf>,
    pub hangups: Option<tokio::signal::unix::Signal>,
}

impl PolicyReloads {
    /// Reloads the policy on every SIGHUP. A file that no longer loads leaves the policy in force as it
    /// was: a typo must not switch verification off.
    async fn run(mut self, cache: &Cache) {
        let Some(hangups) = self.hangups.as_mut() else {
            return std::future::pending().await;
        };
        while hangups.recv().await.is_some() {
            let Some(path) = &self.path else {
                tracing::info!("SIGHUP: no --verify-policy to reload");
                continue;
            };
            let path = path.clone();
            let loaded = tokio::task::spawn_blocking(move || config::VerifyPolicy::load(path)).await;
            match loaded {
                Ok(Ok(policy)) => {
                    tracing::info!(policy = %policy.path.display(), fingerprint = policy.policy.fingerprint(), "verification policy reloaded; cached modules are judged again as they are asked for");
                    cache.set_policy(Some(policy.policy));
                    cache.metrics().policy_reloaded(true);
                }
                Ok(Err(e)) => {
                    tracing::error!(cause = %e, "verification policy not reloaded; the previous one stays in force");
                    cache.metrics().policy_reloaded(false);
                }
                Err(e) => tracing::error!(cause = %e, "policy reload task failed"),
            }
        }
        std::future::pending().await
    }
}

/// Serves on `listeners` until `shutdown` resolves; then stops accepting, lets in-flight calls, registry
/// requests and fetches finish within `grace` in all, and removes the socket file it created. Meanwhile it pings the
/// systemd watchdog and sweeps the cache every purge interval.
pub async fn run(
    listeners: Listeners,
    cache: Arc<Cache>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    reloads: PolicyReloads,
) -> Result<(), ServeError> {
    let stop = CancellationToken::new();
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ModuleCacheServer<Service>>().await;
    // Reflection v1, and v1alpha beside it for clients that only speak that (older grpcurl).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_err = |e| ServeError::Bind {
        what: "gRPC reflection".into(),
        source: std::io::Error::other(e),
    };
    let routes = tonic::service::Routes::new(health_service)
        .add_service(reflection().build_v1().map_err(reflection_err)?)
        .add_service(reflection().build_v1alpha().map_err(reflection_err)?)
        .add_service(Service::new(cache.clone()).into_server());
    // Clients on the socket may name it as `:authority` (gRPC C-core, grpc-java): see transport::authority.
    let unix_connections = UnixListenerStream::new(listeners.unix)
        .map(|accepted| accepted.map(crate::transport::authority::AuthorityRewrite::new));
    let unix = crate::transport::serve(unix_connections, routes.clone(), stop.clone());
    let tcp = async {
        if let Some(tcp) = listeners.tcp {
            let connections = TcpListenerStream::new(tcp).map(|accepted| {
                accepted.inspect(|stream| {
                    // Chunks are written whole; Nagle would only hold the last segment of each back.
                    let _ = stream.set_nodelay(true);
                })
            });
            crate::transport::serve(connections, routes, stop.clone()).await;
        }
    };
    let registry = async {
        if let Some(registry) = listeners.registry {
            let backend: Arc<dyn crate::cache::registry::RegistryBackend> = cache.clone();
            let mut endpoint = crate::registry::Endpoint::new(backend, cache.metrics().clone());
            if let Some(certs) = registry.tls {
                endpoint = endpoint.with_tls(certs);
            }
            crate::registry::serve(registry.listener, Arc::new(endpoint), stop.clone()).await;
        }
    };
    let servers = async {
        tokio::join!(unix, tcp, registry);
    };
    tokio::pin!(servers);
    // One deadline for the whole drain: in-flight streams first, then running fetches.
    let mut deadline = None;
    tokio::select! {
        () = &mut servers => {}
        () = shutdown => {
            crate::systemd::notify_or_log("STOPPING=1");
            health.set_not_serving::<ModuleCacheServer<Service>>().await;
            health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            stop.cancel();
            let drain_by = tokio::time::Instant::now() + grace;
            deadline = Some(drain_by);
            match tokio::time::timeout_at(drain_by, &mut servers).await {
                Ok(()) => tracing::info!("in-flight requests finished"),
                Err(_) => {
                    tracing::warn!(grace = %humantime::format_duration(grace), "grace period over; closing open streams")
                }
            }
        }
        () = watchdog() => unreachable!("the watchdog never returns"),
        () = purge(&cache) => unreachable!("the purge loop never returns"),
        () = recover_index(&cache, &health) => unreachable!("the index recovery loop never returns"),
        () = reloads.run(&cache) => unreachable!("the policy reload loop never returns"),
    };
    if let Some(path) = &listeners.unix_path {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(socket = %path.display(), cause = %e, "could not remove the socket");
        }
    }
    let deadline = deadline.unwrap_or_else(|| tokio::time::Instant::now() + grace);
    if tokio::time::timeout_at(deadline, cache.close()).await.is_err() {
        tracing::warn!("fetches still running at exit were abandoned");
    }
    Ok(())
}

/// Sweeps the cache every purge interval (the first sweep one interval after start).
async fn purge(cache: &Cache) {
    let every = cache.purge_interval();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match cache.sweep().await {
            Ok(report) if !report.removed.is_empty() => {
                tracing::info!(
                    removed = report.removed.len(),
                    bytes_after = report.bytes_after,
                    "cache swept"
                )
            }
            Ok(_) => tracing::debug!("cache swept; nothing to remove"),
            Err(e) => tracing::warn!(cause = %e, "cache sweep failed"),
        }
    }
}

/// Checks the index once a second, and reopens it when it has failed (a full disk stops sled for good)
/// until that works.
/// Meanwhile the module service reports NOT_SERVING to gRPC health, as `/readyz` does, and requests get
/// RESOURCE_EXHAUSTED (or UNAVAILABLE) rather than INTERNAL.
async fn recover_index(cache: &Arc<Cache>, health: &tonic_health::server::HealthReporter) {
    let mut ticker = tokio::time::interval(INDEX_RECOVERY_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut serving = true;
    loop {
        ticker.tick().await;
        let store = cache.store().clone();
        // sled fails in its background writer; a flush is what reports it (and costs nothing when clean).
        if store.index().failure().is_none() {
            let _ = store.index().flush().await;
        }
        if store.index().failure().is_some() {
            if serving {
                health.set_not_serving::<ModuleCacheServer<Service>>().await;
                serving = false;
            }
            match tokio::task::spawn_blocking(move || store.recover_index()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(cause = %e, "cache index not reopened yet"),
                Err(e) => tracing::warn!(cause = %e, "index recovery task failed"),
            }
        }
        if !serving && cache.store().index().failure().is_none() {
            health.set_serving::<ModuleCacheServer<Service>>().await;
            serving = true;
        }
    }
}

/// How often a failed index is tried again.
const INDEX_RECOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// Sends `WATCHDOG=1` at half the interval systemd asked for; pends forever without a watchdog.
async fn watchdog() {
    let Some(every) = crate::systemd::watchdog_interval() else {
        return std::future::pending().await;
    };
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        crate::systemd::notify_or_log("WATCHDOG=1");
    }
}
