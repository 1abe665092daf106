//! Parity with sentence-transformers 6 on the fixtures of the rerankers people use beyond BERT
//! and ModernBERT: XLM-RoBERTa (bge-reranker), ELECTRA, and causal LLM rerankers (Qwen3 with
//! its saved chat template and `LogitScore`, the original Qwen3-Reranker layout scored with
//! its model card's prompt, Qwen2 with other true/false tokens).
//!
//! `scripts/make_fixtures.py` wrote small randomly initialised models and, for pairs of 1 to
//! about 5,000 tokens (empty query and document included), the ids sentence-transformers fed
//! the model and its raw (identity activation) and default scores. We tokenise the same pairs
//! and score them all in one call (mixed lengths in shared batches); ids must be identical,
//! raw scores and scores within 1e-4, with the fused CPU kernels and with candle's ops.

use std::path::PathBuf;

use serde::Deserialize;
use tantivy_rerank_encoders::{
    CrossEncoder, CrossEncoderOptions, DeviceSpec, Kernels, ScoreActivation, Scoring,
};

const TOLERANCE: f32 = 1e-4;

#[derive(Deserialize, Clone)]
struct Case {
    query: String,
    document: String,
    #[serde(default)]
    document_repeat: Option<usize>,
    input_ids: Vec<u32>,
    #[serde(default)]
    token_type_ids: Option<Vec<u32>>,
    logits: Vec<f32>,
}

impl Case {
    fn document(&self) -> String {
        self.document.repeat(self.document_repeat.unwrap_or(1))
    }
}

#[derive(Deserialize)]
struct St {
    max_length: usize,
    activation_fn: String,
    scores: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
    #[serde(default)]
    sentence_transformers: Option<St>,
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference(name: &str) -> serde_json::Value {
    let path = fixtures().join(format!("{name}.reference.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn cpu() -> CrossEncoderOptions {
    CrossEncoderOptions::default().device(DeviceSpec::Cpu)
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    match v {
        serde_json::Value::Array(a) => a.iter().map(|x| x.as_f64().unwrap() as f32).collect(),
        v => vec![v.as_f64().unwrap() as f32],
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Ids, raw logits and activated scores of every case, in one call; returns the largest
/// logit difference.
fn check_cases(
    what: &str,
    model: &CrossEncoder,
    cases: &[Case],
    scores: Option<&[serde_json::Value]>,
) -> f32 {
    let docs: Vec<String> = cases.iter().map(Case::document).collect();
    let pairs: Vec<(&str, &str)> = cases
        .iter()
        .zip(&docs)
        .map(|(c, d)| (c.query.as_str(), d.as_str()))
        .collect();
    let encodings = model.encode(&pairs).unwrap();
    for (i, (case, enc)) in cases.iter().zip(&encodings).enumerate() {
        assert_eq!(enc.ids, case.input_ids, "{what} case {i}: input ids differ");
        if let Some(types) = &case.token_type_ids {
            assert_eq!(
                &enc.type_ids, types,
                "{what} case {i}: token type ids differ"
            );
        }
    }
    let predictions = model.predict(&pairs).unwrap();
    let mut worst = 0f32;
    for (i, (case, p)) in cases.iter().zip(&predictions).enumerate() {
        let d = max_abs_diff(&p.logits, &case.logits);
        assert!(
            d <= TOLERANCE,
            "{what} case {i}: max |diff| {d}: got {:?} want {:?}",
            p.logits,
            case.logits
        );
        worst = worst.max(d);
        if let Some(scores) = scores {
            let want = floats(&scores[i]);
            if want.len() == 1 {
                assert!(
                    (p.score - want[0]).abs() <= TOLERANCE,
                    "{what} case {i}: score {} vs sentence-transformers {}",
                    p.score,
                    want[0]
                );
            }
        }
    }
    worst
}

/// Every case of a fixture through the fused CPU kernels and candle's ops, against the raw
/// scores, with sentence-transformers' default max length and activation.
fn run(name: &str) -> (CrossEncoder, serde_json::Value) {
    let json = reference(name);
    let r: Reference = serde_json::from_value(json.clone()).unwrap();
    let st = r.sentence_transformers.as_ref();
    let dir = fixtures().join(name);
    let mut report = Vec::new();
    let mut fused = None;
    for kernels in [Kernels::Auto, Kernels::Portable] {
        let model = CrossEncoder::from_dir(&dir, cpu().kernels(kernels)).unwrap();
        if let Some(st) = st {
            assert_eq!(
                model.max_length(),
                st.max_length,
                "{name}: default max_length"
            );
            let activation = ScoreActivation::from_name(&st.activation_fn).unwrap();
            if model.labels().len() == 1 {
                assert_eq!(
                    model.head(),
                    &tantivy_rerank_encoders::ScoreHead::Single { activation },
                    "{name}: activation"
                );
            }
        }
        let scores = st.map(|s| s.scores.as_slice());
        let worst = check_cases(&format!("{name} ({kernels:?})"), &model, &r.cases, scores);
        report.push(format!("{kernels:?} {worst:.2e}"));
        if fused.is_none() {
            fused = Some(model);
        }
    }
    println!(
        "{name}: {} cases, max |logit diff| {}",
        r.cases.len(),
        report.join(", ")
    );
    (fused.unwrap(), json)
}

#[test]
fn xlm_roberta_1label() {
    let (model, _) = run("xlmr-1label");
    assert_eq!(model.architecture(), "xlm-roberta");
    assert_eq!(model.scoring(), &Scoring::Classifier);
    // 4,098 positions less the padding offset of 2.
    assert_eq!(model.max_length(), 4_096);
}

#[test]
fn electra_2label() {
    let (model, _) = run("electra-2label");
    assert_eq!(model.architecture(), "electra");
    assert_eq!(model.labels().len(), 2);
}

#[test]
fn qwen2_reranker_with_its_own_true_and_false_tokens() {
    let (model, _) = run("qwen2-reranker");
    assert_eq!(model.architecture(), "qwen2");
    match model.scoring() {
        Scoring::TokenLogits {
            true_token,
            false_token,
            ..
        } => {
            assert_eq!(true_token, "1");
            assert_eq!(false_token.as_deref(), Some("0"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn qwen3_reranker_sentence_transformers_layout() {
    let (model, json) = run("qwen3-reranker-st");
    assert_eq!(model.architecture(), "qwen3");
    assert!(matches!(
        model.scoring(),
        Scoring::TokenLogits {
            true_id: 300,
            false_id: Some(293),
            ..
        }
    ));
    let dir = fixtures().join("qwen3-reranker-st");
    // A prompt over the maximum length keeps its start and the template's tail: the
    // document's end is cut.
    let truncation = &json["truncation"];
    let max_length = truncation["ce_max_length"].as_u64().unwrap() as usize;
    let cases: Vec<Case> = serde_json::from_value(truncation["cases"].clone()).unwrap();
    let short = CrossEncoder::from_dir(&dir, cpu().max_length(max_length)).unwrap();
    check_cases("qwen3 truncated", &short, &cases, None);
    assert!(cases.iter().all(|c| c.input_ids.len() <= max_length));
    // An instruction goes into the prompt as its system message.
    let prompts = &json["prompt_cases"];
    let instruction = prompts["prompt"].as_str().unwrap();
    let cases: Vec<Case> = serde_json::from_value(prompts["cases"].clone()).unwrap();
    let instructed = CrossEncoder::from_dir(&dir, cpu().instruction(instruction)).unwrap();
    check_cases("qwen3 instruction", &instructed, &cases, None);
}

#[test]
fn qwen3_reranker_original_layout_uses_the_model_card_prompt() {
    let name = "qwen3-reranker-original";
    let json = reference(name);
    let dir = fixtures().join(name);
    let cases: Vec<Case> = serde_json::from_value(json["cases"].clone()).unwrap();
    for kernels in [Kernels::Auto, Kernels::Portable] {
        let model = CrossEncoder::from_dir(&dir, cpu().kernels(kernels)).unwrap();
        let worst = check_cases(&format!("{name} ({kernels:?})"), &model, &cases, None);
        println!("{name} ({kernels:?}): max |logit diff| {worst:.2e}");
    }
    // The default score is the model card's probability (the sigmoid of the raw score).
    let model = CrossEncoder::from_dir(&dir, cpu()).unwrap();
    let recipe_cases: Vec<f32> = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["model_card_probability"].as_f64().unwrap() as f32)
        .collect();
    let docs: Vec<String> = cases.iter().map(Case::document).collect();
    let pairs: Vec<(&str, &str)> = cases
        .iter()
        .zip(&docs)
        .map(|(c, d)| (c.query.as_str(), d.as_str()))
        .collect();
    for (p, want) in model.predict(&pairs).unwrap().iter().zip(recipe_cases) {
        assert!(
            (p.score - want).abs() <= TOLERANCE,
            "{} vs model card {want}",
            p.score
        );
    }
    let truncation = &json["truncation"];
    let max_length = truncation["max_length"].as_u64().unwrap() as usize;
    let cases: Vec<Case> = serde_json::from_value(truncation["cases"].clone()).unwrap();
    let short = CrossEncoder::from_dir(&dir, cpu().max_length(max_length)).unwrap();
    check_cases("qwen3 original truncated", &short, &cases, None);
}

/// A classifier refuses an instruction (it has no prompt to put it in), and a causal model
/// without a pair template of a family that has no built-in prompt is an error naming it.
#[test]
fn instructions_and_templates_are_checked() {
    let err = CrossEncoder::from_dir(fixtures().join("electra-2label"), cpu().instruction("x"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("instruction"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures().join("qwen2-reranker");
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() && entry.file_name() != "chat_template.jinja" {
            std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
        }
    }
    std::fs::create_dir(tmp.path().join("1_LogitScore")).unwrap();
    std::fs::copy(
        src.join("1_LogitScore/config.json"),
        tmp.path().join("1_LogitScore/config.json"),
    )
    .unwrap();
    let err = CrossEncoder::from_dir(tmp.path(), cpu())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("chat template") && err.contains("query"),
        "{err}"
    );
}
