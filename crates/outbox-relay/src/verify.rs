//! Checks the signature of a received webhook request, for `outbox-relay receive`: what a receiver
//! should do, written independently of the sender's signer so each checks the other.
//!
//! - Standard Webhooks: `webhook-signature: v1,<base64> [v1,<base64> ...]` over
//!   `"{webhook-id}.{webhook-timestamp}.{body}"`, keyed with the bytes of a `whsec_<base64>` secret.
//! - hmac-sha256: a header (default `ms-signature`) holding `sha256=<digest>` of the raw body,
//!   keyed with the secret's UTF-8 bytes, the digest in upper- or lower-case hex or base64; several
//!   are separated by commas.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far `webhook-timestamp` may be from now before the receiver warns (Standard Webhooks
/// recommends rejecting older messages to stop replays).
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 300;

/// What the signature check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No secret was given to check with.
    NotChecked,
    /// The request carries no signature header this receiver knows.
    Unsigned,
    /// A signature matched: which scheme, which secret (1-based, in the order given) and how it
    /// was encoded.
    Verified {
        scheme: &'static str,
        secret: usize,
        encoding: &'static str,
    },
    /// Signed, but no secret produced a matching signature (or the signature is malformed).
    Invalid {
        scheme: &'static str,
        reason: String,
    },
}

impl Verdict {
    pub fn is_verified(&self) -> bool {
        matches!(self, Verdict::Verified { .. })
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::NotChecked => f.write_str("not checked (pass --secret to verify signatures)"),
            Verdict::Unsigned => f.write_str("none (the request is not signed)"),
            Verdict::Verified {
                scheme,
                secret,
                encoding,
            } => write!(f, "verified ({scheme}, {encoding}, secret #{secret})"),
            Verdict::Invalid { scheme, reason } => write!(f, "INVALID ({scheme}): {reason}"),
        }
    }
}

/// Checks a request's signature against every secret. `hmac_header` names the header of the
/// hmac-sha256 scheme (`ms-signature` unless configured otherwise). `now` is unix seconds.
pub fn verify(
    headers: &[(String, String)],
    body: &[u8],
    secrets: &[String],
    hmac_header: &str,
    now: i64,
) -> (Verdict, Option<String>) {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if let Some(signatures) = header("webhook-signature") {
        if secrets.is_empty() {
            return (Verdict::NotChecked, None);
        }
        let (Some(id), Some(timestamp)) = (header("webhook-id"), header("webhook-timestamp"))
        else {
            return (
                Verdict::Invalid {
                    scheme: "standard",
                    reason: "webhook-signature without webhook-id and webhook-timestamp".into(),
                },
                None,
            );
        };
        let warning = match timestamp.trim().parse::<i64>() {
            Ok(ts) if (now - ts).abs() > TIMESTAMP_TOLERANCE_SECS => Some(format!(
                "webhook-timestamp is {}s away from this machine's clock; receivers reject messages older than {TIMESTAMP_TOLERANCE_SECS}s",
                now - ts
            )),
            Ok(_) => None,
            Err(_) => Some(format!(
                "webhook-timestamp {timestamp:?} is not unix seconds"
            )),
        };
        return (
            verify_standard(id, timestamp, signatures, body, secrets),
            warning,
        );
    }
    if let Some(value) = header(hmac_header) {
        if secrets.is_empty() {
            return (Verdict::NotChecked, None);
        }
        return (verify_hmac(value, body, secrets), None);
    }
    (Verdict::Unsigned, None)
}

/// The key of a Standard Webhooks secret: the bytes of `whsec_<base64>`; a secret that is not
/// base64 is used as it is.
fn standard_key(secret: &str) -> Vec<u8> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    BASE64
        .decode(encoded)
        .unwrap_or_else(|_| secret.as_bytes().to_vec())
}

fn verify_standard(
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    secrets: &[String],
) -> Verdict {
    let candidates: Vec<Vec<u8>> = signatures
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b64| BASE64.decode(b64).ok())
        .collect();
    if candidates.is_empty() {
        return Verdict::Invalid {
            scheme: "standard",
            reason: "webhook-signature holds no v1,<base64> signature".into(),
        };
    }
    for (i, secret) in secrets.iter().enumerate() {
        for candidate in &candidates {
            let Ok(mut mac) = HmacSha256::new_from_slice(&standard_key(secret)) else {
                continue;
            };
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            if mac.verify_slice(candidate).is_ok() {
                return Verdict::Verified {
                    scheme: "standard",
                    secret: i + 1,
                    encoding: "base64",
                };
            }
        }
    }
    Verdict::Invalid {
        scheme: "standard",
        reason: format!(
            "none of the {} signature(s) matches any of the {} secret(s)",
            candidates.len(),
            secrets.len()
        ),
    }
}

fn verify_hmac(value: &str, body: &[u8], secrets: &[String]) -> Verdict {
    let mut candidates: Vec<(Vec<u8>, &'static str)> = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let digest = part.strip_prefix("sha256=").unwrap_or(part);
        if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            let encoding = if digest.bytes().any(|b| b.is_ascii_lowercase()) {
                "hex"
            } else {
                "hex-upper"
            };
            if let Ok(bytes) = hex::decode(digest) {
                candidates.push((bytes, encoding));
            }
        } else if let Ok(bytes) = BASE64.decode(digest) {
            candidates.push((bytes, "base64"));
        }
    }
    if candidates.is_empty() {
        return Verdict::Invalid {
            scheme: "hmac-sha256",
            reason: "the signature header holds no hex or base64 digest".into(),
        };
    }
    for (i, secret) in secrets.iter().enumerate() {
        for (candidate, encoding) in &candidates {
            let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else {
                continue;
            };
            mac.update(body);
            if mac.verify_slice(candidate).is_ok() {
                return Verdict::Verified {
                    scheme: "hmac-sha256",
                    secret: i + 1,
                    encoding,
                };
            }
        }
    }
    Verdict::Invalid {
        scheme: "hmac-sha256",
        reason: format!(
            "none of the {} signature(s) matches any of the {} secret(s)",
            candidates.len(),
            secrets.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_published_hmac_vector_verifies_in_every_encoding() {
        let secrets = vec!["wrong".to_string(), "secret123".to_string()];
        let body = b"{'test':'test2'}";
        let upper = "sha256=25FB6994568A75CD233E04BA1C653AF1BF476041CC543AF04F82CAAC482C201A";
        let (v, _) = verify(
            &h(&[("ms-signature", upper)]),
            body,
            &secrets,
            "ms-signature",
            0,
        );
        assert_eq!(
            v,
            Verdict::Verified {
                scheme: "hmac-sha256",
                secret: 2,
                encoding: "hex-upper"
            }
        );
        let lower = upper.to_ascii_lowercase();
        let (v, _) = verify(
            &h(&[("MS-Signature", &lower)]),
            body,
            &secrets,
            "ms-signature",
            0,
        );
        assert!(
            matches!(
                v,
                Verdict::Verified {
                    encoding: "hex",
                    ..
                }
            ),
            "{v}"
        );
        let b64 = format!(
            "sha256={}",
            BASE64.encode(hex::decode(&upper[7..]).unwrap())
        );
        let (v, _) = verify(&h(&[("x-sig", &b64)]), body, &secrets, "x-sig", 0);
        assert!(
            matches!(
                v,
                Verdict::Verified {
                    encoding: "base64",
                    ..
                }
            ),
            "{v}"
        );
        let (v, _) = verify(
            &h(&[("ms-signature", upper)]),
            b"{}",
            &secrets,
            "ms-signature",
            0,
        );
        assert!(matches!(v, Verdict::Invalid { .. }), "{v}");
    }

    #[test]
    fn standard_webhooks_signatures_verify() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string();
        let headers = h(&[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v1,bad v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ]);
        let body = br#"{"test": 2432232314}"#;
        let (v, warning) = verify(
            &headers,
            body,
            std::slice::from_ref(&secret),
            "ms-signature",
            1614265330,
        );
        assert_eq!(
            v,
            Verdict::Verified {
                scheme: "standard",
                secret: 1,
                encoding: "base64"
            }
        );
        assert!(warning.is_none());
        let (_, warning) = verify(
            &headers,
            body,
            std::slice::from_ref(&secret),
            "ms-signature",
            1614265330 + 3600,
        );
        assert!(warning.unwrap().contains("3600s"));
        let (v, _) = verify(&headers, b"tampered", &[secret], "ms-signature", 1614265330);
        assert!(
            matches!(
                v,
                Verdict::Invalid {
                    scheme: "standard",
                    ..
                }
            ),
            "{v}"
        );
        let (v, _) = verify(&headers, body, &[], "ms-signature", 0);
        assert_eq!(v, Verdict::NotChecked);
        let (v, _) = verify(
            &h(&[("content-type", "x")]),
            body,
            &["s".into()],
            "ms-signature",
            0,
        );
        assert_eq!(v, Verdict::Unsigned);
    }
}
