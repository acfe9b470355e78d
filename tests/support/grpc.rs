//! gRPC helpers: requests, fetches checked chunk by chunk, status assertions, listing.

use super::*;

/// A FetchRequest for `url` with every other field at its default.
pub fn req(url: &str) -> FetchRequest {
    FetchRequest {
        url: url.to_string(),
        ..Default::default()
    }
}

/// A FetchRequest for `url` that expects `sha256`.
pub fn req_sha(url: &str, sha256: &str) -> FetchRequest {
    FetchRequest {
        url: url.to_string(),
        sha256: sha256.to_string(),
        ..Default::default()
    }
}

/// A FetchRequest with the given pull policy and resource identity.
pub fn req_policy(url: &str, policy: PullPolicy, resource: &str, version: &str) -> FetchRequest {
    FetchRequest {
        url: url.to_string(),
        pull_policy: policy as i32,
        resource_name: resource.to_string(),
        resource_version: version.to_string(),
        ..Default::default()
    }
}

/// Runs a Fetch and collects the stream, checking the stream contract on the way: the first message is Info,
/// every later one a chunk of at most 1 MiB, and the bytes match the info's size and sha256.
pub async fn fetch(client: &mut Client, request: FetchRequest) -> Result<(ModuleInfo, Vec<u8>), Status> {
    let mut stream = client.fetch(request).await?.into_inner();
    let first = stream.message().await?.expect("fetch stream ended without any message");
    let info = match first.msg {
        Some(Msg::Info(info)) => info,
        other => panic!("first fetch message must be Info, got {other:?}"),
    };
    let mut bytes = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0).min(512 << 20));
    while let Some(message) = stream.message().await? {
        match message.msg {
            Some(Msg::Chunk(chunk)) => {
                assert!(chunk.len() <= MAX_CHUNK, "chunk of {} bytes exceeds 1 MiB", chunk.len());
                bytes.extend_from_slice(&chunk);
            }
            Some(Msg::Info(_)) => panic!("Info after the first fetch message"),
            None => panic!("empty fetch message"),
        }
    }
    assert_eq!(
        bytes.len() as u64,
        info.size,
        "streamed byte count differs from info.size"
    );
    assert_eq!(
        sha256_hex(&bytes),
        info.sha256,
        "streamed bytes do not hash to info.sha256"
    );
    Ok((info, bytes))
}

/// `fetch` that must succeed.
pub async fn fetch_ok(client: &mut Client, request: FetchRequest) -> (ModuleInfo, Vec<u8>) {
    let url = request.url.clone();
    match fetch(client, request).await {
        Ok(ok) => ok,
        Err(status) => panic!("fetch {url} failed: {:?} {}", status.code(), status.message()),
    }
}

/// `fetch` that must fail; returns the status.
pub async fn fetch_err(client: &mut Client, request: FetchRequest) -> Status {
    let url = request.url.clone();
    match fetch(client, request).await {
        Ok((info, _)) => panic!("fetch {url} succeeded ({info:?}), expected an error"),
        Err(status) => status,
    }
}

/// `fetch` without its panics, for tests that judge the answer themselves (under load a wrong answer is counted,
/// not a panic inside a task; after a crash a short stream is expected): the info and the bytes as streamed. A
/// broken stream contract (no Info first, a second Info, a chunk over 1 MiB) comes back as an `INTERNAL` status.
pub async fn fetch_unchecked(client: &mut Client, request: FetchRequest) -> Result<(ModuleInfo, Vec<u8>), Status> {
    let mut stream = client.fetch(request).await?.into_inner();
    let info = match stream.message().await?.and_then(|m| m.msg) {
        Some(Msg::Info(info)) => info,
        other => return Err(Status::internal(format!("first fetch message is not Info: {other:?}"))),
    };
    let mut bytes = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0).min(512 << 20));
    while let Some(message) = stream.message().await? {
        match message.msg {
            Some(Msg::Chunk(chunk)) if chunk.len() <= MAX_CHUNK => bytes.extend_from_slice(&chunk),
            Some(Msg::Chunk(chunk)) => {
                return Err(Status::internal(format!(
                    "chunk of {} bytes exceeds 1 MiB",
                    chunk.len()
                )))
            }
            Some(Msg::Info(_)) => return Err(Status::internal("Info after the first fetch message")),
            None => return Err(Status::internal("empty fetch message")),
        }
    }
    Ok((info, bytes))
}

/// Asserts the status code, showing the message when it differs.
#[track_caller]
pub fn assert_code(status: &Status, code: Code) {
    assert_eq!(
        status.code(),
        code,
        "unexpected status, message: {:?}",
        status.message()
    );
}

pub async fn list(client: &mut Client) -> Vec<CachedModule> {
    client.list(ListRequest {}).await.expect("list").into_inner().modules
}
