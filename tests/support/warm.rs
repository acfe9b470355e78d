//! What one `wasmcache warm` run printed, and readers for its summary table: shared by the file warm-up
//! tests (tests/warm.rs) and the cluster ones (tests/cluster.rs).

use std::process::Output;

/// What one `wasmcache warm` run printed and how it exited.
pub struct Warmed {
    pub output: Output,
}

impl Warmed {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// stdout then stderr, for checks that do not care which stream a line went to.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }

    pub fn describe(&self) -> String {
        format!(
            "exit {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.output.status,
            self.stdout(),
            self.stderr()
        )
    }

    #[track_caller]
    pub fn assert_success(&self) {
        assert!(self.output.status.success(), "warm failed:\n{}", self.describe());
    }

    #[track_caller]
    pub fn assert_failure(&self) {
        assert!(
            !self.output.status.success(),
            "warm succeeded, expected a failure:\n{}",
            self.describe()
        );
    }

    /// The summary row whose first column is `plugin`.
    #[track_caller]
    pub fn row(&self, plugin: &str) -> String {
        let stdout = self.stdout();
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(plugin))
            .unwrap_or_else(|| panic!("no summary row for {plugin}:\n{}", self.describe()))
            .to_string()
    }

    /// The OUTCOME column of a successful row (its last column).
    #[track_caller]
    pub fn outcome(&self, plugin: &str) -> String {
        let row = self.row(plugin);
        row.split_whitespace().last().unwrap_or_default().to_string()
    }

    /// The data rows of the summary (every line of stdout after the header).
    pub fn rows(&self) -> Vec<String> {
        self.stdout()
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .map(String::from)
            .collect()
    }

    /// The summary's header names the columns PLUGIN URL SHA256 TIME OUTCOME, in that order.
    #[track_caller]
    pub fn assert_header(&self) {
        let stdout = self.stdout();
        let header: Vec<&str> = stdout.lines().next().unwrap_or_default().split_whitespace().collect();
        assert_eq!(
            header,
            ["PLUGIN", "URL", "SHA256", "TIME", "OUTCOME"],
            "summary header:\n{}",
            self.describe()
        );
    }

    /// The first column of every summary row.
    pub fn plugins(&self) -> Vec<String> {
        self.stdout()
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect()
    }
}
