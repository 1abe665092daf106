//! Every metric against the numbers its reference implementation gives
//! (crates/eval/tests/fixtures/metric_references.json, written by
//! scripts/make_metric_references.py with sentence-transformers, scikit-learn and pytrec_eval).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use tantivy_rerank_eval::metrics::{st, trec};
use tantivy_rerank_eval::{evaluate_rerank, Dataset, Document, Query, RerankEvalOptions};

fn references() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/metric_references.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("reference file")).expect("JSON")
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() < 1e-9, "{what}: ours {a} vs reference {b}");
}

#[test]
fn st_metrics_match_sklearn_and_sentence_transformers() {
    let refs = references();
    let cases = refs["st"].as_array().expect("st cases");
    assert!(cases.len() >= 9);
    for c in cases {
        let name = c["name"].as_str().unwrap_or("?");
        let relevant: Vec<bool> = c["relevant"]
            .as_array()
            .expect("relevant")
            .iter()
            .map(|v| v.as_i64() == Some(1))
            .collect();
        // The evaluator hands float32 scores to sklearn.
        let scores: Vec<f64> = c["scores"]
            .as_array()
            .expect("scores")
            .iter()
            .map(|v| f64::from(v.as_f64().expect("score") as f32))
            .collect();
        let (mrr, ndcg, ap) = st::compute_metrics(&relevant, &scores, 10);
        // MRR with tied scores depends on numpy's (unspecified) order of ties: check ours lies
        // within the best and worst tie orders, and equals Python's when there is no choice.
        let (lo, hi) = (
            c["mrr@10_min"].as_f64().expect("mrr min"),
            c["mrr@10_max"].as_f64().expect("mrr max"),
        );
        assert!(
            mrr >= lo - 1e-12 && mrr <= hi + 1e-12,
            "{name}: mrr {mrr} not in [{lo}, {hi}]"
        );
        if lo == hi {
            close(
                mrr,
                c["mrr@10"].as_f64().expect("mrr"),
                &format!("{name} mrr@10"),
            );
        }
        close(
            ndcg,
            c["ndcg@10"].as_f64().expect("ndcg"),
            &format!("{name} ndcg@10"),
        );
        close(ap, c["map"].as_f64().expect("map"), &format!("{name} map"));
    }
}

#[test]
fn st_evaluator_base_and_reranked_match() {
    let refs = references();
    for case in refs["st_evaluator"].as_array().expect("cases") {
        let always = case["always_rerank_positives"].as_bool().expect("flag");
        let table: HashMap<String, HashMap<String, f32>> =
            serde_json::from_value(case["scores"].clone()).expect("score table");
        let mut ds = Dataset {
            name: "case".into(),
            ..Default::default()
        };
        let mut lists = Vec::new();
        for s in case["samples"].as_array().expect("samples") {
            let q = s["query"].as_str().expect("query").to_string();
            ds.queries.push(Query {
                id: q.clone(),
                text: q.clone(),
            });
            let judged: BTreeMap<String, i64> = s["positive"]
                .as_array()
                .expect("positive")
                .iter()
                .map(|d| (d.as_str().expect("id").to_string(), 1))
                .collect();
            ds.qrels.insert(q.clone(), judged);
            let docs: Vec<String> = s["documents"]
                .as_array()
                .expect("documents")
                .iter()
                .map(|d| d.as_str().expect("id").to_string())
                .collect();
            lists.push((q, docs));
        }
        for id in 1..=9 {
            let id = format!("d{id}");
            ds.corpus.push(Document {
                id: id.clone(),
                title: String::new(),
                text: id,
            });
        }
        ds.candidates = Some(lists);
        let reranker = move |q: &str, texts: &[&str]| {
            texts
                .iter()
                .map(|t| table[q].get(*t).copied().ok_or("no score"))
                .collect::<Result<Vec<f32>, _>>()
        };
        let options = RerankEvalOptions {
            always_rerank_positives: always,
            progress: false,
            ..Default::default()
        };
        let report = evaluate_rerank(&[ds], &reranker, &options).expect("evaluation");
        let d = &report.datasets[0];
        let r = &case["results"];
        let get = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k}"));
        close(d.reranked.map, get("map"), "map");
        close(d.reranked.mrr_at_k, get("mrr@10"), "mrr@10");
        close(d.reranked.ndcg_at_k, get("ndcg@10"), "ndcg@10");
        close(d.base.map, get("base_map"), "base_map");
        close(d.base.mrr_at_k, get("base_mrr@10"), "base_mrr@10");
        close(d.base.ndcg_at_k, get("base_ndcg@10"), "base_ndcg@10");
    }
}

#[test]
fn trec_metrics_match_pytrec_eval() {
    let refs = references();
    for c in refs["trec"].as_array().expect("trec cases") {
        let q = c["query"].as_str().unwrap_or("?");
        let judged: BTreeMap<String, i64> =
            serde_json::from_value(c["qrels"].clone()).expect("qrels");
        let run: BTreeMap<String, f64> = serde_json::from_value(c["run"].clone()).expect("run");
        let mut run: Vec<(String, f64)> = run.into_iter().collect();
        trec::trec_order(&mut run);
        let ids: Vec<&str> = run.iter().map(|(d, _)| d.as_str()).collect();
        let m = trec::evaluate(&ids, &judged);
        close(
            m.ndcg_10,
            c["ndcg@10"].as_f64().expect("ndcg"),
            &format!("{q} ndcg@10"),
        );
        close(
            m.mrr_10,
            c["mrr@10"].as_f64().expect("mrr"),
            &format!("{q} mrr@10"),
        );
        close(
            m.recall_100,
            c["recall@100"].as_f64().expect("recall"),
            &format!("{q} recall@100"),
        );
        close(
            m.map_100,
            c["map@100"].as_f64().expect("map"),
            &format!("{q} map@100"),
        );
    }
}
