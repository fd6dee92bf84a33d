//! Credentials out of everything shown: URLs (and URL templates) and texts that quote URLs.
//!
//! A webhook's URL may carry a credential in its user info (`https://relay:pw@host/`,
//! `https://Token_55@host/`) or in a query parameter (`?api_key=...`). Wherever a URL is shown —
//! `webhooks show/list`, the admin API, `test`, an attempt's error, a log line — it passes through
//! [`redact_url`] (or, inside a longer text such as an HTTP client's error, [`redact_urls_in`]):
//!
//! | part | shown as |
//! |---|---|
//! | `user:password@` | `user:***@` |
//! | `token@` (user info without a password: the user *is* the credential) | `***@` |
//! | `name=value` in the query or fragment, where `name` looks like a credential ([`is_sensitive`]) | `name=***` |
//!
//! Everything else is kept byte for byte, templates (`{{ id }}`) included.

/// Whether a header or query parameter of this name carries a credential (an API key, a token, a
/// password, a signature), so that its value is shown as `***`. Percent-encoded names are decoded
/// first (`api%5Fkey` is `api_key`).
pub fn is_sensitive(name: &str) -> bool {
    // Without a `%` the name is looked at as it is: no copy (the sender asks this of every header
    // of every attempt).
    let decoded;
    let name = if name.contains('%') {
        decoded = percent_decode(name);
        decoded.as_str()
    } else {
        name
    };
    name.eq_ignore_ascii_case("cookie")
        || [
            "auth",
            "token",
            "secret",
            "passw",
            "key",
            "signature",
            "sig",
            "credential",
        ]
        .iter()
        .any(|word| contains_ignore_ascii_case(name, word))
}

/// Whether `text` contains `word` (lower case ASCII), ignoring ASCII case.
fn contains_ignore_ascii_case(text: &str, word: &str) -> bool {
    text.as_bytes()
        .windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
}

/// Whether a header's value is a credential, so that it is shown (and stored with an attempt) as
/// `***`: `Authorization`, `Proxy-Authorization`, `Cookie`, `Set-Cookie`, `webhook-signature`,
/// the webhook's own signature header (`signature_header`, e.g. `ms-signature`), and any name
/// [`is_sensitive`] recognises (`X-Api-Key`, `X-Auth-Token`, ...).
pub fn is_secret_header(name: &str, signature_header: Option<&str>) -> bool {
    [
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "webhook-signature",
    ]
    .iter()
    .chain(signature_header.as_slice())
    .any(|known| known.eq_ignore_ascii_case(name))
        || is_sensitive(name)
}

/// A credential inside a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlCredential<'a> {
    /// The password of the user info.
    Password,
    /// A user info without password: the user is the credential.
    User,
    /// The value of the query (or fragment) parameter of this name.
    Parameter(&'a str),
}

/// The URL (or URL template) with its user info's password, a password-less user info and the
/// values of credential-like query (and fragment) parameters replaced by `***`:
/// `https://u:pw@host/?api_key=k&id=1` → `https://u:***@host/?api_key=***&id=1`.
pub fn redact_url(url: &str) -> String {
    replace_url_credentials(url, |_, _| "***".to_string())
}

/// The URL (or URL template) with every credential [`redact_url`] hides replaced by what
/// `replace(which, value)` returns (`webhooks export` writes `${VAR}` placeholders).
pub fn replace_url_credentials(
    url: &str,
    mut replace: impl FnMut(UrlCredential<'_>, &str) -> String,
) -> String {
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let (base, query) = match before_fragment.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (before_fragment, None),
    };
    let mut out = replace_authority(base, &mut replace);
    if let Some(query) = query {
        out.push('?');
        out.push_str(&replace_pairs(query, &mut replace));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(&replace_pairs(fragment, &mut replace));
    }
    out
}

/// `text` with every `http://` / `https://` URL in it passed through [`redact_url`]: for error
/// messages of HTTP clients and the like, which quote the URL they failed on
/// (`error sending request for url (https://host/hook?api_key=...)`). A URL runs to the next
/// white space or quote; trailing punctuation (`)`, `,`, `.`, `:`, `;`, `]`) is kept out of it.
pub fn redact_urls_in(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    while let Some(found) = next_url_start(&lower, rest) {
        let end = text[found..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .map_or(text.len(), |i| found + i);
        let mut url_end = end;
        while url_end > found
            && matches!(
                text.as_bytes()[url_end - 1],
                b')' | b',' | b'.' | b':' | b';' | b']'
            )
        {
            url_end -= 1;
        }
        out.push_str(&text[rest..found]);
        out.push_str(&redact_url(&text[found..url_end]));
        out.push_str(&text[url_end..end]);
        rest = end;
    }
    out.push_str(&text[rest..]);
    out
}

fn next_url_start(lower: &str, from: usize) -> Option<usize> {
    let http = lower[from..].find("http://");
    let https = lower[from..].find("https://");
    match (http, https) {
        (Some(a), Some(b)) => Some(from + a.min(b)),
        (Some(a), None) | (None, Some(a)) => Some(from + a),
        (None, None) => None,
    }
}

/// `scheme://userinfo@host/path` with the user info's credential replaced.
fn replace_authority(
    base: &str,
    replace: &mut impl FnMut(UrlCredential<'_>, &str) -> String,
) -> String {
    let Some((scheme, rest)) = base.split_once("://") else {
        return base.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, password)) => {
                let password = replace(UrlCredential::Password, password);
                format!("{scheme}://{user}:{password}@{host}{path}")
            }
            None => {
                let user = replace(UrlCredential::User, userinfo);
                format!("{scheme}://{user}@{host}{path}")
            }
        },
        None => base.to_string(),
    }
}

/// `a=1&api_key=k` → `a=1&api_key=***`.
fn replace_pairs(
    pairs: &str,
    replace: &mut impl FnMut(UrlCredential<'_>, &str) -> String,
) -> String {
    pairs
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if is_sensitive(k) => {
                format!("{k}={}", replace(UrlCredential::Parameter(k), v))
            }
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `%XX` sequences decoded (invalid ones kept), `+` left alone: only for recognising names.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_user_tokens_and_secret_parameters_are_hidden() {
        assert_eq!(
            redact_url(
                "https://relay:hunter2@x.example/hook/{{ id }}?api_key=k123&id={{ id }}&sig=abc"
            ),
            "https://relay:***@x.example/hook/{{ id }}?api_key=***&id={{ id }}&sig=***"
        );
        assert_eq!(
            redact_url("http://Token_55@host.example/x"),
            "http://***@host.example/x"
        );
        assert_eq!(
            redact_url("http://Token_55@host.example"),
            "http://***@host.example"
        );
        assert_eq!(
            redact_url("https://h.example/cb?id=1#access_token=abc&state=x"),
            "https://h.example/cb?id=1#access_token=***&state=x"
        );
        assert_eq!(
            redact_url("https://h.example/?api%5Fkey=abc&ApiKey=def&password=ghi"),
            "https://h.example/?api%5Fkey=***&ApiKey=***&password=***"
        );
    }

    #[test]
    fn credential_headers_are_recognised() {
        for name in [
            "Authorization",
            "proxy-authorization",
            "Set-Cookie",
            "webhook-signature",
            "X-Api-Key",
            "X-Auth-Token",
            "MS-Signature",
        ] {
            assert!(is_secret_header(name, Some("ms-signature")), "{name}");
        }
        assert!(is_secret_header("X-Hub", Some("x-hub")));
        assert!(is_secret_header("X-Api%5FKey", None));
        assert!(is_secret_header("X%2DSIG", None));
        assert!(is_secret_header("COOKIE", None));
        for name in ["X-Shop", "content-type", "webhook-id", "x-hub"] {
            assert!(!is_secret_header(name, None), "{name}");
        }
    }

    #[test]
    fn everything_else_is_kept_as_written() {
        for url in [
            "https://x.example/a@b",
            "http://mysite.com/webhook?id=1111-22&type=CustomerOrder",
            "https://x.example/hook/{{ entity_id }}?q=a%20b&flag",
            "not a url at all",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn credentials_can_be_replaced_by_anything() {
        let url = "https://relay:pw@h.example/x/{{ id }}?api_key=k&id=1";
        let replaced = replace_url_credentials(url, |which, value| match which {
            UrlCredential::Password => format!("<password {value}>"),
            UrlCredential::User => unreachable!(),
            UrlCredential::Parameter(name) => format!("<{name} {value}>"),
        });
        assert_eq!(
            replaced,
            "https://relay:<password pw>@h.example/x/{{ id }}?api_key=<api_key k>&id=1"
        );
        let user =
            replace_url_credentials("http://T@h/", |which, value| format!("{which:?}={value}"));
        assert_eq!(user, "http://User=T@h/");
    }

    #[test]
    fn urls_inside_error_texts_are_redacted() {
        let text = "error sending request for url (http://127.0.0.1:1/hook?api_key=QueryKey_777&id=1): client error (Connect): tcp connect error";
        assert_eq!(
            redact_urls_in(text),
            "error sending request for url (http://127.0.0.1:1/hook?api_key=***&id=1): client error (Connect): tcp connect error"
        );
        let text = "error sending request for url (HTTPS://Token_55@h.example/x?token=abc): timed out, see \"https://a:b@c.example/\".";
        assert_eq!(
            redact_urls_in(text),
            "error sending request for url (HTTPS://***@h.example/x?token=***): timed out, see \"https://a:***@c.example/\"."
        );
        let plain = "no complete response within 30s";
        assert_eq!(redact_urls_in(plain), plain);
        // Already redacted text stays as it is.
        let once = redact_urls_in(text);
        assert_eq!(redact_urls_in(&once), once);
    }
}
