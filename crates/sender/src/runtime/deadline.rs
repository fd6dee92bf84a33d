//! How long an attempt may take, derived from its lease.
//!
//! A claim's lease is taken by the claim statement (`lease_until = now() + lease`); `now()` there
//! is the start of the claim's transaction, which is after this relay sent the statement, so an
//! [`Instant`] read before sending it is never later than the database's idea of the claim. Every
//! step of an attempt counts against the lease: waiting for a pooled connection, related records,
//! rendering, building a TLS client, the request itself. The request must be over
//! [`RECORD_MARGIN`] before the lease ends, so the result can be recorded while the claim is
//! still this relay's; a request that could not get its whole `timeout` before then is not sent
//! at all: the claim is released instead, and nothing was sent with its attempt number.

use std::time::{Duration, Instant};

/// Time left at the end of a lease for recording the result.
pub(crate) const RECORD_MARGIN: Duration = Duration::from_secs(5);
/// Time reserved in a lease for waits before the request: a pooled connection, a TLS client.
pub(crate) const PREPARE_BUDGET: Duration = Duration::from_secs(10);

/// The instants an attempt must keep to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline {
    /// The request must start by then to get its whole timeout.
    pub send_by: Instant,
    /// The request must be over by then (the lease ends [`RECORD_MARGIN`] later).
    pub done_by: Instant,
}

impl Deadline {
    /// For a claim made at `claimed_at` (read before the claim statement was sent) with `lease`,
    /// for a request that may take `timeout`.
    pub fn new(claimed_at: Instant, lease: Duration, timeout: Duration) -> Deadline {
        let done_by = claimed_at + lease.saturating_sub(RECORD_MARGIN);
        Deadline {
            send_by: done_by.checked_sub(timeout).unwrap_or(claimed_at),
            done_by,
        }
    }

    /// The lease a webhook's claims take: the relay's `lease`, or more if one attempt needs it
    /// (waits before sending, related-record lookups, the request, recording).
    pub fn lease_for(configured: Duration, timeout: Duration, lookups: Duration) -> Duration {
        configured.max(PREPARE_BUDGET + lookups + timeout + RECORD_MARGIN)
    }

    /// Whether a request started now would still get its whole timeout.
    pub fn may_send(&self, now: Instant) -> bool {
        now <= self.send_by
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_must_end_before_the_lease_leaves_time_to_record_it() {
        let t0 = Instant::now();
        let lease = Deadline::lease_for(
            Duration::from_secs(60),
            Duration::from_secs(30),
            Duration::ZERO,
        );
        assert_eq!(lease, Duration::from_secs(60));
        let d = Deadline::new(t0, lease, Duration::from_secs(30));
        assert_eq!(d.done_by, t0 + Duration::from_secs(55));
        assert_eq!(d.send_by, t0 + Duration::from_secs(25));
        assert!(d.may_send(t0 + Duration::from_secs(25)));
        assert!(!d.may_send(t0 + Duration::from_secs(26)));
    }

    #[test]
    fn a_long_timeout_gets_a_longer_lease() {
        let lease = Deadline::lease_for(
            Duration::from_secs(60),
            Duration::from_secs(120),
            Duration::from_secs(5),
        );
        assert_eq!(lease, Duration::from_secs(140));
        let t0 = Instant::now();
        let d = Deadline::new(t0, lease, Duration::from_secs(120));
        assert_eq!(d.send_by, t0 + Duration::from_secs(15));
    }
}
