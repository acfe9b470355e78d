//! Test support shared by every integration test file (one file per concern: daemon, grpc, origin, fixtures,
//! admin, pki, registry, kube, sigstore, token, warm): the real daemon, a counting HTTP(S) origin, and
//! builders for Wasm modules and archives.
//!
//! `Daemon` runs the `wasmcache` binary itself (not the library) on a fresh temp dir and talks to it over its
//! Unix socket, so the tests see exactly what an Envoy agent or the CLI would. `Origin` is a real HTTP/1.1
//! server on `127.0.0.1:0` whose routes are set at runtime and which counts every request per path, so each
//! test can assert how often upstream was contacted (Istio's `wantNumRequest`). `registry` runs the real OCI
//! registry (Debian's `docker-registry`) behind a counting proxy, with pushers for every image format.

// Every test file compiles this module and uses only part of it.
#![allow(dead_code, unused_imports)]

mod admin;
mod daemon;
mod fixtures;
mod grpc;
pub mod kube;
mod origin;
mod pki;
pub mod raw;
pub mod registry;
mod serve;
pub mod sigstore;
pub mod token;
pub mod warm;

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;
use tokio::net::{TcpListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::rustls;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status};

pub use wasmcache::proto::fetch_response::Msg;
pub use wasmcache::proto::module_cache_client::ModuleCacheClient;
pub use wasmcache::proto::remove_request::Target;
pub use wasmcache::proto::{CachedModule, FetchRequest, ListRequest, ModuleInfo, Outcome, PullPolicy, RemoveRequest};

/// The largest chunk the Fetch stream may carry (cache.proto: "at most 1 MiB").
pub const MAX_CHUNK: usize = 1024 * 1024;

/// How long a daemon gets to accept its first gRPC call, or to exit after SIGTERM.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

pub type Client = ModuleCacheClient<Channel>;

pub use admin::*;
pub use daemon::*;
pub use fixtures::*;
pub use grpc::*;
pub use origin::*;
pub use pki::*;
