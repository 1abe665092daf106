//! Cross-encoders and bi-encoders (BERT, ModernBERT) in candle whose tokenisation and scores
//! match Hugging Face transformers / sentence-transformers.
//!
//! A [`CrossEncoder`] reads a (query, document) pair jointly and returns one relevance score
//! per pair; it is the second stage of a retrieve-then-rerank search. Any head works: one
//! logit (sigmoid or the activation sentence-transformers stored), two labels (probability
//! of "relevant") or three and more (expected grade, plus [`CrossEncoder::classify`]).
//!
//! ```no_run
//! use tantivy_rerank_encoders::{CrossEncoder, CrossEncoderOptions};
//! # fn main() -> Result<(), tantivy_rerank_encoders::EncoderError> {
//! let model = CrossEncoder::load(
//!     "akr2002/reranker-ModernBERT-base-gooaq-bce", // or a local directory
//!     CrossEncoderOptions::default().max_length(512),
//! )?;
//! let docs = ["Paris is the capital of France.", "Bananas are yellow."];
//! let ranked = model.rank("capital of France", &docs, None)?;
//! assert_eq!(ranked[0].index, 0);
//! # Ok(()) }
//! ```
//!
//! Inputs are tokenised in parallel, sorted by length, packed without padding for every
//! linear layer and batched by count and by a token budget; results come back in input order.

pub mod batching;
mod bi_encoder;
pub mod config;
mod core;
mod cross_encoder;
pub mod device;
mod error;
pub mod head;
pub mod hub;
pub mod memory;
pub mod models;
mod options;
mod safetensors;
pub mod tokenizer;
pub mod weights;

#[cfg(test)]
mod test_support;

use std::path::Path;

use candle_core::{DType, Device, Tensor};

pub use bi_encoder::{cosine, BiEncoder};
pub use config::Family;
pub use core::default_max_batch_tokens;
pub use cross_encoder::{
    rank_scores, Classification, CrossEncoder, PredictStats, Prediction, Ranked,
};
pub use device::{DeviceMemory, DeviceSpec, Precision};
pub use error::{EncoderError, Result};
pub use head::{ScoreActivation, ScoreHead};
pub use models::Pooling;
pub use options::{BiEncoderOptions, CrossEncoderOptions, DEFAULT_EMBEDDING_CACHE};
pub use tokenizer::{EncodedPair, PairTokenizer, Truncation};

use config::ModelConfig;
use models::{bert::Bert, modernbert::ModernBert, PackedBatch};
use weights::{WeightFiles, Weights};

/// A loaded encoder of either family.
pub(crate) enum Model {
    Bert(Bert),
    ModernBert(ModernBert),
}

impl Model {
    pub(crate) fn load(
        dir: &Path,
        config: &ModelConfig,
        family: Family,
        dtype: DType,
        device: &Device,
        num_labels: Option<usize>,
    ) -> Result<Self> {
        let files = WeightFiles::find(dir)?;
        let weights = Weights::load(&files, dtype, device)?;
        Ok(match family {
            Family::Bert => Model::Bert(Bert::load(config, &weights, num_labels)?),
            Family::ModernBert => {
                Model::ModernBert(ModernBert::load(config, &weights, num_labels)?)
            }
        })
    }

    pub(crate) fn set_cpu_kernels(&mut self, on: bool) {
        match self {
            Model::Bert(m) => m.set_cpu_kernels(on),
            Model::ModernBert(m) => m.set_cpu_kernels(on),
        }
    }

    pub(crate) fn family(&self) -> Family {
        match self {
            Model::Bert(_) => Family::Bert,
            Model::ModernBert(_) => Family::ModernBert,
        }
    }

    pub(crate) fn max_position_embeddings(&self) -> usize {
        match self {
            Model::Bert(m) => m.config.max_position_embeddings,
            Model::ModernBert(m) => m.config.max_position_embeddings,
        }
    }

    /// Reject encodings the embedding tables cannot look up, before any of them reaches the
    /// device: an out-of-range index there fails with a bare "invalid index" on the CPU and
    /// aborts a CUDA kernel, which poisons the device for the rest of the process.
    pub(crate) fn check_encodings(&self, encodings: &[EncodedPair]) -> Result<()> {
        let (vocab, positions, segments) = match self {
            Model::Bert(m) => (
                m.config.vocab_size,
                m.config.max_position_embeddings,
                Some(m.config.type_vocab_size),
            ),
            Model::ModernBert(m) => (m.config.vocab_size, m.config.max_position_embeddings, None),
        };
        let problem = |e: &EncodedPair| -> Option<String> {
            if e.is_empty() {
                return Some("it has no tokens".into());
            }
            if e.len() > positions {
                return Some(format!(
                    "{} tokens, more than max_position_embeddings = {positions} in config.json",
                    e.len()
                ));
            }
            if let Some(id) = e.ids.iter().find(|&&id| id as usize >= vocab) {
                return Some(format!(
                    "token id {id} is outside vocab_size = {vocab} in config.json"
                ));
            }
            let n = segments?;
            let t = e.type_ids.iter().find(|&&t| t as usize >= n)?;
            Some(format!(
                "segment id {t} is outside type_vocab_size = {n} in config.json"
            ))
        };
        for (index, e) in encodings.iter().enumerate() {
            if let Some(reason) = problem(e) {
                return Err(EncoderError::InvalidInput { index, reason });
            }
        }
        Ok(())
    }

    pub(crate) fn logits(&self, batch: &PackedBatch) -> Result<Tensor> {
        match self {
            Model::Bert(m) => m.forward_logits(batch),
            Model::ModernBert(m) => m.forward_logits(batch),
        }
    }

    pub(crate) fn hidden(&self, batch: &PackedBatch) -> Result<Tensor> {
        match self {
            Model::Bert(m) => m.forward_hidden(batch),
            Model::ModernBert(m) => m.forward_hidden(batch),
        }
    }
}
