//! file:// URLs, confined to the --file-root directories.

use crate::support;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::*;
use tempfile::TempDir;
use tonic::Code;

/// `<tmp>/root` (the file root, holding `m.wasm`) and `<tmp>/outside` (holding `secret.wasm`, a valid module that
/// must never be served).
struct Tree {
    _tmp: TempDir,
    root: PathBuf,
    outside: PathBuf,
    module: Vec<u8>,
}

fn tree() -> Tree {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let module = wasm_module("file-root");
    std::fs::write(root.join("m.wasm"), &module).unwrap();
    std::fs::write(outside.join("secret.wasm"), wasm_module("secret")).unwrap();
    Tree {
        _tmp: tmp,
        root,
        outside,
        module,
    }
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

async fn daemon_with_root(root: &Path) -> Daemon {
    Daemon::start(&["--file-root", root.to_str().unwrap()]).await
}

#[tokio::test]
async fn file_in_root_is_served() {
    let tree = tree();
    let daemon = daemon_with_root(&tree.root).await;
    let mut client = daemon.client().await;

    let url = file_url(&tree.root.join("m.wasm"));
    let (info, bytes) = fetch_ok(&mut client, req(&url)).await;
    assert_eq!(info.outcome(), Outcome::Fetched);
    assert_eq!(bytes, tree.module);
    assert_eq!(info.sha256, sha256_hex(&tree.module));
    assert!(info.manifest_digest.is_empty());
}

#[tokio::test]
async fn file_in_root_is_hit_the_second_time() {
    let tree = tree();
    let daemon = daemon_with_root(&tree.root).await;
    let mut client = daemon.client().await;
    let url = file_url(&tree.root.join("m.wasm"));
    fetch_ok(&mut client, req(&url)).await;

    let (info, bytes) = fetch_ok(&mut client, req(&url)).await;
    assert_eq!(info.outcome(), Outcome::Hit);
    assert_eq!(bytes, tree.module);
}

#[tokio::test]
async fn file_in_second_root_is_served() {
    let tree = tree();
    let other = tempfile::tempdir().unwrap();
    let module = wasm_module("second-root");
    std::fs::write(other.path().join("x.wasm"), &module).unwrap();
    let daemon = Daemon::start(&[
        "--file-root",
        tree.root.to_str().unwrap(),
        "--file-root",
        other.path().to_str().unwrap(),
    ])
    .await;
    let mut client = daemon.client().await;

    let (_, bytes) = fetch_ok(&mut client, req(&file_url(&other.path().join("x.wasm")))).await;
    assert_eq!(bytes, module);
}

#[tokio::test]
async fn file_url_without_file_root_is_permission_denied() {
    let tree = tree();
    let daemon = Daemon::start(&[]).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&file_url(&tree.root.join("m.wasm")))).await;
    assert_code(&status, Code::PermissionDenied);
}

#[tokio::test]
async fn file_outside_root_is_permission_denied() {
    let tree = tree();
    let daemon = daemon_with_root(&tree.root).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&file_url(&tree.outside.join("secret.wasm")))).await;
    assert_code(&status, Code::PermissionDenied);
}

#[tokio::test]
async fn dot_dot_traversal_out_of_root_is_permission_denied() {
    let tree = tree();
    let daemon = daemon_with_root(&tree.root).await;
    let mut client = daemon.client().await;

    let url = format!("{}/../outside/secret.wasm", file_url(&tree.root));
    let status = fetch_err(&mut client, req(&url)).await;
    assert_code(&status, Code::PermissionDenied);
}

#[tokio::test]
async fn percent_encoded_dot_dot_traversal_is_permission_denied() {
    let tree = tree();
    let daemon = daemon_with_root(&tree.root).await;
    let mut client = daemon.client().await;

    let url = format!("{}/%2e%2e/outside/secret.wasm", file_url(&tree.root));
    let status = fetch_err(&mut client, req(&url)).await;
    assert_code(&status, Code::PermissionDenied);
}

/// A sibling directory whose name starts with the root's name is not inside the root.
#[tokio::test]
async fn sibling_with_root_name_prefix_is_permission_denied() {
    let tree = tree();
    let evil = tree.root.with_file_name("root-evil");
    std::fs::create_dir(&evil).unwrap();
    std::fs::write(evil.join("m.wasm"), wasm_module("evil")).unwrap();
    let daemon = daemon_with_root(&tree.root).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&file_url(&evil.join("m.wasm")))).await;
    assert_code(&status, Code::PermissionDenied);
}

#[tokio::test]
async fn symlink_escaping_root_is_permission_denied() {
    let tree = tree();
    std::os::unix::fs::symlink(tree.outside.join("secret.wasm"), tree.root.join("link.wasm")).unwrap();
    let daemon = daemon_with_root(&tree.root).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&file_url(&tree.root.join("link.wasm")))).await;
    assert_code(&status, Code::PermissionDenied);
}

#[tokio::test]
async fn symlinked_directory_escaping_root_is_permission_denied() {
    let tree = tree();
    std::os::unix::fs::symlink(&tree.outside, tree.root.join("dir")).unwrap();
    let daemon = daemon_with_root(&tree.root).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&file_url(&tree.root.join("dir").join("secret.wasm")))).await;
    assert_code(&status, Code::PermissionDenied);
}

#[tokio::test]
async fn symlink_within_root_is_served() {
    let tree = tree();
    std::os::unix::fs::symlink(tree.root.join("m.wasm"), tree.root.join("alias.wasm")).unwrap();
    let daemon = daemon_with_root(&tree.root).await;
    let mut client = daemon.client().await;

    let (_, bytes) = fetch_ok(&mut client, req(&file_url(&tree.root.join("alias.wasm")))).await;
    assert_eq!(bytes, tree.module);
}

#[tokio::test]
async fn missing_file_in_root_is_not_found() {
    let tree = tree();
    let daemon = daemon_with_root(&tree.root).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&file_url(&tree.root.join("absent.wasm")))).await;
    assert_code(&status, Code::NotFound);
}

#[tokio::test]
async fn non_wasm_file_is_failed_precondition() {
    let tree = tree();
    std::fs::write(tree.root.join("notes.txt"), "just text").unwrap();
    let daemon = daemon_with_root(&tree.root).await;
    let mut client = daemon.client().await;

    let status = fetch_err(&mut client, req(&file_url(&tree.root.join("notes.txt")))).await;
    assert_code(&status, Code::FailedPrecondition);
}

#[tokio::test]
async fn file_with_wrong_checksum_is_data_loss() {
    let tree = tree();
    let daemon = daemon_with_root(&tree.root).await;
    let mut client = daemon.client().await;

    let url = file_url(&tree.root.join("m.wasm"));
    let status = fetch_err(&mut client, req_sha(&url, &sha256_hex(b"not it"))).await;
    assert_code(&status, Code::DataLoss);
    assert!(daemon.blob_files().is_empty(), "no blob files");
}

#[tokio::test]
async fn gzipped_file_is_unwrapped() {
    let tree = tree();
    std::fs::write(tree.root.join("m.wasm.gz"), gzip(&tree.module)).unwrap();
    let daemon = daemon_with_root(&tree.root).await;
    let mut client = daemon.client().await;

    let (_, bytes) = fetch_ok(&mut client, req(&file_url(&tree.root.join("m.wasm.gz")))).await;
    assert_eq!(bytes, tree.module);
}

// ---------------------------------------------------------------------------------------------------------------
// Anything but a regular file (issue 9, item 8)
// ---------------------------------------------------------------------------------------------------------------

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

fn mkfifo(path: &Path) {
    // SAFETY: mkfifo(3) reads a NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mkfifo(c_path(path).as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo {}: {}", path.display(), std::io::Error::last_os_error());
}

/// Asks for `url` (bounded by `wait`) and says whether it got FAILED_PRECONDITION naming `kind` within a second.
async fn refused_at_once(daemon: &Daemon, url: &str, kind: &str, wait: Duration) -> Result<(), String> {
    let mut client = daemon.client().await;
    let started = Instant::now();
    let answer = tokio::time::timeout(wait, fetch_unchecked(&mut client, req(url))).await;
    let elapsed = started.elapsed();
    match answer {
        Err(_) => Err(format!("no answer for {url} within {wait:?}")),
        Ok(Ok((info, _))) => Err(format!("{url} was served: {info:?}")),
        Ok(Err(status)) if status.code() != Code::FailedPrecondition || !status.message().contains(kind) => {
            Err(format!(
                "expected FAILED_PRECONDITION naming {kind:?}, got {:?}: {}",
                status.code(),
                status.message()
            ))
        }
        Ok(Err(_)) if elapsed > Duration::from_secs(1) => Err(format!("refused only after {elapsed:?}")),
        Ok(Err(_)) => Ok(()),
    }
}

/// A FIFO under a root used to block the fetch in open(2) forever, holding a blocking thread that then kept the
/// daemon from exiting on SIGTERM.
#[tokio::test]
async fn fifo_under_the_root_is_refused_at_once_and_does_not_block_shutdown() {
    let tree = tree();
    let fifo = tree.root.join("pipe.wasm");
    mkfifo(&fifo);
    let mut daemon = Daemon::start(&["--file-root", tree.root.to_str().unwrap(), "--shutdown-grace", "2s"]).await;

    let answer = refused_at_once(&daemon, &file_url(&fifo), "a FIFO", Duration::from_secs(5)).await;
    daemon.signal(libc::SIGTERM);
    let started = Instant::now();
    let exit = daemon.exit_within(Duration::from_secs(10)).await;

    let exited = match exit {
        Some(status) => Ok(status),
        None => Err("the daemon was still running 10 s after SIGTERM (grace 2 s)".to_string()),
    };
    assert_eq!((answer, exited.as_ref().map(|s| s.success())), (Ok(()), Ok(true)));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "exit took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn socket_file_under_the_root_is_refused_naming_it() {
    let tree = tree();
    let socket = tree.root.join("socket.wasm");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind a socket file");
    let daemon = daemon_with_root(&tree.root).await;

    let answer = refused_at_once(&daemon, &file_url(&socket), "a socket", Duration::from_secs(5)).await;
    assert_eq!(answer, Ok(()));
}

/// A device node under a root (made with mknod: the tests run as root) with /dev/zero's numbers: it would read
/// zeros without end.
#[tokio::test]
async fn character_device_under_the_root_is_refused_naming_it() {
    let tree = tree();
    let device = tree.root.join("zero.wasm");
    // SAFETY: mknod(2) reads a NUL-terminated path that outlives the call; 1:5 is /dev/zero.
    let rc = unsafe { libc::mknod(c_path(&device).as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 5)) };
    assert_eq!(rc, 0, "mknod (needs root): {}", std::io::Error::last_os_error());
    let daemon = daemon_with_root(&tree.root).await;

    let answer = refused_at_once(
        &daemon,
        &file_url(&device),
        "a character device",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(answer, Ok(()));
}

#[tokio::test]
async fn directory_under_the_root_is_refused_naming_it() {
    let tree = tree();
    let dir = tree.root.join("dir.wasm");
    std::fs::create_dir(&dir).unwrap();
    let daemon = daemon_with_root(&tree.root).await;

    let answer = refused_at_once(&daemon, &file_url(&dir), "a directory", Duration::from_secs(5)).await;
    assert_eq!(answer, Ok(()));
}
