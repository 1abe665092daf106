//! `tantivy-rerank`: score pairs with a cross-encoder, index and search article corpora, and
//! evaluate retrieval quality.

mod bench;
mod eval;
mod score;
mod search;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tantivy-rerank",
    version,
    about = "BM25 retrieval in tantivy with neural reranking"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score (query, document) pairs from JSONL with a cross-encoder; one JSON line out per pair.
    Score(score::ScoreArgs),
    /// Import an article corpus into an on-disk tantivy index.
    Index(search::IndexArgs),
    /// Search an index with BM25, optionally reranking the top candidates with a model.
    Search(search::SearchArgs),
    /// Evaluate BM25 and a reranker on a BEIR or NanoBEIR dataset (tables, JSON, TREC runs).
    Eval(Box<eval::EvalArgs>),
    /// Measure reranking speed on workload files or dataset queries: pairs/s, tokens/s,
    /// latency percentiles, time split and peak memory.
    Bench(Box<bench::BenchArgs>),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Score(args) => score::run(args),
        Command::Index(args) => search::index(args),
        Command::Search(args) => search::search(args),
        Command::Eval(args) => eval::run(*args),
        Command::Bench(args) => bench::run(*args),
    }
}
