//! Parity with transformers / sentence-transformers on the committed fixture models.
//!
//! `scripts/make_fixtures.py` wrote small randomly initialised models and, for a fixed list
//! of pairs, the token ids and float32 logits transformers produced (eval mode, one pair at a
//! time, no padding). We tokenise the same pairs and run all of them in one padded-inside-
//! attention batch; ids must be identical and logits within 1e-4.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tantivy_rerank_encoders::{
    CrossEncoder, CrossEncoderOptions, DeviceSpec, Kernels, PairTokenizer, ScoreActivation,
    ScoreHead, Truncation,
};

const TOLERANCE: f32 = 1e-4;

#[derive(Deserialize)]
struct Case {
    query: String,
    document: String,
    max_length: usize,
    truncation: String,
    input_ids: Vec<u32>,
    token_type_ids: Option<Vec<u32>>,
    logits: Vec<f32>,
    #[serde(default)]
    logits_full_attention: Option<Vec<f32>>,
}

#[derive(Deserialize)]
struct StBlock {
    max_length: usize,
    activation_fn: String,
    scores: Vec<serde_json::Value>,
    equivalent_case_indices: Vec<usize>,
}

#[derive(Deserialize)]
struct Reference {
    num_labels: usize,
    cases: Vec<Case>,
    sentence_transformers: StBlock,
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load_reference(name: &str) -> Reference {
    let path = fixtures().join(format!("{name}.reference.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn cpu() -> CrossEncoderOptions {
    CrossEncoderOptions::default().device(DeviceSpec::Cpu)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Checks ids and logits of every case; returns the max |diff| over all logits.
fn check_model(
    name: &str,
    model: &CrossEncoder,
    reference: &Reference,
    dir: &Path,
    full_attention: bool,
) -> f32 {
    let base = PairTokenizer::from_dir(dir).unwrap();
    let mut encodings = Vec::new();
    for (i, case) in reference.cases.iter().enumerate() {
        let truncation: Truncation = case.truncation.parse().unwrap();
        let tok = base.with_truncation(case.max_length, truncation).unwrap();
        let enc = tok.encode_pair(&case.query, &case.document).unwrap();
        assert_eq!(enc.ids, case.input_ids, "{name} case {i}: input ids differ");
        if let Some(types) = &case.token_type_ids {
            assert_eq!(
                &enc.type_ids, types,
                "{name} case {i}: token type ids differ"
            );
        }
        encodings.push(enc);
    }
    let (predictions, _) = model.predict_encoded(&encodings, None).unwrap();
    let logits: Vec<Vec<f32>> = predictions.into_iter().map(|p| p.logits).collect();
    let mut worst = 0f32;
    for (i, (case, got)) in reference.cases.iter().zip(&logits).enumerate() {
        let want = if full_attention {
            case.logits_full_attention
                .as_ref()
                .expect("full-attention logits")
        } else {
            &case.logits
        };
        assert_eq!(got.len(), reference.num_labels);
        let d = max_abs_diff(got, want);
        assert!(
            d <= TOLERANCE,
            "{name} case {i}: max |diff| {d} > {TOLERANCE}: got {got:?} want {want:?}"
        );
        worst = worst.max(d);
    }
    worst
}

/// Scores of `CrossEncoder::predict` with default options equal sentence-transformers'
/// `CrossEncoder(dir).predict(...)` (same default max length and activation).
fn check_sentence_transformers(name: &str, model: &CrossEncoder, reference: &Reference) -> f32 {
    let st = &reference.sentence_transformers;
    assert_eq!(
        model.max_length(),
        st.max_length,
        "{name}: default max_length differs from sentence-transformers"
    );
    let pairs: Vec<(&str, &str)> = st
        .equivalent_case_indices
        .iter()
        .map(|&i| {
            (
                reference.cases[i].query.as_str(),
                reference.cases[i].document.as_str(),
            )
        })
        .collect();
    let predictions = model.predict(&pairs).unwrap();
    let st_activation = ScoreActivation::from_name(&st.activation_fn).expect("known activation");
    let mut worst = 0f32;
    for (p, &i) in predictions.iter().zip(&st.equivalent_case_indices) {
        let want: Vec<f32> = match &st.scores[i] {
            serde_json::Value::Array(a) => a.iter().map(|x| x.as_f64().unwrap() as f32).collect(),
            v => vec![v.as_f64().unwrap() as f32],
        };
        // sentence-transformers applies its activation to every logit.
        let ours: Vec<f32> = p.logits.iter().map(|&l| st_activation.apply(l)).collect();
        let d = max_abs_diff(&ours, &want);
        assert!(
            d <= TOLERANCE,
            "{name}: case {i} vs sentence-transformers: {ours:?} vs {want:?}"
        );
        if p.logits.len() == 1 {
            // For one label our score *is* the sentence-transformers score.
            assert!((p.score - want[0]).abs() <= TOLERANCE);
        }
        worst = worst.max(d);
    }
    worst
}

fn run_fixture(name: &str) {
    let dir = fixtures().join(name);
    let reference = load_reference(name);
    let model = CrossEncoder::from_dir(&dir, cpu()).unwrap();
    assert_eq!(model.labels().len(), reference.num_labels);
    let worst = check_model(name, &model, &reference, &dir, false);
    let st = check_sentence_transformers(name, &model, &reference);
    // The same weights through candle's portable ops: the path CUDA takes.
    let generic = CrossEncoder::from_dir(&dir, cpu().kernels(Kernels::Portable)).unwrap();
    let worst_generic = check_model(name, &generic, &reference, &dir, false);
    println!(
        "{name}: {} cases, logits max |diff| {worst:.3e} (fused CPU kernels), \
         {worst_generic:.3e} (candle ops); vs sentence-transformers {st:.3e}",
        reference.cases.len()
    );
}

#[test]
fn bert_2label_from_vocab_txt_and_pytorch_bin() {
    let dir = fixtures().join("bert-2label-vocab");
    assert!(!dir.join("tokenizer.json").exists() && dir.join("vocab.txt").exists());
    assert!(dir.join("pytorch_model.bin").exists() && !dir.join("model.safetensors").exists());
    run_fixture("bert-2label-vocab");
    let model = CrossEncoder::from_dir(&dir, cpu()).unwrap();
    assert_eq!(model.head(), &ScoreHead::Binary { relevant: 1 });
}

#[test]
fn bert_3label_tanh_gelu() {
    run_fixture("bert-3label");
}

#[test]
fn modernbert_1label_mean_pooling_old_style_config() {
    run_fixture("modernbert-1label-mean");
}

#[test]
fn modernbert_3label_cls_with_biases_new_style_config() {
    run_fixture("modernbert-3label-cls-bias");
}

#[test]
fn modernbert_sliding_window_matters() {
    let name = "modernbert-sliding";
    run_fixture(name);
    // The same weights with a window wider than any input (each layer keeps its RoPE base)
    // must match transformers' full-attention logits and differ from the windowed ones: a
    // model that ignored the window would fail the windowed comparison above.
    let reference = load_reference(name);
    let wide = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), wide.path().join(entry.file_name())).unwrap();
    }
    let config_path = wide.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["local_attention"] = serde_json::json!(1 << 20);
    if let Some(map) = config.as_object_mut() {
        map.remove("sliding_window");
    }
    std::fs::write(&config_path, config.to_string()).unwrap();
    for kernels in [Kernels::Auto, Kernels::Portable] {
        let model = CrossEncoder::from_dir(wide.path(), cpu().kernels(kernels)).unwrap();
        check_model(name, &model, &reference, wide.path(), true);
    }
    let differs = reference
        .cases
        .iter()
        .filter(|c| max_abs_diff(&c.logits, c.logits_full_attention.as_ref().unwrap()) > 1e-3)
        .count();
    assert!(
        differs * 2 > reference.cases.len(),
        "window changes too few cases ({differs})"
    );
}

#[test]
fn rank_and_classify_work_for_every_head() {
    for name in [
        "bert-2label-vocab",
        "bert-3label",
        "modernbert-1label-mean",
        "modernbert-3label-cls-bias",
    ] {
        let model = CrossEncoder::from_dir(fixtures().join(name), cpu()).unwrap();
        let docs = [
            "paris is the capital of france.",
            "",
            "bananas are yellow",
            "paris is the capital of france.",
        ];
        let ranked = model.rank("capital of france", &docs, None).unwrap();
        assert_eq!(ranked.len(), docs.len());
        assert!(
            ranked.windows(2).all(|w| w[0].score >= w[1].score),
            "{name}: not sorted"
        );
        // Identical documents tie; the earlier one comes first.
        let pos = |i| ranked.iter().position(|r| r.index == i).unwrap();
        assert!(pos(0) < pos(3), "{name}: tie order not stable");
        assert_eq!(model.rank("q", &docs, Some(2)).unwrap().len(), 2);
        assert!(model.rank("q", &[] as &[&str], None).unwrap().is_empty());
        let classes = model.classify(&[("capital of france", docs[0])]).unwrap();
        assert_eq!(classes[0].label, model.labels()[classes[0].index]);
        if model.labels().len() > 1 {
            let sum: f32 = classes[0].probabilities.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5);
        }
    }
}

#[test]
fn batching_does_not_change_results() {
    let model = CrossEncoder::from_dir(fixtures().join("modernbert-1label-mean"), cpu()).unwrap();
    let tiny_batches = CrossEncoder::from_dir(
        fixtures().join("modernbert-1label-mean"),
        cpu().batch_size(1).max_batch_tokens(8),
    )
    .unwrap();
    let reference = load_reference("modernbert-1label-mean");
    let pairs: Vec<(&str, &str)> = reference
        .cases
        .iter()
        .map(|c| (c.query.as_str(), c.document.as_str()))
        .collect();
    let a = model.scores(&pairs).unwrap();
    let b = tiny_batches.scores(&pairs).unwrap();
    assert!(max_abs_diff(&a, &b) <= 1e-5);
    assert!(model.predict(&[] as &[(&str, &str)]).unwrap().is_empty());
}

#[test]
fn very_long_document_is_truncated_not_an_error() {
    let model = CrossEncoder::from_dir(fixtures().join("bert-3label"), cpu()).unwrap();
    let doc = "the quick brown fox jumps over the lazy dog ".repeat(12_500); // 112,500 words
    let enc = model
        .encode(&[("what does the fox do", doc.as_str())])
        .unwrap();
    assert_eq!(enc[0].len(), model.max_length());
    let p = model
        .predict(&[("what does the fox do", doc.as_str()), ("", "")])
        .unwrap();
    assert!(p.iter().all(|p| p.score.is_finite()));
}

#[test]
fn only_second_truncation_keeps_the_query() {
    let dir = fixtures().join("bert-3label");
    let model = CrossEncoder::from_dir(
        &dir,
        cpu().max_length(16).truncation(Truncation::OnlySecond),
    )
    .unwrap();
    let enc = model
        .encode(&[("one two three", "a b c d e f g h i j k l m n o p q r s t")])
        .unwrap();
    assert_eq!(enc[0].len(), 16);
    let query_len = model.encode(&[("one two three", "")]).unwrap()[0].len() - 1;
    // The query part (up to and including the first [SEP]) is intact.
    assert_eq!(
        enc[0].type_ids.iter().filter(|&&t| t == 0).count(),
        query_len
    );
}

/// A batch of more than 1,024 tokens runs the CPU feed-forward network in row blocks (and
/// attention over many sequences): its scores equal candle's generic ops on the same batch,
/// which the tests above check against transformers.
#[test]
fn batches_past_the_feed_forward_block_score_like_candle_ops() {
    for name in ["bert-3label", "modernbert-1label-mean"] {
        let dir = fixtures().join(name);
        let options = || cpu().batch_size(96).max_batch_tokens(1 << 20);
        let fused = CrossEncoder::from_dir(&dir, options()).unwrap();
        let generic = CrossEncoder::from_dir(&dir, options().kernels(Kernels::Portable)).unwrap();
        let doc = "the quick brown fox jumps over the lazy dog near the river bank ".repeat(12);
        let pairs: Vec<(String, String)> = (0..96)
            .map(|i| {
                (
                    format!("query number {i} about foxes"),
                    doc[i % 40..].to_string(),
                )
            })
            .collect();
        let tokens: usize = fused.encode(&pairs).unwrap().iter().map(|e| e.len()).sum();
        assert!(tokens > 2 * 1024, "{name}: only {tokens} tokens");
        let a = fused.predict(&pairs).unwrap();
        let b = generic.predict(&pairs).unwrap();
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| max_abs_diff(&x.logits, &y.logits))
            .fold(0f32, f32::max);
        assert!(worst <= TOLERANCE, "{name}: fused vs candle ops {worst}");
        println!(
            "{name}: {tokens} tokens in one batch, fused vs candle ops max |diff| {worst:.2e}"
        );
    }
}
