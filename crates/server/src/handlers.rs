//! The route handlers.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use tantivy_rerank_encoders::device::{device_name, dtype_name};
use tantivy_rerank_encoders::{CrossEncoder, EncodedPair, EncoderError, Prediction, ScoreHead};
use tantivy_rerank_search::{
    split_spans, CancelReason, CancelToken, Cascade, ModelInput, ModelTokenizer, PassageOptions,
    QueuedReranker, SearchError, SearchOptions, SearchResults, Stage,
};

use crate::api::*;
use crate::error::{ApiError, ErrorType};
use crate::{AppState, RequestPermit};

type Body<T> = Result<Json<T>, JsonRejection>;

/// Texts are cut at their end; `left` (keep the end) is not implemented.
fn check_direction(direction: Option<&str>) -> Result<(), ApiError> {
    match direction {
        None => Ok(()),
        Some(d) if d.eq_ignore_ascii_case("right") => Ok(()),
        Some(d) if d.eq_ignore_ascii_case("left") => Err(ApiError::validation(
            "truncation_direction `left` is not supported: texts longer than the model's input are cut at their end (`right`)",
        )),
        Some(other) => Err(ApiError::validation(format!(
            "truncation_direction `{other}`: expected `right`"
        ))),
    }
}

fn tokenizer_error(e: EncoderError) -> ApiError {
    ApiError::new(ErrorType::Tokenizer, e.to_string())
}

/// Run `f` on a blocking thread (tokenisation is CPU work).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(ErrorType::Backend, format!("worker task failed: {e}")))?
}

/// The model's error as the service reports it.
fn model_error(e: EncoderError) -> ApiError {
    match e {
        EncoderError::Tokenizer { .. } => tokenizer_error(e),
        EncoderError::InvalidInput { .. } => ApiError::validation(e.to_string()),
        EncoderError::Cancelled => ApiError::new(ErrorType::Backend, e.to_string()),
        other => ApiError::new(ErrorType::Backend, format!("model failed: {other}")),
    }
}

/// Predictions of `(query, text)` for each text: tokenised (and cut to the model's length) on
/// a blocking thread, then scored through the queue with every other request's pairs. The
/// texts come back for answers that echo them (no copy of a large request is made). Dropping
/// the future (the client went away) withdraws the pairs that have not run.
async fn pair_predictions(
    state: &AppState,
    query: String,
    texts: Vec<String>,
) -> Result<(Vec<Prediction>, Vec<String>), ApiError> {
    let queue = state.queue.clone();
    let (ticket, texts) = blocking(move || {
        let ticket = queue.rerank(&query, &texts, None).map_err(model_error)?;
        Ok((ticket, texts))
    })
    .await?;
    Ok((ticket.await.map_err(model_error)?, texts))
}

/// One score per prediction: the head's score, or its raw score (the model checked that
/// both are finite).
fn scores(head: &ScoreHead, predictions: &[Prediction], raw: bool) -> Vec<f32> {
    predictions
        .iter()
        .map(|p| {
            if raw {
                head.raw_score(&p.logits)
            } else {
                p.score
            }
        })
        .collect()
}

/// Indices best first (ties: lower index first), at most `top_n`.
fn ranking(scores: &[f32], top_n: Option<usize>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    if let Some(n) = top_n {
        order.truncate(n);
    }
    order
}

fn check_top_n(top_n: Option<usize>) -> Result<(), ApiError> {
    match top_n {
        Some(0) => Err(ApiError::validation("top_n must be at least 1")),
        _ => Ok(()),
    }
}

/// 422 when `value` (what `what` counts) is over the cap `max` of option `option`.
fn cap(what: &str, value: usize, max: usize, option: &str) -> Result<(), ApiError> {
    if value <= max {
        return Ok(());
    }
    let flag = option.replace('_', "-");
    Err(ApiError::validation(format!(
        "{what} is {value}, over the cap of {max} ({option}; the service's --{flag})"
    )))
}

/// 422 when `query` has more than `max_query_tokens` model tokens: tokenised only as far as
/// the cap, so a huge query costs no more than the cap to refuse.
fn check_query_tokens(state: &AppState, query: &str) -> Result<(), ApiError> {
    let max = state.options.max_query_tokens;
    let spans = state
        .model
        .tokenizer()
        .token_spans_head(query, max.saturating_add(1))
        .map_err(tokenizer_error)?;
    if spans.len() > max {
        return Err(ApiError::validation(format!(
            "the query is over the cap of {max} model tokens (max_query_tokens; the service's --max-query-tokens)"
        )));
    }
    Ok(())
}

/// `POST /rerank` (TEI).
pub(crate) async fn tei_rerank(
    State(state): State<Arc<AppState>>,
    body: Body<TeiRerankRequest>,
) -> Result<Json<Vec<TeiRank>>, ApiError> {
    let Json(req) = body?;
    check_direction(req.truncation_direction.as_deref())?;
    check_top_n(req.top_n)?;
    if req.texts.is_empty() {
        return Err(ApiError::new(ErrorType::Empty, "`texts` cannot be empty"));
    }
    let o = &state.options;
    cap(
        "the number of `texts`",
        req.texts.len(),
        o.max_documents,
        "max_documents",
    )?;
    check_query_tokens(&state, &req.query)?;
    let (predictions, texts) = pair_predictions(&state, req.query, req.texts).await?;
    let scores = scores(
        state.model.head(),
        &predictions,
        req.raw_scores.unwrap_or(false),
    );
    let with_text = req.return_text.unwrap_or(false);
    let mut texts: Vec<Option<String>> = texts.into_iter().map(Some).collect();
    let ranks = ranking(&scores, req.top_n)
        .into_iter()
        .map(|i| TeiRank {
            index: i,
            text: if with_text { texts[i].take() } else { None },
            score: scores[i],
        })
        .collect();
    Ok(Json(ranks))
}

/// `POST /v1/rerank` (Cohere).
pub(crate) async fn cohere_v1(
    State(state): State<Arc<AppState>>,
    body: Body<CohereRerankRequest>,
) -> Result<Json<CohereRerankResponse>, ApiError> {
    cohere(state, body?.0, "1").await.map(Json)
}

/// `POST /v2/rerank` (Cohere).
pub(crate) async fn cohere_v2(
    State(state): State<Arc<AppState>>,
    body: Body<CohereRerankRequest>,
) -> Result<Json<CohereRerankResponse>, ApiError> {
    cohere(state, body?.0, "2").await.map(Json)
}

/// The text of a Cohere document: a string, or the `rank_fields` (default `text`) of an
/// object joined by newlines.
fn document_text(
    i: usize,
    doc: CohereDocument,
    fields: Option<&[String]>,
) -> Result<String, ApiError> {
    match doc {
        CohereDocument::Text(t) => Ok(t),
        CohereDocument::Object(map) => {
            let default = ["text".to_string()];
            let fields = fields.unwrap_or(&default);
            // One field missing is named below; of several, those missing are skipped, but
            // not all of them: the document would be scored as empty text.
            if fields.len() > 1
                && fields
                    .iter()
                    .all(|f| matches!(map.get(f), None | Some(serde_json::Value::Null)))
            {
                return Err(ApiError::validation(format!(
                    "documents[{i}] has none of the rank_fields {fields:?}: every document needs at least one of them as a string"
                )));
            }
            let mut parts = Vec::with_capacity(fields.len());
            for f in fields {
                match map.get(f) {
                    Some(serde_json::Value::String(s)) => parts.push(s.as_str()),
                    Some(serde_json::Value::Null) | None if fields.len() > 1 => {}
                    Some(other) => {
                        return Err(ApiError::validation(format!(
                            "documents[{i}].{f} must be a string, got {other}"
                        )))
                    }
                    None => {
                        return Err(ApiError::validation(format!(
                            "documents[{i}] has no `{f}` field"
                        )))
                    }
                }
            }
            Ok(parts.join("\n"))
        }
    }
}

async fn cohere(
    state: Arc<AppState>,
    req: CohereRerankRequest,
    version: &str,
) -> Result<CohereRerankResponse, ApiError> {
    check_top_n(req.top_n)?;
    if req.documents.is_empty() {
        return Err(ApiError::new(
            ErrorType::Empty,
            "`documents` cannot be empty",
        ));
    }
    if req.max_chunks_per_doc == Some(0) || req.max_tokens_per_doc == Some(0) {
        return Err(ApiError::validation(
            "max_chunks_per_doc and max_tokens_per_doc must be at least 1",
        ));
    }
    if req.rank_fields.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::validation(
            "rank_fields is empty: name the document fields to read, or leave it out to read `text`",
        ));
    }
    let o = &state.options;
    cap(
        "the number of `documents`",
        req.documents.len(),
        o.max_documents,
        "max_documents",
    )?;
    let max_chunks = req.max_chunks_per_doc.unwrap_or(1);
    cap(
        "max_chunks_per_doc",
        max_chunks,
        o.max_passages,
        "max_passages",
    )?;
    check_query_tokens(&state, &req.query)?;
    let fields = req.rank_fields.as_deref();
    let texts = req
        .documents
        .into_iter()
        .enumerate()
        .map(|(i, d)| document_text(i, d, fields))
        .collect::<Result<Vec<String>, _>>()?;
    // Each document as chunks (one, unless max_chunks_per_doc asks for more), each cut to
    // max_tokens_per_doc tokens.
    let model = state.model.clone();
    let (query, chunks, texts) = {
        let query = req.query.clone();
        let max_tokens = req.max_tokens_per_doc;
        blocking(move || {
            // What fits next to the query is worked out once, not once per document.
            let budget = match max_chunks {
                1 => 0,
                _ => ModelTokenizer {
                    tokenizer: model.tokenizer(),
                    input: ModelInput::WithQuery,
                }
                .passage_budget(&query)
                .map_err(|e| ApiError::new(ErrorType::Tokenizer, e.to_string()))?,
            };
            let chunks = texts
                .iter()
                .map(|t| chunk_document(&model, t, max_chunks, budget, max_tokens))
                .collect::<Result<Vec<Vec<String>>, ApiError>>()?;
            Ok((query, chunks, texts))
        })
        .await?
    };
    cap(
        "the number of chunks",
        chunks.iter().map(Vec::len).sum(),
        o.max_passages,
        "max_passages",
    )?;
    let owners: Vec<usize> = chunks
        .iter()
        .enumerate()
        .flat_map(|(doc, c)| std::iter::repeat_n(doc, c.len()))
        .collect();
    let flat: Vec<String> = chunks.into_iter().flatten().collect();
    let (predictions, _) = pair_predictions(&state, query, flat).await?;
    let chunk_scores = scores(state.model.head(), &predictions, false);
    let mut doc_scores = vec![f32::NEG_INFINITY; texts.len()];
    for (&doc, s) in owners.iter().zip(chunk_scores) {
        doc_scores[doc] = doc_scores[doc].max(s);
    }
    let with_documents = req.return_documents.unwrap_or(false);
    let results = ranking(&doc_scores, req.top_n)
        .into_iter()
        .map(|i| CohereResult {
            index: i,
            relevance_score: doc_scores[i],
            document: with_documents.then(|| CohereText {
                text: texts[i].clone(),
            }),
        })
        .collect();
    Ok(CohereRerankResponse {
        id: request_id(),
        results,
        meta: CohereMeta {
            api_version: CohereApiVersion {
                version: version.into(),
            },
            billed_units: CohereBilledUnits { search_units: 1 },
        },
    })
}

/// `text` cut to its first `max_tokens` tokens, then into at most `max_chunks` chunks of
/// `budget` tokens, what fits next to the query (the whole text when one chunk is asked for:
/// the model cuts it).
fn chunk_document(
    model: &CrossEncoder,
    text: &str,
    max_chunks: usize,
    budget: usize,
    max_tokens: Option<usize>,
) -> Result<Vec<String>, ApiError> {
    let tokenizer = model.tokenizer();
    let text = match max_tokens {
        Some(n) => {
            let spans = tokenizer
                .token_spans_head(text, n)
                .map_err(tokenizer_error)?;
            match spans.get(n.saturating_sub(1)) {
                Some(&(_, end)) if spans.len() > n => &text[..floor_char(text, end)],
                _ => text,
            }
        }
        None => text,
    };
    if max_chunks <= 1 {
        return Ok(vec![text.to_string()]);
    }
    let budget = budget.max(1);
    let spans = tokenizer
        .token_spans_head(text, budget.saturating_mul(max_chunks))
        .map_err(tokenizer_error)?;
    let options = PassageOptions {
        length: budget,
        stride: budget,
        max_passages: max_chunks,
    };
    Ok(split_spans(text, &spans, &options)
        .into_iter()
        .map(str::to_string)
        .collect())
}

/// The largest char boundary of `text` at or below `i`.
fn floor_char(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A request id: time and a counter, unique within the process.
fn request_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:032x}-{n:08x}")
}

/// `POST /predict` (TEI): labels with their probabilities, best first.
pub(crate) async fn predict(
    State(state): State<Arc<AppState>>,
    body: Body<PredictRequest>,
) -> Result<axum::response::Response, ApiError> {
    let Json(req) = body?;
    check_direction(req.truncation_direction.as_deref())?;
    let (inputs, single) = match req.inputs {
        PredictInputs::Single(t) => (vec![vec![t]], true),
        PredictInputs::One(v) => (vec![v], true),
        PredictInputs::Batch(b) => (b, false),
    };
    if inputs.is_empty() {
        return Err(ApiError::new(ErrorType::Empty, "`inputs` cannot be empty"));
    }
    cap(
        "the number of `inputs`",
        inputs.len(),
        state.options.max_documents,
        "max_documents",
    )?;
    if let Some((i, bad)) = inputs
        .iter()
        .enumerate()
        .find(|(_, v)| v.is_empty() || v.len() > 2)
    {
        return Err(ApiError::validation(format!(
            "inputs[{i}] has {} texts: give one text or a (query, document) pair",
            bad.len()
        )));
    }
    let model = state.model.clone();
    let encodings = blocking(move || {
        inputs
            .iter()
            .map(|v| match v.as_slice() {
                [text] => model.tokenizer().encode_single(text),
                [query, doc] => model.tokenizer().encode_pair(query, doc),
                _ => unreachable_input(),
            })
            .collect::<Result<Vec<EncodedPair>, EncoderError>>()
            .map_err(tokenizer_error)
    })
    .await?;
    let predictions = state
        .queue
        .submit(encodings, None)
        .map_err(model_error)?
        .await
        .map_err(model_error)?;
    let raw = req.raw_scores.unwrap_or(false);
    let labels = state.model.labels();
    let answers = predictions
        .into_iter()
        .map(|p| {
            let values = if raw {
                p.logits
            } else {
                state.model.classification(&p).probabilities
            };
            let mut out: Vec<LabelScore> = values
                .into_iter()
                .enumerate()
                .map(|(i, score)| LabelScore {
                    score,
                    label: labels
                        .get(i)
                        .cloned()
                        .unwrap_or_else(|| format!("LABEL_{i}")),
                })
                .collect();
            out.sort_by(|a, b| b.score.total_cmp(&a.score));
            out
        })
        .collect::<Vec<_>>();
    Ok(match single {
        true => Json(answers.into_iter().next().unwrap_or_default()).into_response(),
        false => Json(answers).into_response(),
    })
}

/// Inputs are checked to hold one or two texts before they are encoded.
fn unreachable_input() -> Result<EncodedPair, EncoderError> {
    Err(EncoderError::InvalidOption {
        name: "inputs".into(),
        value: "?".into(),
        reason: "one text or a pair".into(),
    })
}

/// Cancels its token when dropped: held by a handler, it stops the handler's blocking work
/// when the handler's future is dropped (the client went away, or the request timed out).
struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The answer for a search error: the query's own problems are 422, a search stopped by its
/// deadline 408, anything else the backend's (424).
fn search_error(e: SearchError) -> ApiError {
    match e {
        SearchError::QueryTooLong { .. }
        | SearchError::InvalidQuery { .. }
        | SearchError::InvalidOption { .. } => ApiError::validation(e.to_string()),
        SearchError::Cancelled {
            reason: CancelReason::DeadlinePassed,
        } => ApiError::new(ErrorType::Timeout, e.to_string()),
        other => ApiError::new(ErrorType::Backend, other.to_string()),
    }
}

/// `POST /search`: BM25 then rerank; the `search --json` object.
///
/// The search runs on a blocking thread with a cancel token: cancelled when this handler's
/// future is dropped (client gone, request timed out, shutdown), and with the request
/// timeout as its deadline, so abandoned searches stop between reranker batches. The
/// request's concurrency permit goes with the blocking work, so that a search keeps its
/// place among `max_concurrent_requests` until it has stopped. Its parallel work runs in the
/// service's search pool (`search_threads`): on the global pool, cutting a window of long
/// documents into passages held up every other request's tokenising and model batches.
pub(crate) async fn search(
    State(state): State<Arc<AppState>>,
    permit: Option<Extension<RequestPermit>>,
    body: Body<SearchRequest>,
) -> Result<Json<SearchResults>, ApiError> {
    let started = Instant::now();
    let Json(req) = body?;
    let Some(index) = state.index.clone() else {
        return Err(ApiError::new(
            ErrorType::NotFound,
            "this service was started without --index: /search is not served",
        ));
    };
    let (top, window) = (req.top.unwrap_or(10), req.window.unwrap_or(100));
    if top == 0 || window == 0 {
        return Err(ApiError::validation("top and window must be at least 1"));
    }
    if req.query.trim().is_empty() {
        return Err(ApiError::new(ErrorType::Empty, "`query` cannot be empty"));
    }
    let o = &state.options;
    cap("window", window, o.max_search_window, "max_search_window")?;
    cap("top", top, o.max_search_window, "max_search_window")?;
    let passages_per_doc = PassageOptions::default().max_passages;
    cap(
        &format!("window × {passages_per_doc} passages a document may give"),
        window.saturating_mul(passages_per_doc),
        o.max_passages,
        "max_passages",
    )?;
    check_query_tokens(&state, &req.query)?;
    let token = CancelToken::with_deadline(started + o.request_timeout);
    let _cancel_on_drop = CancelOnDrop(token.clone());
    let max_terms = o.max_query_terms;
    blocking(move || {
        let _permit = permit;
        let shared = state.clone();
        let stage = match state.search_reranker.clone() {
            Some(reranker) => Stage::shared(reranker),
            None => Stage::new(QueuedReranker::new(
                state.queue.clone(),
                Some(token.clone()),
            )),
        };
        let cascade = Cascade::new(stage.window(window));
        let options = SearchOptions::default()
            .top_n(top)
            .rerank(&cascade)
            .cancel(&token)
            .max_query_terms(max_terms);
        let run = || index.search(&req.query, &options);
        let found = match &shared.search_pool {
            Some(pool) => pool.install(run),
            None => run(),
        };
        found.map(Json).map_err(search_error)
    })
    .await
}

/// `GET /health`.
pub(crate) async fn health() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

/// `GET /info`.
pub(crate) async fn info(State(state): State<Arc<AppState>>) -> Json<Info> {
    let model = &state.model;
    let labels = model.labels().to_vec();
    let id2label: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), l.clone().into()))
        .collect();
    let label2id: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), i.into()))
        .collect();
    let o = &state.options;
    Json(Info {
        model_id: o.model_id.clone(),
        model_dtype: dtype_name(model.dtype()),
        model_type: serde_json::json!({"reranker": {"id2label": id2label, "label2id": label2id}}),
        labels,
        head: match model.head() {
            ScoreHead::Single { .. } => "single".into(),
            ScoreHead::Binary { .. } => "binary".into(),
            ScoreHead::Graded { .. } => "graded".into(),
        },
        architecture: model.architecture().into(),
        scoring: serde_json::to_value(model.scoring()).unwrap_or_default(),
        device: device_name(model.device()),
        max_input_length: model.max_length(),
        auto_truncate: true,
        max_concurrent_requests: o.max_concurrent_requests,
        max_batch_tokens: model.max_batch_tokens(),
        max_batch_size: model.batch_size(),
        payload_limit: o.payload_limit,
        max_documents: o.max_documents,
        max_passages: o.max_passages,
        max_search_window: o.max_search_window,
        max_query_tokens: o.max_query_tokens,
        max_query_terms: o.max_query_terms,
        search: state.index.is_some(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Any other route.
pub(crate) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(ErrorType::NotFound, format!("no route {}", uri.path()))
}
