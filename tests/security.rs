//! Security: the socket's mode and group, secrets kept out of logs and error messages, cached private modules
//! kept from unproven callers, and file:// confinement; the last two while load runs against public modules.
//!
//! "Under load" means a background of clients fetching cached public modules over several connections (every
//! one of those answers must be right too), while attacker tasks repeat the forbidden requests for a few seconds
//! and every answer is checked: the expected refusal, never bytes.

mod support;

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::registry::*;
use support::*;
use tokio::task::JoinSet;
use tonic::{Code, Status};

/// How long the attacks run under load.
const ATTACK_WINDOW: Duration = Duration::from_secs(8);
/// Attack requests per attacker task at most.
const MAX_ATTACKS_PER_TASK: u64 = 20_000;

// ---------------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------------

/// Clients fetching cached public modules until stopped; each answer must be the module asked for.
struct PublicLoad {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<Result<u64, String>>,
}

impl PublicLoad {
    /// `clients` tasks over `connections` connections, each looping over `modules` (URL, sha256) until `stop`,
    /// for at most `ATTACK_WINDOW` x 3.
    async fn start(daemon: &Daemon, modules: Vec<(String, String)>, clients: usize, connections: usize) -> PublicLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let modules = Arc::new(modules);
        let mut channels = Vec::new();
        for _ in 0..connections {
            channels.push(unix_channel(&daemon.socket()).await.expect("connect"));
        }
        let mut tasks = JoinSet::new();
        for i in 0..clients {
            let mut client = ModuleCacheClient::new(channels[i % connections].clone());
            let (stop, modules) = (stop.clone(), modules.clone());
            tasks.spawn(async move {
                let deadline = Instant::now() + ATTACK_WINDOW * 3;
                let mut served = 0u64;
                let mut n = i;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let (url, hex) = &modules[n % modules.len()];
                    n += 1;
                    match tokio::time::timeout(Duration::from_secs(20), fetch_unchecked(&mut client, req(url))).await {
                        Ok(Ok((info, bytes))) if info.sha256 == *hex && sha256_hex(&bytes) == *hex => served += 1,
                        Ok(Ok((info, _))) => return Err(format!("public {url}: served sha256:{}", info.sha256)),
                        Ok(Err(s)) => return Err(format!("public {url}: {:?} {}", s.code(), s.message())),
                        Err(_) => return Err(format!("public {url}: no answer within 20 s")),
                    }
                }
                Ok(served)
            });
        }
        PublicLoad { stop, tasks }
    }

    /// Stops the clients; every public request must have succeeded. Returns how many were served.
    async fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        let mut served = 0;
        while let Some(joined) = self.tasks.join_next().await {
            served += joined
                .expect("public load task")
                .unwrap_or_else(|e| panic!("a public request failed under load: {e}"));
        }
        assert!(served > 0, "the public load served nothing");
        served
    }
}

/// An origin serving `n` public modules, all fetched once through `daemon`; their (URL, sha256).
async fn public_modules(origin: &Origin, daemon: &Daemon, n: usize) -> Vec<(String, String)> {
    let mut client = daemon.client().await;
    let mut modules = Vec::new();
    for i in 0..n {
        let module = wasm_module_of_size(&format!("public-{i}-{}", origin.addr()), 1024 << (i % 6));
        let path = format!("/public/{i}.wasm");
        origin.serve(&path, module.clone());
        fetch_ok(&mut client, req(&origin.url(&path))).await;
        modules.push((origin.url(&path), sha256_hex(&module)));
    }
    modules
}

/// Fails when `haystack` contains any of `needles`, naming where.
#[track_caller]
fn assert_no_secret(haystack: &str, needles: &[String], where_: &str) {
    for needle in needles {
        assert!(
            !haystack.contains(needle.as_str()),
            "{where_} contains secret material {needle:?}:\n{}",
            haystack
                .lines()
                .filter(|l| l.contains(needle.as_str()))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The socket
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn socket_is_created_with_mode_0660() {
    let daemon = Daemon::start(&[]).await;

    let meta = std::fs::symlink_metadata(daemon.socket()).expect("socket");

    assert!(meta.file_type().is_socket(), "{:?} is a socket", daemon.socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660, "socket mode");
}

/// The daemon's umask neither widens nor narrows the socket's mode.
#[tokio::test]
async fn socket_mode_is_0660_whatever_the_umask() {
    for mask in [0o000, 0o077] {
        // SAFETY: umask(2) cannot fail. The daemon inherits the mask at spawn; the old one is put back once it runs.
        let old = unsafe { libc::umask(mask) };
        let daemon = Daemon::start(&[]).await;
        // SAFETY: as above.
        unsafe { libc::umask(old) };

        let mode = std::fs::metadata(daemon.socket()).unwrap().permissions().mode() & 0o7777;

        assert_eq!(mode, 0o660, "socket mode under umask {mask:03o}");
    }
}

#[tokio::test]
async fn socket_group_by_number_owns_the_socket() {
    let daemon = Daemon::start(&["--socket-group", "65534"]).await;

    let meta = std::fs::metadata(daemon.socket()).unwrap();

    assert_eq!(meta.gid(), 65534, "socket group");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
}

/// A group from /etc/group other than root's: `nogroup` where there is one.
fn named_group() -> (String, u32) {
    let table = std::fs::read_to_string("/etc/group").expect("read /etc/group");
    let groups: Vec<(String, u32)> = table
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?.to_string();
            let gid = f.nth(1)?.parse().ok()?;
            Some((name, gid))
        })
        .collect();
    groups
        .iter()
        .find(|(n, _)| n == "nogroup")
        .or_else(|| groups.iter().find(|(_, g)| *g != 0))
        .cloned()
        .expect("/etc/group has a group other than root")
}

#[tokio::test]
async fn socket_group_by_name_owns_the_socket() {
    let (name, gid) = named_group();
    let daemon = Daemon::start(&["--socket-group", &name]).await;

    let meta = std::fs::metadata(daemon.socket()).unwrap();

    assert_eq!(meta.gid(), gid, "socket group of --socket-group {name}");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
}

#[tokio::test]
async fn unknown_socket_group_exits_78_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("wasmcache.sock");
    let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmcache"))
        .arg("serve")
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .arg("--socket")
        .arg(&socket)
        .args(["--admin-listen", "off", "--socket-group", "no-such-group-wasmcache-7f"])
        .env_remove("WASMCACHE_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn wasmcache");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve with an unknown --socket-group was still running after 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();

    assert_eq!(status.code(), Some(78), "exit status; stderr: {stderr}");
    assert!(!socket.exists(), "the socket was never bound");
    assert!(
        stderr.contains("no-such-group-wasmcache-7f"),
        "stderr names the group: {stderr}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Secrets stay out of logs and error messages
// ---------------------------------------------------------------------------------------------------------------

const WRONG_PASSWORD: &str = "wrong-pw-sec-41c7e2";
const MALFORMED_PASSWORD: &str = "malformed-pw-sec-93ab10";

/// Pull secrets against the HTTPS registry with auth, good, wrong and malformed, by request and from
/// `--docker-config`, over gRPC and the CLI: no password (in clear or in base64) in any error message or in the
/// daemon's log (which runs at debug level for wasmcache).
#[tokio::test]
async fn pull_secret_passwords_never_appear_in_logs_or_errors() {
    let registry = Registry::shared_tls_auth();
    let proxy = registry.proxy().await;
    let host = proxy.host();
    let dir = tempfile::tempdir().unwrap();
    let docker_config = dir.path().join("docker-config.json");
    std::fs::write(&docker_config, docker_config_json(&host, USER_B.0, USER_B.1)).unwrap();
    let ca = registry.ca_file().to_str().unwrap().to_string();
    let daemon = Daemon::start(&[
        "--ca-file",
        &ca,
        "--retry-backoff",
        "10ms",
        "--docker-config",
        docker_config.to_str().unwrap(),
    ])
    .await;
    let mut client = daemon.client().await;
    let image = registry
        .push("sec/secrets", Some("v1"), cncf_image(&wasm_module("sec-secrets")))
        .await;
    let url = proxy.oci("sec/secrets:v1");
    let with = |secret: Vec<u8>| FetchRequest {
        pull_secret: secret,
        ..req(&url)
    };
    let good = docker_config_json(&host, USER_A.0, USER_A.1);
    let wrong = docker_config_json(&host, USER_A.0, WRONG_PASSWORD);
    let mut messages = Vec::new();

    let (info, _) = fetch_ok(&mut client, with(good.clone())).await;
    assert_eq!(info.sha256, image.module_digest);
    let status = fetch_err(&mut client, with(wrong.clone())).await;
    assert_code(&status, Code::Unauthenticated);
    messages.push(status.message().to_string());
    // Without a secret the --docker-config credentials (USER_B) are used.
    fetch_ok(&mut client, req(&url)).await;
    // A refresh with the wrong password is refused, not served stale.
    let status = fetch_err(
        &mut client,
        FetchRequest {
            pull_secret: wrong.clone(),
            ..req_policy(&url, PullPolicy::Always, "ns/p", "2")
        },
    )
    .await;
    assert_code(&status, Code::Unauthenticated);
    messages.push(status.message().to_string());
    // A missing repository with good credentials.
    let status = fetch_err(
        &mut client,
        FetchRequest {
            pull_secret: good.clone(),
            ..req(&proxy.oci("sec/missing:v1"))
        },
    )
    .await;
    messages.push(status.message().to_string());
    // Malformed secrets that carry a password where a careless parser error would quote it.
    let malformed = [
        format!(r#"{{"auths": "{MALFORMED_PASSWORD}"}}"#),
        format!(r#"["{MALFORMED_PASSWORD}"]"#),
        format!(r#"{{"auths": {{"{host}": {{"auth": "{MALFORMED_PASSWORD}"}}}}}}"#),
        format!(
            r#"{{"auths": {{"{host}": {{"auth": "{}"}}}}}}"#,
            base64(format!("alice{MALFORMED_PASSWORD}").as_bytes())
        ),
        format!(r#"{{"auths": {{"{host}": {{"username": "alice", "password": ["{MALFORMED_PASSWORD}"]}}}}}}"#),
        format!(r#"{{"auths": {{"{host}": {{"username": "alice", "password": "{MALFORMED_PASSWORD}""#),
    ];
    for secret in &malformed {
        match fetch_unchecked(&mut client, with(secret.as_bytes().to_vec())).await {
            Err(status) => messages.push(status.message().to_string()),
            Ok((info, _)) => panic!("malformed secret {secret} was accepted: {:?}", info.outcome()),
        }
    }
    // The CLI's error line.
    let secret_file = dir.path().join("wrong.json");
    std::fs::write(&secret_file, &wrong).unwrap();
    let socket = daemon.socket().to_str().unwrap().to_string();
    let cli = run_cli(
        &[
            "fetch",
            "--socket",
            &socket,
            "--pull-secret",
            secret_file.to_str().unwrap(),
            &url,
        ],
        &[],
    )
    .await;
    assert!(!cli.status.success(), "the CLI fetch with a wrong password fails");
    messages.push(String::from_utf8_lossy(&cli.stderr).into_owned());
    messages.push(String::from_utf8_lossy(&cli.stdout).into_owned());

    let needles: Vec<String> = [
        USER_A,
        USER_B,
        (USER_A.0, WRONG_PASSWORD),
        ("alice", MALFORMED_PASSWORD),
    ]
    .iter()
    .flat_map(|(user, password)| [password.to_string(), base64(format!("{user}:{password}").as_bytes())])
    .chain([base64(&good), base64(&wrong)])
    .collect();
    for message in &messages {
        assert_no_secret(message, &needles, "an error message");
    }
    let log = daemon.log();
    assert!(log.contains("request failed"), "the failures were logged");
    assert_no_secret(&log, &needles, "the daemon log");
}

/// `https://user:password@host/...` style credentials: never in an error message, ModuleInfo, List, or the log,
/// whatever goes wrong (retries, 404, checksum, timeout, redirect, blocked destination, malformed URL) and on a
/// refresh served stale.
#[tokio::test]
async fn url_userinfo_passwords_never_appear_in_logs_errors_or_listings() {
    let origin = Origin::start().await;
    let daemon = Daemon::start(&[
        "--retry-backoff",
        "10ms",
        "--fetch-attempts",
        "2",
        "--fetch-timeout",
        "500ms",
    ])
    .await;
    let mut client = daemon.client().await;
    let addr = origin.addr();
    let module = wasm_module("userinfo");
    origin.serve("/ok.wasm", module.clone());
    origin.serve("/text", "not wasm");
    origin.always("/500.wasm", 500);
    origin.serve("/slow.wasm", wasm_module("userinfo-slow"));
    origin.delay("/slow.wasm", Duration::from_secs(30));
    origin.redirect(
        "/redirect.wasm",
        302,
        &format!("http://redirected:redirect-pw-5e1a@{addr}/missing.wasm"),
    );
    let passwords = [
        "ok-pw-1c2d",
        "p%40ss-enc-7a",
        "err500-pw-3b",
        "nf-pw-4c",
        "sum-pw-5d",
        "slow-pw-6e",
        "text-pw-7f",
        "redir-pw-8a",
        "blocked-pw-9b",
        "bad-port-pw-0c",
        "space-pw-1d",
        "stale-pw-2e",
    ];
    let url = |user: &str, password: &str, path: &str| format!("http://{user}:{password}@{addr}{path}");
    let mut messages = Vec::new();
    let mut err = |status: Status, code: Code| {
        assert_code(&status, code);
        messages.push(status.message().to_string());
    };

    let (info, _) = fetch_ok(&mut client, req(&url("alice", passwords[0], "/ok.wasm"))).await;
    let (info2, _) = fetch_ok(&mut client, req(&url("alice", passwords[1], "/ok.wasm"))).await;
    err(
        fetch_err(&mut client, req(&url("alice", passwords[2], "/500.wasm"))).await,
        Code::Unavailable,
    );
    err(
        fetch_err(&mut client, req(&url("alice", passwords[3], "/missing.wasm"))).await,
        Code::NotFound,
    );
    err(
        fetch_err(
            &mut client,
            req_sha(&url("alice", passwords[4], "/ok.wasm"), &sha256_hex(b"other")),
        )
        .await,
        Code::DataLoss,
    );
    err(
        fetch_err(&mut client, req(&url("alice", passwords[5], "/slow.wasm"))).await,
        Code::DeadlineExceeded,
    );
    err(
        fetch_err(&mut client, req(&url("alice", passwords[6], "/text"))).await,
        Code::FailedPrecondition,
    );
    err(
        fetch_err(&mut client, req(&url("alice", passwords[7], "/redirect.wasm"))).await,
        Code::NotFound,
    );
    err(
        fetch_err(
            &mut client,
            req(&format!("http://alice:{}@169.254.169.254/m.wasm", passwords[8])),
        )
        .await,
        Code::PermissionDenied,
    );
    err(
        fetch_err(
            &mut client,
            req(&format!("http://alice:{}@127.0.0.1:99999/m.wasm", passwords[9])),
        )
        .await,
        Code::InvalidArgument,
    );
    err(
        fetch_err(
            &mut client,
            req(&format!("http://alice:{}@exa mple.com/m.wasm", passwords[10])),
        )
        .await,
        Code::InvalidArgument,
    );
    // A refresh that fails serves the cached copy and logs why: without the password.
    let stale_url = url("alice", passwords[11], "/stale.wasm");
    origin.serve("/stale.wasm", wasm_module("userinfo-stale"));
    fetch_ok(&mut client, req_policy(&stale_url, PullPolicy::Always, "ns/p", "1")).await;
    origin.always("/stale.wasm", 503);
    let (stale, _) = fetch_ok(&mut client, req_policy(&stale_url, PullPolicy::Always, "ns/p", "2")).await;
    assert_eq!(stale.outcome(), Outcome::Stale);

    let mut needles: Vec<String> = passwords.iter().map(|p| p.to_string()).collect();
    needles.push("p@ss-enc-7a".into());
    needles.push("redirect-pw-5e1a".into());
    needles.push(base64(format!("alice:{}", passwords[0]).as_bytes()));
    for info in [&info, &info2, &stale] {
        assert_no_secret(&info.source_url, &needles, "ModuleInfo.source_url");
        assert!(
            !info.source_url.contains('@'),
            "source_url without user info: {}",
            info.source_url
        );
    }
    for message in &messages {
        assert_no_secret(message, &needles, "an error message");
    }
    for m in list(&mut client).await {
        for u in &m.urls {
            assert_no_secret(u, &needles, "a List URL");
        }
    }
    assert_no_secret(&daemon.log(), &needles, "the daemon log");
}

// ---------------------------------------------------------------------------------------------------------------
// Cached private modules under load
// ---------------------------------------------------------------------------------------------------------------

/// What one attack is and what it must get.
#[derive(Clone, Copy, Debug)]
enum Attack {
    FetchWithoutSecret,
    FetchWithWrongPassword,
    ResolveWithoutSecret,
    ResolveWithWrongPassword,
    /// The private module's own URL and its sha256, no secret.
    FetchByShaWithoutSecret,
    /// Another repository of the same registry naming the private module's sha256.
    OtherRepositoryBySha,
    /// An http URL naming the private module's sha256 (the origin answers 404).
    HttpUrlBySha,
    /// The admin listener's blob endpoint.
    AdminBlob,
}

const ATTACKS: [Attack; 8] = [
    Attack::FetchWithoutSecret,
    Attack::FetchWithWrongPassword,
    Attack::ResolveWithoutSecret,
    Attack::ResolveWithWrongPassword,
    Attack::FetchByShaWithoutSecret,
    Attack::OtherRepositoryBySha,
    Attack::HttpUrlBySha,
    Attack::AdminBlob,
];

/// While 200 clients fetch public modules, eight attacker tasks ask for a cached private module without proven
/// credentials in every way they can for `ATTACK_WINDOW`: each gets its refusal, never a byte or a path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_private_module_is_never_served_without_proven_credentials_under_load() {
    let registry = Registry::shared_tls_auth();
    let proxy = registry.proxy().await;
    let host = proxy.host();
    let origin = Origin::start().await;
    let ca = registry.ca_file().to_str().unwrap().to_string();
    let (daemon, admin) = start_with_admin(&["--ca-file", &ca, "--retry-backoff", "10ms"]).await;
    let mut client = daemon.client().await;
    let image = registry
        .push(
            "sec/private-load",
            Some("v1"),
            cncf_image(&wasm_module("sec-private-load")),
        )
        .await;
    let private_url = proxy.oci("sec/private-load:v1");
    let good = docker_config_json(&host, USER_A.0, USER_A.1);
    fetch_ok(
        &mut client,
        FetchRequest {
            pull_secret: good.clone(),
            ..req(&private_url)
        },
    )
    .await;
    let public = public_modules(&origin, &daemon, 12).await;
    let load = PublicLoad::start(&daemon, public, 200, 10).await;

    let wrong = docker_config_json(&host, USER_A.0, WRONG_PASSWORD);
    let digest = image.module_digest.clone();
    let other_url = proxy.oci("sec/private-load-other:v1");
    let http_url = origin.url("/not-the-private-module.wasm");
    let violations = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let done = Arc::new([(); 8].map(|_| AtomicU64::new(0)));
    let end = Instant::now() + ATTACK_WINDOW;
    let mut attackers = JoinSet::new();
    for t in 0..8 {
        let mut client = daemon.client().await;
        let (private_url, other_url, http_url, digest) =
            (private_url.clone(), other_url.clone(), http_url.clone(), digest.clone());
        let wrong = wrong.clone();
        let (violations, done) = (violations.clone(), done.clone());
        attackers.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < end && n < MAX_ATTACKS_PER_TASK {
                let attack = ATTACKS[(t + n as usize) % ATTACKS.len()];
                n += 1;
                let with_secret = |url: &str, secret: &[u8]| FetchRequest {
                    pull_secret: secret.to_vec(),
                    ..req(url)
                };
                let (result, expected): (Result<String, Status>, Code) = match attack {
                    Attack::FetchWithoutSecret => (
                        fetch_unchecked(&mut client, req(&private_url))
                            .await
                            .map(|(_, b)| format!("{} bytes", b.len())),
                        Code::Unauthenticated,
                    ),
                    Attack::FetchWithWrongPassword => (
                        fetch_unchecked(&mut client, with_secret(&private_url, &wrong))
                            .await
                            .map(|(_, b)| format!("{} bytes", b.len())),
                        Code::Unauthenticated,
                    ),
                    Attack::ResolveWithoutSecret => (
                        client.resolve(req(&private_url)).await.map(|r| r.into_inner().path),
                        Code::Unauthenticated,
                    ),
                    Attack::ResolveWithWrongPassword => (
                        client
                            .resolve(with_secret(&private_url, &wrong))
                            .await
                            .map(|r| r.into_inner().path),
                        Code::Unauthenticated,
                    ),
                    Attack::FetchByShaWithoutSecret => (
                        fetch_unchecked(&mut client, req_sha(&private_url, &digest))
                            .await
                            .map(|(_, b)| format!("{} bytes", b.len())),
                        Code::Unauthenticated,
                    ),
                    Attack::OtherRepositoryBySha => (
                        fetch_unchecked(&mut client, req_sha(&other_url, &digest))
                            .await
                            .map(|(_, b)| format!("{} bytes", b.len())),
                        Code::Unauthenticated,
                    ),
                    Attack::HttpUrlBySha => (
                        fetch_unchecked(&mut client, req_sha(&http_url, &digest))
                            .await
                            .map(|(_, b)| format!("{} bytes", b.len())),
                        Code::NotFound,
                    ),
                    Attack::AdminBlob => {
                        let response = http_get(admin, &format!("/v1/modules/sha256/{digest}")).await;
                        if response.status != 404 {
                            violations.lock().unwrap().push(format!(
                                "{attack:?}: HTTP {} with {} bytes",
                                response.status,
                                response.body.len()
                            ));
                        }
                        done[7].fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                let index = ATTACKS
                    .iter()
                    .position(|a| std::mem::discriminant(a) == std::mem::discriminant(&attack));
                done[index.unwrap()].fetch_add(1, Ordering::Relaxed);
                match result {
                    Err(status) if status.code() == expected => {}
                    Err(status) => violations.lock().unwrap().push(format!(
                        "{attack:?}: {:?} {} (expected {expected:?})",
                        status.code(),
                        status.message()
                    )),
                    Ok(what) => violations.lock().unwrap().push(format!("{attack:?}: served {what}")),
                }
            }
        });
    }
    while let Some(joined) = attackers.join_next().await {
        joined.expect("attacker task");
    }
    let served = load.finish().await;

    let violations = violations.lock().unwrap().clone();
    let counts: Vec<String> = ATTACKS
        .iter()
        .zip(done.iter())
        .map(|(a, c)| format!("{a:?} {}", c.load(Ordering::Relaxed)))
        .collect();
    eprintln!("public requests served: {served}; attacks: {}", counts.join(", "));
    assert!(
        violations.is_empty(),
        "{} refusals broken under load, e.g.:\n{}",
        violations.len(),
        violations.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    for (attack, count) in ATTACKS.iter().zip(done.iter()) {
        assert!(count.load(Ordering::Relaxed) > 0, "{attack:?} never ran");
    }
    // The rightful owner still gets it.
    let (info, bytes) = fetch_ok(
        &mut daemon.client().await,
        FetchRequest {
            pull_secret: good,
            ..req(&private_url)
        },
    )
    .await;
    assert!(bytes == image.module);
    assert_eq!(info.outcome(), Outcome::Hit);
}

// ---------------------------------------------------------------------------------------------------------------
// file:// confinement under load
// ---------------------------------------------------------------------------------------------------------------

/// `root/` (the file root) with `inside.wasm`, a symlink `link.wasm` to `outside/secret.wasm`, a symlinked
/// directory `linkdir` to `outside/`; `outside/secret.wasm`; and `rootx/secret.wasm`, a sibling whose name starts
/// with the root's.
struct FileTree {
    _dir: tempfile::TempDir,
    root: PathBuf,
    inside: Vec<u8>,
    secret: Vec<u8>,
}

fn file_tree() -> FileTree {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let root = base.join("root");
    let outside = base.join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(base.join("rootx")).unwrap();
    let inside = wasm_module(&format!("file-inside-{}", base.display()));
    let secret = wasm_module(&format!("file-secret-{}", base.display()));
    std::fs::write(root.join("inside.wasm"), &inside).unwrap();
    std::fs::write(outside.join("secret.wasm"), &secret).unwrap();
    std::fs::write(base.join("rootx/secret.wasm"), &secret).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.wasm"), root.join("link.wasm")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("linkdir")).unwrap();
    std::os::unix::fs::symlink("../outside/secret.wasm", root.join("rel-link.wasm")).unwrap();
    FileTree {
        _dir: dir,
        root,
        inside,
        secret,
    }
}

/// While 200 clients fetch public modules, attackers ask for files outside the root through `..` (plain,
/// percent-encoded, with an encoded slash), symlinked files and directories, and a sibling directory whose name
/// starts with the root's: PERMISSION_DENIED each time, and the outside module is never cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_escapes_are_refused_under_load() {
    let tree = file_tree();
    let root = tree.root.to_str().unwrap().to_string();
    let origin = Origin::start().await;
    let daemon = Daemon::start(&["--file-root", &root, "--retry-backoff", "10ms"]).await;
    let public = public_modules(&origin, &daemon, 12).await;
    let load = PublicLoad::start(&daemon, public, 200, 10).await;
    let escapes: Vec<String> = vec![
        format!("file://{root}/../outside/secret.wasm"),
        format!("file://{root}/%2e%2e/outside/secret.wasm"),
        format!("file://{root}/..%2foutside/secret.wasm"),
        format!("file://{root}/link.wasm"),
        format!("file://{root}/rel-link.wasm"),
        format!("file://{root}/linkdir/secret.wasm"),
        format!("file://{root}x/secret.wasm"),
        format!("file://localhost{root}/../outside/secret.wasm"),
    ];
    let secret_hex = sha256_hex(&tree.secret);
    let inside_url = format!("file://{root}/inside.wasm");

    let end = Instant::now() + ATTACK_WINDOW;
    let mut attackers = JoinSet::new();
    for t in 0..8 {
        let mut client = daemon.client().await;
        let (escapes, inside_url, inside) = (escapes.clone(), inside_url.clone(), tree.inside.clone());
        attackers.spawn(async move {
            let mut violations = Vec::new();
            let mut n = 0u64;
            while Instant::now() < end && n < MAX_ATTACKS_PER_TASK {
                // Always with a new version: every request reads the file system again.
                let version = format!("{t}-{n}");
                n += 1;
                for url in &escapes {
                    match fetch_unchecked(&mut client, req_policy(url, PullPolicy::Always, "attacker", &version)).await
                    {
                        Err(status) if status.code() == Code::PermissionDenied => {}
                        // An encoded "/" that would make a ".." segment is refused earlier, as a malformed URL.
                        Err(status) if url.contains("%2f") && status.code() == Code::InvalidArgument => {}
                        Err(status) => violations.push(format!("{url}: {:?} {}", status.code(), status.message())),
                        Ok((info, bytes)) => {
                            violations.push(format!("{url}: served {} bytes ({:?})", bytes.len(), info.outcome()))
                        }
                    }
                }
                match fetch_unchecked(&mut client, req(&inside_url)).await {
                    Ok((_, bytes)) if bytes == inside => {}
                    Ok(_) => violations.push(format!("{inside_url}: wrong bytes")),
                    Err(s) => violations.push(format!("{inside_url}: {:?} {}", s.code(), s.message())),
                }
            }
            (n, violations)
        });
    }
    let mut rounds = 0;
    let mut violations = Vec::new();
    while let Some(joined) = attackers.join_next().await {
        let (n, v) = joined.expect("attacker task");
        rounds += n;
        violations.extend(v);
    }
    let served = load.finish().await;

    eprintln!(
        "public requests served: {served}; escape rounds: {rounds} x {} URLs",
        escapes.len()
    );
    assert!(
        violations.is_empty(),
        "{} escapes not refused, e.g.:\n{}",
        violations.len(),
        violations.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(rounds > 0);
    let mut client = daemon.client().await;
    assert!(
        list(&mut client).await.iter().all(|m| m.sha256 != secret_hex),
        "the outside module was cached"
    );
    assert!(
        !daemon.blob_path(&secret_hex).exists(),
        "the outside module is on disk in the cache"
    );
}

/// A planted directory symlink swapped in and out while requests come in: `root/dir` is, alternately, a real
/// directory holding `m.wasm` and a symlink to `outside/` (renameat2 RENAME_EXCHANGE, atomic). Whatever moment
/// the daemon looks, it must not serve, or cache, `outside/dir/m.wasm`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_symlink_swapped_during_requests_never_escapes_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let root = base.join("root");
    std::fs::create_dir_all(root.join("dir")).unwrap();
    std::fs::create_dir_all(base.join("outside/dir")).unwrap();
    let inside = wasm_module(&format!("swap-inside-{}", base.display()));
    let secret = wasm_module(&format!("swap-secret-{}", base.display()));
    std::fs::write(root.join("dir/m.wasm"), &inside).unwrap();
    std::fs::write(base.join("outside/dir/m.wasm"), &secret).unwrap();
    std::os::unix::fs::symlink(base.join("outside/dir"), root.join("alt")).unwrap();
    let root_arg = root.to_str().unwrap().to_string();
    let origin = Origin::start().await;
    let daemon = Daemon::start(&["--file-root", &root_arg, "--retry-backoff", "10ms"]).await;
    let public = public_modules(&origin, &daemon, 8).await;
    let load = PublicLoad::start(&daemon, public, 100, 5).await;

    let swapping = Arc::new(AtomicBool::new(true));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (swapping, swaps) = (swapping.clone(), swaps.clone());
        let a = std::ffi::CString::new(root.join("dir").as_os_str().as_encoded_bytes()).unwrap();
        let b = std::ffi::CString::new(root.join("alt").as_os_str().as_encoded_bytes()).unwrap();
        std::thread::spawn(move || {
            let deadline = Instant::now() + ATTACK_WINDOW * 2;
            while swapping.load(Ordering::Relaxed) && Instant::now() < deadline {
                // SAFETY: two valid NUL-terminated paths; renameat2 only reads them.
                let rc = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                assert_eq!(rc, 0, "renameat2(RENAME_EXCHANGE): {}", std::io::Error::last_os_error());
                swaps.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };

    let url = format!("file://{root_arg}/dir/m.wasm");
    let secret_hex = sha256_hex(&secret);
    let end = Instant::now() + ATTACK_WINDOW;
    let mut requesters = JoinSet::new();
    for t in 0..8 {
        let mut client = daemon.client().await;
        let (url, inside, secret) = (url.clone(), inside.clone(), secret.clone());
        requesters.spawn(async move {
            let (mut served, mut refused, mut n) = (0u64, 0u64, 0u64);
            let mut violations = Vec::new();
            while Instant::now() < end && n < MAX_ATTACKS_PER_TASK {
                let version = format!("{t}-{n}");
                n += 1;
                match fetch_unchecked(&mut client, req_policy(&url, PullPolicy::Always, "swap", &version)).await {
                    Ok((_, bytes)) if bytes == inside => served += 1,
                    Ok((info, bytes)) if bytes == secret => {
                        violations.push(format!("served the outside module ({:?})", info.outcome()))
                    }
                    Ok((info, bytes)) => {
                        violations.push(format!("served {} unknown bytes ({:?})", bytes.len(), info.outcome()))
                    }
                    Err(s) if s.code() == Code::PermissionDenied => refused += 1,
                    Err(s) => violations.push(format!("{:?} {}", s.code(), s.message())),
                }
            }
            (served, refused, violations)
        });
    }
    let (mut served, mut refused, mut violations) = (0, 0, Vec::new());
    while let Some(joined) = requesters.join_next().await {
        let (s, r, v) = joined.expect("requester task");
        served += s;
        refused += r;
        violations.extend(v);
    }
    swapping.store(false, Ordering::SeqCst);
    swapper.join().expect("swapper thread");
    let public_served = load.finish().await;

    let listed_secret = list(&mut daemon.client().await)
        .await
        .iter()
        .any(|m| m.sha256 == secret_hex);
    eprintln!(
        "{} swaps; requests: {served} served the inside module, {refused} refused, {} wrong; secret cached: \
         {listed_secret}; public requests served: {public_served}",
        swaps.load(Ordering::Relaxed),
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "{} requests escaped the root or failed oddly, e.g.:\n{}",
        violations.len(),
        violations.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(!listed_secret, "the outside module was cached");
    assert!(
        !daemon.blob_path(&secret_hex).exists(),
        "the outside module is on disk in the cache"
    );
    assert!(served + refused > 0);
}
