//! Payload unwrapping: modules published as gzip, tar or tar.gz are unwrapped to the Wasm binary inside,
//! with every decompressed byte counted against a cap (gzip and tar bombs stop at the cap), and the
//! result must start with the Wasm magic and version 1. Memory does not depend on that cap: archive
//! metadata entries are read at most [`MAX_META_BYTES`] each, and entry names are never collected.

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
pub(crate) const SNIFF_LEN: usize = 512;
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
pub(crate) fn read_head(path: &Path) -> Result<Vec<u8>, UnboxError> {
    let mut head = Vec::with_capacity(SNIFF_LEN);
    File::open(path)
        .and_then(|f| f.take(SNIFF_LEN as u64).read_to_end(&mut head))
        .map_err(UnboxError::Read)?;
    Ok(head)
}

/// Unwraps the gzip, tar or tar.gz payload in `path` into `out`, writing at most `limit` bytes and
/// decompressing at most `limit` bytes. Does not check the Wasm header of the result.
pub(crate) fn unwrap(path: &Path, out: &mut impl Write, limit: u64, pick: Pick) -> Result<(), UnboxError> {
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

/// Cap on each metadata entry of an archive: a GNU long name or long link, a PAX extended header (local or
/// global). The `tar` crate reads these whole into memory, whatever their size, so a 200 MB long name in a
/// 200 KB tar.gz cost hundreds of MB per fetch; real ones are a path, or a few records of a few hundred bytes.
pub(crate) const MAX_META_BYTES: u64 = 64 * 1024;
/// How many entry names an error message shows, and how many characters of each.
const SHOWN_NAMES: usize = 10;
const SHOWN_NAME_CHARS: usize = 100;

/// Two passes over the archive: choose the entry (`plugin.wasm`, else the only `*.wasm`), then copy it.
fn unwrap_tar<R: Read>(
    reopen: impl Fn() -> Result<R, UnboxError>,
    out: &mut impl Write,
    limit: u64,
    pick: Pick,
) -> Result<(), UnboxError> {
    let mut chooser = Chooser::new(pick);
    walk_files(Capped::new(reopen()?, limit), |position, name, _, _| {
        chooser.see(position, name);
        Ok(None::<()>)
    })?;
    let chosen = chooser.choose()?;
    let copied = walk_files(Capped::new(reopen()?, limit), |position, _, size, data| {
        if position != chosen {
            return Ok(None);
        }
        if size > limit {
            return Err(UnboxError::TooLarge { limit });
        }
        copy_entry(data, out).map(Some)
    })?;
    copied.ok_or_else(|| UnboxError::Archive("archive changed between reads".into()))
}

/// What the metadata entries before a member said about it.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: bool,
    pax: Option<Vec<u8>>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.long_name.is_none() && !self.long_link && self.pax.is_none()
    }
}

/// Walks the archive's regular files in order and hands `visit` each one's position among them, its name, its
/// size and its data, until `visit` returns `Some`.
///
/// The `tar` crate is used in raw mode, which parses headers and skips data but reads nothing into memory:
/// GNU long names and long links and PAX headers are read here, each at most [`MAX_META_BYTES`] (a larger one
/// refuses the archive, naming it), and applied as the crate would (a long name, else the PAX `path`, else
/// the header's name). Nothing else is kept from entry to entry, so memory does not grow with the archive.
fn walk_files<R: Read, T>(
    reader: Capped<R>,
    mut visit: impl FnMut(usize, &[u8], u64, &mut dyn Read) -> Result<Option<T>, UnboxError>,
) -> Result<Option<T>, UnboxError> {
    let (exceeded, limit) = (reader.exceeded.clone(), reader.limit);
    let fail = |e: io::Error| {
        if exceeded.get() {
            UnboxError::TooLarge { limit }
        } else {
            UnboxError::Archive(e.to_string())
        }
    };
    let mut archive = tar::Archive::new(reader);
    let mut pending = Pending::default();
    let mut position = 0;
    for entry in archive.entries().map_err(fail)?.raw(true) {
        let mut entry = entry.map_err(fail)?;
        let kind = entry.header().entry_type();
        let size = entry.size();
        let meta = match kind {
            tar::EntryType::GNULongName => Some("GNU long name"),
            tar::EntryType::GNULongLink => Some("GNU long link"),
            tar::EntryType::XHeader => Some("PAX extended header"),
            tar::EntryType::XGlobalHeader => Some("PAX global header"),
            _ => None,
        };
        if let Some(what) = meta {
            if size > MAX_META_BYTES {
                return Err(UnboxError::Archive(format!(
                    "{what} entry of {size} bytes is over the {MAX_META_BYTES}-byte limit for archive metadata"
                )));
            }
            let mut data = Vec::with_capacity(size as usize);
            (&mut entry).take(MAX_META_BYTES).read_to_end(&mut data).map_err(fail)?;
            let twice = || UnboxError::Archive(format!("two {what} entries describe the same member"));
            match kind {
                tar::EntryType::GNULongName if pending.long_name.is_some() => return Err(twice()),
                tar::EntryType::GNULongName => {
                    // The name is NUL-terminated, as GNU tar writes it.
                    if data.last() == Some(&0) {
                        data.pop();
                    }
                    pending.long_name = Some(data);
                }
                tar::EntryType::GNULongLink if pending.long_link => return Err(twice()),
                tar::EntryType::GNULongLink => pending.long_link = true,
                tar::EntryType::XHeader if pending.pax.is_some() => return Err(twice()),
                tar::EntryType::XHeader => pending.pax = Some(data),
                // Global headers set defaults for the members after them; like the crate, we ignore them.
                _ => {}
            }
            continue;
        }
        if kind.is_gnu_sparse() {
            // Its extra sparse headers would be misread as members; a module is never stored sparse.
            return Err(UnboxError::Archive("GNU sparse entries are not supported".into()));
        }
        let described = std::mem::take(&mut pending);
        let pax = described
            .pax
            .as_deref()
            .map(pax_fields)
            .transpose()?
            .unwrap_or_default();
        if let Some(pax_size) = pax.size {
            // The crate would read this many bytes instead of the header's; refuse rather than disagree.
            if pax_size > limit {
                return Err(UnboxError::TooLarge { limit });
            }
            if pax_size != size {
                return Err(UnboxError::Archive(format!(
                    "PAX size {pax_size} of an entry differs from its header's {size}"
                )));
            }
        }
        if !kind.is_file() {
            continue;
        }
        let header_name;
        let name: &[u8] = match (&described.long_name, &pax.path) {
            (Some(long), _) => long,
            (None, Some(path)) => path,
            (None, None) => {
                header_name = entry.header().path_bytes().into_owned();
                &header_name
            }
        };
        if let Some(done) = visit(position, name, size, &mut entry)? {
            return Ok(Some(done));
        }
        position += 1;
    }
    if !pending.is_empty() {
        return Err(UnboxError::Archive(
            "archive ends with metadata entries that describe no member".into(),
        ));
    }
    Ok(None)
}

/// The PAX records the walk uses (the first of each, as the `tar` crate takes them).
#[derive(Default)]
struct PaxFields {
    path: Option<Vec<u8>>,
    size: Option<u64>,
}

fn pax_fields(data: &[u8]) -> Result<PaxFields, UnboxError> {
    let mut fields = PaxFields::default();
    for record in tar::PaxExtensions::new(data) {
        let record = record.map_err(|e| UnboxError::Archive(format!("malformed PAX header: {e}")))?;
        match record.key_bytes() {
            b"path" if fields.path.is_none() => fields.path = Some(record.value_bytes().to_vec()),
            b"size" if fields.size.is_none() => {
                let value = String::from_utf8_lossy(record.value_bytes()).into_owned();
                let size = value
                    .parse()
                    .map_err(|_| UnboxError::Archive(format!("PAX size {value:.40?} is not a number")))?;
                fields.size = Some(size);
            }
            _ => {}
        }
    }
    Ok(fields)
}

/// Chooses the module among the regular files as they go by: the first `plugin.wasm`, or (when `pick`
/// allows) the only `.wasm` file. Entries with absolute paths or `..` components are never chosen. Keeps
/// positions and counts, and the first few names for the error message, never the list of names.
struct Chooser {
    pick: Pick,
    plugin: Option<usize>,
    first_wasm: Option<usize>,
    wasm_count: usize,
    wasm_names: Vec<String>,
    file_count: usize,
    file_names: Vec<String>,
}

impl Chooser {
    fn new(pick: Pick) -> Self {
        Chooser {
            pick,
            plugin: None,
            first_wasm: None,
            wasm_count: 0,
            wasm_names: Vec::new(),
            file_count: 0,
            file_names: Vec::new(),
        }
    }

    fn see(&mut self, position: usize, name: &[u8]) {
        let name = String::from_utf8_lossy(name);
        let shown = || name.chars().take(SHOWN_NAME_CHARS).collect::<String>();
        self.file_count += 1;
        if self.file_names.len() < SHOWN_NAMES {
            self.file_names.push(shown());
        }
        let safe = Path::new(name.as_ref())
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !safe {
            return;
        }
        let base = Path::new(name.as_ref()).file_name().and_then(|n| n.to_str());
        if base == Some(PLUGIN_ENTRY) && self.plugin.is_none() {
            self.plugin = Some(position);
        }
        if name.to_ascii_lowercase().ends_with(".wasm") {
            self.first_wasm.get_or_insert(position);
            self.wasm_count += 1;
            if self.wasm_names.len() < SHOWN_NAMES {
                self.wasm_names.push(shown());
            }
        }
    }

    /// The position (among regular files) of the module.
    fn choose(&self) -> Result<usize, UnboxError> {
        if let Some(i) = self.plugin {
            return Ok(i);
        }
        if self.pick == Pick::PluginOnly {
            return Err(UnboxError::Archive(format!(
                "image layer has no {PLUGIN_ENTRY} (entries: {})",
                summarize(&self.file_names, self.file_count)
            )));
        }
        match (self.wasm_count, self.first_wasm) {
            (1, Some(only)) => Ok(only),
            (0, _) => Err(UnboxError::Archive(format!(
                "archive has no {PLUGIN_ENTRY} and no .wasm entry (entries: {})",
                summarize(&self.file_names, self.file_count)
            ))),
            (many, _) => Err(UnboxError::Archive(format!(
                "archive has no {PLUGIN_ENTRY} and {many} .wasm entries, so the module is ambiguous: {}",
                summarize(&self.wasm_names, many)
            ))),
        }
    }
}

/// The first names, quoted, and how many more there were.
fn summarize(shown: &[String], total: usize) -> String {
    let mut parts: Vec<String> = shown.iter().map(|n| format!("{n:?}")).collect();
    if total > shown.len() {
        parts.push(format!("... {} more", total - shown.len()));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

fn copy_entry(entry: &mut dyn Read, out: &mut impl Write) -> Result<(), UnboxError> {
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
