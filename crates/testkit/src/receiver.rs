use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::tls::{CertAndKey, TestCa};

/// A request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub at: Instant,
    /// When the response was sent (after any scripted delay).
    pub answered_at: Instant,
    /// The status scripted for this request.
    pub status: u16,
    /// Whether the response was handed to the connection: false while the scripted delay runs, or
    /// when the client went away during it (its sender was killed, or gave up at its timeout).
    pub answered: bool,
    /// DER of the certificate the client presented (TLS receivers that ask for one).
    pub client_cert: Option<Bytes>,
}

impl Received {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How to answer one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            delay: Duration::ZERO,
            body: String::new(),
            headers: Vec::new(),
        }
    }

    pub fn ok() -> Reply {
        Reply::status(200)
    }

    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    pub fn body(mut self, body: impl Into<String>) -> Reply {
        self.body = body.into();
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Handler = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

#[derive(Default)]
struct State {
    received: Vec<Received>,
    script: VecDeque<Reply>,
    handler: Option<Handler>,
    in_flight: usize,
    max_in_flight: usize,
    connections: usize,
    failed_handshakes: usize,
}

/// An HTTP receiver on 127.0.0.1:<random port> that records requests and answers as scripted:
/// first the queued replies (in order), then the handler, else 200.
#[derive(Clone)]
pub struct TestReceiver {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    tls: bool,
}

impl TestReceiver {
    pub async fn start() -> TestReceiver {
        TestReceiver::start_with(None).await
    }

    /// An HTTPS receiver presenting `server` (issued for 127.0.0.1 and localhost). With
    /// `client_ca`, it requires a client certificate issued by that CA and refuses the
    /// handshake otherwise.
    pub async fn start_tls(server: &CertAndKey, client_ca: Option<&TestCa>) -> TestReceiver {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots
                    .add(ca.cert_der().into())
                    .expect("test CA is a trust anchor");
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots.into(),
                    provider,
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(
                vec![server.cert_der.clone().into()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(server.key_der.clone().into()),
            )
            .expect("server certificate");
        TestReceiver::start_with(Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_with(tls: Option<TlsAcceptor>) -> TestReceiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the test receiver");
        let addr = listener.local_addr().expect("receiver address");
        let state: Arc<Mutex<State>> = Arc::default();
        let accept_state = state.clone();
        let is_tls = tls.is_some();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = accept_state.clone();
                state.lock().unwrap().connections += 1;
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => {
                            let service = service_fn(move |req| handle(state.clone(), None, req));
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            let stream = match acceptor.accept(stream).await {
                                Ok(s) => s,
                                Err(_) => {
                                    state.lock().unwrap().failed_handshakes += 1;
                                    return;
                                }
                            };
                            let peer = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|certs| certs.first())
                                .map(|c| Bytes::copy_from_slice(c.as_ref()));
                            let service =
                                service_fn(move |req| handle(state.clone(), peer.clone(), req));
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        TestReceiver {
            addr,
            state,
            tls: is_tls,
        }
    }

    /// `http://127.0.0.1:<port><path>` (`https://` for a TLS receiver)
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues replies for the next requests, in order.
    pub fn push(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    /// Answers every request not covered by queued replies.
    pub fn handle(&self, handler: impl Fn(&Received) -> Reply + Send + Sync + 'static) {
        self.state.lock().unwrap().handler = Some(Arc::new(handler));
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    pub fn count(&self) -> usize {
        self.state.lock().unwrap().received.len()
    }

    /// TCP connections accepted so far (a refused destination never gets one).
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// TLS handshakes that failed (e.g. no or an untrusted client certificate).
    pub fn failed_handshakes(&self) -> usize {
        self.state.lock().unwrap().failed_handshakes
    }

    /// The most requests that were being answered at the same time.
    pub fn max_concurrency(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }

    /// Waits until at least `n` requests arrived; returns all of them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        crate::wait_until(
            timeout,
            &format!("{n} requests at the receiver"),
            || async {
                let got = self.requests();
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    client_cert: Option<Bytes>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut received = Received {
        method,
        path,
        headers,
        body,
        at,
        answered_at: at,
        status: 0,
        answered: false,
        client_cert,
    };
    // Recorded on arrival, so a request whose sender died mid-way is still seen.
    let (reply, index) = {
        let mut s = state.lock().unwrap();
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        let reply = match s.script.pop_front() {
            Some(r) => r,
            None => match &s.handler {
                Some(h) => h(&received),
                None => Reply::ok(),
            },
        };
        received.status = reply.status;
        s.received.push(received);
        (reply, s.received.len() - 1)
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    {
        let mut s = state.lock().unwrap();
        s.in_flight -= 1;
        s.received[index].answered_at = Instant::now();
        s.received[index].answered = true;
    }
    let mut response = Response::builder().status(reply.status);
    for (n, v) in &reply.headers {
        response = response.header(n.as_str(), v.as_str());
    }
    Ok(response
        .body(Full::new(Bytes::from(reply.body)))
        .expect("valid scripted response"))
}
