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

/// A GNU header block of `kind` for `name` with `size` bytes of data to follow.
fn header(kind: tar::EntryType, name: &str, size: u64) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.set_path(name).unwrap();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    header.as_bytes().to_vec()
}

/// `header` and `data`, padded to a whole block.
fn member(kind: tar::EntryType, name: &str, data: &[u8]) -> Vec<u8> {
    let mut out = header(kind, name, data.len() as u64);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
    out
}

/// The metadata entry `kind` holding `meta`, then the regular file `x` it describes, then a good
/// `plugin.wasm`, then the end-of-archive blocks.
fn archive_after_metadata(kind: tar::EntryType, meta: &[u8]) -> Vec<u8> {
    let mut t = member(kind, "././@LongLink", meta);
    t.extend(member(tar::EntryType::Regular, "x", b""));
    t.extend(tar_of(&[("plugin.wasm", &module(b"after-metadata"))]));
    t
}

fn assert_archive_error(err: UnboxError, words: &[&str]) {
    let message = err.to_string();
    assert!(matches!(err, UnboxError::Archive(_)), "{message}");
    for word in words {
        assert!(message.contains(word), "{message:?} does not say {word:?}");
    }
}

#[test]
fn long_name_over_the_metadata_limit_refuses_the_archive() {
    let t = gzip(&archive_after_metadata(
        tar::EntryType::GNULongName,
        &vec![b'a'; 1 << 20],
    ));
    let err = unwrap_bytes(&t, 256 << 20).unwrap_err();
    assert_archive_error(err, &["GNU long name", "1048576 bytes", "65536-byte limit"]);
}

#[test]
fn long_link_over_the_metadata_limit_refuses_the_archive() {
    let t = archive_after_metadata(tar::EntryType::GNULongLink, &vec![b'l'; 1 << 20]);
    let err = unwrap_bytes(&t, 256 << 20).unwrap_err();
    assert_archive_error(err, &["GNU long link", "1048576 bytes", "65536-byte limit"]);
}

/// One PAX record, `LEN key=value\n`, where LEN counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = key.len() + value.len() + 3; // space, '=', newline
    let mut len = body_len + 1;
    while len != body_len + len.to_string().len() {
        len = body_len + len.to_string().len();
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

#[test]
fn pax_header_over_the_metadata_limit_refuses_the_archive() {
    let pax = pax_record("comment", &vec![b'p'; 1 << 20]);
    let t = archive_after_metadata(tar::EntryType::XHeader, &pax);
    let err = unwrap_bytes(&t, 256 << 20).unwrap_err();
    assert_archive_error(err, &["PAX extended header", "65536-byte limit"]);
}

#[test]
fn pax_global_header_over_the_metadata_limit_refuses_the_archive() {
    let pax = pax_record("comment", &vec![b'g'; 1 << 20]);
    let t = archive_after_metadata(tar::EntryType::XGlobalHeader, &pax);
    let err = unwrap_bytes(&t, 256 << 20).unwrap_err();
    assert_archive_error(err, &["PAX global header", "65536-byte limit"]);
}

#[test]
fn long_name_within_the_limit_names_the_entry() {
    // The builder writes a GNU long-name entry for a path over 100 bytes.
    let m = module(b"deep");
    let deep = format!("{}/plugin.wasm", "d".repeat(300));
    let t = tar_of(&[("other.wasm", &module(b"other")), (deep.as_str(), &m)]);
    assert!(
        t.chunks(512)
            .any(|block| block.starts_with(b"././@LongLink") && block[156] == b'L'),
        "the fixture has a long-name entry"
    );
    assert_eq!(unwrap_bytes(&t[..], 1 << 20).unwrap(), m);
}

#[test]
fn pax_path_names_the_entry() {
    let m = module(b"pax-path");
    let mut t = member(
        tar::EntryType::XHeader,
        "PaxHeader",
        &pax_record("path", b"dir/plugin.wasm"),
    );
    t.extend(member(tar::EntryType::Regular, "not-the-name", &m));
    t.extend(tar_of(&[("other.wasm", &module(b"other"))]));
    assert_eq!(unwrap_bytes(&t, 1 << 20).unwrap(), m);
}

#[test]
fn pax_size_that_differs_from_the_header_refuses_the_archive() {
    let m = module(b"pax-size");
    let mut t = member(tar::EntryType::XHeader, "PaxHeader", &pax_record("size", b"4"));
    t.extend(member(tar::EntryType::Regular, "plugin.wasm", &m));
    t.extend(vec![0u8; 1024]);
    let err = unwrap_bytes(&t, 1 << 20).unwrap_err();
    assert_archive_error(err, &["PAX size 4", "header's 16"]);
}

#[test]
fn two_long_names_for_one_member_refuse_the_archive() {
    let mut t = member(tar::EntryType::GNULongName, "././@LongLink", b"a.wasm\0");
    t.extend(member(tar::EntryType::GNULongName, "././@LongLink", b"plugin.wasm\0"));
    t.extend(tar_of(&[("x", &module(b"x"))]));
    let err = unwrap_bytes(&t, 1 << 20).unwrap_err();
    assert_archive_error(err, &["two GNU long name entries"]);
}

#[test]
fn gnu_sparse_entry_refuses_the_archive() {
    let mut t = member(tar::EntryType::GNUSparse, "sparse", b"");
    t.extend(tar_of(&[("plugin.wasm", &module(b"x"))]));
    let err = unwrap_bytes(&t, 1 << 20).unwrap_err();
    assert_archive_error(err, &["sparse"]);
}

#[test]
fn archive_without_a_module_names_its_first_entries_and_counts_the_rest() {
    let names: Vec<String> = (0..1000).map(|i| format!("file-{i}.txt")).collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let err = unwrap_bytes(&tar_of(&entries), 1 << 20).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("\"file-0.txt\"") && message.contains("\"file-9.txt\""),
        "{message}"
    );
    assert!(!message.contains("file-10.txt"), "{message}");
    assert!(message.contains("... 990 more"), "{message}");
}
