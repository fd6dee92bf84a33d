//! URL rendering and the network policy: render a fuzzed URL template against a fuzzed event;
//! an IP-literal host of what renders goes through `NetworkPolicy::check`, and so do the input's
//! first bytes read as an address. Input: the template, a NUL byte, the event's data as JSON.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use outbox_renderer::{RenderContext, Templates};
use outbox_sender::NetworkPolicy;

#[path = "common.rs"]
mod common;

static POLICY: LazyLock<NetworkPolicy> = LazyLock::new(NetworkPolicy::default);

fuzz_target!(|data: &[u8]| {
    if let Ok(bytes) = <[u8; 16]>::try_from(data.get(..16).unwrap_or(&[])) {
        let _ = POLICY.check(IpAddr::V6(Ipv6Addr::from(bytes)));
    }
    if let Ok(bytes) = <[u8; 4]>::try_from(data.get(..4).unwrap_or(&[])) {
        let ip = Ipv4Addr::from(bytes);
        // Every spelling of a denied IPv4 address is denied.
        let denied = POLICY.check(IpAddr::V4(ip)).is_some();
        assert_eq!(
            POLICY.check(IpAddr::V6(ip.to_ipv6_mapped())).is_some(),
            denied,
            "{ip}"
        );
    }
    let (source, json) = common::split(data);
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    let Ok(templates) = Templates::compile(&common::spec(source, "application/json", None)) else {
        return;
    };
    let value = serde_json::from_slice(json).unwrap_or(serde_json::Value::Null);
    let event = common::event(value);
    let related = serde_json::Map::new();
    let Ok(rendered) = templates.render(&RenderContext {
        event: &event,
        message_id: "msg_fuzz_1",
        delivery_id: 1,
        attempt: 1,
        webhook: "w",
        related: &related,
    }) else {
        return;
    };
    let host = rendered
        .url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', '?', '#']).next())
        .map(|authority| authority.rsplit('@').next().unwrap_or(authority))
        .unwrap_or("");
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.split(']').next())
        .unwrap_or_else(|| host.rsplit_once(':').map_or(host, |(h, _)| h));
    if let Ok(ip) = host.parse::<IpAddr>() {
        let _ = POLICY.check(ip);
    }
});
