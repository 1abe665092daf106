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
    #[arg(long, default_value_t = 512, value_parser = crate::at_least_one)]
    pub max_concurrent_requests: usize,
    /// Largest request body in bytes; larger is answered 413.
    #[arg(long, default_value_t = 2_000_000, value_parser = crate::at_least_one)]
    pub payload_limit: usize,
    /// Require `Authorization: Bearer KEY` on every route but /health and /metrics (also
    /// read from $TANTIVY_RERANK_API_KEY, which keeps it out of the process list).
    #[arg(long, env = "TANTIVY_RERANK_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Seconds before a request is answered 408.
    #[arg(long, default_value_t = 60, value_parser = crate::at_least_one)]
    pub request_timeout: usize,
    #[command(flatten)]
    pub model_opts: ModelOptions,
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
    let options = ServerOptions {
        model_id: args.model.clone(),
        max_concurrent_requests: args.max_concurrent_requests,
        payload_limit: args.payload_limit,
        api_key: args.api_key.clone(),
        request_timeout: Duration::from_secs(args.request_timeout as u64),
    };
    if let Err(e) = options.validate() {
        bail!("{e}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rerank-http")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("listening on {}:{}", args.host, args.port))?;
        let addr = listener.local_addr()?;
        let server =
            Server::new(Arc::new(model), index, options).context("starting the model thread")?;
        eprintln!(
            "tantivy-rerank serve: ready on http://{addr} (model {}{})",
            args.model,
            args.index
                .as_ref()
                .map(|i| format!(", index {}", i.display()))
                .unwrap_or_default()
        );
        server
            .run(listener, tantivy_rerank_server::shutdown_signal())
            .await
            .context("serving")?;
        eprintln!("tantivy-rerank serve: stopped (requests in flight were answered)");
        Ok(())
    })
}
