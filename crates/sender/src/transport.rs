use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use outbox_core::redact::{redact_url, redact_urls_in};

use crate::network::{NetworkPolicy, PolicyResolver, REFUSED_MARKER};
use crate::tls::TlsSettings;

/// Bytes of the response body kept (and recorded in `outbox.attempts.response`).
pub const RESPONSE_KEEP: usize = 4096;
/// Bytes of the response body read at most (the rest is dropped with the connection).
const RESPONSE_DRAIN: usize = 64 * 1024;

/// One HTTP request, fully rendered and signed.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    pub method: &'static str,
    pub url: String,
    /// Every header, in order (content-type, user-agent, webhook-*, signature, auth, custom).
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Limit for the whole attempt: connect, send, response.
    pub timeout: Duration,
    /// The webhook's client certificate and extra CAs, if it has any.
    pub tls: Option<Arc<TlsSettings>>,
}

/// What came back.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    /// The first 4 KiB of the body, as text.
    pub body: String,
    pub retry_after: Option<String>,
    /// The response's headers (taken over from the HTTP client, not copied).
    pub headers: reqwest::header::HeaderMap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportErrorKind {
    Timeout,
    Connect,
    /// The network policy forbade the destination; nothing was sent.
    Refused,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    pub kind: TransportErrorKind,
    pub message: String,
}

/// Sends requests. [`HttpTransport`] in production; tests may supply their own.
pub trait Transport: Send + Sync + 'static {
    fn send(
        &self,
        request: OutboundRequest,
    ) -> Pin<Box<dyn Future<Output = Result<Response, TransportError>> + Send + 'static>>;
}

/// reqwest with keep-alive connection pooling, no redirects, a 5 s connect timeout and the
/// network policy applied to every resolved address (so DNS cannot smuggle a request to a
/// metadata endpoint). Webhooks without TLS settings share one client; each distinct set of TLS
/// settings (client certificate, extra CAs) gets its own, built on first use and dropped once no
/// webhook uses those settings any more.
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    policy: Arc<NetworkPolicy>,
    tls_clients: Arc<Mutex<HashMap<[u8; 32], TlsClient>>>,
}

/// A client for one TLS identity, and the settings (of live endpoints) that use it.
struct TlsClient {
    client: reqwest::Client,
    users: Vec<Weak<TlsSettings>>,
}

impl HttpTransport {
    pub fn new(policy: NetworkPolicy) -> Result<HttpTransport, crate::Error> {
        let policy = Arc::new(policy);
        let client = client_builder(&policy)
            .build()
            .map_err(|e| crate::Error::Client(chain(&e)))?;
        Ok(HttpTransport {
            client,
            policy,
            tls_clients: Arc::default(),
        })
    }

    /// The client for a request: the shared one, or the one of its TLS settings.
    async fn client_for(
        policy: &Arc<NetworkPolicy>,
        default: &reqwest::Client,
        cache: &Mutex<HashMap<[u8; 32], TlsClient>>,
        tls: Option<&Arc<TlsSettings>>,
    ) -> Result<reqwest::Client, TransportError> {
        let Some(tls) = tls else {
            return Ok(default.clone());
        };
        let key = tls.fingerprint();
        if let Some(entry) = cache.lock().expect("TLS clients").get_mut(&key) {
            if !entry
                .users
                .iter()
                .any(|u| std::ptr::eq(u.as_ptr(), Arc::as_ptr(tls)))
            {
                entry.users.retain(|u| u.strong_count() > 0);
                entry.users.push(Arc::downgrade(tls));
            }
            return Ok(entry.client.clone());
        }
        // Building reads the system's root certificates: keep it off the async workers.
        let settings = tls.clone();
        let policy = policy.clone();
        let built = tokio::task::spawn_blocking(move || {
            settings
                .apply(client_builder(&policy))?
                .build()
                .map_err(|e| chain(&e))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        let client = built.map_err(|e| TransportError {
            kind: TransportErrorKind::Connect,
            message: format!("cannot set up TLS with this webhook's [tls] settings: {e}"),
        })?;
        let mut cache = cache.lock().expect("TLS clients");
        // Settings no live endpoint uses any more (the webhook changed or was removed) go.
        cache.retain(|_, c| c.users.iter().any(|u| u.strong_count() > 0));
        let entry = cache.entry(key).or_insert_with(|| TlsClient {
            client,
            users: Vec::new(),
        });
        entry.users.push(Arc::downgrade(tls));
        Ok(entry.client.clone())
    }

    /// How many TLS-specific clients are cached.
    #[cfg(test)]
    fn tls_clients(&self) -> usize {
        self.tls_clients.lock().expect("TLS clients").len()
    }

    /// Sends one request like [`Transport::send`], and also returns the response headers as
    /// text (for `outbox-relay test --send`, which shows them).
    pub async fn send_showing_headers(
        &self,
        request: OutboundRequest,
    ) -> Result<(Response, Vec<(String, String)>), TransportError> {
        let response = self.clone().execute(request).await?;
        let headers = response
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        Ok((response, headers))
    }

    async fn execute(self, request: OutboundRequest) -> Result<Response, TransportError> {
        let policy = &self.policy;
        let url = reqwest::Url::parse(&request.url).map_err(|e| TransportError {
            kind: TransportErrorKind::Connect,
            message: format!("invalid URL {:?}: {e}", redact_url(&request.url)),
        })?;
        if let Some(reason) = policy.check_literal_host(&url) {
            return Err(TransportError {
                kind: TransportErrorKind::Refused,
                message: reason,
            });
        }
        let method =
            reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| TransportError {
                kind: TransportErrorKind::Connect,
                message: format!("invalid method {}", request.method),
            })?;
        let client = Self::client_for(
            policy,
            &self.client,
            &self.tls_clients,
            request.tls.as_ref(),
        )
        .await?;
        let mut builder = client.request(method, url);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let send = async {
            let mut response = builder
                .body(request.body.clone())
                .send()
                .await
                .map_err(classify)?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let headers = std::mem::take(response.headers_mut());
            let mut kept: Vec<u8> = Vec::new();
            let mut read = 0usize;
            while read < RESPONSE_DRAIN {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        read += chunk.len();
                        if kept.len() < RESPONSE_KEEP {
                            let room = RESPONSE_KEEP - kept.len();
                            kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                        }
                    }
                    Ok(None) => break,
                    // The status is what counts; a broken body after it is not a failed delivery.
                    Err(_) => break,
                }
            }
            Ok(Response {
                status,
                body: String::from_utf8_lossy(&kept).into_owned(),
                retry_after,
                headers,
            })
        };
        match tokio::time::timeout(request.timeout, send).await {
            Ok(result) => result,
            Err(_) => Err(TransportError {
                kind: TransportErrorKind::Timeout,
                message: format!("no complete response within {:?}", request.timeout),
            }),
        }
    }
}

impl Transport for HttpTransport {
    fn send(
        &self,
        request: OutboundRequest,
    ) -> Pin<Box<dyn Future<Output = Result<Response, TransportError>> + Send + 'static>> {
        Box::pin(self.clone().execute(request))
    }
}

/// What every client shares: no redirects, 5 s to connect, keep-alive pooling, the network policy
/// on every resolved address.
fn client_builder(policy: &Arc<NetworkPolicy>) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .no_proxy()
        .dns_resolver(Arc::new(PolicyResolver {
            policy: policy.clone(),
        }))
}

/// The error as recorded: its kind, and its text with the URL's credentials hidden (the text is
/// stored in `outbox.attempts.error`, shown by `deliveries show` and the API, and logged).
fn classify(mut e: reqwest::Error) -> TransportError {
    if let Some(url) = e.url_mut()
        && let Ok(redacted) = reqwest::Url::parse(&redact_url(url.as_str()))
    {
        *url = redacted;
    }
    let message = redact_urls_in(&chain(&e));
    let kind = if message.contains(REFUSED_MARKER) {
        TransportErrorKind::Refused
    } else if e.is_timeout() {
        TransportErrorKind::Timeout
    } else {
        TransportErrorKind::Connect
    };
    TransportError { kind, message }
}

/// The error and all its causes in one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox_core::TlsSpec;
    use outbox_testkit::TestReceiver;
    use outbox_testkit::tls::{CertAndKey, TestCa};

    fn request(url: String, tls: Option<Arc<TlsSettings>>) -> OutboundRequest {
        OutboundRequest {
            method: "POST",
            url,
            headers: Vec::new(),
            body: Bytes::from_static(b"{}"),
            timeout: Duration::from_secs(10),
            tls,
        }
    }

    #[tokio::test]
    async fn one_client_per_distinct_tls_identity_kept_only_while_used() {
        let ca = TestCa::new("test CA");
        let receiver = TestReceiver::start_tls(&ca.server_cert(), Some(&ca)).await;
        let plain = TestReceiver::start().await;
        let transport = HttpTransport::new(NetworkPolicy::default()).unwrap();
        let settings = |cert: &CertAndKey| {
            Arc::new(
                TlsSettings::from_spec(&TlsSpec {
                    client_cert: Some(cert.bundle_pem()),
                    ca_cert: Some(ca.cert_pem()),
                })
                .unwrap()
                .unwrap(),
            )
        };
        let (a, b) = (ca.client_cert("a"), ca.client_cert("b"));
        let presented = || receiver.requests().last().unwrap().client_cert.clone();

        let first = settings(&a);
        let same = settings(&a);
        for tls in [&first, &same] {
            let response = transport
                .send(request(receiver.url("/"), Some(tls.clone())))
                .await
                .unwrap();
            assert_eq!(response.status, 200);
        }
        assert_eq!(transport.tls_clients(), 1, "equal settings share a client");
        assert_eq!(presented().as_deref(), Some(a.cert_der.as_slice()));

        // The webhook's certificate changed: its old settings are gone, a new client is built
        // and the old one dropped.
        drop((first, same));
        let second = settings(&b);
        transport
            .send(request(receiver.url("/"), Some(second.clone())))
            .await
            .unwrap();
        assert_eq!(transport.tls_clients(), 1);
        assert_eq!(presented().as_deref(), Some(b.cert_der.as_slice()));

        let again = settings(&a);
        transport
            .send(request(receiver.url("/"), Some(again.clone())))
            .await
            .unwrap();
        assert_eq!(transport.tls_clients(), 2, "both identities are in use");

        transport.send(request(plain.url("/"), None)).await.unwrap();
        assert_eq!(
            transport.tls_clients(),
            2,
            "no TLS settings: the shared client"
        );
        assert_eq!(plain.count(), 1);
    }

    #[tokio::test]
    async fn errors_quote_the_url_without_its_credentials() {
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let transport = HttpTransport::new(NetworkPolicy::default()).unwrap();
        for url in [
            format!("http://Token_55@127.0.0.1:{closed}/hook?api_key=QueryKey_777&id=1"),
            format!("http://relay:Pass_99@127.0.0.1:{closed}/hook?id=1&token=QueryKey_777"),
            format!("http://127.0.0.1:{closed}/hook?api_key=QueryKey_777 x"),
        ] {
            let e = transport
                .send(request(url.clone(), None))
                .await
                .unwrap_err();
            for secret in ["Token_55", "Pass_99", "QueryKey_777"] {
                assert!(!e.message.contains(secret), "{url}: {}", e.message);
            }
            assert!(e.message.contains("=***"), "{url}: {}", e.message);
        }
    }

    #[tokio::test]
    async fn a_denied_address_is_refused_in_its_mapped_form_before_connecting() {
        let receiver = TestReceiver::start().await;
        let port = receiver.addr().port();
        let transport = HttpTransport::new(NetworkPolicy::new(
            Vec::new(),
            vec!["127.0.0.0/8".parse().unwrap()],
        ))
        .unwrap();
        for url in [
            format!("http://127.0.0.1:{port}/"),
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            format!("http://[::ffff:7f00:1]:{port}/"),
            format!("http://0x7f000001:{port}/"),
        ] {
            let e = transport
                .send(request(url.clone(), None))
                .await
                .unwrap_err();
            assert_eq!(e.kind, TransportErrorKind::Refused, "{url}: {}", e.message);
            assert!(e.message.contains("127.0.0.0/8"), "{url}: {}", e.message);
        }
        assert_eq!(receiver.connections(), 0, "nothing was opened");
    }
}
