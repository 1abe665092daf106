//! Mode `pipeline`: full retrieval. The corpus is indexed with the tantivy first stage
//! ([`ArticleIndex`]), every judged query retrieves its top `top_k`, and each configuration of
//! the second stage reranks them through the search crate's own pipeline
//! ([`ArticleIndex::search`] with a [`Cascade`]: passages, aggregation, fusion, cascades and
//! the latency budget). Every configuration is scored with trec_eval's measures
//! ([`crate::metrics::trec`]) and timed per query, so quality and latency can be compared.
//!
//! Configurations ("systems"), each run over every query:
//! - `bm25`: the first stage alone;
//! - with a cascade of several stages, each shorter prefix of it: `rerank[a]`, `rerank[a > b]`…
//!   (stage names);
//! - `rerank`: every stage, no budget;
//! - with a latency budget, `rerank+budget`: every stage within the budget.
//!
//! - Queries evaluated: those with judgements (as pytrec_eval, which skips the rest); a judged
//!   query that retrieves nothing (e.g. empty text) scores 0 on every measure (pytrec_eval
//!   would leave it out of the mean, trec_eval `-c` counts it as 0, as here).
//! - Each run is put in trec_eval order (score descending, ties by doc id descending) before
//!   it is cut to `top_k` and scored, and written so, so external re-scoring agrees exactly
//!   (`scripts/trec_rescore.py QRELS RUN --queries N`, with N the report's `queries`: a query
//!   without hits has no line in the run file and counts 0 on both sides).
//! - Reranked runs: the documents the deepest stage scored carry its final scores; every
//!   document after them (scored only by earlier stages, or by none) follows in the search's
//!   order with synthetic scores below (`min - 1`, `min - 2`, ...), since scores of different
//!   stages do not compare.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tantivy_rerank_search::{
    Article, Cascade, Hit, RerankOptions, Reranker, SearchError, SearchOptions, Stage, StageOptions,
};

use crate::common::{build_index, ms, per_second, progress_bar};
use crate::dataset::Dataset;
use crate::error::{EvalError, Result};
use crate::metrics::trec::{self, trec_order, TrecMetrics};
use crate::run::Run;

/// Options of the `pipeline` mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PipelineOptions {
    /// Documents retrieved (and scored) per query (default 100).
    pub top_k: usize,
    /// The second stage: its stages (one per reranker), fusion and latency budget (default:
    /// one stage of the search crate's defaults, window 100, passages of 200 model tokens).
    pub rerank: RerankOptions,
    /// Evaluate only the first N judged queries (file order).
    pub max_queries: Option<usize>,
    /// Keep the index here (reused when it already holds an index) instead of a temporary
    /// directory.
    pub index_dir: Option<PathBuf>,
    /// Progress bars on stderr.
    pub progress: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            top_k: 100,
            rerank: RerankOptions::default(),
            max_queries: None,
            index_dir: None,
            progress: true,
        }
    }
}

/// Per-query latency of one system, in milliseconds: the whole search call (parsing,
/// retrieval, loading, every stage, merging).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Mean over the queries.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile (nearest rank).
    pub p95_ms: f64,
    /// Slowest query.
    pub max_ms: f64,
}

impl Latency {
    fn of(mut ms: Vec<f64>) -> Self {
        if ms.is_empty() {
            return Latency::default();
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        Latency {
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
            p50_ms: at(0.5),
            p95_ms: at(0.95),
            max_ms: ms[ms.len() - 1],
        }
    }
}

/// Search steps of one system summed over its queries, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTimings {
    /// Query parsing and first-stage collection.
    pub retrieve_ms: f64,
    /// Reading stored text of the candidates.
    pub fetch_ms: f64,
    /// Passage splitting and reranker calls, every stage.
    pub score_ms: f64,
    /// Aggregation, fusion and sorting.
    pub merge_ms: f64,
}

/// One system (configuration) on one dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemReport {
    /// `bm25`, `rerank[...]` (a prefix of the cascade), `rerank` or `rerank+budget`.
    pub system: String,
    /// The second stage it ran (`None` for `bm25`).
    pub rerank: Option<RerankOptions>,
    /// Mean over the evaluated queries.
    pub mean: TrecMetrics,
    /// Per query: `(query id, metrics)`.
    pub per_query: Vec<(String, TrecMetrics)>,
    /// Time per query.
    pub latency: Latency,
    /// Search steps, summed over the queries.
    pub timings: StepTimings,
    /// Texts (passages or documents) sent to rerankers.
    pub pairs_scored: usize,
    /// Texts per second of reranker time.
    pub pairs_per_second: f64,
    /// Queries in which the latency budget left candidates unscored.
    pub queries_budget_cut: usize,
    /// The run that was scored.
    #[serde(skip)]
    pub run: Run,
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
    /// `bm25`, then each configuration of the second stage when rerankers were given.
    pub systems: Vec<SystemReport>,
    /// Indexing the corpus, in milliseconds (0 when an existing index was reused).
    pub index_ms: f64,
    /// Everything, in milliseconds.
    pub total_ms: f64,
    /// Data problems found while loading.
    pub issues: crate::dataset::DataIssues,
}

/// The configurations to run for `rerankers` (one per stage of `options`): `(system name,
/// cascade)`, BM25 first. The stages are shared, so what a stage measures of its reranker's
/// cost in one configuration, the budgeted one uses.
fn configurations<'a>(
    rerankers: &[&'a dyn Reranker],
    options: &RerankOptions,
) -> Vec<(String, Option<Cascade<'a>>)> {
    let mut out = vec![("bm25".to_string(), None)];
    if rerankers.is_empty() {
        return out;
    }
    let stages: Vec<Stage<'a>> = rerankers
        .iter()
        .zip(&options.stages)
        .enumerate()
        .map(|(i, (&r, o))| {
            let name = o.name.clone().unwrap_or_else(|| format!("stage {}", i + 1));
            Stage::borrowed(r).with_options(StageOptions {
                name: Some(name),
                ..o.clone()
            })
        })
        .collect();
    let cascade = |k: usize| {
        let mut c = Cascade::new(stages[0].clone()).combination(options.combination);
        for s in &stages[1..k] {
            c = c.then(s.clone());
        }
        c
    };
    for k in 1..stages.len() {
        let names: Vec<&str> = stages[..k]
            .iter()
            .filter_map(|s| s.options().name.as_deref())
            .collect();
        out.push((format!("rerank[{}]", names.join(" > ")), Some(cascade(k))));
    }
    out.push(("rerank".into(), Some(cascade(stages.len()))));
    if let Some(budget) = options.budget {
        out.push((
            "rerank+budget".into(),
            Some(cascade(stages.len()).budget(budget)),
        ));
    }
    out
}

/// Evaluate BM25, and with `rerankers` (one per stage of `options.rerank`) each
/// configuration of the second stage, on `ds` with full retrieval.
pub fn evaluate_pipeline(
    ds: &Dataset,
    rerankers: &[&dyn Reranker],
    options: &PipelineOptions,
) -> Result<PipelineReport> {
    let zero = [
        ("top_k", options.top_k == 0),
        ("max_queries", options.max_queries == Some(0)),
    ];
    if let Some((option, _)) = zero.into_iter().find(|(_, bad)| *bad) {
        return Err(EvalError::InvalidOption {
            option,
            value: "0".into(),
            reason: "must be at least 1",
        });
    }
    if !rerankers.is_empty() {
        options.rerank.validate().map_err(|e| match e {
            SearchError::InvalidOption {
                option,
                value,
                reason,
            } => EvalError::InvalidOption {
                option,
                value,
                reason,
            },
            other => EvalError::Search {
                context: "checking the rerank options".into(),
                source: Box::new(other),
            },
        })?;
        if rerankers.len() != options.rerank.stages.len() {
            return Err(EvalError::InvalidOption {
                option: "rerank.stages",
                value: format!(
                    "{} stages for {} rerankers",
                    options.rerank.stages.len(),
                    rerankers.len()
                ),
                reason: "give one stage per reranker",
            });
        }
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
    let mut systems = Vec::new();
    let mut queries_without_hits = 0;
    for (name, cascade) in configurations(rerankers, &options.rerank) {
        let bar = progress_bar(
            options.progress,
            judged.len() as u64,
            &format!("{} {name}", ds.name),
        );
        let search = SearchOptions {
            top_n: options.top_k,
            rerank: cascade.as_ref(),
            ..Default::default()
        };
        let mut run = Run::new(&name);
        let mut latencies = Vec::with_capacity(judged.len());
        let mut steps = [Duration::ZERO; 4];
        let (mut pairs_scored, mut budget_cut) = (0, 0);
        for q in &judged {
            let t = Instant::now();
            let results = index
                .search(&q.text, &search)
                .map_err(|source| EvalError::Search {
                    context: format!("query `{}` ({name})", q.id),
                    source: Box::new(source),
                })?;
            latencies.push(ms(t.elapsed()));
            let tm = results.timings;
            for (sum, d) in steps
                .iter_mut()
                .zip([tm.retrieve, tm.fetch, tm.score, tm.merge])
            {
                *sum += d;
            }
            pairs_scored += results.passages_scored;
            budget_cut += usize::from(results.budget_exhausted);
            let docs = match cascade {
                None => results
                    .hits
                    .into_iter()
                    .map(|h| (h.doc.id, f64::from(h.first_stage_score)))
                    .collect(),
                Some(_) => run_scores(results.hits),
            };
            run.queries.push((q.id.clone(), docs));
            bar.inc(1);
        }
        bar.finish_and_clear();
        if cascade.is_none() {
            queries_without_hits = run.queries.iter().filter(|(_, d)| d.is_empty()).count();
        }
        let mut report = score_run(ds, run, options.top_k);
        report.rerank = cascade.as_ref().map(Cascade::options);
        report.latency = Latency::of(latencies);
        report.timings = StepTimings {
            retrieve_ms: ms(steps[0]),
            fetch_ms: ms(steps[1]),
            score_ms: ms(steps[2]),
            merge_ms: ms(steps[3]),
        };
        report.pairs_scored = pairs_scored;
        report.pairs_per_second = per_second(pairs_scored, steps[2]);
        report.queries_budget_cut = budget_cut;
        tracing::info!(dataset = %ds.name, system = %report.system, mean = ?report.mean, latency = ?report.latency, "pipeline evaluation");
        systems.push(report);
    }
    Ok(PipelineReport {
        dataset: ds.name.clone(),
        options: options.clone(),
        queries: judged.len(),
        queries_without_hits,
        systems,
        index_ms: ms(index_time),
        total_ms: ms(started.elapsed()),
        issues: ds.issues.clone(),
    })
}

/// Run scores of reranked hits, in the hits' order: the leading hits that the deepest stage
/// scored keep their final scores; every later one gets a synthetic score below, in order,
/// with steps the 32-bit scores of trec_eval still tell apart (1, or 16 units in the last
/// place of a large base).
fn run_scores(hits: Vec<Hit<Article>>) -> Vec<(String, f64)> {
    let depth = |h: &Hit<Article>| h.stage_scores.iter().take_while(|s| s.is_some()).count();
    let top = hits.first().map(depth).unwrap_or(0);
    let lead = if top == 0 {
        0
    } else {
        hits.iter()
            .take_while(|h| depth(h) == top && h.score.is_some())
            .count()
    };
    let floor = hits[..lead]
        .iter()
        .filter_map(|h| h.score)
        .fold(f64::INFINITY, |m, s| m.min(f64::from(s)));
    let base = if floor.is_finite() { floor } else { 0.0 };
    let step = (base.abs() * f64::from(f32::EPSILON) * 16.0).max(1.0);
    let mut tail = 0.0;
    hits.into_iter()
        .enumerate()
        .map(|(i, h)| match h.score.filter(|_| i < lead) {
            Some(s) => (h.doc.id, f64::from(s)),
            None => {
                tail += step;
                (h.doc.id, base - tail)
            }
        })
        .collect()
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
        rerank: None,
        mean: TrecMetrics::mean(per_query.iter().map(|(_, m)| m)),
        per_query,
        latency: Latency::default(),
        timings: StepTimings::default(),
        pairs_scored: 0,
        pairs_per_second: 0.0,
        queries_budget_cut: 0,
        run,
    }
}
