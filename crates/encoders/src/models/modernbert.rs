//! ModernBERT (`ModernBertModel`, `ModernBertForSequenceClassification`) over packed batches.
//!
//! Token embeddings + norm, then pre-norm layers (`x + Attn(attn_norm(x))`,
//! `h + MLP(mlp_norm(h))`; layer 0 has no `attn_norm`) with a fused `Wqkv`, rotary position
//! embeddings whose base differs between global and sliding-window layers, and a GLU MLP.
//! A final norm, then pooling (`cls` or `mean`), the head (dense -> activation -> norm) and
//! the classifier.

use candle_core::{DType, Device, Module, Tensor};

use super::{
    attention, cpu, feed_forward_in_blocks, split_qkv, Activation, LayerNorm, Linear, PackedBatch,
    Pooling,
};
use crate::config::{LayerAttention, ModelConfig, ModernBertConfig};
use crate::error::{EncoderError, Result};
use crate::weights::Weights;

/// Precomputed `cos`/`sin` tables for one RoPE base, `[max_positions, head_dim / 2]`.
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

/// The most positions a RoPE table is built for (ModernBERT uses 8,192).
const MAX_ROPE_POSITIONS: usize = 1 << 20;

impl Rope {
    /// Computed in f32 exactly as transformers does (`inv_freq` then `pos * inv_freq`).
    fn new(
        theta: f64,
        head_dim: usize,
        max_pos: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let half = head_dim / 2;
        let base = theta as f32;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0f32 / base.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        let mut cos = Vec::with_capacity(max_pos * half);
        let mut sin = Vec::with_capacity(max_pos * half);
        for p in 0..max_pos {
            for &f in &inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (max_pos, half), device)?.to_dtype(dtype)?,
            sin: Tensor::from_vec(sin, (max_pos, half), device)?.to_dtype(dtype)?,
        })
    }

    /// The `(cos, sin)` rows of each token's position, `[n, head_dim / 2]` each: gathered once
    /// per forward pass and shared by every layer that uses this table.
    fn select(&self, positions: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            self.cos.index_select(positions, 0)?,
            self.sin.index_select(positions, 0)?,
        ))
    }

    /// Rotate packed `[n, heads, head_dim]` by the rows from [`Rope::select`].
    ///
    /// The rotation runs in the activations' dtype. transformers 5 rotates bf16 activations in
    /// f32 and rounds once; casting q and k to f32 and back here would add about five times
    /// their size in memory traffic per layer, and on the random-init fixtures in bf16 on the
    /// CPU it lowered the largest logit drift only from 3.5e-2 to 3.0e-2 (base) and 8.3e-2 to
    /// 7.5e-2 (large), with the same Kendall tau.
    fn apply(xs: &Tensor, (cos, sin): &(Tensor, Tensor)) -> candle_core::Result<Tensor> {
        let (n, h, d) = xs.dims3()?;
        candle_nn::rotary_emb::rope_thd(&xs.reshape((1, n, h, d))?, cos, sin)?.reshape((n, h, d))
    }
}

struct Layer {
    attn_norm: Option<LayerNorm>,
    wqkv: Linear,
    wo: Linear,
    mlp_norm: LayerNorm,
    wi: Linear,
    mlp_wo: Linear,
    kind: LayerAttention,
    /// Index into `ModernBert::ropes`.
    rope: usize,
}

struct Head {
    dense: Linear,
    act: Activation,
    norm: LayerNorm,
    classifier: Linear,
    pooling: Pooling,
}

/// A ModernBERT encoder, optionally with its sequence-classification head.
pub struct ModernBert {
    tok_embeddings: candle_nn::Embedding,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    final_norm: LayerNorm,
    ropes: Vec<Rope>,
    act: Activation,
    heads: usize,
    head_dim: usize,
    intermediate: usize,
    head: Option<Head>,
    /// Parsed config.
    pub config: ModernBertConfig,
    /// Test hook: treat every layer as global (proves the window matters).
    ignore_window: bool,
    /// Run the fused CPU kernels (f32 on the CPU only).
    cpu_kernels: bool,
}

impl ModernBert {
    /// Load from the checkpoint root; `with_head` loads the head and a `num_labels`-way
    /// classifier.
    pub fn load(cfg: &ModelConfig, w: &Weights, with_head: Option<usize>) -> Result<Self> {
        let config: ModernBertConfig = cfg.parse()?;
        super::check_dims(
            &cfg.path,
            &[
                ("hidden_size", config.hidden_size),
                ("intermediate_size", config.intermediate_size),
                ("vocab_size", config.vocab_size),
                ("num_attention_heads", config.num_attention_heads),
            ],
        )?;
        let h = config.hidden_size;
        if config.num_attention_heads == 0 || !h.is_multiple_of(config.num_attention_heads) {
            return Err(EncoderError::InvalidConfig {
                path: cfg.path.clone(),
                field: "num_attention_heads".into(),
                value: config.num_attention_heads.to_string(),
                reason: format!("must divide hidden_size {h}"),
            });
        }
        let head_dim = h / config.num_attention_heads;
        if !head_dim.is_multiple_of(2) {
            return Err(EncoderError::InvalidConfig {
                path: cfg.path.clone(),
                field: "num_attention_heads".into(),
                value: config.num_attention_heads.to_string(),
                reason: format!(
                    "gives an odd head size {head_dim} (hidden_size {h}); RoPE needs an even one"
                ),
            });
        }
        let act = Activation::parse(&config.hidden_activation, "hidden_activation", &cfg.path)?;
        // ModernBertForSequenceClassification stores the encoder under `model.`; a plain
        // ModernBertModel (embedding checkpoints) stores it at the root.
        let root = if w.contains("model.embeddings.tok_embeddings.weight") {
            w.pp("model")
        } else {
            w.clone()
        };
        super::check_layer_count(
            &root,
            config.num_hidden_layers,
            |i| format!("layers.{i}.attn.Wo.weight"),
            &cfg.path,
        )?;
        // RoPE tables are built for every position: bound them before allocating.
        if config.max_position_embeddings > MAX_ROPE_POSITIONS {
            return Err(EncoderError::InvalidConfig {
                path: cfg.path.clone(),
                field: "max_position_embeddings".into(),
                value: config.max_position_embeddings.to_string(),
                reason: format!("RoPE tables are built for at most {MAX_ROPE_POSITIONS} positions"),
            });
        }
        let kinds = config.layer_attention(&cfg.path)?;
        let eps = config.norm_eps;
        let nb = config.norm_bias;
        let tok_embeddings = candle_nn::Embedding::new(
            root.pp("embeddings")
                .pp("tok_embeddings")
                .get(&[config.vocab_size, h], "weight")?,
            h,
        );
        let emb_norm = LayerNorm::load(&root.pp("embeddings").pp("norm"), h, nb, eps)?;
        let mut thetas: Vec<f64> = Vec::new();
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for (i, kind) in kinds.iter().enumerate() {
            let l = root.pp("layers").pp(i);
            let rope = match thetas.iter().position(|&t| t == kind.rope_theta) {
                Some(r) => r,
                None => {
                    thetas.push(kind.rope_theta);
                    thetas.len() - 1
                }
            };
            layers.push(Layer {
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
                kind: *kind,
                rope,
            });
        }
        let final_norm = LayerNorm::load(&root.pp("final_norm"), h, nb, eps)?;
        let ropes = thetas
            .iter()
            .map(|&t| {
                Rope::new(
                    t,
                    head_dim,
                    config.max_position_embeddings,
                    w.dtype(),
                    w.device(),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let head = match with_head {
            None => None,
            Some(num_labels) => {
                let pooling = match config.classifier_pooling.as_str() {
                    "cls" => Pooling::Cls,
                    "mean" => Pooling::Mean,
                    other => {
                        return Err(EncoderError::InvalidConfig {
                            path: cfg.path.clone(),
                            field: "classifier_pooling".into(),
                            value: other.into(),
                            reason: "supported: cls, mean".into(),
                        })
                    }
                };
                Some(Head {
                    dense: Linear::load(&w.pp("head").pp("dense"), h, h, config.classifier_bias)?,
                    act: Activation::parse(
                        &config.classifier_activation,
                        "classifier_activation",
                        &cfg.path,
                    )?,
                    norm: LayerNorm::load(&w.pp("head").pp("norm"), h, nb, eps)?,
                    classifier: super::load_classifier(w, "classifier", h, num_labels, &cfg.path)?,
                    pooling,
                })
            }
        };
        Ok(Self {
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
            config,
            ignore_window: false,
            cpu_kernels: w.device().is_cpu() && w.dtype() == DType::F32,
        })
    }

    /// Test hook: switch the fused CPU kernels off (or back on where they apply).
    #[doc(hidden)]
    pub fn set_cpu_kernels(&mut self, on: bool) {
        let e = self.tok_embeddings.embeddings();
        self.cpu_kernels = on && e.device().is_cpu() && e.dtype() == DType::F32;
    }

    /// Test hook: run every layer with global attention.
    #[doc(hidden)]
    pub fn set_ignore_window(&mut self, ignore: bool) {
        self.ignore_window = ignore;
    }

    /// Final (normed) hidden states of every token, `[total_tokens, hidden]`.
    pub fn forward_hidden(&self, batch: &PackedBatch) -> Result<Tensor> {
        let fast = self.cpu_kernels;
        let mut xs = self
            .emb_norm
            .apply(&self.tok_embeddings.forward(&batch.input_ids)?, fast)?;
        // The fused CPU kernel reads the tables itself; candle's path gathers them once here.
        let rows = if fast {
            Vec::new()
        } else {
            self.ropes
                .iter()
                .map(|r| r.select(&batch.position_ids))
                .collect::<candle_core::Result<Vec<_>>>()?
        };
        for layer in &self.layers {
            let normed = match &layer.attn_norm {
                Some(n) => n.apply(&xs, fast)?,
                None => xs.clone(),
            };
            let qkv = layer.wqkv.apply(&normed, None, None, fast)?;
            let rope = &self.ropes[layer.rope];
            let window = if self.ignore_window {
                None
            } else {
                layer.kind.half_window
            };
            let ctx = if fast {
                let tables = cpu::RopeTables {
                    cos: &rope.cos,
                    sin: &rope.sin,
                };
                cpu::attention(
                    &qkv,
                    &batch.cu_seqlens,
                    self.heads,
                    self.head_dim,
                    window,
                    Some(tables),
                )?
            } else {
                let (q, k, v) = split_qkv(&qkv, self.heads, self.head_dim)?;
                let q = Rope::apply(&q, &rows[layer.rope])?;
                let k = Rope::apply(&k, &rows[layer.rope])?;
                attention(&q, &k, &v, batch, window)?
            };
            xs = layer.wo.apply(&ctx, Some(&xs), None, fast)?;
            let h = layer.mlp_norm.apply(&xs, fast)?;
            xs = feed_forward_in_blocks(&h, fast, |h, rows| {
                let wi = layer.wi.apply(h, None, None, fast)?;
                let glu = if fast {
                    cpu::glu(&wi, self.intermediate, self.act)?
                } else {
                    let input = wi.narrow(1, 0, self.intermediate)?;
                    let gate = wi.narrow(1, self.intermediate, self.intermediate)?;
                    (self.act.apply(&input)? * gate)?
                };
                let residual = xs.narrow(0, rows.start, rows.len())?;
                layer.mlp_wo.apply(&glu, Some(&residual), None, fast)
            })?;
        }
        Ok(self.final_norm.apply(&xs, fast)?)
    }

    /// Classification logits, `[batch, num_labels]`.
    pub fn forward_logits(&self, batch: &PackedBatch) -> Result<Tensor> {
        let head = self
            .head
            .as_ref()
            .ok_or_else(|| EncoderError::InvalidOption {
                name: "head".into(),
                value: "none".into(),
                reason: "model was loaded without a classification head".into(),
            })?;
        let hidden = self.forward_hidden(batch)?;
        let pooled = head.pooling.apply(batch, &hidden)?;
        let x = head
            .norm
            .forward(&head.act.apply(&head.dense.forward(&pooled)?)?)?;
        Ok(head.classifier.forward(&x)?)
    }
}
