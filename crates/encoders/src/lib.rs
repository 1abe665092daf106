//! Cross-encoders, LLM rerankers and bi-encoders in candle whose tokenisation and scores
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
//! One path runs every model: tokenise, batch, forward, head ([`CrossEncoder::predict`]); the
//! [`InferenceQueue`] runs the same path for many concurrent callers (a service), with
//! batches shared between requests, fair turns and cancellation.
//!
//! Each architecture is one file under [`models`]; the loader picks the architecture from
//! `config.json` and the kernels from the device and dtype once, when the model loads.

pub mod batching;
mod bi_encoder;
mod cancel;
pub mod config;
mod core;
mod cross_encoder;
pub mod device;
mod error;
pub mod head;
pub mod hub;
mod infer;
pub mod memory;
pub mod models;
mod options;
pub mod prompt;
mod safetensors;
pub mod tokenizer;
pub mod weights;

#[cfg(test)]
mod test_support;

pub use bi_encoder::{cosine, BiEncoder};
pub use cancel::CancelToken;
pub use core::default_max_batch_tokens;
pub use cross_encoder::{
    rank_scores, Classification, CrossEncoder, PredictStats, Prediction, Ranked, Scoring,
};
pub use device::{DeviceMemory, DeviceSpec, Precision};
pub use error::{EncoderError, Result};
pub use head::{ScoreActivation, ScoreHead};
pub use infer::{BatchReport, InferenceQueue, QueueOptions, Ticket};
pub use models::{Kernels, Pooling};
pub use options::{BiEncoderOptions, CrossEncoderOptions, DEFAULT_EMBEDDING_CACHE};
pub use prompt::{PromptSource, PromptTemplate, QWEN3_RERANKER_INSTRUCTION};
pub use tokenizer::{EncodedPair, PairTokenizer, Truncation};
