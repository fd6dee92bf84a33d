//! A URL's path keeps the segments its template gave it: no merge field may climb out of its
//! segment.
//!
//! Values written into a URL template are percent-encoded, `/` included, so a value stays inside
//! its segment — except the dot segments: a value `..` in `/hook/{{ id }}` would make
//! `/hook/..`, which HTTP clients (and servers) resolve to `/`. The URL escaping writes a value
//! that is `.` or `..` as `%2E` / `%2E%2E`, but WHATWG URL parsing (what the HTTP client does)
//! treats `%2E` exactly like `.` in a path, so no spelling of a dot segment survives the trip.
//! A rendered URL whose path has one is therefore refused: the attempt fails with
//! `render_error` and nothing is sent to a path the template did not name.

/// `Err(reason)` when a path segment of `url` is `.` or `..` in any spelling (`%2e`, `.%2E`, ...;
/// `\` separates segments too, as in WHATWG URL parsing of http(s) URLs).
pub(crate) fn check_no_dot_segments(url: &str) -> Result<(), String> {
    let Some((_, rest)) = url.split_once("://") else {
        return Ok(());
    };
    let rest = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    let Some(path_start) = rest.find(['/', '\\']) else {
        return Ok(());
    };
    let path = &rest[path_start..];
    match path.split(['/', '\\']).find(|s| is_dot_segment(s)) {
        None => Ok(()),
        Some(segment) => Err(format!(
            "its path has the segment {segment:?}, which HTTP clients resolve (the request would \
             go to another path than the template names); a merge field that renders to `.` or \
             `..` cannot be sent as a path segment"
        )),
    }
}

fn is_dot_segment(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase();
    matches!(
        lower.as_str(),
        "." | ".." | "%2e" | ".%2e" | "%2e." | "%2e%2e"
    )
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use outbox_core::{Event, WebhookSpec};
    use serde_json::{Map, json};

    use super::check_no_dot_segments;
    use crate::{RenderContext, RenderError, Templates};

    fn render(url: &str, entity_id: &str) -> Result<String, RenderError> {
        let spec: WebhookSpec =
            toml::from_str(&format!("name = \"w\"\nevents = [\"*\"]\nurl = \"{url}\"")).unwrap();
        let event = Event {
            id: 1,
            event_type: "order.created".into(),
            entity: "order".into(),
            entity_id: entity_id.into(),
            data: json!({"dir": entity_id}),
            old: None,
            metadata: json!({}),
            created_at: Utc.with_ymd_and_hms(2024, 6, 10, 22, 30, 5).unwrap(),
        };
        Templates::compile(&spec)
            .unwrap()
            .render(&RenderContext {
                event: &event,
                message_id: "msg_1",
                delivery_id: 1,
                attempt: 1,
                webhook: "w",
                related: &Map::new(),
            })
            .map(|r| r.url)
    }

    #[test]
    fn a_merge_field_cannot_climb_out_of_its_path_segment() {
        for id in ["..", "."] {
            for url in [
                "https://x.example/hook/{{ id }}",
                "https://x.example/hook/{{ id }}/tail",
                "https://x.example/hook/{{ event.data.dir }}",
                "https://x.example/hook/{{ id | urlencode }}",
                "https://x.example/hook/{{ id | safe }}?q=1",
            ] {
                match render(url, id) {
                    Err(RenderError::BadUrl { reason, .. }) => {
                        assert!(reason.contains("resolve"), "{url} {id:?}: {reason}")
                    }
                    other => panic!("{url} with {id:?}: {other:?}"),
                }
            }
        }
        // An encoded dot segment is just text when escaped, a dot segment when marked safe.
        assert_eq!(
            render("https://x.example/hook/{{ id }}", "%2e%2E").unwrap(),
            "https://x.example/hook/%252e%252E"
        );
        assert!(render("https://x.example/hook/{{ id | safe }}", "%2e%2E").is_err());
        // Two merge fields that make a `..` together are caught as well.
        assert!(render("https://x.example/hook/{{ id }}{{ id }}", ".").is_err());
    }

    #[test]
    fn dots_that_are_no_dot_segment_pass_and_dot_values_are_percent_encoded() {
        assert_eq!(
            render("https://x.example/hook/{{ id }}", "...").unwrap(),
            "https://x.example/hook/..."
        );
        assert_eq!(
            render("https://x.example/hook/{{ id }}", "a..b").unwrap(),
            "https://x.example/hook/a..b"
        );
        assert_eq!(
            render("https://x.example/hook/{{ id }}", "../admin").unwrap(),
            "https://x.example/hook/..%2Fadmin"
        );
        // In the query a dot value is harmless; it is written encoded.
        assert_eq!(
            render("https://x.example/hook?id={{ id }}", "..").unwrap(),
            "https://x.example/hook?id=%2E%2E"
        );
        assert_eq!(
            render("https://x.example/hook/{{ id }}", "7").unwrap(),
            "https://x.example/hook/7"
        );
    }

    #[test]
    fn every_spelling_of_a_dot_segment_is_found() {
        for url in [
            "https://x.example/a/../b",
            "https://x.example/a/./b",
            "https://x.example/a/%2E%2E",
            "https://x.example/a/.%2e/b",
            "https://x.example/a\\..\\b",
            "https://x.example/..",
        ] {
            assert!(check_no_dot_segments(url).is_err(), "{url}");
        }
        for url in [
            "https://x.example/a/b?x=../..",
            "https://x.example/a/b#..",
            "https://x.example",
            "https://x.example/.well-known/hook",
            "https://x.example/a/...",
        ] {
            assert_eq!(check_no_dot_segments(url), Ok(()), "{url}");
        }
    }
}
