//! The console's session cookie and CSRF tokens, both signed with a key of this process (no
//! server-side storage; a relay restart ends every session).
//!
//! The cookie is `<nonce>.<issued>.<a|n>.<mac>`: a random nonce, the unix time it was issued,
//! whether it is signed in, and an HMAC-SHA256 over the rest. It lives 12 hours. A page's CSRF
//! token is the HMAC of the nonce under a separate label, so it is bound to the session and
//! useless in any other browser.

use axum::http::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const COOKIE: &str = "outbox_console";
/// Seconds a session lives.
const LIFETIME: i64 = 12 * 3600;

/// The signing key, random per process.
pub struct Keys([u8; 32]);

impl Keys {
    pub fn random() -> Keys {
        let a = uuid::Uuid::new_v4();
        let b = uuid::Uuid::new_v4();
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(a.as_bytes());
        key[16..].copy_from_slice(b.as_bytes());
        Keys(key)
    }

    fn mac(&self, label: &str, data: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("any key length");
        mac.update(label.as_bytes());
        mac.update(b"\0");
        mac.update(data.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    nonce: String,
    issued: i64,
    /// Signed in with the admin token.
    pub signed_in: bool,
}

impl Session {
    pub fn issue(signed_in: bool) -> Session {
        Session {
            nonce: uuid::Uuid::new_v4().simple().to_string(),
            issued: chrono::Utc::now().timestamp(),
            signed_in,
        }
    }

    fn payload(&self) -> String {
        format!(
            "{}.{}.{}",
            self.nonce,
            self.issued,
            if self.signed_in { "a" } else { "n" }
        )
    }

    /// The `Set-Cookie` value.
    pub fn cookie(&self, keys: &Keys) -> String {
        let payload = self.payload();
        let mac = keys.mac("session", &payload);
        format!("{COOKIE}={payload}.{mac}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={LIFETIME}")
    }

    /// The CSRF token of forms shown in this session.
    pub fn csrf(&self, keys: &Keys) -> String {
        keys.mac("csrf", &self.nonce)
    }

    pub fn csrf_matches(&self, keys: &Keys, presented: &str) -> bool {
        crate::auth::token_matches(presented, &self.csrf(keys))
    }
}

/// The session of a request's cookie, if it carries a valid, unexpired one.
pub fn read(keys: &Keys, headers: &HeaderMap) -> Option<Session> {
    let value = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)?;
    let (payload, mac) = value.rsplit_once('.')?;
    if !crate::auth::token_matches(mac, &keys.mac("session", payload)) {
        return None;
    }
    let mut parts = payload.split('.');
    let nonce = parts.next()?.to_string();
    let issued: i64 = parts.next()?.parse().ok()?;
    let signed_in = parts.next()? == "a";
    let age = chrono::Utc::now().timestamp() - issued;
    (0..LIFETIME).contains(&age).then_some(Session {
        nonce,
        issued,
        signed_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("cookie", cookie.parse().unwrap());
        h
    }

    #[test]
    fn a_session_reads_back_only_with_its_own_key_and_signature() {
        let keys = Keys::random();
        let session = Session::issue(true);
        let set = session.cookie(&keys);
        let pair = set.split(';').next().unwrap();
        let read_back = read(&keys, &headers(&format!("other=1; {pair}"))).unwrap();
        assert!(read_back.signed_in);
        assert!(read_back.csrf_matches(&keys, &session.csrf(&keys)));
        assert!(!read_back.csrf_matches(&keys, ""));
        assert!(
            read(&Keys::random(), &headers(pair)).is_none(),
            "another key"
        );
        let forged = pair.replace(".a.", ".n.");
        assert!(
            read(&keys, &headers(&forged)).is_none(),
            "a changed payload"
        );
        let other = Session::issue(true);
        assert!(
            !other.csrf_matches(&keys, &session.csrf(&keys)),
            "a token is bound to its session"
        );
    }
}
