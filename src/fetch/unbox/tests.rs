use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

use super::*;

fn module(tag: &[u8]) -> Vec<u8> {
    let mut m = WASM_HEADER.to_vec();
    m.extend_from_slice(tag);
    m
}

fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn unwrap_bytes(payload: &[u8], limit: u64) -> Result<Vec<u8>, UnboxError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("payload");
    std::fs::write(&path, payload).unwrap();
    let mut out = Vec::new();
    unwrap(&path, &mut out, limit, Pick::PluginOrOnlyWasm).map(|()| out)
}

#[test]
fn gzip_module_is_unwrapped() {
    let m = module(b"gz");
    assert_eq!(unwrap_bytes(&gzip(&m), 1 << 20).unwrap(), m);
}

#[test]
fn tar_takes_plugin_wasm_among_other_files() {
    let m = module(b"plugin");
    let t = tar_of(&[
        ("README", b"hi"),
        ("other.wasm", &module(b"other")),
        ("plugin.wasm", &m),
    ]);
    assert_eq!(unwrap_bytes(&t, 1 << 20).unwrap(), m);
}

#[test]
fn tar_gz_takes_the_only_wasm_entry() {
    let m = module(b"only");
    let t = gzip(&tar_of(&[("dir/filter.wasm", &m), ("LICENSE", b"x")]));
    assert_eq!(unwrap_bytes(&t, 1 << 20).unwrap(), m);
}

#[test]
fn tar_with_two_wasm_entries_and_no_plugin_wasm_is_ambiguous() {
    let t = tar_of(&[("a.wasm", &module(b"a")), ("b.wasm", &module(b"b"))]);
    let err = unwrap_bytes(&t, 1 << 20).unwrap_err();
    assert!(err.to_string().contains("ambiguous"), "{err}");
}

#[test]
fn tar_entry_with_parent_components_is_never_chosen() {
    let t = tar_of(&[("safe.txt", b"x")]);
    let mut raw = t.clone();
    // Rewrite the name in place to `../plugin.wasm` (the builder refuses such names).
    let evil = b"../plugin.wasm\0";
    raw[..evil.len()].copy_from_slice(evil);
    let header = tar::Header::from_byte_slice(&raw[..512]);
    let mut header = header.clone();
    header.set_cksum();
    raw[..512].copy_from_slice(header.as_bytes());
    let err = unwrap_bytes(&raw, 1 << 20).unwrap_err();
    assert!(matches!(err, UnboxError::Archive(_)), "{err}");
}

#[test]
fn image_layer_wants_plugin_wasm_even_with_a_single_wasm_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer");
    std::fs::write(&path, gzip(&tar_of(&[("bin/filter.wasm", &module(b"x"))]))).unwrap();
    let err = unwrap(&path, &mut Vec::new(), 1 << 20, Pick::PluginOnly).unwrap_err();
    assert!(err.to_string().contains("plugin.wasm"), "{err}");
}

#[test]
fn gzip_bomb_stops_at_the_cap() {
    let bomb = gzip(&vec![0u8; 8 << 20]);
    let err = unwrap_bytes(&bomb, 1 << 20).unwrap_err();
    assert!(
        matches!(err, UnboxError::TooLarge { limit } if limit == 1 << 20),
        "{err}"
    );
}

#[test]
fn module_of_exactly_the_cap_is_accepted() {
    let m = module(&vec![7u8; 1000 - 8]);
    assert_eq!(unwrap_bytes(&gzip(&m), 1000).unwrap(), m);
}

#[test]
fn payload_that_is_neither_wasm_nor_archive_is_not_wasm() {
    let err = unwrap_bytes(b"<html>nope</html>", 1 << 20).unwrap_err();
    assert!(matches!(err, UnboxError::NotWasm(_)), "{err}");
}

#[test]
fn wasm_header_check_wants_version_one() {
    assert!(check_wasm(&module(b"")).is_ok());
    assert!(check_wasm(b"\0asm\x0d\0\x01\0")
        .unwrap_err()
        .to_string()
        .contains("version"));
    assert!(check_wasm(b"\0as").is_err());
}
