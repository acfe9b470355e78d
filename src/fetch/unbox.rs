//! Payload unwrapping: modules published as gzip, tar or tar.gz are unwrapped to the Wasm binary inside,
//! with every decompressed byte counted against a cap (gzip and tar bombs stop at the cap), and the
//! result must start with the Wasm magic and version 1.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Component, Path};
use std::rc::Rc;

use flate2::read::MultiGzDecoder;

/// `\0asm` followed by binary format version 1 (little-endian u32).
pub const WASM_HEADER: [u8; 8] = *b"\0asm\x01\0\0\0";
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// How many leading bytes [`sniff`] needs: a tar header block.
pub const SNIFF_LEN: usize = 512;
/// The entry name a Wasm image layer keeps its module under.
const PLUGIN_ENTRY: &str = "plugin.wasm";

/// Which archive entry holds the module.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pick {
    /// `plugin.wasm`, else the only `*.wasm` entry (payloads published over http).
    #[default]
    PluginOrOnlyWasm,
    /// `plugin.wasm` only: the Wasm image convention, where other `.wasm` files are not the module.
    PluginOnly,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Wasm,
    Gzip,
    Tar,
    Unknown,
}

/// Why a payload could not be turned into a Wasm module.
#[derive(Debug, thiserror::Error)]
pub enum UnboxError {
    #[error("decompressed payload is larger than the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error("not a WebAssembly module: {0}")]
    NotWasm(String),
    #[error("cannot unpack archive: {0}")]
    Archive(String),
    #[error("reading payload: {0}")]
    Read(#[source] io::Error),
    #[error("writing unpacked module: {0}")]
    Write(#[source] io::Error),
}

/// Recognises a payload by its first bytes.
pub fn sniff(head: &[u8]) -> Kind {
    if head.starts_with(b"\0asm") {
        Kind::Wasm
    } else if head.starts_with(&GZIP_MAGIC) {
        Kind::Gzip
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Kind::Tar
    } else {
        Kind::Unknown
    }
}

/// Accepts only a Wasm binary of format version 1.
pub fn check_wasm(head: &[u8]) -> Result<(), UnboxError> {
    if head.starts_with(&WASM_HEADER) {
        return Ok(());
    }
    if head.starts_with(b"\0asm") && head.len() >= 8 {
        let version = &head[4..8];
        return Err(UnboxError::NotWasm(format!(
            "binary format version {:02x?} is not supported (only version 1 modules)",
            version
        )));
    }
    let shown: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Err(UnboxError::NotWasm(format!(
        "payload starts with [{}], not the Wasm magic \\0asm",
        shown.join(" ")
    )))
}

/// Reads the first [`SNIFF_LEN`] bytes (fewer for a short file).
pub fn read_head(path: &Path) -> Result<Vec<u8>, UnboxError> {
    let mut head = Vec::with_capacity(SNIFF_LEN);
    File::open(path)
        .and_then(|f| f.take(SNIFF_LEN as u64).read_to_end(&mut head))
        .map_err(UnboxError::Read)?;
    Ok(head)
}

/// Unwraps the gzip, tar or tar.gz payload in `path` into `out`, writing at most `limit` bytes and
/// decompressing at most `limit` bytes. Does not check the Wasm header of the result.
pub fn unwrap(path: &Path, out: &mut impl Write, limit: u64, pick: Pick) -> Result<(), UnboxError> {
    unwrap_from(|| File::open(path).map_err(UnboxError::Read), out, limit, pick)
}

/// [`unwrap`] over bytes in memory (for callers that hold the payload, and for fuzzing).
pub fn unwrap_slice(payload: &[u8], out: &mut impl Write, limit: u64, pick: Pick) -> Result<(), UnboxError> {
    unwrap_from(|| Ok(payload), out, limit, pick)
}

/// Unwraps the payload that `reopen` reads from the start each time it is called (archives are read
/// twice: once to choose the entry, once to copy it).
fn unwrap_from<R: Read>(
    reopen: impl Fn() -> Result<R, UnboxError>,
    out: &mut impl Write,
    limit: u64,
    pick: Pick,
) -> Result<(), UnboxError> {
    let mut head = Vec::with_capacity(SNIFF_LEN);
    reopen()?
        .take(SNIFF_LEN as u64)
        .read_to_end(&mut head)
        .map_err(UnboxError::Read)?;
    match sniff(&head) {
        Kind::Gzip => {
            let inner_head = {
                let mut probe = Capped::new(MultiGzDecoder::new(reopen()?), limit);
                let mut buf = Vec::with_capacity(SNIFF_LEN);
                let result = (&mut probe).take(SNIFF_LEN as u64).read_to_end(&mut buf);
                probe.check(result)?;
                buf
            };
            match sniff(&inner_head) {
                Kind::Tar => unwrap_tar(|| Ok(MultiGzDecoder::new(reopen()?)), out, limit, pick),
                Kind::Gzip => Err(UnboxError::Archive("gzip inside gzip is not supported".into())),
                _ => copy_capped(Capped::new(MultiGzDecoder::new(reopen()?), limit), out),
            }
        }
        Kind::Tar => unwrap_tar(&reopen, out, limit, pick),
        Kind::Wasm => copy_capped(Capped::new(reopen()?, limit), out),
        Kind::Unknown => check_wasm(&head),
    }
}

/// Two passes over the archive: choose the entry (`plugin.wasm`, else the only `*.wasm`), then copy it.
fn unwrap_tar<R: Read>(
    reopen: impl Fn() -> Result<R, UnboxError>,
    out: &mut impl Write,
    limit: u64,
    pick: Pick,
) -> Result<(), UnboxError> {
    let names = {
        let mut capped = Capped::new(reopen()?, limit);
        let listed = list_files(&mut capped);
        capped.check(listed)?
    };
    let chosen = choose_entry(&names, pick)?;
    let mut capped = Capped::new(reopen()?, limit);
    let mut archive = tar::Archive::new(&mut capped);
    let entries = archive.entries().map_err(|e| UnboxError::Archive(e.to_string()))?;
    let mut position = 0;
    for entry in entries {
        let entry = entry.map_err(|e| UnboxError::Archive(e.to_string()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        if position == chosen {
            if entry.size() > limit {
                return Err(UnboxError::TooLarge { limit });
            }
            return copy_entry(entry, out);
        }
        position += 1;
    }
    Err(UnboxError::Archive("archive changed between reads".into()))
}

/// Regular-file entry names, in archive order.
fn list_files(reader: &mut impl Read) -> io::Result<Vec<String>> {
    let mut archive = tar::Archive::new(reader);
    let mut names = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        if entry.header().entry_type().is_file() {
            names.push(String::from_utf8_lossy(&entry.path_bytes()).into_owned());
        }
    }
    Ok(names)
}

/// The index (among regular files) of `plugin.wasm`, or (when `pick` allows) of the only `.wasm` file.
/// Entries with absolute paths or `..` components are never chosen.
fn choose_entry(names: &[String], pick: Pick) -> Result<usize, UnboxError> {
    let safe = |name: &str| {
        Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    };
    let base = |name: &str| Path::new(name).file_name().and_then(|n| n.to_str()).map(str::to_owned);
    let plugin: Vec<usize> = (0..names.len())
        .filter(|&i| safe(&names[i]) && base(&names[i]).as_deref() == Some(PLUGIN_ENTRY))
        .collect();
    if let Some(&i) = plugin.first() {
        return Ok(i);
    }
    if pick == Pick::PluginOnly {
        return Err(UnboxError::Archive(format!(
            "image layer has no {PLUGIN_ENTRY} (entries: {})",
            summarize(names)
        )));
    }
    let wasm: Vec<usize> = (0..names.len())
        .filter(|&i| safe(&names[i]) && names[i].to_ascii_lowercase().ends_with(".wasm"))
        .collect();
    match wasm.as_slice() {
        [only] => Ok(*only),
        [] => Err(UnboxError::Archive(format!(
            "archive has no {PLUGIN_ENTRY} and no .wasm entry (entries: {})",
            summarize(names)
        ))),
        many => Err(UnboxError::Archive(format!(
            "archive has no {PLUGIN_ENTRY} and {} .wasm entries, so the module is ambiguous: {}",
            many.len(),
            summarize(&many.iter().map(|&i| names[i].clone()).collect::<Vec<_>>())
        ))),
    }
}

fn summarize(names: &[String]) -> String {
    let mut shown: Vec<String> = names
        .iter()
        .take(10)
        .map(|n| format!("{:?}", n.chars().take(100).collect::<String>()))
        .collect();
    if names.len() > 10 {
        shown.push(format!("... {} more", names.len() - 10));
    }
    if shown.is_empty() {
        "none".into()
    } else {
        shown.join(", ")
    }
}

fn copy_entry(mut entry: impl Read, out: &mut impl Write) -> Result<(), UnboxError> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(UnboxError::Archive(e.to_string())),
        };
        out.write_all(&buf[..n]).map_err(UnboxError::Write)?;
    }
}

fn copy_capped<R: Read>(mut reader: Capped<R>, out: &mut impl Write) -> Result<(), UnboxError> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return reader.check(Err(e)),
        };
        out.write_all(&buf[..n]).map_err(UnboxError::Write)?;
    }
}

/// A reader that fails once more than `limit` bytes have come through, and remembers that it did, so
/// the cap is reported as such even when a decoder wraps the error.
struct Capped<R> {
    inner: R,
    left: u64,
    limit: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Capped<R> {
    fn new(inner: R, limit: u64) -> Self {
        Capped {
            inner,
            left: limit,
            limit,
            exceeded: Rc::new(Cell::new(false)),
        }
    }

    /// Turns a read result into the right error: the cap if it was hit, else a corrupt archive.
    fn check<T>(&self, result: io::Result<T>) -> Result<T, UnboxError> {
        match result {
            Ok(v) => Ok(v),
            Err(_) if self.exceeded.get() => Err(UnboxError::TooLarge { limit: self.limit }),
            Err(e) => Err(UnboxError::Archive(e.to_string())),
        }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Ask for one byte more than allowed, so that reaching exactly the limit is not an error.
        let want = buf
            .len()
            .min(self.left.saturating_add(1).min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            self.exceeded.set(true);
            return Err(io::Error::other("size limit exceeded"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
