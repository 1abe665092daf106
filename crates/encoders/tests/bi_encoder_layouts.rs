//! Embedding checkpoints come in more layouts than cross-encoders: a plain `BertModel` or
//! `ModernBertModel` stores its encoder at the root of the weight names, and
//! sentence-transformers' `1_Pooling/config.json` picks the pooling.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use tantivy_rerank_encoders::{BiEncoder, CrossEncoderOptions, DeviceSpec, EncoderError};

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
    BiEncoder::from_dir(dir, CrossEncoderOptions::default().device(DeviceSpec::Cpu))
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

fn with_pooling(config: &str) -> tempfile::TempDir {
    let tmp = as_base_model("modernbert-1label-mean", "model.");
    std::fs::create_dir(tmp.path().join("1_Pooling")).unwrap();
    std::fs::write(tmp.path().join("1_Pooling/config.json"), config).unwrap();
    tmp
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
        let dir = with_pooling(config);
        let err = load(dir.path()).unwrap_err();
        assert!(matches!(err, EncoderError::InvalidConfig { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("1_Pooling") && msg.contains(mode),
            "{config}: {msg}"
        );
    }
}
