//! The daemon under systemd: a listening socket passed by socket activation (`LISTEN_FDS`, driven by systemd's own
//! `systemd-socket-activate`), `sd_notify` messages on `NOTIFY_SOCKET` (`READY=1`, `STOPPING=1`, `WATCHDOG=1` at half
//! of `WATCHDOG_USEC`), and the standard gRPC health service (`grpc.health.v1.Health`).
//!
//! No systemd as PID 1 is needed: the tests play systemd's part with a datagram socket of their own and with
//! `systemd-socket-activate` (Debian package `systemd`); when that tool is missing the test fails and says how to
//! install it.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::*;
use tempfile::TempDir;
use tokio::net::UnixDatagram;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const WAIT: Duration = Duration::from_secs(10);

/// The environment systemd (or a parent under systemd) might have left to the test process: never inherited.
const SYSTEMD_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "WASMCACHE_SOCKET",
];

/// A daemon process started by the test itself (so that its environment and file descriptors are the test's to
/// choose), with its temp dir: `cache/`, `wasmcache.sock`, `daemon.log`. Dropping it kills the process.
struct Proc {
    dir: TempDir,
    child: Option<Child>,
}

impl Proc {
    fn new_dir() -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix("wasmcache-systemd")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir(dir.path().join("cache")).expect("cache dir");
        dir
    }

    fn log_path(dir: &Path) -> PathBuf {
        dir.join("daemon.log")
    }

    /// `wasmcache serve --cache-dir <dir>/cache --socket <socket>` with a clean environment for systemd variables.
    fn serve_command(dir: &Path, socket: &Path) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wasmcache"));
        command
            .arg("serve")
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .arg("--socket")
            .arg(socket)
            // Tests run many daemons at once: none takes the default admin port (as in `support::Daemon`).
            .args(["--admin-listen", "off"]);
        for var in SYSTEMD_ENV {
            command.env_remove(var);
        }
        command.env("RUST_LOG", "info,wasmcache=debug");
        command
    }

    fn spawn(dir: TempDir, mut command: Command) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(Proc::log_path(dir.path()))
            .expect("open daemon log");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the daemon");
        Proc {
            dir,
            child: Some(child),
        }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn socket(&self) -> PathBuf {
        self.dir().join("wasmcache.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(Proc::log_path(self.dir())).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Polls `socket` with a List call until it answers; panics with the log if the process exits or takes too long.
    async fn wait_serving(&mut self, socket: &Path) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.as_mut().expect("running").try_wait().expect("try_wait") {
                panic!("daemon exited with {status} before serving; log:\n{}", self.log());
            }
            if list_on(socket).await.is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "daemon did not serve on {} within {WAIT:?}; log:\n{}",
                    socket.display(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits");
        // SAFETY: kill(2) with our own unreaped child's pid and a signal constant.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    async fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("daemon did not exit after SIGTERM; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- daemon log ----\n{}", self.log());
        }
    }
}

/// One List call on a fresh connection to `socket`.
async fn list_on(socket: &Path) -> Result<Vec<CachedModule>, String> {
    let channel = unix_channel(socket).await.map_err(|e| e.to_string())?;
    ModuleCacheClient::new(channel)
        .list(ListRequest {})
        .await
        .map(|r| r.into_inner().modules)
        .map_err(|s| s.to_string())
}

// ---------------------------------------------------------------------------------------------------------------
// Socket activation
// ---------------------------------------------------------------------------------------------------------------

/// The path of `systemd-socket-activate`; fails the test with an install hint when it is missing.
fn socket_activate_tool() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/bin", "/bin", "/usr/lib/systemd"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("systemd-socket-activate"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "systemd-socket-activate is missing: the socket-activation tests drive systemd's own tool; \
                 install the Debian package systemd (apt-get install systemd)"
            )
        })
}

/// `systemd-socket-activate -l <dir>/passed.sock -- wasmcache serve ... --socket <dir>/flag.sock`: the daemon is
/// given a listening socket and is told, by flag, a different path.
async fn socket_activated() -> Proc {
    let tool = socket_activate_tool();
    let dir = Proc::new_dir();
    let passed = dir.path().join("passed.sock");
    let flag = dir.path().join("flag.sock");
    let serve = Proc::serve_command(dir.path(), &flag);
    let mut command = Command::new(tool);
    for var in SYSTEMD_ENV {
        command.env_remove(var);
    }
    command
        .arg("-l")
        .arg(&passed)
        .arg("-E")
        .arg("RUST_LOG=info,wasmcache=debug")
        .arg("--")
        .arg(serve.get_program())
        .args(serve.get_args());
    let mut proc = Proc::spawn(dir, command);
    proc.wait_serving(&passed).await;
    proc
}

#[tokio::test]
async fn socket_activated_daemon_serves_on_the_passed_socket() {
    let proc = socket_activated().await;

    let modules = list_on(&proc.dir().join("passed.sock")).await;

    assert_eq!(modules, Ok(Vec::new()), "log:\n{}", proc.log());
}

#[tokio::test]
async fn socket_activated_daemon_does_not_create_its_socket_flag_path() {
    let proc = socket_activated().await;

    let flag = proc.dir().join("flag.sock");

    assert!(
        !flag.exists(),
        "the daemon used the passed socket and did not bind --socket {}",
        flag.display()
    );
}

#[tokio::test]
async fn socket_activated_daemon_fetches_on_the_passed_socket() {
    let origin = Origin::start().await;
    let module = wasm_module("socket-activated");
    origin.serve("/m.wasm", module.clone());
    let proc = socket_activated().await;
    let channel = unix_channel(&proc.dir().join("passed.sock")).await.expect("connect");
    let mut client = ModuleCacheClient::new(channel);

    let (info, bytes) = fetch_ok(&mut client, req(&origin.url("/m.wasm"))).await;

    assert_eq!(bytes, module);
    assert_eq!(info.outcome, Outcome::Fetched as i32);
    assert_eq!(origin.hits("/m.wasm"), 1);
}

/// The passed socket belongs to systemd, which keeps listening on it to start the daemon again.
#[tokio::test]
async fn socket_activated_daemon_leaves_the_passed_socket_file_at_exit() {
    let mut proc = socket_activated().await;

    proc.sigterm();
    let status = proc.wait_exit().await;

    assert!(status.success(), "exit status {status}; log:\n{}", proc.log());
    assert!(
        proc.dir().join("passed.sock").exists(),
        "the passed socket file is still there"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// sd_notify
// ---------------------------------------------------------------------------------------------------------------

/// A datagram socket playing systemd's notify socket, bound at `<dir>/notify.sock`.
fn notify_socket(dir: &Path) -> (UnixDatagram, PathBuf) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    (socket, path)
}

/// The next datagram (as text) within `within`, or None.
async fn next_message(socket: &UnixDatagram, within: Duration) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(within, socket.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Ok(Err(e)) => panic!("recv on the notify socket: {e}"),
        Err(_) => None,
    }
}

/// Reads datagrams until one has the line `want`; returns every message read (the last one has it). Panics after
/// `WAIT`.
async fn wait_message(socket: &UnixDatagram, want: &str) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_message(socket, left).await {
            Some(message) => {
                let found = message.lines().any(|l| l == want);
                seen.push(message);
                if found {
                    return seen;
                }
            }
            None => panic!("no {want} on the notify socket within {WAIT:?}; got {seen:?}"),
        }
    }
}

/// A daemon started with `NOTIFY_SOCKET` (and `extra_env`), and the socket that receives its messages.
fn notified_daemon(extra_env: &[(&str, &str)]) -> (Proc, UnixDatagram) {
    let dir = Proc::new_dir();
    let (socket, path) = notify_socket(dir.path());
    let mut command = Proc::serve_command(dir.path(), &dir.path().join("wasmcache.sock"));
    command.env("NOTIFY_SOCKET", &path);
    for (k, v) in extra_env {
        command.env(k, v);
    }
    (Proc::spawn(dir, command), socket)
}

#[tokio::test]
async fn notify_socket_receives_ready_once_the_daemon_serves() {
    let (proc, notify) = notified_daemon(&[]);

    wait_message(&notify, "READY=1").await;

    let result = list_on(&proc.socket()).await;
    assert!(
        result.is_ok(),
        "the socket serves as soon as READY=1 is sent: {result:?}"
    );
}

/// Plays systemd stopping the service as soon as it is up: on a thread of its own (so nothing on the test's runtime
/// delays it) waits for READY=1 on `notify`, sends SIGTERM to `pid` at once, then collects messages until STOPPING=1
/// or for `WAIT`. Returns every message received after READY=1.
fn sigterm_on_ready(notify: UnixDatagram, pid: u32) -> std::thread::JoinHandle<Vec<String>> {
    let notify = notify.into_std().expect("std datagram socket");
    notify.set_nonblocking(false).expect("blocking notify socket");
    notify.set_read_timeout(Some(WAIT)).expect("read timeout");
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        let mut recv = || {
            notify
                .recv(&mut buf)
                .ok()
                .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
        };
        loop {
            match recv() {
                Some(message) if message.lines().any(|l| l == "READY=1") => break,
                Some(_) => continue,
                None => panic!("no READY=1 on the notify socket within {WAIT:?}"),
            }
        }
        let pid = libc::pid_t::try_from(pid).expect("pid fits");
        // SAFETY: kill(2) with the test's own unreaped child's pid and a signal constant.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
        let mut after = Vec::new();
        while let Some(message) = recv() {
            let stopping = message.lines().any(|l| l == "STOPPING=1");
            after.push(message);
            if stopping {
                break;
            }
        }
        after
    })
}

/// Joins a `sigterm_on_ready` thread without blocking the test's runtime.
async fn join_notifier(handle: std::thread::JoinHandle<Vec<String>>) -> Vec<String> {
    tokio::task::spawn_blocking(move || handle.join().expect("notifier thread"))
        .await
        .expect("join")
}

/// systemd may stop the service at any moment after READY=1 (`systemctl stop` right after start).
#[tokio::test]
async fn notify_socket_receives_stopping_after_sigterm() {
    let (mut proc, notify) = notified_daemon(&[]);
    let notifier = sigterm_on_ready(notify, proc.pid());

    let status = proc.wait_exit().await;
    let messages = join_notifier(notifier).await;

    assert!(
        messages.iter().any(|m| m.lines().any(|l| l == "STOPPING=1")),
        "STOPPING=1 after SIGTERM; got {messages:?}; exit {status}; log:\n{}",
        proc.log()
    );
}

/// After READY=1 a SIGTERM must already lead to the graceful shutdown, not to the signal's default action.
#[tokio::test]
async fn sigterm_right_after_ready_exits_cleanly_and_removes_the_socket() {
    let (mut proc, notify) = notified_daemon(&[]);
    let notifier = sigterm_on_ready(notify, proc.pid());

    let status = proc.wait_exit().await;
    join_notifier(notifier).await;

    assert!(
        status.success(),
        "a graceful exit, not death by the signal: {status}; log:\n{}",
        proc.log()
    );
    assert!(!proc.socket().exists(), "the daemon removed the socket it created");
}

#[tokio::test]
async fn abstract_notify_socket_receives_ready() {
    use std::os::linux::net::SocketAddrExt as _;
    let name = format!("wasmcache-test-notify-{}-{}", std::process::id(), fastrand::u64(..));
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
    let std_socket = std::os::unix::net::UnixDatagram::bind_addr(&addr).expect("bind abstract notify socket");
    std_socket.set_nonblocking(true).unwrap();
    let notify = UnixDatagram::from_std(std_socket).expect("tokio datagram");
    let dir = Proc::new_dir();
    let mut command = Proc::serve_command(dir.path(), &dir.path().join("wasmcache.sock"));
    command.env("NOTIFY_SOCKET", format!("@{name}"));
    let _proc = Proc::spawn(dir, command);

    wait_message(&notify, "READY=1").await;
}

#[tokio::test]
async fn watchdog_usec_makes_the_daemon_ping_repeatedly() {
    let (_proc, notify) = notified_daemon(&[("WATCHDOG_USEC", "200000")]);
    wait_message(&notify, "READY=1").await;

    let mut pings = 0;
    let start = Instant::now();
    while pings < 3 && start.elapsed() < Duration::from_secs(3) {
        if let Some(message) = next_message(&notify, Duration::from_secs(1)).await {
            pings += message.lines().filter(|l| *l == "WATCHDOG=1").count();
        }
    }

    assert!(
        pings >= 3,
        "at least 3 WATCHDOG=1 within 3 s at a 200 ms watchdog, got {pings}"
    );
}

#[tokio::test]
async fn watchdog_pid_of_the_daemon_itself_still_pings() {
    let dir = Proc::new_dir();
    let (notify, path) = notify_socket(dir.path());
    let serve = Proc::serve_command(dir.path(), &dir.path().join("wasmcache.sock"));
    // `exec` keeps the shell's pid, so $$ is the daemon's pid.
    let mut command = Command::new("sh");
    for var in SYSTEMD_ENV {
        command.env_remove(var);
    }
    command
        .arg("-c")
        .arg(r#"WATCHDOG_PID=$$ exec "$0" "$@""#)
        .arg(serve.get_program())
        .args(serve.get_args())
        .env("RUST_LOG", "info,wasmcache=debug")
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000");
    let _proc = Proc::spawn(dir, command);
    wait_message(&notify, "READY=1").await;

    let messages = wait_message(&notify, "WATCHDOG=1").await;

    assert!(!messages.is_empty());
}

#[tokio::test]
async fn watchdog_pid_of_another_process_means_no_pings() {
    // PID 1 is never the daemon: the watchdog is meant for another process.
    let (_proc, notify) = notified_daemon(&[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")]);
    wait_message(&notify, "READY=1").await;

    let mut messages = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        if let Some(message) = next_message(&notify, Duration::from_millis(200)).await {
            messages.push(message);
        }
    }

    assert!(
        !messages.iter().any(|m| m.lines().any(|l| l == "WATCHDOG=1")),
        "no WATCHDOG=1 for another process's watchdog: {messages:?}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// gRPC health
// ---------------------------------------------------------------------------------------------------------------

async fn health_status(daemon: &Daemon, service: &str) -> Result<i32, tonic::Status> {
    let channel = unix_channel(&daemon.socket()).await.expect("connect");
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map(|r| r.into_inner().status)
}

#[tokio::test]
async fn health_check_of_the_server_is_serving() {
    let daemon = Daemon::start(&[]).await;

    let status = health_status(&daemon, "").await;

    assert_eq!(status.map_err(|s| s.code()), Ok(ServingStatus::Serving as i32));
}

#[tokio::test]
async fn health_check_of_the_module_cache_service_is_serving() {
    let daemon = Daemon::start(&[]).await;

    let status = health_status(&daemon, "wasmcache.v1.ModuleCache").await;

    assert_eq!(status.map_err(|s| s.code()), Ok(ServingStatus::Serving as i32));
}

#[tokio::test]
async fn health_check_of_an_unknown_service_is_not_found() {
    let daemon = Daemon::start(&[]).await;

    let status = health_status(&daemon, "no.such.Service").await;

    assert_eq!(status.map_err(|s| s.code()), Err(tonic::Code::NotFound));
}
