//! Parity on real artefacts from `../shared`: the ModernBERT BPE tokenizer, the multilingual
//! BERT WordPiece tokenizer built from `vocab.txt` alone, and the real all-MiniLM-L6-v2 weights.
//! Expected values were produced by transformers / sentence-transformers
//! (`scripts/make_fixtures.py`).

use std::path::PathBuf;

use serde::Deserialize;
use tantivy_rerank_encoders::{BiEncoder, BiEncoderOptions, DeviceSpec, PairTokenizer, Truncation};
use tantivy_rerank_testdata::shared_dir as shared;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[derive(Deserialize)]
struct TokCase {
    query: String,
    document: String,
    #[serde(default)]
    document_repeat: Option<usize>,
    max_length: Option<usize>,
    truncation: Option<String>,
    input_ids: Vec<u32>,
    token_type_ids: Option<Vec<u32>>,
}

#[derive(Deserialize)]
struct TokSet {
    dir: String,
    model_max_length: serde_json::Value,
    cases: Vec<TokCase>,
}

#[derive(Deserialize)]
struct TokParity {
    tokenizers: std::collections::BTreeMap<String, TokSet>,
}

#[test]
fn real_tokenizers_match_transformers() {
    let text = std::fs::read_to_string(fixture("tokenizer_parity.json")).unwrap();
    let parity: TokParity = serde_json::from_str(&text).unwrap();
    let mut total = 0;
    for (name, set) in &parity.tokenizers {
        let dir = shared().join(&set.dir);
        let tok = PairTokenizer::from_dir(&dir).unwrap();
        // transformers reports 1e30 for "no limit".
        let expected_limit = set
            .model_max_length
            .as_f64()
            .filter(|v| *v < 1e12)
            .map(|v| v as usize);
        assert_eq!(
            tok.model_max_length(),
            expected_limit,
            "{name}: model_max_length"
        );
        for (i, case) in set.cases.iter().enumerate() {
            let document = case.document.repeat(case.document_repeat.unwrap_or(1));
            let t = match case.max_length {
                Some(l) => {
                    let strategy: Truncation = case
                        .truncation
                        .as_deref()
                        .unwrap_or("longest_first")
                        .parse()
                        .unwrap();
                    tok.with_truncation(l, strategy).unwrap()
                }
                None => tok.clone(),
            };
            // Counting agrees with the spans passages are cut by, with or without a limit
            // (neither truncates).
            for text in [&case.query, &document] {
                let spans = t.token_spans(text).unwrap();
                assert_eq!(
                    t.count_tokens(text).unwrap(),
                    spans.len(),
                    "{name} case {i}"
                );
            }
            let enc = t.encode_pair(&case.query, &document).unwrap();
            assert_eq!(
                enc.ids, case.input_ids,
                "{name} case {i} ({:?} / {:?})",
                case.query, &case.document
            );
            if let Some(types) = &case.token_type_ids {
                assert_eq!(&enc.type_ids, types, "{name} case {i}: token types");
            }
            total += 1;
        }
    }
    println!("tokenizer parity: {total} pairs identical");
    assert!(total >= 80);
}

#[derive(Deserialize)]
struct MiniLm {
    max_seq_length: usize,
    sentences: Vec<String>,
    embeddings: Vec<Vec<f32>>,
    token_ids: Vec<Vec<u32>>,
}

#[test]
fn real_minilm_embeddings_match_sentence_transformers() {
    let text = std::fs::read_to_string(fixture("minilm_embeddings.json")).unwrap();
    let expected: MiniLm = serde_json::from_str(&text).unwrap();
    let model = BiEncoder::from_dir(
        shared().join("models/all-MiniLM-L6-v2"),
        BiEncoderOptions::default().device(DeviceSpec::Cpu),
    )
    .unwrap();
    assert_eq!(model.max_length(), expected.max_seq_length);
    let encodings = model.tokenizer().encode_texts(&expected.sentences).unwrap();
    for (i, (enc, want)) in encodings.iter().zip(&expected.token_ids).enumerate() {
        assert_eq!(&enc.ids, want, "sentence {i}: token ids");
    }
    let got = model.embed(&expected.sentences).unwrap();
    let mut worst = 0f32;
    for (g, w) in got.iter().zip(&expected.embeddings) {
        assert_eq!(g.len(), w.len());
        for (a, b) in g.iter().zip(w) {
            worst = worst.max((a - b).abs());
        }
    }
    println!(
        "all-MiniLM-L6-v2: {} sentences, max |diff| {worst:.3e}",
        got.len()
    );
    assert!(worst <= 1e-4, "max |diff| {worst}");
    // Cached embeddings are the computed ones, in any order and mix with new texts.
    let mut mixed: Vec<String> = expected.sentences.iter().rev().cloned().collect();
    mixed.insert(3, "a sentence the cache has not seen".to_string());
    let again = model.embed(&mixed).unwrap();
    for (i, s) in mixed.iter().enumerate() {
        if let Some(j) = expected.sentences.iter().position(|x| x == s) {
            assert_eq!(again[i], got[j], "cached embedding of sentence {j}");
        }
    }
    let uncached = BiEncoder::from_dir(
        shared().join("models/all-MiniLM-L6-v2"),
        BiEncoderOptions::default().device(DeviceSpec::Cpu),
    )
    .unwrap()
    .with_embedding_cache(0);
    let fresh = uncached.embed(&mixed).unwrap();
    let d = fresh[3]
        .iter()
        .zip(&again[3])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(d < 1e-5, "batch composition changed an embedding by {d}");
    // Cosine ranking works on real weights.
    let scores = model
        .score(
            "How many people live in Berlin?",
            &[
                "Berlin has about 3.7 million inhabitants.",
                "Bananas are yellow.",
            ],
        )
        .unwrap();
    assert!(scores[0] > scores[1]);
}
