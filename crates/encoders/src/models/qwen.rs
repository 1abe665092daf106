//! Qwen3 and Qwen2 causal language models as rerankers (`Qwen3ForCausalLM`, e.g.
//! Qwen/Qwen3-Reranker-0.6B / 4B / 8B; `Qwen2ForCausalLM`, e.g. mixedbread-ai's
//! mxbai-rerank-v2), scored as sentence-transformers 6 scores them: the prompt's last token's
//! `logit(true token) - logit(false token)`.
//!
//! Pre-norm decoder layers: `h + o_proj(attn(RMSNorm(h)))`, `h + down(silu(gate(x)) * up(x))`
//! with `x = RMSNorm(h)`. Attention is causal, with grouped key/value heads and rotary
//! positions (rotate-half); Qwen3 normalises each query and key head (RMSNorm over the head)
//! before the rotation, Qwen2 has biases on the query/key/value projections instead. Only the
//! last token of each sequence goes through the final norm, and only the two rows of the
//! output projection that the score reads are kept (the embedding table's rows when the
//! weights are tied): the vocabulary-wide projection is never computed.

use candle_core::{DType, Tensor};
use serde::Deserialize;

use super::attention::{AttentionSpec, QkNorm};
use super::backend::Backend;
use super::layers::{
    check_dims, check_layer_count, encoder_root, feed_forward_in_blocks, Activation, Dense,
    Embedding, Linear, RmsNorm, Rope, MAX_ROPE_POSITIONS,
};
use super::packed::PackedBatch;
use super::{Architecture, InputLimits, LoadContext, LoadModel, Model, Output, Task};
use crate::error::{EncoderError, Result};
use crate::weights::Weights;

type CResult<T> = candle_core::Result<T>;

/// The registry entry of Qwen3.
pub(crate) const QWEN3: Architecture = Architecture::new::<QwenArchitecture<true>>(
    "qwen3",
    &["Qwen3ForCausalLM"],
    &["qwen3"],
    Task::CausalLm,
);

/// The registry entry of Qwen2 (and Qwen2.5).
pub(crate) const QWEN2: Architecture = Architecture::new::<QwenArchitecture<false>>(
    "qwen2",
    &["Qwen2ForCausalLM"],
    &["qwen2"],
    Task::CausalLm,
);

fn default_act() -> String {
    "silu".into()
}
fn default_max_pos() -> usize {
    32_768
}
fn default_eps() -> f64 {
    1e-6
}

/// `Qwen3Config` / `Qwen2Config`, in the transformers 4 (`rope_theta`, `use_sliding_window`)
/// and 5 (`rope_parameters`, `layer_types`) styles.
#[derive(Debug, Clone, Deserialize)]
struct QwenConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    use_sliding_window: bool,
    #[serde(default)]
    sliding_window: Option<usize>,
    #[serde(default)]
    max_window_layers: Option<usize>,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
}

impl QwenConfig {
    /// The RoPE base: `rope_parameters.rope_theta` (transformers 5), else `rope_theta`, else
    /// transformers' default of 10,000. Scaled RoPE variants are refused.
    fn rope_theta(&self, path: &std::path::Path) -> Result<f64> {
        let invalid = |field: &str, value: String, reason: &str| EncoderError::InvalidConfig {
            path: path.to_path_buf(),
            field: field.into(),
            value,
            reason: reason.into(),
        };
        for (name, settings) in [
            ("rope_parameters", &self.rope_parameters),
            ("rope_scaling", &self.rope_scaling),
        ] {
            let Some(settings) = settings else { continue };
            for key in ["rope_type", "type"] {
                match settings.get(key) {
                    None | Some(serde_json::Value::Null) => {}
                    Some(serde_json::Value::String(kind)) if kind == "default" => {}
                    Some(kind) => {
                        return Err(invalid(
                            &format!("{name}.{key}"),
                            kind.to_string(),
                            "only default RoPE is supported (no RoPE scaling)",
                        ))
                    }
                }
            }
        }
        let theta = match self
            .rope_parameters
            .as_ref()
            .and_then(|p| p.get("rope_theta"))
        {
            Some(v) => v.as_f64().ok_or_else(|| {
                invalid(
                    "rope_parameters.rope_theta",
                    v.to_string(),
                    "must be a number",
                )
            })?,
            None => self.rope_theta.unwrap_or(10_000.0),
        };
        if !(theta.is_finite() && theta > 0.0) {
            return Err(invalid(
                "rope_theta",
                theta.to_string(),
                "the RoPE base must be a finite number above 0",
            ));
        }
        Ok(theta)
    }

    /// The window of each layer (`None`: full causal attention), as `max distance` between a
    /// query and the keys it sees: transformers shows a query the `sliding_window` keys up to
    /// and including itself.
    fn windows(&self, path: &std::path::Path) -> Result<Vec<Option<usize>>> {
        let invalid = |field: &str, value: String, reason: String| EncoderError::InvalidConfig {
            path: path.to_path_buf(),
            field: field.into(),
            value,
            reason,
        };
        let sliding: Vec<bool> = match &self.layer_types {
            Some(types) => {
                if types.len() != self.num_hidden_layers {
                    return Err(invalid(
                        "layer_types",
                        format!("{} entries", types.len()),
                        format!("expected one per layer ({})", self.num_hidden_layers),
                    ));
                }
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        "full_attention" => Ok(false),
                        "sliding_attention" => Ok(true),
                        other => Err(invalid(
                            "layer_types",
                            other.into(),
                            "expected full_attention or sliding_attention".into(),
                        )),
                    })
                    .collect::<Result<_>>()?
            }
            None => {
                let from = self.max_window_layers.unwrap_or(self.num_hidden_layers);
                (0..self.num_hidden_layers)
                    .map(|i| self.use_sliding_window && i >= from)
                    .collect()
            }
        };
        if !sliding.iter().any(|&s| s) {
            return Ok(vec![None; sliding.len()]);
        }
        let window = match self.sliding_window {
            Some(w) if w >= 1 => w,
            other => {
                return Err(invalid(
                    "sliding_window",
                    format!("{other:?}"),
                    "sliding-window layers need a window of at least 1".into(),
                ))
            }
        };
        Ok(sliding
            .into_iter()
            .map(|s| s.then_some(window - 1))
            .collect())
    }
}

/// One decoder layer.
struct QwenLayer<B: Backend> {
    input_norm: RmsNorm<B>,
    /// `[q; k; v]` projections fused.
    qkv: Linear<B>,
    /// Qwen3's per-head query and key norms.
    qk_norm: Option<(RmsNorm<B>, RmsNorm<B>)>,
    o_proj: Linear<B>,
    post_norm: RmsNorm<B>,
    /// `[gate; up]` projections fused.
    gate_up: Linear<B>,
    down: Linear<B>,
    half_window: Option<usize>,
}

/// The shapes every layer shares.
struct Shape {
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    intermediate: usize,
    eps: f64,
}

impl<B: Backend> QwenLayer<B> {
    fn load(
        l: &Weights,
        s: &Shape,
        qwen3: bool,
        attention_bias: bool,
        half_window: Option<usize>,
    ) -> Result<Self> {
        let a = l.pp("self_attn");
        let (q_out, kv_out) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
        // Qwen2 always has biases on q/k/v (and none on o); Qwen3 follows attention_bias.
        let qkv_bias = if qwen3 { attention_bias } else { true };
        let o_bias = qwen3 && attention_bias;
        let m = l.pp("mlp");
        Ok(Self {
            input_norm: RmsNorm::load(&l.pp("input_layernorm"), s.hidden, s.eps)?,
            qkv: Linear::load_fused(
                &[
                    (a.pp("q_proj"), q_out),
                    (a.pp("k_proj"), kv_out),
                    (a.pp("v_proj"), kv_out),
                ],
                s.hidden,
                qkv_bias,
            )?,
            qk_norm: if qwen3 {
                Some((
                    RmsNorm::load(&a.pp("q_norm"), s.head_dim, s.eps)?,
                    RmsNorm::load(&a.pp("k_norm"), s.head_dim, s.eps)?,
                ))
            } else {
                None
            },
            o_proj: Linear::load(&a.pp("o_proj"), q_out, s.hidden, o_bias)?,
            post_norm: RmsNorm::load(&l.pp("post_attention_layernorm"), s.hidden, s.eps)?,
            gate_up: Linear::load_fused(
                &[
                    (m.pp("gate_proj"), s.intermediate),
                    (m.pp("up_proj"), s.intermediate),
                ],
                s.hidden,
                false,
            )?,
            down: Linear::load(&m.pp("down_proj"), s.intermediate, s.hidden, false)?,
            half_window,
        })
    }

    fn forward(&self, xs: &Tensor, batch: &PackedBatch, model: &Qwen<B>) -> CResult<Tensor> {
        let s = &model.shape;
        let h = self.input_norm.forward(xs)?;
        let qkv = self.qkv.forward(&h, None, None)?;
        let spec = AttentionSpec {
            heads: s.heads,
            kv_heads: s.kv_heads,
            head_dim: s.head_dim,
            half_window: self.half_window,
            causal: true,
            rope: Some(&model.rope),
            qk_norm: self.qk_norm.as_ref().map(|(q, k)| QkNorm {
                q: &q.weight,
                k: &k.weight,
                eps: q.eps,
            }),
            rounds_each_op: true,
        };
        let ctx = B::attention(&qkv, batch, &spec)?;
        let xs = self.o_proj.forward(&ctx, Some(xs), None)?;
        let h = self.post_norm.forward(&xs)?;
        feed_forward_in_blocks::<B>(&h, |h, rows| {
            let gate_up = self.gate_up.forward(h, None, None)?;
            let act = B::glu(&gate_up, s.intermediate, model.act)?;
            let residual = xs.narrow(0, rows.start, rows.len())?;
            self.down.forward(&act, Some(&residual), None)
        })
    }
}

/// A Qwen causal language model with its two-token score.
struct Qwen<B: Backend> {
    embed: Embedding<B>,
    layers: Vec<QwenLayer<B>>,
    norm: RmsNorm<B>,
    rope: Rope,
    act: Activation,
    shape: Shape,
    /// The output projection's rows of the true token and (when there is one) the false token.
    score_rows: Dense,
    has_false: bool,
    limits: InputLimits,
}

/// Loads Qwen3 (`QWEN3 = true`) or Qwen2.
struct QwenArchitecture<const QWEN3: bool>;

impl<const QWEN3: bool> LoadModel for QwenArchitecture<QWEN3> {
    fn load<B: Backend>(ctx: &LoadContext<'_>) -> Result<Box<dyn Model>> {
        let name = if QWEN3 {
            "Qwen3ForCausalLM"
        } else {
            "Qwen2ForCausalLM"
        };
        let Output::TokenLogitDifference { true_id, false_id } = *ctx.output else {
            return Err(ctx.unsupported_output(name));
        };
        let path = &ctx.config.path;
        let config: QwenConfig = ctx.config.parse()?;
        let heads = config.num_attention_heads;
        let kv_heads = config.num_key_value_heads.unwrap_or(heads);
        // Qwen3Config's default head size is 128; Qwen2 derives it from the hidden size.
        let head_dim = match (QWEN3, config.head_dim) {
            (_, Some(d)) => d,
            (true, None) => 128,
            (false, None) => config.hidden_size / heads.max(1),
        };
        check_dims(
            path,
            &[
                ("hidden_size", config.hidden_size),
                ("intermediate_size", config.intermediate_size),
                ("vocab_size", config.vocab_size),
                ("num_attention_heads", heads),
                ("num_key_value_heads", kv_heads),
                ("head_dim", head_dim),
            ],
        )?;
        if !heads.is_multiple_of(kv_heads) {
            return Err(EncoderError::InvalidConfig {
                path: path.clone(),
                field: "num_key_value_heads".into(),
                value: kv_heads.to_string(),
                reason: format!("must divide num_attention_heads = {heads}"),
            });
        }
        if !head_dim.is_multiple_of(2) {
            return Err(EncoderError::InvalidConfig {
                path: path.clone(),
                field: "head_dim".into(),
                value: head_dim.to_string(),
                reason: "RoPE needs an even head size".into(),
            });
        }
        if config.max_position_embeddings == 0
            || config.max_position_embeddings > MAX_ROPE_POSITIONS
        {
            return Err(EncoderError::InvalidConfig {
                path: path.clone(),
                field: "max_position_embeddings".into(),
                value: config.max_position_embeddings.to_string(),
                reason: format!("RoPE tables are built for 1 to {MAX_ROPE_POSITIONS} positions"),
            });
        }
        for (field, id) in [("true token", Some(true_id)), ("false token", false_id)] {
            if let Some(id) = id.filter(|&id| id as usize >= config.vocab_size) {
                return Err(EncoderError::InvalidConfig {
                    path: path.clone(),
                    field: "vocab_size".into(),
                    value: config.vocab_size.to_string(),
                    reason: format!("the {field} id {id} is outside the vocabulary"),
                });
            }
        }
        let act = Activation::parse(&config.hidden_act, "hidden_act", path)?;
        let theta = config.rope_theta(path)?;
        let windows = config.windows(path)?;
        let w = ctx.weights;
        let root = encoder_root(w, "model", "embed_tokens.weight");
        check_layer_count(
            &root,
            config.num_hidden_layers,
            |i| format!("layers.{i}.self_attn.o_proj.weight"),
            path,
        )?;
        let shape = Shape {
            hidden: config.hidden_size,
            heads,
            kv_heads,
            head_dim,
            intermediate: config.intermediate_size,
            eps: config.rms_norm_eps,
        };
        let embed = Embedding::<B>::load(
            &root.pp("embed_tokens"),
            config.vocab_size,
            config.hidden_size,
        )?;
        let layers = windows
            .iter()
            .enumerate()
            .map(|(i, &window)| {
                QwenLayer::load(
                    &root.pp("layers").pp(i),
                    &shape,
                    QWEN3,
                    config.attention_bias,
                    window,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(&root.pp("norm"), config.hidden_size, config.rms_norm_eps)?;
        let ids: Vec<u32> = std::iter::once(true_id).chain(false_id).collect();
        let ids_tensor = Tensor::new(ids.as_slice(), ctx.device)?;
        // A tied model has no lm_head.weight: its output projection is the embedding table.
        let rows = if config.tie_word_embeddings || !w.contains("lm_head.weight") {
            if !config.tie_word_embeddings {
                tracing::warn!(
                    config = %path.display(),
                    "no lm_head.weight in the checkpoint: scoring with the embedding table, as a tied model"
                );
            }
            embed.table().index_select(&ids_tensor, 0)?
        } else {
            w.pp("lm_head")
                .get(&[config.vocab_size, config.hidden_size], "weight")?
                .index_select(&ids_tensor, 0)?
        };
        let rope = Rope::new(
            theta,
            head_dim,
            config.max_position_embeddings,
            ctx.dtype,
            ctx.device,
        )?;
        Ok(Box::new(Qwen {
            embed,
            layers,
            norm,
            rope,
            act,
            shape,
            score_rows: Dense::new::<B>(rows, None)?,
            has_false: false_id.is_some(),
            limits: InputLimits {
                vocab_size: config.vocab_size,
                max_positions: config.max_position_embeddings,
                type_vocab_size: None,
            },
        }))
    }
}

impl<B: Backend> Model for Qwen<B> {
    fn forward(&self, batch: &PackedBatch) -> Result<Tensor> {
        let mut xs = self.embed.forward(&batch.input_ids)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, batch, self)?;
        }
        let last = self.norm.forward(&batch.last_tokens(&xs)?)?;
        let logits = self.score_rows.forward(&last)?.to_dtype(DType::F32)?; // [batch, 1 or 2]
        let yes = logits.narrow(1, 0, 1)?;
        Ok(if self.has_false {
            (yes - logits.narrow(1, 1, 1)?)?
        } else {
            yes
        })
    }

    fn limits(&self) -> InputLimits {
        self.limits
    }
}
