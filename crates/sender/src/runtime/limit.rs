//! How many requests one webhook may have in flight: a limit that adapts to the receiver, the way
//! TCP's congestion window does (AIMD with slow start) plus a latency guard in the spirit of
//! Netflix's concurrency-limits.
//!
//! - It starts at [`INITIAL`] and, while the receiver answers promptly and the limit is actually
//!   used (the webhook had as many requests in flight as its limit when the answer came), grows
//!   fast (slow start: +1 per answer, so it doubles per round trip) until the first
//!   sign of trouble, then slowly (+1 per round trip).
//! - Trouble halves it, at most once per round trip: a timeout, a connection error, `429`, or a
//!   5xx — the receiver is overloaded or failing, and more concurrency would only make it worse
//!   (and tie up the relay's slots, which other webhooks need).
//! - While answers take much longer than they usually do (a short-term average of the round trip
//!   over twice the long-term one), requests queue at the receiver: the limit does not grow.
//!   Latency alone never lowers it: on a busy machine round trips are noisy, and a limit that
//!   shrank on noise would throttle a healthy receiver.
//! - It never goes below 1 nor above its ceiling: the webhook's `max_in_flight` when set, else
//!   the relay's `concurrency`.

use std::time::{Duration, Instant};

/// Where an adaptive limit starts.
pub(crate) const INITIAL: usize = 16;

/// What one answer says about the receiver's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// It answered (2xx, or a 4xx that says nothing about load) within `rtt`.
    Answered { rtt: Duration },
    /// Timeout, connection error, 429 or a 5xx: back off.
    Overloaded,
    /// Nothing learned (e.g. the request was never sent).
    Nothing,
}

#[derive(Debug, Clone)]
pub(crate) struct Limit {
    limit: f64,
    ceiling: f64,
    /// Below it the limit grows by one per answer (slow start), above by one per round trip.
    threshold: f64,
    /// Round trips, averaged over the last few answers (seconds).
    recent: Option<f64>,
    /// Round trips, averaged over many answers (seconds).
    usual: Option<f64>,
    /// No second decrease before this (one per round trip).
    calm_until: Option<Instant>,
}

impl Limit {
    /// An adaptive limit up to `ceiling`.
    pub fn adaptive(ceiling: usize) -> Limit {
        let ceiling = ceiling.max(1) as f64;
        Limit {
            limit: (INITIAL as f64).min(ceiling),
            ceiling,
            threshold: ceiling,
            recent: None,
            usual: None,
            calm_until: None,
        }
    }

    /// Requests that may be in flight now.
    pub fn current(&self) -> usize {
        self.limit.floor().max(1.0) as usize
    }

    /// A new ceiling (the webhook's configuration changed); the limit follows if above it.
    pub fn set_ceiling(&mut self, ceiling: usize) {
        self.ceiling = ceiling.max(1) as f64;
        self.limit = self.limit.min(self.ceiling);
        self.threshold = self.threshold.min(self.ceiling);
    }

    /// Learns from one answer. `busy` is how many requests of this webhook are in flight as the
    /// answer comes, itself included: the limit only grows when it was what held requests back.
    pub fn learn(&mut self, signal: Signal, busy: usize, now: Instant) {
        match signal {
            Signal::Nothing => {}
            Signal::Overloaded => self.decrease(0.5, now, Duration::from_millis(100)),
            Signal::Answered { rtt } => {
                let rtt = rtt.as_secs_f64();
                let average = |avg: Option<f64>, weight: f64| {
                    Some(avg.map_or(rtt, |a| a + (rtt - a) * weight))
                };
                self.recent = average(self.recent, 0.2);
                self.usual = average(self.usual, 0.01);
                if let (Some(recent), Some(usual)) = (self.recent, self.usual)
                    && recent > usual * 2.0 + 0.005
                {
                    // Queueing at the receiver (or a busy machine): no growth while it lasts. Slow
                    // start stays: on a machine whose CPU is saturated round trips rise with any
                    // load, and ending slow start on that would keep the limit, and with it claims
                    // and completions, small for good.
                    return;
                }
                if (busy as f64) + 1.0 < self.limit {
                    return; // the limit was not what held requests back
                }
                self.limit += if self.limit < self.threshold {
                    1.0
                } else {
                    1.0 / self.limit
                };
                self.limit = self.limit.min(self.ceiling);
            }
        }
    }

    fn decrease(&mut self, factor: f64, now: Instant, round_trip: Duration) {
        if self.calm_until.is_some_and(|t| now < t) {
            return;
        }
        self.limit = (self.limit * factor).max(1.0);
        self.threshold = self.limit;
        self.calm_until = Some(now + round_trip.max(Duration::from_millis(10)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> Signal {
        Signal::Answered {
            rtt: Duration::from_millis(2),
        }
    }

    #[test]
    fn grows_while_used_and_answered_promptly_up_to_its_ceiling() {
        let mut l = Limit::adaptive(256);
        assert_eq!(l.current(), INITIAL);
        let now = Instant::now();
        for _ in 0..1000 {
            let busy = l.current();
            l.learn(fast(), busy, now);
        }
        assert_eq!(l.current(), 256);
        // Unused headroom does not grow it.
        let mut l = Limit::adaptive(256);
        for _ in 0..1000 {
            l.learn(fast(), 3, now);
        }
        assert_eq!(l.current(), INITIAL);
    }

    #[test]
    fn never_exceeds_an_explicit_ceiling() {
        let mut l = Limit::adaptive(4);
        assert_eq!(l.current(), 4);
        let now = Instant::now();
        for _ in 0..100 {
            l.learn(fast(), 4, now);
            assert!(l.current() <= 4);
        }
        let mut l = Limit::adaptive(256);
        for _ in 0..1000 {
            let busy = l.current();
            l.learn(fast(), busy, now);
        }
        l.set_ceiling(10);
        assert_eq!(l.current(), 10);
    }

    #[test]
    fn backs_off_on_trouble_once_per_round_trip_and_never_below_one() {
        let mut l = Limit::adaptive(256);
        let t0 = Instant::now();
        for _ in 0..100 {
            let busy = l.current();
            l.learn(fast(), busy, t0);
        }
        let before = l.current();
        // A burst of failures from one round trip halves it once.
        for _ in 0..20 {
            l.learn(Signal::Overloaded, before, t0);
        }
        assert_eq!(l.current(), before / 2);
        // Failures round trip after round trip take it down to one, and no further.
        let mut t = t0;
        for _ in 0..50 {
            t += Duration::from_millis(200);
            l.learn(Signal::Overloaded, 1, t);
        }
        assert_eq!(l.current(), 1);
        // After trouble it grows by about one per round trip, not by doubling.
        for _ in 0..10 {
            let busy = l.current();
            l.learn(fast(), busy, t);
        }
        assert!(l.current() <= 4, "{}", l.current());
    }

    #[test]
    fn answers_much_slower_than_usual_stop_its_growth_but_do_not_lower_it() {
        let mut l = Limit::adaptive(256);
        let t0 = Instant::now();
        for _ in 0..40 {
            let busy = l.current();
            l.learn(fast(), busy, t0);
        }
        let before = l.current();
        let slow = Signal::Answered {
            rtt: Duration::from_millis(200),
        };
        for _ in 0..20 {
            l.learn(slow, before, t0);
        }
        assert_eq!(l.current(), before);
    }
}
