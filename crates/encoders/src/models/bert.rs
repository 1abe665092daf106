//! BERT (`BertModel`, `BertForSequenceClassification`) over packed batches.
//!
//! Post-LN encoder: embeddings (word + absolute position + token type, LayerNorm), then per
//! layer `LN(x + Attn(x))`, `LN(h + FFN(h))`. The classification head is the pooler
//! (dense + tanh on `[CLS]`) followed by the classifier.

use candle_core::{DType, Module, Tensor};

use super::{
    attention, cpu, feed_forward_in_blocks, split_qkv, Activation, LayerNorm, Linear, PackedBatch,
};
use crate::config::{BertConfig, ModelConfig};
use crate::error::{EncoderError, Result};
use crate::weights::Weights;

struct Embeddings {
    word: candle_nn::Embedding,
    position: candle_nn::Embedding,
    token_type: candle_nn::Embedding,
    norm: LayerNorm,
}

struct Layer {
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

/// A BERT encoder, optionally with its sequence-classification head.
pub struct Bert {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    act: Activation,
    heads: usize,
    head_dim: usize,
    head: Option<(Linear, Linear)>,
    /// Parsed config.
    pub config: BertConfig,
    /// Run the fused CPU kernels (f32 on the CPU only).
    cpu_kernels: bool,
}

fn embedding(w: &Weights, n: usize, dim: usize) -> Result<candle_nn::Embedding> {
    Ok(candle_nn::Embedding::new(w.get(&[n, dim], "weight")?, dim))
}

/// Fuse the separate query/key/value projections into one matmul.
fn fused_qkv(w: &Weights, hidden: usize) -> Result<Linear> {
    let parts = ["query", "key", "value"]
        .iter()
        .map(|p| Linear::load(&w.pp(p), hidden, hidden, true))
        .collect::<Result<Vec<_>>>()?;
    let weight = Tensor::cat(&[&parts[0].weight, &parts[1].weight, &parts[2].weight], 0)?;
    let bias = match (&parts[0].bias, &parts[1].bias, &parts[2].bias) {
        (Some(a), Some(b), Some(c)) => Some(Tensor::cat(&[a, b, c], 0)?),
        _ => None,
    };
    Ok(Linear { weight, bias })
}

impl Bert {
    /// Load the encoder from `w` (the checkpoint root). `with_head` loads the pooler and a
    /// `num_labels`-way classifier.
    pub fn load(cfg: &ModelConfig, w: &Weights, with_head: Option<usize>) -> Result<Self> {
        let config: BertConfig = cfg.parse()?;
        if config.position_embedding_type != "absolute" {
            return Err(EncoderError::InvalidConfig {
                path: cfg.path.clone(),
                field: "position_embedding_type".into(),
                value: config.position_embedding_type.clone(),
                reason: "only absolute position embeddings are supported".into(),
            });
        }
        super::check_dims(
            &cfg.path,
            &[
                ("hidden_size", config.hidden_size),
                ("intermediate_size", config.intermediate_size),
                ("vocab_size", config.vocab_size),
                ("type_vocab_size", config.type_vocab_size),
                ("num_attention_heads", config.num_attention_heads),
            ],
        )?;
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(EncoderError::InvalidConfig {
                path: cfg.path.clone(),
                field: "num_attention_heads".into(),
                value: config.num_attention_heads.to_string(),
                reason: format!("must divide hidden_size {}", config.hidden_size),
            });
        }
        if config.max_position_embeddings == 0 {
            return Err(EncoderError::InvalidConfig {
                path: cfg.path.clone(),
                field: "max_position_embeddings".into(),
                value: "0".into(),
                reason: "must be at least 1 (the rows of the position embedding table)".into(),
            });
        }
        let act = Activation::parse(&config.hidden_act, "hidden_act", &cfg.path)?;
        // BertForSequenceClassification stores the encoder under `bert.`, BertModel at the root.
        let root = if w.contains("bert.embeddings.word_embeddings.weight") {
            w.pp("bert")
        } else {
            w.clone()
        };
        super::check_layer_count(
            &root,
            config.num_hidden_layers,
            |i| format!("encoder.layer.{i}.attention.output.dense.weight"),
            &cfg.path,
        )?;
        let h = config.hidden_size;
        let e = root.pp("embeddings");
        let embeddings = Embeddings {
            word: embedding(&e.pp("word_embeddings"), config.vocab_size, h)?,
            position: embedding(
                &e.pp("position_embeddings"),
                config.max_position_embeddings,
                h,
            )?,
            token_type: embedding(&e.pp("token_type_embeddings"), config.type_vocab_size, h)?,
            norm: LayerNorm::load(&e.pp("LayerNorm"), h, true, config.layer_norm_eps)?,
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let l = root.pp("encoder").pp("layer").pp(i);
            let a = l.pp("attention");
            layers.push(Layer {
                qkv: fused_qkv(&a.pp("self"), h)?,
                attn_out: Linear::load(&a.pp("output").pp("dense"), h, h, true)?,
                attn_norm: LayerNorm::load(
                    &a.pp("output").pp("LayerNorm"),
                    h,
                    true,
                    config.layer_norm_eps,
                )?,
                intermediate: Linear::load(
                    &l.pp("intermediate").pp("dense"),
                    h,
                    config.intermediate_size,
                    true,
                )?,
                output: Linear::load(
                    &l.pp("output").pp("dense"),
                    config.intermediate_size,
                    h,
                    true,
                )?,
                out_norm: LayerNorm::load(
                    &l.pp("output").pp("LayerNorm"),
                    h,
                    true,
                    config.layer_norm_eps,
                )?,
            });
        }
        let head = match with_head {
            None => None,
            Some(num_labels) => {
                let pooler = Linear::load(&root.pp("pooler").pp("dense"), h, h, true)?;
                let classifier = super::load_classifier(w, "classifier", h, num_labels, &cfg.path)?;
                Some((pooler, classifier))
            }
        };
        Ok(Self {
            embeddings,
            layers,
            act,
            heads: config.num_attention_heads,
            head_dim: h / config.num_attention_heads,
            head,
            config,
            cpu_kernels: w.device().is_cpu() && w.dtype() == DType::F32,
        })
    }

    /// Test hook: switch the fused CPU kernels off (or back on where they apply).
    #[doc(hidden)]
    pub fn set_cpu_kernels(&mut self, on: bool) {
        let eligible = self.embeddings.word.embeddings().device().is_cpu()
            && self.embeddings.word.embeddings().dtype() == DType::F32;
        self.cpu_kernels = on && eligible;
    }

    /// Final hidden states of every token, `[total_tokens, hidden]`.
    pub fn forward_hidden(&self, batch: &PackedBatch) -> Result<Tensor> {
        let e = &self.embeddings;
        let mut xs = e
            .word
            .forward(&batch.input_ids)?
            .add(&e.position.forward(&batch.position_ids)?)?
            .add(&e.token_type.forward(&batch.token_type_ids)?)?;
        let fast = self.cpu_kernels;
        xs = e.norm.apply(&xs, fast)?;
        for layer in &self.layers {
            let qkv = layer.qkv.apply(&xs, None, None, fast)?;
            let ctx = if fast {
                cpu::attention(
                    &qkv,
                    &batch.cu_seqlens,
                    self.heads,
                    self.head_dim,
                    None,
                    None,
                )?
            } else {
                let (q, k, v) = split_qkv(&qkv, self.heads, self.head_dim)?;
                attention(&q, &k, &v, batch, None)?
            };
            let attn = layer.attn_out.apply(&ctx, Some(&xs), None, fast)?;
            let h = layer.attn_norm.apply(&attn, fast)?;
            let out = feed_forward_in_blocks(&h, fast, |h, _| {
                let inter = layer.intermediate.apply(h, None, Some(self.act), fast)?;
                layer.output.apply(&inter, Some(h), None, fast)
            })?;
            xs = layer.out_norm.apply(&out, fast)?;
        }
        Ok(xs)
    }

    /// Classification logits, `[batch, num_labels]`.
    pub fn forward_logits(&self, batch: &PackedBatch) -> Result<Tensor> {
        let (pooler, classifier) =
            self.head
                .as_ref()
                .ok_or_else(|| EncoderError::InvalidOption {
                    name: "head".into(),
                    value: "none".into(),
                    reason: "model was loaded without a classification head".into(),
                })?;
        let hidden = self.forward_hidden(batch)?;
        let cls = batch.first_tokens(&hidden)?;
        let pooled = pooler.forward(&cls)?.tanh()?;
        Ok(classifier.forward(&pooled)?)
    }
}
