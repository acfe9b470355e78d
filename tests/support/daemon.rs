//! The real daemon: `wasmcache serve` on a temp dir, its socket, signals, logs; network namespaces.

use super::*;

/// A running `wasmcache serve` with its own temp dir: `cache/` (the cache dir), `wasmcache.sock` and `daemon.log`
/// (stderr of every run, appended). Dropping it kills the process; a panicking test prints the log.
pub struct Daemon {
    dir: TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

impl Daemon {
    /// Starts the daemon with `args` after `serve --cache-dir .. --socket ..` and waits until it serves gRPC.
    pub async fn start(args: &[&str]) -> Daemon {
        Daemon::start_prepared(args, |_| {}).await
    }

    /// `start`, after `prepare` has been given the (empty, existing) cache dir to put files in.
    pub async fn start_prepared(args: &[&str], prepare: impl FnOnce(&Path)) -> Daemon {
        let mut daemon = Daemon::new(args);
        prepare(&daemon.cache_dir());
        let child = daemon.spawn();
        daemon.child = Some(child);
        daemon.wait_ready().await;
        daemon
    }

    /// Starts an origin and a daemon that share a network namespace of their own, with only a loopback
    /// interface: a test that checks that the daemon refuses a non-loopback address (such as the metadata
    /// endpoint 169.254.169.254) then cannot send a single packet off this machine even if the daemon has a bug.
    pub async fn start_isolated(args: &[&str]) -> (Daemon, Origin) {
        let mut daemon = Daemon::new(args);
        let command = daemon.command();
        let (listener, child) = std::thread::spawn(move || {
            enter_new_netns_with_loopback();
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind origin in the new netns");
            listener.set_nonblocking(true).expect("nonblocking origin listener");
            let child = spawn_command(command);
            (listener, child)
        })
        .join()
        .expect("netns thread panicked");
        daemon.child = Some(child);
        let origin = Origin::from_std_listener(listener, None);
        daemon.wait_ready().await;
        (daemon, origin)
    }

    fn new(args: &[&str]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("wasmcache-test")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir(dir.path().join("cache")).expect("create cache dir");
        Daemon {
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        }
    }

    fn command(&self) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open daemon log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_wasmcache"));
        command
            .arg("serve")
            .arg("--cache-dir")
            .arg(self.cache_dir())
            .arg("--socket")
            .arg(self.socket())
            // Many daemons run at once: none takes the default admin port unless a test asks for it.
            .args(if self.args.iter().any(|a| a == "--admin-listen") {
                &[][..]
            } else {
                &["--admin-listen", "off"][..]
            })
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,wasmcache=debug".into()),
            )
            .env_remove("WASMCACHE_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        command
    }

    fn spawn(&self) -> Child {
        spawn_command(self.command())
    }

    /// Polls until the socket answers a List call; panics (with the log) if the daemon exits or takes too long.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().expect("daemon child").try_wait().expect("try_wait") {
                panic!("daemon exited during startup with {status}; log:\n{}", self.log());
            }
            if self.socket().exists() {
                if let Ok(channel) = unix_channel(&self.socket()).await {
                    if ModuleCacheClient::new(channel).list(ListRequest {}).await.is_ok() {
                        return;
                    }
                }
            }
            if Instant::now() > deadline {
                panic!("daemon not ready after {STARTUP_TIMEOUT:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("wasmcache.sock")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `<cache-dir>/blobs/sha256/<hex>`.
    pub fn blob_path(&self, hex: &str) -> PathBuf {
        self.cache_dir().join("blobs").join("sha256").join(hex)
    }

    /// Every regular file under `<cache-dir>/blobs/` (none when the directory does not exist).
    pub fn blob_files(&self) -> Vec<PathBuf> {
        files_under(&self.cache_dir().join("blobs"))
    }

    /// Every file under `<cache-dir>/ingest/` (none when the directory does not exist).
    pub fn ingest_files(&self) -> Vec<PathBuf> {
        files_under(&self.cache_dir().join("ingest"))
    }

    /// A new client on a new connection to the daemon's socket.
    pub async fn client(&self) -> Client {
        let channel = unix_channel(&self.socket())
            .await
            .expect("connect to the daemon socket");
        ModuleCacheClient::new(channel)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon is running").id()
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit.
    pub async fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit().await
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) without waiting.
    pub fn signal(&self, signal: libc::c_int) {
        send_signal(self.pid(), signal);
    }

    /// Waits (bounded) for the process to exit after a signal sent with `signal`.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon is running");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("daemon did not exit within {STOP_TIMEOUT:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits up to `limit` for the process to exit after a signal: its status, or `None` when it was still
    /// running (it is then killed, so a test that expected an exit can report the failure and go on).
    pub async fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take().expect("daemon is running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM, wait, then start again on the same cache dir and socket path with the same arguments.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Starts the daemon again after `stop` or `kill`.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "daemon is still running");
        self.child = Some(self.spawn());
        self.wait_ready().await;
    }

    /// SIGKILL, as a crash would, and reap the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- daemon log ({}) ----\n{}", self.log_path().display(), self.log());
        }
    }
}

fn spawn_command(mut command: Command) -> Child {
    command.spawn().expect("spawn the wasmcache binary")
}

fn send_signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: kill(2) takes plain integers; `pid` is our own child, which has not been reaped yet.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
}

/// Moves the calling thread (only) into a new network namespace and brings its loopback interface up. A process
/// spawned from this thread inherits the namespace, and so does a socket created on it.
pub fn enter_new_netns_with_loopback() {
    // SAFETY: unshare(2) with a flag constant; it affects only the calling thread, which we own.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) (needs root): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: socket(2) with constant arguments; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: ifreq is a plain C struct for which all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `ifr` is a valid, NUL-terminated ifreq that outlives both ioctl calls; `fd` is open. Reading and
    // writing `ifru_flags` is what SIOCGIFFLAGS/SIOCSIFFLAGS define.
    unsafe {
        assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr), 0, "SIOCGIFFLAGS lo");
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr), 0, "SIOCSIFFLAGS lo");
        libc::close(fd);
    }
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A tonic channel over a Unix socket, built here rather than with the crate's own helper so that a bug in the
/// client code cannot hide a server behaviour.
pub async fn unix_channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_owned();
    Endpoint::from_static("http://wasmcache.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}
