//! The benchmark's receiver, run in its own process (`outbox-bench receiver`) so the relay is
//! measured honestly: answers 204 at once and records when each event (by its `seq`) arrived.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Default)]
struct Log {
    /// (seq, received at µs since the epoch)
    arrivals: Vec<(u64, u64)>,
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Serves until killed. Prints `PORT <n>` once listening.
pub async fn serve() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("PORT {}", listener.local_addr()?.port());
    let log: Arc<Mutex<Log>> = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let log = log.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(log.clone(), req));
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    log: Arc<Mutex<Log>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = now_us();
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let reply = |status: u16, body: String| {
        Ok(Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(body)))
            .expect("static response"))
    };
    match path.as_str() {
        "/count" => {
            let n = log.lock().expect("log").arrivals.len();
            reply(200, n.to_string())
        }
        "/arrivals" => {
            let text =
                serde_json::to_string(&log.lock().expect("log").arrivals).unwrap_or_default();
            reply(200, text)
        }
        "/reset" => {
            log.lock().expect("log").arrivals.clear();
            reply(200, String::new())
        }
        _ => {
            let seq = seq_of(&body).unwrap_or(u64::MAX);
            log.lock().expect("log").arrivals.push((seq, at));
            reply(204, String::new())
        }
    }
}

/// The `entity_id` of the default body, which the benchmark sets to the event's sequence number.
fn seq_of(body: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("entity_id")?.as_str()?.parse().ok()
}
