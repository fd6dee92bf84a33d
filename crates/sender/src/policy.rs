//! What an attempt's result means: its outcome label, whether to retry, and when.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
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

/// Which addresses the relay may send to. Link-local addresses (169.254.0.0/16, fe80::/10: cloud
/// metadata endpoints) are refused unless allowed; `deny` adds more refused networks and `allow`
/// overrides both.
#[derive(Debug, Clone)]
pub struct NetworkPolicy {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl Default for NetworkPolicy {
    fn default() -> Self {
        NetworkPolicy::new(Vec::new(), Vec::new())
    }
}

impl NetworkPolicy {
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> NetworkPolicy {
        let mut all_deny: Vec<IpNet> = vec![
            "169.254.0.0/16".parse().expect("static network"),
            "fe80::/10".parse().expect("static network"),
        ];
        all_deny.extend(deny);
        NetworkPolicy {
            allow,
            deny: all_deny,
        }
    }

    /// `None` if the address may be contacted, else why not.
    pub fn check(&self, ip: IpAddr) -> Option<String> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if self.allow.iter().any(|n| n.contains(&ip)) {
            return None;
        }
        self.deny.iter().find(|n| n.contains(&ip)).map(|n| {
            format!("refused to connect to {ip}: it is in {n}, which the relay's network policy denies (allow_networks overrides)")
        })
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn link_local_is_refused_unless_allowed() {
        let p = NetworkPolicy::default();
        assert!(p.check("169.254.169.254".parse().unwrap()).is_some());
        assert!(p.check("fe80::1".parse().unwrap()).is_some());
        assert!(p.check("::ffff:169.254.169.254".parse().unwrap()).is_some());
        assert!(p.check("127.0.0.1".parse().unwrap()).is_none());
        let p = NetworkPolicy::new(
            vec!["169.254.169.254/32".parse().unwrap()],
            vec!["10.0.0.0/8".parse().unwrap()],
        );
        assert!(p.check("169.254.169.254".parse().unwrap()).is_none());
        assert!(p.check("10.1.2.3".parse().unwrap()).is_some());
    }
}
