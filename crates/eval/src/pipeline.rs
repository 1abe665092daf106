//! Mode `pipeline`: full retrieval. The corpus is indexed with the tantivy first stage
//! ([`ArticleIndex`]), every judged query retrieves its top `top_k`, optionally the top
//! `window` are reranked by the search crate's own pipeline
//! ([`ArticleIndex::search_reranked`]: passages, aggregation), and both systems (`bm25` and
//! `rerank`) are scored with trec_eval's measures ([`crate::metrics::trec`]).
//!
//! - Queries evaluated: those with judgements (as pytrec_eval, which skips the rest); a judged
//!   query that retrieves nothing (e.g. empty text) scores 0 on every measure (pytrec_eval
//!   would leave it out of the mean, trec_eval `-c` counts it as 0, as here).
//! - Each run is put in trec_eval order (score descending, ties by doc id descending) before
//!   it is cut to `top_k` and scored, and written so, so external re-scoring agrees exactly
//!   (`scripts/trec_rescore.py QRELS RUN --queries N`, with N the report's `queries`: a query
//!   without hits has no line in the run file and counts 0 on both sides).
//! - Reranked run: documents inside the window carry the reranker's score; those past it
//!   (when `window < top_k`) follow in BM25 order with synthetic scores below the window's
//!   minimum (`min - 1`, `min - 2`, ...).

use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tantivy_rerank_search::{
    Aggregation, Article, ArticleIndex, ImportOptions, PassageOptions, RerankOptions, Reranker,
};

use crate::dataset::Dataset;
use crate::error::{EvalError, Result};
use crate::metrics::trec::{self, trec_order, TrecMetrics};
use crate::reranking::{ms, per_second};
use crate::run::Run;

/// Options of the `pipeline` mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelineOptions {
    /// Documents retrieved (and scored) per query (default 100).
    pub top_k: usize,
    /// Candidates reranked (default 100).
    pub window: usize,
    /// Passage splitting of long documents (default: the search crate's, 200 model tokens,
    /// stride 100, at most 20); `None` scores title + text whole (the model truncates).
    pub passages: Option<PassageOptions>,
    /// Passage score aggregation (default max).
    pub aggregation: Aggregation,
    /// Evaluate only the first N judged queries (file order).
    pub max_queries: Option<usize>,
    /// Keep the index here (reused when it already holds an index) instead of a temporary
    /// directory.
    pub index_dir: Option<std::path::PathBuf>,
    /// Progress bars on stderr.
    pub progress: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            top_k: 100,
            window: 100,
            passages: Some(PassageOptions::default()),
            aggregation: Aggregation::Max,
            max_queries: None,
            index_dir: None,
            progress: true,
        }
    }
}

/// One system (`bm25` or `rerank`) on one dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemReport {
    /// `bm25` or `rerank`.
    pub system: String,
    /// Mean over the evaluated queries.
    pub mean: TrecMetrics,
    /// Per query: `(query id, metrics)`.
    pub per_query: Vec<(String, TrecMetrics)>,
    /// The run that was scored.
    #[serde(skip)]
    pub run: Run,
}

/// Per-stage wall-clock times of one dataset, in milliseconds (search stages summed over
/// queries).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelineTimings {
    /// Indexing the corpus (0 when an existing index was reused).
    pub index_ms: f64,
    /// Query parsing and first-stage collection.
    pub retrieve_ms: f64,
    /// Reading stored text of the candidates.
    pub fetch_ms: f64,
    /// Passage splitting and reranker calls.
    pub score_ms: f64,
    /// Aggregation and sorting.
    pub merge_ms: f64,
    /// Everything.
    pub total_ms: f64,
}

/// Results of the `pipeline` mode on one dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineReport {
    /// Dataset name.
    pub dataset: String,
    /// Options used.
    pub options: PipelineOptions,
    /// Queries evaluated.
    pub queries: usize,
    /// Judged queries that retrieved nothing (scored 0).
    pub queries_without_hits: usize,
    /// `bm25`, then `rerank` when a reranker was given.
    pub systems: Vec<SystemReport>,
    /// Texts (passages or documents) sent to the reranker.
    pub pairs_scored: usize,
    /// Texts per second of reranker time.
    pub pairs_per_second: f64,
    /// Stage timings.
    pub timings: PipelineTimings,
    /// Data problems found while loading.
    pub issues: crate::dataset::DataIssues,
}

/// Index `ds.corpus` into `dir` (a temporary directory when `None`; an existing index there is
/// reused as is). Returns the index and the temporary directory guard.
pub(crate) fn build_index(
    ds: &Dataset,
    dir: Option<&Path>,
    progress: bool,
) -> Result<(ArticleIndex, Option<tempfile::TempDir>)> {
    let search = |context: String| {
        move |source| EvalError::Search {
            context,
            source: Box::new(source),
        }
    };
    let (path, guard) = match dir {
        Some(d) => (d.to_path_buf(), None),
        None => {
            let tmp = tempfile::tempdir().map_err(EvalError::io(std::env::temp_dir()))?;
            (tmp.path().to_path_buf(), Some(tmp))
        }
    };
    if path.join("meta.json").is_file() {
        let index =
            ArticleIndex::open(&path).map_err(search(format!("opening {}", path.display())))?;
        check_reused_index(&index, &path, ds)?;
        tracing::info!(dir = %path.display(), docs = index.num_docs(), "reusing index");
        return Ok((index, guard));
    }
    let index = ArticleIndex::create(&path, &Default::default())
        .map_err(search(format!("creating an index in {}", path.display())))?;
    let articles = ds.corpus.iter().map(|d| Article {
        id: d.id.clone(),
        title: d.title.clone(),
        body: d.text.clone(),
    });
    index
        .import_articles(
            articles,
            &ImportOptions {
                progress,
                ..Default::default()
            },
        )
        .map_err(search(format!("indexing {}", ds.name)))?;
    Ok((index, guard))
}

/// A reused index must hold `ds`'s corpus: the same number of documents, and the first, middle
/// and last corpus ids. (Another corpus would give every query zero relevant hits.)
fn check_reused_index(index: &ArticleIndex, path: &Path, ds: &Dataset) -> Result<()> {
    let mismatch = |reason: String| EvalError::IndexMismatch {
        path: path.to_path_buf(),
        dataset: ds.name.clone(),
        reason,
    };
    let docs = index.num_docs();
    if docs != ds.corpus.len() as u64 {
        return Err(mismatch(format!(
            "it has {docs} documents, the corpus {}",
            ds.corpus.len()
        )));
    }
    let n = ds.corpus.len();
    for i in [0, n / 2, n.saturating_sub(1)]
        .into_iter()
        .filter(|&i| i < n)
    {
        let id = &ds.corpus[i].id;
        let found = index.contains_id(id).map_err(|source| EvalError::Search {
            context: format!("checking {}", path.display()),
            source: Box::new(source),
        })?;
        if !found {
            return Err(mismatch(format!("it has no document `{id}`")));
        }
    }
    Ok(())
}

pub(crate) fn progress_bar(enabled: bool, len: u64, name: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} {bar:30} {pos}/{len} queries [{elapsed_precise} < {eta_precise}] {per_sec}",
    ) {
        bar.set_style(style);
    }
    bar.set_message(name.to_string());
    bar
}

/// Evaluate BM25 (and `reranker` when given) on `ds` with full retrieval.
pub fn evaluate_pipeline(
    ds: &Dataset,
    reranker: Option<&dyn Reranker>,
    options: &PipelineOptions,
) -> Result<PipelineReport> {
    let zero = [
        ("top_k", options.top_k == 0),
        ("max_queries", options.max_queries == Some(0)),
        // With a reranker, a window of 0 would report BM25 as the reranked system.
        ("window", reranker.is_some() && options.window == 0),
    ];
    if let Some((option, _)) = zero.into_iter().find(|(_, bad)| *bad) {
        return Err(EvalError::InvalidOption {
            option,
            value: "0".into(),
            reason: "must be at least 1",
        });
    }
    let started = Instant::now();
    let t = Instant::now();
    let reused = options
        .index_dir
        .as_deref()
        .is_some_and(|d| d.join("meta.json").is_file());
    let (index, _guard) = build_index(ds, options.index_dir.as_deref(), options.progress)?;
    let index_time = if reused { Duration::ZERO } else { t.elapsed() };

    let mut judged: Vec<_> = ds
        .queries
        .iter()
        .filter(|q| ds.qrels.contains_key(&q.id))
        .collect();
    if let Some(n) = options.max_queries {
        judged.truncate(n);
    }
    if judged.is_empty() {
        return Err(EvalError::EmptyDataset {
            dataset: ds.name.clone(),
            reason: "no query has judgements".into(),
        });
    }
    let rerank_options = RerankOptions {
        window: options.window,
        top_n: options.top_k.max(options.window),
        passages: options.passages,
        aggregation: options.aggregation,
        ..Default::default()
    };
    let bar = progress_bar(options.progress, judged.len() as u64, &ds.name);
    let mut bm25_run = Run::new("bm25");
    let mut rerank_run = Run::new("rerank");
    let mut timings = PipelineTimings {
        index_ms: ms(index_time),
        ..Default::default()
    };
    let (mut retrieve, mut fetch, mut score, mut merge) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    let mut pairs_scored = 0;
    let search_err = |qid: &str| {
        let context = format!("query `{qid}`");
        move |source| EvalError::Search {
            context,
            source: Box::new(source),
        }
    };
    for q in &judged {
        match reranker {
            None => {
                let t = Instant::now();
                let hits = index
                    .search_bm25_ids(&q.text, options.top_k)
                    .map_err(search_err(&q.id))?;
                retrieve += t.elapsed();
                bm25_run.queries.push((
                    q.id.clone(),
                    hits.into_iter().map(|(d, s)| (d, f64::from(s))).collect(),
                ));
            }
            Some(reranker) => {
                let results = index
                    .search_reranked(&q.text, reranker, &rerank_options)
                    .map_err(search_err(&q.id))?;
                retrieve += results.timings.retrieve;
                fetch += results.timings.fetch;
                score += results.timings.score;
                merge += results.timings.merge;
                pairs_scored += results.passages_scored;
                bm25_run.queries.push((
                    q.id.clone(),
                    results
                        .hits
                        .iter()
                        .map(|h| (h.id.clone(), f64::from(h.bm25_score)))
                        .collect(),
                ));
                let floor = results
                    .hits
                    .iter()
                    .filter_map(|h| h.score)
                    .fold(f64::INFINITY, |m, s| m.min(f64::from(s)));
                // Below the reranked ones, in BM25 order, with steps the 32-bit scores of
                // trec_eval still tell apart (1, or 16 units in the last place of a large base).
                let base = if floor.is_finite() { floor } else { 0.0 };
                let step = (base.abs() * f64::from(f32::EPSILON) * 16.0).max(1.0);
                let mut tail = 0.0;
                let docs = results
                    .hits
                    .iter()
                    .map(|h| match h.score {
                        Some(s) => (h.id.clone(), f64::from(s)),
                        None => {
                            tail += step;
                            (h.id.clone(), base - tail)
                        }
                    })
                    .collect();
                rerank_run.queries.push((q.id.clone(), docs));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    timings.retrieve_ms = ms(retrieve);
    timings.fetch_ms = ms(fetch);
    timings.score_ms = ms(score);
    timings.merge_ms = ms(merge);

    let queries_without_hits = bm25_run
        .queries
        .iter()
        .filter(|(_, d)| d.is_empty())
        .count();
    let mut systems = vec![score_run(ds, bm25_run, options.top_k)];
    if reranker.is_some() {
        systems.push(score_run(ds, rerank_run, options.top_k));
    }
    for s in &systems {
        tracing::info!(dataset = %ds.name, system = %s.system, mean = ?s.mean, "pipeline evaluation");
    }
    timings.total_ms = ms(started.elapsed());
    Ok(PipelineReport {
        dataset: ds.name.clone(),
        options: options.clone(),
        queries: judged.len(),
        queries_without_hits,
        systems,
        pairs_scored,
        pairs_per_second: per_second(pairs_scored, score),
        timings,
        issues: ds.issues.clone(),
    })
}

/// Put every query of `run` in trec order, drop repeated documents (each counts once, at its
/// best score), cut it to `top_k` and score it against the qrels.
pub fn score_run(ds: &Dataset, mut run: Run, top_k: usize) -> SystemReport {
    let empty = Default::default();
    let per_query: Vec<(String, TrecMetrics)> = run
        .queries
        .iter_mut()
        .map(|(qid, docs)| {
            trec_order(docs);
            let repeats = trec::drop_repeated_docs(docs);
            if repeats > 0 {
                tracing::warn!(query = %qid, repeats, "a run lists documents more than once; each counts once, at its best score");
            }
            docs.truncate(top_k);
            let ids: Vec<&str> = docs.iter().map(|(d, _)| d.as_str()).collect();
            let m = trec::evaluate(&ids, ds.qrels.get(qid.as_str()).unwrap_or(&empty));
            (qid.clone(), m)
        })
        .collect();
    SystemReport {
        system: run.system.clone(),
        mean: TrecMetrics::mean(per_query.iter().map(|(_, m)| m)),
        per_query,
        run,
    }
}
