//! What every fault test asserts once the faults are over, from what the receiver recorded and what
//! the database says:
//!
//! 1. **No committed event lost**: every event in `outbox.events` (which holds every commit the
//!    database acknowledged to a producer, checked too) got a request answered 2xx, and its
//!    delivery is recorded `succeeded`.
//! 2. **No (`webhook-id`, `webhook-attempt`) pair received twice.**
//! 3. **No delivery that got a 2xx sent again**, except a 2xx that was in flight at the instant
//!    of a fault: the request arrived before the fault ended (give or take [`ARRIVAL_SLACK`]) and
//!    its answer left the receiver less than [`IN_FLIGHT_MARGIN`] before the fault began. See
//!    [`IN_FLIGHT_MARGIN`] for why.
//! 4. **Recovery within a bound**: all of that holds within [`crate::rig::RECOVERY`] after the
//!    last fault, or, should the relay have taken longer leases than [`crate::rig::LEASE`] (it
//!    lengthens them to cover a webhook's timeout and its own margins), within 30 s after the last
//!    lease outstanding then ran out ([`crate::settle::settle_and_judge`] waits and asserts).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use outbox_testkit::Received;

/// How long before a fault a 2xx may have been answered and still be "in flight" at it: sent,
/// answered, but its result not yet durable in the database, so the delivery is sent again (with
/// the same `webhook-id` and the next `webhook-attempt`).
///
/// The relay records results asynchronously: the completer writes, in one transaction, whatever
/// finished while its previous batch was being written (tens of milliseconds; a few hundred on a
/// loaded 2-core machine), and those transactions commit with `synchronous_commit = off`, so a
/// Postgres crash loses what the WAL writer had not yet written: at most 3 × `wal_writer_delay`
/// = 0.6 s. A kill -9 of the relay loses the results it had not yet written. Measured, with the
/// tests running one at a time: 2xx answered up to 0.3 s before a kill -9 and 0.41 s before a
/// Postgres crash were sent again; with the tests side by side, up to 0.97 s. 0.6 s of WAL plus
/// 0.9 s of completer latency on a loaded machine = 1.5 s.
pub const IN_FLIGHT_MARGIN: Duration = Duration::from_millis(1500);

/// How much later than it was sent the receiver may note a request's arrival: the receiver runs on
/// the test's own runtime, so a request a relay wrote just before it was killed is read when the
/// receiver's task next runs, tens of milliseconds later on a busy 2-core machine (up to 14 ms
/// seen); 250 ms is a wide margin.
pub const ARRIVAL_SLACK: Duration = Duration::from_millis(250);

/// A fault the test injected, from the instant it began (just before the signal) to the instant it
/// was over (the killed relay gone; Postgres accepting connections again).
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: &'static str,
    pub start: Instant,
    end: Option<Instant>,
}

impl Fault {
    pub fn between(kind: &'static str, start: Instant, end: Instant) -> Fault {
        Fault {
            kind,
            start,
            end: Some(end),
        }
    }

    /// A fault that lasts until [`Fault::close`].
    pub fn open(kind: &'static str, at: Instant) -> Fault {
        Fault {
            kind,
            start: at,
            end: None,
        }
    }

    pub fn is_open(&self) -> bool {
        self.end.is_none()
    }

    pub fn close(&mut self, at: Instant) {
        self.end = Some(at);
    }

    pub fn end(&self) -> Instant {
        self.end.unwrap_or_else(Instant::now)
    }

    /// Whether the answered request `r` was in flight at this fault.
    fn caught(&self, r: &Received) -> bool {
        r.at <= self.end() + ARRIVAL_SLACK && r.answered_at + IN_FLIGHT_MARGIN >= self.start
    }
}

/// What the receiver's record says about assertions 1-3.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Expected keys without a request answered 2xx.
    pub lost: Vec<String>,
    /// (webhook-id, webhook-attempt, times received) for pairs received more than once.
    pub repeated_pairs: Vec<(String, String, usize)>,
    /// Requests of a delivery that had already been answered 2xx outside any fault.
    pub resent_after_2xx: Vec<String>,
    /// Requests of a delivery whose 2xx was in flight at a fault: allowed.
    pub excused: usize,
    /// Of those 2xx, the longest one was answered before its fault began (zero when all were
    /// answered after): how much of [`IN_FLIGHT_MARGIN`] was used.
    pub excused_lead: Duration,
}

impl Verdict {
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.lost.is_empty() {
            problems.push(format!(
                "{} committed events never got a 2xx, e.g. {:?}",
                self.lost.len(),
                &self.lost[..self.lost.len().min(10)]
            ));
        }
        if !self.repeated_pairs.is_empty() {
            problems.push(format!(
                "{} (webhook-id, webhook-attempt) pairs were received more than once, e.g. {:?}",
                self.repeated_pairs.len(),
                &self.repeated_pairs[..self.repeated_pairs.len().min(10)]
            ));
        }
        if !self.resent_after_2xx.is_empty() {
            problems.push(format!(
                "{} requests re-sent a delivery already answered 2xx outside any fault:\n  {}",
                self.resent_after_2xx.len(),
                self.resent_after_2xx[..self.resent_after_2xx.len().min(10)].join("\n  ")
            ));
        }
        problems
    }
}

/// The key (`entity_id`) a request was delivered for: its path.
pub fn key(r: &Received) -> &str {
    r.path.trim_start_matches('/')
}

pub fn succeeded(r: &Received) -> bool {
    r.answered && (200..300).contains(&r.status)
}

/// Judges the receiver's record against the expected keys and the faults.
pub fn judge(requests: &[Received], expected: &BTreeSet<String>, faults: &[Fault]) -> Verdict {
    let mut verdict = Verdict::default();
    let delivered: BTreeSet<&str> = requests.iter().filter(|r| succeeded(r)).map(key).collect();
    verdict.lost = expected
        .iter()
        .filter(|k| !delivered.contains(k.as_str()))
        .cloned()
        .collect();

    let mut pairs: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut by_message: BTreeMap<&str, Vec<&Received>> = BTreeMap::new();
    for r in requests {
        let id = r.header("webhook-id").unwrap_or("(none)");
        let attempt = r.header("webhook-attempt").unwrap_or("(none)");
        *pairs.entry((id, attempt)).or_default() += 1;
        by_message.entry(id).or_default().push(r);
    }
    verdict.repeated_pairs = pairs
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((id, attempt), n)| (id.to_string(), attempt.to_string(), n))
        .collect();

    let origin = requests.iter().map(|r| r.at).min();
    let since = |t: Instant| origin.map_or(0.0, |o| t.duration_since(o).as_secs_f64());
    for (id, mut sent) in by_message {
        sent.sort_by_key(|r| r.at);
        for (i, again) in sent.iter().enumerate() {
            let earlier_2xx: Vec<&&Received> = sent[..i].iter().filter(|r| succeeded(r)).collect();
            if earlier_2xx.is_empty() {
                continue;
            }
            let leads: Option<Vec<Duration>> = earlier_2xx
                .iter()
                .map(|ok| {
                    faults
                        .iter()
                        .filter(|f| f.caught(ok))
                        .map(|f| f.start.saturating_duration_since(ok.answered_at))
                        .min()
                })
                .collect();
            if let Some(leads) = leads {
                verdict.excused += 1;
                let lead = leads.into_iter().max().unwrap_or_default();
                verdict.excused_lead = verdict.excused_lead.max(lead);
                continue;
            }
            let ok = earlier_2xx[0];
            let nearest = faults
                .iter()
                .min_by_key(|f| {
                    let d = f.start.max(ok.answered_at) - f.start.min(ok.answered_at);
                    d.as_millis()
                })
                .map(|f| format!("{} at {:.3}s", f.kind, since(f.start)))
                .unwrap_or_else(|| "no fault".into());
            verdict.resent_after_2xx.push(format!(
                "{id} ({}): attempt {} answered {} at {:.3}s, attempt {} sent at {:.3}s; nearest fault: {nearest}",
                key(ok),
                ok.header("webhook-attempt").unwrap_or("?"),
                ok.status,
                since(ok.answered_at),
                again.header("webhook-attempt").unwrap_or("?"),
                since(again.at),
            ));
        }
    }
    verdict
}

#[cfg(test)]
mod checks {
    //! Each assertion can fail: fabricated receiver records that break exactly one of them.
    use super::*;

    fn request(key: &str, attempt: u32, status: u16, at_ms: u64, origin: Instant) -> Received {
        let at = origin + Duration::from_millis(at_ms);
        Received {
            method: "POST".into(),
            path: format!("/{key}"),
            headers: vec![
                ("webhook-id".into(), format!("msg_{key}")),
                ("webhook-attempt".into(), attempt.to_string()),
            ],
            body: Default::default(),
            at,
            answered_at: at + Duration::from_millis(5),
            status,
            answered: true,
            client_cert: None,
        }
    }

    fn keys(keys: &[&str]) -> BTreeSet<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn a_clean_record_passes() {
        let t = Instant::now();
        let record = [
            request("a", 1, 500, 0, t),
            request("a", 2, 200, 1000, t),
            request("b", 1, 200, 0, t),
        ];
        let verdict = judge(&record, &keys(&["a", "b"]), &[]);
        assert!(verdict.problems().is_empty(), "{verdict:?}");
    }

    #[test]
    fn an_event_without_a_2xx_is_lost() {
        let t = Instant::now();
        let mut unanswered = request("b", 1, 200, 0, t);
        unanswered.answered = false;
        let record = [request("a", 1, 500, 0, t), unanswered];
        let verdict = judge(&record, &keys(&["a", "b", "c"]), &[]);
        assert_eq!(verdict.lost, vec!["a", "b", "c"]);
    }

    #[test]
    fn a_pair_received_twice_is_reported() {
        let t = Instant::now();
        let record = [request("a", 1, 500, 0, t), request("a", 1, 200, 3000, t)];
        let verdict = judge(&record, &keys(&["a"]), &[]);
        assert_eq!(
            verdict.repeated_pairs,
            vec![("msg_a".into(), "1".into(), 2)]
        );
    }

    #[test]
    fn a_2xx_sent_again_is_reported_unless_in_flight_at_a_fault() {
        let t = Instant::now();
        let record = [request("a", 1, 200, 0, t), request("a", 2, 200, 6000, t)];
        let verdict = judge(&record, &keys(&["a"]), &[]);
        assert_eq!(verdict.resent_after_2xx.len(), 1, "{verdict:?}");

        // The 2xx was answered 5 ms before a kill: in flight at it.
        let at = t + Duration::from_millis(10);
        let kill = Fault::between("relay kill -9", at, at);
        let verdict = judge(&record, &keys(&["a"]), &[kill]);
        assert!(verdict.problems().is_empty(), "{verdict:?}");
        assert_eq!(verdict.excused, 1);

        // Answered well before the fault: not excused.
        let at = t + Duration::from_millis(3000);
        let late = Fault::between("relay kill -9", at, at);
        let verdict = judge(&record, &keys(&["a"]), &[late]);
        assert_eq!(verdict.resent_after_2xx.len(), 1, "{verdict:?}");

        // Sent after Postgres was back: not excused either.
        let mut outage = Fault::open("postgres immediate stop", t - Duration::from_millis(2000));
        outage.close(t - Duration::from_millis(1000));
        let verdict = judge(&record, &keys(&["a"]), &[outage]);
        assert_eq!(verdict.resent_after_2xx.len(), 1, "{verdict:?}");
    }
}
