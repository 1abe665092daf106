//! The [`Reranker`] trait: the only seam between search and models.

use crate::error::{BoxError, RerankError};

/// Scores texts against a query. One call per query: the pipeline batches every passage
/// of every candidate into one `rerank` call.
pub trait Reranker: Send + Sync {
    /// One score per text, in the order of `texts`. Higher is more relevant.
    fn rerank(&self, query: &str, texts: &[&str]) -> Result<Vec<f32>, RerankError>;

    /// Maximum input length of the model in tokens, if it has one.
    fn max_tokens(&self) -> Option<usize> {
        None
    }

    /// Number of model tokens in `text`, if the reranker can count them. Used to shrink
    /// passages that would not fit [`Reranker::max_tokens`].
    fn count_tokens(&self, text: &str) -> Option<usize> {
        self.token_spans(text).map(|s| s.len())
    }

    /// Byte ranges of the model's tokens in `text`, if the reranker has a tokenizer. Passages
    /// are then cut by model tokens; otherwise by whitespace-separated words.
    fn token_spans(&self, _text: &str) -> Option<Vec<(usize, usize)>> {
        None
    }

    /// [`token_spans`](Self::token_spans) when only the first `need` tokens matter: at
    /// least that many of them (all when the text has fewer). Passages are cut from these, so
    /// a long document is tokenised only as far as its scored passages reach. The default
    /// tokenises the whole text.
    fn token_spans_head(&self, text: &str, _need: usize) -> Option<Vec<(usize, usize)>> {
        self.token_spans(text)
    }

    /// The most tokens a passage scored against `query` may have so that the model reads it
    /// whole; passages are cut no longer than this. `None`: no limit.
    ///
    /// The default suits models that read query and passage as one input,
    /// `[CLS] query [SEP] passage [SEP]` (cross-encoders): [`max_tokens`](Self::max_tokens)
    /// minus the query's tokens and 3 special tokens, and at least 8. A model that reads each
    /// passage on its own (a bi-encoder) overrides it.
    fn passage_budget(&self, query: &str) -> Option<usize> {
        let max = self.max_tokens()?;
        let query_tokens = self.count_tokens(query)?;
        Some(max.saturating_sub(query_tokens + 3).max(8))
    }
}

impl<R: Reranker + ?Sized> Reranker for &R {
    fn rerank(&self, query: &str, texts: &[&str]) -> Result<Vec<f32>, RerankError> {
        (**self).rerank(query, texts)
    }
    fn max_tokens(&self) -> Option<usize> {
        (**self).max_tokens()
    }
    fn count_tokens(&self, text: &str) -> Option<usize> {
        (**self).count_tokens(text)
    }
    fn token_spans(&self, text: &str) -> Option<Vec<(usize, usize)>> {
        (**self).token_spans(text)
    }
    fn token_spans_head(&self, text: &str, need: usize) -> Option<Vec<(usize, usize)>> {
        (**self).token_spans_head(text, need)
    }
    fn passage_budget(&self, query: &str) -> Option<usize> {
        (**self).passage_budget(query)
    }
}

/// A [`Reranker`] made of a closure `Fn(&str, &[&str]) -> Result<Vec<f32>, E>`.
///
/// ```
/// use tantivy_rerank_search::{FnReranker, Reranker};
/// let by_length = FnReranker::new(|_q: &str, texts: &[&str]| {
///     Ok::<_, std::convert::Infallible>(texts.iter().map(|t| t.len() as f32).collect())
/// });
/// assert_eq!(by_length.rerank("q", &["a", "abc"]).unwrap(), vec![1.0, 3.0]);
/// ```
pub struct FnReranker<F> {
    f: F,
    max_tokens: Option<usize>,
}

impl<F> std::fmt::Debug for FnReranker<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnReranker")
            .field("max_tokens", &self.max_tokens)
            .finish()
    }
}

impl<F> FnReranker<F> {
    /// Wrap a closure.
    pub fn new(f: F) -> Self {
        FnReranker {
            f,
            max_tokens: None,
        }
    }

    /// Report a maximum length (in whitespace words, since a closure has no tokenizer).
    pub fn with_max_tokens(mut self, max_tokens: usize) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }
}

impl<F, E> Reranker for FnReranker<F>
where
    F: Fn(&str, &[&str]) -> Result<Vec<f32>, E> + Send + Sync,
    E: Into<BoxError>,
{
    fn rerank(&self, query: &str, texts: &[&str]) -> Result<Vec<f32>, RerankError> {
        (self.f)(query, texts).map_err(|e| RerankError::Model(e.into()))
    }
    fn max_tokens(&self) -> Option<usize> {
        self.max_tokens
    }
    fn count_tokens(&self, text: &str) -> Option<usize> {
        self.max_tokens.map(|_| text.split_whitespace().count())
    }
}

/// Load a model as a [`Reranker`]: a cross-encoder (sequence-classification checkpoint), or,
/// when the checkpoint is a plain encoder, an embedding model scoring by cosine similarity.
/// `id_or_dir` is a local directory or a Hugging Face Hub id.
#[cfg(feature = "encoders")]
pub fn load_model_reranker(
    id_or_dir: &str,
    options: tantivy_rerank_encoders::CrossEncoderOptions,
) -> Result<Box<dyn Reranker>, tantivy_rerank_encoders::EncoderError> {
    use tantivy_rerank_encoders::{BiEncoder, CrossEncoder, EncoderError};
    match CrossEncoder::load(id_or_dir, options.clone()) {
        Ok(m) => Ok(Box::new(m)),
        Err(EncoderError::UnsupportedArchitecture { .. }) => {
            Ok(Box::new(BiEncoder::load(id_or_dir, options)?))
        }
        Err(e) => Err(e),
    }
}

#[cfg(feature = "encoders")]
mod encoders {
    use super::*;
    use tantivy_rerank_encoders::{BiEncoder, CrossEncoder};

    /// Scores (query, text) pairs jointly with [`CrossEncoder::scores`].
    impl Reranker for CrossEncoder {
        fn rerank(&self, query: &str, texts: &[&str]) -> Result<Vec<f32>, RerankError> {
            let pairs: Vec<(&str, &str)> = texts.iter().map(|t| (query, *t)).collect();
            Ok(self.scores(&pairs)?)
        }
        fn max_tokens(&self) -> Option<usize> {
            Some(self.max_length())
        }
        fn token_spans(&self, text: &str) -> Option<Vec<(usize, usize)>> {
            self.tokenizer().token_spans(text).ok()
        }
        fn count_tokens(&self, text: &str) -> Option<usize> {
            self.tokenizer().count_tokens(text).ok()
        }
        fn token_spans_head(&self, text: &str, need: usize) -> Option<Vec<(usize, usize)>> {
            self.tokenizer().token_spans_head(text, need).ok()
        }
    }

    /// Cosine similarity of query and text embeddings ([`BiEncoder::score`]).
    impl Reranker for BiEncoder {
        fn rerank(&self, query: &str, texts: &[&str]) -> Result<Vec<f32>, RerankError> {
            Ok(self.score(query, texts)?)
        }
        fn max_tokens(&self) -> Option<usize> {
            Some(self.max_length())
        }
        fn token_spans(&self, text: &str) -> Option<Vec<(usize, usize)>> {
            self.tokenizer().token_spans(text).ok()
        }
        fn count_tokens(&self, text: &str) -> Option<usize> {
            self.tokenizer().count_tokens(text).ok()
        }
        fn token_spans_head(&self, text: &str, need: usize) -> Option<Vec<(usize, usize)>> {
            self.tokenizer().token_spans_head(text, need).ok()
        }
        /// Each passage is embedded alone (`[CLS] passage [SEP]`): the query takes no room.
        fn passage_budget(&self, _query: &str) -> Option<usize> {
            Some(self.max_length().saturating_sub(2).max(1))
        }
    }
}
