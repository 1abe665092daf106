//! RoBERTa and XLM-RoBERTa (`XLMRobertaForSequenceClassification`, e.g. BAAI/bge-reranker-base,
//! -large and -v2-m3; `RobertaForSequenceClassification`), and their base models as embedding
//! models.
//!
//! BERT's encoder layers ([`super::bert`]) with two differences: positions count from
//! `pad_token_id + 1` (padding tokens keep `pad_token_id`), so a model of
//! `max_position_embeddings` positions reads `max_position_embeddings - pad_token_id - 1`
//! tokens; and the classification head is `dense -> tanh -> out_proj` on the first token
//! (`<s>`), without BERT's pooler. There is one token type.

use candle_core::{DType, Tensor};

use super::backend::Backend;
use super::bert::{BertConfig, BertEmbeddings, BertEncoder};
use super::layers::{encoder_root, load_classifier, Dense};
use super::packed::PackedBatch;
use super::{Architecture, InputLimits, LoadContext, LoadModel, Model, Output, Pooling, Task};
use crate::error::{EncoderError, Result};

/// The registry entry.
pub(crate) const ARCHITECTURE: Architecture = Architecture::new::<RobertaArchitecture>(
    "xlm-roberta",
    &[
        "XLMRobertaForSequenceClassification",
        "RobertaForSequenceClassification",
    ],
    &["xlm-roberta", "roberta"],
    Task::Classify,
);

enum Head {
    /// `classifier.dense`, tanh, `classifier.out_proj`.
    Classifier {
        dense: Dense,
        out_proj: Dense,
    },
    Embedding(Pooling),
}

struct Roberta<B: Backend> {
    embeddings: BertEmbeddings<B>,
    encoder: BertEncoder<B>,
    head: Head,
    limits: InputLimits,
}

struct RobertaArchitecture;

impl LoadModel for RobertaArchitecture {
    fn load<B: Backend>(ctx: &LoadContext<'_>) -> Result<Box<dyn Model>> {
        let config = BertConfig::read(ctx)?;
        let path = &ctx.config.path;
        let h = config.hidden_size;
        // transformers' RobertaConfig default.
        let pad = config.pad_token_id.unwrap_or(1);
        if pad >= config.vocab_size {
            return Err(EncoderError::InvalidConfig {
                path: path.clone(),
                field: "pad_token_id".into(),
                value: pad.to_string(),
                reason: format!("outside vocab_size = {}", config.vocab_size),
            });
        }
        let root = encoder_root(ctx.weights, "roberta", "embeddings.word_embeddings.weight");
        let embeddings = BertEmbeddings::<B>::load(&root, &config, Some(pad), path)?;
        let encoder = BertEncoder::<B>::load(&root, &config, path)?;
        let head = match ctx.output {
            Output::Classifier { num_labels } => {
                let c = ctx.weights.pp("classifier");
                Head::Classifier {
                    dense: Dense::load::<B>(&c.pp("dense"), h, h, true)?,
                    out_proj: load_classifier::<B>(&c, "out_proj", h, *num_labels, path)?,
                }
            }
            Output::Embedding(pooling) => Head::Embedding(*pooling),
            Output::TokenLogitDifference { .. } => {
                return Err(ctx.unsupported_output("XLMRobertaForSequenceClassification"))
            }
        };
        Ok(Box::new(Roberta {
            embeddings,
            encoder,
            head,
            limits: InputLimits {
                vocab_size: config.vocab_size,
                max_positions: config.max_position_embeddings - pad - 1,
                type_vocab_size: Some(config.type_vocab_size),
            },
        }))
    }
}

impl<B: Backend> Model for Roberta<B> {
    fn forward(&self, batch: &PackedBatch) -> Result<Tensor> {
        let xs = self.embeddings.forward(batch)?;
        let hidden = self.encoder.forward(xs, batch)?;
        Ok(match &self.head {
            Head::Classifier { dense, out_proj } => {
                let first = batch.first_tokens(&hidden)?;
                out_proj.forward(&dense.forward(&first)?.tanh()?)?
            }
            Head::Embedding(pooling) => pooling.apply(batch, &hidden)?.to_dtype(DType::F32)?,
        })
    }

    fn limits(&self) -> InputLimits {
        self.limits
    }
}
