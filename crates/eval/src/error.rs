//! The error type of the evaluation crate.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;

/// Everything that can go wrong while loading a dataset or evaluating a system.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a JSONL or TSV file cannot be parsed.
    #[error("{path}:{line}:{column}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// 1-based column (character) of the problem, 1 when unknown.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A record lacks a required field (JSONL).
    #[error("{path}:{line}: missing field `{field}`")]
    MissingField {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The field.
        field: String,
    },
    /// The same document or query id appears twice.
    #[error(
        "{path}:{line}: duplicate {kind} id `{id}` (first seen at {}:{first_line})",
        first_path.display()
    )]
    DuplicateId {
        /// The file.
        path: PathBuf,
        /// 1-based line (or row) of the second occurrence.
        line: usize,
        /// The file of the first occurrence (another file of the same split, or `path`).
        first_path: PathBuf,
        /// 1-based line (or row) of the first occurrence, in `first_path`.
        first_line: usize,
        /// `document` or `query`.
        kind: &'static str,
        /// The id.
        id: String,
    },
    /// A required file is missing.
    #[error("{path}: {what}")]
    MissingFile {
        /// The path that was looked for.
        path: PathBuf,
        /// What it should have been.
        what: String,
    },
    /// A parquet file lacks a required column.
    #[error("{path}: parquet file has no column `{column}` (columns: {available})")]
    MissingColumn {
        /// The parquet file.
        path: PathBuf,
        /// The missing column.
        column: String,
        /// The columns it has, comma separated.
        available: String,
    },
    /// A parquet column has a type this loader cannot read.
    #[error("{path}: column `{column}` has type {found}, expected {expected}")]
    ColumnType {
        /// The parquet file.
        path: PathBuf,
        /// The column.
        column: String,
        /// What was expected.
        expected: &'static str,
        /// What the file has.
        found: String,
    },
    /// A parquet cell that must hold a value is null.
    #[error("{path}: column `{column}` is null in row {row}")]
    NullValue {
        /// The parquet file.
        path: PathBuf,
        /// The column.
        column: String,
        /// 1-based row.
        row: usize,
    },
    /// The parquet reader failed.
    #[error("{path}: parquet error: {source}")]
    Parquet {
        /// The parquet file.
        path: PathBuf,
        /// The parquet error.
        #[source]
        source: Box<parquet::errors::ParquetError>,
    },
    /// The arrow decoder failed.
    #[error("{path}: arrow error: {source}")]
    Arrow {
        /// The parquet file.
        path: PathBuf,
        /// The arrow error.
        #[source]
        source: Box<arrow_schema::ArrowError>,
    },
    /// A `--dataset` specification cannot be understood.
    #[error("invalid dataset `{spec}`: {reason}")]
    DatasetSpec {
        /// The specification.
        spec: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The dataset has nothing to evaluate.
    #[error("index {path} does not hold the corpus of dataset {dataset}: {reason}; remove it or give another index directory")]
    IndexMismatch {
        /// The index directory.
        path: PathBuf,
        /// The dataset name.
        dataset: String,
        /// What differs.
        reason: String,
    },
    #[error("dataset {dataset}: {reason}")]
    EmptyDataset {
        /// The dataset name.
        dataset: String,
        /// What is missing.
        reason: String,
    },
    /// Downloading from the Hugging Face Hub failed.
    #[error("Hub dataset {repo}: {source}")]
    Hub {
        /// The dataset repo.
        repo: String,
        /// The error.
        #[source]
        source: Box<tantivy_rerank_encoders::EncoderError>,
    },
    /// The cross-encoder failed while being benchmarked.
    #[error("model failed on {context}: {source}")]
    Model {
        /// The workload and query.
        context: String,
        /// The error.
        #[source]
        source: Box<tantivy_rerank_encoders::EncoderError>,
    },
    /// An option has a value that cannot work.
    #[error("invalid option {option} = {value}: {reason}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// Its value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// Indexing or searching failed.
    #[error("search failed ({context}): {source}")]
    Search {
        /// What was being done (query id, index path).
        context: String,
        /// The error.
        #[source]
        source: Box<tantivy_rerank_search::SearchError>,
    },
    /// The reranker failed on a query.
    #[error("reranking query `{query_id}` failed: {source}")]
    Rerank {
        /// The query id.
        query_id: String,
        /// The error.
        #[source]
        source: Box<tantivy_rerank_search::RerankError>,
    },
    /// The reranker returned a wrong number of scores or a non-finite score.
    #[error("reranker output for query `{query_id}` is unusable: {reason}")]
    BadScores {
        /// The query id.
        query_id: String,
        /// What is wrong.
        reason: String,
    },
    /// A query or document id cannot go into a whitespace-separated TREC run file.
    #[error("{path}: {kind} id `{id}` cannot be written to a TREC run: it is empty or contains whitespace")]
    UnwritableId {
        /// The run file.
        path: PathBuf,
        /// `query` or `document`.
        kind: &'static str,
        /// The id.
        id: String,
    },
    /// Serialising the report failed.
    #[error("writing JSON to {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
}

impl EvalError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> EvalError {
        let path = path.into();
        move |source| EvalError::Io { path, source }
    }
}
