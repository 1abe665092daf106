//! The service under abuse, over loopback: slow and idle connections, a connection flood, a
//! shutdown with clients that never finish, abandoned and timed-out searches, requests over
//! the size caps, compressed bodies and zip bombs, `Expect: 100-continue` over the limit.
//! Each test reproduces one finding of a hostile client and fails without its fix.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tantivy_rerank_search::{Article, ArticleIndex, ImportOptions, Reranker};
use tantivy_rerank_server::{Server, ServerOptions, MAX_LIMIT};

const MODEL: &str = "bert-2label-vocab";

fn options() -> ServerOptions {
    ServerOptions {
        model_id: "fixture".into(),
        ..Default::default()
    }
}

fn rerank_body() -> String {
    json!({"query": "which team won", "texts": ["The Broncos won.", "Bananas."]}).to_string()
}

/// An index of `n` short articles about cats.
fn cat_index(dir: &std::path::Path, n: usize) -> ArticleIndex {
    let index = ArticleIndex::create(dir, &Default::default()).unwrap();
    let quiet = ImportOptions {
        progress: false,
        ..Default::default()
    };
    let docs = (0..n).map(|i| Article {
        id: format!("d{i}"),
        title: format!("Cats {i}"),
        body: format!("Cats purr and sleep {i} hours a day."),
    });
    index.import_articles(docs, &quiet).unwrap();
    index
}

/// A reranker that counts its calls and sleeps `ms` in each.
fn slow_reranker(ms: u64) -> (Arc<AtomicUsize>, Arc<dyn Reranker>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let reranker = move |_q: &str, texts: &[&str]| {
        counted.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(ms));
        Ok::<_, std::convert::Infallible>(vec![0.0; texts.len()])
    };
    (calls, Arc::new(reranker))
}

#[test]
fn a_slow_header_is_dropped_after_the_header_timeout() {
    let server = start(
        MODEL,
        None,
        ServerOptions {
            header_read_timeout: Duration::from_millis(600),
            ..options()
        },
    );
    let before = metric(
        &get(&server.url("/metrics")).body,
        "tantivy_rerank_connections_closed_total",
        &["header_timeout"],
    );
    // One header byte every 100 ms: each byte is progress, but the head never completes.
    let mut slow = Raw::connect(server.addr);
    let started = Instant::now();
    let head = b"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
    let mut cut = false;
    for b in head.iter().cycle().take(60) {
        if !slow.send(&[*b]) {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let waited = match cut {
        true => Some(started.elapsed()),
        false => slow
            .closed_within(Duration::from_secs(3))
            .map(|d| d + started.elapsed()),
    };
    let waited = waited.expect("the slow header was still open after 9 s");
    assert!(waited < Duration::from_secs(3), "closed after {waited:?}");
    // A connection that sent nothing at all is closed too.
    let mut silent = Raw::connect(server.addr);
    let took = silent.closed_within(Duration::from_secs(3));
    assert!(took.is_some(), "a silent connection stayed open");
    let after = metric(
        &get(&server.url("/metrics")).body,
        "tantivy_rerank_connections_closed_total",
        &["header_timeout"],
    );
    assert!(after >= before + 2.0, "{before} -> {after}");
    // The service still answers.
    assert_eq!(
        post(
            &server.url("/rerank"),
            &serde_json::from_str(&rerank_body()).unwrap()
        )
        .status,
        200
    );
    server.stop().unwrap();
}

#[test]
fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not() {
    let server = start(
        MODEL,
        None,
        ServerOptions {
            idle_timeout: Duration::from_millis(700),
            ..options()
        },
    );
    let mut idle = Raw::connect(server.addr);
    assert!(idle.request("/rerank", &rerank_body()));
    assert_eq!(idle.response().map(|r| r.0), Some(200));
    // A client that sends a request every 300 ms keeps its connection.
    let mut busy = Raw::connect(server.addr);
    for _ in 0..6 {
        assert!(
            busy.request("/rerank", &rerank_body()),
            "busy connection cut"
        );
        assert_eq!(busy.response().map(|r| r.0), Some(200));
        std::thread::sleep(Duration::from_millis(300));
    }
    // By now (1.8 s) the idle one is gone.
    let took = idle.closed_within(Duration::from_millis(500));
    assert!(
        took.is_some(),
        "the idle connection is still open after 1.8 s"
    );
    server.stop().unwrap();
}

#[test]
fn at_the_connection_cap_an_idle_connection_makes_room_and_busy_ones_queue_the_rest() {
    let server = start(
        MODEL,
        None,
        ServerOptions {
            max_connections: 2,
            ..options()
        },
    );
    // Two idle keep-alive connections fill the cap; a third client is still served, and
    // the idler of the two is closed for it.
    let mut a = Raw::connect(server.addr);
    assert!(a.request("/rerank", &rerank_body()));
    assert_eq!(a.response().map(|r| r.0), Some(200));
    std::thread::sleep(Duration::from_millis(50));
    let mut b = Raw::connect(server.addr);
    assert!(b.request("/rerank", &rerank_body()));
    assert_eq!(b.response().map(|r| r.0), Some(200));
    let mut c = Raw::connect(server.addr);
    assert!(c.request("/rerank", &rerank_body()));
    assert_eq!(c.response().map(|r| r.0), Some(200), "served at the cap");
    assert!(
        a.closed_within(Duration::from_secs(2)).is_some(),
        "the idlest connection made room"
    );
    drop((b, c));
    // Two requests in flight hold both places: a third connection waits (it is not
    // refused, and it is not served beyond the cap) until one of them ends.
    let body = rerank_body().into_bytes();
    let first = Partial::open(server.addr, "/rerank", &body, 5);
    let second = Partial::open(server.addr, "/rerank", &body, 5);
    std::thread::sleep(Duration::from_millis(300));
    let waiting = std::thread::spawn({
        let url = server.url("/health");
        move || {
            let t = Instant::now();
            (get(&url).status, t.elapsed())
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !waiting.is_finished(),
        "a third connection was served beyond the cap"
    );
    assert_eq!(first.finish().0, 200);
    let (status, waited) = waiting.join().unwrap();
    assert_eq!(status, 200);
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    assert_eq!(second.finish().0, 200);
    server.stop().unwrap();
}

#[test]
fn shutdown_ends_within_its_timeout_whatever_the_clients_do() {
    let (calls, reranker) = slow_reranker(400);
    let tmp = tempfile::tempdir().unwrap();
    let mut server = start_with(
        MODEL,
        Some(cat_index(tmp.path(), 100)),
        ServerOptions {
            shutdown_timeout: Duration::from_millis(800),
            header_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            ..options()
        },
        Some(reranker),
    );
    // An idle keep-alive connection, a header arriving byte by byte, a body that never
    // completes, and a search scoring for seconds.
    let mut idle = Raw::connect(server.addr);
    assert!(idle.request("/rerank", &rerank_body()));
    assert_eq!(idle.response().map(|r| r.0), Some(200));
    let mut slow = Raw::connect(server.addr);
    assert!(slow.send(b"POST /rerank HT"));
    let stuck = Partial::open(server.addr, "/rerank", rerank_body().as_bytes(), 3);
    let mut searching = Raw::connect(server.addr);
    assert!(searching.request(
        "/search",
        &json!({"query": "cats", "window": 100}).to_string()
    ));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the search is scoring");
    let started = Instant::now();
    let stopping = server.begin_stop().expect("server thread");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(stopping.join());
    });
    let result = done_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the service did not stop within 5 s");
    let took = started.elapsed();
    result.expect("thread").expect("clean exit");
    assert!(
        took < Duration::from_millis(2_500),
        "stopped after {took:?}"
    );
    // Connections without a request in flight closed at once.
    assert!(idle.closed_within(Duration::from_millis(100)).is_some());
    assert!(slow.closed_within(Duration::from_millis(100)).is_some());
    drop(stuck);
    // The search was cancelled with its connection: no call after the one running.
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        calls.load(Ordering::SeqCst) <= 3,
        "{}",
        calls.load(Ordering::SeqCst)
    );
}

/// A search whose client hangs up stops at its next batch, and keeps its place among the
/// concurrent requests until it has stopped.
#[test]
fn an_abandoned_search_stops_scoring_and_holds_its_permit_until_then() {
    let (calls, reranker) = slow_reranker(500);
    let tmp = tempfile::tempdir().unwrap();
    let server = start_with(
        MODEL,
        Some(cat_index(tmp.path(), 100)),
        ServerOptions {
            max_concurrent_requests: 1,
            ..options()
        },
        Some(reranker),
    );
    let before = metric(
        &get(&server.url("/metrics")).body,
        "tantivy_rerank_requests_abandoned_total",
        &["route=\"/search\""],
    );
    // 100 candidates, 32 a call: 4 calls of 500 ms if nothing stops the search.
    let mut client = Raw::connect(server.addr);
    assert!(client.request(
        "/search",
        &json!({"query": "cats", "window": 100}).to_string()
    ));
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    drop(client);
    std::thread::sleep(Duration::from_millis(100));
    // The first call is still running: the abandoned search holds the only permit.
    let r = post(
        &server.url("/rerank"),
        &serde_json::from_str(&rerank_body()).unwrap(),
    );
    assert_eq!(r.status, 429, "{}", r.body);
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no call after the client left"
    );
    let r = post(
        &server.url("/rerank"),
        &serde_json::from_str(&rerank_body()).unwrap(),
    );
    assert_eq!(
        r.status, 200,
        "the permit is back once the search stopped: {}",
        r.body
    );
    let after = metric(
        &get(&server.url("/metrics")).body,
        "tantivy_rerank_requests_abandoned_total",
        &["route=\"/search\""],
    );
    // At least: the shutdown test, in parallel, may abandon a search of its own meanwhile.
    assert!(after >= before + 1.0, "{before} -> {after}");
    server.stop().unwrap();
}

/// A search past the request timeout is a JSON 408, counted in the metrics, and stops.
#[test]
fn a_search_past_the_request_timeout_is_408_counted_and_stopped() {
    let (calls, reranker) = slow_reranker(300);
    let tmp = tempfile::tempdir().unwrap();
    let server = start_with(
        MODEL,
        Some(cat_index(tmp.path(), 100)),
        ServerOptions {
            request_timeout: Duration::from_millis(450),
            ..options()
        },
        Some(reranker),
    );
    let count_408 = || {
        metric(
            &get(&server.url("/metrics")).body,
            "tantivy_rerank_requests_total",
            &["route=\"/search\"", "status=\"408\""],
        )
    };
    let before = count_408();
    let r = post(
        &server.url("/search"),
        &json!({"query": "cats", "window": 100}),
    );
    assert_eq!(r.status, 408, "{}", r.body);
    assert_eq!(r.json()["error_type"], "Timeout");
    std::thread::sleep(Duration::from_millis(1_000));
    // Cancelled during its second call (at 450 ms): that call ends, no third starts.
    assert!(
        calls.load(Ordering::SeqCst) <= 2,
        "{}",
        calls.load(Ordering::SeqCst)
    );
    assert_eq!(count_408(), before + 1.0);
    server.stop().unwrap();
}

#[test]
fn requests_over_a_cap_are_422_naming_the_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(
        MODEL,
        Some(cat_index(tmp.path(), 20)),
        ServerOptions {
            max_documents: 3,
            max_passages: 40,
            max_search_window: 10,
            max_query_tokens: 64,
            max_query_terms: 3,
            ..options()
        },
    );
    let long_query = "which team won the game ".repeat(20_000);
    let cases = [
        (
            "/rerank",
            json!({"query": "q", "texts": ["a", "b", "c", "d"]}),
            "max_documents",
        ),
        (
            "/rerank",
            json!({"query": long_query, "texts": ["a"]}),
            "max_query_tokens",
        ),
        (
            "/predict",
            json!({"inputs": [["a"], ["b"], ["c"], ["d"]]}),
            "max_documents",
        ),
        (
            "/v2/rerank",
            json!({"query": "q", "documents": ["a", "b", "c", "d"]}),
            "max_documents",
        ),
        (
            "/v2/rerank",
            json!({"query": "q", "documents": ["a"], "max_chunks_per_doc": 41}),
            "max_passages",
        ),
        (
            "/v1/rerank",
            // Two long documents of 40 chunks each.
            json!({"query": "q", "documents": ["touchdown ".repeat(3_000), "field goal ".repeat(3_000)],
                   "max_chunks_per_doc": 40}),
            "max_passages",
        ),
        (
            "/v2/rerank",
            json!({"query": long_query, "documents": ["a"], "max_chunks_per_doc": 2}),
            "max_query_tokens",
        ),
        (
            "/search",
            json!({"query": "cats", "window": 11}),
            "max_search_window",
        ),
        (
            "/search",
            json!({"query": "cats", "top": 11, "window": 1}),
            "max_search_window",
        ),
        (
            "/search",
            json!({"query": "cats", "window": 3}),
            "max_passages",
        ),
        (
            "/search",
            json!({"query": long_query, "window": 1}),
            "max_query_tokens",
        ),
        (
            "/search",
            json!({"query": "cats purr sleep hours", "window": 1}),
            "max_query_terms",
        ),
    ];
    for (path, body, named) in cases {
        let r = post(&server.url(path), &body);
        assert_eq!(r.status, 422, "{path} {named}: {}", r.body);
        let error = r.json()["error"].as_str().unwrap_or("").to_string();
        assert!(error.contains(named), "{path}: {error}");
    }
    // Under the caps, the same endpoints answer.
    for (path, body) in [
        ("/rerank", json!({"query": "q", "texts": ["a", "b", "c"]})),
        (
            "/v2/rerank",
            json!({"query": "q", "documents": ["a b c"], "max_chunks_per_doc": 40}),
        ),
        ("/search", json!({"query": "cats", "window": 2})),
    ] {
        let r = post(&server.url(path), &body);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    // The caps are in /info.
    let info = get(&server.url("/info")).json();
    assert_eq!(info["max_documents"], 3);
    assert_eq!(info["max_query_terms"], 3);
    server.stop().unwrap();
}

#[test]
fn rank_fields_naming_no_field_of_a_document_or_none_are_422() {
    let server = start(MODEL, None, options());
    let docs = json!([{"title": "a", "text": "b"}, {"body": "only a body"}]);
    for (fields, named) in [
        (json!([]), "rank_fields is empty"),
        (
            json!(["summary", "abstract"]),
            "documents[0] has none of the rank_fields",
        ),
        (
            json!(["title", "summary"]),
            "documents[1] has none of the rank_fields",
        ),
    ] {
        let r = post(
            &server.url("/v2/rerank"),
            &json!({"query": "q", "documents": docs, "rank_fields": fields}),
        );
        assert_eq!(r.status, 422, "{fields}: {}", r.body);
        assert!(
            r.json()["error"].as_str().unwrap().contains(named),
            "{}",
            r.body
        );
    }
    // One of several fields present is enough.
    let r = post(
        &server.url("/v2/rerank"),
        &json!({"query": "q", "documents": [{"title": "a"}, {"summary": "b"}], "rank_fields": ["title", "summary"]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    server.stop().unwrap();
}

#[test]
fn gzip_and_deflate_bodies_are_decoded_and_bombs_refused() {
    use flate2::write::{GzEncoder, ZlibEncoder};
    let server = start(
        MODEL,
        None,
        ServerOptions {
            payload_limit: 100_000,
            ..options()
        },
    );
    let body = rerank_body();
    let plain = post_bytes(&server.url("/rerank"), body.as_bytes(), &[]);
    assert_eq!(plain.status, 200);
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let r = post_bytes(&server.url("/rerank"), &gz, &[("Content-Encoding", "gzip")]);
    assert_eq!((r.status, r.body.as_str()), (200, plain.body.as_str()));
    let mut z = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(body.as_bytes()).unwrap();
    let r = post_bytes(
        &server.url("/rerank"),
        &z.finish().unwrap(),
        &[("Content-Encoding", "deflate")],
    );
    assert_eq!((r.status, r.body.as_str()), (200, plain.body.as_str()));
    // 50 MB of JSON whitespace in about 50 kB: under the limit compressed, far over it
    // decoded.
    let mut bomb = GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(b"{\"query\": \"q\", \"texts\": [\"a\"]")
        .unwrap();
    for _ in 0..50 {
        bomb.write_all(&[b' '; 1 << 20]).unwrap();
    }
    bomb.write_all(b"}").unwrap();
    let bomb = bomb.finish().unwrap();
    assert!(bomb.len() < 100_000, "{}", bomb.len());
    let r = post_bytes(
        &server.url("/rerank"),
        &bomb,
        &[("Content-Encoding", "gzip")],
    );
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("decodes"), "{}", r.body);
    let r = post_bytes(&server.url("/rerank"), &gz, &[("Content-Encoding", "br")]);
    assert_eq!(r.status, 415, "{}", r.body);
    assert!(r.body.contains("Content-Encoding `br`"), "{}", r.body);
    let r = post_bytes(
        &server.url("/rerank"),
        b"not gzip",
        &[("Content-Encoding", "gzip")],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    server.stop().unwrap();
}

#[test]
fn expect_continue_over_the_limit_is_413_before_the_body_is_sent() {
    let server = start(
        MODEL,
        None,
        ServerOptions {
            payload_limit: 10_000,
            ..options()
        },
    );
    let mut raw = Raw::connect(server.addr);
    let head = "POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\nExpect: 100-continue\r\n\r\n";
    assert!(raw.send(head.as_bytes()));
    let started = Instant::now();
    let (status, body) = raw.response().expect("an answer without sending the body");
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload limit"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // Under the limit, the client gets its 100 Continue and then the answer.
    let body = rerank_body();
    let mut raw = Raw::connect(server.addr);
    let head = format!(
        "POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    assert!(raw.send(head.as_bytes()));
    assert_eq!(raw.response().map(|r| r.0), Some(100));
    assert!(raw.send(body.as_bytes()));
    assert_eq!(raw.response().map(|r| r.0), Some(200));
    server.stop().unwrap();
}

#[test]
fn limits_past_what_a_semaphore_holds_are_refused_or_clamped_never_a_panic() {
    let huge = ServerOptions {
        max_concurrent_requests: 2_305_843_009_213_693_952,
        ..options()
    };
    let err = huge.validate().unwrap_err();
    assert!(
        err.contains("max_concurrent_requests") && err.contains(&MAX_LIMIT.to_string()),
        "{err}"
    );
    let huge_connections = ServerOptions {
        max_connections: usize::MAX,
        ..options()
    };
    assert!(huge_connections.validate().is_err());
    // The library clamps instead of panicking.
    let model = Arc::new(load(MODEL));
    let _ = Server::new(
        model,
        None,
        ServerOptions {
            max_concurrent_requests: usize::MAX,
            max_connections: usize::MAX,
            ..options()
        },
    );
    let server = start(
        MODEL,
        None,
        ServerOptions {
            max_concurrent_requests: MAX_LIMIT + 1,
            ..options()
        },
    );
    assert_eq!(
        post(
            &server.url("/rerank"),
            &serde_json::from_str(&rerank_body()).unwrap()
        )
        .status,
        200
    );
    server.stop().unwrap();
}
