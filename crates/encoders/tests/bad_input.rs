//! Every broken model directory gets a typed error that names the file, field or tensor.

mod common;

use std::path::Path;

use common::{copy_fixture, edit_config, fixture, load};

use tantivy_rerank_encoders::{
    CrossEncoder, CrossEncoderOptions, DeviceSpec, EncodedPair, EncoderError, Truncation,
};

#[test]
fn missing_config() {
    let tmp = copy_fixture("bert-3label");
    std::fs::remove_file(tmp.path().join("config.json")).unwrap();
    let err = load(tmp.path()).unwrap_err();
    assert!(matches!(err, EncoderError::MissingFile { .. }), "{err}");
    assert!(err.to_string().contains("config.json"));
}

#[test]
fn malformed_config() {
    let tmp = copy_fixture("bert-3label");
    std::fs::write(tmp.path().join("config.json"), "{\"architectures\": [").unwrap();
    let err = load(tmp.path()).unwrap_err();
    assert!(matches!(err, EncoderError::MalformedFile { .. }), "{err}");
    assert!(err.to_string().contains("config.json"));
}

#[test]
fn missing_required_config_field_is_named() {
    let tmp = copy_fixture("bert-3label");
    edit_config(tmp.path(), |v| {
        v.as_object_mut().unwrap().remove("hidden_size");
    });
    let err = load(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("hidden_size") && err.contains("config.json"),
        "{err}"
    );
}

#[test]
fn unsupported_architecture_lists_supported() {
    let tmp = copy_fixture("bert-3label");
    edit_config(tmp.path(), |v| {
        v["architectures"] = serde_json::json!(["DebertaV2ForSequenceClassification"]);
        v["model_type"] = serde_json::json!("deberta-v2");
    });
    let err = load(tmp.path()).unwrap_err();
    assert!(
        matches!(err, EncoderError::UnsupportedArchitecture { .. }),
        "{err}"
    );
    let msg = err.to_string();
    for name in [
        "DebertaV2ForSequenceClassification",
        "BertForSequenceClassification",
        "XLMRobertaForSequenceClassification",
        "Qwen3ForCausalLM",
    ] {
        assert!(msg.contains(name), "{name}: {msg}");
    }
    // A known family under an architecture that does not score (a masked-LM checkpoint).
    let tmp = copy_fixture("bert-3label");
    edit_config(tmp.path(), |v| {
        v["architectures"] = serde_json::json!(["BertForMaskedLM"]);
    });
    let err = load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("BertForMaskedLM"), "{err}");
}

#[test]
fn missing_weights() {
    let tmp = copy_fixture("bert-3label");
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let err = load(tmp.path()).unwrap_err();
    assert!(matches!(err, EncoderError::MissingFile { .. }), "{err}");
    assert!(err.to_string().contains("pytorch_model.bin"));
}

#[test]
fn truncated_safetensors() {
    let tmp = copy_fixture("bert-3label");
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load(tmp.path()).unwrap_err();
    assert!(matches!(err, EncoderError::Weights { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"));
}

#[test]
fn corrupt_pytorch_bin() {
    let tmp = copy_fixture("bert-2label-vocab");
    std::fs::write(tmp.path().join("pytorch_model.bin"), b"not a zip file").unwrap();
    let err = load(tmp.path()).unwrap_err();
    assert!(matches!(err, EncoderError::Weights { .. }), "{err}");
    assert!(err.to_string().contains("pytorch_model.bin"));
}

#[test]
fn missing_tokenizer() {
    let tmp = copy_fixture("bert-2label-vocab");
    std::fs::remove_file(tmp.path().join("vocab.txt")).unwrap();
    let err = load(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("vocab.txt"),
        "{err}"
    );
}

#[test]
fn invalid_utf8_vocab() {
    let tmp = copy_fixture("bert-2label-vocab");
    let path = tmp.path().join("vocab.txt");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"\xc3\x28\n");
    std::fs::write(&path, bytes).unwrap();
    let err = load(tmp.path()).unwrap_err();
    assert!(matches!(err, EncoderError::InvalidUtf8 { .. }), "{err}");
}

#[test]
fn tensor_shape_mismatch_names_tensor_and_shapes() {
    let tmp = copy_fixture("bert-3label");
    edit_config(tmp.path(), |v| {
        v["intermediate_size"] = serde_json::json!(41)
    });
    let err = load(tmp.path()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EncoderError::ShapeMismatch { .. }), "{msg}");
    assert!(
        msg.contains("intermediate.dense.weight") && msg.contains("41") && msg.contains("40"),
        "{msg}"
    );
}

#[test]
fn label_count_mismatch() {
    let tmp = copy_fixture("bert-3label");
    edit_config(tmp.path(), |v| {
        v["id2label"] = serde_json::json!({"0": "no", "1": "yes"});
        v["label2id"] = serde_json::json!({"no": 0, "yes": 1});
    });
    let err = load(tmp.path()).unwrap_err();
    assert!(
        matches!(
            err,
            EncoderError::LabelCountMismatch {
                config_labels: 2,
                tensor_labels: 3,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn modernbert_missing_tensor_is_named() {
    let tmp = copy_fixture("modernbert-1label-mean");
    // Claiming biases the checkpoint does not have makes the loader ask for them.
    edit_config(tmp.path(), |v| v["mlp_bias"] = serde_json::json!(true));
    let err = load(tmp.path()).unwrap_err();
    assert!(matches!(err, EncoderError::MissingTensor { .. }), "{err}");
    assert!(
        err.to_string().contains("model.layers.0.mlp.Wi.bias"),
        "{err}"
    );
}

#[test]
fn bad_options_are_rejected() {
    let err = CrossEncoder::from_dir(
        fixture("bert-3label"),
        CrossEncoderOptions::default()
            .device(DeviceSpec::Cpu)
            .max_length(2),
    )
    .unwrap_err();
    assert!(err.to_string().contains("max_length"), "{err}");
    for (options, name) in [
        (CrossEncoderOptions::default().batch_size(0), "batch_size"),
        (
            CrossEncoderOptions::default().max_batch_tokens(0),
            "max_batch_tokens",
        ),
    ] {
        let err = CrossEncoder::from_dir(fixture("bert-3label"), options.device(DeviceSpec::Cpu))
            .unwrap_err();
        assert!(
            matches!(err, EncoderError::InvalidOption { .. }) && err.to_string().contains(name),
            "{err}"
        );
    }
    #[cfg(not(feature = "cuda"))]
    {
        let err = CrossEncoder::from_dir(
            fixture("bert-3label"),
            CrossEncoderOptions::default().device(DeviceSpec::Cuda(0)),
        )
        .unwrap_err();
        assert!(matches!(err, EncoderError::Device { .. }), "{err}");
    }
}

#[test]
fn tokenizer_of_another_model_is_rejected_before_the_weights_load() {
    // bert-3label's vocabulary has 415 entries; a config with a smaller table cannot
    // belong to it. The weights would also mismatch, but the tokenizer check comes first.
    let tmp = copy_fixture("bert-3label");
    edit_config(tmp.path(), |v| v["vocab_size"] = serde_json::json!(300));
    let err = load(tmp.path()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EncoderError::InvalidConfig { .. }), "{msg}");
    assert!(
        msg.contains("vocab_size = 300")
            && msg.contains("config.json")
            && msg.contains("tokenizer.json")
            && msg.contains("up to 414"),
        "{msg}"
    );
}

#[test]
fn encodings_the_model_cannot_look_up_are_named_errors() {
    // bert-3label: vocab_size 415, max_position_embeddings 64, type_vocab_size 2.
    let model = load(&fixture("bert-3label")).unwrap();
    let good = model
        .tokenizer()
        .encode_pair("a query", "a document")
        .unwrap();
    let mut bad_id = good.clone();
    bad_id.ids[1] = 415;
    let mut bad_segment = good.clone();
    bad_segment.type_ids[1] = 2;
    let too_long = EncodedPair {
        ids: vec![good.ids[0]; 65],
        type_ids: vec![0; 65],
    };
    let empty = EncodedPair {
        ids: vec![],
        type_ids: vec![],
    };
    for (bad, expect) in [
        (bad_id, "token id 415 is outside vocab_size = 415"),
        (bad_segment, "segment id 2 is outside type_vocab_size = 2"),
        (too_long, "65 tokens, more than the model's 64 positions"),
        (empty, "no tokens"),
    ] {
        let err = model
            .predict_encoded(&[good.clone(), bad], None)
            .unwrap_err();
        assert!(
            matches!(err, EncoderError::InvalidInput { index: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(expect), "{err}");
    }
    // The longest allowed input still runs.
    let longest = EncodedPair {
        ids: vec![good.ids[0]; 64],
        type_ids: vec![0; 64],
    };
    assert_eq!(model.predict_encoded(&[longest], None).unwrap().0.len(), 1);
}

#[test]
fn a_pair_that_cannot_be_truncated_is_named_by_its_batch_index() {
    // bert-3label: at most 64 tokens. With only_second a 100-word query leaves no room.
    let model = CrossEncoder::from_dir(
        fixture("bert-3label"),
        CrossEncoderOptions {
            truncation: Truncation::OnlySecond,
            ..CrossEncoderOptions::default().device(DeviceSpec::Cpu)
        },
    )
    .unwrap();
    let long_query = "lava ".repeat(100);
    let pairs = [
        ("short", "fine"),
        ("short", "also fine"),
        (long_query.as_str(), "doc"),
    ];
    let err = model.predict(&pairs).unwrap_err();
    assert_eq!(err.input_index(), Some(2), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("input 2") && msg.contains("only_second"),
        "{msg}"
    );
    // The same pair alone is input 0, and longest_first truncates it.
    assert_eq!(
        model.predict(&pairs[2..]).unwrap_err().input_index(),
        Some(0)
    );
    let model = load(&fixture("bert-3label")).unwrap();
    assert_eq!(model.predict(&pairs).unwrap().len(), 3);
}

#[test]
fn modernbert_odd_head_size_is_rejected() {
    let tmp = copy_fixture("modernbert-1label-mean");
    // hidden_size 32 over 32 heads gives head size 1: RoPE rotates pairs of channels.
    edit_config(tmp.path(), |v| {
        v["num_attention_heads"] = serde_json::json!(32)
    });
    let err = load(tmp.path()).unwrap_err();
    assert!(matches!(err, EncoderError::InvalidConfig { .. }), "{err}");
    assert!(err.to_string().contains("odd head size 1"), "{err}");
}

/// Rewrite a copied fixture's `model.safetensors` without the tensor `name`.
fn drop_tensor(dir: &Path, name: &str) {
    let path = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    assert!(tensors.remove(name).is_some(), "fixture has no {name}");
    candle_core::safetensors::save(&tensors, &path).unwrap();
}

/// A checkpoint without `classifier.bias` loads in transformers with that bias set to zero
/// (its `_init_weights` zeroes Linear biases), so it scores as the full checkpoint minus the
/// bias.
#[test]
fn missing_classifier_bias_scores_with_a_zero_bias() {
    let pairs = [("what do cats do", "cats purr and sleep all day")];
    for name in [
        "bert-3label",
        "modernbert-1label-mean",
        "modernbert-3label-cls-bias",
    ] {
        let tmp = copy_fixture(name);
        let full = load(tmp.path()).unwrap().predict(&pairs).unwrap();
        let tensors = candle_core::safetensors::load(
            tmp.path().join("model.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let bias: Vec<f32> = tensors["classifier.bias"].to_vec1().unwrap();
        drop_tensor(tmp.path(), "classifier.bias");
        let without = load(tmp.path()).unwrap().predict(&pairs).unwrap();
        for ((a, b), c) in full[0].logits.iter().zip(&without[0].logits).zip(&bias) {
            assert!((a - c - b).abs() < 1e-5, "{name}: {a} - {c} != {b}");
        }
        assert!(
            bias.iter().any(|b| b.abs() > 1e-6),
            "{name}: the fixture bias is not zero"
        );
    }
}

/// A layer bias that the config declares but the checkpoint lacks is refused. (transformers
/// would zero it, as for the classifier; inside the encoder a missing bias more likely means a
/// damaged or mismatched checkpoint, so this is deliberately stricter.)
#[test]
fn missing_layer_bias_is_a_missing_tensor() {
    for (fixture_name, tensor) in [
        // classifier_bias = true: the head's dense layer has a bias.
        ("modernbert-3label-cls-bias", "head.dense.bias"),
        // norm_bias = true: every norm has one.
        ("modernbert-3label-cls-bias", "head.norm.bias"),
        ("bert-3label", "bert.pooler.dense.bias"),
    ] {
        let tmp = copy_fixture(fixture_name);
        drop_tensor(tmp.path(), tensor);
        let err = load(tmp.path()).unwrap_err();
        assert!(
            matches!(err, EncoderError::MissingTensor { .. }),
            "{fixture_name} without {tensor}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(tensor) && msg.contains("model.safetensors"),
            "{msg}"
        );
    }
}

#[test]
fn zero_position_table_is_a_config_error_not_an_option_error() {
    for name in ["modernbert-1label-mean", "bert-3label"] {
        let tmp = copy_fixture(name);
        edit_config(tmp.path(), |v| {
            v["max_position_embeddings"] = serde_json::json!(0)
        });
        let err = load(tmp.path()).unwrap_err();
        assert!(
            matches!(err, EncoderError::InvalidConfig { .. }),
            "{name}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("max_position_embeddings = 0") && msg.contains("config.json"),
            "{name}: {msg}"
        );
    }
    // A table too small for the special tokens of a pair is blamed on the config too, not
    // on a max_length the user never gave.
    let tmp = copy_fixture("modernbert-1label-mean");
    edit_config(tmp.path(), |v| {
        v["max_position_embeddings"] = serde_json::json!(3)
    });
    let err = load(tmp.path()).unwrap_err();
    assert!(matches!(err, EncoderError::InvalidConfig { .. }), "{err}");
    assert!(
        err.to_string().contains("max_position_embeddings = 3"),
        "{err}"
    );
}

#[test]
fn bad_rope_settings_are_refused_at_load() {
    for (key, value, expect) in [
        (
            "global_rope_theta",
            serde_json::json!(0.0),
            "global_rope_theta = 0",
        ),
        (
            "local_rope_theta",
            serde_json::json!(-10.0),
            "local_rope_theta = -10",
        ),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "linear", "factor": 2.0}),
            "rope_scaling.rope_type = linear",
        ),
        (
            "rope_scaling",
            serde_json::json!({"type": "yarn", "factor": 2.0}),
            "rope_scaling.type = yarn",
        ),
    ] {
        let tmp = copy_fixture("modernbert-1label-mean");
        edit_config(tmp.path(), |v| v[key] = value.clone());
        let err = load(tmp.path()).unwrap_err();
        assert!(matches!(err, EncoderError::InvalidConfig { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(expect) && msg.contains("config.json"), "{msg}");
    }
}

#[test]
fn bad_model_max_length_names_tokenizer_config() {
    for (value, ok) in [
        ("-1", false),
        ("0.5", false),
        ("\"512\"", false),
        ("0", true),
    ] {
        let tmp = copy_fixture("bert-3label");
        let path = tmp.path().join("tokenizer_config.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        v["model_max_length"] = serde_json::from_str(value).unwrap();
        std::fs::write(&path, v.to_string()).unwrap();
        match load(tmp.path()) {
            // 0: transformers does not truncate at all; the limit is the position table.
            Ok(model) => {
                assert!(ok, "{value} was accepted");
                assert_eq!(model.max_length(), 64);
            }
            Err(err) => {
                assert!(!ok, "{value}: {err}");
                assert!(matches!(err, EncoderError::InvalidConfig { .. }), "{err}");
                let msg = err.to_string();
                assert!(
                    msg.contains("tokenizer_config.json") && msg.contains("model_max_length"),
                    "{msg}"
                );
            }
        }
    }
}
