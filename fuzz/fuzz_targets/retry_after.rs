//! `Retry-After` header values: delta-seconds or an HTTP date, capped at the schedule's last step.

#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use outbox_sender::policy::retry_after;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let schedule = [Duration::from_secs(5), Duration::from_secs(300)];
    if let Some(delay) = retry_after(value, &schedule, SystemTime::UNIX_EPOCH) {
        assert!(delay <= Duration::from_secs(300), "{value:?}: {delay:?}");
    }
    assert!(
        retry_after(value, &[], SystemTime::now())
            .is_none_or(|d| d <= Duration::from_secs(24 * 3600))
    );
});
