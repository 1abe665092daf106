//! The [`Reranker`] trait: the only seam between search and models.

use crate::error::{BoxError, RerankError};

/// Scores texts against a query: one call per query and stage, with every passage of every
/// candidate in it.
///
/// Closures `Fn(&str, &[&str]) -> Result<Vec<f32>, E>` are rerankers:
///
/// ```
/// use tantivy_rerank_search::Reranker;
/// let by_length = |_q: &str, texts: &[&str]| {
///     Ok::<_, std::convert::Infallible>(texts.iter().map(|t| t.len() as f32).collect())
/// };
/// assert_eq!(by_length.rerank("q", &["a", "abc"]).unwrap(), vec![1.0, 3.0]);
/// assert!(by_length.tokenizer().is_none());
/// ```
pub trait Reranker: Send + Sync {
    /// One score per text, in the order of `texts`. Higher is more relevant.
    fn rerank(&self, query: &str, texts: &[&str]) -> Result<Vec<f32>, RerankError>;

    /// The model's tokenizer and how the model reads its input, when it has one: passages are
    /// then cut by model tokens and never longer than the model reads whole. `None` (the
    /// default): passages are cut by whitespace-separated words, with no length limit.
    fn tokenizer(&self) -> Option<ModelTokenizer<'_>> {
        None
    }
}

/// What passage cutting needs from a model's tokenizer.
pub trait PassageTokenizer: Send + Sync {
    /// Byte ranges in `text` of its tokens (no special tokens), at least the first `need` of
    /// them (all when the text has fewer; `usize::MAX` for all). A tokenizer may stop early
    /// to spare the work of tokenising a long text whole.
    fn token_spans(&self, text: &str, need: usize) -> Result<Vec<(usize, usize)>, BoxError>;

    /// The number of tokens of `text`, without special tokens.
    fn count_tokens(&self, text: &str) -> Result<usize, BoxError>;

    /// The special tokens the model's input carries: of a (query, text) pair when `pair`,
    /// else of a text alone.
    fn special_tokens(&self, pair: bool) -> usize;

    /// The most tokens one input may have, special tokens included.
    fn max_tokens(&self) -> usize;
}

/// How a model reads a passage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelInput {
    /// Query and passage as one input, `[CLS] query [SEP] passage [SEP]` (a cross-encoder):
    /// the query takes room from the passage.
    WithQuery,
    /// Each passage alone, `[CLS] passage [SEP]` (a bi-encoder).
    Alone,
}

/// A reranker's tokenizer, as [`Reranker::tokenizer`] gives it.
#[derive(Clone, Copy)]
pub struct ModelTokenizer<'a> {
    /// The tokenizer.
    pub tokenizer: &'a dyn PassageTokenizer,
    /// How the model reads each passage.
    pub input: ModelInput,
}

impl std::fmt::Debug for ModelTokenizer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelTokenizer")
            .field("max_tokens", &self.tokenizer.max_tokens())
            .field("input", &self.input)
            .finish()
    }
}

/// The fewest tokens a passage scored next to a long query is given: a query that leaves
/// less room than this is cut by the model's truncation instead.
pub const MIN_PASSAGE_TOKENS: usize = 8;

impl ModelTokenizer<'_> {
    /// The most tokens a passage scored against `query` may have so that the model reads it
    /// whole: the model's maximum, less its special tokens and (for [`ModelInput::WithQuery`])
    /// the query's tokens; at least [`MIN_PASSAGE_TOKENS`] with a query, 1 without.
    pub fn passage_budget(&self, query: &str) -> Result<usize, BoxError> {
        let max = self.tokenizer.max_tokens();
        Ok(match self.input {
            ModelInput::WithQuery => {
                let query_tokens = self.tokenizer.count_tokens(query)?;
                max.saturating_sub(query_tokens + self.tokenizer.special_tokens(true))
                    .max(MIN_PASSAGE_TOKENS)
            }
            ModelInput::Alone => max
                .saturating_sub(self.tokenizer.special_tokens(false))
                .max(1),
        })
    }
}

impl<F, E> Reranker for F
where
    F: Fn(&str, &[&str]) -> Result<Vec<f32>, E> + Send + Sync,
    E: Into<BoxError>,
{
    fn rerank(&self, query: &str, texts: &[&str]) -> Result<Vec<f32>, RerankError> {
        self(query, texts).map_err(|e| RerankError::Model(e.into()))
    }
}

/// Load a model as a [`Reranker`]: a cross-encoder (sequence-classification checkpoint) with
/// `cross`, or, when the checkpoint is a plain encoder, an embedding model scoring by cosine
/// similarity with `bi`. `id_or_dir` is a local directory or a Hugging Face Hub id.
///
/// ```no_run
/// use tantivy_rerank_encoders::{BiEncoderOptions, CrossEncoderOptions};
/// let cross = CrossEncoderOptions::default();
/// let bi = BiEncoderOptions::from(&cross).embedding_cache(0);
/// let reranker = tantivy_rerank_search::load_model_reranker("models/any", cross, bi)?;
/// # Ok::<(), tantivy_rerank_encoders::EncoderError>(())
/// ```
#[cfg(feature = "encoders")]
pub fn load_model_reranker(
    id_or_dir: &str,
    cross: tantivy_rerank_encoders::CrossEncoderOptions,
    bi: tantivy_rerank_encoders::BiEncoderOptions,
) -> Result<Box<dyn Reranker>, tantivy_rerank_encoders::EncoderError> {
    use tantivy_rerank_encoders::{BiEncoder, CrossEncoder, EncoderError};
    match CrossEncoder::load(id_or_dir, cross) {
        Ok(m) => Ok(Box::new(m)),
        Err(EncoderError::UnsupportedArchitecture { .. }) => {
            Ok(Box::new(BiEncoder::load(id_or_dir, bi)?))
        }
        Err(e) => Err(e),
    }
}

/// A [`Reranker`] that scores through an
/// [`InferenceQueue`](tantivy_rerank_encoders::InferenceQueue): its pairs share the model's
/// batches with every other caller of the queue (a service's requests). With a
/// [`CancelToken`](crate::CancelToken), a call whose token is cancelled (or whose deadline
/// passes) while it waits withdraws its pairs that have not run and fails with
/// [`RerankError::Cancelled`].
#[cfg(feature = "encoders")]
#[derive(Debug, Clone)]
pub struct QueuedReranker {
    queue: tantivy_rerank_encoders::InferenceQueue,
    cancel: Option<crate::CancelToken>,
}

#[cfg(feature = "encoders")]
impl QueuedReranker {
    /// Score through `queue`, giving up once `cancel` (when given) is cancelled.
    pub fn new(
        queue: tantivy_rerank_encoders::InferenceQueue,
        cancel: Option<crate::CancelToken>,
    ) -> Self {
        Self { queue, cancel }
    }
}

#[cfg(feature = "encoders")]
mod encoders {
    use super::*;
    use tantivy_rerank_encoders::{BiEncoder, CrossEncoder, PairTokenizer};

    /// The queue's model scores, in its shared batches.
    impl Reranker for QueuedReranker {
        fn rerank(&self, query: &str, texts: &[&str]) -> Result<Vec<f32>, RerankError> {
            let cancelled = || self.cancel.as_ref().is_some_and(|c| c.is_cancelled());
            if cancelled() {
                return Err(RerankError::Cancelled);
            }
            let ticket = self.queue.rerank(query, texts, None)?;
            // Dropping the ticket (when the wait gives up) withdraws the pairs not yet run.
            let predictions = ticket.wait_until(cancelled)?;
            Ok(predictions.into_iter().map(|p| p.score).collect())
        }
        fn tokenizer(&self) -> Option<ModelTokenizer<'_>> {
            Reranker::tokenizer(self.queue.model().as_ref())
        }
    }

    impl PassageTokenizer for PairTokenizer {
        fn token_spans(&self, text: &str, need: usize) -> Result<Vec<(usize, usize)>, BoxError> {
            Ok(self.token_spans_head(text, need)?)
        }
        fn count_tokens(&self, text: &str) -> Result<usize, BoxError> {
            Ok(PairTokenizer::count_tokens(self, text)?)
        }
        fn special_tokens(&self, pair: bool) -> usize {
            PairTokenizer::special_tokens(self, pair)
        }
        fn max_tokens(&self) -> usize {
            self.max_length().unwrap_or(usize::MAX)
        }
    }

    /// Scores (query, text) pairs jointly with [`CrossEncoder::scores`].
    impl Reranker for CrossEncoder {
        fn rerank(&self, query: &str, texts: &[&str]) -> Result<Vec<f32>, RerankError> {
            let pairs: Vec<(&str, &str)> = texts.iter().map(|t| (query, *t)).collect();
            Ok(self.scores(&pairs)?)
        }
        fn tokenizer(&self) -> Option<ModelTokenizer<'_>> {
            Some(ModelTokenizer {
                tokenizer: CrossEncoder::tokenizer(self),
                input: ModelInput::WithQuery,
            })
        }
    }

    /// Cosine similarity of query and text embeddings ([`BiEncoder::score`]).
    impl Reranker for BiEncoder {
        fn rerank(&self, query: &str, texts: &[&str]) -> Result<Vec<f32>, RerankError> {
            Ok(self.score(query, texts)?)
        }
        fn tokenizer(&self) -> Option<ModelTokenizer<'_>> {
            Some(ModelTokenizer {
                tokenizer: BiEncoder::tokenizer(self),
                input: ModelInput::Alone,
            })
        }
    }
}
