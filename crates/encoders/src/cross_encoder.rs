//! [`CrossEncoder`]: (query, document) pairs in, relevance scores out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::batching::{plan_batches, run_with_backoff, TokenBudget};
use crate::config::{Family, ModelConfig};
use crate::device::{DeviceSpec, Precision};
use crate::error::{EncoderError, Result};
use crate::head::{softmax, ScoreActivation, ScoreHead};
use crate::models::{argmax, PackedBatch};
use crate::tokenizer::{EncodedPair, PairTokenizer, Truncation};
use crate::Model;

/// Options for loading a [`CrossEncoder`]; every field has a sensible default.
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
    /// Padded tokens per forward pass (default: [`default_max_batch_tokens`]; 0 is rejected
    /// when the model loads). A pair longer than the budget still runs, in a batch of its own.
    pub max_batch_tokens: Option<usize>,
    /// Truncation strategy (default `longest_first`).
    pub truncation: Truncation,
    /// Override the activation of a single-logit head.
    pub activation: Option<ScoreActivation>,
    /// Grades per label name for heads with three or more labels.
    pub label_grades: Option<BTreeMap<String, f32>>,
    /// Hub revision (branch, tag or commit) when loading by id.
    pub revision: Option<String>,
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
        }
    }
}

impl CrossEncoderOptions {
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
    /// Cap the tokens per pair.
    pub fn max_length(mut self, max_length: usize) -> Self {
        self.max_length = Some(max_length);
        self
    }
    /// Pairs per forward pass.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }
    /// Padded tokens per forward pass.
    pub fn max_batch_tokens(mut self, tokens: usize) -> Self {
        self.max_batch_tokens = Some(tokens);
        self
    }
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
    /// Hub revision.
    pub fn revision(mut self, revision: impl Into<String>) -> Self {
        self.revision = Some(revision.into());
        self
    }

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

/// Raw logits and the head's relevance score for one pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// One logit per label.
    pub logits: Vec<f32>,
    /// The relevance score (see [`ScoreHead`]).
    pub score: f32,
}

/// The predicted label of one pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    /// Index of the most probable label.
    pub index: usize,
    /// Its name from `id2label`.
    pub label: String,
    /// Softmax probabilities (for one label: the activated score).
    pub probabilities: Vec<f32>,
}

/// One ranked document.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ranked {
    /// Index into the documents passed in.
    pub index: usize,
    /// Its score.
    pub score: f32,
}

/// Where time went in one `predict` call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PredictStats {
    /// Pairs scored.
    pub pairs: usize,
    /// Real (unpadded) tokens fed to the model.
    pub tokens: usize,
    /// Forward passes run.
    pub batches: usize,
    /// Tokenisation time.
    pub tokenize: Duration,
    /// Length sorting and batch planning.
    pub sort: Duration,
    /// Model forward time (including host/device copies).
    pub forward: Duration,
}

/// A sequence-classification transformer used as a reranker.
///
/// ```no_run
/// use tantivy_rerank_encoders::{CrossEncoder, CrossEncoderOptions};
/// # fn main() -> Result<(), tantivy_rerank_encoders::EncoderError> {
/// let model = CrossEncoder::from_dir("models/my-reranker", CrossEncoderOptions::default())?;
/// let docs = ["Berlin has 3.5 million inhabitants.", "Berlin is known for its museums."];
/// for hit in model.rank("How many people live in Berlin?", &docs, Some(1))? {
///     println!("{} {:.3}", docs[hit.index], hit.score);
/// }
/// # Ok(()) }
/// ```
pub struct CrossEncoder {
    model: Model,
    tokenizer: PairTokenizer,
    head: ScoreHead,
    labels: Vec<String>,
    max_length: usize,
    batch_size: usize,
    max_batch_tokens: TokenBudget,
    truncation: Truncation,
    device: Device,
    dtype: DType,
    dir: PathBuf,
}

impl std::fmt::Debug for CrossEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossEncoder")
            .field("dir", &self.dir)
            .field("family", &self.model.family())
            .field("labels", &self.labels)
            .field("head", &self.head)
            .field("max_length", &self.max_length)
            .finish()
    }
}

/// Default token budget of one forward pass: 4,096 on the CPU (bigger batches gain nothing
/// there and their temporaries cost page faults), 65,536 on CUDA.
pub fn default_max_batch_tokens(device: &Device) -> usize {
    if device.is_cuda() {
        65_536
    } else {
        4_096
    }
}

/// Resolve the effective maximum length as sentence-transformers 6 does: the user's value
/// when given (it replaces the tokenizer's `model_max_length`), otherwise the smaller of the
/// tokenizer's `model_max_length` and `max_position_embeddings`. A user value past
/// `max_position_embeddings` is capped there with a warning (transformers would index past its
/// position table and fail).
pub(crate) fn effective_max_length(
    user: Option<usize>,
    tokenizer: Option<usize>,
    positions: usize,
) -> Result<usize> {
    match user {
        Some(0) => Err(EncoderError::InvalidOption {
            name: "max_length".into(),
            value: "0".into(),
            reason: "must be at least 1".into(),
        }),
        Some(u) if u > positions => {
            tracing::warn!(
                max_length = u,
                max_position_embeddings = positions,
                "max_length is past the model's positions: inputs are cut at {positions} tokens"
            );
            Ok(positions)
        }
        Some(u) => Ok(u),
        None => Ok(tokenizer.map_or(positions, |t| t.min(positions))),
    }
}

/// The tokenizer truncating at the effective maximum length ([`effective_max_length`]).
///
/// A limit too small for the special tokens is blamed on where it came from: the user's
/// option, `max_position_embeddings` in `config_path`, or the tokenizer's `model_max_length`.
pub(crate) fn truncating_tokenizer(
    tokenizer: &PairTokenizer,
    user: Option<usize>,
    positions: usize,
    config_path: &Path,
    truncation: Truncation,
) -> Result<(PairTokenizer, usize)> {
    let max_length = effective_max_length(user, tokenizer.model_max_length(), positions)?;
    let truncating = tokenizer
        .with_truncation(max_length, truncation)
        .map_err(|e| {
            let reason = match &e {
                EncoderError::InvalidOption { reason, .. } => reason.clone(),
                _ => return e,
            };
            if user == Some(max_length) {
                e
            } else if positions == max_length {
                EncoderError::InvalidConfig {
                    path: config_path.to_path_buf(),
                    field: "max_position_embeddings".into(),
                    value: positions.to_string(),
                    reason,
                }
            } else {
                EncoderError::InvalidConfig {
                    path: tokenizer.config_path(),
                    field: "model_max_length".into(),
                    value: max_length.to_string(),
                    reason,
                }
            }
        })?;
    Ok((truncating, max_length))
}

impl CrossEncoder {
    /// Load from a local Hugging Face-style directory (`config.json`, weights, tokenizer).
    pub fn from_dir(dir: impl AsRef<Path>, options: CrossEncoderOptions) -> Result<Self> {
        let dir = dir.as_ref();
        options.validate()?;
        let config_path = dir.join("config.json");
        let config = ModelConfig::from_file(&config_path)?;
        let family = config.common.require_cross_encoder(&config_path)?;
        let labels = config.common.labels(&config_path)?;
        let device = options.device.open()?;
        let dtype = options
            .dtype
            .unwrap_or_else(|| Precision::default_for(&device))
            .dtype();
        let tokenizer = PairTokenizer::from_dir(dir)?;
        if let Some(vocab_size) = config.common.vocab_size {
            tokenizer.check_vocab_fits(vocab_size, &config_path)?;
        }
        let model = Model::load(dir, &config, family, dtype, &device, Some(labels.len()))?;
        let head = ScoreHead::resolve(
            &labels,
            dir,
            &config.common,
            options.activation,
            options.label_grades.as_ref(),
        )?;
        let (tokenizer, max_length) = truncating_tokenizer(
            &tokenizer,
            options.max_length,
            model.max_position_embeddings(),
            &config_path,
            options.truncation,
        )?;
        let max_batch_tokens = options
            .max_batch_tokens
            .or(Some(default_max_batch_tokens(&device)));
        tracing::info!(
            dir = %dir.display(),
            family = ?family,
            labels = labels.len(),
            max_length,
            ?dtype,
            "loaded cross-encoder"
        );
        Ok(Self {
            model,
            tokenizer,
            head,
            labels,
            max_length,
            batch_size: options.batch_size,
            max_batch_tokens: TokenBudget::new(max_batch_tokens),
            truncation: options.truncation,
            device,
            dtype,
            dir: dir.to_path_buf(),
        })
    }

    /// Load from the Hugging Face Hub by id (e.g. `akr2002/reranker-ModernBERT-base-gooaq-bce`),
    /// at `options.revision`; cached files are reused without network.
    pub fn from_hub(repo_id: &str, options: CrossEncoderOptions) -> Result<Self> {
        let dir = crate::hub::model_dir_from_hub(repo_id, options.revision.as_deref())?;
        Self::from_dir(dir, options)
    }

    /// Load from a directory if `id_or_dir` is one, else from the Hub.
    pub fn load(id_or_dir: &str, options: CrossEncoderOptions) -> Result<Self> {
        let dir = crate::hub::resolve_model(id_or_dir, options.revision.as_deref())?;
        Self::from_dir(dir, options)
    }

    /// Label names in index order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }
    /// How logits become a score.
    pub fn head(&self) -> &ScoreHead {
        &self.head
    }
    /// Effective maximum tokens per pair.
    pub fn max_length(&self) -> usize {
        self.max_length
    }
    /// Truncation strategy in use.
    pub fn truncation(&self) -> Truncation {
        self.truncation
    }
    /// The tokenizer (with truncation applied).
    pub fn tokenizer(&self) -> &PairTokenizer {
        &self.tokenizer
    }
    /// The model family.
    pub fn family(&self) -> Family {
        self.model.family()
    }
    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }
    /// Pairs per forward pass.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
    /// Token budget per forward pass.
    pub fn max_batch_tokens(&self) -> Option<usize> {
        self.max_batch_tokens.get()
    }
    /// Compute dtype of the weights and activations.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Test hook: run ModernBERT's sliding-window layers with global attention.
    #[doc(hidden)]
    pub fn debug_ignore_sliding_window(&mut self, ignore: bool) {
        if let Model::ModernBert(m) = &mut self.model {
            m.set_ignore_window(ignore);
        }
    }

    /// Test hook: switch the fused CPU kernels off so candle's generic ops (the path every
    /// other device and dtype takes) run on the CPU; `true` restores them where they apply.
    #[doc(hidden)]
    pub fn debug_cpu_kernels(&mut self, on: bool) {
        self.model.set_cpu_kernels(on);
    }

    /// Encode pairs exactly as the model will see them.
    pub fn encode<Q: AsRef<str> + Sync, D: AsRef<str> + Sync>(
        &self,
        pairs: &[(Q, D)],
    ) -> Result<Vec<EncodedPair>> {
        self.tokenizer.encode_pairs(pairs)
    }

    /// Logits and score for every pair, in input order.
    pub fn predict<Q: AsRef<str> + Sync, D: AsRef<str> + Sync>(
        &self,
        pairs: &[(Q, D)],
    ) -> Result<Vec<Prediction>> {
        self.predict_with_stats(pairs).map(|(p, _)| p)
    }

    /// Like [`predict`](Self::predict), also reporting where the time went.
    pub fn predict_with_stats<Q: AsRef<str> + Sync, D: AsRef<str> + Sync>(
        &self,
        pairs: &[(Q, D)],
    ) -> Result<(Vec<Prediction>, PredictStats)> {
        let t0 = Instant::now();
        let encodings = self.tokenizer.encode_pairs(pairs)?;
        let tokenize = t0.elapsed();
        let (logits, mut stats) = self.logits_of_encodings(&encodings)?;
        stats.tokenize = tokenize;
        let predictions = logits
            .into_iter()
            .map(|l| {
                let score = self.head.score(&l);
                Prediction { logits: l, score }
            })
            .collect();
        Ok((predictions, stats))
    }

    /// Run the model on already encoded pairs; logits in input order.
    ///
    /// An encoding the model cannot look up (no tokens, more tokens than
    /// `max_position_embeddings`, an id outside the vocabulary or segment table) is an
    /// [`EncoderError::InvalidInput`] naming its index; nothing runs on the device then.
    pub fn logits_of_encodings(
        &self,
        encodings: &[EncodedPair],
    ) -> Result<(Vec<Vec<f32>>, PredictStats)> {
        self.model.check_encodings(encodings)?;
        let mut stats = PredictStats {
            pairs: encodings.len(),
            tokens: encodings.iter().map(EncodedPair::len).sum(),
            ..Default::default()
        };
        let t = Instant::now();
        let lengths: Vec<usize> = encodings.iter().map(EncodedPair::len).collect();
        let batches = plan_batches(&lengths, self.batch_size, self.max_batch_tokens.get());
        stats.sort = t.elapsed();
        let t = Instant::now();
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); encodings.len()];
        for batch in &batches {
            let mut run = |idx: &[usize]| -> Result<Vec<Vec<f32>>> {
                let refs: Vec<&EncodedPair> = idx.iter().map(|&i| &encodings[i]).collect();
                let packed = PackedBatch::new(&refs, &self.device, self.dtype)?;
                let logits = self.model.logits(&packed)?;
                let rows = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
                stats.batches += 1; // batches that ran, not attempts that ran out of memory
                Ok(rows)
            };
            let rows = run_with_backoff(batch, &lengths, &self.max_batch_tokens, &mut run)?;
            for (&i, row) in batch.iter().zip(rows) {
                out[i] = row;
            }
        }
        stats.forward = t.elapsed();
        Ok((out, stats))
    }

    /// Scores only, in input order.
    pub fn scores<Q: AsRef<str> + Sync, D: AsRef<str> + Sync>(
        &self,
        pairs: &[(Q, D)],
    ) -> Result<Vec<f32>> {
        Ok(self.predict(pairs)?.into_iter().map(|p| p.score).collect())
    }

    /// Score `documents` against `query` and return them best first (ties keep input order),
    /// at most `top_k` of them. Works for every head type.
    pub fn rank<D: AsRef<str> + Sync>(
        &self,
        query: &str,
        documents: &[D],
        top_k: Option<usize>,
    ) -> Result<Vec<Ranked>> {
        let pairs: Vec<(&str, &str)> = documents.iter().map(|d| (query, d.as_ref())).collect();
        let scores = self.scores(&pairs)?;
        rank_scores(&scores, top_k)
    }

    /// Predicted label and probabilities for every pair (e.g. irrelevant / partial /
    /// sufficient).
    pub fn classify<Q: AsRef<str> + Sync, D: AsRef<str> + Sync>(
        &self,
        pairs: &[(Q, D)],
    ) -> Result<Vec<Classification>> {
        Ok(self
            .predict(pairs)?
            .iter()
            .map(|p| self.classification(p))
            .collect())
    }

    /// Predicted label and probabilities of a [`Prediction`] this model made, without running
    /// the model again (use it when both scores and labels are wanted).
    pub fn classification(&self, prediction: &Prediction) -> Classification {
        let probabilities = if prediction.logits.len() == 1 {
            vec![prediction.score]
        } else {
            softmax(&prediction.logits)
        };
        let index = argmax(&probabilities);
        Classification {
            index,
            label: self.labels.get(index).cloned().unwrap_or_default(),
            probabilities,
        }
    }
}

/// Sort scores best first with stable tie order; NaN or infinite scores are an error.
pub fn rank_scores(scores: &[f32], top_k: Option<usize>) -> Result<Vec<Ranked>> {
    if let Some((index, &value)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        return Err(EncoderError::NonFiniteScore { index, value });
    }
    let mut ranked: Vec<Ranked> = scores
        .iter()
        .enumerate()
        .map(|(index, &score)| Ranked { index, score })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    if let Some(k) = top_k {
        ranked.truncate(k);
    }
    Ok(ranked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_length_resolves_as_sentence_transformers_6() {
        assert_eq!(effective_max_length(None, Some(512), 8192).unwrap(), 512);
        assert_eq!(effective_max_length(None, Some(9000), 8192).unwrap(), 8192);
        // The user's value replaces the tokenizer's limit (CrossEncoder(max_length=1024) keeps
        // 1,024 tokens of a tokenizer whose model_max_length is 512) ...
        assert_eq!(
            effective_max_length(Some(1024), Some(512), 8192).unwrap(),
            1024
        );
        // ... but not the position table.
        assert_eq!(
            effective_max_length(Some(10_000), Some(512), 8192).unwrap(),
            8192
        );
        assert_eq!(effective_max_length(Some(128), None, 512).unwrap(), 128);
        assert_eq!(effective_max_length(None, None, 8192).unwrap(), 8192);
        assert!(effective_max_length(Some(0), None, 8).is_err());
    }

    #[test]
    fn rank_is_stable_and_rejects_nan() {
        let r = rank_scores(&[0.5, 0.9, 0.5, 0.1], None).unwrap();
        let idx: Vec<usize> = r.iter().map(|r| r.index).collect();
        assert_eq!(idx, vec![1, 0, 2, 3]);
        assert_eq!(rank_scores(&[0.5, 0.9], Some(1)).unwrap().len(), 1);
        assert!(rank_scores(&[0.5, f32::NAN], None).is_err());
        assert!(rank_scores(&[], None).unwrap().is_empty());
    }
}
