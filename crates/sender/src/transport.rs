use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::policy::NetworkPolicy;

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
}

/// What came back.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    /// The first 4 KiB of the body, as text.
    pub body: String,
    pub retry_after: Option<String>,
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
/// metadata endpoint).
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    policy: Arc<NetworkPolicy>,
}

impl HttpTransport {
    pub fn new(policy: NetworkPolicy) -> Result<HttpTransport, crate::Error> {
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver {
                policy: policy.clone(),
            }))
            .build()
            .map_err(|e| crate::Error::Client(chain(&e)))?;
        Ok(HttpTransport { client, policy })
    }

    /// Sends one request like [`Transport::send`], and also returns the response headers (for
    /// `outbox-relay test --send`, which shows them).
    pub async fn send_showing_headers(
        &self,
        request: OutboundRequest,
    ) -> Result<(Response, Vec<(String, String)>), TransportError> {
        Self::execute(self.client.clone(), self.policy.clone(), request, true).await
    }

    async fn execute(
        client: reqwest::Client,
        policy: Arc<NetworkPolicy>,
        request: OutboundRequest,
        keep_headers: bool,
    ) -> Result<(Response, Vec<(String, String)>), TransportError> {
        let url = reqwest::Url::parse(&request.url).map_err(|e| TransportError {
            kind: TransportErrorKind::Connect,
            message: format!("invalid URL {:?}: {e}", request.url),
        })?;
        if let Some(host) = url.host_str() {
            let literal = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = literal.parse::<IpAddr>()
                && let Some(reason) = policy.check(ip)
            {
                return Err(TransportError {
                    kind: TransportErrorKind::Refused,
                    message: reason,
                });
            }
        }
        let method =
            reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| TransportError {
                kind: TransportErrorKind::Connect,
                message: format!("invalid method {}", request.method),
            })?;
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
            let headers: Vec<(String, String)> = if keep_headers {
                response
                    .headers()
                    .iter()
                    .map(|(name, value)| {
                        (
                            name.as_str().to_string(),
                            String::from_utf8_lossy(value.as_bytes()).into_owned(),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            };
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
            Ok((
                Response {
                    status,
                    body: String::from_utf8_lossy(&kept).into_owned(),
                    retry_after,
                },
                headers,
            ))
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
        let exchange = Self::execute(self.client.clone(), self.policy.clone(), request, false);
        Box::pin(async move { exchange.await.map(|(response, _)| response) })
    }
}

fn classify(e: reqwest::Error) -> TransportError {
    let message = chain(&e);
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

const REFUSED_MARKER: &str = "network policy denies";

struct PolicyResolver {
    policy: Arc<NetworkPolicy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match policy.check(a.ip()) {
                    None => true,
                    Some(reason) => {
                        refused = Some(reason);
                        false
                    }
                })
                .collect();
            if allowed.is_empty()
                && let Some(reason) = refused
            {
                return Err(format!("{host}: {reason}").into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}
