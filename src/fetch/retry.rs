//! When to try an upstream request again, and how long to wait first. Shared by every network fetcher.

use std::future::Future;
use std::time::Duration;

use super::FetchError;

/// Exponential backoff with jitter: `initial`, then x`factor` per attempt, capped at `max`, each delay
/// drawn from 80-120% of its nominal value so that many nodes retrying one registry spread out.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Backoff {
    /// Attempts in total, the first one included.
    pub attempts: u32,
    pub initial: Duration,
    pub factor: f64,
    pub max: Duration,
}

impl Backoff {
    /// The pause before attempt `attempt + 1` (attempts count from 1).
    pub(crate) fn delay_after(&self, attempt: u32) -> Duration {
        let nominal = self.initial.as_secs_f64() * self.factor.powi(attempt.saturating_sub(1) as i32);
        let capped = nominal.min(self.max.as_secs_f64());
        Duration::from_secs_f64(capped * (0.8 + 0.4 * fastrand::f64()))
    }
}

/// Why an attempt cut off by `--fetch-deadline` failed. Such an attempt counts as timed out: it is retried,
/// and the last one ends the fetch with DEADLINE_EXCEEDED.
pub(crate) fn past_deadline(deadline: Duration) -> String {
    format!(
        "the attempt did not finish within the --fetch-deadline of {}",
        humantime::format_duration(deadline)
    )
}

/// HTTP statuses worth retrying: 429 and 5xx, except those that say the request itself can never work
/// (501 Not Implemented, 505 HTTP Version Not Supported, 511 Network Authentication Required).
pub(crate) fn retryable_status(status: u16) -> bool {
    status == 429 || (500..600).contains(&status) && !matches!(status, 501 | 505 | 511)
}

/// How one attempt failed: give up now, or try again after a pause.
#[derive(Debug)]
pub(crate) enum Failure {
    Retry { cause: String, timed_out: bool },
    Fatal(FetchError),
}

/// Runs `attempt` until it succeeds, fails for good, or runs out of `backoff.attempts`, pausing between
/// attempts. Each attempt is bounded as a whole by `deadline` (the client's timeouts bound each wait; only
/// this bounds an origin that keeps every wait short and never finishes); one cut off counts as timed out.
/// When every attempt failed, the last cause is the error's, followed by `where_` when given.
pub(crate) async fn run<T, F, Fut>(
    backoff: &Backoff,
    deadline: Duration,
    url: &str,
    where_: Option<&str>,
    mut attempt: F,
) -> Result<T, FetchError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let attempts = backoff.attempts.max(1);
    let (mut cause, mut timed_out) = (String::new(), false);
    for n in 1..=attempts {
        let result = tokio::time::timeout(deadline, attempt()).await.unwrap_or_else(|_| {
            Err(Failure::Retry {
                cause: past_deadline(deadline),
                timed_out: true,
            })
        });
        match result {
            Ok(v) => return Ok(v),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry { cause: c, timed_out: t }) => (cause, timed_out) = (c, t),
        }
        tracing::debug!(url, attempt = n, %cause, "upstream attempt failed");
        if n < attempts {
            tokio::time::sleep(backoff.delay_after(n)).await;
        }
    }
    let url = url.to_string();
    if let Some(place) = where_ {
        cause = format!("{cause} ({place})");
    }
    Err(if timed_out {
        FetchError::Timeout { url, attempts, cause }
    } else {
        FetchError::Unavailable { url, attempts, cause }
    })
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

    fn quick(attempts: u32) -> Backoff {
        Backoff {
            attempts,
            initial: Duration::from_millis(1),
            factor: 1.0,
            max: Duration::from_millis(1),
        }
    }

    #[tokio::test]
    async fn a_transient_failure_is_tried_again_until_it_succeeds() {
        let mut calls = 0;
        let got = run(&quick(3), Duration::from_secs(5), "u", None, || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(Failure::Retry {
                        cause: "reset".into(),
                        timed_out: false,
                    })
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(got.unwrap(), 3);
    }

    #[tokio::test]
    async fn a_fatal_failure_ends_the_loop_at_once() {
        let mut calls = 0;
        let got: Result<(), _> = run(&quick(5), Duration::from_secs(5), "u", None, || {
            calls += 1;
            async { Err(Failure::Fatal(FetchError::Config("no".into()))) }
        })
        .await;
        assert!(matches!(got, Err(FetchError::Config(_))));
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn the_last_cause_and_place_are_reported_after_every_attempt_failed() {
        let got: Result<(), _> = run(
            &quick(2),
            Duration::from_secs(5),
            "http://x/m",
            Some("x:5000"),
            || async {
                Err(Failure::Retry {
                    cause: "503 Service Unavailable".into(),
                    timed_out: false,
                })
            },
        )
        .await;
        match got {
            Err(FetchError::Unavailable { url, attempts, cause }) => {
                assert_eq!((url.as_str(), attempts), ("http://x/m", 2));
                assert_eq!(cause, "503 Service Unavailable (x:5000)");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_past_the_deadline_counts_as_timed_out() {
        let got: Result<(), _> = run(&quick(2), Duration::from_secs(1), "u", None, || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        })
        .await;
        match got {
            Err(FetchError::Timeout { attempts, cause, .. }) => {
                assert_eq!(attempts, 2);
                assert!(cause.contains("--fetch-deadline"), "{cause}");
            }
            other => panic!("{other:?}"),
        }
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
