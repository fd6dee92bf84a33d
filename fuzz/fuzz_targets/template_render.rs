//! Templates: compile any source as a URL, a JSON body, an XML body or a header; render what
//! compiles against a fuzzed event. Input: one selector byte, the template, a NUL byte, the
//! event's data as JSON.

#![no_main]

use libfuzzer_sys::fuzz_target;
use outbox_renderer::Templates;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (source, json) = common::split(rest);
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    let mut spec = match selector % 4 {
        0 => common::spec(source, "application/json", None),
        1 => common::spec("https://x.example/", "application/json", Some(source)),
        2 => common::spec("https://x.example/", "application/xml", Some(source)),
        _ => common::spec("https://x.example/", "text/plain", None),
    };
    if selector % 4 == 3 {
        spec.headers.insert("X-Fuzz".into(), source.to_string());
    }
    let Ok(templates) = Templates::compile(&spec) else {
        return;
    };
    let _ = templates.check_with_sample("w");
    let value = serde_json::from_slice(json).unwrap_or(serde_json::Value::Null);
    common::render(&templates, &common::event(value));
});
