//! `config.json` as Hugging Face writes it, for the architectures this crate runs.
//!
//! The structs deserialise the JSON directly; optional keys take the same defaults as
//! transformers' `BertConfig` / `ModernBertConfig`. Both ModernBERT config styles are
//! accepted: the published checkpoints' `global_attn_every_n_layers` + `global_rope_theta` /
//! `local_rope_theta`, and transformers 5's `layer_types` + `rope_parameters`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{EncoderError, Result};

/// The most labels a classification head may have here (a crafted `num_labels` must not size
/// anything before the checkpoint's classifier can be compared with it).
pub const MAX_LABELS: usize = 65_536;

/// Architectures a [`crate::CrossEncoder`] can run (`architectures[0]` in `config.json`).
pub const SUPPORTED_CROSS_ENCODERS: &[&str] = &[
    "BertForSequenceClassification",
    "ModernBertForSequenceClassification",
];

/// Which model family a checkpoint belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Family {
    /// BERT (post-LN encoder with absolute positions and token types).
    Bert,
    /// ModernBERT (pre-norm, RoPE, alternating global / sliding-window attention).
    ModernBert,
}

/// The parts of `config.json` every architecture shares.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct CommonConfig {
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub num_labels: Option<usize>,
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    /// Rows of the token embedding table.
    #[serde(default)]
    pub vocab_size: Option<usize>,
    /// transformers < 5 writes `torch_dtype`.
    #[serde(default)]
    pub torch_dtype: Option<String>,
    /// transformers >= 5 writes `dtype`.
    #[serde(default)]
    pub dtype: Option<String>,
    /// sentence-transformers >= 4 stores its settings here.
    #[serde(default)]
    pub sentence_transformers: Option<SentenceTransformersSection>,
    /// sentence-transformers < 4 stored the activation under this key.
    #[serde(default)]
    pub sbert_ce_default_activation_function: Option<String>,
}

/// The `sentence_transformers` object of `config.json`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct SentenceTransformersSection {
    #[serde(default)]
    pub activation_fn: Option<String>,
}

impl CommonConfig {
    /// The checkpoint's stored dtype (`dtype` or the older `torch_dtype`).
    pub fn stored_dtype(&self) -> Option<&str> {
        self.dtype.as_deref().or(self.torch_dtype.as_deref())
    }

    /// Labels in index order, as transformers reads them (at most [`MAX_LABELS`]): the length of `id2label` is the
    /// label count (`num_labels` is rarely written); without `id2label` transformers assumes
    /// two labels `LABEL_0`, `LABEL_1` unless `num_labels` says otherwise.
    pub fn labels(&self, path: &Path) -> Result<Vec<String>> {
        match &self.id2label {
            Some(map) if !map.is_empty() => {
                if map.len() > MAX_LABELS {
                    return Err(EncoderError::InvalidConfig {
                        path: path.to_path_buf(),
                        field: "id2label".into(),
                        value: format!("{} labels", map.len()),
                        reason: format!("at most {MAX_LABELS}"),
                    });
                }
                let mut labels: Vec<Option<String>> = vec![None; map.len()];
                for (k, v) in map {
                    let idx: usize = k.trim().parse().map_err(|_| EncoderError::InvalidConfig {
                        path: path.to_path_buf(),
                        field: "id2label".into(),
                        value: k.clone(),
                        reason: "keys must be label indices 0..n".into(),
                    })?;
                    if idx >= labels.len() {
                        return Err(EncoderError::InvalidConfig {
                            path: path.to_path_buf(),
                            field: "id2label".into(),
                            value: k.clone(),
                            reason: format!("index out of range for {} labels", labels.len()),
                        });
                    }
                    labels[idx] = Some(v.clone());
                }
                Ok(labels
                    .into_iter()
                    .enumerate()
                    .map(|(i, l)| l.unwrap_or_else(|| format!("LABEL_{i}")))
                    .collect())
            }
            _ => {
                let n = self.num_labels.unwrap_or(2);
                // Checked before a name is made for each: a crafted count would allocate
                // gigabytes of names before the classifier's shape could refuse it.
                if n == 0 || n > MAX_LABELS {
                    return Err(EncoderError::InvalidConfig {
                        path: path.to_path_buf(),
                        field: "num_labels".into(),
                        value: n.to_string(),
                        reason: format!("must be between 1 and {MAX_LABELS}"),
                    });
                }
                Ok((0..n).map(|i| format!("LABEL_{i}")).collect())
            }
        }
    }

    /// Decide the model family from `architectures` (preferred) or `model_type`.
    pub fn family(&self, path: &Path) -> Result<Family> {
        let arch = self
            .architectures
            .as_ref()
            .and_then(|a| a.first())
            .map(String::as_str);
        let by_arch = arch.and_then(|a| {
            if a.starts_with("ModernBert") {
                Some(Family::ModernBert)
            } else if a.starts_with("Bert") {
                Some(Family::Bert)
            } else {
                None
            }
        });
        let by_type = match self.model_type.as_deref() {
            Some("bert") => Some(Family::Bert),
            Some("modernbert") => Some(Family::ModernBert),
            _ => None,
        };
        by_arch
            .or(by_type)
            .ok_or_else(|| EncoderError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                found: arch
                    .map(str::to_string)
                    .or_else(|| self.model_type.clone())
                    .unwrap_or_else(|| "<none: no architectures or model_type>".into()),
                supported: format!(
                    "{} (model_type bert, modernbert)",
                    SUPPORTED_CROSS_ENCODERS.join(", ")
                ),
            })
    }

    /// Check that the checkpoint is a sequence-classification model (cross-encoder).
    pub fn require_cross_encoder(&self, path: &Path) -> Result<Family> {
        let family = self.family(path)?;
        if let Some(arch) = self.architectures.as_ref().and_then(|a| a.first()) {
            if !SUPPORTED_CROSS_ENCODERS.contains(&arch.as_str()) {
                return Err(EncoderError::UnsupportedArchitecture {
                    path: path.to_path_buf(),
                    found: arch.clone(),
                    supported: SUPPORTED_CROSS_ENCODERS.join(", "),
                });
            }
        }
        Ok(family)
    }
}

fn default_bert_act() -> String {
    "gelu".into()
}
fn default_bert_max_pos() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_bert_eps() -> f64 {
    1e-12
}
fn default_abs() -> String {
    "absolute".into()
}

/// `BertConfig`.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_bert_act")]
    pub hidden_act: String,
    #[serde(default = "default_bert_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_bert_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_abs")]
    pub position_embedding_type: String,
}

fn default_mb_act() -> String {
    "gelu".into()
}
fn default_mb_max_pos() -> usize {
    8192
}
fn default_mb_eps() -> f64 {
    1e-5
}
fn default_global_every() -> usize {
    3
}
fn default_local_attention() -> usize {
    128
}
fn default_global_theta() -> f64 {
    160_000.0
}
fn default_local_theta() -> f64 {
    10_000.0
}
fn default_pooling() -> String {
    "cls".into()
}

/// `ModernBertConfig`, both the published style and transformers 5's.
#[derive(Debug, Clone, Deserialize)]
pub struct ModernBertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_mb_act")]
    pub hidden_activation: String,
    #[serde(default = "default_mb_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_mb_eps")]
    pub norm_eps: f64,
    #[serde(default)]
    pub norm_bias: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub classifier_bias: bool,
    #[serde(default = "default_mb_act")]
    pub classifier_activation: String,
    #[serde(default = "default_pooling")]
    pub classifier_pooling: String,
    #[serde(default = "default_global_every")]
    pub global_attn_every_n_layers: usize,
    #[serde(default = "default_local_attention")]
    pub local_attention: usize,
    #[serde(default)]
    pub global_rope_theta: Option<f64>,
    #[serde(default)]
    pub local_rope_theta: Option<f64>,
    /// transformers 5: `"full_attention"` / `"sliding_attention"` per layer.
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    /// transformers 5: RoPE settings, per attention type or flat.
    #[serde(default)]
    pub rope_parameters: Option<Box<serde_json::Value>>,
    /// transformers 4's RoPE scaling (`{"rope_type": "linear", "factor": 2.0}`, or `type`
    /// for `rope_type`); only `null` / default RoPE is supported.
    /// (This and `rope_parameters` are boxed: they are rarely present, and a small config
    /// keeps `Model`'s two variants close in size.)
    #[serde(default)]
    pub rope_scaling: Option<Box<serde_json::Value>>,
    /// transformers 5 may also write the window as `sliding_window`.
    #[serde(default)]
    pub sliding_window: Option<usize>,
}

/// How one ModernBERT layer attends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerAttention {
    /// `None` for global attention, `Some(w)` to attend only to keys within `w` positions.
    pub half_window: Option<usize>,
    /// RoPE base for this layer.
    pub rope_theta: f64,
}

impl ModernBertConfig {
    /// Resolve per-layer attention kind and RoPE base from either config style.
    pub fn layer_attention(&self, path: &Path) -> Result<Vec<LayerAttention>> {
        let invalid = |field: &str, value: String, reason: &str| EncoderError::InvalidConfig {
            path: path.to_path_buf(),
            field: field.into(),
            value,
            reason: reason.into(),
        };
        if self.max_position_embeddings == 0 {
            return Err(invalid(
                "max_position_embeddings",
                "0".into(),
                "must be at least 1 (the size of the RoPE position table)",
            ));
        }
        // The RoPE base of one attention kind and the key it was read from: transformers 5
        // lets `rope_parameters` (per kind, then flat) win over the older keys.
        let theta = |kind: &str, legacy_key: &str, legacy: Option<f64>, default: f64| {
            let from_params = self.rope_parameters.as_deref().and_then(|params| {
                let nested = params.get(kind).and_then(|p| p.get("rope_theta"));
                match nested {
                    Some(v) => Some((format!("rope_parameters.{kind}.rope_theta"), v)),
                    None => params
                        .get("rope_theta")
                        .map(|v| ("rope_parameters.rope_theta".to_string(), v)),
                }
            });
            match from_params {
                Some((key, v)) => match v.as_f64() {
                    Some(t) => Ok((key, t)),
                    None => Err(invalid(&key, v.to_string(), "must be a number")),
                },
                None => Ok(match legacy {
                    Some(t) => (legacy_key.to_string(), t),
                    None => (format!("{legacy_key} (default)"), default),
                }),
            }
        };
        let global_theta = theta(
            "full_attention",
            "global_rope_theta",
            self.global_rope_theta,
            default_global_theta(),
        )?;
        let local_theta = theta(
            "sliding_attention",
            "local_rope_theta",
            self.local_rope_theta,
            default_local_theta(),
        )?;
        // Only plain RoPE is implemented; a scaled variant (linear, yarn, ...) would run
        // silently with the wrong frequencies. transformers 4 wrote the scaling as
        // `rope_scaling` and named the kind `type` or `rope_type`; transformers 5 folds
        // `rope_scaling` into `rope_parameters`.
        let mut rope_settings: Vec<(String, &serde_json::Value)> = Vec::new();
        if let Some(params) = self.rope_parameters.as_deref() {
            rope_settings.push(("rope_parameters".into(), params));
            for kind in ["full_attention", "sliding_attention"] {
                if let Some(p) = params.get(kind) {
                    rope_settings.push((format!("rope_parameters.{kind}"), p));
                }
            }
        }
        match self.rope_scaling.as_deref() {
            None | Some(serde_json::Value::Null) => {}
            Some(scaling @ serde_json::Value::Object(_)) => {
                rope_settings.push(("rope_scaling".into(), scaling));
            }
            Some(other) => {
                return Err(invalid(
                    "rope_scaling",
                    other.to_string(),
                    "expected null or an object; only default RoPE is supported",
                ))
            }
        }
        for (name, p) in rope_settings {
            for key in ["rope_type", "type"] {
                match p.get(key) {
                    None | Some(serde_json::Value::Null) => {}
                    Some(serde_json::Value::String(kind)) if kind == "default" => {}
                    Some(kind) => {
                        return Err(invalid(
                            &format!("{name}.{key}"),
                            kind.as_str()
                                .map_or_else(|| kind.to_string(), str::to_string),
                            "only default RoPE is supported (no RoPE scaling)",
                        ))
                    }
                }
            }
        }
        // `sliding_window` (transformers 5) is the half window; `local_attention` the whole.
        // A window wider than the position table equals global attention, and capping it
        // keeps window arithmetic (`i + w`) far from overflow.
        let half_window = self
            .sliding_window
            .unwrap_or(self.local_attention / 2)
            .min(self.max_position_embeddings);
        if self.layer_types.is_none() && self.global_attn_every_n_layers == 0 {
            return Err(invalid(
                "global_attn_every_n_layers",
                "0".into(),
                "must be at least 1",
            ));
        }
        let kinds: Vec<bool> = match &self.layer_types {
            Some(types) => {
                if types.len() != self.num_hidden_layers {
                    return Err(invalid(
                        "layer_types",
                        format!("{} entries", types.len()),
                        &format!("expected one per layer ({})", self.num_hidden_layers),
                    ));
                }
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        "full_attention" => Ok(true),
                        "sliding_attention" => Ok(false),
                        other => Err(invalid(
                            "layer_types",
                            other.to_string(),
                            "expected full_attention or sliding_attention",
                        )),
                    })
                    .collect::<Result<_>>()?
            }
            None => (0..self.num_hidden_layers)
                .map(|i| i % self.global_attn_every_n_layers == 0)
                .collect(),
        };
        // A base of 0, below 0 or not finite gives NaN or infinite frequencies, and every
        // score would be NaN: refuse it here, for the kinds of layer the model has.
        for (used, (key, value)) in [
            (kinds.iter().any(|&g| g), &global_theta),
            (kinds.iter().any(|&g| !g), &local_theta),
        ] {
            if used && !(value.is_finite() && *value > 0.0) {
                return Err(invalid(
                    key,
                    value.to_string(),
                    "the RoPE base must be a finite number above 0",
                ));
            }
        }
        Ok(kinds
            .into_iter()
            .map(|global| {
                if global {
                    LayerAttention {
                        half_window: None,
                        rope_theta: global_theta.1,
                    }
                } else {
                    LayerAttention {
                        half_window: Some(half_window),
                        rope_theta: local_theta.1,
                    }
                }
            })
            .collect())
    }
}

/// A parsed `config.json` together with the path it came from.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Where the config was read from (used in error messages).
    pub path: PathBuf,
    /// The raw JSON, for architecture-specific parsing.
    pub raw: serde_json::Value,
    /// The shared fields.
    pub common: CommonConfig,
}

impl ModelConfig {
    /// Read and parse `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = EncoderError::read_text(path)?;
        Self::from_json_str(&text, path)
    }

    /// Parse config text; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let raw: serde_json::Value =
            serde_json::from_str(text).map_err(|e| EncoderError::malformed(path, e))?;
        if !raw.is_object() {
            return Err(EncoderError::malformed(path, "expected a JSON object"));
        }
        let common: CommonConfig =
            serde_json::from_value(raw.clone()).map_err(|e| EncoderError::malformed(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            raw,
            common,
        })
    }

    /// Parse the architecture-specific part.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.raw.clone()).map_err(|e| EncoderError::malformed(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> ModelConfig {
        ModelConfig::from_json_str(json, Path::new("config.json")).unwrap()
    }

    #[test]
    fn labels_come_from_id2label_length() {
        let c = cfg(r#"{"id2label": {"0": "irrelevant", "2": "sufficient", "1": "partial"}}"#);
        let labels = c.common.labels(&c.path).unwrap();
        assert_eq!(labels, vec!["irrelevant", "partial", "sufficient"]);
    }

    #[test]
    fn labels_default_to_two_without_id2label() {
        let c = cfg(r#"{"model_type": "bert"}"#);
        assert_eq!(c.common.labels(&c.path).unwrap().len(), 2);
        let c = cfg(r#"{"model_type": "bert", "num_labels": 1}"#);
        assert_eq!(c.common.labels(&c.path).unwrap(), vec!["LABEL_0"]);
    }

    #[test]
    fn bad_id2label_key_is_named() {
        let c = cfg(r#"{"id2label": {"zero": "a"}}"#);
        let err = c.common.labels(&c.path).unwrap_err().to_string();
        assert!(err.contains("id2label") && err.contains("zero"), "{err}");
    }

    #[test]
    fn unknown_architecture_lists_supported() {
        let c = cfg(
            r#"{"architectures": ["XLMRobertaForSequenceClassification"], "model_type": "xlm-roberta"}"#,
        );
        let err = c
            .common
            .require_cross_encoder(&c.path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("XLMRobertaForSequenceClassification"), "{err}");
        assert!(err.contains("ModernBertForSequenceClassification"), "{err}");
    }

    #[test]
    fn malformed_json_names_file() {
        let err = ModelConfig::from_json_str("{not json", Path::new("/m/config.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/m/config.json"), "{err}");
    }

    #[test]
    fn modernbert_old_style_layers() {
        let c = cfg(
            r#"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
            "num_hidden_layers": 4, "num_attention_heads": 2, "global_attn_every_n_layers": 3,
            "local_attention": 128, "global_rope_theta": 160000.0, "local_rope_theta": 10000.0}"#,
        );
        let mb: ModernBertConfig = c.parse().unwrap();
        let layers = mb.layer_attention(&c.path).unwrap();
        assert_eq!(layers[0].half_window, None);
        assert_eq!(layers[0].rope_theta, 160000.0);
        assert_eq!(layers[1].half_window, Some(64));
        assert_eq!(layers[1].rope_theta, 10000.0);
        assert_eq!(layers[3].half_window, None);
    }

    #[test]
    fn modernbert_new_style_layers() {
        let c = cfg(
            r#"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
            "num_hidden_layers": 3, "num_attention_heads": 2, "local_attention": 8,
            "layer_types": ["full_attention", "sliding_attention", "full_attention"],
            "rope_parameters": {"full_attention": {"rope_theta": 160000.0, "rope_type": "default"},
                                "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}},
            "dtype": "float32"}"#,
        );
        let mb: ModernBertConfig = c.parse().unwrap();
        let layers = mb.layer_attention(&c.path).unwrap();
        assert_eq!(layers[1].half_window, Some(4));
        assert_eq!(layers[1].rope_theta, 10000.0);
        assert_eq!(layers[2].half_window, None);
        assert_eq!(layers[2].rope_theta, 160000.0);
        assert_eq!(c.common.stored_dtype(), Some("float32"));
    }

    fn modernbert_layers(extra: &str) -> Result<Vec<LayerAttention>> {
        let c = cfg(&format!(
            r#"{{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
            "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 512
            {extra}}}"#
        ));
        let mb: ModernBertConfig = c.parse()?;
        mb.layer_attention(&c.path)
    }

    #[test]
    fn modernbert_scaled_rope_is_rejected() {
        for (params, key, kind) in [
            (
                r#"{"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}"#,
                "rope_parameters.rope_type",
                "linear",
            ),
            (
                r#"{"full_attention": {"rope_type": "default"}, "sliding_attention": {"rope_type": "yarn"}}"#,
                "rope_parameters.sliding_attention.rope_type",
                "yarn",
            ),
            (
                r#"{"type": "dynamic", "factor": 2.0}"#,
                "rope_parameters.type",
                "dynamic",
            ),
        ] {
            let err = modernbert_layers(&format!(r#", "rope_parameters": {params}"#))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("{key} = {kind}")) && err.contains("config.json"),
                "{err}"
            );
        }
    }

    /// transformers 4's `rope_scaling` (transformers 5 folds it into `rope_parameters` and
    /// scales the frequencies) is refused like a scaled `rope_parameters`; null, `{}` and the
    /// default kind are plain RoPE.
    #[test]
    fn modernbert_rope_scaling_is_rejected_unless_default() {
        for (scaling, key, kind) in [
            (
                r#"{"rope_type": "linear", "factor": 2.0}"#,
                "rope_scaling.rope_type",
                "linear",
            ),
            (
                r#"{"type": "linear", "factor": 2.0}"#,
                "rope_scaling.type",
                "linear",
            ),
            (
                r#"{"rope_type": "yarn", "factor": 4.0}"#,
                "rope_scaling.rope_type",
                "yarn",
            ),
            (
                r#"{"type": "dynamic", "factor": 2.0}"#,
                "rope_scaling.type",
                "dynamic",
            ),
            (r#""linear""#, "rope_scaling", "\"linear\""),
        ] {
            let err = modernbert_layers(&format!(r#", "rope_scaling": {scaling}"#)).unwrap_err();
            assert!(matches!(err, EncoderError::InvalidConfig { .. }), "{err}");
            let msg = err.to_string();
            assert!(msg.contains(&format!("{key} = {kind}")), "{scaling}: {msg}");
        }
        for plain in [
            "null",
            "{}",
            r#"{"rope_type": "default"}"#,
            r#"{"type": "default"}"#,
        ] {
            let layers = modernbert_layers(&format!(r#", "rope_scaling": {plain}"#))
                .unwrap_or_else(|e| panic!("{plain}: {e}"));
            assert_eq!(layers[0].rope_theta, 160_000.0, "{plain}");
        }
    }

    /// A RoPE base of 0, below 0 or not a number would make every score NaN: refused at
    /// load, naming the key it was read from.
    #[test]
    fn modernbert_bad_rope_theta_is_named() {
        for (extra, key) in [
            (r#", "global_rope_theta": 0.0"#, "global_rope_theta = 0"),
            (
                r#", "local_rope_theta": -10000.0"#,
                "local_rope_theta = -10000",
            ),
            (
                r#", "global_rope_theta": 1e308, "local_rope_theta": -1e308"#,
                "local_rope_theta = -1",
            ),
            (
                r#", "rope_parameters": {"full_attention": {"rope_theta": 0}}"#,
                "rope_parameters.full_attention.rope_theta = 0",
            ),
            (
                r#", "rope_parameters": {"rope_theta": -1.5}"#,
                "rope_parameters.rope_theta = -1.5",
            ),
            (
                r#", "rope_parameters": {"sliding_attention": {"rope_theta": "10000"}}"#,
                "rope_parameters.sliding_attention.rope_theta = \"10000\"",
            ),
        ] {
            let err = modernbert_layers(extra).unwrap_err();
            assert!(matches!(err, EncoderError::InvalidConfig { .. }), "{err}");
            let msg = err.to_string();
            assert!(
                msg.contains(key) && msg.contains("config.json"),
                "{extra}: {msg}"
            );
        }
        // A base no layer uses is left alone (transformers never computes with it).
        let layers = modernbert_layers(
            r#", "layer_types": ["full_attention", "full_attention"], "local_rope_theta": 0.0"#,
        )
        .unwrap();
        assert!(layers.iter().all(|l| l.half_window.is_none()));
    }

    #[test]
    fn modernbert_zero_positions_is_a_config_error() {
        let err = modernbert_layers(r#", "max_position_embeddings": 0"#).unwrap_err();
        assert!(matches!(err, EncoderError::InvalidConfig { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("max_position_embeddings = 0") && msg.contains("config.json"),
            "{msg}"
        );
    }

    #[test]
    fn modernbert_window_is_capped_and_layer_types_ignore_every_n() {
        // A window wider than the position table is capped there (same attention, no overflow).
        let layers = modernbert_layers(
            r#", "global_attn_every_n_layers": 2, "sliding_window": 18446744073709551615"#,
        )
        .unwrap();
        assert_eq!(layers[1].half_window, Some(512));
        // With layer_types given, transformers ignores global_attn_every_n_layers (even 0).
        let layers = modernbert_layers(
            r#", "global_attn_every_n_layers": 0,
            "layer_types": ["sliding_attention", "full_attention"]"#,
        )
        .unwrap();
        assert_eq!(layers[0].half_window, Some(64));
        assert_eq!(layers[1].half_window, None);
        let err = modernbert_layers(r#", "global_attn_every_n_layers": 0"#).unwrap_err();
        assert!(
            err.to_string().contains("global_attn_every_n_layers"),
            "{err}"
        );
    }
}
