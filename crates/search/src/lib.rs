//! Article search with tantivy: BM25 first stage, neural reranking second stage.
//!
//! - [`ArticleIndex`] creates or opens an on-disk index of articles (`id`, `title`,
//!   `body`), imports BEIR `corpus.jsonl`, generic JSONL or directories of `.txt`/`.md`
//!   files, and searches it with BM25 ([`ArticleIndex::search_bm25`]) or BM25 + a
//!   reranker ([`ArticleIndex::search_reranked`]).
//! - [`Reranker`] is the only seam to models: any closure ([`FnReranker`]) or, with the
//!   default `encoders` feature, `tantivy_rerank_encoders::CrossEncoder` and `BiEncoder`.
//! - [`RerankCollector`] is the tantivy `Collector` of the first stage for any query.
//!
//! Long documents are split into passages ([`PassageOptions`]), all passages of all
//! candidates are scored in one reranker call, and passage scores are aggregated per
//! document ([`Aggregation`]); the final order can fuse BM25 and rerank scores
//! ([`Combination`]).
//!
//! ```
//! use tantivy_rerank_search::{Article, ArticleIndex, FnReranker, ImportOptions, RerankOptions};
//! # fn main() -> Result<(), tantivy_rerank_search::SearchError> {
//! # let dir = tempfile::tempdir().unwrap();
//! let index = ArticleIndex::create(dir.path(), &Default::default())?;
//! index.import_articles(
//!     [Article { id: "a".into(), title: "Rust".into(), body: "A systems language.".into() }],
//!     &ImportOptions::default(),
//! )?;
//! let overlap = FnReranker::new(|q: &str, texts: &[&str]| {
//!     Ok::<_, std::convert::Infallible>(texts.iter().map(|t| t.matches(q).count() as f32).collect())
//! });
//! let results = index.search_reranked("language", &overlap, &RerankOptions::default())?;
//! assert_eq!(results.hits[0].id, "a");
//! assert_eq!(results.hits[0].rerank_score, Some(1.0));
//! # Ok(()) }
//! ```

mod collector;
mod error;
mod import;
mod index;
mod passages;
mod rerank;
mod reranker;
mod schema;

pub use collector::{Candidates, RerankCollector};
pub use error::{BoxError, RerankError, Result, SearchError};
pub use import::{id_problem, Article, FieldMapping, ImportOptions, ImportReport, MAX_ID_BYTES};
pub use index::{ArticleIndex, QueryFields, QueryOptions, DEFAULT_TITLE_BOOST, MAX_TITLE_BOOST};
pub use passages::{split_passages, split_spans, PassageOptions};
pub use rerank::{
    Aggregation, Candidate, Combination, Hit, PassageHit, RerankOptions, RerankResults, Timings,
};
#[cfg(feature = "encoders")]
pub use reranker::load_model_reranker;
pub use reranker::{FnReranker, Reranker};
pub use schema::{
    Analyzer, ArticleFields, SchemaOptions, ALL_FIELD, BODY_FIELD, ID_FIELD, TITLE_FIELD,
};
