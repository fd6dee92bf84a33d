//! The `apply` file parser and validator (everything `apply` checks without a database).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(problems) =
        outbox_relay::commands::apply::parse(std::path::Path::new("fuzz.toml"), text)
    {
        assert!(!problems.is_empty());
    }
});
