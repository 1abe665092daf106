//! [`CrossEncoder`]: (query, document) pairs in, relevance scores out.

use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use serde::Serialize;

use crate::config::{Family, ModelConfig};
use crate::core::{CoreRequest, EncoderCore};
use crate::error::{EncoderError, Result};
use crate::head::{softmax, ScoreHead};
use crate::models::argmax;
use crate::options::CrossEncoderOptions;
use crate::tokenizer::{EncodedPair, PairTokenizer, Truncation};
use crate::Model;

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
    core: EncoderCore,
    head: ScoreHead,
    labels: Vec<String>,
    truncation: Truncation,
}

impl std::fmt::Debug for CrossEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossEncoder")
            .field("dir", &self.core.dir)
            .field("family", &self.core.model.family())
            .field("labels", &self.labels)
            .field("head", &self.head)
            .field("max_length", &self.core.max_length)
            .finish()
    }
}

impl CrossEncoder {
    /// Load from a local Hugging Face-style directory (`config.json`, weights, tokenizer).
    pub fn from_dir(dir: impl AsRef<Path>, options: CrossEncoderOptions) -> Result<Self> {
        let dir = dir.as_ref();
        options.core().validate()?;
        let config_path = dir.join("config.json");
        let config = ModelConfig::from_file(&config_path)?;
        let family = config.common.require_cross_encoder(&config_path)?;
        let labels = config.common.labels(&config_path)?;
        let head = ScoreHead::resolve(
            &labels,
            dir,
            &config.common,
            options.activation,
            options.label_grades.as_ref(),
        )?;
        let core = EncoderCore::load(
            CoreRequest {
                dir,
                config: &config,
                family,
                num_labels: Some(labels.len()),
                max_length: options.max_length,
                truncation: options.truncation,
            },
            &options.core(),
        )?;
        tracing::info!(
            dir = %dir.display(),
            family = ?family,
            labels = labels.len(),
            max_length = core.max_length,
            dtype = ?core.dtype,
            "loaded cross-encoder"
        );
        Ok(Self {
            core,
            head,
            labels,
            truncation: options.truncation,
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
        self.core.max_length
    }
    /// Truncation strategy in use.
    pub fn truncation(&self) -> Truncation {
        self.truncation
    }
    /// The tokenizer (with truncation applied).
    pub fn tokenizer(&self) -> &PairTokenizer {
        &self.core.tokenizer
    }
    /// The model family.
    pub fn family(&self) -> Family {
        self.core.model.family()
    }
    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.core.device
    }
    /// Pairs per forward pass.
    pub fn batch_size(&self) -> usize {
        self.core.batch_size
    }
    /// Token budget per forward pass.
    pub fn max_batch_tokens(&self) -> Option<usize> {
        self.core.budget.get()
    }
    /// Compute dtype of the weights and activations.
    pub fn dtype(&self) -> DType {
        self.core.dtype
    }
    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.core.dir
    }

    /// Test hook: run ModernBERT's sliding-window layers with global attention.
    #[doc(hidden)]
    pub fn debug_ignore_sliding_window(&mut self, ignore: bool) {
        if let Model::ModernBert(m) = &mut self.core.model {
            m.set_ignore_window(ignore);
        }
    }

    /// Test hook: switch the fused CPU kernels off so candle's generic ops (the path every
    /// other device and dtype takes) run on the CPU; `true` restores them where they apply.
    #[doc(hidden)]
    pub fn debug_cpu_kernels(&mut self, on: bool) {
        self.core.model.set_cpu_kernels(on);
    }

    /// Encode pairs exactly as the model will see them.
    pub fn encode<Q: AsRef<str> + Sync, D: AsRef<str> + Sync>(
        &self,
        pairs: &[(Q, D)],
    ) -> Result<Vec<EncodedPair>> {
        self.core.tokenizer.encode_pairs(pairs)
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
        let encodings = self.core.tokenizer.encode_pairs(pairs)?;
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
        let (out, run) = self
            .core
            .run(encodings, |model, packed| model.logits(packed))?;
        let stats = PredictStats {
            pairs: encodings.len(),
            tokens: encodings.iter().map(EncodedPair::len).sum(),
            batches: run.batches,
            sort: run.sort,
            forward: run.forward,
            ..Default::default()
        };
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
        use crate::core::effective_max_length;
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
