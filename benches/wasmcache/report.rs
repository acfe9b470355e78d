//! The machine description and `docs/benchmarks.md`, written from the numbers measured in this run.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// One line of the summary table.
pub struct Row {
    pub what: String,
    pub goal: String,
    pub ours: String,
    pub peer: String,
    pub ratio: String,
    /// `None` for a figure reported without a goal of its own.
    pub met: Option<bool>,
}

/// One comparison: its summary rows and its section of the report (method, repetitions, raw values).
pub struct Section {
    pub title: String,
    pub rows: Vec<Row>,
    pub body: String,
}

impl Section {
    pub fn met(&self) -> bool {
        self.rows.iter().all(|r| r.met != Some(false))
    }
}

/// Ratio with two decimals and a `×`.
pub fn ratio(value: f64) -> String {
    format!("{value:.2}×")
}

/// What the numbers were measured on.
pub struct Machine {
    pub lines: Vec<(String, String)>,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let flags = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("flags")?.split_once(':').map(|(_, v)| v.to_string()))
            .unwrap_or_default();
        let sha_ni = if flags.split_whitespace().any(|f| f == "sha_ni") {
            "SHA extensions: yes"
        } else {
            "SHA extensions: no"
        };
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        let memory = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| format!("{:.1} GiB", kb as f64 / (1024.0 * 1024.0)))
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let os = std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
            .unwrap_or_else(|| "unknown".into());
        let nginx = crate::procs::nginx_bin();
        let lines = vec![
            ("CPU".into(), format!("{cpu} ({sha_ni})")),
            ("Cores".into(), cores.to_string()),
            ("Memory".into(), memory),
            ("Kernel".into(), format!("Linux {kernel}")),
            ("OS".into(), os),
            ("wasmcache".into(), wasmcache_version()),
            ("rustc".into(), first_line(Command::new("rustc").arg("--version"))),
            ("skopeo".into(), first_line(Command::new("skopeo").arg("--version"))),
            ("nginx".into(), first_line(Command::new(nginx).arg("-v"))),
            ("openssl".into(), first_line(Command::new("openssl").arg("version"))),
            (
                "docker-registry".into(),
                first_line(Command::new(crate::procs::REGISTRY_BIN).arg("--version")),
            ),
        ];
        Machine { lines }
    }
}

fn wasmcache_version() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let rev = first_line(Command::new("git").args(["-C", dir, "rev-parse", "--short", "HEAD"]));
    let dirty = Command::new("git")
        .args(["-C", dir, "status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    format!(
        "{} (commit {rev}{}), release build",
        env!("CARGO_PKG_VERSION"),
        if dirty { ", with uncommitted changes" } else { "" }
    )
}

/// The first non-empty line a command prints on stdout or stderr (nginx prints its version on stderr).
fn first_line(command: &mut Command) -> String {
    match command.output() {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            text.lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("unknown")
                .to_string()
        }
        Err(e) => format!("not found ({e})"),
    }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "(no goal)",
    }
}

/// The whole report as markdown.
pub fn render(machine: &Machine, sections: &[Section], date: &str, duration_s: f64, complete: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Generated by `bench/run` on {date} in {duration_s:.0} s; do not edit by hand, run `bench/run` again \
         (the sections after the `<!-- kept by bench/run ... -->` line, if any, are written by hand and kept as they are). \
         Every server (the daemon, Debian's `docker-registry`, nginx) ran on this machine on loopback, \
         started by the bench; each comparison alternates its sides (A B, B A, ...; three sides rotate) and \
         reports medians over the repetitions, and ratios of medians, because the machine is shared and noisy.\n"
    );
    if !complete {
        let _ = writeln!(out, "**Partial run**: only some comparisons were selected.\n");
    }
    let _ = writeln!(out, "## Machine\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    for (k, v) in &machine.lines {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    let _ = writeln!(out, "\n## Summary\n");
    let _ = writeln!(
        out,
        "| Target | Goal | wasmcache | Peer | Ratio | Result |\n|---|---|---|---|---|---|"
    );
    for section in sections {
        for row in &section.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                row.what,
                row.goal,
                row.ours,
                row.peer,
                row.ratio,
                verdict(row.met)
            );
        }
    }
    let met = sections.iter().filter(|s| s.met()).count();
    let _ = writeln!(out, "\n{met} of {} targets met.\n", sections.len());
    for section in sections {
        let _ = writeln!(out, "## {}\n", section.title);
        let _ = writeln!(out, "{}", section.body.trim_end());
        let _ = writeln!(out);
    }
    out
}

/// The rows of one section as plain text, for the terminal as the run goes.
pub fn render_rows(section: &Section) -> String {
    let mut out = format!("== {}", section.title);
    for row in &section.rows {
        let _ = write!(
            out,
            "\n   {}: {} vs {} = {} (goal {}): {}",
            row.what,
            row.ours,
            row.peer,
            row.ratio,
            row.goal,
            verdict(row.met).trim_matches('*')
        );
    }
    out
}

/// The line from which the rest of `docs/benchmarks.md` is written by hand (from `tests/tier_scale.rs`), not
/// measured here: a run keeps it and everything after it as it was.
pub const KEPT_MARKER: &str = "<!-- kept by bench/run: sections below are written by hand from tests/tier_scale.rs -->";

/// `generated`, then everything of `existing` from the line that begins with [`KEPT_MARKER`] to its end,
/// byte for byte; just `generated` when `existing` has no such line.
pub fn keep_hand_written(generated: &str, existing: &str) -> String {
    let kept = existing
        .match_indices(KEPT_MARKER)
        .map(|(at, _)| at)
        .find(|&at| at == 0 || existing.as_bytes()[at - 1] == b'\n');
    match kept {
        Some(at) => format!("{}\n\n{}", generated.trim_end(), &existing[at..]),
        None => generated.to_string(),
    }
}

pub fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create report dir");
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
