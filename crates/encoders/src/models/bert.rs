//! BERT (`BertModel`, `BertForSequenceClassification`) over packed batches, and the encoder
//! layers RoBERTa and ELECTRA share with it.
//!
//! Post-LN encoder: embeddings (word + absolute position + token type, LayerNorm), then per
//! layer `LN(x + Attn(x))`, `LN(h + FFN(h))`. BERT's classification head is the pooler
//! (dense + tanh on `[CLS]`) followed by the classifier.

use std::path::Path;

use candle_core::Tensor;
use serde::Deserialize;

use super::attention::AttentionSpec;
use super::backend::Backend;
use super::layers::{
    check_dims, check_layer_count, encoder_root, feed_forward_in_blocks, head_size,
    load_classifier, Activation, Dense, Embedding, LayerNorm, Linear,
};
use super::packed::PackedBatch;
use super::{Architecture, InputLimits, LoadContext, LoadModel, Model, Output, Pooling, Task};
use crate::error::{EncoderError, Result};
use crate::weights::Weights;

type CResult<T> = candle_core::Result<T>;

/// The registry entry.
pub(crate) const ARCHITECTURE: Architecture = Architecture::new::<BertArchitecture>(
    "bert",
    &["BertForSequenceClassification"],
    &["bert"],
    Task::Classify,
);

fn default_act() -> String {
    "gelu".into()
}
fn default_max_pos() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_abs() -> String {
    "absolute".into()
}

/// `BertConfig`, also as RoBERTa, XLM-RoBERTa and ELECTRA write it.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_abs")]
    pub position_embedding_type: String,
    /// ELECTRA: the width of the embeddings when it differs from `hidden_size`.
    #[serde(default)]
    pub embedding_size: Option<usize>,
    /// RoBERTa: positions count from `pad_token_id + 1`.
    #[serde(default)]
    pub pad_token_id: Option<usize>,
}

impl BertConfig {
    /// Parse and check the sizes before anything is allocated from them.
    pub(crate) fn read(ctx: &LoadContext<'_>) -> Result<Self> {
        let path = &ctx.config.path;
        let config: BertConfig = ctx.config.parse()?;
        if config.position_embedding_type != "absolute" {
            return Err(EncoderError::InvalidConfig {
                path: path.clone(),
                field: "position_embedding_type".into(),
                value: config.position_embedding_type.clone(),
                reason: "only absolute position embeddings are supported".into(),
            });
        }
        check_dims(
            path,
            &[
                ("hidden_size", config.hidden_size),
                ("intermediate_size", config.intermediate_size),
                ("vocab_size", config.vocab_size),
                ("type_vocab_size", config.type_vocab_size),
                ("num_attention_heads", config.num_attention_heads),
                ("embedding_size", config.embedding_size.unwrap_or(1)),
            ],
        )?;
        head_size(path, config.hidden_size, config.num_attention_heads, false)?;
        if config.max_position_embeddings == 0 {
            return Err(EncoderError::InvalidConfig {
                path: path.clone(),
                field: "max_position_embeddings".into(),
                value: "0".into(),
                reason: "must be at least 1 (the rows of the position embedding table)".into(),
            });
        }
        Ok(config)
    }
}

/// Word + position + token-type embeddings and their LayerNorm (and ELECTRA's projection to
/// the hidden size).
pub(crate) struct BertEmbeddings<B: Backend> {
    word: Embedding<B>,
    position: Embedding<B>,
    token_type: Embedding<B>,
    norm: LayerNorm<B>,
    project: Option<Linear<B>>,
    /// RoBERTa: positions count from `pad_token_id + 1` and skip padding tokens.
    padding_idx: Option<u32>,
}

impl<B: Backend> BertEmbeddings<B> {
    /// Load `root.embeddings.*` (and ELECTRA's `root.embeddings_project`). With
    /// `padding_idx` (RoBERTa), positions count from `padding_idx + 1`.
    pub(crate) fn load(
        root: &Weights,
        config: &BertConfig,
        padding_idx: Option<usize>,
        path: &Path,
    ) -> Result<Self> {
        let dim = config.embedding_size.unwrap_or(config.hidden_size);
        if let Some(pad) = padding_idx {
            if pad + 1 >= config.max_position_embeddings {
                return Err(EncoderError::InvalidConfig {
                    path: path.to_path_buf(),
                    field: "pad_token_id".into(),
                    value: pad.to_string(),
                    reason: format!(
                        "positions start at pad_token_id + 1, past max_position_embeddings = {}",
                        config.max_position_embeddings
                    ),
                });
            }
        }
        let project = if dim == config.hidden_size {
            None
        } else {
            Some(Linear::load(
                &root.pp("embeddings_project"),
                dim,
                config.hidden_size,
                true,
            )?)
        };
        let e_inner = root.pp("embeddings");
        Ok(Self {
            word: Embedding::load(&e_inner.pp("word_embeddings"), config.vocab_size, dim)?,
            position: Embedding::load(
                &e_inner.pp("position_embeddings"),
                config.max_position_embeddings,
                dim,
            )?,
            token_type: Embedding::load(
                &e_inner.pp("token_type_embeddings"),
                config.type_vocab_size,
                dim,
            )?,
            norm: LayerNorm::load(&e_inner.pp("LayerNorm"), dim, true, config.layer_norm_eps)?,
            project,
            padding_idx: padding_idx.map(|p| p as u32),
        })
    }

    pub(crate) fn forward(&self, batch: &PackedBatch) -> CResult<Tensor> {
        let positions = match self.padding_idx {
            None => self.position.forward(&batch.position_ids)?,
            Some(pad) => self
                .position
                .forward(&batch.padding_offset_position_ids(pad)?)?,
        };
        // transformers' order: (word + token type) + position (it matters in bf16).
        let xs = B::add(
            &B::add(
                &self.word.forward(&batch.input_ids)?,
                &self.token_type.forward(&batch.token_type_ids)?,
            )?,
            &positions,
        )?;
        let xs = self.norm.forward(&xs)?;
        match &self.project {
            Some(p) => p.forward(&xs, None, None),
            None => Ok(xs),
        }
    }
}

/// One post-LN encoder layer.
struct BertLayer<B: Backend> {
    qkv: Linear<B>,
    attn_out: Linear<B>,
    attn_norm: LayerNorm<B>,
    intermediate: Linear<B>,
    output: Linear<B>,
    out_norm: LayerNorm<B>,
}

impl<B: Backend> BertLayer<B> {
    /// Load `l` (`encoder.layer.{i}.`), fusing the query/key/value projections into one.
    fn load(l: &Weights, config: &BertConfig) -> Result<Self> {
        let (h, eps) = (config.hidden_size, config.layer_norm_eps);
        let a = l.pp("attention");
        let s = a.pp("self");
        Ok(Self {
            qkv: Linear::load_fused(
                &[(s.pp("query"), h), (s.pp("key"), h), (s.pp("value"), h)],
                h,
                true,
            )?,
            attn_out: Linear::load(&a.pp("output").pp("dense"), h, h, true)?,
            attn_norm: LayerNorm::load(&a.pp("output").pp("LayerNorm"), h, true, eps)?,
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
            out_norm: LayerNorm::load(&l.pp("output").pp("LayerNorm"), h, true, eps)?,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        batch: &PackedBatch,
        spec: &AttentionSpec<'_>,
        act: Activation,
    ) -> CResult<Tensor> {
        let qkv = self.qkv.forward(xs, None, None)?;
        let ctx = B::attention(&qkv, batch, spec)?;
        let attn = self.attn_out.forward(&ctx, Some(xs), None)?;
        let h = self.attn_norm.forward(&attn)?;
        let out = feed_forward_in_blocks::<B>(&h, |h, _| {
            let inter = self.intermediate.forward(h, None, Some(act))?;
            self.output.forward(&inter, Some(h), None)
        })?;
        self.out_norm.forward(&out)
    }
}

/// The stack of BERT layers.
pub(crate) struct BertEncoder<B: Backend> {
    layers: Vec<BertLayer<B>>,
    act: Activation,
    heads: usize,
    head_dim: usize,
}

impl<B: Backend> BertEncoder<B> {
    /// Load `root.encoder.layer.*` after checking the layer count against the checkpoint.
    pub(crate) fn load(root: &Weights, config: &BertConfig, path: &Path) -> Result<Self> {
        check_layer_count(
            root,
            config.num_hidden_layers,
            |i| format!("encoder.layer.{i}.attention.output.dense.weight"),
            path,
        )?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| BertLayer::load(&root.pp("encoder").pp("layer").pp(i), config))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            act: Activation::parse(&config.hidden_act, "hidden_act", path)?,
            heads: config.num_attention_heads,
            head_dim: config.hidden_size / config.num_attention_heads,
        })
    }

    pub(crate) fn forward(&self, mut xs: Tensor, batch: &PackedBatch) -> CResult<Tensor> {
        let spec = AttentionSpec {
            heads: self.heads,
            kv_heads: self.heads,
            head_dim: self.head_dim,
            half_window: None,
            causal: false,
            rope: None,
            qk_norm: None,
            rounds_each_op: false,
        };
        for layer in &self.layers {
            xs = layer.forward(&xs, batch, &spec, self.act)?;
        }
        Ok(xs)
    }
}

/// What follows the encoder.
enum Head {
    /// BERT's pooler (dense + tanh on `[CLS]`) and classifier.
    Classifier { pooler: Dense, classifier: Dense },
    /// An embedding model's pooling.
    Embedding(Pooling),
}

/// A BERT model with its head.
struct Bert<B: Backend> {
    embeddings: BertEmbeddings<B>,
    encoder: BertEncoder<B>,
    head: Head,
    limits: InputLimits,
}

struct BertArchitecture;

impl LoadModel for BertArchitecture {
    fn load<B: Backend>(ctx: &LoadContext<'_>) -> Result<Box<dyn Model>> {
        let config = BertConfig::read(ctx)?;
        let path = &ctx.config.path;
        let h = config.hidden_size;
        // BertForSequenceClassification stores the encoder under `bert.`, BertModel at the
        // root.
        let root = encoder_root(ctx.weights, "bert", "embeddings.word_embeddings.weight");
        let embeddings = BertEmbeddings::<B>::load(&root, &config, None, path)?;
        let encoder = BertEncoder::<B>::load(&root, &config, path)?;
        let head = match ctx.output {
            Output::Classifier { num_labels } => Head::Classifier {
                pooler: Dense::load::<B>(&root.pp("pooler").pp("dense"), h, h, true)?,
                classifier: load_classifier::<B>(ctx.weights, "classifier", h, *num_labels, path)?,
            },
            Output::Embedding(pooling) => Head::Embedding(*pooling),
            Output::TokenLogitDifference { .. } => {
                return Err(ctx.unsupported_output("BertForSequenceClassification"))
            }
        };
        Ok(Box::new(Bert {
            embeddings,
            encoder,
            head,
            limits: InputLimits {
                vocab_size: config.vocab_size,
                max_positions: config.max_position_embeddings,
                type_vocab_size: Some(config.type_vocab_size),
            },
        }))
    }
}

impl<B: Backend> Model for Bert<B> {
    fn forward(&self, batch: &PackedBatch) -> Result<Tensor> {
        let xs = self.embeddings.forward(batch)?;
        let hidden = self.encoder.forward(xs, batch)?;
        Ok(match &self.head {
            Head::Classifier { pooler, classifier } => {
                let cls = batch.first_tokens(&hidden)?;
                classifier.forward(&pooler.forward(&cls)?.tanh()?)?
            }
            Head::Embedding(pooling) => pooling
                .apply(batch, &hidden)?
                .to_dtype(candle_core::DType::F32)?,
        })
    }

    fn limits(&self) -> InputLimits {
        self.limits
    }
}
