//! The store suite: each scenario runs on a fresh store and again on a store reopened from disk.

use std::io::Write;

use super::*;

/// Runs `scenario` on a fresh store, then on one reopened from a directory that already holds data.
fn on_fresh_and_reopened(scenario: impl Fn(&Store)) {
    let fresh = tempfile::tempdir().unwrap();
    scenario(&open(fresh.path()));

    let used = tempfile::tempdir().unwrap();
    {
        let store = open(used.path());
        write_blob(&store, b"unrelated earlier blob", None).unwrap();
    }
    scenario(&open(used.path()));
}

/// Opens a store, waiting for an earlier `Store` on the same directory to let go of the index: sled
/// releases its file lock from a background thread shortly after the last handle is dropped.
fn open(dir: &std::path::Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(dir) {
            Ok(store) => return store,
            Err(StoreError::Index(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => panic!("opening store: {e}"),
        }
    }
}

/// A reference record for `digest` with nothing else known.
pub(super) fn record(digest: Sha256) -> RefRecord {
    RefRecord {
        digest,
        manifest_digest: None,
        index_digest: None,
        resource: None,
        etag: None,
        fetched_at_ms: 1,
        verification: None,
    }
}

fn write_blob(store: &Store, bytes: &[u8], expected: Option<Sha256>) -> Result<Committed, StoreError> {
    let mut ingest = store.ingest().unwrap();
    ingest.write_all(bytes).unwrap();
    store.commit(ingest, expected)
}

#[test]
fn committed_blob_is_readable_and_named_by_its_digest() {
    on_fresh_and_reopened(|store| {
        let c = write_blob(store, b"module", Some(Sha256::of(b"module"))).unwrap();
        assert_eq!(
            c,
            Committed {
                digest: Sha256::of(b"module"),
                size: 6,
                created: true,
            }
        );
        let blob = store.open_blob(&c.digest).unwrap();
        assert_eq!(std::fs::read(&blob.path).unwrap(), b"module");
        assert!(blob.path.ends_with(format!("blobs/sha256/{}", c.digest)));
    });
}

#[test]
fn digest_mismatch_commits_nothing_and_leaves_no_temp_file() {
    on_fresh_and_reopened(|store| {
        let err = write_blob(store, b"module", Some(Sha256::of(b"other"))).unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch(_)), "{err}");
        assert!(!store.contains(&Sha256::of(b"module")));
        assert_eq!(std::fs::read_dir(store.layout().ingest_dir()).unwrap().count(), 0);
    });
}

#[test]
fn committing_an_existing_digest_succeeds() {
    on_fresh_and_reopened(|store| {
        assert!(write_blob(store, b"same", None).unwrap().created);
        assert!(
            !write_blob(store, b"same", None).unwrap().created,
            "the second commit found it stored"
        );
        let listed = store.list().unwrap();
        assert_eq!(listed.iter().filter(|e| e.digest == Sha256::of(b"same")).count(), 1);
    });
}

#[test]
fn abandoned_ingest_is_deleted() {
    on_fresh_and_reopened(|store| {
        let mut ingest = store.ingest().unwrap();
        ingest.write_all(b"partial").unwrap();
        let path = ingest.path().to_path_buf();
        drop(ingest);
        assert!(!path.exists());
    });
}

#[test]
fn reset_ingest_starts_from_empty() {
    on_fresh_and_reopened(|store| {
        let mut ingest = store.ingest().unwrap();
        ingest.write_all(b"garbage from a failed attempt").unwrap();
        ingest.reset().unwrap();
        ingest.write_all(b"good").unwrap();
        let c = store.commit(ingest, Some(Sha256::of(b"good"))).unwrap();
        assert_eq!(c.size, 4);
    });
}

#[test]
fn ingest_digest_covers_what_was_written_since_the_last_reset() {
    on_fresh_and_reopened(|store| {
        let mut ingest = store.ingest().unwrap();
        ingest.write_all(b"garbage from a failed attempt").unwrap();
        ingest.reset().unwrap();
        assert_eq!(ingest.sha256(), Sha256::of(b""));
        ingest.write_all(b"go").unwrap();
        ingest.write_all(b"od").unwrap();
        assert_eq!(ingest.sha256(), Sha256::of(b"good"));
    });
}

#[test]
fn large_ingest_commits_whole_after_early_writeback() {
    on_fresh_and_reopened(|store| {
        // Several writeback steps plus a ragged tail.
        let bytes: Vec<u8> = (0..(9 << 20) + 123).map(|i| (i % 251) as u8).collect();
        let mut ingest = store.ingest().unwrap();
        for chunk in bytes.chunks(100_000) {
            ingest.write_all(chunk).unwrap();
        }
        let c = store.commit(ingest, Some(Sha256::of(&bytes))).unwrap();
        assert_eq!(std::fs::read(store.blob_path(&c.digest)).unwrap(), bytes);
    });
}

#[test]
fn blobs_and_refs_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let digest = {
        let store = open(dir.path());
        let c = write_blob(&store, b"persist", None).unwrap();
        store.index().put_ref("ref", &record(c.digest)).unwrap();
        c.digest
    };
    let store = open(dir.path());
    assert_eq!(store.index().get_ref("ref").unwrap().unwrap().digest, digest);
    assert_eq!(
        std::fs::read(store.open_blob(&digest).unwrap().path).unwrap(),
        b"persist"
    );
}

#[test]
fn temp_files_are_swept_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let mut ingest = store.ingest().unwrap();
        ingest.write_all(b"partial").unwrap();
        // Simulate a crash: the process dies without running Drop.
        std::mem::forget(ingest);
        assert_eq!(std::fs::read_dir(store.layout().ingest_dir()).unwrap().count(), 1);
    }
    let store = open(dir.path());
    assert_eq!(std::fs::read_dir(store.layout().ingest_dir()).unwrap().count(), 0);
}

#[test]
fn blob_altered_on_disk_is_quarantined_on_first_read_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let digest = {
        let store = open(dir.path());
        let c = write_blob(&store, b"original", None).unwrap();
        store.index().put_ref("ref", &record(c.digest)).unwrap();
        c.digest
    };
    std::fs::write(dir.path().join("blobs/sha256").join(digest.to_string()), b"tampered").unwrap();
    let store = open(dir.path());
    let err = store.open_blob(&digest).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert!(!store.contains(&digest));
    assert!(store.index().get_ref("ref").unwrap().is_none());
    assert_eq!(std::fs::read_dir(store.layout().quarantine_dir()).unwrap().count(), 1);
}

#[test]
fn blob_altered_while_running_is_detected_by_its_changed_stamp() {
    on_fresh_and_reopened(|store| {
        let c = write_blob(store, b"original bytes", None).unwrap();
        store.open_blob(&c.digest).unwrap();
        std::fs::write(store.blob_path(&c.digest), b"changed").unwrap();
        assert!(matches!(store.open_blob(&c.digest), Err(StoreError::Corrupt(_))));
    });
}

#[test]
fn delete_removes_blob_and_every_ref_to_it() {
    on_fresh_and_reopened(|store| {
        let c = write_blob(store, b"gone", None).unwrap();
        store.index().put_ref("a", &record(c.digest)).unwrap();
        store.index().put_ref("b", &record(c.digest)).unwrap();
        let mut refs = store.delete(&c.digest).unwrap().unwrap();
        refs.sort();
        assert_eq!(refs, ["a", "b"]);
        assert!(!store.contains(&c.digest));
        assert!(store.delete(&c.digest).unwrap().is_none());
    });
}

#[test]
fn a_second_open_of_a_directory_in_use_names_the_holder_and_sweeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    let mut ingest = first.ingest().unwrap();
    ingest.write_all(b"in progress").unwrap();

    match Store::open(dir.path()) {
        Err(StoreError::InUse { dir: d, pid }) => {
            assert_eq!(d, dir.path());
            assert_eq!(pid, Some(std::process::id()));
        }
        Err(other) => panic!("expected InUse, got {other}"),
        Ok(_) => panic!("a second store opened a directory in use"),
    }
    assert!(ingest.path().exists(), "the first store's ingest is untouched");
}

#[test]
fn reference_records_keep_their_text_form_on_disk() {
    let (module, manifest) = (Sha256::of(b"module"), Sha256::of(b"manifest"));
    let written = serde_json::json!({
        "digest": module.to_string(),
        "manifest_digest": manifest.prefixed(),
        "fetched_at_ms": 7,
    });
    let record: RefRecord = serde_json::from_value(written.clone()).unwrap();
    assert_eq!(
        (record.digest, record.manifest_digest, record.index_digest),
        (module, Some(manifest), None)
    );
    assert_eq!(serde_json::to_value(&record).unwrap(), written);
    let bad = serde_json::json!({"digest": "not-a-digest", "fetched_at_ms": 7});
    assert!(serde_json::from_value::<RefRecord>(bad).is_err());
}
