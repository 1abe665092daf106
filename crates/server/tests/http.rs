//! The service over loopback with a real HTTP client: every endpoint and format with scores
//! equal to `tantivy-rerank score`'s, the exact bodies Elasticsearch and OpenSearch send
//! checked against their parsers' rules, bad input, a bounded load test, and a graceful
//! shutdown with a request in flight.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tantivy_rerank_server::ServerOptions;

const QUERY: &str = "which team won super bowl 50";
const TEXTS: [&str; 5] = [
    "The Denver Broncos won Super Bowl 50.",
    "Bananas are yellow and grow in bunches.",
    "Super Bowl 50 was played at Levi's Stadium.",
    "The Carolina Panthers lost the game.",
    "Paris is the capital of France.",
];

fn options() -> ServerOptions {
    ServerOptions {
        model_id: "fixture".into(),
        ..Default::default()
    }
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn tei_rerank_equals_score_for_one_two_and_three_labels() {
    for fixture in [
        "modernbert-1label-mean",
        "bert-2label-vocab",
        "bert-3label",
        "xlmr-1label",
        "electra-2label",
        "qwen3-reranker-st",
        "qwen2-reranker",
    ] {
        let server = start(fixture, None, options());
        let expected = expected_scores(&server.model, QUERY, &TEXTS);
        let r = post(
            &server.url("/rerank"),
            &json!({"query": QUERY, "texts": TEXTS, "unknown_field": [1, 2]}),
        );
        assert_eq!(r.status, 200, "{fixture}: {}", r.body);
        let ranks = r.json();
        let ranks = ranks.as_array().expect("a bare array");
        assert_eq!(ranks.len(), TEXTS.len(), "{fixture}: one score per text");
        let mut seen = vec![false; TEXTS.len()];
        let mut last = f32::INFINITY;
        for item in ranks {
            assert_eq!(keys(item), ["index", "score"], "{fixture}: {item}");
            let i = item["index"].as_u64().expect("index") as usize;
            let s = item["score"].as_f64().expect("score") as f32;
            assert!(
                close(s, expected[i]),
                "{fixture} text {i}: {s} vs {}",
                expected[i]
            );
            assert!(s <= last, "{fixture}: sorted best first");
            last = s;
            seen[i] = true;
        }
        assert!(seen.iter().all(|&s| s));

        // raw_scores: the logit, the log-odds of the relevant label, the grade.
        let pairs: Vec<(&str, &str)> = TEXTS.iter().map(|t| (QUERY, *t)).collect();
        let predictions = server.model.predict(&pairs).expect("predict");
        let r = post(
            &server.url("/rerank"),
            &json!({"query": QUERY, "texts": TEXTS, "raw_scores": true, "return_text": true, "top_n": 2}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let ranks = r.json();
        let ranks = ranks.as_array().expect("array");
        assert_eq!(ranks.len(), 2, "{fixture}: top_n");
        for item in ranks {
            assert_eq!(keys(item), ["index", "score", "text"]);
            let i = item["index"].as_u64().unwrap() as usize;
            assert_eq!(item["text"], TEXTS[i]);
            let logits = &predictions[i].logits;
            let raw = match logits.len() {
                1 => logits[0],
                2 => logits[1] - logits[0],
                _ => predictions[i].score,
            };
            let got = item["score"].as_f64().unwrap() as f32;
            assert!(close(got, raw), "{fixture} raw {got} vs {raw}");
        }
        server.stop().expect("stopped");
    }
}

/// `/info` names the architecture and how it scores: a classification head, or the two
/// tokens' logits of a causal reranker with their ids.
#[test]
fn info_names_the_architecture_and_the_scoring() {
    for (fixture, architecture) in [
        ("bert-3label", "bert"),
        ("xlmr-1label", "xlm-roberta"),
        ("qwen3-reranker-st", "qwen3"),
    ] {
        let server = start(fixture, None, options());
        let info = get(&server.url("/info")).json();
        assert_eq!(info["architecture"], architecture, "{info}");
        if architecture == "qwen3" {
            assert_eq!(
                info["scoring"],
                json!({"kind": "token_logits", "true_token": "yes", "true_id": 300, "false_token": "no", "false_id": 293}),
                "{info}"
            );
        } else {
            assert_eq!(info["scoring"], json!({"kind": "classifier"}), "{info}");
        }
        server.stop().expect("stopped");
    }
}

#[test]
fn predict_gives_labels_and_probabilities() {
    let server = start("bert-3label", None, options());
    let model = server.model.clone();
    let r = post(
        &server.url("/predict"),
        &json!({"inputs": [QUERY, TEXTS[0]]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let labels = r.json();
    let labels = labels.as_array().expect("array");
    assert_eq!(labels.len(), 3);
    let prediction = model.predict(&[(QUERY, TEXTS[0])]).unwrap().remove(0);
    let class = model.classification(&prediction);
    for item in labels {
        assert_eq!(keys(item), ["label", "score"]);
        let name = item["label"].as_str().unwrap();
        let i = model
            .labels()
            .iter()
            .position(|l| l == name)
            .expect("a label");
        assert!(close(
            item["score"].as_f64().unwrap() as f32,
            class.probabilities[i]
        ));
    }
    assert_eq!(labels[0]["label"], class.label, "best first");
    // A batch of a text alone and a pair; a single string.
    let r = post(
        &server.url("/predict"),
        &json!({"inputs": [["just a text"], [QUERY, TEXTS[1]]], "raw_scores": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let batch = r.json();
    assert_eq!(batch.as_array().map(Vec::len), Some(2));
    assert_eq!(batch[1].as_array().map(Vec::len), Some(3));
    let r = post(&server.url("/predict"), &json!({"inputs": "one text"}));
    assert_eq!(r.status, 200, "{}", r.body);
    // Three strings are no input form.
    let r = post(
        &server.url("/predict"),
        &json!({"inputs": [["a", "b", "c"]]}),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    server.stop().unwrap();
}

#[test]
fn cohere_v1_and_v2_answer_in_cohere_shape() {
    let server = start("bert-2label-vocab", None, options());
    let expected = expected_scores(&server.model, QUERY, &TEXTS);
    for version in ["v1", "v2"] {
        let documents: Vec<Value> = TEXTS
            .iter()
            .enumerate()
            .map(|(i, t)| match i % 2 {
                0 => json!(t),
                _ => json!({"text": t, "title": "ignored"}),
            })
            .collect();
        let r = post(
            &server.url(&format!("/{version}/rerank")),
            &json!({"model": "rerank-v3.5", "query": QUERY, "documents": documents,
                    "return_documents": true, "top_n": null}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let body = r.json();
        assert_eq!(keys(&body), ["id", "meta", "results"]);
        assert!(
            r.body.find("\"results\"") < r.body.find("\"meta\""),
            "results before meta: {}",
            r.body
        );
        assert_eq!(body["meta"]["api_version"]["version"], &version[1..]);
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), TEXTS.len());
        for item in results {
            assert_eq!(keys(item), ["document", "index", "relevance_score"]);
            let i = item["index"].as_u64().unwrap() as usize;
            assert_eq!(item["document"], json!({"text": TEXTS[i]}));
            let s = item["relevance_score"].as_f64().unwrap() as f32;
            assert!(close(s, expected[i]), "{s} vs {}", expected[i]);
        }
    }
    // max_tokens_per_doc cuts each document to its first tokens.
    let long = "Super Bowl 50 decided the champion of the National Football League for the 2015 season and many more words follow here";
    let r = post(
        &server.url("/v2/rerank"),
        &json!({"query": QUERY, "documents": [long], "max_tokens_per_doc": 4}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let tokenizer = server.model.tokenizer();
    let spans = tokenizer.token_spans(long).unwrap();
    let cut = &long[..spans[3].1];
    let want = expected_scores(&server.model, QUERY, &[cut])[0];
    let got = r.json()["results"][0]["relevance_score"].as_f64().unwrap() as f32;
    assert!(close(got, want), "cut to 4 tokens: {got} vs {want}");
    // max_chunks_per_doc scores a document by its best chunk: at least its first chunk.
    let many = TEXTS.join(" ").repeat(6);
    let r = post(
        &server.url("/v1/rerank"),
        &json!({"query": QUERY, "documents": [many.clone()], "max_chunks_per_doc": 4}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let chunked = r.json()["results"][0]["relevance_score"].as_f64().unwrap() as f32;
    let whole = expected_scores(&server.model, QUERY, &[&many])[0];
    assert!(
        chunked >= whole - 1e-5,
        "best chunk {chunked} < first chunk {whole}"
    );
    // An object without `text` is named.
    let r = post(
        &server.url("/v1/rerank"),
        &json!({"query": QUERY, "documents": [{"body": "x"}]}),
    );
    assert_eq!(r.status, 422);
    assert!(r.json()["error"].as_str().unwrap().contains("documents[0]"));
    server.stop().unwrap();
}

/// A float literal as OpenSearch's JSON library needs it for its `(Double)` cast: with a
/// `.` or exponent, at most 18 characters.
fn assert_double_literals(raw: &str, key: &str) {
    let pattern = format!("\"{key}\":");
    let mut found = 0;
    for part in raw.split(&pattern).skip(1) {
        let literal: String = part
            .chars()
            .take_while(|c| c.is_ascii_digit() || "+-.eE".contains(*c))
            .collect();
        assert!(
            literal.contains('.') || literal.contains('e') || literal.contains('E'),
            "{key} {literal} is an integer literal: {raw}"
        );
        assert!(literal.len() <= 18, "{key} {literal} is too long: {raw}");
        found += 1;
    }
    assert!(found > 0, "no {key} in {raw}");
}

/// The request bodies Elasticsearch's `hugging_face`, `custom` and `cohere` inference services
/// and OpenSearch's `cohere.rerank` connector send (read from their sources), and the rules
/// their response parsers apply.
#[test]
fn elasticsearch_and_opensearch_request_bodies() {
    let server = start(
        "bert-3label",
        None,
        ServerOptions {
            api_key: Some("KEY".into()),
            ..options()
        },
    );
    let json_type = ("Content-Type", "application/json");
    // A. ES hugging_face -> /rerank: a bare array of {index, score[, text]}, one per text.
    for body in [
        r#"{"texts":["luke","leia","r2d2"],"query":"star wars main character"}"#,
        r#"{"texts":["luke","leia","r2d2"],"query":"star wars main character","return_text":true,"top_n":2}"#,
    ] {
        let r = post_bytes(
            &server.url("/rerank"),
            body.as_bytes(),
            &[json_type, ("Authorization", "Bearer KEY")],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        let items = v.as_array().expect("a top-level array");
        let with_text = body.contains("return_text");
        assert_eq!(items.len(), if with_text { 2 } else { 3 });
        for item in items {
            let mut want = vec!["index", "score"];
            if with_text {
                want.push("text");
            }
            assert_eq!(keys(item), want, "no other keys: {item}");
            assert!(item["index"].is_u64() && item["score"].is_f64());
        }
    }
    // B. ES custom service with a Cohere-shaped template -> /v2/rerank, lowercase scheme.
    let r = post_bytes(
        &server.url("/v2/rerank"),
        br#"{"documents": ["luke","leia","r2d2"], "query": "star wars main character", "model": "rerank-v3.5"}"#,
        &[("Authorization", "bearer KEY"), json_type],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert!(v.is_object(), "the custom parser needs a top-level object");
    let results = v["results"].as_array().unwrap();
    let indexes: Vec<u64> = results
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(
        results.len(),
        3,
        "$.results[*].index and relevance_score, one per document"
    );
    assert!(results.iter().all(|r| r["relevance_score"].is_f64()));
    let mut sorted = indexes.clone();
    sorted.sort();
    assert_eq!(sorted, [0, 1, 2]);
    // C. ES cohere service (V2), minimal and full body.
    for body in [
        r#"{"model":"rerank-v3.5","query":"star wars main character","documents":["luke","leia","r2d2"]}"#,
        r#"{"model":"rerank-v3.5","query":"star wars main character","documents":["luke","leia","r2d2"],"return_documents":true,"top_n":2,"max_chunks_per_doc":3}"#,
    ] {
        let r = post_bytes(
            &server.url("/v2/rerank"),
            body.as_bytes(),
            &[
                json_type,
                ("Authorization", "Bearer KEY"),
                ("Request-Source", "unspecified:elasticsearch"),
            ],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.find("\"results\"") < r.body.find("\"meta\""));
        for item in r.json()["results"].as_array().unwrap() {
            for k in keys(item) {
                assert!(
                    ["index", "relevance_score", "document"].contains(&k.as_str()),
                    "the ES cohere parser throws on `{k}`"
                );
            }
            if let Some(d) = item.get("document") {
                assert!(d.is_object() && d["text"].is_string());
            }
        }
        assert_double_literals(&r.body, "relevance_score");
    }
    // D. OpenSearch connector.pre_process.cohere.rerank -> /v1/rerank, the template's spacing.
    let r = post_bytes(
        &server.url("/v1/rerank"),
        br#"{ "documents": ["Carson City is the capital city of the American state of Nevada.","Washington, D.C. is the capital of the United States."], "query": "What is the capital of the United States?", "model": "rerank-english-v2.0", "top_n": 2 }"#,
        &[("Authorization", "Bearer KEY"), json_type],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 2);
    // The post-process fills scores[index]: indexes are integers below the result count.
    assert!(results
        .iter()
        .all(|r| r["index"].as_u64().is_some_and(|i| i < 2)));
    assert_double_literals(&r.body, "relevance_score");
    server.stop().unwrap();
}

#[test]
fn bad_input_gets_a_clear_answer_and_the_service_stays_up() {
    let server = start(
        "bert-2label-vocab",
        None,
        ServerOptions {
            payload_limit: 20_000,
            api_key: Some("sesame".into()),
            ..options()
        },
    );
    let auth = ("Authorization", "Bearer sesame");
    let good = || {
        let r = post_bytes(
            &server.url("/rerank"),
            json!({"query": QUERY, "texts": TEXTS})
                .to_string()
                .as_bytes(),
            &[auth],
        );
        assert_eq!(r.status, 200, "a good request after a bad one: {}", r.body);
    };
    // (what, body, headers, status, error_type)
    type Case<'a> = (&'a str, Vec<u8>, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            b"{\"query\": \"q\", \"texts\": [".to_vec(),
            vec![auth],
            400,
            "Validation",
        ),
        (
            "wrong type",
            br#"{"query": 3, "texts": ["a"]}"#.to_vec(),
            vec![auth],
            422,
            "Validation",
        ),
        (
            "missing field",
            br#"{"query": "q"}"#.to_vec(),
            vec![auth],
            422,
            "Validation",
        ),
        (
            "invalid UTF-8",
            b"{\"query\": \"\xff\xfe\", \"texts\": [\"a\"]}".to_vec(),
            vec![auth],
            400,
            "Validation",
        ),
        (
            "empty texts",
            br#"{"query": "q", "texts": []}"#.to_vec(),
            vec![auth],
            400,
            "Empty",
        ),
        (
            "top_n 0",
            br#"{"query": "q", "texts": ["a"], "top_n": 0}"#.to_vec(),
            vec![auth],
            422,
            "Validation",
        ),
        (
            "left truncation",
            br#"{"query": "q", "texts": ["a"], "truncation_direction": "left"}"#.to_vec(),
            vec![auth],
            422,
            "Validation",
        ),
        (
            "not JSON",
            b"query=q".to_vec(),
            vec![auth, ("Content-Type", "text/plain")],
            415,
            "Validation",
        ),
        (
            "over the payload limit",
            format!(
                "{{\"query\": \"q\", \"texts\": [\"{}\"]}}",
                "x".repeat(30_000)
            )
            .into_bytes(),
            vec![auth],
            413,
            "Validation",
        ),
        (
            "no key",
            br#"{"query": "q", "texts": ["a"]}"#.to_vec(),
            vec![],
            401,
            "Unauthorized",
        ),
        (
            "wrong key",
            br#"{"query": "q", "texts": ["a"]}"#.to_vec(),
            vec![("Authorization", "Bearer nope")],
            401,
            "Unauthorized",
        ),
        (
            "other scheme",
            br#"{"query": "q", "texts": ["a"]}"#.to_vec(),
            vec![("Authorization", "Basic sesame")],
            401,
            "Unauthorized",
        ),
    ];
    for (what, body, headers, status, error_type) in cases {
        let r = post_bytes(&server.url("/rerank"), &body, &headers);
        assert_eq!(r.status, status, "{what}: {}", r.body);
        assert!(
            r.content_type.contains("json"),
            "{what}: {}",
            r.content_type
        );
        let v = r.json();
        assert_eq!(v["error_type"], error_type, "{what}: {v}");
        assert!(!v["error"].as_str().unwrap_or("").is_empty(), "{what}: {v}");
        good();
    }
    // A document far longer than the model's window is cut, never an error.
    let huge = "touchdown ".repeat(100_000);
    let r = post_bytes(
        &server.url("/rerank"),
        json!({"query": QUERY, "texts": [huge.trim()]})
            .to_string()
            .as_bytes(),
        &[auth],
    );
    assert_eq!(r.status, 413, "1 MB over a 20 kB limit: {}", r.body);
    assert!(r.body.contains("over the payload limit"), "{}", r.body);
    let long = "touchdown ".repeat(1_500);
    let r = post_bytes(
        &server.url("/rerank"),
        json!({"query": QUERY, "texts": [long.trim()]})
            .to_string()
            .as_bytes(),
        &[auth],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // /health and /metrics need no key, /info does; unknown routes are JSON 404s.
    assert_eq!(get(&server.url("/health")).status, 200);
    assert_eq!(get(&server.url("/metrics")).status, 200);
    assert_eq!(get(&server.url("/info")).status, 401);
    let info = get_with(&server.url("/info"), &[auth]);
    assert_eq!(info.status, 200);
    let info = info.json();
    assert_eq!(info["labels"].as_array().map(Vec::len), Some(2));
    assert_eq!(info["max_input_length"], server.model.max_length());
    assert_eq!(info["payload_limit"], 20_000);
    assert_eq!(info["model_dtype"], "float32");
    assert_eq!(info["device"], "cpu");
    let r = get_with(&server.url("/nope"), &[auth]);
    assert_eq!(
        (r.status, r.json()["error_type"].as_str()),
        (404, Some("NotFound"))
    );
    // /search without an index is a clear 404.
    let r = post_bytes(&server.url("/search"), br#"{"query": "q"}"#, &[auth]);
    assert_eq!(r.status, 404);
    assert!(r.body.contains("--index"), "{}", r.body);
    good();
    server.stop().unwrap();
}

#[test]
fn over_the_concurrency_limit_is_429() {
    let server = start(
        "bert-2label-vocab",
        None,
        ServerOptions {
            max_concurrent_requests: 1,
            ..options()
        },
    );
    let body = json!({"query": QUERY, "texts": TEXTS})
        .to_string()
        .into_bytes();
    // A request whose body is still arriving holds the only permit.
    let held = Partial::open(server.addr, "/rerank", &body, 10);
    std::thread::sleep(Duration::from_millis(200));
    let r = post(
        &server.url("/rerank"),
        &json!({"query": QUERY, "texts": TEXTS}),
    );
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error_type"], "Overloaded");
    // /health is never limited.
    assert_eq!(get(&server.url("/health")).status, 200);
    let (status, answer) = held.finish();
    assert_eq!(status, 200, "{answer}");
    let r = post(
        &server.url("/rerank"),
        &json!({"query": QUERY, "texts": TEXTS}),
    );
    assert_eq!(r.status, 200, "the permit is back: {}", r.body);
    server.stop().unwrap();
}

/// A thousand documents in one request are spread over many batches and all scored.
#[test]
fn a_large_request_is_split_not_refused() {
    let server = start(
        "bert-3label",
        None,
        ServerOptions {
            max_documents: 2_000,
            ..options()
        },
    );
    let texts: Vec<String> = (0..1_200)
        .map(|i| format!("{} number {i}", TEXTS[i % TEXTS.len()]))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let expected = expected_scores(&server.model, QUERY, &refs);
    let r = post(
        &server.url("/rerank"),
        &json!({"query": QUERY, "texts": texts}),
    );
    assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(300)]);
    let ranks = r.json();
    let ranks = ranks.as_array().unwrap();
    assert_eq!(ranks.len(), 1_200);
    for item in ranks {
        let i = item["index"].as_u64().unwrap() as usize;
        assert!(close(item["score"].as_f64().unwrap() as f32, expected[i]));
    }
    server.stop().unwrap();
}

/// Concurrent clients for a fixed time: no errors, every score right, batches across
/// requests (the metrics show batches of more pairs than one request has).
#[test]
fn bounded_load_test() {
    let server = start("bert-3label", None, options());
    let texts: Vec<String> = (0..200)
        .map(|i| format!("{} variant {i}", TEXTS[i % TEXTS.len()]))
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let expected: HashMap<&str, f32> = refs
        .iter()
        .copied()
        .zip(expected_scores(&server.model, QUERY, &refs))
        .collect();
    let clients = 16;
    let deadline = Instant::now() + Duration::from_secs(4);
    let results: Vec<(usize, usize, Vec<f64>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (texts, expected, server) = (&texts, &expected, &server);
                s.spawn(move || {
                    let (mut ok, mut bad, mut latencies) = (0usize, 0usize, Vec::new());
                    let mut k = c;
                    // Bounded in time and in count.
                    while Instant::now() < deadline && ok + bad < 500 {
                        let batch: Vec<&str> = (0..10)
                            .map(|j| texts[(k * 7 + j * 13) % texts.len()].as_str())
                            .collect();
                        k += clients;
                        let t = Instant::now();
                        let r = post(
                            &server.url("/rerank"),
                            &json!({"query": QUERY, "texts": batch}),
                        );
                        latencies.push(t.elapsed().as_secs_f64() * 1e3);
                        let right = r.status == 200
                            && r.json().as_array().is_some_and(|items| {
                                items.len() == 10
                                    && items.iter().all(|item| {
                                        let i = item["index"].as_u64().unwrap_or(99) as usize;
                                        batch.get(i).is_some_and(|t| {
                                            close(
                                                item["score"].as_f64().unwrap_or(f64::NAN) as f32,
                                                expected[t],
                                            )
                                        })
                                    })
                            });
                        if right {
                            ok += 1;
                        } else {
                            bad += 1;
                        }
                    }
                    (ok, bad, latencies)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: usize = results.iter().map(|r| r.0).sum();
    let bad: usize = results.iter().map(|r| r.1).sum();
    let mut lat: Vec<f64> = results.into_iter().flat_map(|r| r.2).collect();
    lat.sort_by(f64::total_cmp);
    let p99 = lat[((lat.len() as f64 * 0.99).ceil() as usize).clamp(1, lat.len()) - 1];
    eprintln!(
        "load test: {clients} clients, {} requests, {bad} errors, p50 {:.1} ms, p99 {p99:.1} ms",
        ok + bad,
        lat[lat.len() / 2]
    );
    assert_eq!(bad, 0, "every request answered right");
    assert!(ok >= clients, "{ok}");
    // Batches held pairs of several requests at once.
    let metrics = get(&server.url("/metrics")).body;
    let bucket = |le: &str| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("tantivy_rerank_batch_pairs_bucket")
                    && l.contains(&format!("le=\"{le}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let count = bucket("+Inf");
    assert!(count > 0.0, "{metrics}");
    assert!(
        bucket("8") < count,
        "some batch held more than one 10-pair request:\n{metrics}"
    );
    for name in [
        "tantivy_rerank_requests_total",
        "tantivy_rerank_request_duration_seconds",
        "tantivy_rerank_queue_size",
        "tantivy_rerank_batch_tokens",
        "tantivy_rerank_inference_duration_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    server.stop().unwrap();
}

/// A shutdown signal stops new connections, finishes the request in flight, and returns.
#[test]
fn graceful_shutdown_finishes_the_request_in_flight() {
    let mut server = start("bert-2label-vocab", None, options());
    let body = json!({"query": QUERY, "texts": TEXTS})
        .to_string()
        .into_bytes();
    let in_flight = Partial::open(server.addr, "/rerank", &body, 12);
    std::thread::sleep(Duration::from_millis(200));
    let addr = server.addr;
    let stopping = server.begin_stop().expect("server thread");
    std::thread::sleep(Duration::from_millis(300));
    // No new connections are accepted once the signal came.
    let refused = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err();
    let (status, answer) = in_flight.finish();
    assert_eq!(status, 200, "the request in flight is answered: {answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer)
            .map(|v| v.as_array().map(Vec::len))
            .ok()
            .flatten(),
        Some(TEXTS.len())
    );
    stopping.join().expect("thread").expect("clean exit");
    assert!(refused, "a new connection was accepted after the signal");
}

/// `/search` returns the `search --json` object: BM25, then the served model on the window.
#[test]
fn search_endpoint_equals_the_library_search() {
    use tantivy_rerank_search::{ArticleIndex, Cascade, ImportOptions, SearchOptions, Stage};
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tantivy_rerank_testdata::shared_dir().join("data/squad-articles/corpus.jsonl");
    let index = ArticleIndex::create(tmp.path(), &Default::default()).unwrap();
    let quiet = ImportOptions {
        progress: false,
        ..Default::default()
    };
    index.import_beir(&corpus, &quiet).unwrap();
    let server = start("bert-3label", Some(index), options());
    let r = post(
        &server.url("/search"),
        &json!({"query": "Which team won Super Bowl 50?", "top": 5, "window": 8}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let got = r.json();
    let direct = ArticleIndex::open(tmp.path()).unwrap();
    let model = server.model.clone();
    let cascade = Cascade::new(Stage::borrowed(model.as_ref()).window(8));
    let want = direct
        .search(
            "Which team won Super Bowl 50?",
            &SearchOptions::default().top_n(5).rerank(&cascade),
        )
        .unwrap();
    let hits = got["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 5);
    assert_eq!(got["candidates"], 8);
    for (h, w) in hits.iter().zip(&want.hits) {
        assert_eq!(h["doc"]["id"], w.doc.id);
        assert_eq!(h["first_stage_rank"], w.first_stage_rank);
        let s = h["score"].as_f64().unwrap() as f32;
        assert!(close(s, w.score.unwrap()), "{s} vs {:?}", w.score);
        assert!(h["passage"]["text"].is_string());
    }
    assert!(got["timings"]["score"].is_f64());
    // Bad options are named.
    let r = post(&server.url("/search"), &json!({"query": "q", "window": 0}));
    assert_eq!(r.status, 422, "{}", r.body);
    server.stop().unwrap();
}
