//! Index an article corpus into `index-data/` and search it: BM25, then a neural rerank of
//! the top candidates with passage aggregation.
//!
//! ```text
//! cargo run --release --example index_articles -- [CORPUS] [--model DIR|HUB_ID] [--bm25-only]
//!     [--window N] [--query "..."]...
//! ```
//!
//! CORPUS is a BEIR folder (`corpus.jsonl`), a JSONL file, or a folder of `.txt`/`.md` files;
//! default `data/squad-articles` (48 whole Wikipedia articles) in the shared data folder:
//! `$TANTIVY_RERANK_SHARED` (a relative value, like any path argument, from the current
//! folder), or `shared/` beside the project root. The index goes to the project's
//! `index-data/`, whichever folder the example runs from.
//!
//! The reranker is `--model` (or `$TANTIVY_RERANK_MODEL`): a local cross-encoder or
//! embedding-model directory, or a Hub id. Without one it is [`DEFAULT_MODEL`], from the
//! Hugging Face cache when it is there, else downloaded (with a progress bar); when the Hub
//! cannot be reached, one line says so and the example runs BM25 only. `--bm25-only` skips
//! the model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use tantivy_rerank::encoders::{BiEncoderOptions, CrossEncoderOptions};
use tantivy_rerank::search::{
    load_model_reranker, ArticleIndex, Cascade, FieldMapping, ImportOptions, PassageOptions,
    Reranker, SearchOptions, Stage,
};

/// The reranker used when none is given: a 6-layer MiniLM cross-encoder trained on MS MARCO
/// (22M parameters, 384 hidden). On 2 CPU cores it reranks the example's queries over whole
/// articles in seconds, where a ModernBERT-base or -large reranker would take minutes.
pub const DEFAULT_MODEL: &str = "cross-encoder/ms-marco-MiniLM-L6-v2";

/// Candidates reranked per query by default, and passages scored per article: enough for
/// the best article of 48 to surface, small enough for a CPU.
const DEFAULT_WINDOW: usize = 10;
const MAX_PASSAGES: usize = 8;

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
    // Recycle the model's large activation buffers instead of page-faulting fresh ones in
    // every layer (a process-wide glibc setting, so the application makes it, not the library).
    tantivy_rerank::encoders::memory::reuse_large_buffers();
    let mut corpus: Option<PathBuf> = None;
    let mut model = std::env::var("TANTIVY_RERANK_MODEL")
        .ok()
        .filter(|m| !m.trim().is_empty());
    let mut bm25_only = false;
    let mut window = DEFAULT_WINDOW;
    let mut queries = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--model" => {
                model = Some(
                    args.next()
                        .context("--model needs a directory or a Hub id")?,
                )
            }
            "--bm25-only" => bm25_only = true,
            "--window" => {
                window = args
                    .next()
                    .context("--window needs a number")?
                    .parse()
                    .context("--window")?;
                if window == 0 {
                    bail!("--window must be at least 1");
                }
            }
            "--query" => queries.push(args.next().context("--query needs text")?),
            "-h" | "--help" => {
                println!(
                    "usage: index_articles [CORPUS] [--model DIR|HUB_ID] [--bm25-only] [--window N] [--query TEXT]...\n\
                     default model: {DEFAULT_MODEL} (from the Hugging Face cache, or downloaded)"
                );
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
    let reranker = load_reranker(model.as_deref(), bm25_only)?;
    let cascade = reranker.map(|(name, r)| {
        let passages = PassageOptions {
            max_passages: MAX_PASSAGES,
            ..Default::default()
        };
        let stage = Stage::shared(Arc::from(r))
            .name(name)
            .window(window)
            .passages(Some(passages));
        Cascade::new(stage)
    });
    let options = SearchOptions {
        top_n: 5,
        rerank: cascade.as_ref(),
        ..Default::default()
    };
    for q in &queries {
        let results = index.search(q, &options)?;
        println!("\nquery: {q}");
        println!(
            "{:<4} {:<32} {:>8} {:>8}  best passage",
            "#", "title", "bm25", "rerank"
        );
        for (i, h) in results.hits.iter().enumerate() {
            let snippet = match &h.passage {
                Some(p) => &p.text,
                None => &h.doc.body,
            };
            println!(
                "{:<4} {:<32} {:>8.3} {:>8}  {}",
                i + 1,
                shorten(&h.doc.title, 30),
                h.first_stage_score,
                h.rerank_score
                    .map(|s| format!("{s:.3}"))
                    .unwrap_or_else(|| "-".into()),
                shorten(snippet, 70)
            );
        }
        if cascade.is_some() {
            println!("     {}", results.timing_summary());
        }
    }
    Ok(())
}

/// The reranker and its name: `model` when given (its failure is an error), else
/// [`DEFAULT_MODEL`] (its failure, e.g. no network to the Hub, leaves BM25 only, said in one
/// line); none with `--bm25-only`.
fn load_reranker(
    model: Option<&str>,
    bm25_only: bool,
) -> anyhow::Result<Option<(String, Box<dyn Reranker>)>> {
    if bm25_only {
        println!("--bm25-only: BM25 only");
        return Ok(None);
    }
    let options = CrossEncoderOptions::default();
    let bi = BiEncoderOptions::from(&options);
    match model {
        Some(m) => {
            let r = load_model_reranker(m, options, bi).with_context(|| format!("loading {m}"))?;
            Ok(Some((m.to_string(), r)))
        }
        None => match load_model_reranker(DEFAULT_MODEL, options, bi) {
            Ok(r) => {
                println!("reranker: {DEFAULT_MODEL} (the default; --model to choose another)");
                Ok(Some((DEFAULT_MODEL.to_string(), r)))
            }
            Err(e) => {
                println!("cannot load the default reranker {DEFAULT_MODEL} ({e}): BM25 only");
                Ok(None)
            }
        },
    }
}
