//! The systemd files in `systemd/`: checked with systemd's own tools, which all work offline on copies in a
//! temp dir (no systemd as PID 1 needed), and read directive by directive for the choices they exist for.
//! The tools come with Debian's `systemd` package; when one is missing the test fails and says so.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use wasmcache::config::DEFAULT_SHUTDOWN_GRACE;

/// Where the service expects the binary; the test copies point it at the one cargo built instead.
const INSTALLED_BINARY: &str = "/usr/local/bin/wasmcache";
/// What `%S` and `%t` stand for in a unit of the system manager.
const STATE_ROOT: &str = "/var/lib";
const RUNTIME_ROOT: &str = "/run";

fn systemd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd")
}

/// A unit file as `(section, key, value)` in file order; a repeated key keeps every value.
struct Unit {
    name: &'static str,
    entries: Vec<(String, String, String)>,
}

impl Unit {
    fn load(name: &'static str) -> Unit {
        let path = systemd_dir().join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let mut entries = Vec::new();
        let mut section = String::new();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let mut line = line.trim().to_string();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            while let Some(head) = line.strip_suffix('\\') {
                line = format!("{head} {}", lines.next().unwrap_or("").trim());
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{name}: not key=value: {line}"));
            entries.push((section.clone(), key.trim().to_string(), value.trim().to_string()));
        }
        Unit { name, entries }
    }

    fn values(&self, section: &str, key: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    /// The one value of `key`; a missing or repeated key fails the test.
    fn get(&self, section: &str, key: &str) -> &str {
        match self.values(section, key).as_slice() {
            [one] => one,
            [] => panic!("{}: [{section}] has no {key}=", self.name),
            many => panic!("{}: [{section}] sets {key}= {} times: {many:?}", self.name, many.len()),
        }
    }

    /// `ExecStart=` split into words (the units use no quoting).
    fn exec_start(&self) -> Vec<&str> {
        self.get("Service", "ExecStart").split_whitespace().collect()
    }
}

/// The value that follows `flag` in `args`.
fn flag_value<'a>(args: &[&'a str], flag: &str) -> &'a str {
    let at = args
        .iter()
        .position(|a| *a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    args.get(at + 1)
        .unwrap_or_else(|| panic!("{flag} has no value in {args:?}"))
}

/// Expands the specifiers the units use as the system manager does.
fn expand(value: &str) -> String {
    value.replace("%S", STATE_ROOT).replace("%t", RUNTIME_ROOT)
}

/// A command for one of systemd's tools, failing the test (never skipping it) when the tool is missing.
fn systemd_tool(name: &str) -> Command {
    match Command::new(name).arg("--version").output() {
        Ok(_) => Command::new(name),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("{name} is missing: install Debian's systemd package (apt-get install systemd)")
        }
        Err(e) => panic!("running {name}: {e}"),
    }
}

fn run(mut command: Command) -> Output {
    command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Copies of the service and socket units whose `ExecStart=` runs the binary cargo built, since
/// `systemd-analyze` checks that the command exists and is executable.
fn units_with_built_binary() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let service = std::fs::read_to_string(systemd_dir().join("wasmcache.service")).unwrap();
    let start = format!("ExecStart={INSTALLED_BINARY} ");
    assert!(
        service.contains(&start),
        "wasmcache.service: ExecStart= does not run {INSTALLED_BINARY}"
    );
    let built = env!("CARGO_BIN_EXE_wasmcache");
    assert!(
        !built.contains(char::is_whitespace),
        "the built binary's path has spaces: {built}"
    );
    let service = service.replace(&start, &format!("ExecStart={built} "));
    std::fs::write(dir.path().join("wasmcache.service"), service).unwrap();
    std::fs::copy(
        systemd_dir().join("wasmcache.socket"),
        dir.path().join("wasmcache.socket"),
    )
    .unwrap();
    dir
}

/// An empty root file system with an `/etc`, after `systemd-sysusers` has created the user in it.
fn root_with_sysusers() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let mut sysusers = systemd_tool("systemd-sysusers");
    sysusers.arg(format!("--root={}", root.path().display()));
    sysusers.arg(systemd_dir().join("wasmcache.sysusers"));
    let out = run(sysusers);
    assert!(out.status.success(), "systemd-sysusers failed: {}", text(&out.stderr));
    root
}

/// The numeric id of `name` in a passwd or group file under `root`.
fn id_in(root: &Path, file: &str, name: &str) -> u32 {
    let db = std::fs::read_to_string(root.join("etc").join(file)).unwrap();
    db.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f[0] == name)
        .unwrap_or_else(|| panic!("no {name} in /etc/{file}:\n{db}"))[2]
        .parse()
        .unwrap()
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let dir = units_with_built_binary();
    let mut verify = systemd_tool("systemd-analyze");
    verify.args(["verify", "--man=no"]);
    verify
        .arg(dir.path().join("wasmcache.socket"))
        .arg(dir.path().join("wasmcache.service"));
    let out = run(verify);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{stderr}");
    // An unknown or misspelt directive is only a warning, with exit status 0.
    assert!(stderr.trim().is_empty(), "systemd-analyze verify warned:\n{stderr}");
}

#[test]
fn service_exposure_is_rated_ok_by_systemd_analyze_security() {
    let dir = units_with_built_binary();
    let mut security = systemd_tool("systemd-analyze");
    // The threshold is the exposure level times ten: fail above 2.0 (the unit rates about 1.6, "OK").
    security.args(["security", "--offline=yes", "--threshold=20", "--no-pager"]);
    security.arg(dir.path().join("wasmcache.service"));
    let out = run(security);
    assert!(
        out.status.success(),
        "exposure above 2.0:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn service_reports_readiness_and_feeds_the_watchdog() {
    let unit = Unit::load("wasmcache.service");
    assert_eq!(unit.get("Service", "Type"), "notify");
    assert_eq!(unit.get("Service", "NotifyAccess"), "main");
    assert_eq!(unit.get("Service", "WatchdogSec"), "30s");
    assert_eq!(unit.get("Service", "Restart"), "on-failure");
}

#[test]
fn service_enables_every_hardening_directive() {
    let unit = Unit::load("wasmcache.service");
    let expected = [
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("SystemCallFilter", "@system-service"),
    ];
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(key, value)| unit.values("Service", key) != [*value])
        .map(|(key, value)| format!("{key}={value} (found {:?})", unit.values("Service", key)))
        .collect();
    assert!(
        wrong.is_empty(),
        "hardening directives missing or different: {wrong:#?}"
    );
}

#[test]
fn service_and_socket_use_the_user_that_sysusers_creates() {
    let service = Unit::load("wasmcache.service");
    let socket = Unit::load("wasmcache.socket");
    assert_eq!(service.get("Service", "DynamicUser"), "no");
    let user = service.get("Service", "User");
    let group = service.get("Service", "Group");
    assert_eq!(socket.get("Socket", "SocketUser"), user);
    assert_eq!(socket.get("Socket", "SocketGroup"), group);
    let root = root_with_sysusers();
    let uid = id_in(root.path(), "passwd", user);
    let gid = id_in(root.path(), "group", group);
    assert!(uid > 0 && gid > 0, "{user} is uid {uid}, {group} is gid {gid}");
}

#[test]
fn tmpfiles_creates_the_socket_directory_for_the_group() {
    let socket = Unit::load("wasmcache.socket");
    let listen = PathBuf::from(socket.get("Socket", "ListenStream"));
    let socket_dir = listen.parent().unwrap();
    let root = root_with_sysusers();
    let mut tmpfiles = systemd_tool("systemd-tmpfiles");
    tmpfiles
        .arg(format!("--root={}", root.path().display()))
        .arg("--create");
    tmpfiles.arg(systemd_dir().join("wasmcache.tmpfiles"));
    let out = run(tmpfiles);
    assert!(out.status.success(), "systemd-tmpfiles failed: {}", text(&out.stderr));

    use std::os::unix::fs::MetadataExt;
    let created = root.path().join(socket_dir.strip_prefix("/").unwrap());
    let meta = std::fs::metadata(&created).unwrap_or_else(|e| panic!("{}: {e}", created.display()));
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o7777, 0o750, "mode of {}", socket_dir.display());
    let user = socket.get("Socket", "SocketUser");
    let group = socket.get("Socket", "SocketGroup");
    assert_eq!(meta.uid(), id_in(root.path(), "passwd", user));
    assert_eq!(meta.gid(), id_in(root.path(), "group", group));
}

#[test]
fn service_passes_its_state_and_runtime_directories_to_the_daemon() {
    let unit = Unit::load("wasmcache.service");
    let args = unit.exec_start();
    assert_eq!(args[..2], [INSTALLED_BINARY, "serve"]);
    let state = unit.get("Service", "StateDirectory");
    let runtime = unit.get("Service", "RuntimeDirectory");
    assert_eq!(flag_value(&args, "--cache-dir"), format!("%S/{state}"));
    assert_eq!(flag_value(&args, "--socket"), format!("%t/{runtime}/wasmcache.sock"));
}

#[test]
fn socket_unit_listens_where_the_service_would_bind() {
    let service = Unit::load("wasmcache.service");
    let socket = Unit::load("wasmcache.socket");
    let bound = expand(flag_value(&service.exec_start(), "--socket"));
    assert_eq!(socket.get("Socket", "ListenStream"), bound);
    assert_eq!(socket.get("Socket", "Service"), "wasmcache.service");
    // One daemon for every connection: it expects a listening socket as fd 3.
    assert_eq!(socket.get("Socket", "Accept"), "no");
    assert_eq!(socket.get("Socket", "SocketMode"), "0660");
}

#[test]
fn runtime_directory_outlives_the_daemon_for_the_activated_socket() {
    let service = Unit::load("wasmcache.service");
    let socket = Unit::load("wasmcache.socket");
    let listen = PathBuf::from(socket.get("Socket", "ListenStream"));
    let runtime_dir = Path::new(RUNTIME_ROOT).join(service.get("Service", "RuntimeDirectory"));
    assert_eq!(listen.parent(), Some(runtime_dir.as_path()));
    assert_eq!(service.get("Service", "RuntimeDirectoryPreserve"), "yes");
}

#[test]
fn files_the_daemon_creates_are_readable_by_its_group_only() {
    let service = Unit::load("wasmcache.service");
    assert_eq!(service.get("Service", "UMask"), "0027");
    assert_eq!(service.get("Service", "StateDirectoryMode"), "0750");
    assert_eq!(service.get("Service", "RuntimeDirectoryMode"), "0750");
    assert_eq!(Unit::load("wasmcache.socket").get("Socket", "DirectoryMode"), "0750");
}

#[test]
fn service_flags_are_known_to_serve() {
    let unit = Unit::load("wasmcache.service");
    let out = run({
        let mut c = Command::new(env!("CARGO_BIN_EXE_wasmcache"));
        c.args(["serve", "--help"]);
        c
    });
    assert!(out.status.success(), "wasmcache serve --help: {}", text(&out.stderr));
    let help = text(&out.stdout);
    let known: BTreeSet<&str> = help
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
        .collect();
    let unknown: Vec<&str> = unit
        .exec_start()
        .into_iter()
        .filter_map(|a| a.strip_prefix("--"))
        .filter(|flag| !known.contains(flag))
        .collect();
    assert!(
        unknown.is_empty(),
        "ExecStart= flags that `wasmcache serve` does not have: {unknown:?}"
    );
}

#[test]
fn stop_timeout_outlasts_the_daemons_shutdown() {
    let unit = Unit::load("wasmcache.service");
    let timeout: Duration = humantime::parse_duration(unit.get("Service", "TimeoutStopSec")).unwrap();
    // Draining streams and fetches takes up to one grace period; closing the index needs a few seconds more.
    assert!(
        timeout >= DEFAULT_SHUTDOWN_GRACE + Duration::from_secs(5),
        "TimeoutStopSec={timeout:?} leaves the daemon no time to close its index after a grace period of {DEFAULT_SHUTDOWN_GRACE:?}"
    );
}

#[test]
fn exit_statuses_that_a_restart_cannot_fix_are_not_restarted() {
    let unit = Unit::load("wasmcache.service");
    let prevented: BTreeSet<i32> = unit
        .get("Service", "RestartPreventExitStatus")
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let serve = |extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_wasmcache"));
        c.arg("serve").arg("--cache-dir").arg(dir.path().join("cache"));
        c.arg("--socket").arg(dir.path().join("wasmcache.sock")).args(extra);
        run(c).status.code().expect("serve was killed by a signal")
    };
    let bad_usage = serve(&["--no-such-flag"]);
    let bad_config = serve(&["--fetch-attempts", "0"]);
    let expected = BTreeSet::from([bad_usage, bad_config]);
    assert_eq!(
        prevented, expected,
        "exit statuses of a wrong flag and of bad configuration"
    );
}
