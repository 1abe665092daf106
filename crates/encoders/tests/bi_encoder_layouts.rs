//! Embedding checkpoints come in more layouts than cross-encoders: a plain `BertModel` or
//! `ModernBertModel` stores its encoder at the root of the weight names, and
//! sentence-transformers' `1_Pooling/config.json` picks the pooling.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use tantivy_rerank_encoders::{BiEncoder, BiEncoderOptions, DeviceSpec, EncoderError};

const TEXTS: [&str; 3] = [
    "what is the capital of france",
    "Paris is the capital and largest city of France.",
    "",
];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load(dir: &Path) -> Result<BiEncoder, EncoderError> {
    BiEncoder::from_dir(dir, BiEncoderOptions::default().device(DeviceSpec::Cpu))
}

/// Copy a sequence-classification fixture as a base-model checkpoint: the encoder's tensors
/// without `prefix` and without the classification head.
fn as_base_model(name: &str, prefix: &str) -> tempfile::TempDir {
    let src = fixture(name);
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        let file = entry.file_name();
        if file != "model.safetensors" {
            std::fs::copy(entry.path(), tmp.path().join(file)).unwrap();
        }
    }
    let tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let base: HashMap<String, Tensor> = tensors
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v)))
        .collect();
    assert!(!base.is_empty(), "no tensor of {name} starts with {prefix}");
    candle_core::safetensors::save(&base, tmp.path().join("model.safetensors")).unwrap();
    tmp
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn base_model_checkpoints_without_prefix_load() {
    for (name, prefix) in [
        ("modernbert-1label-mean", "model."),
        ("bert-3label", "bert."),
    ] {
        let reference = load(&fixture(name)).unwrap().embed(&TEXTS).unwrap();
        let base = as_base_model(name, prefix);
        let model = load(base.path()).unwrap_or_else(|e| panic!("{name} without {prefix}: {e}"));
        let embeddings = model.embed(&TEXTS).unwrap();
        assert_eq!(embeddings.len(), TEXTS.len());
        let diff = max_abs_diff(&reference, &embeddings);
        assert!(diff == 0.0, "{name}: embeddings differ by {diff}");
    }
}

const MODULES: &str = r#"[
  {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
  {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
  {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
]"#;

/// A sentence-transformers directory: `modules.json` (Transformer, Pooling, Normalize) and
/// `1_Pooling/config.json` holding `config`.
fn with_pooling(config: &str) -> tempfile::TempDir {
    let tmp = as_base_model("modernbert-1label-mean", "model.");
    std::fs::write(tmp.path().join("modules.json"), MODULES).unwrap();
    std::fs::create_dir(tmp.path().join("1_Pooling")).unwrap();
    std::fs::write(tmp.path().join("1_Pooling/config.json"), config).unwrap();
    tmp
}

fn norms(embeddings: &[Vec<f32>]) -> Vec<f32> {
    embeddings
        .iter()
        .map(|e| e.iter().map(|x| x * x).sum::<f32>().sqrt())
        .collect()
}

#[test]
fn pooling_config_is_followed() {
    let mean = with_pooling(r#"{"pooling_mode_mean_tokens": true}"#);
    let cls =
        with_pooling(r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#);
    let mean = load(mean.path()).unwrap().embed(&TEXTS).unwrap();
    let cls = load(cls.path()).unwrap().embed(&TEXTS).unwrap();
    let diff = max_abs_diff(&mean, &cls);
    assert!(
        diff > 1e-3,
        "CLS pooling gave the mean-pooled embeddings ({diff})"
    );
}

/// Loading with this pooling config is an `InvalidConfig` naming `1_Pooling` and `mode`.
fn assert_pooling_error(config: &str, mode: &str) {
    let dir = with_pooling(config);
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, EncoderError::InvalidConfig { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("1_Pooling") && msg.contains(mode),
        "{config}: {msg}"
    );
}

#[test]
fn unsupported_pooling_is_an_error_naming_the_file() {
    for (config, mode) in [
        (r#"{"pooling_mode_max_tokens": true}"#, "max_tokens"),
        (r#"{"pooling_mode_lasttoken": true}"#, "lasttoken"),
        (
            r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true}"#,
            "cls_token + mean_tokens",
        ),
    ] {
        assert_pooling_error(config, mode);
    }
}

/// sentence-transformers 5 writes `"pooling_mode": "cls"` (or a list) instead of the
/// `pooling_mode_*` flags; it wins over the flags, as in sentence-transformers.
#[test]
fn pooling_mode_key_is_followed() {
    let embed = |config: &str| {
        let dir = with_pooling(config);
        load(dir.path())
            .unwrap_or_else(|e| panic!("{config}: {e}"))
            .embed(&TEXTS)
            .unwrap()
    };
    let mean = embed(r#"{"pooling_mode_mean_tokens": true}"#);
    let cls = embed(r#"{"pooling_mode_cls_token": true}"#);
    assert!(max_abs_diff(&mean, &cls) > 1e-3);
    for config in [
        r#"{"embedding_dimension": 32, "pooling_mode": "cls", "include_prompt": true}"#,
        r#"{"pooling_mode": ["cls"]}"#,
        r#"{"pooling_mode": "cls", "pooling_mode_mean_tokens": true}"#,
    ] {
        assert_eq!(max_abs_diff(&embed(config), &cls), 0.0, "{config}");
    }
    assert_eq!(
        max_abs_diff(&embed(r#"{"pooling_mode": "mean"}"#), &mean),
        0.0
    );
    for (config, mode) in [
        (r#"{"pooling_mode": "max"}"#, "pooling_mode = max"),
        (
            r#"{"pooling_mode": ["cls", "mean"]}"#,
            "pooling_mode = cls + mean",
        ),
        (r#"{"pooling_mode": 3}"#, "pooling_mode = 3"),
    ] {
        assert_pooling_error(config, mode);
    }
}

/// Every flag false (or none given) is mean pooling in sentence-transformers (it falls back
/// to `("mean",)`); followed, with a warning.
#[test]
fn pooling_config_without_a_mode_is_mean_like_sentence_transformers() {
    let mean = with_pooling(r#"{"pooling_mode_mean_tokens": true}"#);
    let mean = load(mean.path()).unwrap().embed(&TEXTS).unwrap();
    for config in [
        r#"{"word_embedding_dimension": 32, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": false}"#,
        r#"{"word_embedding_dimension": 32}"#,
    ] {
        let dir = with_pooling(config);
        let got = load(dir.path()).unwrap().embed(&TEXTS).unwrap();
        assert_eq!(max_abs_diff(&got, &mean), 0.0, "{config}");
    }
}

#[test]
fn modules_json_decides_normalisation_and_without_it_mean_unnormalised() {
    let cls = r#"{"pooling_mode_cls_token": true}"#;
    // With Normalize: unit vectors.
    let dir = with_pooling(cls);
    let normalised = load(dir.path()).unwrap().embed(&TEXTS).unwrap();
    assert!(norms(&normalised).iter().all(|n| (n - 1.0).abs() < 1e-5));
    // Without Normalize: the raw pooled vectors, the same direction.
    let modules: serde_json::Value = serde_json::from_str(MODULES).unwrap();
    let two = serde_json::Value::Array(modules.as_array().unwrap()[..2].to_vec());
    std::fs::write(dir.path().join("modules.json"), two.to_string()).unwrap();
    let raw = load(dir.path()).unwrap().embed(&TEXTS).unwrap();
    let raw_norms = norms(&raw);
    assert!(
        raw_norms.iter().all(|n| (n - 1.0).abs() > 1e-3),
        "{raw_norms:?}"
    );
    for ((r, n), len) in raw.iter().zip(&normalised).zip(&raw_norms) {
        for (a, b) in r.iter().zip(n) {
            assert!((a / len - b).abs() < 1e-5);
        }
    }
    // Without modules.json it is a plain transformers model for sentence-transformers:
    // mean pooling (1_Pooling is not read), not normalised.
    std::fs::remove_file(dir.path().join("modules.json")).unwrap();
    let plain = load(dir.path()).unwrap().embed(&TEXTS).unwrap();
    std::fs::write(dir.path().join("modules.json"), two.to_string()).unwrap();
    std::fs::write(
        dir.path().join("1_Pooling/config.json"),
        r#"{"pooling_mode_mean_tokens": true}"#,
    )
    .unwrap();
    let mean_raw = load(dir.path()).unwrap().embed(&TEXTS).unwrap();
    assert_eq!(max_abs_diff(&plain, &mean_raw), 0.0);
}

#[test]
fn pooling_module_path_comes_from_modules_json() {
    let dir = with_pooling(r#"{"pooling_mode_mean_tokens": true}"#);
    std::fs::create_dir(dir.path().join("pool")).unwrap();
    std::fs::write(
        dir.path().join("pool/config.json"),
        r#"{"pooling_mode": "cls"}"#,
    )
    .unwrap();
    let mean = load(dir.path()).unwrap().embed(&TEXTS).unwrap();
    std::fs::write(
        dir.path().join("modules.json"),
        MODULES.replace(r#""path": "1_Pooling""#, r#""path": "pool""#),
    )
    .unwrap();
    let cls = load(dir.path()).unwrap().embed(&TEXTS).unwrap();
    assert!(max_abs_diff(&mean, &cls) > 1e-3);
    // A Pooling module whose config is missing: sentence-transformers fails too.
    std::fs::remove_file(dir.path().join("pool/config.json")).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, EncoderError::MissingFile { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("pool/config.json") && msg.contains("modules.json"),
        "{msg}"
    );
}

#[test]
fn unsupported_modules_are_an_error_naming_modules_json() {
    let transformer = r#"{"path": "", "type": "sentence_transformers.models.Transformer"}"#;
    let pooling = r#"{"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}"#;
    let normalize = r#"{"path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}"#;
    let dense = r#"{"path": "2_Dense", "type": "sentence_transformers.models.Dense"}"#;
    let custom = r#"{"path": "3", "type": "my_package.modules.Pooling"}"#;
    for (modules, expect) in [
        (
            format!("[{transformer}, {pooling}, {dense}, {normalize}]"),
            "type = sentence_transformers.models.Dense",
        ),
        (
            format!("[{transformer}, {pooling}, {custom}]"),
            "type = my_package.modules.Pooling",
        ),
        (
            format!("[{transformer}, {normalize}]"),
            "modules = [Transformer, Normalize]",
        ),
        (
            format!("[{transformer}, {normalize}, {pooling}]"),
            "modules = [Transformer, Normalize, Pooling]",
        ),
        (format!("[{transformer}]"), "modules = [Transformer]"),
        // The Pooling module's own folder: never the model directory or outside it.
        (
            format!("[{transformer}, {}]", pooling.replace("1_Pooling", "")),
            "needs its own folder",
        ),
        (
            format!(
                "[{transformer}, {}]",
                pooling.replace("1_Pooling", "../1_Pooling")
            ),
            "needs its own folder",
        ),
        (
            format!(
                "[{}, {pooling}]",
                transformer.replace(r#""path": """#, r#""path": "0_BERT""#)
            ),
            "path = 0_BERT",
        ),
    ] {
        let dir = with_pooling(r#"{"pooling_mode_mean_tokens": true}"#);
        std::fs::write(dir.path().join("modules.json"), &modules).unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(matches!(err, EncoderError::InvalidConfig { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("modules.json") && msg.contains(expect),
            "{modules}: {msg}"
        );
    }
    // sentence-transformers 5 names the modules by their new paths.
    let dir = with_pooling(r#"{"pooling_mode": "mean"}"#);
    std::fs::write(
        dir.path().join("modules.json"),
        r#"[{"path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
            {"path": "1_Pooling", "type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling"},
            {"path": "2_Normalize", "type": "sentence_transformers.base.modules.normalize.Normalize"}]"#,
    )
    .unwrap();
    load(dir.path()).unwrap();
}
