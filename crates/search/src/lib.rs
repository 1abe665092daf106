//! Retrieve-then-rerank search with tantivy: any first stage, a neural second stage.
//!
//! - [`Cascade`] is the second stage for any tantivy search — your schema, your query, your
//!   collector: one reranking [`Stage`] or a chain of them (a small model on the top 100,
//!   then a large one on the top 10), with passages of long documents ([`PassageOptions`]),
//!   passage aggregation ([`Aggregation`]), score fusion ([`Combination`]) and an optional
//!   per-query latency budget. Run it on the `(score, DocAddress)` candidates of any
//!   collector ([`Cascade::rerank`]) or as a collector wrapping one ([`RerankCollector`]).
//!   A [`DocLoader`] gives each candidate's text: named stored fields ([`StoredText`]) or a
//!   closure of your own.
//! - [`Reranker`] is the only seam to models: any closure, or, with the default `encoders`
//!   feature, `tantivy_rerank_encoders::CrossEncoder` and `BiEncoder`.
//! - [`ArticleIndex`] is a ready-made on-disk article index (`id`, `title`, `body`) with
//!   imports of BEIR `corpus.jsonl`, generic JSONL and folders of `.txt`/`.md` files, and one
//!   [`ArticleIndex::search`] (BM25, or BM25 then a cascade).
//!
//! ```
//! use tantivy_rerank_search::{Article, ArticleIndex, Cascade, ImportOptions, SearchOptions};
//! # fn main() -> Result<(), tantivy_rerank_search::SearchError> {
//! # let dir = tempfile::tempdir().unwrap();
//! let index = ArticleIndex::create(dir.path(), &Default::default())?;
//! index.import_articles(
//!     [Article { id: "a".into(), title: "Rust".into(), body: "A systems language.".into() }],
//!     &ImportOptions::default(),
//! )?;
//! let overlap = |q: &str, texts: &[&str]| {
//!     Ok::<_, std::convert::Infallible>(texts.iter().map(|t| t.matches(q).count() as f32).collect())
//! };
//! let cascade = Cascade::of(overlap);
//! let results = index.search("language", &SearchOptions::default().rerank(&cascade))?;
//! assert_eq!(results.hits[0].doc.id, "a");
//! assert_eq!(results.hits[0].rerank_score, Some(1.0));
//! # Ok(()) }
//! ```

mod cancel;
mod cascade;
mod collector;
mod error;
mod import;
mod index;
mod loader;
mod passages;
mod query_check;
mod rerank;
mod reranker;
mod schema;
mod stored;

pub use cancel::{CancelReason, CancelToken};
pub use cascade::{Cascade, Stage};
pub use collector::{FirstStageScore, RerankCollector, TaggedSegmentCollector};
pub use error::{BoxError, RerankError, Result, SearchError};
pub use import::{
    id_problem, json_kind, read_corpus, Article, FieldMapping, ImportOptions, ImportReport,
    MAX_ID_BYTES,
};
pub use index::{
    ArticleIndex, ArticleLoader, QueryFields, QueryOptions, SearchOptions, SearchResults,
    DEFAULT_MAX_QUERY_TERMS, DEFAULT_TITLE_BOOST, MAX_TITLE_BOOST,
};
pub use loader::{DocLoader, StoredText};
pub use passages::{split_passages, split_spans, PassageOptions};
pub use query_check::{check_query, MAX_QUERY_BOOST, MAX_QUERY_DEPTH};
pub use rerank::{
    Aggregation, Combination, Hit, PassageHit, RerankOptions, RerankResults, StageOptions,
    StageReport, Timings,
};
#[cfg(feature = "encoders")]
pub use reranker::{load_model_reranker, QueuedReranker};
pub use reranker::{ModelInput, ModelTokenizer, PassageTokenizer, Reranker, MIN_PASSAGE_TOKENS};
pub use schema::{
    Analyzer, ArticleFields, SchemaOptions, ALL_FIELD, BODY_FIELD, ID_FIELD, TITLE_FIELD,
};
