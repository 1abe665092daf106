//! Request and response bodies, field for field as text-embeddings-inference and Cohere's
//! rerank API define them. Unknown request fields are ignored; optional ones may be `null`.

use serde::{Deserialize, Serialize};

/// `POST /rerank` (TEI).
#[derive(Debug, Clone, Deserialize)]
pub struct TeiRerankRequest {
    /// The query.
    pub query: String,
    /// The texts to score (`documents` is taken as an alias).
    #[serde(alias = "documents")]
    pub texts: Vec<String>,
    /// Scores before the activation (default false).
    #[serde(default)]
    pub raw_scores: Option<bool>,
    /// Echo each text (`return_documents` is taken as an alias).
    #[serde(default, alias = "return_documents")]
    pub return_text: Option<bool>,
    /// Texts are always cut to the model's length; accepted for compatibility.
    #[serde(default)]
    pub truncate: Option<bool>,
    /// `right` (default); `left` is refused.
    #[serde(default)]
    pub truncation_direction: Option<String>,
    /// Keep only the best `top_n` (Elasticsearch sends it; TEI itself ignores it).
    #[serde(default)]
    pub top_n: Option<usize>,
}

/// One item of a TEI `/rerank` answer: only these fields (Elasticsearch's parser refuses
/// others).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeiRank {
    /// Index of the text in the request.
    pub index: usize,
    /// The text, when asked for.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub text: Option<String>,
    /// Its score.
    pub score: f32,
}

/// `POST /predict` (TEI): one text, one pair, or a batch of texts and pairs.
#[derive(Debug, Clone, Deserialize)]
pub struct PredictRequest {
    /// The input(s).
    pub inputs: PredictInputs,
    /// Logits instead of probabilities.
    #[serde(default)]
    pub raw_scores: Option<bool>,
    /// Accepted for compatibility; inputs are always cut to the model's length.
    #[serde(default)]
    pub truncate: Option<bool>,
    /// `right` (default); `left` is refused.
    #[serde(default)]
    pub truncation_direction: Option<String>,
}

/// The forms of `/predict` inputs.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PredictInputs {
    /// `"text"`.
    Single(String),
    /// `["text"]` or `["query", "document"]`.
    One(Vec<String>),
    /// `[["text"], ["query", "document"], ...]`.
    Batch(Vec<Vec<String>>),
}

/// One label of a `/predict` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelScore {
    /// Its probability (or logit with `raw_scores`).
    pub score: f32,
    /// The label name from `id2label`.
    pub label: String,
}

/// A Cohere document: a string, or an object whose `text` (or `rank_fields`) is read.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CohereDocument {
    /// The text.
    Text(String),
    /// Fields.
    Object(serde_json::Map<String, serde_json::Value>),
}

/// `POST /v1/rerank` and `POST /v2/rerank` (Cohere).
#[derive(Debug, Clone, Deserialize)]
pub struct CohereRerankRequest {
    /// Ignored: this service serves one model.
    #[serde(default)]
    pub model: Option<String>,
    /// The query.
    pub query: String,
    /// The documents.
    pub documents: Vec<CohereDocument>,
    /// Keep only the best `top_n` (default all).
    #[serde(default)]
    pub top_n: Option<usize>,
    /// Echo each document as `{"text": ...}` (default false).
    #[serde(default)]
    pub return_documents: Option<bool>,
    /// Cut each document into at most this many chunks of what fits next to the query and
    /// score it by its best chunk (default 1: the document cut at the model's length).
    #[serde(default)]
    pub max_chunks_per_doc: Option<usize>,
    /// Cut each document to its first this-many tokens before scoring.
    #[serde(default)]
    pub max_tokens_per_doc: Option<usize>,
    /// Of object documents, the fields to read, in order (default `text`).
    #[serde(default)]
    pub rank_fields: Option<Vec<String>>,
}

/// A Cohere result: only these fields (Elasticsearch's parser refuses others).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohereResult {
    /// Index of the document in the request.
    pub index: usize,
    /// Its score.
    pub relevance_score: f32,
    /// The document, when asked for.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub document: Option<CohereText>,
}

/// `{"text": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohereText {
    /// The text.
    pub text: String,
}

/// A Cohere rerank answer (`results` before `meta`, as some parsers need).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohereRerankResponse {
    /// A request id.
    pub id: String,
    /// Best first.
    pub results: Vec<CohereResult>,
    /// API version and billed units.
    pub meta: CohereMeta,
}

/// Cohere's `meta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohereMeta {
    /// `{"version": "1"}` or `"2"`.
    pub api_version: CohereApiVersion,
    /// `{"search_units": 1}`.
    pub billed_units: CohereBilledUnits,
}

/// Cohere's `meta.api_version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohereApiVersion {
    /// `"1"` or `"2"`.
    pub version: String,
}

/// Cohere's `meta.billed_units`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohereBilledUnits {
    /// Always 1 here.
    pub search_units: u32,
}

/// `POST /search`: BM25 then rerank on the served index.
#[derive(Debug, Clone, Deserialize)]
pub struct SearchRequest {
    /// The query.
    pub query: String,
    /// Hits returned (default 10).
    #[serde(default)]
    pub top: Option<usize>,
    /// Candidates reranked (default 100).
    #[serde(default)]
    pub window: Option<usize>,
}

/// `GET /info`: TEI's fields, plus the labels, device and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Info {
    /// The model as given (directory or Hub id).
    pub model_id: String,
    /// `float32`, `bfloat16` or `float16`.
    pub model_dtype: String,
    /// `{"reranker": {"id2label": ..., "label2id": ...}}`.
    pub model_type: serde_json::Value,
    /// Label names in index order.
    pub labels: Vec<String>,
    /// How logits become a score (`single`, `binary`, `graded`).
    pub head: String,
    /// The architecture (`bert`, `xlm-roberta`, `electra`, `modernbert`, `qwen3`, ...).
    pub architecture: String,
    /// How the model produces its logits: `{"kind": "classifier"}` (a classification head),
    /// or `{"kind": "token_logits", "true_token", "true_id", "false_token", "false_id"}` (a
    /// causal language model scored by `logit(true) - logit(false)` at the last token).
    pub scoring: serde_json::Value,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Most tokens per (query, document) pair.
    pub max_input_length: usize,
    /// Texts are always cut to `max_input_length`.
    pub auto_truncate: bool,
    /// Requests served at once; more get 429.
    pub max_concurrent_requests: usize,
    /// Padded tokens per model batch (pairs of all requests together).
    pub max_batch_tokens: Option<usize>,
    /// Pairs per model batch.
    pub max_batch_size: usize,
    /// Largest request body in bytes (larger: 413).
    pub payload_limit: usize,
    /// Texts, documents or inputs of one request at most (more: 422).
    pub max_documents: usize,
    /// (query, passage) pairs one request may have scored (more: 422).
    pub max_passages: usize,
    /// The largest `/search` window and `top` (more: 422).
    pub max_search_window: usize,
    /// The longest query in model tokens (longer: 422).
    pub max_query_tokens: usize,
    /// The most BM25 terms of a `/search` query (more: 422).
    pub max_query_terms: usize,
    /// Whether `POST /search` is served.
    pub search: bool,
    /// This crate's version.
    pub version: String,
}
