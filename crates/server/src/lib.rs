//! The rerank service: a cross-encoder behind HTTP, in the formats Elasticsearch, OpenSearch
//! and existing text-embeddings-inference (TEI) and Cohere clients already speak.
//!
//! - `POST /rerank` (TEI), `POST /predict` (TEI, labels and probabilities),
//!   `POST /v1/rerank` and `POST /v2/rerank` (Cohere);
//! - `POST /search` (with an index): BM25 then rerank, the `search --json` object;
//! - `GET /health`, `GET /info`, `GET /metrics` (Prometheus).
//!
//! Every request scores through one [`InferenceQueue`]: pairs of concurrent requests share
//! the model's batches, in fair turns, and a request whose client has gone is withdrawn. Bad
//! input gets `{"error", "error_type"}` with TEI's status codes; requests over
//! `max_concurrent_requests` get 429, bodies over the payload limit 413, a wrong or missing
//! key 401. [`Server::run`] stops on a shutdown signal after finishing the requests in
//! flight. The model code never sees HTTP, and this crate never sees tensors: it scores
//! through the encoders' queue and reads predictions.
//!
//! ```no_run
//! use std::sync::Arc;
//! use tantivy_rerank_encoders::{CrossEncoder, CrossEncoderOptions};
//! use tantivy_rerank_server::{Server, ServerOptions};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let model = CrossEncoder::load("cross-encoder/ms-marco-MiniLM-L6-v2", CrossEncoderOptions::default())?;
//! let server = Server::new(Arc::new(model), None, ServerOptions::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! server.run(listener, tantivy_rerank_server::shutdown_signal()).await?;
//! # Ok(()) }
//! ```

pub mod api;
mod error;
mod handlers;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tantivy_rerank_encoders::{BatchReport, CrossEncoder, InferenceQueue, QueueOptions};
use tantivy_rerank_search::ArticleIndex;
use tokio::sync::Semaphore;
use tower_http::timeout::TimeoutLayer;

pub use error::{ApiError, ErrorType};

/// Limits and settings of the service; every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerOptions {
    /// The model's name in `/info` (the directory or Hub id it was loaded from).
    pub model_id: String,
    /// Requests served at once (default 512); one more gets 429.
    pub max_concurrent_requests: usize,
    /// Largest request body in bytes (default 2,000,000, as TEI); larger gets 413.
    pub payload_limit: usize,
    /// When set, every route but `/health` and `/metrics` needs
    /// `Authorization: Bearer <key>` (401 otherwise).
    pub api_key: Option<String>,
    /// A request that takes longer is answered 408 (default 60 s).
    #[serde(with = "secs")]
    pub request_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            model_id: String::new(),
            max_concurrent_requests: 512,
            payload_limit: 2_000_000,
            api_key: None,
            request_timeout: Duration::from_secs(60),
        }
    }
}

impl ServerOptions {
    /// Refuse limits of 0.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("max_concurrent_requests", self.max_concurrent_requests),
            ("payload_limit", self.payload_limit),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.request_timeout.is_zero() {
            return Err("request_timeout must be above 0".into());
        }
        if self.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            return Err("api_key is empty: give a key or none".into());
        }
        Ok(())
    }
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Duration::try_from_secs_f64(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Pairs waiting for the model, pairs and tokens per batch, and model time per batch.
pub(crate) const QUEUE_SIZE: &str = "tantivy_rerank_queue_size";
pub(crate) const BATCH_PAIRS: &str = "tantivy_rerank_batch_pairs";
pub(crate) const BATCH_TOKENS: &str = "tantivy_rerank_batch_tokens";
pub(crate) const INFERENCE_SECONDS: &str = "tantivy_rerank_inference_duration_seconds";

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) model: Arc<CrossEncoder>,
    pub(crate) queue: InferenceQueue,
    pub(crate) index: Option<Arc<ArticleIndex>>,
    pub(crate) options: ServerOptions,
    pub(crate) metrics: PrometheusHandle,
    pub(crate) permits: Arc<Semaphore>,
}

/// The service: a model, optionally an index, and its options.
pub struct Server {
    state: Arc<AppState>,
}

/// The process-wide Prometheus recorder (one per process: every server in it reports into
/// it).
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                30.0,
            ];
            let sizes = [
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
                4096.0, 8192.0, 16384.0, 65536.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("seconds".into()), &latency)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("pairs".into()), &sizes))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("tokens".into()), &sizes));
            let builder = match builder {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "histogram buckets refused; metrics render as summaries");
                    PrometheusBuilder::new()
                }
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed: /metrics shows only what reaches this one");
            }
            handle
        })
        .clone()
}

impl Server {
    /// A service of `model` (and `index` for `/search`) with `options`. Batches hold the
    /// model's own batch size and token budget (its load options) of pairs, from all requests
    /// together. Fails only when the model thread cannot be started.
    pub fn new(
        model: Arc<CrossEncoder>,
        index: Option<Arc<ArticleIndex>>,
        options: ServerOptions,
    ) -> std::io::Result<Self> {
        let metrics = prometheus();
        let on_batch: Arc<dyn Fn(BatchReport) + Send + Sync> = Arc::new(|b: BatchReport| {
            metrics::gauge!(QUEUE_SIZE).set(b.queued_pairs as f64);
            metrics::histogram!(BATCH_PAIRS).record(b.pairs as f64);
            metrics::histogram!(BATCH_TOKENS).record(b.tokens as f64);
            metrics::histogram!(INFERENCE_SECONDS).record(b.seconds);
        });
        let queue = InferenceQueue::start(
            model.clone(),
            QueueOptions {
                on_batch: Some(on_batch),
            },
        )
        .map_err(std::io::Error::other)?;
        let permits = Arc::new(Semaphore::new(options.max_concurrent_requests));
        Ok(Server {
            state: Arc::new(AppState {
                model,
                queue,
                index,
                options,
                metrics,
                permits,
            }),
        })
    }

    /// The routes, with their limits, timeouts and key check.
    pub fn router(&self) -> Router {
        let state = self.state.clone();
        let work = Router::new()
            .route("/rerank", post(handlers::tei_rerank))
            .route("/predict", post(handlers::predict))
            .route("/v1/rerank", post(handlers::cohere_v1))
            .route("/v2/rerank", post(handlers::cohere_v2))
            .route("/search", post(handlers::search))
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                limit_concurrency,
            ));
        let keyed = Router::new()
            .merge(work)
            .route("/info", get(handlers::info))
            .route_layer(middleware::from_fn_with_state(state.clone(), check_key));
        Router::new()
            .merge(keyed)
            .route("/health", get(handlers::health))
            .route("/metrics", get(handlers::metrics))
            .fallback(handlers::not_found)
            .layer(middleware::from_fn_with_state(state.clone(), limit_payload))
            .layer(middleware::from_fn(count_requests))
            .layer(DefaultBodyLimit::max(state.options.payload_limit))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                state.options.request_timeout,
            ))
            .with_state(state)
    }

    /// Serve on `listener` until `shutdown` resolves; then stop accepting connections, finish
    /// the requests in flight, and return.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = self.router();
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(
                %addr,
                model = %self.state.options.model_id,
                search = self.state.index.is_some(),
                "rerank service ready"
            );
        }
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        tracing::info!("rerank service stopped");
        Ok(())
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal: finishing the requests in flight");
}

/// How much of an oversized body is read (and dropped) before the 413 answer, so that a
/// client that writes its whole body before reading can read the answer instead of finding
/// the connection closed mid-write.
const DRAIN_MAX: usize = 64 << 20;

/// 413 for a body whose declared length is over the payload limit, after draining it (up to
/// [`DRAIN_MAX`]). A body without a declared length is cut at the limit by the JSON reader
/// (also 413).
async fn limit_payload(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    use http_body_util::BodyExt;
    let limit = state.options.payload_limit;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(declared) = declared.filter(|&n| n > limit as u64) else {
        return next.run(request).await;
    };
    let mut body = request.into_body();
    let mut read = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        read += frame.data_ref().map_or(0, |d| d.len());
        if read > DRAIN_MAX {
            break;
        }
    }
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        error_type: ErrorType::Validation,
        message: format!(
            "the request body of {declared} bytes is over the payload limit of {limit} bytes"
        ),
    }
    .into_response()
}

/// 429 when `max_concurrent_requests` are in flight.
async fn limit_concurrency(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(_permit) = state.permits.clone().try_acquire_owned() else {
        return ApiError::new(
            ErrorType::Overloaded,
            format!(
                "{} requests are in flight (max_concurrent_requests); retry later",
                state.options.max_concurrent_requests
            ),
        )
        .into_response();
    };
    next.run(request).await
}

/// 401 unless `Authorization: Bearer <key>` (scheme in any case) when a key is set.
async fn check_key(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(key) = &state.options.api_key else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if given.is_some_and(|token| constant_time_eq(token.as_bytes(), key.as_bytes())) {
        return next.run(request).await;
    }
    let mut response = ApiError::new(
        ErrorType::Unauthorized,
        "missing or wrong API key: send Authorization: Bearer <key>",
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// Equality that takes as long for every wrong key of one length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Request counts and durations per route and status.
async fn count_requests(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    let route = match path.as_str() {
        "/rerank" | "/predict" | "/v1/rerank" | "/v2/rerank" | "/search" | "/health" | "/info"
        | "/metrics" => path,
        _ => "other".into(),
    };
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("tantivy_rerank_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("tantivy_rerank_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
