//! What `outbox.attempts` keeps of an attempt's exchange beside its status, error and response
//! body: the request as it was sent (column `request`) and the response's headers (column
//! `response_headers`), both JSON, with every secret as `***` and every part capped, so that an
//! attempt row stays small.
//!
//! ```json
//! request:          {"method": "POST", "url": "https://h/x?api_key=***", "body_bytes": 18,
//!                    "headers": [["content-type", "application/json"], ["webhook-signature", "***"]],
//!                    "body": "{\"id\":1,\"a\":\"b\"}"}
//! response_headers: [["content-type", "text/plain"], ["set-cookie", "***"]]
//! ```
//!
//! Secrets are hidden by the rules `outbox-relay test` shows a request by: the URL's credentials
//! ([`redact_url`]), the values of `Authorization`, cookies, the signature header and every
//! credential-like header ([`is_secret_header`]). Caps: the body's first [`BODY_KEEP`] bytes (cut
//! at a character boundary; `body_bytes` is the whole body's size), the first [`HEADERS_KEEP`]
//! headers with each value's first [`VALUE_KEEP`] bytes, the URL's first [`VALUE_KEEP`] × 4.
//!
//! The JSON is written once per attempt straight from the request that was sent (borrowed: the
//! body is escaped into the text, never copied or parsed first), and handed to Postgres as text.

use std::borrow::Cow;

use outbox_core::redact::{is_secret_header, redact_url};
use serde::{Deserialize, Serialize, Serializer};

use crate::transport::OutboundRequest;

/// Bytes of the request body kept.
pub const BODY_KEEP: usize = 4096;
/// Headers kept, in sending (or receiving) order.
pub const HEADERS_KEEP: usize = 64;
/// Bytes of each header value kept.
pub const VALUE_KEEP: usize = 1024;

/// A request as stored: read back by the admin service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct RecordedRequest {
    pub method: String,
    /// Credentials as `***`.
    pub url: String,
    /// In sending order; secret values as `***`.
    pub headers: Vec<(String, String)>,
    /// The body's first [`BODY_KEEP`] bytes.
    pub body: String,
    /// The size of the whole body as sent.
    pub body_bytes: u64,
}

impl RecordedRequest {
    /// Whether the stored body is only the first part of what was sent.
    pub fn body_truncated(&self) -> bool {
        (self.body.len() as u64) < self.body_bytes
    }
}

/// The stored form of `request` (JSON text for the `request` column). `signature_header` is the
/// webhook's signature header, whose value is hidden too.
pub fn request_json(request: &OutboundRequest, signature_header: Option<&str>) -> String {
    let stored = RequestOut {
        method: request.method,
        url: url(&request.url),
        headers: HeadersOut {
            pairs: &request.headers,
            signature_header,
        },
        body: body(&request.body),
        body_bytes: request.body.len(),
    };
    // Sized for the usual case up front (a few escapes aside), so the text is written in place.
    let headers: usize = request
        .headers
        .iter()
        .take(HEADERS_KEEP)
        .map(|(n, v)| n.len() + v.len().min(VALUE_KEEP) + 8)
        .sum();
    let mut out = Vec::with_capacity(96 + stored.url.len() + headers + stored.body.len() * 9 / 8);
    // Writing borrowed strings and numbers into memory cannot fail.
    if serde_json::to_writer(&mut out, &stored).is_err() {
        return "null".into();
    }
    String::from_utf8(out).unwrap_or_else(|_| "null".into())
}

/// The stored form of a response's headers (JSON text for the `response_headers` column).
pub fn response_headers_json(headers: &reqwest::header::HeaderMap) -> String {
    let pairs = headers.iter().take(HEADERS_KEEP).map(|(name, value)| {
        let name = name.as_str();
        let value = if is_secret_header(name, None) {
            Cow::Borrowed("***")
        } else {
            match std::str::from_utf8(value.as_bytes()) {
                Ok(text) => clean(capped(text, VALUE_KEEP)),
                Err(_) => {
                    let text = String::from_utf8_lossy(value.as_bytes());
                    Cow::Owned(clean(capped(&text, VALUE_KEEP)).into_owned())
                }
            }
        };
        (name, value)
    });
    let mut out = Vec::with_capacity(64 + 48 * headers.len().min(HEADERS_KEEP));
    let mut serializer = serde_json::Serializer::new(&mut out);
    if serializer.collect_seq(pairs).is_err() {
        return "[]".into();
    }
    String::from_utf8(out).unwrap_or_else(|_| "[]".into())
}

/// Parses a stored request.
pub fn parse_request(json: &str) -> Result<RecordedRequest, serde_json::Error> {
    serde_json::from_str(json)
}

/// Parses stored response headers.
pub fn parse_headers(json: &str) -> Result<Vec<(String, String)>, serde_json::Error> {
    serde_json::from_str(json)
}

#[derive(Serialize)]
struct RequestOut<'a> {
    method: &'a str,
    url: Cow<'a, str>,
    headers: HeadersOut<'a>,
    body: Cow<'a, str>,
    body_bytes: usize,
}

struct HeadersOut<'a> {
    pairs: &'a [(String, String)],
    signature_header: Option<&'a str>,
}

impl Serialize for HeadersOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.pairs.iter().take(HEADERS_KEEP).map(|(name, value)| {
            let value = if is_secret_header(name, self.signature_header) {
                Cow::Borrowed("***")
            } else {
                clean(capped(value, VALUE_KEEP))
            };
            (clean(name), value)
        }))
    }
}

/// The URL with its credentials hidden, capped.
fn url(url: &str) -> Cow<'_, str> {
    let shown = if url.contains(['@', '?', '#']) {
        Cow::Owned(redact_url(url))
    } else {
        Cow::Borrowed(url)
    };
    match shown {
        Cow::Borrowed(s) => clean(capped(s, VALUE_KEEP * 4)),
        Cow::Owned(s) => Cow::Owned(clean(capped(&s, VALUE_KEEP * 4)).into_owned()),
    }
}

/// The body's first [`BODY_KEEP`] bytes as text; only that part is looked at.
fn body(bytes: &[u8]) -> Cow<'_, str> {
    let head = &bytes[..bytes.len().min(BODY_KEEP)];
    match std::str::from_utf8(head) {
        Ok(text) => clean(text),
        // Cut inside a character: keep the characters before it.
        Err(e) if e.error_len().is_none() => {
            clean(std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default())
        }
        Err(_) => Cow::Owned(clean(&String::from_utf8_lossy(head)).into_owned()),
    }
}

/// The first `keep` bytes of `text`, cut at a character boundary.
fn capped(text: &str, keep: usize) -> &str {
    if text.len() <= keep {
        return text;
    }
    let mut end = keep;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Postgres' `jsonb` cannot hold NUL characters: they are stored as U+FFFD.
fn clean(text: &str) -> Cow<'_, str> {
    if text.as_bytes().contains(&0) {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    fn request(url: &str, headers: &[(&str, &str)], body: &[u8]) -> OutboundRequest {
        OutboundRequest {
            method: "POST",
            url: url.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Bytes::copy_from_slice(body),
            timeout: Duration::from_secs(1),
            tls: None,
        }
    }

    #[test]
    fn secrets_are_hidden_and_the_rest_kept_in_order() {
        let sent = request(
            "https://relay:pw1@h.example/x/1?api_key=k2&id=1",
            &[
                ("content-type", "application/json"),
                ("webhook-id", "msg_1"),
                ("ms-signature", "sha256=ABC"),
                ("authorization", "Basic cmVsYXk6cHc="),
                ("X-Api-Key", "k3"),
                ("X-Shop", "nl"),
            ],
            br#"{"id":1,"say":"a \"quoted\" word"}"#,
        );
        let stored = parse_request(&request_json(&sent, Some("ms-signature"))).unwrap();
        assert_eq!(stored.method, "POST");
        assert_eq!(
            stored.url,
            "https://relay:***@h.example/x/1?api_key=***&id=1"
        );
        let headers: Vec<(&str, &str)> = stored
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            headers,
            [
                ("content-type", "application/json"),
                ("webhook-id", "msg_1"),
                ("ms-signature", "***"),
                ("authorization", "***"),
                ("X-Api-Key", "***"),
                ("X-Shop", "nl"),
            ]
        );
        assert_eq!(stored.body.as_bytes(), &sent.body[..]);
        assert_eq!(stored.body_bytes, sent.body.len() as u64);
        assert!(!stored.body_truncated());
    }

    #[test]
    fn large_parts_are_capped_at_character_boundaries() {
        let body = "é".repeat(BODY_KEEP); // two bytes each
        let long = "v".repeat(VALUE_KEEP + 10);
        let many: Vec<(String, String)> = (0..HEADERS_KEEP + 5)
            .map(|i| (format!("x-h{i}"), long.clone()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let sent = request("http://h.example/", &many, body.as_bytes());
        let json = request_json(&sent, None);
        let stored = parse_request(&json).unwrap();
        assert_eq!(stored.body.len(), BODY_KEEP);
        assert!(stored.body.chars().all(|c| c == 'é'));
        assert_eq!(stored.body_bytes, 2 * BODY_KEEP as u64);
        assert!(stored.body_truncated());
        assert_eq!(stored.headers.len(), HEADERS_KEEP);
        assert!(stored.headers.iter().all(|(_, v)| v.len() == VALUE_KEEP));
        assert!(json.len() < BODY_KEEP + HEADERS_KEEP * (VALUE_KEEP + 16) + 256);
    }

    #[test]
    fn nul_characters_and_invalid_bytes_become_replacement_characters() {
        let sent = request("http://h.example/", &[("x-a", "a\0b")], b"x\0y\xff");
        let stored = parse_request(&request_json(&sent, None)).unwrap();
        assert_eq!(stored.headers[0].1, "a\u{FFFD}b");
        assert_eq!(stored.body, "x\u{FFFD}y\u{FFFD}");
        assert!(!request_json(&sent, None).contains("\\u0000"));
    }

    #[test]
    fn response_headers_hide_cookies_and_credentials() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("content-type", "text/plain".parse().unwrap());
        headers.insert("set-cookie", "session=s3cret".parse().unwrap());
        headers.insert("x-request-id", "r-1".parse().unwrap());
        headers.insert("x-auth-token", "t0k".parse().unwrap());
        let stored = parse_headers(&response_headers_json(&headers)).unwrap();
        assert_eq!(
            stored,
            [
                ("content-type".to_string(), "text/plain".to_string()),
                ("set-cookie".into(), "***".into()),
                ("x-request-id".into(), "r-1".into()),
                ("x-auth-token".into(), "***".into()),
            ]
        );
    }
}
