//! Crafted model directories: sizes that would allocate without bound or abort, layer counts
//! that do not match the checkpoint, a tokenizer without special tokens, shards outside the
//! directory and special files. Each is a typed error naming the file and field; none
//! crashes, hangs or allocates past what the checkpoint holds.

mod common;

use common::{copy_fixture, edit_config, load};

/// The error of loading `fixture` with `field` set to `value`.
fn with_config(fixture_name: &str, field: &str, value: serde_json::Value) -> String {
    let tmp = copy_fixture(fixture_name);
    edit_config(tmp.path(), |v| {
        v[field] = value;
    });
    match load(tmp.path()) {
        Ok(_) => panic!("{fixture_name} with {field} edited loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn huge_sizes_in_config_are_refused_before_anything_is_allocated() {
    let huge = [
        serde_json::json!(u64::MAX),
        serde_json::json!(1_000_000_000_000u64),
        serde_json::json!(4_294_967_296u64),
    ];
    for fixture_name in ["bert-3label", "modernbert-1label-mean"] {
        for value in &huge {
            let err = with_config(fixture_name, "num_hidden_layers", value.clone());
            assert!(
                err.contains("num_hidden_layers") && err.contains("config.json"),
                "{fixture_name} {value}: {err}"
            );
            let err = with_config(fixture_name, "max_position_embeddings", value.clone());
            assert!(
                err.contains("max_position_embeddings") || err.contains("position"),
                "{fixture_name} {value}: {err}"
            );
        }
        // A label count without id2label: refused before one name per label is made.
        let tmp = copy_fixture(fixture_name);
        edit_config(tmp.path(), |v| {
            let o = v.as_object_mut().unwrap();
            o.remove("id2label");
            o.remove("label2id");
            o.insert("num_labels".into(), serde_json::json!(50_000_000));
        });
        let err = load(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("num_labels") && err.contains("50000000"),
            "{err}"
        );
    }
}

#[test]
fn a_layer_count_other_than_the_checkpoints_is_refused() {
    for (fixture_name, layers) in [("bert-3label", 2usize), ("modernbert-1label-mean", 3)] {
        for asked in [layers - 1, layers + 1] {
            let err = with_config(fixture_name, "num_hidden_layers", serde_json::json!(asked));
            assert!(
                err.contains("num_hidden_layers")
                    && err.contains(&format!("holds {layers} layers")),
                "{fixture_name} asked {asked}: {err}"
            );
        }
        let err = with_config(fixture_name, "num_hidden_layers", serde_json::json!(0));
        assert!(err.contains("at least 1"), "{err}");
    }
}

#[test]
fn a_tokenizer_without_a_post_processor_is_refused() {
    let tmp = copy_fixture("bert-3label");
    let path = tmp.path().join("tokenizer.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["post_processor"] = serde_json::Value::Null;
    std::fs::write(&path, v.to_string()).unwrap();
    let err = load(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("post_processor"),
        "{err}"
    );
}

#[test]
fn shards_outside_the_model_directory_are_refused() {
    for outside in ["../elsewhere.safetensors", "/etc/passwd", "sub/../../x", ""] {
        let tmp = copy_fixture("bert-3label");
        std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
        std::fs::write(
            tmp.path().join("model.safetensors.index.json"),
            serde_json::json!({"weight_map": {"classifier.weight": outside}}).to_string(),
        )
        .unwrap();
        let err = load(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("model.safetensors.index.json") && err.contains("is not a file inside"),
            "{outside}: {err}"
        );
    }
}

#[cfg(unix)]
#[test]
fn special_files_named_like_model_files_are_refused_not_read() {
    for name in ["config.json", "tokenizer.json", "model.safetensors"] {
        let tmp = copy_fixture("bert-3label");
        let path = tmp.path().join(name);
        std::fs::remove_file(&path).unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("mkfifo");
        assert!(status.success());
        // Reading a FIFO nobody writes to would block forever; this must return at once.
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = tmp.path().to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(load(&dir).map(|_| ()).map_err(|e| e.to_string()));
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{name}: loading hung on a FIFO"));
        let err = got.expect_err("a FIFO is no model file");
        assert!(err.contains(name) && err.contains("FIFO"), "{name}: {err}");
    }
}

/// A JSON value for a size field: small, zero, huge, negative, fractional, or not a number.
fn size_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0u64..80).prop_map(serde_json::Value::from),
        1 => proptest::num::u64::ANY.prop_map(serde_json::Value::from),
        1 => Just(serde_json::json!(1_000_000_000_000u64)),
        1 => proptest::num::i64::ANY.prop_map(serde_json::Value::from),
        1 => proptest::num::f64::ANY.prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        1 => Just(serde_json::Value::Null),
        1 => Just(serde_json::json!("12")),
    ]
}

const SIZE_FIELDS: [&str; 11] = [
    "num_hidden_layers",
    "num_labels",
    "max_position_embeddings",
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "type_vocab_size",
    "local_attention",
    "global_attn_every_n_layers",
    "pad_token_id",
];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(150))]

    /// `config.json` with crafted sizes: loading returns a model or an error, never panics,
    /// hangs or allocates past the checkpoint (an allocation that large would abort this
    /// test process).
    #[test]
    fn crafted_config_sizes_load_or_fail_cleanly(
        fixture_index in 0usize..2,
        edits in proptest::collection::vec((0usize..SIZE_FIELDS.len(), size_value()), 1..4),
        drop_labels in proptest::bool::ANY,
    ) {
        let name = ["bert-3label", "modernbert-1label-mean"][fixture_index];
        let tmp = copy_fixture(name);
        edit_config(tmp.path(), |v| {
            let o = v.as_object_mut().unwrap();
            if drop_labels {
                o.remove("id2label");
                o.remove("label2id");
            }
            for (field, value) in &edits {
                o.insert(SIZE_FIELDS[*field].into(), value.clone());
            }
        });
        match load(tmp.path()) {
            Ok(model) => {
                // What loads runs: one pair scores to finite numbers.
                let got = model.predict(&[("a query", "a document")]);
                proptest::prop_assert!(got.is_ok(), "{:?} {:?}", edits, got.err());
            }
            Err(e) => {
                let msg = e.to_string();
                proptest::prop_assert!(!msg.is_empty());
            }
        }
    }
}
