//! Load options of [`CrossEncoder`](crate::CrossEncoder) and [`BiEncoder`](crate::BiEncoder).
//!
//! Both share the options of the encoder core (device, precision, lengths, batching, Hub
//! revision); each adds only what applies to it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::device::{DeviceSpec, Precision};
use crate::error::{EncoderError, Result};
use crate::head::ScoreActivation;
use crate::models::Kernels;
use crate::tokenizer::Truncation;

/// The options of the encoder core, common to both model kinds.
#[derive(Debug, Clone)]
pub(crate) struct CoreOptions {
    pub(crate) device: DeviceSpec,
    pub(crate) dtype: Option<Precision>,
    pub(crate) batch_size: usize,
    pub(crate) max_batch_tokens: Option<usize>,
    pub(crate) kernels: Kernels,
}

impl CoreOptions {
    /// Reject values no model can run with (a batch size or token budget of 0).
    pub(crate) fn validate(&self) -> Result<()> {
        let zero = |name: &str| EncoderError::InvalidOption {
            name: name.into(),
            value: "0".into(),
            reason: "must be at least 1".into(),
        };
        if self.batch_size == 0 {
            return Err(zero("batch_size"));
        }
        if self.max_batch_tokens == Some(0) {
            return Err(zero("max_batch_tokens"));
        }
        Ok(())
    }
}

/// Builder methods of the options both model kinds share.
macro_rules! core_builders {
    ($options:ty) => {
        impl $options {
            /// Set the device.
            pub fn device(mut self, device: DeviceSpec) -> Self {
                self.device = device;
                self
            }
            /// Set the compute precision.
            pub fn dtype(mut self, dtype: Precision) -> Self {
                self.dtype = Some(dtype);
                self
            }
            /// Cap the tokens per input.
            pub fn max_length(mut self, max_length: usize) -> Self {
                self.max_length = Some(max_length);
                self
            }
            /// Inputs per forward pass.
            pub fn batch_size(mut self, batch_size: usize) -> Self {
                self.batch_size = batch_size;
                self
            }
            /// Padded tokens per forward pass.
            pub fn max_batch_tokens(mut self, tokens: usize) -> Self {
                self.max_batch_tokens = Some(tokens);
                self
            }
            /// Hub revision.
            pub fn revision(mut self, revision: impl Into<String>) -> Self {
                self.revision = Some(revision.into());
                self
            }
            /// Which kernels run the model (default [`Kernels::Auto`]).
            pub fn kernels(mut self, kernels: Kernels) -> Self {
                self.kernels = kernels;
                self
            }

            pub(crate) fn core(&self) -> CoreOptions {
                CoreOptions {
                    device: self.device,
                    dtype: self.dtype,
                    batch_size: self.batch_size,
                    max_batch_tokens: self.max_batch_tokens,
                    kernels: self.kernels,
                }
            }
        }
    };
}

/// Options for loading a [`CrossEncoder`](crate::CrossEncoder); every field has a sensible
/// default.
///
/// ```
/// use tantivy_rerank_encoders::{CrossEncoderOptions, Truncation};
/// let options = CrossEncoderOptions::default()
///     .max_length(256)
///     .batch_size(16)
///     .truncation(Truncation::OnlySecond);
/// assert_eq!(options.batch_size, 16);
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrossEncoderOptions {
    /// Where to run (default `auto`: CUDA if compiled in and present, else CPU).
    pub device: DeviceSpec,
    /// Compute precision (default: bf16 on CUDA, f32 on CPU).
    pub dtype: Option<Precision>,
    /// Maximum tokens per pair, special tokens included. The effective value is the smallest
    /// of this, the model's `max_position_embeddings` and the tokenizer's `model_max_length`.
    pub max_length: Option<usize>,
    /// Pairs per forward pass (default 32; 0 is rejected when the model loads).
    pub batch_size: usize,
    /// Padded tokens per forward pass (default:
    /// [`default_max_batch_tokens`](crate::default_max_batch_tokens); 0 is rejected when the
    /// model loads). A pair longer than the budget still runs, in a batch of its own.
    pub max_batch_tokens: Option<usize>,
    /// Truncation strategy (default `longest_first`).
    pub truncation: Truncation,
    /// Override the activation of a single-logit head.
    pub activation: Option<ScoreActivation>,
    /// Grades per label name for heads with three or more labels.
    pub label_grades: Option<BTreeMap<String, f32>>,
    /// Hub revision (branch, tag or commit) when loading by id.
    pub revision: Option<String>,
    /// Which kernels run the model (default: the fastest for the device and dtype).
    #[serde(default)]
    pub kernels: Kernels,
    /// The instruction of a causal reranker's prompt (its system message; Qwen3-Reranker's
    /// default: "Given a web search query, retrieve relevant passages that answer the query").
    /// Refused for classifiers.
    #[serde(default)]
    pub instruction: Option<String>,
}

impl Default for CrossEncoderOptions {
    fn default() -> Self {
        Self {
            device: DeviceSpec::Auto,
            dtype: None,
            max_length: None,
            batch_size: 32,
            max_batch_tokens: None,
            truncation: Truncation::LongestFirst,
            activation: None,
            label_grades: None,
            revision: None,
            kernels: Kernels::Auto,
            instruction: None,
        }
    }
}

core_builders!(CrossEncoderOptions);

impl CrossEncoderOptions {
    /// Truncation strategy.
    pub fn truncation(mut self, truncation: Truncation) -> Self {
        self.truncation = truncation;
        self
    }
    /// Activation of a single-logit head.
    pub fn activation(mut self, activation: ScoreActivation) -> Self {
        self.activation = Some(activation);
        self
    }
    /// Grades per label for multi-label heads.
    pub fn label_grades(mut self, grades: BTreeMap<String, f32>) -> Self {
        self.label_grades = Some(grades);
        self
    }
    /// The instruction of a causal reranker's prompt.
    pub fn instruction(mut self, instruction: impl Into<String>) -> Self {
        self.instruction = Some(instruction.into());
        self
    }
}

/// Default number of cached embeddings per [`BiEncoder`](crate::BiEncoder).
pub const DEFAULT_EMBEDDING_CACHE: usize = 10_000;

/// Options for loading a [`BiEncoder`](crate::BiEncoder) (an embedding model); every field has
/// a sensible default. Truncation and head options do not apply: each text is embedded alone
/// and cut at the maximum length.
///
/// ```
/// use tantivy_rerank_encoders::BiEncoderOptions;
/// let options = BiEncoderOptions::default().max_length(128).embedding_cache(0);
/// assert_eq!(options.embedding_cache, 0);
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BiEncoderOptions {
    /// Where to run (default `auto`: CUDA if compiled in and present, else CPU).
    pub device: DeviceSpec,
    /// Compute precision (default: bf16 on CUDA, f32 on CPU).
    pub dtype: Option<Precision>,
    /// Maximum tokens per text, special tokens included (default: `max_seq_length` of
    /// `sentence_bert_config.json`, else as for a cross-encoder).
    pub max_length: Option<usize>,
    /// Texts per forward pass (default 32; 0 is rejected when the model loads).
    pub batch_size: usize,
    /// Padded tokens per forward pass (default:
    /// [`default_max_batch_tokens`](crate::default_max_batch_tokens)).
    pub max_batch_tokens: Option<usize>,
    /// Embeddings of up to this many recently seen texts are kept (default
    /// [`DEFAULT_EMBEDDING_CACHE`]; 0 turns the cache off). When full, the cache is emptied
    /// and refilled.
    pub embedding_cache: usize,
    /// Hub revision (branch, tag or commit) when loading by id.
    pub revision: Option<String>,
    /// Which kernels run the model (default: the fastest for the device and dtype).
    #[serde(default)]
    pub kernels: Kernels,
}

impl Default for BiEncoderOptions {
    fn default() -> Self {
        Self {
            device: DeviceSpec::Auto,
            dtype: None,
            max_length: None,
            batch_size: 32,
            max_batch_tokens: None,
            embedding_cache: DEFAULT_EMBEDDING_CACHE,
            revision: None,
            kernels: Kernels::Auto,
        }
    }
}

core_builders!(BiEncoderOptions);

impl BiEncoderOptions {
    /// How many embeddings are cached (0: none).
    pub fn embedding_cache(mut self, capacity: usize) -> Self {
        self.embedding_cache = capacity;
        self
    }
}

/// The options of `options` that apply to an embedding model (the pair-only ones dropped),
/// for code that loads either kind from one set of options.
impl From<&CrossEncoderOptions> for BiEncoderOptions {
    fn from(o: &CrossEncoderOptions) -> Self {
        BiEncoderOptions {
            device: o.device,
            dtype: o.dtype,
            max_length: o.max_length,
            batch_size: o.batch_size,
            max_batch_tokens: o.max_batch_tokens,
            revision: o.revision.clone(),
            kernels: o.kernels,
            ..Default::default()
        }
    }
}
