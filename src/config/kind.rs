//! How a setting's value is written: as text on the command line and in a `WASMCACHE_*` variable, and as TOML
//! in the file and in `config check`'s output. Each setting in [`super::settings`] names one [`Kind`], so that
//! a new setting of a known sort needs no reading or printing code of its own.
//!
//! Long: one small `Kind` impl per sort of value (path, duration, size, address, list, mirrors ...), side by
//! side so that their parsing and printing stay alike; each is read on its own.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches};
use ipnet::IpNet;
use toml::de::DeValue;
use toml::{Spanned, Value};

use super::file::Reader;
use super::{
    parse_addr, parse_admin_listen, parse_bool, parse_bytes, parse_cidr, parse_duration, parse_log_level,
    parse_max_cache_bytes, parse_mirror, parse_platform, ConfigError, LogFormat,
};

/// One sort of setting value.
pub(crate) trait Kind {
    type Value: Clone + std::fmt::Debug + Send + Sync + 'static;

    /// A flag's value, which is also how a variable is read unless [`Kind::from_env`] says otherwise.
    fn parse(s: &str) -> Result<Self::Value, String>;

    /// A value from the file.
    fn from_toml(value: &Value) -> Result<Self::Value, String>;

    /// The value as the file writes it.
    fn to_toml(value: &Self::Value) -> Value;

    /// A `WASMCACHE_*` variable (already trimmed, never empty).
    fn from_env(s: &str) -> Result<Self::Value, String> {
        Self::parse(s)
    }

    /// The `serve` flag: one value, read with [`Kind::parse`].
    fn arg(arg: Arg) -> Arg {
        arg.action(ArgAction::Set)
            .value_parser(Self::parse as fn(&str) -> Result<Self::Value, String>)
    }

    fn from_matches(matches: &ArgMatches, id: &str) -> Option<Self::Value> {
        matches.get_one::<Self::Value>(id).cloned()
    }

    /// The file's value at `key`; an error names the key and the line.
    fn from_file(value: &Spanned<DeValue<'_>>, file: &Reader<'_>, key: &str) -> Result<Self::Value, ConfigError> {
        let line = file.line(value.span().start);
        let toml = file.value(value, key)?;
        Self::from_toml(&toml).map_err(|reason| file.error(Some(line), Some(key.to_string()), reason))
    }
}

/// A path, never empty.
pub(crate) struct Path;

impl Kind for Path {
    type Value = PathBuf;

    fn parse(s: &str) -> Result<PathBuf, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(PathBuf::from(s))
    }

    fn from_toml(value: &Value) -> Result<PathBuf, String> {
        let s = text(value)?;
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(PathBuf::from(s))
    }

    fn to_toml(value: &PathBuf) -> Value {
        Value::String(value.display().to_string())
    }
}

/// Any string.
pub(crate) struct Text;

impl Kind for Text {
    type Value = String;

    fn parse(s: &str) -> Result<String, String> {
        Ok(s.to_string())
    }

    fn from_toml(value: &Value) -> Result<String, String> {
        text(value)
    }

    fn to_toml(value: &String) -> Value {
        Value::String(value.clone())
    }
}

/// A string checked (and normalised) by a parser: [`Platform`], [`LogLevel`].
macro_rules! checked_text {
    ($(#[$doc:meta])* $name:ident = $parse:path) => {
        $(#[$doc])*
        pub(crate) struct $name;

        impl Kind for $name {
            type Value = String;

            fn parse(s: &str) -> Result<String, String> {
                $parse(s)
            }

            fn from_toml(value: &Value) -> Result<String, String> {
                $parse(&text(value)?)
            }

            fn to_toml(value: &String) -> Value {
                Value::String(value.clone())
            }
        }
    };
}

checked_text!(
    /// `os/arch[/variant]`.
    Platform = parse_platform
);
checked_text!(
    /// A tracing filter.
    LogLevel = parse_log_level
);

/// `IP:PORT`.
pub(crate) struct Addr;

impl Kind for Addr {
    type Value = SocketAddr;

    fn parse(s: &str) -> Result<SocketAddr, String> {
        parse_addr(s)
    }

    fn from_toml(value: &Value) -> Result<SocketAddr, String> {
        parse_addr(&text(value)?)
    }

    fn to_toml(value: &SocketAddr) -> Value {
        Value::String(value.to_string())
    }
}

/// `IP:PORT`, or `off` (`None`).
pub(crate) struct AddrOrOff;

impl Kind for AddrOrOff {
    type Value = Option<SocketAddr>;

    fn parse(s: &str) -> Result<Option<SocketAddr>, String> {
        parse_admin_listen(s)
    }

    fn from_toml(value: &Value) -> Result<Option<SocketAddr>, String> {
        parse_admin_listen(&text(value)?)
    }

    fn to_toml(value: &Option<SocketAddr>) -> Value {
        Value::String(value.map_or("off".into(), |a| a.to_string()))
    }
}

/// A duration with a unit (`500ms`, `15s`); in the file, a string.
pub(crate) struct Dur;

impl Kind for Dur {
    type Value = Duration;

    fn parse(s: &str) -> Result<Duration, String> {
        parse_duration(s)
    }

    fn from_toml(value: &Value) -> Result<Duration, String> {
        match value {
            Value::String(s) => parse_duration(s),
            other => Err(expected("a duration such as \"15s\" or \"500ms\"", other)),
        }
    }

    fn to_toml(value: &Duration) -> Value {
        Value::String(show_duration(*value))
    }
}

/// A whole number; in the file, an integer.
pub(crate) struct Count;

impl Kind for Count {
    type Value = u32;

    fn parse(s: &str) -> Result<u32, String> {
        s.parse().map_err(|_| format!("{s:?} is not a whole number"))
    }

    fn from_toml(value: &Value) -> Result<u32, String> {
        let n = value.as_integer().ok_or_else(|| expected("a whole number", value))?;
        u32::try_from(n).map_err(|_| format!("{n} is out of range"))
    }

    fn to_toml(value: &u32) -> Value {
        Value::Integer(i64::from(*value))
    }
}

/// A size: bytes, or with a K/M/G suffix; in the file also a plain integer.
pub(crate) struct Bytes;

impl Kind for Bytes {
    type Value = u64;

    fn parse(s: &str) -> Result<u64, String> {
        parse_bytes(s)
    }

    fn from_toml(value: &Value) -> Result<u64, String> {
        match value {
            Value::Integer(n) => u64::try_from(*n).map_err(|_| format!("{n} is not a byte size")),
            Value::String(s) => parse_bytes(s),
            other => Err(expected("a size such as 1048576 or \"256MiB\"", other)),
        }
    }

    fn to_toml(value: &u64) -> Value {
        Value::String(show_bytes(*value))
    }
}

/// A size, or `0` or `off` for no limit (`None`).
pub(crate) struct SizeOrOff;

impl Kind for SizeOrOff {
    type Value = Option<u64>;

    fn parse(s: &str) -> Result<Option<u64>, String> {
        parse_max_cache_bytes(s)
    }

    fn from_toml(value: &Value) -> Result<Option<u64>, String> {
        match value {
            Value::String(s) => parse_max_cache_bytes(s),
            other => Bytes::from_toml(other).map(|n| Some(n).filter(|&n| n > 0)),
        }
    }

    fn to_toml(value: &Option<u64>) -> Value {
        Value::String(value.map_or("off".into(), show_bytes))
    }
}

/// A CIDR, or one address.
pub(crate) struct Cidr;

impl Kind for Cidr {
    type Value = IpNet;

    fn parse(s: &str) -> Result<IpNet, String> {
        parse_cidr(s)
    }

    fn from_toml(value: &Value) -> Result<IpNet, String> {
        parse_cidr(&text(value)?)
    }

    fn to_toml(value: &IpNet) -> Value {
        Value::String(value.to_string())
    }
}

/// `text` or `json`.
pub(crate) struct Format;

impl Kind for Format {
    type Value = LogFormat;

    fn parse(s: &str) -> Result<LogFormat, String> {
        s.parse()
    }

    fn from_toml(value: &Value) -> Result<LogFormat, String> {
        text(value)?.parse()
    }

    fn to_toml(value: &LogFormat) -> Value {
        Value::String(value.to_string())
    }
}

/// A switch that a flag can only turn on; the variable and the file say `true` or `false`.
pub(crate) struct Switch;

impl Kind for Switch {
    type Value = bool;

    fn parse(s: &str) -> Result<bool, String> {
        parse_bool(s)
    }

    fn from_toml(value: &Value) -> Result<bool, String> {
        value.as_bool().ok_or_else(|| expected("true or false", value))
    }

    fn to_toml(value: &bool) -> Value {
        Value::Boolean(*value)
    }

    fn arg(arg: Arg) -> Arg {
        arg.action(ArgAction::SetTrue)
    }

    fn from_matches(matches: &ArgMatches, id: &str) -> Option<bool> {
        // Leaving the switch out lets the environment or the file decide.
        matches.get_flag(id).then_some(true)
    }
}

/// A switch whose flag and variable say `--no-…` (turn it off), while the file key states it positively
/// (`--no-serve-stale`, `WASMCACHE_NO_SERVE_STALE=true`, `serve-stale = false`). The value is the positive one.
pub(crate) struct NoSwitch;

impl Kind for NoSwitch {
    type Value = bool;

    fn parse(s: &str) -> Result<bool, String> {
        parse_bool(s).map(|no| !no)
    }

    fn from_toml(value: &Value) -> Result<bool, String> {
        Switch::from_toml(value)
    }

    fn to_toml(value: &bool) -> Value {
        Value::Boolean(*value)
    }

    fn arg(arg: Arg) -> Arg {
        arg.action(ArgAction::SetTrue)
    }

    fn from_matches(matches: &ArgMatches, id: &str) -> Option<bool> {
        matches.get_flag(id).then_some(false)
    }
}

/// A list of `K`: a repeatable flag, a comma-separated variable (empty items skipped), an array in the file
/// (or a single item). A list from a higher layer replaces a lower one.
pub(crate) struct List<K>(PhantomData<K>);

impl<K: Kind> Kind for List<K> {
    type Value = Vec<K::Value>;

    fn parse(s: &str) -> Result<Vec<K::Value>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(K::parse)
            .collect()
    }

    fn from_toml(value: &Value) -> Result<Vec<K::Value>, String> {
        match value {
            Value::Array(items) => items.iter().map(K::from_toml).collect(),
            one => Ok(vec![K::from_toml(one)?]),
        }
    }

    fn to_toml(value: &Vec<K::Value>) -> Value {
        Value::Array(value.iter().map(K::to_toml).collect())
    }

    fn arg(arg: Arg) -> Arg {
        arg.action(ArgAction::Append)
            .value_parser(K::parse as fn(&str) -> Result<K::Value, String>)
    }

    fn from_matches(matches: &ArgMatches, id: &str) -> Option<Vec<K::Value>> {
        let items: Vec<K::Value> = matches.get_many::<K::Value>(id)?.cloned().collect();
        Some(items).filter(|items| !items.is_empty())
    }
}

/// Registry mirrors, `(registry, mirror)` in the order they are tried. Flags and the variable take
/// `REGISTRY=URL` items; the file has a table of quoted registry names, each with its list of URLs.
pub(crate) struct Mirrors;

impl Kind for Mirrors {
    type Value = Vec<(String, url::Url)>;

    fn parse(s: &str) -> Result<Self::Value, String> {
        List::<Mirror>::parse(s)
    }

    fn from_toml(value: &Value) -> Result<Self::Value, String> {
        let table = value
            .as_table()
            .ok_or_else(|| expected("a table of registries", value))?;
        let mut mirrors = Vec::new();
        for (registry, urls) in table {
            mirrors.extend(registry_mirrors(registry, urls)?);
        }
        Ok(mirrors)
    }

    /// Registries sorted by name.
    fn to_toml(value: &Self::Value) -> Value {
        let mut registries: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for (registry, url) in value {
            registries
                .entry(registry)
                .or_default()
                .push(Value::String(url.to_string()));
        }
        Value::Table(
            registries
                .into_iter()
                .map(|(registry, urls)| (registry.to_string(), Value::Array(urls)))
                .collect(),
        )
    }

    fn arg(arg: Arg) -> Arg {
        List::<Mirror>::arg(arg)
    }

    fn from_matches(matches: &ArgMatches, id: &str) -> Option<Self::Value> {
        List::<Mirror>::from_matches(matches, id)
    }

    /// Registries sorted by name, each registry's mirrors in order; an error names the registry's key and line.
    fn from_file(value: &Spanned<DeValue<'_>>, file: &Reader<'_>, key: &str) -> Result<Self::Value, ConfigError> {
        let DeValue::Table(table) = value.get_ref() else {
            let line = file.line(value.span().start);
            let found = file.value(value, key)?;
            return Err(file.error(
                Some(line),
                Some(key.to_string()),
                expected("a table of registries", &found),
            ));
        };
        let mut entries: Vec<_> = table.iter().collect();
        entries.sort_by(|(a, _), (b, _)| a.get_ref().cmp(b.get_ref()));
        let mut mirrors = Vec::new();
        for (registry, urls) in entries {
            let registry: &str = registry.get_ref();
            let line = file.line(urls.span().start);
            let key = format!("{key}.{registry:?}");
            let urls = file.value(urls, &key)?;
            let found =
                registry_mirrors(registry, &urls).map_err(|reason| file.error(Some(line), Some(key), reason))?;
            mirrors.extend(found);
        }
        Ok(mirrors)
    }
}

/// One `REGISTRY=URL`.
pub(crate) struct Mirror;

impl Kind for Mirror {
    type Value = (String, url::Url);

    fn parse(s: &str) -> Result<Self::Value, String> {
        parse_mirror(s)
    }

    fn from_toml(value: &Value) -> Result<Self::Value, String> {
        parse_mirror(&text(value)?)
    }

    fn to_toml(value: &Self::Value) -> Value {
        Value::String(format!("{}={}", value.0, value.1))
    }
}

/// The mirrors of one registry in the file: a list of URLs.
fn registry_mirrors(registry: &str, urls: &Value) -> Result<Vec<(String, url::Url)>, String> {
    if urls.is_table() {
        return Err(format!(
            "expected a list of mirror URLs; quote a registry name with dots: \"{registry}.…\" = [...]"
        ));
    }
    List::<Text>::from_toml(urls)?
        .iter()
        .map(|url| parse_mirror(&format!("{registry}={url}")))
        .collect()
}

pub(super) fn expected(what: &str, value: &Value) -> String {
    format!("expected {what}, found {} {value}", value.type_str())
}

fn text(value: &Value) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| expected("a string", value))
}

/// `24h`, `90s`, `500ms`: the largest whole unit, in a form `parse_duration` reads back.
fn show_duration(d: Duration) -> String {
    let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
    match (secs, nanos) {
        (0, 0) => "0s".into(),
        (s, 0) if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        (s, 0) if s.is_multiple_of(60) => format!("{}m", s / 60),
        (s, 0) => format!("{s}s"),
        _ if d.as_nanos().is_multiple_of(1_000_000) => format!("{}ms", d.as_millis()),
        _ => humantime::format_duration(d).to_string(),
    }
}

/// `256MiB`, `4KiB`, or the plain number when it is no whole number of KiB.
fn show_bytes(n: u64) -> String {
    match n {
        0 => "0".into(),
        n if n.is_multiple_of(1 << 30) => format!("{}GiB", n >> 30),
        n if n.is_multiple_of(1 << 20) => format!("{}MiB", n >> 20),
        n if n.is_multiple_of(1 << 10) => format!("{}KiB", n >> 10),
        n => n.to_string(),
    }
}
