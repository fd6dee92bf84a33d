//! A webhook receiver for trying webhooks out: `outbox-relay receive` on its own, and the built-in
//! receiver of `outbox-relay demo`. It accepts any method and path, checks the signature with the
//! secrets it was given ([`crate::verify`]) and hands every request to the caller to print.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use base64::Engine;
use chrono::{DateTime, Local};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::Failure;
use crate::verify::{self, Verdict};

/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Most body bytes printed.
const PRINT_BODY: usize = 64 * 1024;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: DateTime<Local>,
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub signature: Verdict,
    /// A problem worth pointing out besides the signature (e.g. a stale timestamp).
    pub warning: Option<String>,
    /// The status answered.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Chooses the status to answer a request with (the demo fails some on purpose).
pub type Responder = Arc<dyn Fn(&Received) -> u16 + Send + Sync>;

/// How the receiver checks and answers.
#[derive(Clone)]
pub struct Options {
    /// Secrets to verify signatures with: `whsec_...` for Standard Webhooks, any text for hmac-sha256.
    pub secrets: Vec<String>,
    /// Header of the hmac-sha256 scheme.
    pub hmac_header: String,
    pub respond: Responder,
}

impl Options {
    /// Answers every request with `status`.
    pub fn answering(status: u16, secrets: Vec<String>) -> Options {
        Options {
            secrets,
            hmac_header: "ms-signature".into(),
            respond: Arc::new(move |_| status),
        }
    }
}

#[derive(Clone)]
struct Shared {
    options: Options,
    out: mpsc::UnboundedSender<Received>,
}

/// Binds the receiver's address.
pub async fn bind(addr: &str) -> Result<TcpListener, Failure> {
    let addr: SocketAddr = addr.parse().map_err(|e| {
        Failure::invalid(format!(
            "--listen {addr:?} is not an address such as 127.0.0.1:9999 ({e})"
        ))
    })?;
    TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::runtime(format!("cannot listen on {addr}: {e}")))
}

/// Serves until `shutdown`, sending every request it answered to `out`.
pub async fn serve(
    listener: TcpListener,
    options: Options,
    out: mpsc::UnboundedSender<Received>,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .fallback(receive)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Shared { options, out });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = result {
        eprintln!("error: the receiver stopped: {e}");
    }
}

async fn receive(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let at = Local::now();
    let (signature, warning) = verify::verify(
        &headers,
        &body,
        &shared.options.secrets,
        &shared.options.hmac_header,
        at.timestamp(),
    );
    let mut received = Received {
        at,
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into()),
        headers,
        body,
        signature,
        warning,
        status: 200,
    };
    received.status = (shared.options.respond)(&received);
    let status = StatusCode::from_u16(received.status).unwrap_or(StatusCode::OK);
    let _ = shared.out.send(received);
    (
        status,
        if status.is_success() {
            "ok\n"
        } else {
            "not now\n"
        },
    )
}

/// A header value fit for printing: credentials are hidden (the username of Basic auth is shown).
pub fn printable_header(name: &str, value: &str) -> String {
    if !name.eq_ignore_ascii_case("authorization") {
        return value.to_string();
    }
    if let Some(token) = value.strip_prefix("Basic ") {
        let username = base64::engine::general_purpose::STANDARD
            .decode(token.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.split_once(':').map(|(u, _)| u.to_string()));
        return match username {
            Some(u) => format!("Basic *** (username {u:?}, password hidden)"),
            None => "Basic ***".into(),
        };
    }
    match value.split_once(' ') {
        Some((scheme, _)) => format!("{scheme} ***"),
        None => "***".into(),
    }
}

/// The body as text: pretty JSON when it is JSON, else the text itself (cut at 64 KiB).
pub fn printable_body(received: &Received) -> String {
    if received.body.is_empty() {
        return "(empty body)".into();
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&received.body)
        && let Ok(pretty) = serde_json::to_string_pretty(&value)
    {
        return pretty;
    }
    let shown = &received.body[..received.body.len().min(PRINT_BODY)];
    let mut text = String::from_utf8_lossy(shown).into_owned();
    if received.body.len() > PRINT_BODY {
        text.push_str(&format!(
            "\n… ({} more bytes)",
            received.body.len() - PRINT_BODY
        ));
    }
    text
}

/// Prints a request in full: request line, headers, body and the signature verdict.
pub fn print_full(r: &Received) {
    let mut out = format!(
        "── {}  {} {}  → {}\n",
        r.at.format("%H:%M:%S%.3f"),
        r.method,
        r.path,
        r.status
    );
    for (name, value) in &r.headers {
        out.push_str(&format!("   {name}: {}\n", printable_header(name, value)));
    }
    out.push('\n');
    for line in printable_body(r).lines() {
        out.push_str("   ");
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!("\n   signature: {}\n", r.signature));
    if let Some(w) = &r.warning {
        out.push_str(&format!("   warning: {w}\n"));
    }
    println!("{out}");
}

/// `outbox-relay receive`: prints every request until Ctrl-C.
pub async fn run(
    listen: &str,
    secrets: Vec<String>,
    status: u16,
    hmac_header: String,
) -> Result<(), Failure> {
    if !(100..=599).contains(&status) {
        return Err(Failure::invalid(format!(
            "--status {status} is not an HTTP status code (100-599)"
        )));
    }
    let listener = bind(listen).await?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::runtime(e.to_string()))?;
    let mut options = Options::answering(status, secrets);
    options.hmac_header = hmac_header;
    println!(
        "receiving webhooks on http://{addr} (answering {status}; {}); Ctrl-C stops",
        if options.secrets.is_empty() {
            "signatures are not checked: pass --secret".to_string()
        } else {
            format!(
                "checking signatures with {} secret(s)",
                options.secrets.len()
            )
        }
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, options, tx, shutdown.clone()));
    let signal = crate::shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            received = rx.recv() => match received {
                Some(r) => print_full(&r),
                None => break,
            },
        }
    }
    shutdown.cancel();
    let _ = server.await;
    Ok(())
}
