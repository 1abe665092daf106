//! Error types of the search crate.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = SearchError> = std::result::Result<T, E>;

/// A boxed error that a [`Reranker`](crate::Reranker) implementation may carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error a [`Reranker`](crate::Reranker) returns when it cannot score a batch.
#[derive(Debug, thiserror::Error)]
pub enum RerankError {
    /// The model (or closure) failed.
    #[error("reranker failed: {0}")]
    Model(#[source] BoxError),
    /// The reranker's tokenizer failed on a text it was to cut into passages.
    #[error("tokenizing a text for passages failed: {0}")]
    Tokenizer(#[source] BoxError),
    /// Any other failure, described in words.
    #[error("reranker failed: {0}")]
    Message(String),
    /// The reranker stopped because the run's [`CancelToken`](crate::CancelToken) was
    /// cancelled (or its deadline passed); the run reports [`SearchError::Cancelled`].
    #[error("reranking was cancelled")]
    Cancelled,
}

impl RerankError {
    /// Wrap any error.
    pub fn new(err: impl Into<BoxError>) -> Self {
        RerankError::Model(err.into())
    }
}

#[cfg(feature = "encoders")]
impl From<tantivy_rerank_encoders::EncoderError> for RerankError {
    fn from(err: tantivy_rerank_encoders::EncoderError) -> Self {
        match err {
            tantivy_rerank_encoders::EncoderError::Cancelled => RerankError::Cancelled,
            other => RerankError::Model(Box::new(other)),
        }
    }
}

/// Everything that can go wrong while indexing or searching.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// [`ArticleIndex::open`](crate::ArticleIndex::open) on a directory that does not exist
    /// or holds no tantivy index.
    #[error("no index found at {path}")]
    IndexNotFound {
        /// The directory that was asked for.
        path: PathBuf,
    },
    /// Another `IndexWriter` (in this or another process) holds the index lock.
    #[error("the index at {path} is locked by another writer")]
    IndexLocked {
        /// The index directory.
        path: PathBuf,
    },
    /// The index exists but lacks a field this crate needs, or has it with other options
    /// (it was not created by this crate).
    #[error("the index at {path} does not fit field `{field}`: {reason} (not an article index?)")]
    SchemaMismatch {
        /// The index directory.
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The disk holding the index (or the user's quota on it) is full. Nothing of the
    /// import was committed, and the files it had written were removed.
    #[error("the disk holding the index at {path} is full ({cause}) while {context}: nothing of this import was committed and its partial files were removed; free some space and import again")]
    DiskFull {
        /// The index directory.
        path: PathBuf,
        /// What was being done.
        context: String,
        /// The underlying error, in words.
        cause: String,
    },
    /// Reading a file or directory failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSONL line is not valid JSON or not a JSON object.
    #[error("{path}:{line}:{column}: malformed JSON line: {message}")]
    MalformedLine {
        /// The JSONL file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// 1-based column of the problem (1 when it concerns the whole line).
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// A JSONL record lacks the id field or the body field.
    #[error("{path}:{line}: missing field `{field}`")]
    MissingField {
        /// The JSONL file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The field that was expected.
        field: String,
    },
    /// A JSONL field has a type that cannot be used (e.g. an object or a number as title).
    #[error("{path}:{line}: field `{field}` must be {expected}, got {got}: {value}")]
    InvalidField {
        /// The JSONL file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The field name.
        field: String,
        /// What it must be (`a string or null`, ...).
        expected: &'static str,
        /// What JSON type it is (`a number`, ...).
        got: &'static str,
        /// The offending value (abridged).
        value: String,
    },
    /// A document id that tantivy cannot hold as one term: empty, or longer than its term limit.
    #[error("document id {id} cannot be indexed: {reason}")]
    InvalidId {
        /// The id (abridged).
        id: String,
        /// Why.
        reason: String,
    },
    /// An unknown analyzer name.
    #[error("unknown analyzer `{name}` (expected one of: en_stem, en_stem_stop)")]
    UnknownAnalyzer {
        /// The name given.
        name: String,
    },
    /// An option has a value that cannot work.
    #[error("invalid option {option} = {value}: {reason}")]
    InvalidOption {
        /// The option name.
        option: &'static str,
        /// Its value.
        value: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A query string that the query parser cannot take safely (see
    /// [`check_query`](crate::check_query)).
    #[error("query refused: {reason}")]
    InvalidQuery {
        /// Why.
        reason: String,
    },
    /// tantivy panicked on what it read from the index (a corrupted segment file); the
    /// index cannot be used as it is.
    #[error("the index at {path} looks corrupted: tantivy failed while {context}: {message}")]
    Corrupted {
        /// The index directory.
        path: PathBuf,
        /// What was being done.
        context: String,
        /// tantivy's panic message.
        message: String,
    },
    /// A file of the index directory lists something outside it.
    #[error("{path} lists {entry:?}: {reason}; refusing to open the index (its cleanup would delete that file)")]
    UnsafeIndexFile {
        /// The file (`.managed.json`).
        path: PathBuf,
        /// The entry.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// The query has more terms than the search takes
    /// ([`SearchOptions::max_query_terms`](crate::SearchOptions::max_query_terms)): each
    /// term costs the query memory, so a huge query is refused before tantivy builds it.
    #[error("query refused: it has {terms} or more terms; at most {max} (max_query_terms)")]
    QueryTooLong {
        /// Terms counted (counting stops just past the cap).
        terms: usize,
        /// The cap.
        max: usize,
    },
    /// The run was stopped by its [`CancelToken`](crate::CancelToken).
    #[error("the search stopped because {reason}")]
    Cancelled {
        /// A cancel call, or the deadline.
        reason: crate::CancelReason,
    },
    /// The reranker failed for a query.
    #[error("reranking query {query:?} failed: {source}")]
    Rerank {
        /// The query.
        query: String,
        /// The reranker's error.
        #[source]
        source: RerankError,
    },
    /// The reranker returned a different number of scores than texts.
    #[error("reranker returned {got} scores for {expected} texts (query {query:?})")]
    ScoreCountMismatch {
        /// The query.
        query: String,
        /// Number of texts sent.
        expected: usize,
        /// Number of scores received.
        got: usize,
    },
    /// The reranker returned NaN or an infinity.
    #[error(
        "reranker returned a non-finite score {value} for the document {doc} (query {query:?})"
    )]
    NonFiniteScore {
        /// The query.
        query: String,
        /// The document whose (passage) score is not finite: its address and first-stage rank.
        doc: String,
        /// The score.
        value: f32,
    },
    /// A [`DocLoader`](crate::DocLoader) could not load a candidate's document.
    #[error("loading the document at {address} failed: {source}")]
    Load {
        /// `segment_ord/doc_id`.
        address: String,
        /// The loader's error.
        #[source]
        source: BoxError,
    },
    /// A field named for reranking text cannot give it.
    #[error("field `{field}` cannot give text to rerank: {reason}")]
    UnusableField {
        /// The field name.
        field: String,
        /// Why.
        reason: String,
    },
    /// A stored document lacks a stored field (index corrupted or foreign).
    #[error("stored document {doc_address} lacks field `{field}`")]
    MissingStoredField {
        /// `segment_ord/doc_id`.
        doc_address: String,
        /// The field.
        field: String,
    },
    /// Any other tantivy error, with what we were doing.
    #[error("tantivy error while {context}: {source}")]
    Tantivy {
        /// What was being done.
        context: String,
        /// The tantivy error.
        #[source]
        source: tantivy::TantivyError,
    },
}

impl SearchError {
    pub(crate) fn tantivy(
        context: impl Into<String>,
    ) -> impl FnOnce(tantivy::TantivyError) -> SearchError {
        let context = context.into();
        move |source| SearchError::Tantivy { context, source }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> SearchError {
        let path = path.into();
        move |source| SearchError::Io { path, source }
    }
}

/// Abridge a value for an error message.
pub(crate) fn abridge(value: &str, max_chars: usize) -> String {
    if value.chars().count() <= max_chars {
        value.to_string()
    } else {
        let mut s: String = value.chars().take(max_chars).collect();
        s.push('…');
        s
    }
}
