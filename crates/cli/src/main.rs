//! `tantivy-rerank`: score pairs with a cross-encoder, index and search article corpora.

mod score;

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
    }
}
