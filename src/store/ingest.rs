//! An in-progress blob write: a temp file under `ingest/`, hashed as it is written, made visible only by
//! [`Store::commit`](super::Store::commit).

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::digest::{HashingWriter, Sha256};

/// A temp file being written. Dropping it without committing deletes the file.
pub struct Ingest {
    path: PathBuf,
    /// `None` only after `finish` handed the file over.
    writer: Option<HashingWriter<File>>,
    writeback: super::Writeback,
}

impl Ingest {
    pub(super) fn create(path: PathBuf) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        Ok(Ingest {
            path,
            writer: Some(HashingWriter::new(file)),
            writeback: Default::default(),
        })
    }

    fn writer(&mut self) -> &mut HashingWriter<File> {
        self.writer.as_mut().expect("ingest used after finish")
    }

    /// Where the bytes are being written, for readers that need the whole content (unwrapping archives).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sha256 of everything written since the last reset.
    pub fn sha256(&self) -> Sha256 {
        self.writer.as_ref().expect("ingest used after finish").sha256()
    }

    /// Throws away everything written so far, so that a retried download starts from an empty file.
    pub fn reset(&mut self) -> io::Result<()> {
        let mut file = self.writer.take().expect("ingest used after finish").finish().0;
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        self.writer = Some(HashingWriter::new(file));
        self.writeback = Default::default();
        Ok(())
    }

    /// Flushes the bytes to stable storage and hands over the file's path, digest and size; from here on
    /// the caller owns the temp file.
    pub(super) fn finish(mut self) -> io::Result<(PathBuf, Sha256, u64)> {
        let writer = self.writer.take().expect("ingest used after finish");
        let size = writer.written();
        let (mut file, digest) = writer.finish();
        file.flush()?;
        file.sync_all()?;
        Ok((std::mem::take(&mut self.path), digest, size))
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let writer = self.writer.as_mut().expect("ingest used after finish");
        let n = writer.write(buf)?;
        // Overlaps the disk writes with the rest of the download; the commit's fsync waits for less.
        self.writeback.wrote(writer.get_mut(), n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer().flush()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        // An empty path means `finish` handed the file over; otherwise the write was abandoned.
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
