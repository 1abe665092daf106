//! `tantivy-rerank`: BM25 retrieval in tantivy with a neural reranking second stage.
//!
//! This facade re-exports the workspace crates so that the examples, benches and
//! integration tests at the repository root (and users who want one dependency) can reach
//! everything through one name:
//!
//! - [`encoders`]: tokenizers and candle models (BERT, ModernBERT) behind
//!   [`encoders::CrossEncoder`] and [`encoders::BiEncoder`];
//! - [`search`]: the tantivy article index, BM25 first stage, the `Reranker` trait and the
//!   retrieve-then-rerank pipeline.
pub use tantivy_rerank_encoders as encoders;
pub use tantivy_rerank_search as search;
