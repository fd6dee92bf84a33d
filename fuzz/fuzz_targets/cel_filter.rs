//! CEL filters: compile any source; evaluate what compiles against a fuzzed event. Input: the
//! filter, a NUL byte, the event's data as JSON.

#![no_main]

use libfuzzer_sys::fuzz_target;
use outbox_matcher::Filter;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let (source, json) = common::split(data);
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    let Ok(filter) = Filter::compile(source) else {
        return;
    };
    let value = serde_json::from_slice(json).unwrap_or(serde_json::Value::Null);
    let _ = filter.matches(&common::event(value), "w");
});
