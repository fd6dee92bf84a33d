//! What an attempt's result means: its outcome label, whether to retry, and when.

use std::time::{Duration, SystemTime};

use rand::Rng;

/// How one attempt's request went: the `outcome` column of `outbox.attempts` and the `outcome`
/// label of `outbox_delivery_attempts_total`. (What becomes of the delivery is decided from it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Success,
    HttpError,
    Timeout,
    ConnectError,
    RenderError,
    Refused,
}

impl AttemptOutcome {
    pub fn label(self) -> &'static str {
        match self {
            AttemptOutcome::Success => "success",
            AttemptOutcome::HttpError => "http_error",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::ConnectError => "connect_error",
            AttemptOutcome::RenderError => "render_error",
            AttemptOutcome::Refused => "refused",
        }
    }

    /// The outcome a label stands for; `None` for what the sender does not write (`abandoned`,
    /// written when a lease runs out).
    pub fn from_label(label: &str) -> Option<AttemptOutcome> {
        [
            AttemptOutcome::Success,
            AttemptOutcome::HttpError,
            AttemptOutcome::Timeout,
            AttemptOutcome::ConnectError,
            AttemptOutcome::RenderError,
            AttemptOutcome::Refused,
        ]
        .into_iter()
        .find(|o| o.label() == label)
    }
}

/// Delay before the next attempt after `attempts_in_budget` failed attempts (1-based): the
/// schedule's entry for it (its last entry repeats), with ±20% jitter.
pub fn retry_delay(schedule: &[Duration], attempts_in_budget: i32) -> Duration {
    let base = schedule_step(schedule, attempts_in_budget);
    jitter(base)
}

fn schedule_step(schedule: &[Duration], attempts_in_budget: i32) -> Duration {
    if schedule.is_empty() {
        return Duration::from_secs(5);
    }
    let index = (attempts_in_budget.max(1) as usize - 1).min(schedule.len() - 1);
    schedule[index]
}

fn jitter(base: Duration) -> Duration {
    if base.is_zero() {
        return base;
    }
    let factor = rand::rng().random_range(0.8..=1.2);
    base.mul_f64(factor)
}

/// The delay a `Retry-After` header asks for (delta-seconds or an HTTP date), capped at the
/// schedule's last step.
pub fn retry_after(value: &str, schedule: &[Duration], now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wanted = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    let cap = schedule
        .last()
        .copied()
        .unwrap_or(Duration::from_secs(24 * 3600));
    Some(wanted.min(cap))
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_read_back_as_their_outcome() {
        use super::AttemptOutcome;
        for o in [
            AttemptOutcome::Success,
            AttemptOutcome::HttpError,
            AttemptOutcome::Timeout,
            AttemptOutcome::ConnectError,
            AttemptOutcome::RenderError,
            AttemptOutcome::Refused,
        ] {
            assert_eq!(AttemptOutcome::from_label(o.label()), Some(o));
        }
        assert_eq!(AttemptOutcome::from_label("abandoned"), None);
    }

    use super::*;

    #[test]
    fn schedule_steps_repeat_the_last_and_jitter_stays_within_20_percent() {
        let schedule = [Duration::from_secs(5), Duration::from_secs(300)];
        for _ in 0..100 {
            let d = retry_delay(&schedule, 1).as_secs_f64();
            assert!((4.0..=6.0).contains(&d), "{d}");
            let d = retry_delay(&schedule, 7).as_secs_f64();
            assert!((240.0..=360.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_or_dates_and_is_capped() {
        let schedule = [Duration::from_secs(5), Duration::from_secs(60)];
        let now = SystemTime::now();
        assert_eq!(
            retry_after("7", &schedule, now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after("7000", &schedule, now),
            Some(Duration::from_secs(60))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        let d = retry_after(&later, &schedule, now).unwrap();
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(28),
            "{d:?}"
        );
        assert_eq!(retry_after("soon", &schedule, now), None);
    }
}
