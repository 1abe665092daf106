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
//! key 401, requests over a size cap (documents, passages, window, query length) 422 naming
//! the cap. Connections have a header read timeout, an idle timeout and a cap
//! ([`ServerOptions`]); a request that runs past its timeout, or whose client goes away, has
//! its search cancelled. [`Server::run`] stops on a shutdown signal after finishing the
//! requests in flight, within the shutdown timeout. The model code never sees HTTP, and this
//! crate never sees tensors: it scores through the encoders' queue and reads predictions.
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
mod body;
mod error;
mod handlers;
mod listen;
mod trim;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tantivy_rerank_encoders::{BatchReport, CrossEncoder, InferenceQueue, QueueOptions};
use tantivy_rerank_search::{ArticleIndex, Reranker, DEFAULT_MAX_QUERY_TERMS};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    /// A request that takes longer is answered 408 and its work cancelled (default 60 s).
    #[serde(with = "secs")]
    pub request_timeout: Duration,
    /// Texts of one `/rerank`, documents of one `/v1/rerank` or `/v2/rerank`, inputs of one
    /// `/predict` (default 1,000, Cohere's own limit); more is 422.
    pub max_documents: usize,
    /// (query, passage) pairs one request may have scored (default 10,000): the chunks of a
    /// Cohere request with `max_chunks_per_doc` (counted after chunking), and for `/search`
    /// its window times the 20 passages a document may give; more is 422.
    pub max_passages: usize,
    /// The largest `window` (and `top`) of a `/search` (default 500); more is 422.
    pub max_search_window: usize,
    /// The longest query in model tokens, on every endpoint with a query (default 512, the
    /// input length of most cross-encoders); longer is 422. Counting stops past the cap.
    pub max_query_tokens: usize,
    /// The most BM25 terms of a `/search` query (default 1,024; see the search crate's
    /// `SearchOptions::max_query_terms`); more is 422.
    pub max_query_terms: usize,
    /// A connection that has not sent a whole request head this long after it opened, or
    /// after the first byte of a later request, is closed (default 10 s).
    #[serde(with = "secs")]
    pub header_read_timeout: Duration,
    /// A keep-alive connection that moves no byte this long while none of its requests is
    /// being handled is closed (default 60 s).
    #[serde(with = "secs")]
    pub idle_timeout: Duration,
    /// Open connections at most (default: the file descriptor limit less what the process
    /// needs besides, see [`default_max_connections`]). At the cap the connection idle the
    /// longest is closed to make room; when none is idle, new connections wait in the listen
    /// backlog.
    pub max_connections: usize,
    /// After a shutdown signal, how long requests in flight may run before the service closes
    /// their connections and returns (default 30 s).
    #[serde(with = "secs")]
    pub shutdown_timeout: Duration,
    /// Threads of `/search`'s own CPU work (cutting candidates into passages, tokenising
    /// them), apart from the threads the model and the other endpoints use, so that a search
    /// never holds up their work (default half the cores, at least 1). As many searches run
    /// at once; more wait their turn.
    pub search_threads: usize,
}

/// Half the cores this process may use, at least 1.
fn half_the_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// File descriptors the process keeps besides its connections by default: standard streams,
/// the listener, the runtime's and the index's files, with room to spare.
pub const RESERVED_FDS: usize = 64;

/// The most connections (and requests in flight) any limit may allow: what a semaphore holds.
pub const MAX_LIMIT: usize = Semaphore::MAX_PERMITS;

/// The default connection cap: the soft `RLIMIT_NOFILE` less `reserved` descriptors (at least
/// half the limit, at least 1), so that the listener, the index and the model never find
/// the descriptors used up by connections; 1,024 less `reserved` where the limit cannot be
/// read.
pub fn default_max_connections(reserved: usize) -> usize {
    let nofile = fd_limit().unwrap_or(1_024);
    nofile
        .saturating_sub(reserved)
        .max(nofile / 2)
        .clamp(1, MAX_LIMIT)
}

#[cfg(unix)]
fn fd_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a valid pointer to a local.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (got == 0).then(|| usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

#[cfg(not(unix))]
fn fd_limit() -> Option<usize> {
    None
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            model_id: String::new(),
            max_concurrent_requests: 512,
            payload_limit: 2_000_000,
            api_key: None,
            request_timeout: Duration::from_secs(60),
            max_documents: 1_000,
            max_passages: 10_000,
            max_search_window: 500,
            max_query_tokens: 512,
            max_query_terms: DEFAULT_MAX_QUERY_TERMS,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: default_max_connections(RESERVED_FDS),
            shutdown_timeout: Duration::from_secs(30),
            search_threads: half_the_cores(),
        }
    }
}

impl ServerOptions {
    /// Refuse limits of 0, limits past [`MAX_LIMIT`], timeouts of 0 and an empty key.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("max_concurrent_requests", self.max_concurrent_requests),
            ("payload_limit", self.payload_limit),
            ("max_documents", self.max_documents),
            ("max_passages", self.max_passages),
            ("max_search_window", self.max_search_window),
            ("max_query_tokens", self.max_query_tokens),
            ("max_query_terms", self.max_query_terms),
            ("max_connections", self.max_connections),
            ("search_threads", self.search_threads),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        for (name, value) in [
            ("max_concurrent_requests", self.max_concurrent_requests),
            ("max_connections", self.max_connections),
        ] {
            if value > MAX_LIMIT {
                return Err(format!(
                    "{name} {value} is over the largest this service can count, {MAX_LIMIT}"
                ));
            }
        }
        for (name, value) in [
            ("request_timeout", self.request_timeout),
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("shutdown_timeout", self.shutdown_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{name} must be above 0"));
            }
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
    /// Scores `/search` instead of the served model through the queue, when set.
    pub(crate) search_reranker: Option<Arc<dyn Reranker>>,
    /// Where `/search` runs its own parallel work (`None`: the global pool, if this one could
    /// not be started).
    pub(crate) search_pool: Option<rayon::ThreadPool>,
    /// Requests in flight, for handing memory back when there are none.
    pub(crate) idle: Arc<trim::Idle>,
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
        // A semaphore panics past MAX_PERMITS: a larger limit (which `validate` refuses) is
        // as good as no limit, and is served as the largest one.
        let mut options = options;
        for (name, value) in [
            (
                "max_concurrent_requests",
                &mut options.max_concurrent_requests,
            ),
            ("max_connections", &mut options.max_connections),
        ] {
            if *value > MAX_LIMIT {
                tracing::warn!(
                    requested = *value,
                    used = MAX_LIMIT,
                    "{name} is over the largest a semaphore holds; using that"
                );
                *value = MAX_LIMIT;
            }
        }
        let permits = Arc::new(Semaphore::new(options.max_concurrent_requests));
        let search_pool = match index {
            None => None,
            Some(_) => rayon::ThreadPoolBuilder::new()
                .num_threads(options.search_threads.max(1))
                .thread_name(|i| format!("search-{i}"))
                .build()
                .map_err(|e| tracing::warn!(error = %e, "no thread pool of its own for /search"))
                .ok(),
        };
        Ok(Server {
            state: Arc::new(AppState {
                model,
                queue,
                index,
                options,
                metrics,
                permits,
                search_reranker: None,
                search_pool,
                idle: Arc::default(),
            }),
        })
    }

    /// Score `/search` with `reranker` instead of the served model through the queue: a
    /// second stage of another model, or, in tests, a reranker whose calls can be watched.
    /// Call it before [`Server::router`] or [`Server::run`].
    pub fn with_search_reranker(mut self, reranker: Arc<dyn Reranker>) -> Self {
        match Arc::get_mut(&mut self.state) {
            Some(state) => state.search_reranker = Some(reranker),
            None => tracing::warn!(
                "with_search_reranker after the router was built: /search keeps the served model"
            ),
        }
        self
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
        // Outermost first: every answer is counted (a 408 too, and a request whose client
        // went away as abandoned), then the timeout, then the body checks.
        Router::new()
            .merge(keyed)
            .route("/health", get(handlers::health))
            .route("/metrics", get(handlers::metrics))
            .fallback(handlers::not_found)
            .layer(middleware::from_fn_with_state(
                state.clone(),
                body::read_body,
            ))
            .layer(DefaultBodyLimit::max(state.options.payload_limit))
            .layer(middleware::from_fn_with_state(state.clone(), time_limit))
            .layer(middleware::from_fn_with_state(
                state.clone(),
                count_requests,
            ))
            .with_state(state)
    }

    /// Serve on `listener` until `shutdown` resolves; then stop accepting connections, close
    /// those with no request in flight, let the requests in flight finish until
    /// `shutdown_timeout`, close what is left (cancelling its work), and return.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = self.router();
        let o = &self.state.options;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(
                %addr,
                model = %o.model_id,
                search = self.state.index.is_some(),
                max_connections = o.max_connections,
                "rerank service ready"
            );
        }
        let limits = listen::Limits {
            header_read_timeout: o.header_read_timeout,
            idle_timeout: o.idle_timeout,
            max_connections: o.max_connections.clamp(1, MAX_LIMIT),
            shutdown_timeout: o.shutdown_timeout,
        };
        let trimmer = tokio::spawn(self.state.idle.clone().trim_when_idle());
        let served = listen::serve(listener, app, limits, shutdown).await;
        trimmer.abort();
        served?;
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

/// A request's place among `max_concurrent_requests`, in its extensions: a handler whose work
/// goes on after the handler future is dropped (a blocking search) holds a clone until that
/// work ends, so an abandoned request keeps its place until it has stopped.
#[derive(Clone)]
pub(crate) struct RequestPermit(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// 429 when `max_concurrent_requests` are in flight.
async fn limit_concurrency(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Ok(permit) = state.permits.clone().try_acquire_owned() else {
        return ApiError::new(
            ErrorType::Overloaded,
            format!(
                "{} requests are in flight (max_concurrent_requests); retry later",
                state.options.max_concurrent_requests
            ),
        )
        .into_response();
    };
    let permit = RequestPermit(Arc::new(permit));
    request.extensions_mut().insert(permit.clone());
    let response = next.run(request).await;
    drop(permit);
    response
}

/// 408 (JSON, as every error) for a request past `request_timeout`; its handler's future is
/// dropped, which cancels its work.
async fn time_limit(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let limit = state.options.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorType::Timeout,
            format!(
                "the request took longer than the request timeout of {} s",
                limit.as_secs_f64()
            ),
        )
        .into_response(),
    }
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

/// Counts a request whose future is dropped before it answered: its client went away (or
/// the service closed the connection at shutdown).
struct Abandoned {
    route: Option<String>,
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Some(route) = self.route.take() {
            metrics::counter!("tantivy_rerank_requests_abandoned_total", "route" => route)
                .increment(1);
        }
    }
}

/// Request counts and durations per route and status, and requests abandoned per route; and
/// the requests in flight, for handing memory back when there are none.
async fn count_requests(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let _busy = state.idle.enter();
    let path = request.uri().path().to_string();
    let route = match path.as_str() {
        "/rerank" | "/predict" | "/v1/rerank" | "/v2/rerank" | "/search" | "/health" | "/info"
        | "/metrics" => path,
        _ => "other".into(),
    };
    let started = std::time::Instant::now();
    let mut abandoned = Abandoned {
        route: Some(route.clone()),
    };
    let response = next.run(request).await;
    abandoned.route = None;
    let status = response.status().as_u16().to_string();
    metrics::counter!("tantivy_rerank_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("tantivy_rerank_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
