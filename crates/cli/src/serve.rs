//! `tantivy-rerank serve`: the rerank service (TEI- and Cohere-compatible HTTP endpoints).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tantivy_rerank_encoders::CrossEncoder;
use tantivy_rerank_search::ArticleIndex;
use tantivy_rerank_server::{Server, ServerOptions};

use crate::score::ModelOptions;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The cross-encoder: a model directory or a Hub id.
    #[arg(long, value_parser = crate::model_spec)]
    pub model: String,
    /// An index built by `tantivy-rerank index`: also serve `POST /search` on it.
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free port, printed when ready).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Padded tokens per model batch, the pairs of all requests together (default: 4,096 on
    /// the CPU, 65,536 on CUDA).
    #[arg(long, value_parser = crate::at_least_one)]
    pub max_batch_tokens: Option<usize>,
    /// Requests served at once; more are answered 429.
    #[arg(long, default_value_t = 512, value_parser = limit)]
    pub max_concurrent_requests: usize,
    /// Largest request body in bytes; larger is answered 413.
    #[arg(long, default_value_t = 2_000_000, value_parser = crate::at_least_one)]
    pub payload_limit: usize,
    /// Require `Authorization: Bearer KEY` on every route but /health and /metrics (also
    /// read from $TANTIVY_RERANK_API_KEY, which keeps it out of the process list).
    #[arg(long, env = "TANTIVY_RERANK_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Seconds before a request is answered 408 (its search is cancelled).
    #[arg(long, default_value_t = 60.0, value_parser = seconds)]
    pub request_timeout: f64,
    /// Texts, documents or inputs of one request at most; more is answered 422.
    #[arg(long, default_value_t = 1_000, value_parser = crate::at_least_one)]
    pub max_documents: usize,
    /// (query, passage) pairs one request may have scored: Cohere chunks
    /// (max_chunks_per_doc), or a /search window times the 20 passages a document may give;
    /// more is answered 422.
    #[arg(long, default_value_t = 10_000, value_parser = crate::at_least_one)]
    pub max_passages: usize,
    /// The largest /search window and top; larger is answered 422.
    #[arg(long, default_value_t = 500, value_parser = crate::at_least_one)]
    pub max_search_window: usize,
    /// The longest query in model tokens, on every endpoint; longer is answered 422.
    #[arg(long, default_value_t = 512, value_parser = crate::at_least_one)]
    pub max_query_tokens: usize,
    /// The most BM25 terms of a /search query; more is answered 422.
    #[arg(long, default_value_t = tantivy_rerank_search::DEFAULT_MAX_QUERY_TERMS, value_parser = crate::at_least_one)]
    pub max_query_terms: usize,
    /// Seconds a connection may take to send a whole request head (from its start, or from
    /// the first byte of a later request); slower ones are closed.
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    pub header_read_timeout: f64,
    /// Seconds a keep-alive connection may stay idle (no byte either way, no request being
    /// handled) before it is closed.
    #[arg(long, default_value_t = 60.0, value_parser = seconds)]
    pub idle_timeout: f64,
    /// Open connections at most; at the cap the idlest connection is closed to make room, or
    /// new ones wait (default: the open-file limit less 64 and the index's files, at least
    /// half the limit).
    #[arg(long, value_parser = limit)]
    pub max_connections: Option<usize>,
    /// Seconds requests in flight may run after SIGTERM or Ctrl-C before their connections
    /// are closed (their searches cancelled) and the process exits.
    #[arg(long, default_value_t = 30.0, value_parser = seconds)]
    pub shutdown_timeout: f64,
    /// Threads of /search's own work (passages, tokenising), apart from the model's and the
    /// other endpoints'; as many searches run at once (default: half the cores, at least 1).
    #[arg(long, value_parser = crate::at_least_one)]
    pub search_threads: Option<usize>,
    #[command(flatten)]
    pub model_opts: ModelOptions,
}

/// A count limit: at least 1, at most what the service can count.
fn limit(s: &str) -> Result<usize, String> {
    let n = crate::at_least_one(s)?;
    if n > tantivy_rerank_server::MAX_LIMIT {
        return Err(format!(
            "{n} is over the largest limit the service can count, {}",
            tantivy_rerank_server::MAX_LIMIT
        ));
    }
    Ok(n)
}

/// A number of seconds above 0 (and below a year).
fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 3.2e7 => Ok(v),
        Ok(_) => Err("must be a number of seconds above 0 (and below a year)".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Files in the index folder: each may be open while a search runs.
fn index_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.count())
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut load = args.model_opts.options()?;
    if let Some(t) = args.max_batch_tokens {
        load = load.max_batch_tokens(t);
    }
    let index = match &args.index {
        Some(dir) => {
            Some(Arc::new(ArticleIndex::open(dir).with_context(|| {
                format!("opening index {}", dir.display())
            })?))
        }
        None => None,
    };
    let model = CrossEncoder::load(&args.model, load)
        .with_context(|| format!("loading model {}", args.model))?;
    let reserved =
        tantivy_rerank_server::RESERVED_FDS + args.index.as_deref().map_or(0, index_files);
    let options = ServerOptions {
        model_id: args.model.clone(),
        max_concurrent_requests: args.max_concurrent_requests,
        payload_limit: args.payload_limit,
        api_key: args.api_key.clone(),
        request_timeout: Duration::from_secs_f64(args.request_timeout),
        max_documents: args.max_documents,
        max_passages: args.max_passages,
        max_search_window: args.max_search_window,
        max_query_tokens: args.max_query_tokens,
        max_query_terms: args.max_query_terms,
        header_read_timeout: Duration::from_secs_f64(args.header_read_timeout),
        idle_timeout: Duration::from_secs_f64(args.idle_timeout),
        max_connections: args
            .max_connections
            .unwrap_or_else(|| tantivy_rerank_server::default_max_connections(reserved)),
        shutdown_timeout: Duration::from_secs_f64(args.shutdown_timeout),
        search_threads: args
            .search_threads
            .unwrap_or(ServerOptions::default().search_threads),
    };
    if let Err(e) = options.validate() {
        bail!("{e}");
    }
    let max_connections = options.max_connections;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rerank-http")
        .build()
        .context("starting the async runtime")?;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("listening on {}:{}", args.host, args.port))?;
        let addr = listener.local_addr()?;
        let server =
            Server::new(Arc::new(model), index, options).context("starting the model thread")?;
        eprintln!(
            "tantivy-rerank serve: ready on http://{addr} (model {}{}, at most {} connections)",
            args.model,
            args.index
                .as_ref()
                .map(|i| format!(", index {}", i.display()))
                .unwrap_or_default(),
            max_connections
        );
        server
            .run(listener, tantivy_rerank_server::shutdown_signal())
            .await
            .context("serving")
    });
    // Work that outlived its connection (a search between two cancellation checks, its
    // token already cancelled) is not waited for: the process exits within the shutdown
    // timeout, and its threads end with it.
    runtime.shutdown_background();
    served?;
    eprintln!("tantivy-rerank serve: stopped");
    Ok(())
}
