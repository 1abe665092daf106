//! `tantivy-rerank index` and `tantivy-rerank search`.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tantivy_rerank_search::{ArticleIndex, Cascade, FieldMapping, ImportOptions, SearchOptions};

use crate::cascade::CascadeArgs;
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
    // Before the index directory is created: a missing corpus leaves nothing behind.
    if !args.corpus.exists() {
        anyhow::bail!("corpus {} not found", args.corpus.display());
    }
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
    /// Hits returned.
    #[arg(long, default_value_t = 10, value_parser = crate::at_least_one)]
    pub top: usize,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub cascade: CascadeArgs,
    #[command(flatten)]
    pub model_opts: ModelOptions,
}

pub fn search(args: SearchArgs) -> anyhow::Result<()> {
    // Checked before the index opens and the models load.
    let rerank = args.cascade.rerank_options()?;
    let index = ArticleIndex::open(&args.index)
        .with_context(|| format!("opening index {}", args.index.display()))?;
    let rerankers = args.cascade.load(&args.model_opts)?;
    let cascade = match rerankers.is_empty() {
        true => None,
        false => Some(Cascade::from_options(&rerank, rerankers)?),
    };
    let options = SearchOptions {
        top_n: args.top,
        rerank: cascade.as_ref(),
        ..Default::default()
    };
    let results = index.search(&args.query, &options)?;
    if args.json {
        return crate::print_stdout(&(serde_json::to_string_pretty(&results)? + "\n"));
    }
    let mut text = String::new();
    for (i, h) in results.hits.iter().enumerate() {
        let id = printable(&h.doc.id);
        let title = printable(&h.doc.title);
        let _ = match &cascade {
            None => writeln!(
                text,
                "{:>3}. {:>8.3}  {id}  {title}",
                i + 1,
                h.first_stage_score,
            ),
            Some(_) => {
                let stages: Vec<String> = h
                    .stage_scores
                    .iter()
                    .map(|s| s.map_or_else(|| "-".into(), |s| format!("{s:.4}")))
                    .collect();
                writeln!(
                    text,
                    "{:>3}. {:>8}  [{}]  bm25 {:>7.3} (#{})  {id}  {title}",
                    i + 1,
                    h.score.map_or_else(|| "-".into(), |s| format!("{s:.4}")),
                    stages.join(" "),
                    h.first_stage_score,
                    h.first_stage_rank,
                )
            }
        };
    }
    crate::print_stdout(&text)?;
    if cascade.is_some() {
        eprintln!("{}", results.timing_summary());
    }
    Ok(())
}

/// `s` with control characters escaped, so an id or title cannot move the cursor, clear the
/// screen or fake other lines of a terminal.
fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| match c {
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped_for_the_terminal() {
        assert_eq!(super::printable("plain id"), "plain id");
        assert_eq!(
            super::printable("a\u{1b}[2Jb\nc\td"),
            "a\\u{1b}[2Jb\\nc\\td"
        );
    }
}
