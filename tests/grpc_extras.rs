//! The standard gRPC services next to ModuleCache: health (`grpc.health.v1.Health`) and server reflection
//! (`grpc.reflection.v1`, and `grpc.reflection.v1alpha` for older clients), so that probes and `grpcurl`
//! work without the `.proto` file.

use crate::support;

use std::time::Duration;

use prost::Message as _;
use support::*;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1alpha;

const MODULE_CACHE: &str = "wasmcache.v1.ModuleCache";
const HEALTH: &str = "grpc.health.v1.Health";

async fn channel(daemon: &Daemon) -> Channel {
    unix_channel(&daemon.socket())
        .await
        .expect("connect to the daemon socket")
}

async fn check(channel: Channel, service: &str) -> ServingStatus {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .unwrap_or_else(|s| panic!("health check of {service:?}: {:?} {}", s.code(), s.message()))
        .into_inner();
    ServingStatus::try_from(response.status).expect("known serving status")
}

/// One reflection request on a new stream; the response's message.
async fn reflect(channel: Channel, request: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection stream")
        .into_inner();
    responses
        .message()
        .await
        .expect("reflection response")
        .expect("a reflection response")
        .message_response
        .expect("a message in the reflection response")
}

// ---------------------------------------------------------------------------------------------------------------
// Health
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn health_check_of_the_server_is_serving() {
    let daemon = Daemon::start(&[]).await;

    assert_eq!(check(channel(&daemon).await, "").await, ServingStatus::Serving);
}

#[tokio::test]
async fn health_check_of_module_cache_is_serving() {
    let daemon = Daemon::start(&[]).await;

    assert_eq!(
        check(channel(&daemon).await, MODULE_CACHE).await,
        ServingStatus::Serving
    );
}

#[tokio::test]
async fn health_check_of_an_unknown_service_is_not_found() {
    let daemon = Daemon::start(&[]).await;

    let status = HealthClient::new(channel(&daemon).await)
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("unknown service");

    assert_code(&status, tonic::Code::NotFound);
}

#[tokio::test]
async fn health_check_answers_on_the_tcp_listener() {
    let listen = free_local_addr();
    let daemon = Daemon::start(&["--listen", &listen.to_string()]).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{listen}"))
        .unwrap()
        .connect()
        .await
        .expect("connect over TCP");

    assert_eq!(check(channel, MODULE_CACHE).await, ServingStatus::Serving);
    drop(daemon);
}

/// A watcher of ModuleCache's health learns NOT_SERVING as soon as shutdown begins, while a stream still drains.
#[tokio::test]
async fn health_watch_turns_not_serving_when_shutdown_begins() {
    let module = wasm_module_of_size("health-drain", 8 * 1024 * 1024);
    let origin = Origin::start().await;
    origin.serve("/m.wasm", module);
    let mut daemon = Daemon::start(&["--shutdown-grace", "10s"]).await;
    let mut client = daemon.client().await;
    let mut draining = client
        .fetch(req(&origin.url("/m.wasm")))
        .await
        .expect("fetch")
        .into_inner();
    draining.message().await.expect("first message").expect("info");
    let mut watch = HealthClient::new(channel(&daemon).await)
        .watch(HealthCheckRequest {
            service: MODULE_CACHE.into(),
        })
        .await
        .expect("health watch")
        .into_inner();
    let first = watch.message().await.expect("watch message").expect("first status");
    assert_eq!(first.status(), ServingStatus::Serving);

    daemon.signal(libc::SIGTERM);

    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("no health update within 5 s of SIGTERM")
        .expect("watch message")
        .expect("a status after SIGTERM");
    assert_eq!(next.status(), ServingStatus::NotServing);
    drop(draining);
    daemon.wait_exit().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Reflection
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn reflection_lists_module_cache_and_health() {
    let daemon = Daemon::start(&[]).await;

    let response = reflect(channel(&daemon).await, MessageRequest::ListServices(String::new())).await;

    let MessageResponse::ListServicesResponse(list) = response else {
        panic!("expected a service list, got {response:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&MODULE_CACHE), "services: {names:?}");
    assert!(names.contains(&HEALTH), "services: {names:?}");
}

/// The file that defines ModuleCache, with every RPC of the wire contract.
#[tokio::test]
async fn reflection_describes_module_cache_by_symbol() {
    let daemon = Daemon::start(&[]).await;

    let response = reflect(
        channel(&daemon).await,
        MessageRequest::FileContainingSymbol(MODULE_CACHE.into()),
    )
    .await;

    let MessageResponse::FileDescriptorResponse(files) = response else {
        panic!("expected file descriptors, got {response:?}");
    };
    let files: Vec<prost_types::FileDescriptorProto> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("a FileDescriptorProto"))
        .collect();
    let file = files
        .iter()
        .find(|f| f.package() == "wasmcache.v1" && f.service.iter().any(|s| s.name() == "ModuleCache"))
        .unwrap_or_else(|| panic!("no file of package wasmcache.v1 defines ModuleCache: {files:?}"));
    let service = file.service.iter().find(|s| s.name() == "ModuleCache").unwrap();
    let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    for rpc in [
        "Fetch", "Resolve", "List", "Remove", "Warm", "Pin", "Unpin", "Gc", "Verify",
    ] {
        assert!(methods.contains(&rpc), "{rpc} missing from {methods:?}");
    }
}

/// Older clients (such as older grpcurl releases) ask `grpc.reflection.v1alpha`; it answers with the same services.
#[tokio::test]
async fn reflection_v1alpha_lists_module_cache_and_health() {
    let daemon = Daemon::start(&[]).await;
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel(&daemon).await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };

    let response = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("v1alpha reflection stream")
        .into_inner()
        .message()
        .await
        .expect("v1alpha reflection response")
        .expect("a v1alpha reflection response")
        .message_response;

    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) = response else {
        panic!("expected a service list, got {response:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&MODULE_CACHE), "services: {names:?}");
    assert!(names.contains(&HEALTH), "services: {names:?}");
    assert!(
        names.contains(&"grpc.reflection.v1alpha.ServerReflection"),
        "services: {names:?}"
    );
}
