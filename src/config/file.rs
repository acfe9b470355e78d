//! The `--config` TOML file, in and out.
//!
//! Keys are the flag names, with the registry, watch, lifecycle and log settings in tables of their own (the
//! file keys in [`super::SETTINGS`], and the README). The file is parsed with the span of every key and value;
//! keys are checked against the settings first, so that an unknown key is reported with its line and the
//! nearest known key, and then each setting's value is converted as its [`Kind`] says, so that a bad value is
//! reported with its key and line whatever its type.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use toml::de::{DeTable, DeValue};
use toml::{Spanned, Value};

use super::kind::{expected, Kind};
use super::{Config, ConfigError, Overrides, SETTINGS};

/// A configuration file, read and converted, with the line of each key it sets.
#[derive(Clone, Debug)]
pub(crate) struct FileConfig {
    path: PathBuf,
    values: Overrides,
    /// Flag name → line (from 1) of the value, so that [`Config::build`] can point at it.
    lines: HashMap<&'static str, usize>,
}

impl FileConfig {
    pub(crate) fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        FileConfig::parse(path, &text)
    }

    /// Parses `text`; `path` only names the file in errors.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
        let mut reader = Reader {
            path,
            src: text,
            lines: HashMap::new(),
        };
        let root = DeTable::parse(text).map_err(|e| reader.toml_error(&e))?;
        reader.check_keys(root.get_ref(), "")?;
        let values = Overrides::from_file(&mut reader, root.get_ref())?;
        Ok(FileConfig {
            path: path.to_path_buf(),
            values,
            lines: reader.lines,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn values(&self) -> &Overrides {
        &self.values
    }

    /// `(flag, line)` for every setting the file sets.
    pub(crate) fn lines(&self) -> impl Iterator<Item = (&'static str, usize)> + '_ {
        self.lines.iter().map(|(flag, line)| (*flag, *line))
    }
}

/// The file being read: its text, for lines, and where each setting was found.
pub(crate) struct Reader<'a> {
    path: &'a Path,
    src: &'a str,
    lines: HashMap<&'static str, usize>,
}

impl Reader<'_> {
    /// Refuses a key that is no setting's, and a value where a table of settings belongs. `prefix` is the dotted
    /// path of `table` (empty at the top).
    fn check_keys(&self, table: &DeTable<'_>, prefix: &str) -> Result<(), ConfigError> {
        let dotted = |name: &str| {
            if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}.{name}")
            }
        };
        for (name, value) in table {
            let key = dotted(name.get_ref());
            if SETTINGS.iter().any(|s| s.file_key == key) {
                continue;
            }
            let inner = format!("{key}.");
            if SETTINGS.iter().any(|s| s.file_key.starts_with(&inner)) {
                match value.get_ref() {
                    DeValue::Table(inner) => self.check_keys(inner, &key)?,
                    _ => {
                        let line = self.line(value.span().start);
                        let found = self.value(value, &key)?;
                        return Err(self.error(Some(line), Some(key), expected("a table", &found)));
                    }
                }
                continue;
            }
            // The names this table may hold: its settings' keys and the tables below it.
            let known = SETTINGS.iter().filter_map(|s| {
                let rest = if prefix.is_empty() {
                    s.file_key
                } else {
                    s.file_key.strip_prefix(prefix)?.strip_prefix('.')?
                };
                rest.split('.').next()
            });
            let hint = closest(name.get_ref(), known)
                .map(|k| format!(" (did you mean {:?}?)", dotted(k)))
                .unwrap_or_default();
            let line = self.line(name.span().start);
            return Err(self.error(Some(line), None, format!("unknown key {key:?}{hint}")));
        }
        Ok(())
    }

    /// Converts the value at the dotted `key` as `K` says, recording its line under `flag`.
    pub(super) fn take<K: Kind>(
        &mut self,
        root: &DeTable<'_>,
        key: &str,
        flag: &'static str,
    ) -> Result<Option<K::Value>, ConfigError> {
        let mut table = root;
        let mut parts = key.split('.').peekable();
        while let Some(part) = parts.next() {
            let Some((_, value)) = table.iter().find(|(name, _)| &**name.get_ref() == part) else {
                return Ok(None);
            };
            if parts.peek().is_none() {
                self.lines.insert(flag, self.line(value.span().start));
                return K::from_file(value, self, key).map(Some);
            }
            match value.get_ref() {
                DeValue::Table(inner) => table = inner,
                // Refused by `check_keys` already.
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// A parsed value as a [`Value`], for a [`Kind`] to convert.
    pub(crate) fn value(&self, value: &Spanned<DeValue<'_>>, key: &str) -> Result<Value, ConfigError> {
        let line = self.line(value.span().start);
        Value::deserialize(toml::de::ValueDeserializer::from(value.clone()))
            .map_err(|e| self.error(Some(line), Some(key.to_string()), e.message().to_string()))
    }

    pub(crate) fn error(&self, line: Option<usize>, key: Option<String>, reason: String) -> ConfigError {
        ConfigError::File {
            path: self.path.to_path_buf(),
            line,
            key,
            reason,
        }
    }

    /// The line (from 1) of a byte offset.
    pub(crate) fn line(&self, offset: usize) -> usize {
        let offset = offset.min(self.src.len());
        self.src.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count() + 1
    }

    fn line_text(&self, line: usize) -> &str {
        self.src.lines().nth(line.saturating_sub(1)).unwrap_or("")
    }

    /// A syntax error or a duplicate key, as one line.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let line = e.span().map(|span| self.line(span.start));
        let message = e.message().trim();
        let key = match (message, e.span()) {
            ("duplicate key", Some(span)) => self.src.get(span).map(|k| k.trim().trim_matches('"').to_string()),
            _ => line
                .and_then(|l| self.line_text(l).split_once('='))
                .map(|(k, _)| k.trim().to_string()),
        }
        .filter(|k| !k.is_empty() && !k.starts_with('['));
        self.error(line, key, message.to_string())
    }
}

/// The candidate nearest to `name` when it is close enough to be a typo.
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(name, c), c))
        .filter(|&(d, c)| d > 0 && d <= 2.max(c.len() / 4))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Puts `value` in `table` at the dotted `key`, making the tables on the way.
pub(super) fn insert(table: &mut toml::Table, key: &str, value: Value) {
    match key.split_once('.') {
        None => {
            table.insert(key.to_string(), value);
        }
        Some((head, rest)) => {
            let inner = table
                .entry(head.to_string())
                .or_insert_with(|| Value::Table(toml::Table::new()));
            if let Value::Table(inner) = inner {
                insert(inner, rest, value);
            }
        }
    }
}

/// The configuration as a file; see [`Config::to_toml`].
pub(super) fn to_toml(c: &Config) -> String {
    toml::to_string(&c.printed()).expect("the configuration serializes as TOML")
}
