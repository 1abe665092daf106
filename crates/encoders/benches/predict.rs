//! `cargo bench -p tantivy-rerank-encoders`: tokenisation, model forward and `predict`
//! throughput on CPU.
//!
//! Workload: `../shared/bench/workload_1x100.json` (one query, 100 passages of ~240 tokens).
//! - `tokenize_1x100`: the 100 pairs through the real ModernBERT BPE tokenizer, the real
//!   all-MiniLM-L6-v2 `tokenizer.json` and multilingual BERT built from `vocab.txt`
//!   (truncation to 512 included).
//! - `forward_1x100`: the model alone on the pre-encoded pairs (batching, forward, logits).
//! - `predict_1x100`: tokenisation + forward + head, what a reranker call costs.
//! - `tokenize_articles`: one query against each of the 48 whole squad articles (33 KB on
//!   average) truncated to 512 and to 8,192 tokens, and the token spans passage cutting
//!   needs (20 passages of 200 tokens every 100), against the spans of the whole article.
//!
//! Models: the tiny committed fixture (`bert-3label`) and a MiniLM-L6-size BERT cross-encoder
//! (6 layers, hidden 384, the real all-MiniLM-L6-v2 tokenizer) with random weights written to
//! a temporary directory: speed does not depend on the weights' values. Criterion reports
//! throughput in elements/s = pairs/s.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tantivy_rerank_encoders::{
    CrossEncoder, CrossEncoderOptions, DeviceSpec, PairTokenizer, Truncation,
};
use tantivy_rerank_testdata::shared_dir as shared;

fn workload() -> (String, Vec<String>) {
    let path = shared().join("bench/workload_1x100.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).expect("workload JSON");
    let query = v["query"].as_str().expect("query").to_string();
    let passages = v["passages"]
        .as_array()
        .expect("passages")
        .iter()
        .map(|p| p.as_str().expect("passage").to_string())
        .collect();
    (query, passages)
}

/// Write a random-weight MiniLM-L6-size `BertForSequenceClassification` into `dir`.
fn minilm_size_cross_encoder(dir: &Path) {
    let src = shared().join("models/all-MiniLM-L6-v2");
    for f in ["tokenizer.json", "tokenizer_config.json", "vocab.txt"] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy tokenizer");
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config["architectures"] = serde_json::json!(["BertForSequenceClassification"]);
    config["id2label"] = serde_json::json!({"0": "LABEL_0"});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let (h, i, v, p) = (384usize, 1536usize, 30522usize, 512usize);
    let dev = Device::Cpu;
    let mut t = std::collections::HashMap::new();
    let mut add = |name: String, shape: &[usize]| {
        t.insert(
            name,
            (Tensor::randn(0f32, 0.05, shape, &dev).unwrap())
                .to_dtype(DType::F32)
                .unwrap(),
        );
    };
    add("bert.embeddings.word_embeddings.weight".into(), &[v, h]);
    add("bert.embeddings.position_embeddings.weight".into(), &[p, h]);
    add(
        "bert.embeddings.token_type_embeddings.weight".into(),
        &[2, h],
    );
    add("bert.embeddings.LayerNorm.weight".into(), &[h]);
    add("bert.embeddings.LayerNorm.bias".into(), &[h]);
    for l in 0..6 {
        let pre = format!("bert.encoder.layer.{l}");
        for n in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ] {
            add(format!("{pre}.{n}.weight"), &[h, h]);
            add(format!("{pre}.{n}.bias"), &[h]);
        }
        add(format!("{pre}.intermediate.dense.weight"), &[i, h]);
        add(format!("{pre}.intermediate.dense.bias"), &[i]);
        add(format!("{pre}.output.dense.weight"), &[h, i]);
        add(format!("{pre}.output.dense.bias"), &[h]);
        for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
            add(format!("{pre}.{n}.weight"), &[h]);
            add(format!("{pre}.{n}.bias"), &[h]);
        }
    }
    add("bert.pooler.dense.weight".into(), &[h, h]);
    add("bert.pooler.dense.bias".into(), &[h]);
    add("classifier.weight".into(), &[1, h]);
    add("classifier.bias".into(), &[1]);
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
}

fn bench_predict(c: &mut Criterion) {
    let (query, passages) = workload();
    let pairs: Vec<(&str, &str)> = passages
        .iter()
        .map(|p| (query.as_str(), p.as_str()))
        .collect();
    let options = CrossEncoderOptions::default()
        .device(DeviceSpec::Cpu)
        .batch_size(32)
        .max_length(512);
    let tmp = tempfile::tempdir().unwrap();
    minilm_size_cross_encoder(tmp.path());
    let models = [
        (
            "tiny-bert-3label",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert-3label"),
        ),
        ("minilm-l6-size", tmp.path().to_path_buf()),
    ];
    let loaded: Vec<(&str, CrossEncoder)> = models
        .iter()
        .map(|(name, dir)| (*name, CrossEncoder::from_dir(dir, options.clone()).unwrap()))
        .collect();
    let mut group = c.benchmark_group("forward_1x100");
    group.sample_size(10);
    group.throughput(Throughput::Elements(pairs.len() as u64));
    for (name, model) in &loaded {
        let encodings = model.encode(&pairs).unwrap();
        group.bench_function(*name, |b| {
            b.iter(|| model.predict_encoded(&encodings, None).unwrap())
        });
    }
    group.finish();
    let mut group = c.benchmark_group("predict_1x100");
    group.sample_size(10);
    group.throughput(Throughput::Elements(pairs.len() as u64));
    for (name, model) in &loaded {
        group.bench_function(*name, |b| b.iter(|| model.predict(&pairs).unwrap()));
    }
    group.finish();
}

fn bench_tokenize(c: &mut Criterion) {
    let (query, passages) = workload();
    let pairs: Vec<(&str, &str)> = passages
        .iter()
        .map(|p| (query.as_str(), p.as_str()))
        .collect();
    let models = shared().join("models");
    let mbert = tempfile::tempdir().unwrap();
    std::fs::copy(
        models.join("bert-base-multilingual-uncased/vocab.txt"),
        mbert.path().join("vocab.txt"),
    )
    .unwrap();
    let tokenizers = [
        ("modernbert-bpe", models.join("modernbert-tokenizer")),
        ("minilm-tokenizer-json", models.join("all-MiniLM-L6-v2")),
        ("mbert-vocab-txt", mbert.path().to_path_buf()),
    ];
    let mut group = c.benchmark_group("tokenize_1x100");
    group.throughput(Throughput::Elements(pairs.len() as u64));
    for (name, dir) in tokenizers {
        let tok = PairTokenizer::from_dir(&dir)
            .and_then(|t| t.with_truncation(512, Truncation::LongestFirst))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        group.bench_function(name, |b| b.iter(|| tok.encode_pairs(&pairs).unwrap()));
    }
    group.finish();
}

fn bench_tokenize_articles(c: &mut Criterion) {
    let path = shared().join("data/squad-articles/corpus.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let articles: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("corpus line");
            v["text"].as_str().expect("text").to_string()
        })
        .collect();
    let pairs: Vec<(&str, &str)> = articles
        .iter()
        .map(|a| ("When did the Black Death reach Europe?", a.as_str()))
        .collect();
    let models = shared().join("models");
    let mut group = c.benchmark_group("tokenize_articles");
    group.sample_size(10);
    group.throughput(Throughput::Elements(pairs.len() as u64));
    for (name, dir) in [
        ("modernbert-bpe", models.join("modernbert-tokenizer")),
        ("minilm-tokenizer-json", models.join("all-MiniLM-L6-v2")),
    ] {
        let tok =
            PairTokenizer::from_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for max_length in [512, 8192] {
            let t = tok
                .with_truncation(max_length, Truncation::LongestFirst)
                .expect("truncation");
            group.bench_function(format!("{name}/pairs_max{max_length}"), |b| {
                b.iter(|| t.encode_pairs(&pairs).unwrap())
            });
        }
        group.bench_function(format!("{name}/passage_spans"), |b| {
            b.iter(|| {
                for a in &articles {
                    tok.token_spans_head(a, 100 * 19 + 200).unwrap();
                }
            })
        });
        group.bench_function(format!("{name}/whole_spans"), |b| {
            b.iter(|| {
                for a in &articles {
                    tok.token_spans(a).unwrap();
                }
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_tokenize,
    bench_tokenize_articles,
    bench_predict
);
criterion_main!(benches);
