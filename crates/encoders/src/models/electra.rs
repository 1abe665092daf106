//! ELECTRA (`ElectraForSequenceClassification`, e.g. cross-encoder/ms-marco-electra-base).
//!
//! BERT's embeddings and encoder layers ([`super::bert`]); embeddings narrower than the
//! hidden size (`embedding_size`) are projected up by `embeddings_project`. The
//! classification head is `dense -> GELU -> out_proj` on the first token: transformers
//! hard-codes the exact (erf) GELU there whatever `hidden_act` says, and has no pooler.

use candle_core::{DType, Tensor};

use super::backend::Backend;
use super::bert::{BertConfig, BertEmbeddings, BertEncoder};
use super::layers::{encoder_root, load_classifier, Dense};
use super::packed::PackedBatch;
use super::{Architecture, InputLimits, LoadContext, LoadModel, Model, Output, Pooling, Task};
use crate::error::Result;

/// The registry entry.
pub(crate) const ARCHITECTURE: Architecture = Architecture::new::<ElectraArchitecture>(
    "electra",
    &["ElectraForSequenceClassification"],
    &["electra"],
    Task::Classify,
);

enum Head {
    /// `classifier.dense`, exact GELU, `classifier.out_proj`.
    Classifier {
        dense: Dense,
        out_proj: Dense,
    },
    Embedding(Pooling),
}

struct Electra<B: Backend> {
    embeddings: BertEmbeddings<B>,
    encoder: BertEncoder<B>,
    head: Head,
    limits: InputLimits,
}

struct ElectraArchitecture;

impl LoadModel for ElectraArchitecture {
    fn load<B: Backend>(ctx: &LoadContext<'_>) -> Result<Box<dyn Model>> {
        let config = BertConfig::read(ctx)?;
        let path = &ctx.config.path;
        let h = config.hidden_size;
        let root = encoder_root(ctx.weights, "electra", "embeddings.word_embeddings.weight");
        let embeddings = BertEmbeddings::<B>::load(&root, &config, None, path)?;
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
                return Err(ctx.unsupported_output("ElectraForSequenceClassification"))
            }
        };
        Ok(Box::new(Electra {
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

impl<B: Backend> Model for Electra<B> {
    fn forward(&self, batch: &PackedBatch) -> Result<Tensor> {
        let xs = self.embeddings.forward(batch)?;
        let hidden = self.encoder.forward(xs, batch)?;
        Ok(match &self.head {
            Head::Classifier { dense, out_proj } => {
                let first = batch.first_tokens(&hidden)?;
                out_proj.forward(&dense.forward(&first)?.gelu_erf()?)?
            }
            Head::Embedding(pooling) => pooling.apply(batch, &hidden)?.to_dtype(DType::F32)?,
        })
    }

    fn limits(&self) -> InputLimits {
        self.limits
    }
}
