//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use tantivy_rerank_search::{ArticleIndex, Hit, SearchOptions};
pub use tantivy_rerank_testdata::shared_dir as shared;

pub fn dataset(name: &str) -> PathBuf {
    let dir = shared().join("data").join(name);
    assert!(
        dir.join("corpus.jsonl").is_file(),
        "dataset {} is missing",
        dir.display()
    );
    dir
}

/// BM25 top `k` hits of `query` (`ArticleIndex::search` without a second stage).
pub fn bm25(
    index: &ArticleIndex,
    query: &str,
    k: usize,
) -> Vec<Hit<tantivy_rerank_search::Article>> {
    index
        .search(query, &SearchOptions::default().top_n(k))
        .expect("BM25 search")
        .hits
}

/// `_id -> text` of a BEIR `queries.jsonl`.
pub fn queries(dir: &std::path::Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(dir.join("queries.jsonl")).expect("queries.jsonl readable");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("query line is JSON");
            (
                v["_id"].as_str().expect("_id").to_string(),
                v["text"].as_str().expect("text").to_string(),
            )
        })
        .collect()
}

/// `query -> (doc -> grade)` of a BEIR qrels TSV (header skipped).
pub fn qrels(path: &std::path::Path) -> HashMap<String, HashMap<String, f64>> {
    let text = std::fs::read_to_string(path).expect("qrels readable");
    let mut out: HashMap<String, HashMap<String, f64>> = HashMap::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let grade: f64 = cols[2].trim().parse().expect("numeric grade");
        out.entry(cols[0].to_string())
            .or_default()
            .insert(cols[1].to_string(), grade);
    }
    out
}

/// trec_eval `ndcg_cut.10`: gain = grade, discount log2(rank + 1), ideal from the qrels.
pub fn ndcg_at(ranked: &[String], judged: &HashMap<String, f64>, k: usize) -> f64 {
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, id)| judged.get(id).copied().unwrap_or(0.0) / ((i + 2) as f64).log2())
        .sum();
    let mut ideal: Vec<f64> = judged.values().copied().filter(|g| *g > 0.0).collect();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, g)| g / ((i + 2) as f64).log2())
        .sum();
    if idcg > 0.0 {
        dcg / idcg
    } else {
        0.0
    }
}

/// Mean NDCG@10 of BM25 top-100 over the judged queries of `split`.
pub fn bm25_ndcg10(index: &ArticleIndex, dir: &std::path::Path, split: &str) -> f64 {
    let queries = queries(dir);
    let qrels = qrels(&dir.join("qrels").join(format!("{split}.tsv")));
    let mut ids: Vec<&String> = qrels.keys().collect();
    ids.sort();
    let mut total = 0.0;
    for qid in &ids {
        let text = queries
            .get(*qid)
            .unwrap_or_else(|| panic!("query {qid} of the qrels is not in queries.jsonl"));
        let ranked: Vec<String> = bm25(index, text, 100)
            .into_iter()
            .map(|h| h.doc.id)
            .collect();
        total += ndcg_at(&ranked, &qrels[*qid], 10);
    }
    total / ids.len() as f64
}

#[test]
fn ndcg_matches_hand_computation() {
    let judged: HashMap<String, f64> = [("a".to_string(), 1.0), ("b".to_string(), 1.0)].into();
    let ranked = vec!["x".to_string(), "a".to_string()];
    let expect = (1.0 / 3f64.log2()) / (1.0 + 1.0 / 3f64.log2());
    assert!((ndcg_at(&ranked, &judged, 10) - expect).abs() < 1e-12);
}
