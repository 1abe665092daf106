//! `tantivy-rerank index` and `tantivy-rerank search`.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tantivy_rerank_search::{
    load_model_reranker, ArticleIndex, FieldMapping, ImportOptions, RerankOptions, Reranker,
};

use crate::score::ModelOptions;

#[derive(Args, Debug)]
pub struct IndexArgs {
    /// A BEIR folder (corpus.jsonl), a JSONL file, or a folder of .txt/.md files.
    #[arg(long)]
    pub corpus: PathBuf,
    /// Index directory (created if missing; documents with an existing id are replaced).
    #[arg(long)]
    pub index: PathBuf,
    /// Count and skip malformed JSONL lines instead of failing.
    #[arg(long)]
    pub skip_bad_lines: bool,
    /// JSONL field holding the document id.
    #[arg(long, default_value = "_id")]
    pub id_field: String,
    /// JSONL field holding the title.
    #[arg(long, default_value = "title")]
    pub title_field: String,
    /// JSONL field holding the body.
    #[arg(long, default_value = "text")]
    pub body_field: String,
    /// IndexWriter memory budget in MB.
    #[arg(long, default_value_t = 256, value_parser = crate::at_least_one)]
    pub memory_mb: usize,
}

pub fn index(args: IndexArgs) -> anyhow::Result<()> {
    let index = ArticleIndex::open_or_create(&args.index, &Default::default())
        .with_context(|| format!("opening index {}", args.index.display()))?;
    let options = ImportOptions {
        skip_bad_lines: args.skip_bad_lines,
        memory_budget_bytes: args
            .memory_mb
            .checked_mul(1 << 20)
            .with_context(|| format!("--memory-mb {} is too large", args.memory_mb))?,
        ..Default::default()
    };
    let mapping = FieldMapping {
        id: args.id_field.clone(),
        title: Some(args.title_field.clone()),
        body: args.body_field.clone(),
    };
    let report = if args.corpus.join("corpus.jsonl").is_file() {
        index.import_jsonl(args.corpus.join("corpus.jsonl"), &mapping, &options)?
    } else if args.corpus.is_file() {
        index.import_jsonl(&args.corpus, &mapping, &options)?
    } else if args.corpus.is_dir() {
        index.import_dir(&args.corpus, &options)?
    } else {
        anyhow::bail!("corpus {} not found", args.corpus.display());
    };
    eprintln!(
        "indexed {} documents ({} replaced, {} bad lines skipped, {} non-UTF-8 and {} unreadable files skipped) in {:.2}s; index {} holds {}",
        report.docs_indexed,
        report.docs_replaced,
        report.bad_lines_skipped,
        report.non_utf8_files_skipped,
        report.unreadable_files_skipped,
        report.elapsed.as_secs_f64(),
        args.index.display(),
        index.num_docs()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// Index directory built by `tantivy-rerank index`.
    #[arg(long)]
    pub index: PathBuf,
    /// The query.
    pub query: String,
    /// Reranker: a cross-encoder or embedding-model directory, or a Hub id. Without it: BM25 only.
    #[arg(long, value_parser = crate::model_spec)]
    pub model: Option<String>,
    /// Candidates reranked (needs --model).
    #[arg(long, default_value_t = 100, value_parser = crate::at_least_one)]
    pub window: usize,
    /// Hits returned.
    #[arg(long, default_value_t = 10, value_parser = crate::at_least_one)]
    pub top: usize,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model_opts: ModelOptions,
}

/// Load a cross-encoder, or an embedding model when the checkpoint is not a classifier.
pub fn load_reranker(model: &str, opts: &ModelOptions) -> anyhow::Result<Box<dyn Reranker>> {
    load_model_reranker(model, opts.options()?).with_context(|| format!("loading {model}"))
}

pub fn search(args: SearchArgs) -> anyhow::Result<()> {
    let index = ArticleIndex::open(&args.index)
        .with_context(|| format!("opening index {}", args.index.display()))?;
    let results = match &args.model {
        None => index.search_first_stage(&args.query, args.top)?,
        Some(model) => {
            let reranker = load_reranker(model, &args.model_opts)?;
            let options = RerankOptions {
                window: args.window,
                top_n: args.top,
                ..Default::default()
            };
            index.search_reranked(&args.query, reranker.as_ref(), &options)?
        }
    };
    if args.json {
        return crate::print_stdout(&(serde_json::to_string_pretty(&results)? + "\n"));
    }
    let mut text = String::new();
    for (i, h) in results.hits.iter().enumerate() {
        let _ = match (args.model.is_some(), h.score) {
            (false, _) => writeln!(
                text,
                "{:>3}. {:>8.3}  {}  {}",
                i + 1,
                h.bm25_score,
                h.id,
                h.title
            ),
            (true, score) => writeln!(
                text,
                "{:>3}. {:>8}  bm25 {:>7.3} (#{})  {}  {}",
                i + 1,
                score.map_or_else(|| "-".into(), |s| format!("{s:.4}")),
                h.bm25_score,
                h.bm25_rank,
                h.id,
                h.title
            ),
        };
    }
    crate::print_stdout(&text)?;
    if args.model.is_some() {
        eprintln!("{}", results.timing_summary());
    }
    Ok(())
}
