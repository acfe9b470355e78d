//! The wasmcache benchmarks (`bench/run`, or `cargo bench --bench wasmcache`): starts its own registry,
//! nginx and daemons on loopback, runs every comparison against its peer with alternating A/B
//! repetitions, prints medians and ratios, and writes `docs/benchmarks.md` from the measured numbers.
//!
//! # Layout
//! - `procs`: the processes under test (daemon, registry, nginx), killed with the bench; free ports.
//! - `registry`: Debian's `docker-registry` on loopback, CNCF Wasm pushes, a counting proxy.
//! - `load`: the load client, gRPC Fetch over the Unix socket or HTTP/1.1 GETs, many clients at once.
//! - `stats`, `report`: medians and percentiles; the machine description and the markdown report.
//! - One module per comparison: `pull` (1, cold pull vs skopeo), `serving` (2, 3 and 5: hit throughput
//!   vs nginx, small-module latency vs the health-check floor, peak RSS), `flight` (4, single flight),
//!   `startup` (6, start-up with 10,000 cached modules), `sha` (7, sha256 vs `openssl speed`), `blobs` (8
//!   and 9, blob GETs from the registry endpoint vs nginx and vs `docker-registry`).
//!
//! Flags (after `bench/run` or `cargo bench --bench wasmcache --`): `--only 2,3` runs some comparisons
//! (the report then goes to `target/benchmarks-partial.md`), `--quick` halves the repetitions,
//! `--out FILE` writes the report elsewhere.

mod blobs;
mod flight;
mod load;
mod procs;
mod pull;
mod registry;
mod report;
mod serving;
mod sha;
mod startup;
mod stats;

use std::path::PathBuf;
use std::time::Instant;

use report::Section;

/// What to run, from the command line.
pub struct Opts {
    only: Option<Vec<u8>>,
    quick: bool,
    out: Option<PathBuf>,
}

impl Opts {
    fn parse() -> Opts {
        let mut opts = Opts {
            only: None,
            quick: false,
            out: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                // cargo bench passes --bench to every bench binary.
                "--bench" => {}
                "--quick" => opts.quick = true,
                "--only" => {
                    let list = args.next().expect("--only needs a list such as 2,3");
                    let targets = list
                        .split(',')
                        .map(|t| match t.trim().parse::<u8>() {
                            Ok(n @ 1..=9) => n,
                            _ => panic!("--only takes target numbers 1 to 9, got {t:?}"),
                        })
                        .collect();
                    opts.only = Some(targets);
                }
                "--out" => opts.out = Some(args.next().expect("--out needs a file").into()),
                other => panic!("unknown argument {other:?} (known: --only LIST, --quick, --out FILE)"),
            }
        }
        opts
    }

    pub fn runs(&self, target: u8) -> bool {
        self.only.as_ref().is_none_or(|only| only.contains(&target))
    }

    /// `full` repetitions, or about half with `--quick` (at least 3, so a median means something).
    pub fn reps(&self, full: usize) -> usize {
        if self.quick {
            full.div_ceil(2).max(3)
        } else {
            full
        }
    }
}

fn main() {
    let opts = Opts::parse();
    let started = Instant::now();
    let work = tempfile::Builder::new()
        .prefix("wasmcache-bench")
        .tempdir()
        .expect("bench temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let machine = report::Machine::describe();
    for (k, v) in &machine.lines {
        eprintln!("bench: {k}: {v}");
    }

    let mut sections: Vec<Section> = Vec::new();
    let mut done = |section: Section| {
        println!("{}", report::render_rows(&section));
        sections.push(section);
    };
    // The sha256 comparison first: it wants a quiet machine, before any server runs.
    if opts.runs(7) {
        done(sha::run(work.path(), &opts));
    }
    if opts.runs(1) {
        done(pull::run(&rt, work.path(), &opts));
    }
    if opts.runs(2) || opts.runs(3) || opts.runs(5) {
        for section in serving::run(&rt, work.path(), &opts) {
            done(section);
        }
    }
    if opts.runs(4) {
        done(flight::run(&rt, work.path(), &opts));
    }
    if opts.runs(6) {
        done(startup::run(&rt, work.path(), &opts));
    }
    if opts.runs(8) || opts.runs(9) {
        for section in blobs::run(&rt, work.path(), &opts) {
            done(section);
        }
    }
    sections.sort_by_key(|s| s.title.clone());

    let complete = opts.only.is_none();
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = opts.out.clone().unwrap_or_else(|| {
        if complete {
            manifest_dir.join("docs/benchmarks.md")
        } else {
            manifest_dir.join("target/benchmarks-partial.md")
        }
    });
    let date = procs::output(std::process::Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]));
    let text = report::render(
        &machine,
        &sections,
        date.trim(),
        started.elapsed().as_secs_f64(),
        complete,
    );
    // What follows the kept-by-hand marker in the existing report is not ours to regenerate.
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    report::write(&path, &report::keep_hand_written(&text, &existing));
    let met = sections.iter().filter(|s| s.met()).count();
    println!(
        "bench: {met} of {} targets met in {:.0} s; report written to {}",
        sections.len(),
        started.elapsed().as_secs_f64(),
        path.display()
    );
}
