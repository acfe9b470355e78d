//! When to try an upstream request again, and how long to wait first. Shared by every network fetcher.

use std::time::Duration;

/// Exponential backoff with jitter: `initial`, then x`factor` per attempt, capped at `max`, each delay
/// drawn from 80-120% of its nominal value so that many nodes retrying one registry spread out.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    /// Attempts in total, the first one included.
    pub attempts: u32,
    pub initial: Duration,
    pub factor: f64,
    pub max: Duration,
}

impl Backoff {
    /// The pause before attempt `attempt + 1` (attempts count from 1).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let nominal = self.initial.as_secs_f64() * self.factor.powi(attempt.saturating_sub(1) as i32);
        let capped = nominal.min(self.max.as_secs_f64());
        Duration::from_secs_f64(capped * (0.8 + 0.4 * fastrand::f64()))
    }
}

/// Why an attempt cut off by `--fetch-deadline` failed. Such an attempt counts as timed out: it is retried,
/// and the last one ends the fetch with DEADLINE_EXCEEDED.
pub fn past_deadline(deadline: Duration) -> String {
    format!(
        "the attempt did not finish within the --fetch-deadline of {}",
        humantime::format_duration(deadline)
    )
}

/// HTTP statuses worth retrying: 429 and 5xx, except those that say the request itself can never work
/// (501 Not Implemented, 505 HTTP Version Not Supported, 511 Network Authentication Required).
pub fn retryable_status(status: u16) -> bool {
    status == 429 || (500..600).contains(&status) && !matches!(status, 501 | 505 | 511)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_by_the_factor_and_stop_at_the_cap() {
        let b = Backoff {
            attempts: 5,
            initial: Duration::from_millis(500),
            factor: 1.5,
            max: Duration::from_secs(1),
        };
        let d1 = b.delay_after(1).as_secs_f64();
        let d2 = b.delay_after(2).as_secs_f64();
        assert!((0.4..=0.6).contains(&d1), "{d1}");
        assert!((0.6..=0.9).contains(&d2), "{d2}");
        assert!(b.delay_after(20) <= Duration::from_millis(1200));
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        for s in [429, 500, 502, 503, 504, 599] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 410, 501, 505, 511, 200] {
            assert!(!retryable_status(s), "{s}");
        }
    }
}
