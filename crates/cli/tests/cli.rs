//! The `tantivy-rerank` binary end to end: what each command prints on good input, and the
//! exit status and message on bad input. Models are the random-init fixtures of the encoders
//! crate; corpora are written to temporary folders.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../encoders/tests/fixtures")
        .join(name)
}

fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tantivy-rerank"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run tantivy-rerank")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Run and require success; the parsed JSON of standard output.
fn run_json(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Value {
    let out = run(args);
    assert!(out.status.success(), "failed: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

/// Run and require failure with `code`; the standard error text.
fn run_err(args: &[&dyn AsRef<std::ffi::OsStr>], code: i32) -> String {
    let out = run(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Three articles in a folder, indexed into `<tmp>/idx`.
fn indexed_corpus(tmp: &Path) -> PathBuf {
    let docs = tmp.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("v.md"),
        "# Volcanoes\nLava flows from volcanoes.\n",
    )
    .unwrap();
    std::fs::write(docs.join("g.txt"), "Glaciers carve valleys.\n").unwrap();
    std::fs::write(docs.join("o.md"), "# Oceans\nTides and waves meet lava.\n").unwrap();
    let idx = tmp.join("idx");
    let out = run(&[&"index", &"--corpus", &docs, &"--index", &idx]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("indexed 3 documents"),
        "{}",
        stderr(&out)
    );
    idx
}

fn ids(results: &Value) -> Vec<&str> {
    results["hits"]
        .as_array()
        .expect("hits array")
        .iter()
        .map(|h| h["doc"]["id"].as_str().expect("id"))
        .collect()
}

#[test]
fn search_json_has_one_shape_with_and_without_a_model() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = indexed_corpus(tmp.path());

    let bm25 = run_json(&[&"search", &"--index", &idx, &"lava", &"--json"]);
    assert_eq!(bm25["query"], "lava");
    assert_eq!(bm25["candidates"], 2);
    let mut found = ids(&bm25);
    found.sort();
    assert_eq!(found, ["o.md", "v.md"]);
    for (rank, hit) in bm25["hits"].as_array().unwrap().iter().enumerate() {
        assert_eq!(hit["first_stage_rank"], rank + 1);
        assert!(hit["first_stage_score"].as_f64().unwrap() > 0.0);
        assert!(hit["score"].is_null() && hit["rerank_score"].is_null());
    }

    let model = fixture("modernbert-1label-mean");
    let reranked = run_json(&[
        &"search", &"--index", &idx, &"lava", &"--model", &model, &"--json",
    ]);
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&bm25), keys(&reranked));
    assert_eq!(keys(&bm25["hits"][0]), keys(&reranked["hits"][0]));
    let hits = reranked["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 2);
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores[0] >= scores[1], "{scores:?}");
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{scores:?}");

    // A cascade of two models within a budget, from the command line.
    let second = fixture("bert-3label");
    let cascade = run_json(&[
        &"search",
        &"--index",
        &idx,
        &"lava",
        &"--model",
        &model,
        &"--window",
        &"2",
        &"--model",
        &second,
        &"--window",
        &"1",
        &"--budget-ms",
        &"60000",
        &"--json",
    ]);
    assert_eq!(keys(&bm25), keys(&cascade));
    let stages = cascade["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0]["name"], "modernbert-1label-mean");
    assert_eq!(
        (
            stages[0]["docs_scored"].as_u64(),
            stages[1]["docs_scored"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(cascade["budget_exhausted"], false);
    let top = &cascade["hits"][0];
    assert!(
        top["stage_scores"][0].is_f64() && top["stage_scores"][1].is_f64(),
        "{top}"
    );
    assert!(cascade["hits"][1]["stage_scores"][1].is_null());
    let err = run_err(
        &[
            &"search",
            &"--index",
            &idx,
            &"lava",
            &"--model",
            &model,
            &"--window",
            &"2",
            &"--window",
            &"1",
        ],
        1,
    );
    assert!(
        err.contains("--window is given 2 times for 1 --model"),
        "{err}"
    );

    // The text form: one line per hit, best first.
    let out = run(&[&"search", &"--index", &idx, &"glaciers"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("g.txt") && text.contains("  1."), "{text}");
}

#[test]
fn score_prints_one_line_per_pair_with_the_heads_score() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = tmp.path().join("pairs.jsonl");
    // A byte-order mark and a blank line are fine.
    std::fs::write(
        &pairs,
        "\u{feff}{\"query\":\"lava\",\"document\":\"Lava flows.\"}\n\n{\"query\":\"lava\",\"document\":\"ice\"}\n",
    )
    .unwrap();
    for (model, labels) in [("bert-3label", 3), ("bert-2label-vocab", 2)] {
        let out = run(&[&"score", &"--model", &fixture(model), &"--input", &pairs]);
        assert!(out.status.success(), "{model}: {}", stderr(&out));
        let lines: Vec<Value> = stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{model}");
        for line in &lines {
            let logits: Vec<f64> = line["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_f64().unwrap())
                .collect();
            assert_eq!(logits.len(), labels, "{model}");
            let exp: Vec<f64> = logits.iter().map(|l| l.exp()).collect();
            let sum: f64 = exp.iter().sum();
            // 3 labels: expected grade over irrelevant/partial/sufficient; 2: P(label 1).
            let expected = if labels == 3 {
                (0.5 * exp[1] + exp[2]) / sum
            } else {
                exp[1] / sum
            };
            let score = line["score"].as_f64().unwrap();
            assert!((score - expected).abs() < 1e-5, "{model}: {line}");
            assert_eq!(line.get("label").is_some(), labels == 3, "{model}: {line}");
        }
    }
}

/// `score` and `search --model` run the rerankers beyond BERT and ModernBERT: an XLM-RoBERTa,
/// an ELECTRA and a Qwen3 causal reranker directory; `score` gives sentence-transformers'
/// scores of the fixture pairs.
#[test]
fn score_and_search_run_every_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = indexed_corpus(tmp.path());
    for name in ["xlmr-1label", "electra-2label", "qwen3-reranker-st"] {
        let reference: Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(&format!("{name}.reference.json"))).unwrap(),
        )
        .unwrap();
        // The short cases (no repeated documents), as JSONL.
        let cases: Vec<&Value> = reference["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c.get("document_repeat").is_none())
            .take(8)
            .collect();
        let pairs = tmp.path().join(format!("{name}.jsonl"));
        let lines: Vec<String> = cases
            .iter()
            .map(|c| {
                serde_json::json!({"query": c["query"], "document": c["document"]}).to_string()
            })
            .collect();
        std::fs::write(&pairs, lines.join("\n")).unwrap();
        let out = run(&[&"score", &"--model", &fixture(name), &"--input", &pairs]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let scored: Vec<Value> = stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(scored.len(), cases.len(), "{name}");
        for (line, case) in scored.iter().zip(&cases) {
            let want: Vec<f64> = case["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_f64().unwrap())
                .collect();
            let got: Vec<f64> = line["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_f64().unwrap())
                .collect();
            assert_eq!(got.len(), want.len(), "{name}: {line}");
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-4, "{name}: {line} vs {want:?}");
            }
        }
        let reranked = run_json(&[
            &"search",
            &"--index",
            &idx,
            &"lava",
            &"--model",
            &fixture(name),
            &"--json",
        ]);
        let hits = reranked["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 2, "{name}");
        assert!(
            hits.iter().all(|h| h["rerank_score"].is_f64()),
            "{name}: {reranked}"
        );
    }
}

#[test]
fn bench_reports_a_workload() {
    let tmp = tempfile::tempdir().unwrap();
    let workload = tmp.path().join("w.json");
    std::fs::write(
        &workload,
        r#"{"query": "lava", "passages": ["Lava flows.", "Glaciers carve.", "Tides"]}"#,
    )
    .unwrap();
    let report = run_json(&[
        &"bench",
        &"--workload",
        &workload,
        &"--model",
        &fixture("bert-3label"),
        &"--runs",
        &"2",
        &"--warmup",
        &"0",
        &"--json",
    ]);
    let w = &report["workloads"][0];
    assert_eq!(
        (w["queries"].as_u64(), w["pairs"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(w["runs"].as_array().unwrap().len(), 2);
    assert!(w["median_pairs_per_s"].as_f64().unwrap() > 0.0);
    assert!(w["latency_p50_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(report["device"], "Cpu");
}

#[test]
fn eval_bm25_on_the_nanobeir_fixture_writes_its_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let nanobeir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../eval/tests/fixtures/nanobeir");
    let out_dir = tmp.path().join("out");
    let report = run_json(&[
        &"eval",
        &"--dataset",
        &"nanobeir:msmarco",
        &"--nanobeir-dir",
        &nanobeir,
        &"--max-queries",
        &"5",
        &"--out",
        &out_dir,
        &"--json",
    ]);
    let text = report.to_string();
    assert!(text.contains("ndcg"), "{text}");
    let written: Vec<_> = std::fs::read_dir(&out_dir)
        .expect("--out folder written")
        .collect();
    assert!(!written.is_empty());
}

#[test]
fn bad_input_exits_with_an_error_that_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-index");
    let err = run_err(&[&"search", &"--index", &missing, &"q"], 1);
    assert!(err.contains(&missing.display().to_string()), "{err}");

    let idx = indexed_corpus(tmp.path());
    // Reranking flags without a model would be ignored: refused as a usage error.
    let err = run_err(&[&"search", &"--index", &idx, &"q", &"--window", &"5"], 2);
    assert!(err.contains("--window needs --model"), "{err}");
    let err = run_err(&[&"search", &"--index", &idx, &"q", &"--top", &"0"], 2);
    assert!(err.contains("at least 1"), "{err}");

    // A file where a model directory belongs.
    let file = tmp.path().join("model.bin");
    std::fs::write(&file, b"x").unwrap();
    let err = run_err(&[&"search", &"--index", &idx, &"q", &"--model", &file], 2);
    assert!(err.contains("is a file"), "{err}");
    // A folder that is not a model.
    let empty = tmp.path().join("empty-model");
    std::fs::create_dir(&empty).unwrap();
    let err = run_err(&[&"search", &"--index", &idx, &"q", &"--model", &empty], 1);
    assert!(err.contains("config.json"), "{err}");

    // A malformed pairs file: the file and the line.
    let pairs = tmp.path().join("pairs.jsonl");
    std::fs::write(
        &pairs,
        "{\"query\":\"a\",\"document\":\"b\"}\n{\"query\": 1}\n",
    )
    .unwrap();
    let model = fixture("bert-3label");
    let err = run_err(&[&"score", &"--model", &model, &"--input", &pairs], 1);
    assert!(
        err.contains(&format!("{} line 2", pairs.display())),
        "{err}"
    );
    // A pair that only_second cannot truncate (the fixture holds 64 tokens): its line.
    std::fs::write(
        &pairs,
        format!(
            "{{\"query\":\"a\",\"document\":\"b\"}}\n\n{{\"query\":\"{}\",\"document\":\"b\"}}\n",
            "lava ".repeat(100)
        ),
    )
    .unwrap();
    let err = run_err(
        &[
            &"score",
            &"--model",
            &model,
            &"--input",
            &pairs,
            &"--truncation",
            &"only_second",
        ],
        1,
    );
    assert!(
        err.contains(&format!("{} line 3", pairs.display())),
        "{err}"
    );
    assert!(err.contains("only_second"), "{err}");
    std::fs::write(&pairs, b"{\"query\":\"a\",\"document\":\"\xff\"}\n").unwrap();
    let err = run_err(&[&"score", &"--model", &model, &"--input", &pairs], 1);
    assert!(err.contains("line 1: not valid UTF-8"), "{err}");

    // A corpus that does not exist.
    let nowhere = tmp.path().join("nowhere");
    let err = run_err(
        &[
            &"index",
            &"--corpus",
            &nowhere,
            &"--index",
            &tmp.path().join("i2"),
        ],
        1,
    );
    assert!(err.contains(&nowhere.display().to_string()), "{err}");
    assert!(
        !tmp.path().join("i2").exists(),
        "no index folder is left behind for a missing corpus"
    );
    // Bench flags that only a dataset uses.
    let err = run_err(
        &[
            &"bench",
            &"--model",
            &model,
            &"--workload",
            &pairs,
            &"--queries",
            &"3",
        ],
        2,
    );
    assert!(err.contains("--queries needs --dataset"), "{err}");
}
