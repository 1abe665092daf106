//! A service on a loopback port, and a real HTTP client for it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tantivy_rerank_encoders::{CrossEncoder, CrossEncoderOptions, DeviceSpec};
use tantivy_rerank_search::ArticleIndex;
use tantivy_rerank_server::{Server, ServerOptions};

pub fn fixture(name: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../encoders/tests/fixtures")
        .join(name)
}

pub fn load(name: &str) -> CrossEncoder {
    CrossEncoder::from_dir(
        fixture(name),
        CrossEncoderOptions::default().device(DeviceSpec::Cpu),
    )
    .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// A running service; dropping it does not stop it, `stop` does.
pub struct Running {
    pub addr: SocketAddr,
    pub model: Arc<CrossEncoder>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Ask for a graceful shutdown and wait until the service has stopped.
    pub fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().expect("server thread"),
            None => Ok(()),
        }
    }

    /// Ask for a graceful shutdown without waiting.
    pub fn begin_stop(&mut self) -> Option<std::thread::JoinHandle<std::io::Result<()>>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.thread.take()
    }
}

pub fn start(model: &str, index: Option<ArticleIndex>, options: ServerOptions) -> Running {
    start_with(model, index, options, None)
}

/// [`start`], with `/search` scored by `search_reranker` when given.
pub fn start_with(
    model: &str,
    index: Option<ArticleIndex>,
    options: ServerOptions,
    search_reranker: Option<Arc<dyn tantivy_rerank_search::Reranker>>,
) -> Running {
    let model = Arc::new(load(model));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let server_model = model.clone();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            addr_tx.send(listener.local_addr()?).expect("address");
            let mut server = Server::new(server_model, index.map(Arc::new), options)?;
            if let Some(reranker) = search_reranker {
                server = server.with_search_reranker(reranker);
            }
            server
                .run(listener, async move {
                    let _ = rx.await;
                })
                .await
        })
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the service started");
    Running {
        addr,
        model,
        shutdown: Some(tx),
        thread: Some(thread),
    }
}

/// A response: status, content type and body.
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build()
}

fn reply(result: Result<ureq::Response, ureq::Error>) -> Reply {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = response.status();
    let content_type = response.content_type().to_string();
    let body = response.into_string().expect("body");
    Reply {
        status,
        content_type,
        body,
    }
}

/// POST raw bytes with headers.
pub fn post_bytes(url: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
    let mut req = agent().post(url);
    let mut has_type = false;
    for (k, v) in headers {
        has_type |= k.eq_ignore_ascii_case("content-type");
        req = req.set(k, v);
    }
    if !has_type {
        req = req.set("Content-Type", "application/json");
    }
    reply(req.send_bytes(body))
}

/// POST a JSON value.
pub fn post(url: &str, body: &Value) -> Reply {
    post_bytes(url, body.to_string().as_bytes(), &[])
}

pub fn get(url: &str) -> Reply {
    reply(agent().get(url).call())
}

pub fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    reply(req.call())
}

/// A request whose body is sent only in part: it holds the service (a concurrency permit,
/// a connection in flight) until `finish` sends the rest and reads the answer.
pub struct Partial {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl Partial {
    pub fn open(addr: SocketAddr, path: &str, body: &[u8], sent: usize) -> Partial {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).expect("head");
        stream.write_all(&body[..sent]).expect("part of the body");
        stream.flush().expect("flush");
        Partial {
            stream,
            rest: body[sent..].to_vec(),
        }
    }

    /// Send the rest and return the status line and body.
    pub fn finish(mut self) -> (u16, String) {
        self.stream.write_all(&self.rest).expect("rest of the body");
        let mut raw = String::new();
        self.stream.read_to_string(&mut raw).expect("answer");
        let status = raw
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = raw.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }
}

/// The model's `score` (what `tantivy-rerank score` prints) for each (query, text).
pub fn expected_scores(model: &CrossEncoder, query: &str, texts: &[&str]) -> Vec<f32> {
    let pairs: Vec<(&str, &str)> = texts.iter().map(|t| (query, *t)).collect();
    model
        .predict(&pairs)
        .expect("predict")
        .into_iter()
        .map(|p| p.score)
        .collect()
}

/// Scores computed in different batch shapes agree within this.
pub const TOLERANCE: f32 = 1e-5;

pub fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= TOLERANCE * (1.0 + b.abs())
}

/// A raw connection for requests no HTTP client sends: partial heads, bytes at a trickle,
/// `Expect: 100-continue` without the body.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Raw { stream }
    }

    /// Write `bytes`; false when the service has closed the connection.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok() && self.stream.flush().is_ok()
    }

    /// A whole request with a JSON body, kept alive.
    pub fn request(&mut self, path: &str, body: &str) -> bool {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.send(head.as_bytes()) && self.send(body.as_bytes())
    }

    /// Read one response (head and a Content-Length body); `None` when the connection is
    /// closed (or reset) first.
    pub fn response(&mut self) -> Option<(u16, String)> {
        let mut raw = Vec::new();
        let mut byte = [0u8; 1];
        while !raw.ends_with(b"\r\n\r\n") {
            match self.stream.read(&mut byte) {
                Ok(1) => raw.push(byte[0]),
                _ => return None,
            }
        }
        let head = String::from_utf8_lossy(&raw).to_string();
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body).ok()?;
        Some((status, String::from_utf8_lossy(&body).to_string()))
    }

    /// Wait up to `limit` for the service to close the connection; the time it took.
    pub fn closed_within(&mut self, limit: Duration) -> Option<Duration> {
        let started = std::time::Instant::now();
        self.stream.set_read_timeout(Some(limit)).expect("timeout");
        let mut buf = [0u8; 256];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Some(started.elapsed()),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Some(started.elapsed())
                }
                Err(_) => return None,
            }
        }
    }
}

/// The value of the Prometheus sample `name{labels...}` whose line holds every one of
/// `labels`, or 0 when there is none.
pub fn metric(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
