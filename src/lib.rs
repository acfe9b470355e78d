//! wasmcache: a node-level cache that fetches WebAssembly modules once, verifies them, keeps them across
//! restarts and serves them to Envoy proxies over gRPC.
//!
//! # Layout
//! A request flows `service -> cache -> {policy, fetch, store}`:
//! - [`service`]: the gRPC `ModuleCache` implementation; translates between wire types and the core.
//! - [`cache`]: the orchestrator, one file per job: `request` (validation, shared by every edge), `admit`
//!   (access), `flight` (single flight), `job` (one upstream fetch and its binding), `verify`, `ops`.
//! - [`policy`]: the pull policy as a pure function of the request and what is cached.
//! - [`access`]: who may be served a module pulled with credentials (proven credentials only).
//! - [`fetch`]: fetchers by scheme (http(s), file, oci), the SSRF guard, archive unwrapping, the one retry
//!   loop (`fetch::retry`) and the network layer the http, registry and cluster clients share (`fetch::net`);
//!   `fetch::oci` speaks the registry protocol and reads every Wasm image layout, and
//!   `fetch::oci::provider` gets registry credentials from kubelet credential provider plugins.
//! - [`store`]: the content-addressed blob store (ingest -> verify -> commit) and its sled index.
//! - [`source`]: module URL parsing, and the credential-free form used in logs and the index.
//! - [`digest`]: the sha256 type and a hashing writer.
//! - [`signature`]: the verification policy (TOML) and the judging of cosign/sigstore signatures found next to
//!   a module: keys, keyless Fulcio identities, Rekor and CT evidence; pure, fed by the fetchers.
//! - [`config`]: `Config`; every setting (flag, variable, file key, default, checks) declared once in its
//!   table; validated before anything binds.
//! - [`server`]: binds the listeners, serves until shutdown, drains with a deadline.
//! - [`transport`]: HTTP/2 on each accepted connection, with a bounded send buffer per stream;
//!   `transport::authority` lets Unix socket clients that send the socket path as `:authority` (gRPC
//!   C-core, grpc-java) through h2, with its own HPACK decoder (`transport::hpack`).
//! - [`admin`]: the admin HTTP listener: metrics, health, readiness, modules by digest.
//! - [`registry`]: the OCI Distribution pull-through endpoint (`--registry-listen`): naming (`registry::route`),
//!   HTTP/1.1 of its own with `sendfile` for blobs (`registry::http`), TLS reloaded on change
//!   (`registry::tls`); it translates HTTP to `cache::registry::RegistryBackend`, which the cache answers.
//! - [`signal`]: the shutdown signal (SIGTERM, SIGINT).
//! - [`systemd`]: readiness and watchdog notifications, and socket activation.
//! - [`client`]: a gRPC channel over the Unix socket, for the CLI and tests.
//! - [`cluster`]: the Kubernetes API: WasmPlugins listed or watched, and their pull secrets.
//! - [`wasmplugin`]: the Istio WasmPlugin resource model, its validation and the file loader.
//! - [`warm`]: WasmPlugins into fetch requests, with their pull secrets resolved.
//! - [`watch`]: the daemon's WasmPlugin watch, prefetching new and changed plugins.
//! - [`cli`]: the subcommands, one file each.
//! - [`error`]: the crate error and its one mapping to gRPC status codes.
//! - [`metrics`]: every metric name and reason label.

pub(crate) mod access;
pub(crate) mod admin;
pub(crate) mod cache;
pub mod cli;
pub(crate) mod client;
pub(crate) mod cluster;
pub mod config;
pub mod digest;
pub(crate) mod error;
pub mod fetch;
pub(crate) mod metrics;
pub(crate) mod policy;
pub(crate) mod registry;
pub(crate) mod server;
pub(crate) mod service;
pub(crate) mod signal;
pub mod signature;
pub mod source;
pub(crate) mod store;
pub(crate) mod systemd;
pub mod transport;
pub(crate) mod warm;
pub mod wasmplugin;
pub(crate) mod watch;

/// Types generated from `proto/wasmcache/v1/cache.proto`.
#[allow(clippy::all, rust_2018_idioms, missing_docs)] // generated code
pub mod proto {
    tonic::include_proto!("wasmcache.v1");

    /// The encoded descriptors of the API, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("wasmcache_descriptor");
}

pub use error::Error;
