//! The processes the bench drives: the daemon, the registry and nginx. Each is a [`Proc`] that is stopped
//! when it is dropped and killed by the kernel when the bench dies (PR_SET_PDEATHSIG), so no run leaves a
//! server behind on the machine.

use std::fs::OpenOptions;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The daemon under test, built in release by `cargo bench`.
pub const WASMCACHE: &str = env!("CARGO_BIN_EXE_wasmcache");
/// Where Debian's package `docker-registry` installs the registry.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A child process with its output appended to a log file.
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Spawns `command` with stdout and stderr appended to `log`. Call it from the main thread only: the
    /// death signal follows the thread that forked, and the main thread lives as long as the bench.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Proc {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log file");
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2), which is
        // async-signal-safe and touches no memory shared with the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("process is running").id()
    }

    /// Panics with the log when the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("try_wait")) {
            panic!("{} exited with {status}; log:\n{}", self.name, self.log_tail());
        }
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        let start = (start..=log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        log[start..].to_string()
    }

    /// SIGTERM, then waits (bounded) for the exit; SIGKILL after the deadline.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) with plain integers; `pid` is our child and has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        eprintln!("bench: {} did not stop within {STOP_TIMEOUT:?}; killing it", self.name);
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind for a free port")
        .local_addr()
        .expect("local addr")
        .port()
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One blocking HTTP/1.0 GET on a fresh connection; the status code.
pub fn http_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    tcp.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(tcp, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head)?;
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP status line"))
}

/// A gRPC channel over a Unix socket, with flow-control windows large enough that a 4 MiB module is
/// never held back by the client (as an Envoy agent with a generous window would be configured).
pub async fn unix_channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    unix_channel_with_window(path, crate::load::GENEROUS_WINDOW).await
}

/// A gRPC channel over a Unix socket whose streams advertise `stream_window` bytes of flow-control window
/// (the connection twice that).
pub async fn unix_channel_with_window(path: &Path, stream_window: u32) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_owned();
    Endpoint::from_static("http://wasmcache.bench")
        .initial_stream_window_size(stream_window)
        .initial_connection_window_size(stream_window.saturating_mul(2))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

/// A running `wasmcache serve` on its own socket and admin port.
pub struct Daemon {
    pub proc: Proc,
    pub socket: PathBuf,
    pub admin: SocketAddr,
}

impl Daemon {
    /// Spawns `wasmcache serve` with its cache in `cache_dir` and its socket and log in `dir`, plus `extra`
    /// flags; does not wait for it. The environment is emptied so no `WASMCACHE_*` variable of the caller
    /// changes what is measured.
    pub fn spawn(dir: &Path, cache_dir: &Path, extra: &[String]) -> Daemon {
        Daemon::spawn_env(dir, cache_dir, extra, &[])
    }

    /// `spawn` with these environment variables.
    pub fn spawn_env(dir: &Path, cache_dir: &Path, extra: &[String], env: &[(&str, &str)]) -> Daemon {
        let socket = dir.join("wasmcache.sock");
        let admin = loopback(free_port());
        let mut command = Command::new(WASMCACHE);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("serve")
            .arg("--cache-dir")
            .arg(cache_dir)
            .arg("--socket")
            .arg(&socket)
            .arg("--admin-listen")
            .arg(admin.to_string())
            .args(extra)
            .envs(env.iter().copied());
        Daemon {
            proc: Proc::spawn("wasmcache serve", command, &dir.join("daemon.log")),
            socket,
            admin,
        }
    }

    /// `spawn`, then waits until the socket answers a health check.
    pub async fn start(dir: &Path, cache_dir: &Path, extra: &[String]) -> Daemon {
        Daemon::start_env(dir, cache_dir, extra, &[]).await
    }

    /// `start` with these environment variables.
    pub async fn start_env(dir: &Path, cache_dir: &Path, extra: &[String], env: &[(&str, &str)]) -> Daemon {
        let mut daemon = Daemon::spawn_env(dir, cache_dir, extra, env);
        daemon.wait_serving().await;
        daemon
    }

    async fn wait_serving(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            self.proc.assert_running();
            if let Ok(channel) = unix_channel(&self.socket).await {
                let check = HealthClient::new(channel)
                    .check(HealthCheckRequest { service: String::new() })
                    .await;
                if check.is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "daemon not serving after {STARTUP_TIMEOUT:?}; log:\n{}",
                self.proc.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn channel(&self) -> Channel {
        unix_channel(&self.socket)
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.socket.display()))
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// nginx serving one directory over plain HTTP on a loopback port, with the usual static-file settings
/// (sendfile, keep-alive, no access log) and one worker per core, as Debian configures it.
pub struct Nginx {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Nginx {
    /// Starts nginx with its prefix (config, logs, temp dirs) in `dir`, serving `root`; waits until `probe`
    /// (a path under the root) answers 200.
    pub fn start(dir: &Path, root: &Path, probe: &str) -> Nginx {
        let addr = loopback(free_port());
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).expect("nginx temp dir");
        let config = format!(
            "user root;\n\
             worker_processes auto;\n\
             pid {dir}/nginx.pid;\n\
             error_log {dir}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
               access_log off;\n\
               sendfile on;\n\
               tcp_nopush on;\n\
               tcp_nodelay on;\n\
               keepalive_requests 1000000;\n\
               keepalive_timeout 120s;\n\
               default_type application/wasm;\n\
               client_body_temp_path {tmp}/body;\n\
               proxy_temp_path {tmp}/proxy;\n\
               fastcgi_temp_path {tmp}/fastcgi;\n\
               uwsgi_temp_path {tmp}/uwsgi;\n\
               scgi_temp_path {tmp}/scgi;\n\
               server {{\n\
                 listen {addr};\n\
                 root {root};\n\
               }}\n\
             }}\n",
            dir = dir.display(),
            tmp = tmp.display(),
            root = root.display(),
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config).expect("write nginx.conf");
        let mut command = Command::new(nginx_bin());
        command
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .arg("-g")
            .arg("daemon off;");
        let mut nginx = Nginx {
            proc: Proc::spawn("nginx", command, &dir.join("nginx.out")),
            addr,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            nginx.proc.assert_running();
            if let Ok(200) = http_status(addr, probe) {
                return nginx;
            }
            assert!(Instant::now() < deadline, "nginx not answering on {addr}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The master and its workers.
    pub fn pids(&self) -> Vec<u32> {
        let master = self.proc.pid();
        let mut pids = vec![master];
        pids.extend(children_of(master));
        pids
    }
}

pub fn nginx_bin() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("nginx is missing: bench/run installs Debian's nginx")
}

/// Pids whose parent is `pid` (from /proc/PID/task/*/children).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(list.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

/// A `kB` field of /proc/PID/status (`VmHWM`, `VmRSS`), in bytes.
pub fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// CPU time (user + system) a process has used so far, in seconds, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The fields after the command name (which is in parentheses and may hold spaces): utime is the 14th
    // field of the line, stime the 15th, both in clock ticks.
    let rest = &stat[stat.rfind(')').expect("stat command") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf(3) with a constant name reads a process-wide value and has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / per_second as f64
}

/// Resets the peak RSS (`VmHWM`) of `pid` to its current RSS (proc(5), clear_refs value 5).
pub fn reset_peak_rss(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("write /proc/PID/clear_refs");
}

/// Runs `command` to completion and returns its stdout and stderr together; panics when it fails.
pub fn output(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command:?} failed with {}:\n{text}", out.status);
    text
}
