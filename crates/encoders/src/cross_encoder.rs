//! [`CrossEncoder`]: (query, document) pairs in, relevance scores out.

use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use serde::Serialize;

use crate::cancel::CancelToken;
use crate::config::ModelConfig;
use crate::core::{CoreRequest, EncoderCore};
use crate::error::{EncoderError, Result};
use crate::head::{softmax, ScoreHead};
use crate::models::{argmax, Architecture, Output, Task};
use crate::options::CrossEncoderOptions;
use crate::prompt::{read_chat_template, special_token_strings, PromptSource, PromptTemplate};
use crate::tokenizer::{EncodedPair, PairTokenizer, Truncation};

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

/// How a [`CrossEncoder`] produces its logits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scoring {
    /// A sequence-classification head: one logit per label (see [`CrossEncoder::head`]).
    Classifier,
    /// A causal language model: one logit, `logit(true) - logit(false)` of its language-model
    /// head at the last token of the prompt (`logit(true)` alone without a false token).
    TokenLogits {
        true_token: String,
        true_id: u32,
        false_token: Option<String>,
        false_id: Option<u32>,
    },
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

/// A reranker: a sequence-classification transformer (a cross-encoder), or a causal language
/// model scored by the logits of two tokens (an LLM reranker).
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
    scoring: Scoring,
    head: ScoreHead,
    labels: Vec<String>,
    truncation: Truncation,
}

impl std::fmt::Debug for CrossEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossEncoder")
            .field("dir", &self.core.dir)
            .field("architecture", &self.core.architecture.name)
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
        let architecture = Architecture::of(&config)?;
        // A checkpoint that names an architecture must name one that scores: a base model
        // (`BertModel`, ...) has no head to score with (it loads as a BiEncoder).
        if let Some(arch) = config.common.architectures.as_ref().and_then(|a| a.first()) {
            if !architecture.scorers.contains(&arch.as_str()) {
                return Err(EncoderError::UnsupportedArchitecture {
                    path: config_path,
                    found: arch.clone(),
                    supported: crate::models::supported_list(),
                });
            }
        }
        let (labels, output, scoring, tokenizer) = match architecture.task {
            Task::Classify => {
                if options.instruction.is_some() {
                    return Err(EncoderError::InvalidOption {
                        name: "instruction".into(),
                        value: options.instruction.clone().unwrap_or_default(),
                        reason: format!(
                            "instructions go into the prompt of causal rerankers; {} is a \
                             classifier (prepend the instruction to the query instead)",
                            dir.display()
                        ),
                    });
                }
                let labels = config.common.labels(&config_path)?;
                let output = Output::Classifier {
                    num_labels: labels.len(),
                };
                (
                    labels,
                    output,
                    Scoring::Classifier,
                    PairTokenizer::from_dir(dir)?,
                )
            }
            Task::CausalLm => causal_reranker(dir, architecture, &options)?,
        };
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
                architecture,
                output,
                tokenizer,
                max_length: options.max_length,
                truncation: options.truncation,
            },
            &options.core(),
        )?;
        tracing::info!(
            dir = %dir.display(),
            architecture = architecture.name,
            labels = labels.len(),
            max_length = core.max_length,
            dtype = ?core.dtype,
            "loaded cross-encoder"
        );
        Ok(Self {
            core,
            scoring,
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
    /// The architecture's short name (`bert`, `modernbert`, ...).
    pub fn architecture(&self) -> &'static str {
        self.core.architecture.name
    }
    /// How the model produces its logits.
    pub fn scoring(&self) -> &Scoring {
        &self.scoring
    }
    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.core.device
    }
    /// Pairs per forward pass.
    pub fn batch_size(&self) -> usize {
        self.core.batch_size
    }
    /// Token budget per forward pass (lowered when the device runs out of memory).
    pub fn max_batch_tokens(&self) -> Option<usize> {
        self.core.budget.get()
    }
    /// Compute dtype of the activations.
    pub fn dtype(&self) -> DType {
        self.core.dtype
    }
    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.core.dir
    }

    pub(crate) fn core(&self) -> &EncoderCore {
        &self.core
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
        let (predictions, mut stats) = self.predict_encoded(&encodings, None)?;
        stats.tokenize = tokenize;
        Ok((predictions, stats))
    }

    /// Run the model on already encoded pairs: logits and scores in input order. With a
    /// `cancel` token the run stops between batches once it is cancelled
    /// ([`EncoderError::Cancelled`]).
    ///
    /// An encoding the model cannot look up (no tokens, more tokens than the model's
    /// positions, an id outside the vocabulary or segment table) is an
    /// [`EncoderError::InvalidInput`] naming its index; nothing runs on the device then. A
    /// score that is NaN or infinite is an [`EncoderError::NonFiniteScore`].
    pub fn predict_encoded(
        &self,
        encodings: &[EncodedPair],
        cancel: Option<&CancelToken>,
    ) -> Result<(Vec<Prediction>, PredictStats)> {
        let (logits, run) = self.core.run(encodings, cancel)?;
        let stats = PredictStats {
            pairs: encodings.len(),
            tokens: encodings.iter().map(EncodedPair::len).sum(),
            batches: run.batches,
            sort: run.sort,
            forward: run.forward,
            ..Default::default()
        };
        Ok((self.predictions(logits)?, stats))
    }

    /// The head's predictions of logits rows this model produced, checked to be finite: the
    /// last step of every path that scores pairs.
    pub(crate) fn predictions(&self, logits: Vec<Vec<f32>>) -> Result<Vec<Prediction>> {
        logits
            .into_iter()
            .enumerate()
            .map(|(index, logits)| {
                let score = self.head.score(&logits);
                if !score.is_finite() {
                    return Err(EncoderError::NonFiniteScore {
                        index,
                        value: score,
                    });
                }
                Ok(Prediction { logits, score })
            })
            .collect()
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

/// What a causal reranker is loaded with: its label (the true token), its output, its scoring
/// and its prompt tokenizer.
fn causal_reranker(
    dir: &Path,
    architecture: &Architecture,
    options: &CrossEncoderOptions,
) -> Result<(Vec<String>, Output, Scoring, PairTokenizer)> {
    let base = PairTokenizer::from_dir(dir)?;
    let (true_id, false_id) = logit_score_ids(dir, &base)?;
    let name_of = |id: u32| {
        base.inner()
            .id_to_token(id)
            .unwrap_or_else(|| format!("<{id}>"))
    };
    let template = match read_chat_template(dir)? {
        Some((text, path)) => {
            let specials = special_token_strings(dir)?;
            let template = PromptTemplate::new(
                &text,
                PromptSource::Checkpoint { path: path.clone() },
                specials,
                options.instruction.clone(),
            )?;
            if template.carries_pairs() {
                Some(template)
            } else {
                tracing::info!(template = %path.display(), "the chat template has no place for a query and a document");
                None
            }
        }
        None => None,
    };
    let template = match template {
        Some(t) => t,
        None if architecture.name == "qwen3" => {
            tracing::info!(
                dir = %dir.display(),
                "using the prompt of Qwen3-Reranker's model card (the checkpoint has no pair template)"
            );
            PromptTemplate::qwen3_reranker(options.instruction.clone())?
        }
        None => {
            return Err(EncoderError::MissingFile {
                path: dir.join("chat_template.jinja"),
                what: format!(
                    "a causal reranker needs a chat template that places the query and the \
                     document (messages of roles query and document, as sentence-transformers \
                     6 saves them); {} has none",
                    dir.display()
                ),
            })
        }
    };
    let tokenizer = base.with_prompt(template)?;
    let scoring = Scoring::TokenLogits {
        true_token: name_of(true_id),
        true_id,
        false_token: false_id.map(name_of),
        false_id,
    };
    Ok((
        vec![name_of(true_id)],
        Output::TokenLogitDifference { true_id, false_id },
        scoring,
        tokenizer,
    ))
}

/// The true and false token ids of a causal reranker: from the `LogitScore` module that
/// `modules.json` lists (its `config.json`: `true_token_id`, `false_token_id`, which may be
/// null), else the tokens `yes` and `no`, as sentence-transformers 6 does.
fn logit_score_ids(dir: &Path, tokenizer: &PairTokenizer) -> Result<(u32, Option<u32>)> {
    #[derive(serde::Deserialize)]
    struct Module {
        #[serde(default)]
        path: String,
        #[serde(rename = "type", default)]
        kind: String,
    }
    #[derive(serde::Deserialize)]
    struct LogitScoreConfig {
        true_token_id: Option<u32>,
        #[serde(default)]
        false_token_id: Option<u32>,
    }
    let modules_path = dir.join("modules.json");
    if modules_path.exists() {
        let text = EncoderError::read_text(&modules_path)?;
        let modules: Vec<Module> =
            serde_json::from_str(&text).map_err(|e| EncoderError::malformed(&modules_path, e))?;
        if let Some(m) = modules.iter().find(|m| m.kind.ends_with(".LogitScore")) {
            let inside = std::path::Path::new(&m.path)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !inside || m.path.is_empty() {
                return Err(EncoderError::malformed(
                    &modules_path,
                    format!(
                        "the LogitScore module's path {:?} is not a folder inside the model",
                        m.path
                    ),
                ));
            }
            let path = dir.join(&m.path).join("config.json");
            let text = EncoderError::read_text(&path)?;
            let config: LogitScoreConfig =
                serde_json::from_str(&text).map_err(|e| EncoderError::malformed(&path, e))?;
            let true_id = config.true_token_id.ok_or_else(|| {
                EncoderError::malformed(&path, "true_token_id is missing or null")
            })?;
            return Ok((true_id, config.false_token_id));
        }
    }
    let id = |token: &str| {
        tokenizer
            .token_to_id(token)
            .ok_or_else(|| EncoderError::InvalidConfig {
                path: tokenizer.source().to_path_buf(),
                field: "vocabulary".into(),
                value: token.into(),
                reason: format!(
                    "a causal reranker without a LogitScore module in modules.json is scored by \
                     the tokens \"yes\" and \"no\", and the tokenizer has no {token:?}"
                ),
            })
    };
    Ok((id("yes")?, Some(id("no")?)))
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
