//! ModernBERT (`ModernBertModel`, `ModernBertForSequenceClassification`) over packed batches.
//!
//! Token embeddings + norm, then pre-norm layers (`x + Attn(attn_norm(x))`,
//! `h + MLP(mlp_norm(h))`; layer 0 has no `attn_norm`) with a fused `Wqkv`, rotary position
//! embeddings whose base differs between global and sliding-window layers, and a GLU MLP.
//! A final norm, then pooling (`cls` or `mean`), the head (dense -> activation -> norm) and
//! the classifier.
//!
//! Both config styles are read: the published checkpoints' `global_attn_every_n_layers` +
//! `global_rope_theta` / `local_rope_theta`, and transformers 5's `layer_types` +
//! `rope_parameters`.

use std::path::Path;

use candle_core::{DType, Tensor};
use serde::Deserialize;

use super::attention::AttentionSpec;
use super::backend::Backend;
use super::layers::{
    check_dims, check_layer_count, encoder_root, feed_forward_in_blocks, head_size,
    load_classifier, Activation, Dense, DenseNorm, Embedding, LayerNorm, Linear, Rope,
    MAX_ROPE_POSITIONS,
};
use super::packed::PackedBatch;
use super::{Architecture, InputLimits, LoadContext, LoadModel, Model, Output, Pooling, Task};
use crate::error::{EncoderError, Result};
use crate::weights::Weights;

type CResult<T> = candle_core::Result<T>;

/// The registry entry.
pub(crate) const ARCHITECTURE: Architecture = Architecture::new::<ModernBertArchitecture>(
    "modernbert",
    &["ModernBertForSequenceClassification"],
    &["modernbert"],
    Task::Classify,
);

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

/// One pre-norm layer.
struct ModernBertLayer<B: Backend> {
    attn_norm: Option<LayerNorm<B>>,
    wqkv: Linear<B>,
    wo: Linear<B>,
    mlp_norm: LayerNorm<B>,
    wi: Linear<B>,
    mlp_wo: Linear<B>,
    half_window: Option<usize>,
    /// Index into `ModernBert::ropes`.
    rope: usize,
}

impl<B: Backend> ModernBertLayer<B> {
    fn load(
        l: &Weights,
        i: usize,
        config: &ModernBertConfig,
        kind: &LayerAttention,
        rope: usize,
    ) -> Result<Self> {
        let (h, eps, nb) = (config.hidden_size, config.norm_eps, config.norm_bias);
        Ok(Self {
            attn_norm: if i == 0 {
                None
            } else {
                Some(LayerNorm::load(&l.pp("attn_norm"), h, nb, eps)?)
            },
            wqkv: Linear::load(&l.pp("attn").pp("Wqkv"), h, 3 * h, config.attention_bias)?,
            wo: Linear::load(&l.pp("attn").pp("Wo"), h, h, config.attention_bias)?,
            mlp_norm: LayerNorm::load(&l.pp("mlp_norm"), h, nb, eps)?,
            wi: Linear::load(
                &l.pp("mlp").pp("Wi"),
                h,
                2 * config.intermediate_size,
                config.mlp_bias,
            )?,
            mlp_wo: Linear::load(
                &l.pp("mlp").pp("Wo"),
                config.intermediate_size,
                h,
                config.mlp_bias,
            )?,
            half_window: kind.half_window,
            rope,
        })
    }

    fn forward(&self, xs: &Tensor, batch: &PackedBatch, model: &ModernBert<B>) -> CResult<Tensor> {
        let normed = match &self.attn_norm {
            Some(n) => n.forward(xs)?,
            None => xs.clone(),
        };
        let qkv = self.wqkv.forward(&normed, None, None)?;
        let spec = AttentionSpec {
            heads: model.heads,
            kv_heads: model.heads,
            head_dim: model.head_dim,
            half_window: self.half_window,
            causal: false,
            rope: Some(&model.ropes[self.rope]),
            qk_norm: None,
            rounds_each_op: false,
        };
        let ctx = B::attention(&qkv, batch, &spec)?;
        let xs = self.wo.forward(&ctx, Some(xs), None)?;
        let h = self.mlp_norm.forward(&xs)?;
        feed_forward_in_blocks::<B>(&h, |h, rows| {
            let wi = self.wi.forward(h, None, None)?;
            let glu = B::glu(&wi, model.intermediate, model.act)?;
            let residual = xs.narrow(0, rows.start, rows.len())?;
            self.mlp_wo.forward(&glu, Some(&residual), None)
        })
    }
}

/// ModernBERT's classification head.
struct Head {
    dense: Dense,
    act: Activation,
    norm: DenseNorm,
    classifier: Dense,
    pooling: Pooling,
}

/// A ModernBERT model with its head (a classifier, or an embedding model's pooling).
struct ModernBert<B: Backend> {
    tok_embeddings: Embedding<B>,
    emb_norm: LayerNorm<B>,
    layers: Vec<ModernBertLayer<B>>,
    final_norm: LayerNorm<B>,
    ropes: Vec<Rope>,
    act: Activation,
    heads: usize,
    head_dim: usize,
    intermediate: usize,
    head: Result<Head, Pooling>,
    limits: InputLimits,
}

struct ModernBertArchitecture;

impl LoadModel for ModernBertArchitecture {
    fn load<B: Backend>(ctx: &LoadContext<'_>) -> Result<Box<dyn Model>> {
        let path = &ctx.config.path;
        let config: ModernBertConfig = ctx.config.parse()?;
        check_dims(
            path,
            &[
                ("hidden_size", config.hidden_size),
                ("intermediate_size", config.intermediate_size),
                ("vocab_size", config.vocab_size),
                ("num_attention_heads", config.num_attention_heads),
            ],
        )?;
        let h = config.hidden_size;
        let head_dim = head_size(path, h, config.num_attention_heads, true)?;
        let act = Activation::parse(&config.hidden_activation, "hidden_activation", path)?;
        // ModernBertForSequenceClassification stores the encoder under `model.`; a plain
        // ModernBertModel (embedding checkpoints) stores it at the root.
        let w = ctx.weights;
        let root = encoder_root(w, "model", "embeddings.tok_embeddings.weight");
        check_layer_count(
            &root,
            config.num_hidden_layers,
            |i| format!("layers.{i}.attn.Wo.weight"),
            path,
        )?;
        // RoPE tables are built for every position: bound them before allocating.
        if config.max_position_embeddings > MAX_ROPE_POSITIONS {
            return Err(EncoderError::InvalidConfig {
                path: path.clone(),
                field: "max_position_embeddings".into(),
                value: config.max_position_embeddings.to_string(),
                reason: format!("RoPE tables are built for at most {MAX_ROPE_POSITIONS} positions"),
            });
        }
        let kinds = config.layer_attention(path)?;
        let (eps, nb) = (config.norm_eps, config.norm_bias);
        let emb = root.pp("embeddings");
        let tok_embeddings = Embedding::<B>::load(&emb.pp("tok_embeddings"), config.vocab_size, h)?;
        let emb_norm = LayerNorm::load(&emb.pp("norm"), h, nb, eps)?;
        let mut thetas: Vec<f64> = Vec::new();
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for (i, kind) in kinds.iter().enumerate() {
            let rope = match thetas.iter().position(|&t| t == kind.rope_theta) {
                Some(r) => r,
                None => {
                    thetas.push(kind.rope_theta);
                    thetas.len() - 1
                }
            };
            layers.push(ModernBertLayer::load(
                &root.pp("layers").pp(i),
                i,
                &config,
                kind,
                rope,
            )?);
        }
        let final_norm = LayerNorm::load(&root.pp("final_norm"), h, nb, eps)?;
        let ropes = thetas
            .iter()
            .map(|&t| {
                Rope::new(
                    t,
                    head_dim,
                    config.max_position_embeddings,
                    ctx.dtype,
                    ctx.device,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let head = match ctx.output {
            Output::Classifier { num_labels } => {
                let pooling = match config.classifier_pooling.as_str() {
                    "cls" => Pooling::Cls,
                    "mean" => Pooling::Mean,
                    other => {
                        return Err(EncoderError::InvalidConfig {
                            path: path.clone(),
                            field: "classifier_pooling".into(),
                            value: other.into(),
                            reason: "supported: cls, mean".into(),
                        })
                    }
                };
                Ok(Head {
                    dense: Dense::load::<B>(
                        &w.pp("head").pp("dense"),
                        h,
                        h,
                        config.classifier_bias,
                    )?,
                    act: Activation::parse(
                        &config.classifier_activation,
                        "classifier_activation",
                        path,
                    )?,
                    norm: DenseNorm::load::<B>(&w.pp("head").pp("norm"), h, nb, eps)?,
                    classifier: load_classifier::<B>(w, "classifier", h, *num_labels, path)?,
                    pooling,
                })
            }
            Output::Embedding(pooling) => Err(*pooling),
            Output::TokenLogitDifference { .. } => {
                return Err(ctx.unsupported_output("ModernBertForSequenceClassification"))
            }
        };
        Ok(Box::new(ModernBert {
            tok_embeddings,
            emb_norm,
            layers,
            final_norm,
            ropes,
            act,
            heads: config.num_attention_heads,
            head_dim,
            intermediate: config.intermediate_size,
            head,
            limits: InputLimits {
                vocab_size: config.vocab_size,
                max_positions: config.max_position_embeddings,
                type_vocab_size: None,
            },
        }))
    }
}

impl<B: Backend> ModernBert<B> {
    /// Final (normed) hidden states of every token, `[total_tokens, hidden]`.
    fn hidden(&self, batch: &PackedBatch) -> CResult<Tensor> {
        let mut xs = self
            .emb_norm
            .forward(&self.tok_embeddings.forward(&batch.input_ids)?)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, batch, self)?;
        }
        self.final_norm.forward(&xs)
    }
}

impl<B: Backend> Model for ModernBert<B> {
    fn forward(&self, batch: &PackedBatch) -> Result<Tensor> {
        let hidden = self.hidden(batch)?;
        Ok(match &self.head {
            Ok(head) => {
                let pooled = head.pooling.apply(batch, &hidden)?;
                let x = head
                    .norm
                    .forward(&head.act.apply(&head.dense.forward(&pooled)?)?)?;
                head.classifier.forward(&x)?
            }
            Err(pooling) => pooling.apply(batch, &hidden)?.to_dtype(DType::F32)?,
        })
    }

    fn limits(&self) -> InputLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    fn cfg(json: &str) -> ModelConfig {
        ModelConfig::from_json_str(json, Path::new("config.json")).unwrap()
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
