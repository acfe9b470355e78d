//! Modules, digests, archives, and running the CLI or a short-lived `serve`.

use super::*;

const WASM_HEADER: &[u8] = b"\0asm\x01\0\0\0";

/// A small valid Wasm module: the header and one custom section named `wasmcache-test` holding `tag`, so that
/// different tags give different modules (and digests).
pub fn wasm_module(tag: &str) -> Vec<u8> {
    let mut section = Vec::new();
    let name = b"wasmcache-test";
    section.push(name.len() as u8);
    section.extend_from_slice(name);
    section.extend_from_slice(tag.as_bytes());
    let mut module = WASM_HEADER.to_vec();
    module.push(0); // custom section id
    module.extend_from_slice(&leb128_padded(section.len() as u32));
    module.extend_from_slice(&section);
    module
}

/// A valid Wasm module of exactly `size` bytes whose custom-section payload is pseudo-random (seeded by `tag`)
/// and numbered every 64 KiB, so that a lost, doubled or reordered chunk changes the bytes.
pub fn wasm_module_of_size(tag: &str, size: usize) -> Vec<u8> {
    let name = b"wasmcache-test";
    let overhead = WASM_HEADER.len() + 1 + 5 + 1 + name.len();
    assert!(size >= overhead, "module too small");
    let payload_len = size - overhead;
    let mut module = Vec::with_capacity(size);
    module.extend_from_slice(WASM_HEADER);
    module.push(0);
    module.extend_from_slice(&leb128_padded((1 + name.len() + payload_len) as u32));
    module.push(name.len() as u8);
    module.extend_from_slice(name);

    let mut block = vec![0u8; 64 * 1024];
    let mut x = u64::from_le_bytes(Sha256::digest(tag.as_bytes())[..8].try_into().unwrap()) | 1;
    for byte in block.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    let mut index: u64 = 0;
    while module.len() < size {
        block[..8].copy_from_slice(&index.to_le_bytes());
        let n = (size - module.len()).min(block.len());
        module.extend_from_slice(&block[..n]);
        index += 1;
    }
    module
}

/// LEB128 of `value` in the 5-byte form Wasm allows for u32, so section sizes have a fixed width.
fn leb128_padded(mut value: u32) -> [u8; 5] {
    let mut out = [0u8; 5];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = (value & 0x7f) as u8;
        value >>= 7;
        if i < 4 {
            *byte |= 0x80;
        }
    }
    out
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip finish")
}

/// A ustar archive with these regular files, in order.
pub fn tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append_data(&mut header, name, *data).expect("tar entry");
    }
    builder.into_inner().expect("tar finish")
}

pub fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    gzip(&tar(entries))
}

/// Runs the `wasmcache` binary with `args` (a client command) on a blocking thread, so the origin, which runs
/// on the test's runtime, keeps serving meanwhile.
pub async fn run_cli(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let envs: Vec<(String, String)> = envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_wasmcache"))
            .args(&args)
            .env_remove("WASMCACHE_SOCKET")
            .env_remove("RUST_LOG")
            .envs(envs)
            .stdin(Stdio::null())
            .output()
            .expect("run the wasmcache binary")
    })
    .await
    .expect("cli thread")
}

/// Runs `wasmcache serve` on a fresh temp dir (`cache/`, `wasmcache.sock`) with `args` and waits up to 10 s for it
/// to exit by itself, as it must on a bad configuration. `None`: it was still running (and has been killed).
pub async fn serve_until_exit(args: &[&str]) -> (Option<ExitStatus>, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmcache"))
        .arg("serve")
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .arg("--socket")
        .arg(dir.path().join("wasmcache.sock"))
        .args(["--admin-listen", "off"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn wasmcache");
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return (Some(status), dir);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (None, dir);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
