//! Hostile input against the real daemon: malformed URLs, digests, pull secrets, manifests, archives and
//! WasmPlugin files. Each table row is one request with the gRPC code it must get and the words its message must
//! use to name the cause. After every row the test checks that nothing was cached (the module list and the blob
//! files are as before), that the message repeats no secret and stays short, and that the daemon still serves
//! a cached module.
//!
//! Manifests come from the real registry when it stores them; the ones a registry refuses to store (schema 1,
//! missing fields, wrong types, 10 MB) come from an `Origin` that answers the registry API's manifest path, as
//! a broken or malicious registry would.

use crate::support;

use std::time::Duration;

use serde_json::{json, Value};
use support::registry::*;
use support::*;
use tonic::Code;

/// The secret every redaction check looks for.
const PASSWORD: &str = "hunter2-Zq8vX3pL";

/// Longest status message accepted: messages travel in gRPC trailers and log lines.
const MAX_MESSAGE: usize = 16 * 1024;

/// One hostile request and what the daemon must answer.
struct Case {
    name: String,
    request: FetchRequest,
    code: Code,
    /// Words the message must contain (compared in lower case), naming the cause.
    cause: Vec<String>,
}

fn case(name: impl Into<String>, request: FetchRequest, code: Code, cause: &[&str]) -> Case {
    Case {
        name: name.into(),
        request,
        code,
        cause: cause.iter().map(|c| c.to_lowercase()).collect(),
    }
}

/// What the cache holds, without the times that a hit changes.
async fn cached(client: &mut Client, daemon: &Daemon) -> (Vec<(String, Vec<String>)>, usize) {
    let mut modules: Vec<(String, Vec<String>)> = list(client)
        .await
        .into_iter()
        .map(|m| {
            let mut urls = m.urls;
            urls.sort();
            (m.sha256, urls)
        })
        .collect();
    modules.sort();
    (modules, daemon.blob_files().len())
}

/// Runs every case against `daemon`, then checks the cache and that `probe` (cached before) is still a hit.
async fn check_cases(daemon: &Daemon, probe: &str, cases: Vec<Case>) {
    let mut client = daemon.client().await;
    fetch_ok(&mut client, req(probe)).await;
    let before = cached(&mut client, daemon).await;
    for case in cases {
        let status = fetch_err(&mut client, case.request.clone()).await;
        let message = status.message().to_string();
        assert_eq!(
            status.code(),
            case.code,
            "{}: expected {:?}, got {:?}: {message:.500}",
            case.name,
            case.code,
            status.code()
        );
        let lower = message.to_lowercase();
        for word in &case.cause {
            assert!(
                lower.contains(word),
                "{}: message does not say {word:?}: {message:.500}",
                case.name
            );
        }
        assert!(
            message.len() <= MAX_MESSAGE,
            "{}: message is {} bytes: {message:.300}...",
            case.name,
            message.len()
        );
        assert!(
            !lower.contains(&PASSWORD.to_lowercase()),
            "{}: message repeats the password: {message}",
            case.name
        );
        assert_eq!(
            cached(&mut client, daemon).await,
            before,
            "{}: something was cached",
            case.name
        );
        assert!(
            daemon.ingest_files().is_empty(),
            "{}: an ingest file was left",
            case.name
        );
        let (info, _) = fetch_ok(&mut client, req(probe)).await;
        assert_eq!(
            info.outcome(),
            Outcome::Hit,
            "{}: the daemon no longer serves its cache",
            case.name
        );
    }
    assert!(
        !daemon.log().to_lowercase().contains(&PASSWORD.to_lowercase()),
        "the daemon log holds the password"
    );
}

/// An origin with a module at `/probe.wasm`, for `check_cases`.
async fn probe_origin() -> (Origin, String) {
    let origin = Origin::start().await;
    origin.serve("/probe.wasm", wasm_module("hostile-probe"));
    let probe = origin.url("/probe.wasm");
    (origin, probe)
}

// ---------------------------------------------------------------------------------------------------------------
// URLs and digests
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_urls_are_invalid_argument_naming_the_cause() {
    let (origin, probe) = probe_origin().await;
    let daemon = Daemon::start(&[]).await;
    let host = origin.addr().to_string();
    let cases = vec![
        case("empty", req(""), Code::InvalidArgument, &["empty"]),
        case(
            "ftp",
            req(&format!("ftp://{host}/m.wasm")),
            Code::InvalidArgument,
            &["scheme", "ftp"],
        ),
        case(
            "gopher",
            req("gopher://127.0.0.1:70/m.wasm"),
            Code::InvalidArgument,
            &["scheme", "gopher"],
        ),
        case(
            "javascript",
            req("javascript:alert(1)"),
            Code::InvalidArgument,
            &["scheme://"],
        ),
        case(
            "no scheme",
            req("127.0.0.1/m.wasm"),
            Code::InvalidArgument,
            &["malformed"],
        ),
        case("no host", req("http://"), Code::InvalidArgument, &["host"]),
        case(
            "empty host",
            req("http://:8080/m.wasm"),
            Code::InvalidArgument,
            &["host"],
        ),
        case(
            "bad ipv6",
            req("http://[::1/m.wasm"),
            Code::InvalidArgument,
            &["malformed"],
        ),
        case(
            "bad port",
            req("http://127.0.0.1:99999/m.wasm"),
            Code::InvalidArgument,
            &["malformed", "port"],
        ),
        case(
            "huge",
            req(&format!("http://{host}/{}", "a".repeat(5000))),
            Code::InvalidArgument,
            &["longer than 4096"],
        ),
        case(
            "newline",
            req(&format!("http://{host}/m\n.wasm")),
            Code::InvalidArgument,
            &["control character"],
        ),
        case(
            "nul",
            req(&format!("http://{host}/m\0.wasm")),
            Code::InvalidArgument,
            &["control character"],
        ),
        case(
            "del",
            req(&format!("http://{host}/m\u{7f}.wasm")),
            Code::InvalidArgument,
            &["control character"],
        ),
        case(
            "c1",
            req(&format!("http://{host}/m\u{85}.wasm")),
            Code::InvalidArgument,
            &["control character"],
        ),
        case(
            "userinfo, bad host",
            req(&format!("http://user:{PASSWORD}@[bad/x")),
            Code::InvalidArgument,
            &["malformed"],
        ),
        case(
            "userinfo in oci",
            req(&format!("oci://user:{PASSWORD}@127.0.0.1:5000/repo:v1")),
            Code::InvalidArgument,
            &["oci reference"],
        ),
        case(
            "userinfo in scheme position",
            req(&format!("user:{PASSWORD}@evil://x/y")),
            Code::InvalidArgument,
            &["scheme"],
        ),
        case(
            "userinfo, upstream 404",
            req(&format!("http://user:{PASSWORD}@{host}/missing.wasm")),
            Code::NotFound,
            &["not found", "/missing.wasm"],
        ),
        case(
            "long non-local file url",
            req(&format!("file://remote/{}", "é".repeat(2000))),
            Code::InvalidArgument,
            &["local absolute path"],
        ),
        case(
            "display over the limit",
            req(&format!("http://{host}/{}", "é".repeat(1000))),
            Code::InvalidArgument,
            &["longer than 4096"],
        ),
        // Just under the limit once percent-encoded: fetched, and the 404 names the whole URL.
        case(
            "long url, upstream 404",
            req(&format!("http://{host}/{}", "é".repeat(670))),
            Code::NotFound,
            &["not found", "%c3%a9%c3%a9"],
        ),
        case(
            "file on another host",
            req("file://remote/m.wasm"),
            Code::InvalidArgument,
            &["local absolute path"],
        ),
        case(
            "file without roots",
            req("file:///etc/passwd"),
            Code::PermissionDenied,
            &["file-root"],
        ),
        case(
            "oci uppercase",
            req("oci://127.0.0.1:5000/Upper/Case:v1"),
            Code::InvalidArgument,
            &["oci reference"],
        ),
        case(
            "oci bad tag",
            req("oci://127.0.0.1:5000/a/b:bad tag"),
            Code::InvalidArgument,
            &["oci reference"],
        ),
        case(
            "oci sha512",
            req(&format!("oci://127.0.0.1:5000/a/b@sha512:{}", "a".repeat(128))),
            Code::InvalidArgument,
            &["sha256"],
        ),
        case(
            "oci short digest",
            req("oci://127.0.0.1:5000/a/b@sha256:abc"),
            Code::InvalidArgument,
            &["64 hex characters, got 3"],
        ),
        case("oci empty", req("oci://"), Code::InvalidArgument, &["oci reference"]),
    ];
    check_cases(&daemon, &probe, cases).await;
    assert_eq!(origin.hits("/m.wasm"), 0, "no refused url reached the origin");
}

/// `http://[::1]:PORT/x` is loopback, which is allowed; the IPv6 literal is parsed, fetched and listed.
#[tokio::test]
async fn ipv6_loopback_literal_is_fetched() {
    let origin = Origin::start_on("::1").await;
    let module = wasm_module("ipv6-loopback");
    origin.serve("/m.wasm", module.clone());
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    let url = format!("http://[::1]:{}/m.wasm", origin.addr().port());

    let (info, bytes) = fetch_ok(&mut client, req(&url)).await;

    assert_eq!(bytes, module);
    assert_eq!(info.source_url, url);
    assert_eq!(list(&mut client).await[0].urls, vec![url]);
}

/// Every spelling of a link-local or metadata address is refused before a packet is sent. The daemon runs in a
/// network namespace with only loopback, so a guard bug could not reach the network anyway.
#[tokio::test]
async fn blocked_addresses_are_permission_denied_in_every_spelling() {
    let (daemon, origin) = Daemon::start_isolated(&["--retry-backoff", "10ms"]).await;
    origin.serve("/probe.wasm", wasm_module("hostile-isolated-probe"));
    let probe = origin.url("/probe.wasm");
    let blocked = [
        "http://[fe80::1]/x",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/",
        "http://0xa9fea9fe/",
        "http://0251.0376.0251.0376/",
        "http://169.254.169.254.:80/",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
        "https://user:hunter2-Zq8vX3pL@169.254.169.254/",
    ];
    let mut cases: Vec<Case> = blocked
        .iter()
        .map(|url| case(*url, req(url), Code::PermissionDenied, &["blocked"]))
        .collect();
    // A zone index is not URL syntax: refused before any address is looked at.
    cases.push(case(
        "zone index",
        req("http://[fe80::1%25lo]/x"),
        Code::InvalidArgument,
        &["malformed"],
    ));
    check_cases(&daemon, &probe, cases).await;
}

#[tokio::test]
async fn malformed_sha256_is_invalid_argument_without_contacting_origin() {
    let (origin, probe) = probe_origin().await;
    origin.serve("/m.wasm", wasm_module("hostile-digest"));
    let daemon = Daemon::start(&[]).await;
    let url = origin.url("/m.wasm");
    let hex = "ab".repeat(32);
    let cases = vec![
        ("short", "abc123".to_string(), &["64 hex", "6 characters"][..]),
        ("long", format!("{hex}0"), &["64 hex", "65 characters"]),
        ("63", hex[..63].to_string(), &["64 hex"]),
        ("non-hex", "z".repeat(64), &["non-hex"]),
        // 64 bytes, 63 characters.
        ("non-ascii", format!("{}é", &hex[..62]), &["non-hex"]),
        (
            "sha512",
            format!("sha512:{}", "a".repeat(128)),
            &["sha512", "only sha256"],
        ),
        ("md5", format!("md5:{}", "a".repeat(32)), &["md5", "only sha256"]),
        ("empty hex", "sha256:".to_string(), &["64 hex", "0 characters"]),
        ("double prefix", format!("sha256:sha256:{hex}"), &["64 hex"]),
        ("spaces", format!(" {hex} "), &["64 hex"]),
        ("huge", "a".repeat(100_000), &["64 hex"]),
    ];
    let cases = cases
        .into_iter()
        .map(|(name, sha, cause)| case(name, req_sha(&url, &sha), Code::InvalidArgument, cause))
        .collect();
    check_cases(&daemon, &probe, cases).await;
    assert_eq!(origin.hits("/m.wasm"), 0, "a malformed digest never reaches upstream");
}

// ---------------------------------------------------------------------------------------------------------------
// Pull secrets
// ---------------------------------------------------------------------------------------------------------------

fn with_secret(url: &str, secret: Vec<u8>) -> FetchRequest {
    FetchRequest {
        url: url.to_string(),
        pull_secret: secret,
        ..Default::default()
    }
}

#[tokio::test]
async fn malformed_pull_secrets_are_invalid_argument_without_echoing_them() {
    let (_origin, probe) = probe_origin().await;
    let registry = Registry::shared_plain();
    let proxy = registry.proxy().await;
    let host = proxy.host();
    let daemon = proxy.daemon(&[]).await;
    let url = proxy.oci("hostile/secret:v1");
    let auth = base64(format!("alice:{PASSWORD}").as_bytes());
    let bytes = |v: Value| serde_json::to_vec(&v).unwrap();
    let padding = "x".repeat(1024 * 1024 + 10);
    let deep = format!("{{\"auths\": {}{PASSWORD}{}}}", "[".repeat(10_000), "]".repeat(10_000));
    let cases = vec![
        (
            "not json",
            format!("auth={PASSWORD}").into_bytes(),
            &["pull secret", "not valid json"][..],
        ),
        (
            "truncated",
            bytes(json!({"auths": {&host: {"auth": &auth}}}))[..40].to_vec(),
            &["not valid json"],
        ),
        (
            "not utf-8",
            [b"{\"auths\": {\"", &[0xff, 0xfe][..], PASSWORD.as_bytes(), b"\"}}"].concat(),
            &["utf-8"],
        ),
        (
            "top level array",
            bytes(json!([{"auth": &auth}])),
            &["top level", "object"],
        ),
        (
            "auths array",
            bytes(json!({"auths": [{&host: {"auth": &auth}}]})),
            &["auths", "object"],
        ),
        (
            "entry string",
            bytes(json!({"auths": {&host: PASSWORD}})),
            &["auths", "object"],
        ),
        (
            "auth number",
            bytes(json!({"auths": {&host: {"auth": 5, "password": PASSWORD}}})),
            &["auth", "string"],
        ),
        (
            "password array",
            bytes(json!({"auths": {&host: {"username": "alice", "password": [PASSWORD]}}})),
            &["password", "string"],
        ),
        (
            "auth not base64",
            bytes(json!({"auths": {&host: {"auth": format!("!!{PASSWORD}!!")}}})),
            &["base64"],
        ),
        (
            "auth without colon",
            bytes(json!({"auths": {&host: {"auth": base64(PASSWORD.as_bytes())}}})),
            &["user:password"],
        ),
        ("deep nesting", deep.into_bytes(), &["not valid json"]),
        (
            "over 1 MiB",
            bytes(json!({"auths": {&host: {"auth": &auth}}, "padding": padding})),
            &["pull secret", "1048576"],
        ),
    ];
    let cases = cases
        .into_iter()
        .map(|(name, secret, cause)| case(name, with_secret(&url, secret), Code::InvalidArgument, cause))
        .collect();
    check_cases(&daemon, &probe, cases).await;
    assert_eq!(
        proxy.total(),
        0,
        "a refused secret never reaches the registry:\n{}",
        proxy.describe()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------------------------------

fn descriptor(media_type: &str, blob: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": digest_of(blob), "size": blob.len()})
}

/// Manifests the real registry accepts and stores, but that hold no usable module.
#[tokio::test]
async fn hostile_manifests_from_the_registry_fail_cleanly() {
    let (_origin, probe) = probe_origin().await;
    let registry = Registry::shared_plain();
    let proxy = registry.proxy().await;
    let daemon = proxy.daemon(&[]).await;
    let repo = "hostile/manifests";
    let module = wasm_module("hostile-manifest");
    let config = b"{}".to_vec();
    for blob in [&module, &config] {
        registry.push_blob(repo, blob).await;
    }
    let image = |layers: Vec<Value>, extra: Option<(&str, Value)>| {
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(CNCF_WASM_CONFIG, &config),
            "layers": layers,
        });
        if let Some((key, value)) = extra {
            m[key] = value;
        }
        serde_json::to_vec(&m).unwrap()
    };
    let mut cases = Vec::new();
    let mut push = async |tag: &str, media_type: &str, body: Vec<u8>, code: Code, cause: &[&str]| {
        registry.push_manifest(repo, tag, media_type, &body).await;
        cases.push(case(tag, req(&proxy.oci(&format!("{repo}:{tag}"))), code, cause));
    };

    push(
        "unknown-layer",
        OCI_MANIFEST,
        image(vec![descriptor("application/vnd.example.blob.v1", &module)], None),
        Code::FailedPrecondition,
        &["in any known layout", "application/vnd.example.blob.v1"],
    )
    .await;
    push(
        "no-layers",
        OCI_MANIFEST,
        image(vec![], None),
        Code::FailedPrecondition,
        &["in any known layout", "layers []"],
    )
    .await;
    push(
        "two-cncf-layers",
        OCI_MANIFEST,
        image(
            vec![
                descriptor(CNCF_WASM_LAYER, &module),
                descriptor(CNCF_WASM_LAYER, &config),
            ],
            None,
        ),
        Code::FailedPrecondition,
        &["ambiguous"],
    )
    .await;
    // Unknown fields are ignored by the registry (Go reads them up to 10,000 levels deep); a JSON reader
    // without a depth limit would overflow its stack.
    let deep = json!(null);
    let deep = (0..1000).fold(deep, |inner, _| json!([inner]));
    push(
        "deep-unknown-field",
        OCI_MANIFEST,
        image(vec![descriptor(CNCF_WASM_LAYER, &module)], Some(("x-nested", deep))),
        Code::FailedPrecondition,
        &["not valid json", "recursion limit"],
    )
    .await;
    // Many layers of unknown types: the message lists what it found, but not all of it.
    let many: Vec<Value> = (0..3000)
        .map(|i| {
            let mut d = descriptor(&format!("application/vnd.example.layer-{i:05}.v1"), &module);
            d["annotations"] = json!({"i": i.to_string()});
            d
        })
        .collect();
    push(
        "thousands-of-unknown-layers",
        OCI_MANIFEST,
        image(many, None),
        Code::FailedPrecondition,
        &["in any known layout", "application/vnd.example.layer-00000.v1"],
    )
    .await;
    let cncf = registry.push(repo, Some("cncf"), cncf_image(&module)).await;
    let index = |entries: Vec<Value>| {
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})).unwrap()
    };
    let entry = |platform: Value| {
        json!({
            "mediaType": OCI_MANIFEST,
            "digest": cncf.manifest_digest,
            "size": cncf.manifest.len(),
            "platform": platform,
        })
    };
    push(
        "empty-index",
        OCI_INDEX,
        index(vec![]),
        Code::FailedPrecondition,
        &["no manifests"],
    )
    .await;
    push(
        "index-without-platform",
        OCI_INDEX,
        index(vec![entry(json!({"os": "plan9", "architecture": "mips"}))]),
        Code::FailedPrecondition,
        &["linux/amd64", "plan9/mips"],
    )
    .await;
    let wasm_index = index(vec![entry(json!({"os": "wasip1", "architecture": "wasm"}))]);
    let wasm_index_digest = registry
        .push_manifest(repo, "inner-index", OCI_INDEX, &wasm_index)
        .await;
    push(
        "index-of-index",
        OCI_INDEX,
        index(vec![
            json!({"mediaType": OCI_INDEX, "digest": wasm_index_digest, "size": wasm_index.len(),
            "platform": {"os": "wasip1", "architecture": "wasm"}}),
        ]),
        Code::FailedPrecondition,
        &["index inside an index"],
    )
    .await;
    check_cases(&daemon, &probe, cases).await;
    assert_eq!(
        proxy.blob_gets_ok(repo),
        0,
        "no module blob was downloaded:\n{}",
        proxy.describe()
    );
}

/// Manifests no registry would store, served by an origin that answers the registry API: a broken or malicious
/// registry (or a man in the middle on a plain-HTTP one).
#[tokio::test]
async fn hostile_manifests_from_a_rogue_registry_fail_cleanly() {
    let (_probe_origin, probe) = probe_origin().await;
    let rogue = Origin::start().await;
    let host = rogue.addr().to_string();
    let daemon = Daemon::start(&["--insecure-registry", &host, "--retry-backoff", "10ms"]).await;
    let module = wasm_module("rogue");
    let module_digest = digest_of(&module);
    let layer = json!({"mediaType": CNCF_WASM_LAYER, "digest": module_digest, "size": module.len()});
    let config = json!({"mediaType": CNCF_WASM_CONFIG, "digest": digest_of(b"{}"), "size": 2});
    rogue.serve(&format!("/v2/rogue/blobs/{module_digest}"), module.clone());
    let huge_string = "s".repeat(3 << 20);

    let mut cases = Vec::new();
    let mut serve = |tag: &str, content_type: &str, body: Vec<u8>, code: Code, cause: &[&str]| {
        rogue.serve_with_type(&format!("/v2/rogue/manifests/{tag}"), body, content_type);
        cases.push(case(tag, req(&format!("oci://{host}/rogue:{tag}")), code, cause));
    };
    let body = |v: Value| serde_json::to_vec(&v).unwrap();

    serve(
        "schema1",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        body(json!({"schemaVersion": 1, "name": "rogue", "tag": "schema1", "fsLayers": []})),
        Code::FailedPrecondition,
        &["media type", "not supported"],
    );
    serve(
        "html",
        "text/html",
        b"<html><body>login required</body></html>".to_vec(),
        Code::FailedPrecondition,
        &["not valid json"],
    );
    serve(
        "empty",
        OCI_MANIFEST,
        Vec::new(),
        Code::FailedPrecondition,
        &["not valid json"],
    );
    serve(
        "no-type",
        "application/json",
        body(json!({"schemaVersion": 2})),
        Code::FailedPrecondition,
        &["media type", "none declared"],
    );
    serve(
        "missing-config",
        OCI_MANIFEST,
        body(json!({"schemaVersion": 2, "layers": [layer]})),
        Code::FailedPrecondition,
        &["not valid json", "config"],
    );
    serve(
        "layers-string",
        OCI_MANIFEST,
        body(json!({"schemaVersion": 2, "config": config, "layers": "all of them"})),
        Code::FailedPrecondition,
        &["not valid json", "invalid type"],
    );
    serve(
        "size-string",
        OCI_MANIFEST,
        body(json!({"schemaVersion": 2, "config": config,
            "layers": [{"mediaType": CNCF_WASM_LAYER, "digest": module_digest, "size": "big"}]})),
        Code::FailedPrecondition,
        &["not valid json", "invalid type"],
    );
    serve(
        "huge-string-wrong-type",
        OCI_MANIFEST,
        body(json!({"schemaVersion": huge_string, "config": config, "layers": [layer]})),
        Code::FailedPrecondition,
        &["not valid json", "invalid type"],
    );
    serve(
        "md5-layer",
        OCI_MANIFEST,
        body(json!({"schemaVersion": 2, "config": config,
            "layers": [{"mediaType": CNCF_WASM_LAYER, "digest": format!("md5:{}", "a".repeat(32)), "size": 5}]})),
        Code::FailedPrecondition,
        &["not sha256"],
    );
    serve(
        "index-platform-number",
        OCI_INDEX,
        body(
            json!({"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": module_digest,
            "size": 1, "platform": 5}]}),
        ),
        Code::FailedPrecondition,
        &["not valid json", "invalid type"],
    );
    serve(
        "deep-nesting",
        OCI_MANIFEST,
        format!("{}{}", "[".repeat(200_000), "]".repeat(200_000)).into_bytes(),
        Code::FailedPrecondition,
        &["not valid json", "recursion limit"],
    );
    serve(
        "mismatched-media-type-field",
        OCI_INDEX,
        body(json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]})),
        Code::FailedPrecondition,
        &["not valid json", "manifests"],
    );
    // 10 MB, over the 4 MiB default cap: refused from its Content-Length, and while streaming without one.
    let padding = "p".repeat(10_000_000);
    serve(
        "ten-megabytes",
        OCI_MANIFEST,
        body(json!({"schemaVersion": 2, "config": config, "layers": [layer], "annotations": {"pad": padding}})),
        Code::ResourceExhausted,
        &["4194304", "limit"],
    );
    serve(
        "ten-megabytes-chunked",
        OCI_MANIFEST,
        body(json!({"schemaVersion": 2, "config": config, "layers": [layer], "annotations": {"pad": padding}})),
        Code::ResourceExhausted,
        &["4194304", "limit"],
    );
    rogue.throttle("/v2/rogue/manifests/ten-megabytes-chunked", Duration::ZERO);

    check_cases(&daemon, &probe, cases).await;
    assert_eq!(
        rogue.hits(&format!("/v2/rogue/blobs/{module_digest}")),
        0,
        "no blob was fetched"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Archives
// ---------------------------------------------------------------------------------------------------------------

/// A ustar header block for one entry, written byte by byte so that names, types and sizes can be anything
/// (the `tar` crate's builder refuses `..` and strips a leading `/`).
fn tar_header(name: &str, type_flag: u8, size: u64, link: &str) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = type_flag;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// A tar of `(name, type flag, link target, data)` entries.
fn raw_tar(entries: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, type_flag, link, data) in entries {
        out.extend_from_slice(&tar_header(name, *type_flag, data.len() as u64, link));
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// `n` gzip members of 1 MiB of zeros each: about 1 KiB apiece, `n` MiB once decompressed.
fn zero_members(n: usize) -> Vec<u8> {
    let member = gzip(&vec![0u8; 1 << 20]);
    member.repeat(n)
}

#[tokio::test]
async fn archive_bombs_are_resource_exhausted() {
    let (origin, probe) = probe_origin().await;
    let daemon = Daemon::start(&["--max-module-bytes", "4M", "--retry-backoff", "10ms"]).await;
    let mut bombs: Vec<(&str, Vec<u8>)> = Vec::new();
    // gzip: 64 MiB of zeros behind a Wasm header, in 70 KiB.
    let mut gz = gzip(b"\0asm\x01\0\0\0");
    gz.extend(zero_members(64));
    bombs.push(("gzip-bomb.wasm", gz));
    // tar.gz: one plugin.wasm entry that claims, and decompresses to, 64 MiB.
    let mut tgz = gzip(&tar_header("plugin.wasm", b'0', 64 << 20, ""));
    tgz.extend(gzip(b"\0asm\x01\0\0\0"));
    tgz.extend(zero_members(64));
    tgz.extend(gzip(&[0u8; 1024]));
    bombs.push(("tar-gz-bomb.tgz", tgz));
    // tar.gz of a hundred thousand empty entries: tiny compressed, 50 MB of headers.
    let mut headers = Vec::new();
    for i in 0..2048 {
        headers.extend_from_slice(&tar_header(&format!("f{i}.txt"), b'0', 0, ""));
    }
    let mut many = gzip(&headers).repeat(50);
    many.extend(gzip(&raw_tar(&[("plugin.wasm", b'0', "", &wasm_module("x"))])));
    bombs.push(("many-entries.tgz", many));
    // A plain download over the cap.
    bombs.push(("big.wasm", wasm_module_of_size("big", 5 << 20)));

    let cases = bombs
        .iter()
        .map(|(path, body)| {
            origin.serve(&format!("/{path}"), body.clone());
            case(
                *path,
                req(&origin.url(&format!("/{path}"))),
                Code::ResourceExhausted,
                &["4194304", "limit"],
            )
        })
        .collect();
    check_cases(&daemon, &probe, cases).await;
}

#[tokio::test]
async fn unusable_archive_entries_are_never_chosen() {
    let (origin, probe) = probe_origin().await;
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;
    let module = wasm_module("entry");
    let m: &[u8] = &module;
    let archives: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "dotdot.tar",
            raw_tar(&[("../filter.wasm", b'0', "", m)]),
            &["no plugin.wasm and no .wasm entry", "../filter.wasm"],
        ),
        (
            "absolute.tar",
            raw_tar(&[("/plugin.wasm", b'0', "", m)]),
            &["no .wasm entry", "/plugin.wasm"],
        ),
        (
            "sneaky.tar",
            raw_tar(&[("a/../../plugin.wasm", b'0', "", m)]),
            &["no .wasm entry"],
        ),
        (
            "absolute.tar.gz",
            gzip(&raw_tar(&[("/etc/x.wasm", b'0', "", m)])),
            &["no .wasm entry", "/etc/x.wasm"],
        ),
        (
            "symlink.tar",
            raw_tar(&[("plugin.wasm", b'2', "/etc/shadow", b"")]),
            &["no .wasm entry"],
        ),
        (
            "hardlink.tar",
            raw_tar(&[("plugin.wasm", b'1', "/etc/shadow", b"")]),
            &["no .wasm entry"],
        ),
        (
            "directory.tar",
            raw_tar(&[("plugin.wasm/", b'5', "", b"")]),
            &["no .wasm entry"],
        ),
        (
            "ambiguous.tar",
            raw_tar(&[("a.wasm", b'0', "", m), ("b.wasm", b'0', "", m)]),
            &["ambiguous", "a.wasm", "b.wasm"],
        ),
        (
            "not-wasm.tar",
            raw_tar(&[("plugin.wasm", b'0', "", b"#!/bin/sh\nrm -rf /\n")]),
            &["not a webassembly"],
        ),
        ("version-2.wasm", b"\0asm\x02\0\0\0rest".to_vec(), &["version"]),
        ("gzip-in-gzip.gz", gzip(&gzip(m)), &["gzip inside gzip"]),
        (
            "truncated.gz",
            gzip(&wasm_module_of_size("t", 100_000))[..500].to_vec(),
            &["cannot unpack"],
        ),
        (
            "html.wasm",
            b"<html>404</html>".to_vec(),
            &["not a webassembly", "3c 68 74 6d"],
        ),
        (
            "size-liar.tar",
            {
                // The header claims 8 GiB; the archive ends after 8 bytes.
                let mut t = tar_header("plugin.wasm", b'0', (8u64 << 30) - 1, "").to_vec();
                t.extend_from_slice(b"\0asm\x01\0\0\0");
                t
            },
            &["cannot unpack"],
        ),
        (
            "bad-checksum.tar",
            {
                let mut t = raw_tar(&[("plugin.wasm", b'0', "", m)]);
                t[148] = b'7';
                t
            },
            &["cannot unpack"],
        ),
    ];
    let cases = archives
        .into_iter()
        .map(|(path, body, cause)| {
            origin.serve(&format!("/{path}"), body);
            case(
                path,
                req(&origin.url(&format!("/{path}"))),
                Code::FailedPrecondition,
                cause,
            )
        })
        .collect();
    check_cases(&daemon, &probe, cases).await;
}

/// A GNU header block (magic `ustar  `) for one entry: the long-name and long-link entries of GNU tar.
fn gnu_header(name: &str, type_flag: u8, size: u64) -> [u8; 512] {
    let mut h = tar_header(name, type_flag, size, "");
    h[257..265].copy_from_slice(b"ustar  \0");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// A tar.gz whose first member is a GNU long-name entry (`L`) with a name of `name_len` bytes (for the regular
/// file `x` after it), followed by a good `plugin.wasm`: a 200 MB name compresses to about 200 KB.
fn long_name_tar_gz(name_len: u64) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut put = |bytes: &[u8]| std::io::Write::write_all(&mut gz, bytes).expect("gzip");
    put(&gnu_header("././@LongLink", b'L', name_len));
    let chunk = vec![b'a'; 1 << 20];
    let mut left = name_len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        put(&chunk[..n]);
        left -= n as u64;
    }
    put(&vec![0u8; (name_len.next_multiple_of(512) - name_len) as usize]);
    put(&raw_tar(&[
        ("x", b'0', "", b""),
        ("plugin.wasm", b'0', "", &wasm_module("long-name")),
    ]));
    gz.finish().expect("gzip finish")
}

/// The daemon's peak resident set (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/<pid>/status");
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmHWM in kB");
    kib * 1024
}

/// Issue 9, item 5: a 204 KB tar.gz holding a GNU long name of 200 MB cost 481 MB of memory per fetch, since
/// the name was read whole before anything looked at it. Eight at once must each be refused at the long-name
/// entry, and the daemon's peak memory must stay far below even one such name.
#[tokio::test]
async fn archives_with_a_200_mb_long_name_are_refused_in_bounded_memory() {
    const FETCHES: usize = 8;
    const PEAK_LIMIT: u64 = 100 << 20;
    let archive = bytes::Bytes::from(long_name_tar_gz(200_000_000));
    assert!(archive.len() < 400_000, "the archive is {} bytes", archive.len());
    let origin = Origin::start().await;
    let daemon = Daemon::start(&["--retry-backoff", "10ms"]).await;
    let urls: Vec<String> = (0..FETCHES)
        .map(|i| {
            // One path each: requests for one URL would share a single fetch.
            let path = format!("/long-name-{i}.tar.gz");
            origin.serve(&path, archive.clone());
            origin.url(&path)
        })
        .collect();

    let started = std::time::Instant::now();
    let mut fetches = tokio::task::JoinSet::new();
    for url in urls {
        let mut client = daemon.client().await;
        fetches.spawn(async move {
            let answer = tokio::time::timeout(Duration::from_secs(60), fetch_unchecked(&mut client, req(&url))).await;
            (url, answer)
        });
    }
    let mut answers = Vec::new();
    while let Some(joined) = fetches.join_next().await {
        answers.push(joined.expect("fetch task"));
    }
    let elapsed = started.elapsed();
    let peak = peak_rss(daemon.pid());
    eprintln!(
        "{FETCHES} long-name archives answered in {elapsed:?}; daemon peak RSS {} MiB",
        peak >> 20
    );

    for (url, answer) in answers {
        let status = match answer {
            Err(_) => panic!("{url}: no answer within 60 s"),
            Ok(Ok((info, _))) => panic!(
                "{url}: served sha256:{} (peak RSS {} MiB), expected the archive refused",
                info.sha256,
                peak >> 20
            ),
            Ok(Err(status)) => status,
        };
        assert_code(&status, Code::FailedPrecondition);
        let message = status.message().to_lowercase();
        assert!(
            message.contains("long name") && message.contains("200000000") && message.contains("limit"),
            "{url}: message does not name the long name and its limit: {message:.500}"
        );
    }
    assert!(
        peak < PEAK_LIMIT,
        "daemon peak RSS {} MiB after {FETCHES} long-name archives (limit {} MiB)",
        peak >> 20,
        PEAK_LIMIT >> 20
    );
    assert!(elapsed < Duration::from_secs(10), "refusing took {elapsed:?}");
    assert!(daemon.ingest_files().is_empty(), "an ingest file was left");
    assert!(
        list(&mut daemon.client().await).await.is_empty(),
        "something was cached"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// WasmPlugin files
// ---------------------------------------------------------------------------------------------------------------

fn plugin_yaml(spec: &str) -> String {
    format!("apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: hostile\nspec:\n{spec}")
}

/// `wasmcache warm -f` on documents with wrong types: exit status 1, the file, document and field path in the
/// output, nothing fetched or cached, and the daemon still serving.
#[tokio::test]
async fn wasmplugin_documents_with_wrong_types_fail_warm_naming_the_field() {
    let (origin, probe) = probe_origin().await;
    origin.serve("/m.wasm", wasm_module("hostile-warm"));
    let url = origin.url("/m.wasm");
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;
    fetch_ok(&mut client, req(&probe)).await;
    let before = cached(&mut client, &daemon).await;
    let socket = daemon.socket().to_str().unwrap().to_string();

    let alias_bomb = {
        let mut y = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            y.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        y
    };
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "url-number",
            plugin_yaml("  url: 5\n"),
            vec!["doc 1: spec.url: invalid type: integer `5`, expected a string"],
        ),
        (
            "url-object",
            plugin_yaml(&format!("  url: {{href: {url}}}\n")),
            vec!["doc 1: spec.url: invalid type: map, expected a string"],
        ),
        (
            "no-url",
            plugin_yaml("  phase: AUTHN\n"),
            vec!["doc 1: spec.url: required field is missing"],
        ),
        (
            "priority-string",
            plugin_yaml(&format!("  url: {url}\n  priority: high\n")),
            vec!["doc 1: spec.priority: invalid type: string \"high\", expected i64"],
        ),
        (
            "priority-fraction",
            plugin_yaml(&format!("  url: {url}\n  priority: 1.5\n")),
            vec!["spec.priority: invalid type: floating point `1.5`, expected i64"],
        ),
        (
            "match-object",
            plugin_yaml(&format!("  url: {url}\n  match: {{mode: SERVER}}\n")),
            vec!["doc 1: spec.match: invalid type: map, expected a sequence"],
        ),
        (
            "negative-port",
            plugin_yaml(&format!("  url: {url}\n  match:\n  - ports:\n    - number: -1\n")),
            vec!["doc 1: spec.match[0].ports[0].number: invalid value: integer `-1`, expected u32"],
        ),
        (
            "label-number",
            format!(
                "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: x\n  \
                 labels:\n    app.kubernetes.io/name: 5\nspec:\n  url: {url}\n"
            ),
            vec![r#"doc 1: metadata.labels["app.kubernetes.io/name"]: invalid type: integer `5`, expected a string"#],
        ),
        (
            "env-value-from",
            plugin_yaml(&format!(
                "  url: {url}\n  vmConfig:\n    env:\n    - name: A\n      valueFrom: ENV\n"
            )),
            vec!["doc 1: spec.vmConfig.env[0].valueFrom: \"ENV\" is not one of INLINE, HOST"],
        ),
        (
            "policy-case",
            plugin_yaml(&format!("  url: {url}\n  imagePullPolicy: always\n")),
            vec!["spec.imagePullPolicy: \"always\" is not one of UNSPECIFIED_POLICY, IfNotPresent, Always"],
        ),
        (
            "sha256-number",
            plugin_yaml(&format!("  url: {url}\n  sha256: 1234\n")),
            vec!["doc 1: spec.sha256: invalid type: integer `1234`, expected a string"],
        ),
        (
            "kind-number",
            format!("apiVersion: extensions.istio.io/v1alpha1\nkind: 5\nmetadata:\n  name: x\nspec:\n  url: {url}\n"),
            vec!["doc 1: kind: invalid type: integer `5`, expected a string"],
        ),
        (
            "wrong-api-version",
            format!("apiVersion: v1\nkind: WasmPlugin\nmetadata:\n  name: x\nspec:\n  url: {url}\n"),
            vec!["doc 1: apiVersion: expected extensions.istio.io/v1alpha1"],
        ),
        (
            "list-items-object",
            "apiVersion: v1\nkind: List\nitems: {a: 1}\n".to_string(),
            vec!["doc 1: items: invalid type: map, expected a sequence"],
        ),
        (
            "scalar-document",
            "just a string\n".to_string(),
            vec!["doc 1: invalid type: string \"just a string\", expected an object"],
        ),
        ("alias-bomb", alias_bomb, vec!["doc 1: invalid YAML"]),
        (
            "deep-flow",
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
            vec!["doc 1: invalid YAML"],
        ),
        (
            "json-wrong-type",
            serde_json::to_string(
                &json!({"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
                "metadata": {"name": "j"}, "spec": {"url": url, "failStrategy": true}}),
            )
            .unwrap(),
            vec!["doc 1: spec.failStrategy: invalid type: boolean `true`, expected a string"],
        ),
    ];
    for (name, text, expected) in cases {
        let file = daemon.dir().join(format!("{name}.yaml"));
        std::fs::write(&file, &text).unwrap();
        let output = run_cli(&["warm", "--socket", &socket, "-f", file.to_str().unwrap()], &[]).await;
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(1), "{name}: warm must exit 1:\n{all}");
        for words in expected {
            assert!(
                all.contains(&format!("{name}.yaml")) && all.contains(words),
                "{name}: output does not say {words:?}:\n{all:.2000}"
            );
        }
        assert!(all.len() < 64 * 1024, "{name}: {} bytes of output", all.len());
        assert_eq!(
            cached(&mut client, &daemon).await,
            before,
            "{name}: something was cached"
        );
        let (info, _) = fetch_ok(&mut client, req(&probe)).await;
        assert_eq!(info.outcome(), Outcome::Hit, "{name}: the daemon no longer serves");
    }
    assert_eq!(origin.hits("/m.wasm"), 0, "no invalid plugin was fetched");
}

/// README: "the module's blob [must match] its descriptor (size too) ... a mismatch is DATA_LOSS".
#[tokio::test]
async fn layer_whose_size_lies_is_data_loss() {
    let (_origin, probe) = probe_origin().await;
    let registry = Registry::shared_plain();
    let proxy = registry.proxy().await;
    let daemon = proxy.daemon(&[]).await;
    let repo = "hostile/size-lies";
    let module = wasm_module("size-lies");
    let config = b"{}".to_vec();
    for blob in [&module, &config] {
        registry.push_blob(repo, blob).await;
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(CNCF_WASM_CONFIG, &config),
        "layers": [{"mediaType": CNCF_WASM_LAYER, "digest": digest_of(&module), "size": 3}],
    }))
    .unwrap();
    registry.push_manifest(repo, "v1", OCI_MANIFEST, &manifest).await;
    let cases = vec![case(
        "size lies",
        req(&proxy.oci(&format!("{repo}:v1"))),
        Code::DataLoss,
        &["size"],
    )];
    check_cases(&daemon, &probe, cases).await;
}
