//! `cargo bench --bench search`: the search side of retrieve-then-rerank on real data.
//!
//! Prints, before the criterion groups:
//! - indexing throughput (docs/s) for SciFact (5,183 abstracts) and the SQuAD articles
//!   (48 whole Wikipedia articles), best of three imports into a fresh directory;
//! - BM25 top-100 latency p50 / p99 over the 300 SciFact test queries (warm index);
//! - for a reranked search (BM25 top 100 -> all-MiniLM-L6-v2 bi-encoder, passages off), the
//!   share of end-to-end time spent outside the model (retrieve + fetch + merge).
//!
//! Criterion then times one BM25 top-100 query and one full retrieve-then-rerank query.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tantivy_rerank::encoders::{BiEncoder, BiEncoderOptions, DeviceSpec};
use tantivy_rerank::search::{ArticleIndex, Cascade, ImportOptions, SearchOptions, Stage};
use tantivy_rerank_testdata::shared_dir as shared;

fn quiet() -> ImportOptions {
    ImportOptions {
        progress: false,
        ..Default::default()
    }
}

fn index_dataset(name: &str, dir: &Path) -> (ArticleIndex, f64) {
    let corpus = shared().join("data").join(name).join("corpus.jsonl");
    let mut best = f64::MAX;
    let mut docs = 0;
    for _ in 0..3 {
        let _ = std::fs::remove_dir_all(dir);
        let index = ArticleIndex::create(dir, &Default::default()).expect("create index");
        let t = Instant::now();
        let report = index.import_beir(&corpus, &quiet()).expect("import");
        best = best.min(t.elapsed().as_secs_f64());
        docs = report.docs_indexed;
    }
    let index = ArticleIndex::open(dir).expect("reopen");
    let rate = docs as f64 / best;
    println!("indexing {name}: {docs} docs in {best:.3} s = {rate:.0} docs/s (best of 3)");
    (index, rate)
}

fn test_queries(name: &str) -> Vec<String> {
    let dir = shared().join("data").join(name);
    let qrels = std::fs::read_to_string(dir.join("qrels/test.tsv")).expect("qrels");
    let wanted: std::collections::BTreeSet<&str> = qrels
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next())
        .collect();
    let text = std::fs::read_to_string(dir.join("queries.jsonl")).expect("queries");
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["_id"].as_str().is_some_and(|id| wanted.contains(id)))
        .filter_map(|v| v["text"].as_str().map(String::from))
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn report_and_bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    index_dataset("squad-articles", &tmp.path().join("squad"));
    let (scifact, _) = index_dataset("scifact", &tmp.path().join("scifact"));
    let queries = test_queries("scifact");

    // BM25 top-100 latency (ids, scores and stored text), warm.
    let top100 = SearchOptions::default().top_n(100);
    for q in &queries {
        scifact.search(q, &top100).expect("search");
    }
    let mut lat: Vec<Duration> = queries
        .iter()
        .map(|q| {
            let t = Instant::now();
            scifact.search(q, &top100).expect("search");
            t.elapsed()
        })
        .collect();
    lat.sort();
    println!(
        "BM25 top-100 over {} SciFact test queries: p50 {:.3} ms, p99 {:.3} ms",
        lat.len(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3
    );

    // Share of a reranked query spent outside the model.
    // Measure the model, not the embedding cache.
    let model = BiEncoder::from_dir(
        shared().join("models/all-MiniLM-L6-v2"),
        BiEncoderOptions::default()
            .device(DeviceSpec::Cpu)
            .embedding_cache(0),
    )
    .expect("all-MiniLM-L6-v2");
    let cascade = Cascade::new(Stage::new(model).passages(None));
    let options = SearchOptions::default().rerank(&cascade);
    let (mut outside, mut total) = (Duration::ZERO, Duration::ZERO);
    let sample: Vec<&String> = queries.iter().step_by(30).collect();
    for q in &sample {
        let r = scifact.search(q, &options).expect("rerank");
        outside += r.timings.retrieve + r.timings.fetch + r.timings.merge;
        total += r.timings.total();
    }
    println!(
        "reranked search (BM25 top 100 -> all-MiniLM-L6-v2), {} queries: {:.1} ms/query, {:.2}% outside the model",
        sample.len(),
        total.as_secs_f64() * 1e3 / sample.len() as f64,
        100.0 * outside.as_secs_f64() / total.as_secs_f64()
    );

    let mut group = c.benchmark_group("search");
    let q = queries[0].clone();
    group.bench_function("bm25_top100_scifact", |b| {
        b.iter(|| scifact.search(&q, &top100).expect("search"))
    });
    group.sample_size(10);
    group.bench_function("bm25_top100_then_minilm_rerank_scifact", |b| {
        b.iter(|| scifact.search(&q, &options).expect("rerank"))
    });
    group.finish();
}

criterion_group!(benches, report_and_bench);
criterion_main!(benches);
