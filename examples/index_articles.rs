//! Index an article corpus into `index-data/` and search it: BM25, then (with a model) a
//! neural rerank of the top candidates with passage aggregation.
//!
//! ```text
//! cargo run --release --example index_articles -- [CORPUS] [--model DIR] [--query "..."]...
//! ```
//!
//! CORPUS is a BEIR folder (`corpus.jsonl`), a JSONL file, or a folder of `.txt`/`.md` files;
//! default `data/squad-articles` (48 whole Wikipedia articles) in the shared data folder:
//! `$TANTIVY_RERANK_SHARED` (a relative value, like any path argument, from the current
//! folder), or `shared/` beside the project root. The index goes to the project's
//! `index-data/`, whichever folder the example runs from. The model is a local
//! cross-encoder or embedding-model directory (`--model` or `$TANTIVY_RERANK_MODEL`); without
//! one the example runs BM25 only and says so.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tantivy_rerank::encoders::CrossEncoderOptions;
use tantivy_rerank::search::{
    load_model_reranker, ArticleIndex, FieldMapping, ImportOptions, RerankOptions,
};

fn default_queries(corpus: &Path) -> Vec<String> {
    let queries = corpus.join("queries.jsonl");
    let from_file: Vec<String> = std::fs::read_to_string(&queries)
        .ok()
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| v.get("text").and_then(|t| t.as_str()).map(String::from))
                .step_by(1500)
                .take(4)
                .collect()
        })
        .unwrap_or_default();
    if from_file.is_empty() {
        vec!["history of the city".into(), "how does it work".into()]
    } else {
        from_file
    }
}

fn shorten(s: &str, n: usize) -> String {
    let s = s.replace('\n', " ");
    if s.chars().count() <= n {
        s
    } else {
        format!("{}...", s.chars().take(n).collect::<String>())
    }
}

fn main() -> anyhow::Result<()> {
    let mut corpus: Option<PathBuf> = None;
    let mut model = std::env::var("TANTIVY_RERANK_MODEL").ok();
    let mut queries = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--model" => model = Some(args.next().context("--model needs a directory")?),
            "--query" => queries.push(args.next().context("--query needs text")?),
            "-h" | "--help" => {
                println!("usage: index_articles [CORPUS] [--model DIR] [--query TEXT]...");
                return Ok(());
            }
            other if other.starts_with("--") => bail!("unknown option {other}"),
            other => corpus = Some(PathBuf::from(other)),
        }
    }
    // Defaults hang off the project root, not the current folder, so the example works when
    // cargo runs it from a crate folder too.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = std::env::var_os("TANTIVY_RERANK_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared"));
    let shared = shared.canonicalize().unwrap_or(shared);
    let corpus = corpus.unwrap_or_else(|| shared.join("data/squad-articles"));
    if !corpus.exists() {
        bail!(
            "corpus {} not found (pass a BEIR folder, a JSONL file or a folder of .txt/.md files)",
            corpus.display()
        );
    }
    let name = corpus
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".jsonl").to_string())
        .unwrap_or_else(|| "articles".into());
    let index_dir = root.join("index-data").join(&name);
    // Rebuild from scratch so the example is repeatable.
    if index_dir.exists() {
        std::fs::remove_dir_all(&index_dir)
            .with_context(|| format!("removing {}", index_dir.display()))?;
    }
    let index = ArticleIndex::create(&index_dir, &Default::default())?;
    let options = ImportOptions::default();
    let report = if corpus.join("corpus.jsonl").is_file() {
        index.import_beir(corpus.join("corpus.jsonl"), &options)?
    } else if corpus.is_file() {
        index.import_jsonl(&corpus, &FieldMapping::beir(), &options)?
    } else {
        index.import_dir(&corpus, &options)?
    };
    println!(
        "indexed {} documents from {} into {} in {:.2}s ({:.0} docs/s)",
        report.docs_indexed,
        corpus.display(),
        index_dir.display(),
        report.elapsed.as_secs_f64(),
        report.docs_indexed as f64 / report.elapsed.as_secs_f64().max(1e-9)
    );
    if queries.is_empty() {
        queries = default_queries(&corpus);
    }
    let reranker = match &model {
        Some(dir) => Some(
            load_model_reranker(dir, CrossEncoderOptions::default())
                .with_context(|| format!("loading {dir}"))?,
        ),
        None => {
            println!("no model given (--model DIR or TANTIVY_RERANK_MODEL): BM25 only");
            None
        }
    };
    for q in &queries {
        println!("\nquery: {q}");
        println!(
            "{:<4} {:<32} {:>8} {:>8}  best passage",
            "#", "title", "bm25", "rerank"
        );
        match &reranker {
            Some(r) => {
                let results = index.search_reranked(
                    q,
                    r.as_ref(),
                    &RerankOptions {
                        top_n: 5,
                        ..Default::default()
                    },
                )?;
                for (i, h) in results.hits.iter().enumerate() {
                    println!(
                        "{:<4} {:<32} {:>8.3} {:>8}  {}",
                        i + 1,
                        shorten(&h.title, 30),
                        h.bm25_score,
                        h.rerank_score
                            .map(|s| format!("{s:.3}"))
                            .unwrap_or_else(|| "-".into()),
                        h.passage
                            .as_ref()
                            .map(|p| shorten(&p.text, 70))
                            .unwrap_or_default()
                    );
                }
                println!("     {}", results.timing_summary());
            }
            None => {
                for (i, c) in index.search_bm25(q, 5)?.iter().enumerate() {
                    println!(
                        "{:<4} {:<32} {:>8.3} {:>8}  {}",
                        i + 1,
                        shorten(&c.title, 30),
                        c.score,
                        "-",
                        shorten(&c.body, 70)
                    );
                }
            }
        }
    }
    Ok(())
}
