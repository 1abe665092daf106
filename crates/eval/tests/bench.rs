//! `bench`: workloads from files and datasets, and measurements that add up.

use std::path::{Path, PathBuf};

use tantivy_rerank_encoders::{CrossEncoder, CrossEncoderOptions, DeviceSpec};
use tantivy_rerank_eval::bench::{bench_workload, BenchOptions, Workload};
use tantivy_rerank_eval::{load_beir, EvalError};

fn tiny_model() -> CrossEncoder {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../encoders/tests/fixtures/modernbert-1label-mean");
    CrossEncoder::from_dir(&dir, CrossEncoderOptions::default().device(DeviceSpec::Cpu))
        .expect("fixture model")
}

fn write_beir(dir: &Path) {
    std::fs::create_dir_all(dir.join("qrels")).expect("mkdir");
    let corpus: String = (0..30)
        .map(|i| {
            format!(
                "{{\"_id\": \"d{i}\", \"title\": \"doc {i}\", \"text\": \"cats {} dogs {}\"}}\n",
                "purr ".repeat(i % 5),
                "bark ".repeat(i % 7)
            )
        })
        .collect();
    std::fs::write(dir.join("corpus.jsonl"), corpus).expect("corpus");
    std::fs::write(
        dir.join("queries.jsonl"),
        "{\"_id\": \"q1\", \"text\": \"cats purr\"}\n{\"_id\": \"q2\", \"text\": \"dogs bark\"}\n{\"_id\": \"q3\", \"text\": \"unjudged\"}\n",
    )
    .expect("queries");
    std::fs::write(
        dir.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td4\t1\nq2\td6\t1\n",
    )
    .expect("qrels");
}

#[test]
fn measurements_are_consistent() {
    let model = tiny_model();
    let w = Workload::from_json_str(
        "demo",
        r#"{"queries": [
            {"query": "what do cats do", "passages": ["cats purr", "dogs bark loudly at night", "x"]},
            {"query": "birds", "passages": ["birds sing in the morning", "fish swim"]}
        ]}"#,
    )
    .unwrap();
    let options = BenchOptions {
        warmup_runs: 1,
        runs: 3,
    };
    let r = bench_workload(&model, &w, &options).unwrap();
    assert_eq!((r.queries, r.pairs, r.runs.len()), (2, 5, 3));
    let encoded: usize = w
        .queries
        .iter()
        .map(|q| {
            let pairs: Vec<(&str, &str)> = q
                .passages
                .iter()
                .map(|p| (q.query.as_str(), p.as_str()))
                .collect();
            model
                .encode(&pairs)
                .unwrap()
                .iter()
                .map(|e| e.len())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(r.tokens, encoded);
    let speeds: Vec<f64> = r.runs.iter().map(|x| x.pairs_per_s).collect();
    let (lo, hi) = speeds
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &s| (a.min(s), b.max(s)));
    assert!(lo <= r.median_pairs_per_s && r.median_pairs_per_s <= hi);
    for run in &r.runs {
        assert_eq!(run.query_latencies_ms.len(), 2);
        assert!((run.pairs_per_s - run.pairs as f64 / run.seconds).abs() < 1e-9);
        let parts = run.tokenize_ms + run.sort_ms + run.forward_ms;
        assert!(parts > 0.0 && parts <= run.seconds * 1e3 + 1e-6);
    }
    assert!(r.latency_p50_ms <= r.latency_p95_ms);
    let zero_runs = BenchOptions {
        warmup_runs: 0,
        runs: 0,
    };
    assert!(matches!(
        bench_workload(&model, &w, &zero_runs),
        Err(EvalError::InvalidOption { .. })
    ));
}

#[test]
fn dataset_workload_uses_bm25_top_k_of_judged_queries() {
    let tmp = tempfile::tempdir().unwrap();
    write_beir(tmp.path());
    let ds = load_beir(tmp.path(), "test").unwrap();
    let w = Workload::from_dataset(&ds, 5, 4, None).unwrap();
    // Only the two judged queries, in file order, each with its BM25 top 4.
    assert_eq!(w.queries.len(), 2);
    assert_eq!(w.queries[0].query, "cats purr");
    assert!(w.queries.iter().all(|q| q.passages.len() == 4));
    assert!(w.queries[0].passages[0].contains("purr purr purr purr"));
    assert!(Workload::from_dataset(&ds, 0, 4, None).is_err());
}

/// A dataset whose judged queries are empty, or retrieve nothing, gives an error instead of a
/// benchmark of zero pairs.
#[test]
fn dataset_workload_without_pairs_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    write_beir(tmp.path());
    let queries = tmp.path().join("queries.jsonl");
    std::fs::write(
        &queries,
        "{\"_id\": \"q1\", \"text\": \" \"}\n{\"_id\": \"q2\", \"text\": \"\"}\n",
    )
    .unwrap();
    let ds = load_beir(tmp.path(), "test").unwrap();
    let err = Workload::from_dataset(&ds, 5, 4, None).unwrap_err();
    assert!(err.to_string().contains("no query has both text"), "{err}");
    std::fs::write(
        &queries,
        "{\"_id\": \"q1\", \"text\": \"zebra\"}\n{\"_id\": \"q2\", \"text\": \"\"}\n",
    )
    .unwrap();
    let ds = load_beir(tmp.path(), "test").unwrap();
    let err = Workload::from_dataset(&ds, 5, 4, None).unwrap_err();
    assert!(err.to_string().contains("retrieved no document"), "{err}");
}

#[test]
fn workload_file_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("broken.json");
    std::fs::write(&path, "{\"query\": \"q\", \"passages\": [1]}").unwrap();
    let err = Workload::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("broken.json"), "{err}");
    // The position of the bad value, not 0:0, and what was expected there.
    assert!(
        err.contains("broken.json:1:")
            && !err.contains(":0:0")
            && err.contains("expected a string"),
        "{err}"
    );
    std::fs::write(&path, "{\"queries\": [], \"query\": \"q\"}").unwrap();
    let err = Workload::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("has both"), "{err}");
    let missing = Workload::from_file(&tmp.path().join("nope.json")).unwrap_err();
    assert!(missing.to_string().contains("nope.json"));
}
