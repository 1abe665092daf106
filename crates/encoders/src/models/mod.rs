//! The architectures, one file each, and the registry that picks one when a model loads.
//!
//! A model directory's `config.json` names its architecture (`architectures[0]`, else
//! `model_type`). [`load`] finds it in [`ARCHITECTURES`], picks the backend for the device and
//! dtype once ([`backend::BackendKind::choose`]) and returns the implementation as a
//! [`Model`]: from then on a forward pass is one virtual call. Adding an architecture is one
//! new file with an [`Architecture`] entry, plus one line in [`ARCHITECTURES`].

pub(crate) mod attention;
pub(crate) mod backend;
pub(crate) mod bert;
pub(crate) mod bf16gemm;
pub(crate) mod cpu_bf16;
pub(crate) mod cpu_f32;
pub(crate) mod electra;
pub(crate) mod layers;
pub(crate) mod modernbert;
pub(crate) mod ops;
pub(crate) mod packed;
pub(crate) mod qwen;
pub(crate) mod roberta;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::error::{EncoderError, Result};
use crate::weights::Weights;

pub use ops::Activation;
pub use packed::PackedBatch;

use backend::{CpuF32, Portable};
use cpu_bf16::CpuBf16;

/// Every architecture this crate runs. One line per file of this module.
pub(crate) const ARCHITECTURES: &[&Architecture] = &[
    &bert::ARCHITECTURE,
    &roberta::ARCHITECTURE,
    &electra::ARCHITECTURE,
    &modernbert::ARCHITECTURE,
    &qwen::QWEN3,
    &qwen::QWEN2,
];

/// How the token states of a sequence become one vector: for a classification head
/// (ModernBERT's `classifier_pooling`) and for an embedding model (sentence-transformers'
/// `Pooling` module) alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The first token (`[CLS]`).
    Cls,
    /// The mean over the sequence's tokens.
    Mean,
}

impl Pooling {
    /// Pool `hidden` (`[total_tokens, hidden]` of `batch`) into `[batch, hidden]`.
    pub(crate) fn apply(self, batch: &PackedBatch, hidden: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Pooling::Cls => batch.first_tokens(hidden),
            Pooling::Mean => batch.mean_pool(hidden),
        }
    }
}

/// What a model's forward pass returns for each sequence.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Output {
    /// The classification head's logits, one per label (a cross-encoder).
    Classifier { num_labels: usize },
    /// The pooled final hidden state (an embedding model).
    Embedding(Pooling),
    /// `logit(true_id) - logit(false_id)` of the language-model head at the last token (a
    /// causal reranker): one value; `logit(true_id)` alone without a false token.
    TokenLogitDifference { true_id: u32, false_id: Option<u32> },
}

/// What an input must respect to be looked up by a model's embedding tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InputLimits {
    /// Rows of the token embedding table.
    pub(crate) vocab_size: usize,
    /// The most tokens one input may have (position table or RoPE table).
    pub(crate) max_positions: usize,
    /// Rows of the segment table, for models that have one.
    pub(crate) type_vocab_size: Option<usize>,
}

/// A loaded model: packed token ids in, one row of f32 outputs per sequence out.
pub(crate) trait Model: Send + Sync {
    /// `[batch, outputs]` f32 (see [`Output`]).
    fn forward(&self, batch: &PackedBatch) -> Result<Tensor>;
    /// What inputs it can look up.
    fn limits(&self) -> InputLimits;
}

/// What an architecture's loader gets.
pub(crate) struct LoadContext<'a> {
    pub(crate) config: &'a ModelConfig,
    pub(crate) weights: &'a Weights,
    pub(crate) output: &'a Output,
    /// The activations' dtype.
    pub(crate) dtype: DType,
    pub(crate) device: &'a Device,
}

impl LoadContext<'_> {
    /// The error for an output this architecture cannot give.
    pub(crate) fn unsupported_output(&self, architecture: &str) -> EncoderError {
        EncoderError::UnsupportedArchitecture {
            path: self.config.path.clone(),
            found: architecture.to_string(),
            supported: format!(
                "{architecture} cannot be loaded as {}",
                match self.output {
                    Output::Classifier { .. } => "a cross-encoder with a classification head",
                    Output::Embedding(_) => "an embedding model",
                    Output::TokenLogitDifference { .. } => "a causal reranker",
                }
            ),
        }
    }
}

/// An architecture's loader for one backend.
pub(crate) trait LoadModel {
    fn load<B: backend::Backend>(ctx: &LoadContext<'_>) -> Result<Box<dyn Model>>;
}

/// What a scoring checkpoint of an architecture is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Task {
    /// A sequence-classification model (`*ForSequenceClassification`): a cross-encoder.
    Classify,
    /// A causal language model (`*ForCausalLM`) scored by two tokens' logits at the last
    /// position: an LLM reranker.
    CausalLm,
}

/// One entry of [`ARCHITECTURES`].
pub(crate) struct Architecture {
    /// A short name (`bert`, `modernbert`, ...).
    pub(crate) name: &'static str,
    /// `architectures[0]` values of checkpoints that score (cross-encoders, rerankers).
    pub(crate) scorers: &'static [&'static str],
    /// `model_type` values of its checkpoints (base models saved for embeddings included).
    pub(crate) model_types: &'static [&'static str],
    pub(crate) task: Task,
    load: fn(&LoadContext<'_>, BackendKind) -> Result<Box<dyn Model>>,
}

impl std::fmt::Debug for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Architecture")
            .field("name", &self.name)
            .field("task", &self.task)
            .finish()
    }
}

impl Architecture {
    pub(crate) const fn new<M: LoadModel>(
        name: &'static str,
        scorers: &'static [&'static str],
        model_types: &'static [&'static str],
        task: Task,
    ) -> Self {
        Architecture {
            name,
            scorers,
            model_types,
            task,
            load: load_on::<M>,
        }
    }

    /// Find the architecture of a `config.json`: by `architectures[0]` (a scoring
    /// checkpoint, or any name of a known family such as `BertModel`), else by `model_type`.
    pub(crate) fn of(config: &ModelConfig) -> Result<&'static Architecture> {
        let common = &config.common;
        let arch = common
            .architectures
            .as_ref()
            .and_then(|a| a.first())
            .map(String::as_str);
        let by_arch = arch.and_then(|a| {
            ARCHITECTURES
                .iter()
                .copied()
                .find(|entry| entry.scorers.contains(&a))
        });
        let by_type = common.model_type.as_deref().and_then(|t| {
            ARCHITECTURES
                .iter()
                .copied()
                .find(|entry| entry.model_types.contains(&t))
        });
        by_arch
            .or(by_type)
            .ok_or_else(|| EncoderError::UnsupportedArchitecture {
                path: config.path.clone(),
                found: arch
                    .map(str::to_string)
                    .or_else(|| common.model_type.clone())
                    .unwrap_or_else(|| "<none: no architectures or model_type>".into()),
                supported: supported_list(),
            })
    }

    /// Load the model for `device` and `dtype` with `kernels`; returns it with the dtype its
    /// activations have.
    pub(crate) fn load(
        &self,
        config: &ModelConfig,
        files: &crate::weights::WeightFiles,
        output: &Output,
        kernels: Kernels,
        device: &Device,
        dtype: DType,
    ) -> Result<(Box<dyn Model>, DType)> {
        let (backend, dtype) = BackendKind::choose(kernels, device, dtype);
        let weights = Weights::load(files, backend.weights_dtype(dtype), device)?;
        let ctx = LoadContext {
            config,
            weights: &weights,
            output,
            dtype,
            device,
        };
        tracing::debug!(architecture = self.name, ?backend, ?dtype, "loading");
        Ok(((self.load)(&ctx, backend)?, dtype))
    }
}

fn load_on<M: LoadModel>(ctx: &LoadContext<'_>, backend: BackendKind) -> Result<Box<dyn Model>> {
    match backend {
        BackendKind::Portable => M::load::<Portable>(ctx),
        BackendKind::CpuF32 => M::load::<CpuF32>(ctx),
        BackendKind::CpuBf16 => M::load::<CpuBf16>(ctx),
    }
}

/// The scoring architectures and model types, for error messages.
pub(crate) fn supported_list() -> String {
    let scorers: Vec<&str> = ARCHITECTURES
        .iter()
        .flat_map(|a| a.scorers.iter().copied())
        .collect();
    let types: Vec<&str> = ARCHITECTURES
        .iter()
        .flat_map(|a| a.model_types.iter().copied())
        .collect();
    format!("{} (model_type {})", scorers.join(", "), types.join(", "))
}

/// Index of the largest value (the first of equal ones).
pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

/// Which kernels run a model: chosen by the options, or by the device and dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kernels {
    /// The fastest kernels for the device and dtype (the default): fused f32 kernels on the
    /// CPU, bf16 matrix kernels (AMX, AVX512-BF16) for bf16 on a CPU that has them, candle's
    /// ops on CUDA.
    #[default]
    Auto,
    /// candle's ops on every device and dtype: the reference the fused kernels are tested
    /// against, and a fallback should a fused kernel misbehave on some CPU.
    Portable,
}

/// The backend a model instance runs on (decided once, at load).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackendKind {
    Portable,
    CpuF32,
    CpuBf16,
}

impl BackendKind {
    /// Pick the backend for `device` and the requested compute `dtype`; returns it with the
    /// dtype activations will have. On a CPU, bf16 runs the bf16 kernels where the CPU has
    /// bf16 matrix instructions, and f32 elsewhere (said in one line); f16 runs in f32.
    pub(crate) fn choose(kernels: Kernels, device: &Device, dtype: DType) -> (Self, DType) {
        if kernels == Kernels::Portable || !device.is_cpu() {
            return (BackendKind::Portable, dtype);
        }
        match dtype {
            DType::BF16 => match cpu_bf16::available_path() {
                Some(path) => {
                    tracing::info!(
                        ?path,
                        "bf16 on the CPU: packed bf16 weights, f32 accumulation"
                    );
                    (BackendKind::CpuBf16, DType::BF16)
                }
                None => {
                    tracing::warn!(
                        "this CPU has no bf16 matrix instructions (AMX or AVX512-BF16): computing in f32"
                    );
                    (BackendKind::CpuF32, DType::F32)
                }
            },
            DType::F32 => (BackendKind::CpuF32, DType::F32),
            other => {
                tracing::warn!(dtype = ?other, "no CPU kernels for this dtype: computing in f32");
                (BackendKind::CpuF32, DType::F32)
            }
        }
    }

    /// The dtype checkpoint tensors are read in: the fused CPU backends read f32 and convert
    /// (or pack) each tensor as it loads.
    pub(crate) fn weights_dtype(self, activations: DType) -> DType {
        match self {
            BackendKind::Portable => activations,
            BackendKind::CpuF32 | BackendKind::CpuBf16 => DType::F32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(json: &str) -> ModelConfig {
        ModelConfig::from_json_str(json, Path::new("m/config.json")).unwrap()
    }

    #[test]
    fn architectures_are_found_by_name_then_by_model_type() {
        let by_name = config(r#"{"architectures": ["ModernBertForSequenceClassification"]}"#);
        assert_eq!(Architecture::of(&by_name).unwrap().name, "modernbert");
        let base = config(r#"{"architectures": ["BertModel"], "model_type": "bert"}"#);
        assert_eq!(Architecture::of(&base).unwrap().name, "bert");
        let err = Architecture::of(&config(
            r#"{"architectures": ["GPT2ForSequenceClassification"], "model_type": "gpt2"}"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("GPT2ForSequenceClassification"), "{err}");
        assert!(err.contains("m/config.json"), "{err}");
        for entry in ARCHITECTURES {
            for name in entry.scorers {
                assert!(err.contains(name), "{name} missing from: {err}");
            }
        }
        let err = Architecture::of(&config("{}")).unwrap_err().to_string();
        assert!(err.contains("no architectures or model_type"), "{err}");
    }
}
