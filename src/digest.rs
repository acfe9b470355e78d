//! The sha256 digest type that names every blob, and a writer that hashes what passes through it.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256 as Hasher};

/// A validated sha256 digest. Displays as 64 lowercase hex characters, without the `sha256:` prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256([u8; 32]);

/// Why a string is not a sha256 digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest algorithm {0:?} is not supported (only sha256)")]
    Algorithm(String),
    #[error("sha256 digest must be 64 hex characters, got {0} characters")]
    Length(usize),
    #[error("sha256 digest has a non-hex character")]
    NotHex,
}

/// Content that should have hashed to `expected` hashed to `actual`: the one mismatch every check reports,
/// wrapped by each layer's error with what was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected sha256:{expected}, got sha256:{actual}")]
pub struct Mismatch {
    pub expected: Sha256,
    pub actual: Sha256,
}

impl Sha256 {
    /// `Ok` when content that should have this digest hashed to `actual`.
    pub(crate) fn check(self, actual: Sha256) -> Result<(), Mismatch> {
        if self == actual {
            Ok(())
        } else {
            Err(Mismatch { expected: self, actual })
        }
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Sha256(bytes)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Hashes a byte slice in one go.
    pub fn of(data: &[u8]) -> Self {
        Sha256(Hasher::digest(data).into())
    }

    /// `sha256:<hex>`, the OCI form.
    pub fn prefixed(&self) -> String {
        format!("sha256:{self}")
    }

    /// Parses `sha256:<hex>` or bare `<hex>`; an empty string is `None`.
    pub(crate) fn parse_optional(s: &str) -> Result<Option<Self>, DigestError> {
        if s.trim().is_empty() {
            Ok(None)
        } else {
            s.parse().map(Some)
        }
    }
}

impl FromStr for Sha256 {
    type Err = DigestError;

    /// Accepts `sha256:<hex>` or bare `<hex>`, hex in either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_part = match s.split_once(':') {
            Some(("sha256", rest)) => rest,
            Some((algo, _)) => return Err(DigestError::Algorithm(algo.chars().take(32).collect())),
            None => s,
        };
        if hex_part.len() != 64 {
            return Err(DigestError::Length(hex_part.chars().count()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| DigestError::NotHex)?;
        Ok(Sha256(out))
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Serde forms of a digest for records kept on disk: text, so that the index stays readable and its
/// records keep the form they always had.
pub(crate) mod serde_form {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Sha256;

    fn parse<'de, D: Deserializer<'de>>(text: &str) -> Result<Sha256, D::Error> {
        text.parse().map_err(serde::de::Error::custom)
    }

    /// Bare hex: `3a5c...`.
    pub(crate) mod hex {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(d: &Sha256, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(d)
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Sha256, D::Error> {
            parse::<D>(&String::deserialize(de)?)
        }
    }

    /// `sha256:<hex>`, or none.
    pub(crate) mod prefixed_opt {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(d: &Option<Sha256>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_some(&d.prefixed()),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Sha256>, D::Error> {
            Option::<String>::deserialize(de)?.map(|t| parse::<D>(&t)).transpose()
        }
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{self}")
    }
}

/// Wraps a writer and hashes every byte written through it, so a blob is hashed once, as it is written.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(),
            written: 0,
        }
    }

    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    pub(crate) fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The digest of everything written so far.
    pub(crate) fn sha256(&self) -> Sha256 {
        Sha256(self.hasher.clone().finalize().into())
    }

    /// Returns the inner writer and the digest of everything written.
    pub fn finish(self) -> (W, Sha256) {
        (self.inner, Sha256(self.hasher.finalize().into()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The sha512 of a file (in-toto subjects of detached signatures may name it instead of sha256).
pub(crate) fn sha512_of_file(path: &std::path::Path) -> io::Result<[u8; 64]> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha512::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// Hashes everything a reader yields, in 1 MiB steps; returns the digest and the byte count.
pub fn hash_reader(mut reader: impl io::Read) -> io::Result<(Sha256, u64)> {
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((Sha256(hasher.finalize().into()), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_with_and_without_prefix() {
        let a: Sha256 = EMPTY.parse().unwrap();
        let b: Sha256 = format!("sha256:{EMPTY}").parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), EMPTY);
        assert_eq!(a, Sha256::of(b""));
    }

    #[test]
    fn check_names_both_digests_of_a_mismatch() {
        let (a, b) = (Sha256::of(b"a"), Sha256::of(b"b"));
        assert_eq!(a.check(a), Ok(()));
        let mismatch = a.check(b).unwrap_err();
        assert_eq!((mismatch.expected, mismatch.actual), (a, b));
        assert_eq!(mismatch.to_string(), format!("expected sha256:{a}, got sha256:{b}"));
    }

    #[test]
    fn upper_case_hex_is_accepted_and_displayed_lower() {
        let d: Sha256 = EMPTY.to_uppercase().parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
    }

    #[test]
    fn rejects_other_algorithms_lengths_and_non_hex() {
        assert!(matches!("sha512:abc".parse::<Sha256>(), Err(DigestError::Algorithm(_))));
        assert_eq!("abc".parse::<Sha256>(), Err(DigestError::Length(3)));
        let bad = format!("{}g", &EMPTY[..63]);
        assert_eq!(bad.parse::<Sha256>(), Err(DigestError::NotHex));
    }

    #[test]
    fn hashing_writer_matches_one_shot_hash() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        assert_eq!(w.written(), 11);
        let (bytes, digest) = w.finish();
        assert_eq!(digest, Sha256::of(b"hello world"));
        assert_eq!(bytes, b"hello world");
    }
}
