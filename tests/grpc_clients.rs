//! Stock gRPC clients other than tonic on the Unix socket: the Python `grpcio` package (gRPC C-core, the
//! library behind the Python, C++, Ruby and PHP clients). Since 1.57 C-core sends the percent-encoded socket
//! path as `:authority` (`%2Ftmp%2F...`), and grpc-java sends the raw path: neither is a valid authority, and
//! the daemon must answer them all the same.
//!
//! The Python side only moves bytes (raw serializers, no generated code): every message is decoded and
//! checked here with the crate's own types. A machine without `grpcio` fails these tests: `pip install grpcio`
//! (`.ci/run` installs it).

use crate::support;

use std::path::Path;
use std::process::Stdio;

use prost::Message as _;
use support::*;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::HealthCheckResponse;
use wasmcache::proto::{FetchResponse, ListResponse};

/// Calls List, the health Check and a server-streaming Fetch over `grpc.insecure_channel("unix://" + socket)`
/// with the channel options given as JSON, and prints each response message in hex as one JSON object.
/// A failed call exits with status 1 and its code and details on stderr.
const CLIENT: &str = r#"
import json, sys
try:
    import grpc
except ImportError:
    sys.stderr.write("the Python grpcio package is missing: pip install grpcio\n")
    sys.exit(3)
socket_path, options, fetch_request = sys.argv[1], json.loads(sys.argv[2]), bytes.fromhex(sys.argv[3])
raw = dict(request_serializer=lambda b: b, response_deserializer=lambda b: b)
out = {"grpcio": grpc.__version__}
try:
    with grpc.insecure_channel("unix://" + socket_path, options=[tuple(o) for o in options]) as channel:
        out["list"] = channel.unary_unary("/wasmcache.v1.ModuleCache/List", **raw)(b"", timeout=20).hex()
        out["health"] = channel.unary_unary("/grpc.health.v1.Health/Check", **raw)(b"", timeout=20).hex()
        fetch = channel.unary_stream("/wasmcache.v1.ModuleCache/Fetch", **raw)
        out["fetch"] = [m.hex() for m in fetch(fetch_request, timeout=60)]
except grpc.RpcError as e:
    sys.stderr.write("grpcio %s: %s: %s\n" % (grpc.__version__, e.code(), e.details()))
    sys.exit(1)
print(json.dumps(out))
"#;

/// What the Python client got back, decoded.
struct Answers {
    list: ListResponse,
    health: HealthCheckResponse,
    fetch: Vec<FetchResponse>,
}

/// Fails loudly (never skips) when `python3` or its `grpcio` package is missing.
fn require_grpcio() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import grpc"])
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed to test the gRPC C-core client: {e}"));
    assert!(
        probe.status.success(),
        "the Python grpcio package is missing: pip install grpcio (.ci/run installs it)\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
}

/// Runs [`CLIENT`] against `socket` with these channel options.
async fn python_client(socket: &Path, options: &[(&str, &str)], fetch: &FetchRequest) -> Answers {
    require_grpcio();
    let options = serde_json::to_string(options).expect("options as JSON");
    let args = [
        socket.as_os_str().to_owned(),
        options.into(),
        hex::encode(fetch.encode_to_vec()).into(),
    ];
    // The script's calls have deadlines of their own, so it cannot hang.
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", CLIENT])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run python3")
    })
    .await
    .expect("python3 thread");
    assert!(
        output.status.success(),
        "the Python grpcio client failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("the client's JSON line");
    let bytes = |value: &serde_json::Value| hex::decode(value.as_str().expect("a hex string")).expect("hex");
    Answers {
        list: ListResponse::decode(bytes(&json["list"]).as_slice()).expect("a ListResponse"),
        health: HealthCheckResponse::decode(bytes(&json["health"]).as_slice()).expect("a HealthCheckResponse"),
        fetch: json["fetch"]
            .as_array()
            .expect("the Fetch messages")
            .iter()
            .map(|m| FetchResponse::decode(bytes(m).as_slice()).expect("a FetchResponse"))
            .collect(),
    }
}

/// The module of a Fetch stream: its info, then its chunks concatenated.
fn streamed(messages: &[FetchResponse]) -> (ModuleInfo, Vec<u8>) {
    let mut messages = messages.iter().map(|m| m.msg.clone());
    let Some(Some(Msg::Info(info))) = messages.next() else {
        panic!("the first Fetch message must be Info");
    };
    let mut bytes = Vec::new();
    for message in messages {
        match message {
            Some(Msg::Chunk(chunk)) => bytes.extend_from_slice(&chunk),
            other => panic!("expected a chunk, got {other:?}"),
        }
    }
    (info, bytes)
}

/// Serves a module of several chunks (so that the client's flow control takes part) and checks that a
/// Python client with these channel options lists, health-checks and fetches it intact.
async fn python_client_is_served(options: &[(&str, &str)]) {
    let module = wasm_module_of_size("grpcio", 3 * MAX_CHUNK + 12_345);
    let origin = Origin::start().await;
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(&[]).await;

    let answers = python_client(&daemon.socket(), options, &req(&origin.url("/m.wasm"))).await;

    assert!(answers.list.modules.is_empty(), "fresh cache: {:?}", answers.list);
    assert_eq!(answers.health.status(), ServingStatus::Serving);
    let (info, bytes) = streamed(&answers.fetch);
    assert_eq!(info.sha256, sha256_hex(&module));
    assert_eq!(bytes.len(), module.len());
    assert_eq!(
        sha256_hex(&bytes),
        sha256_hex(&module),
        "streamed bytes differ from the module"
    );
    assert!(
        answers.fetch.len() > 2,
        "expected several chunks, got {}",
        answers.fetch.len() - 1
    );
    assert_eq!(origin.hits("/m.wasm"), 1);
}

/// grpcio >= 1.57 sends `:authority: %2F...%2Fwasmcache.sock`.
#[tokio::test]
async fn grpcio_default_unix_channel_is_served() {
    python_client_is_served(&[]).await;
}

/// grpc-java sends the socket path itself as `:authority`; grpcio sends it too when told to.
#[tokio::test]
async fn raw_socket_path_as_authority_is_served() {
    let daemon_socket_like = "/run/wasmcache/wasmcache.sock";
    python_client_is_served(&[("grpc.default_authority", daemon_socket_like)]).await;
}

/// A client that names a valid authority is served as before.
#[tokio::test]
async fn valid_authority_on_the_socket_is_served() {
    python_client_is_served(&[("grpc.default_authority", "localhost:1234")]).await;
}
