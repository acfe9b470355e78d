//! Target 7: sha256 throughput of the verification path, on one core, against `openssl speed`.
//!
//! Ours: `wasmcache::digest::hash_reader` over a file in the page cache (what a blob's first read after a
//! restart and `wasmcache verify` do) and `Sha256::of` over bytes in memory. Peer: `openssl speed -evp
//! sha256 -bytes 1048576` (1 MiB blocks, one process, one core). Goal: at least 0.9× openssl.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::report::{ratio, Row, Section};
use crate::stats::{list, median, MIB};
use crate::Opts;

/// Hashed per measurement: large enough that a pass takes tens of milliseconds.
const DATA_BYTES: usize = 256 << 20;
const OPENSSL_SECONDS: &str = "2";
/// How long each of our measurements hashes (whole passes over the data), as openssl's runs do.
const MEASURE_SECONDS: f64 = 1.0;
const GOAL: f64 = 0.9;

pub fn run(work: &Path, opts: &Opts) -> Section {
    let reps = opts.reps(5);
    let mut data = vec![0u8; DATA_BYTES];
    fastrand::Rng::with_seed(7).fill(&mut data);
    let file = work.join("sha-blob");
    std::fs::write(&file, &data).expect("write sha blob");
    let expected = wasmcache::digest::Sha256::of(&data);
    // Into the page cache, and a check that both paths agree.
    let (digest, n) = wasmcache::digest::hash_reader(std::fs::File::open(&file).expect("open blob")).expect("hash");
    assert_eq!((digest, n), (expected, DATA_BYTES as u64));

    let (mut reader, mut memory, mut openssl, mut ring_rates, mut small_reads) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for rep in 0..=reps {
        let rate = |mut hash: Box<dyn FnMut() -> wasmcache::digest::Sha256 + '_>| {
            // Over and over for at least MEASURE_SECONDS, each digest checked; MB/s.
            let started = Instant::now();
            let mut passes = 0;
            while started.elapsed().as_secs_f64() < MEASURE_SECONDS {
                assert_eq!(hash(), expected);
                passes += 1;
            }
            mb_per_s(DATA_BYTES * passes, started.elapsed().as_secs_f64())
        };
        let mut ours = || {
            reader.push(rate(Box::new(|| {
                wasmcache::digest::hash_reader(std::fs::File::open(&file).expect("open blob"))
                    .expect("hash")
                    .0
            })));
            memory.push(rate(Box::new(|| {
                wasmcache::digest::Sha256::of(std::hint::black_box(&data))
            })));
            ring_rates.push(rate(Box::new(|| {
                let digest = ring::digest::digest(&ring::digest::SHA256, std::hint::black_box(&data));
                wasmcache::digest::Sha256::from_bytes(digest.as_ref().try_into().expect("32 bytes"))
            })));
            small_reads.push(rate(Box::new(|| hash_small_reads(&file))));
        };

        if rep == 0 {
            // Warm-up, untimed: page cache, CPU clocks, allocator.
            ours();
            for rates in [&mut reader, &mut memory, &mut ring_rates, &mut small_reads] {
                rates.clear();
            }
            continue;
        }
        if rep % 2 == 0 {
            ours();
            openssl.push(openssl_speed());
        } else {
            openssl.push(openssl_speed());
            ours();
        }
        eprintln!(
            "bench: sha256 rep {}: hash_reader {:.0} MB/s, Sha256::of {:.0} MB/s, openssl {:.0} MB/s",
            rep,
            reader.last().unwrap(),
            memory.last().unwrap(),
            openssl.last().unwrap()
        );
    }
    let _ = std::fs::remove_file(&file);

    let peer = median(&openssl);
    let row = |what: &str, values: &[f64]| {
        let ours = median(values);
        Row {
            what: format!("7. sha256, {what}"),
            goal: format!("≥ {GOAL}× openssl"),
            ours: format!("{ours:.0} MB/s"),
            peer: format!("openssl speed {peer:.0} MB/s"),
            ratio: ratio(ours / peer),
            met: Some(ours / peer >= GOAL),
        }
    };
    let rows = vec![
        row("`hash_reader` over a cached file", &reader),
        row("`Sha256::of` in memory", &memory),
    ];
    let mut body = String::new();
    let _ = writeln!(
        body,
        "One thread hashes {} MiB of random bytes, pass after pass for at least {MEASURE_SECONDS} s per measurement: `wasmcache::digest::hash_reader` over a file in the page \
         cache (1 MiB reads), and `Sha256::of` over the same bytes in memory. The peer is `openssl speed -evp \
         sha256 -bytes 1048576 -seconds {OPENSSL_SECONDS}` (one process, 1 MiB blocks). One untimed warm-up, then {reps} repetitions, \
         alternating ours and openssl; MB/s are 10^6 bytes per second.\n",
        DATA_BYTES as u64 / MIB
    );
    let _ = writeln!(body, "| | median MB/s | per repetition |\n|---|---|---|");
    let _ = writeln!(
        body,
        "| `hash_reader` (file) | {:.0} | {} |",
        median(&reader),
        list(&reader, 0)
    );
    let _ = writeln!(
        body,
        "| `Sha256::of` (memory) | {:.0} | {} |",
        median(&memory),
        list(&memory, 0)
    );
    let _ = writeln!(body, "| openssl speed | {peer:.0} | {} |", list(&openssl, 0));
    let _ = writeln!(
        body,
        "\nFor comparison, not a target: `ring::digest` SHA-256 (in the dependency tree through rustls) over the \
         same bytes in memory: {:.0} MB/s median ({:.2}× openssl; per repetition {}).",
        median(&ring_rates),
        median(&ring_rates) / peer,
        list(&ring_rates, 0)
    );
    let _ = writeln!(
        body,
        "\nAlso not a target: the `hash_reader` loop with 128 KiB reads instead of 1 MiB (a buffer that stays in \
         the L2 cache between the copy and the hash), over the same file: {:.0} MB/s median ({:.2}× openssl; per \
         repetition {}).",
        median(&small_reads),
        median(&small_reads) / peer,
        list(&small_reads, 0)
    );
    Section {
        title: "7. sha256 throughput".into(),
        rows,
        body,
    }
}

/// `hash_reader`'s loop with 128 KiB reads, through the crate's own hashing writer.
fn hash_small_reads(path: &Path) -> wasmcache::digest::Sha256 {
    use std::io::{Read as _, Write as _};
    let mut file = std::fs::File::open(path).expect("open blob");
    let mut hasher = wasmcache::digest::HashingWriter::new(std::io::sink());
    let mut buf = vec![0u8; 128 << 10];
    loop {
        let n = file.read(&mut buf).expect("read blob");
        if n == 0 {
            break;
        }
        hasher.write_all(&buf[..n]).expect("hash");
    }
    hasher.finish().1
}

fn mb_per_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

/// `openssl speed -evp sha256` with 1 MiB blocks, in MB/s (it prints thousands of bytes per second).
fn openssl_speed() -> f64 {
    let text = crate::procs::output(Command::new("openssl").args([
        "speed",
        "-evp",
        "sha256",
        "-bytes",
        "1048576",
        "-seconds",
        OPENSSL_SECONDS,
    ]));
    let line = text
        .lines()
        .rev()
        .find(|l| l.to_ascii_lowercase().starts_with("sha256"))
        .unwrap_or_else(|| panic!("no sha256 line in openssl speed output:\n{text}"));
    let kilo: f64 = line
        .split_whitespace()
        .last()
        .and_then(|v| v.trim_end_matches('k').parse().ok())
        .unwrap_or_else(|| panic!("cannot read openssl speed line {line:?}"));
    kilo * 1e3 / 1e6
}
