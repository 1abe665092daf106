//! Mode `rerank`: sentence-transformers' `CrossEncoderNanoBEIREvaluator` /
//! `CrossEncoderRerankingEvaluator` semantics, so numbers compare with model cards.
//!
//! Per query (one row of the first-stage candidate lists):
//! - candidates = the first `rerank_k` ids of the ranked BM25 list (NanoBEIR's `bm25` subset;
//!   for a dataset without one, our tantivy BM25 top `rerank_k`);
//! - positives = the query's judgements with grade > 0 (whose documents exist);
//! - **Base** (the BM25 order): relevance of the candidates in order, then one relevant item
//!   per positive the candidates miss, scored `n, n-1, ..., 1`; a query whose candidates hold
//!   no positive (or that has no candidates) scores 0;
//! - **Reranked**: with `always_rerank_positives` (default) all positives followed by the
//!   candidates that are not positives; without it only the candidates; every item is scored by
//!   the reranker; a query with no relevant item in that list scores 0 and is not scored;
//! - MRR@k, NDCG@k ([`st::ndcg_at_k`], ties averaged), AP over the whole scored list; means
//!   over queries, then over datasets.
//!
//! Differences from sentence-transformers, all at the edges:
//! - documents are matched by **id**; the Python evaluator matches by text, so there two
//!   different documents with identical text are both relevant if one is;
//! - positives come in id order; Python takes them from a `set` (order only matters for ties);
//! - a query without candidates scores a base of 0 (Python raises a `TypeError`), a query
//!   without judgements scores 0 (Python raises a `KeyError`), a list of a single document gets
//!   NDCG 1 or 0 (sklearn refuses lists of one).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tantivy_rerank_search::Reranker;

use crate::common::{bm25_ids, build_index, ms, per_second, progress_bar};
use crate::dataset::Dataset;
use crate::error::{EvalError, Result};
use crate::metrics::{mean, st};
use crate::run::Run;

/// Options of the `rerank` mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RerankEvalOptions {
    /// First-stage candidates reranked per query (default 100).
    pub rerank_k: usize,
    /// Cut-off of MRR and NDCG (default 10).
    pub at_k: usize,
    /// Score all positives even when BM25 missed them (default true, as sentence-transformers).
    pub always_rerank_positives: bool,
    /// Evaluate only the first N queries of each dataset.
    pub max_queries: Option<usize>,
    /// Progress bars on stderr.
    pub progress: bool,
}

impl Default for RerankEvalOptions {
    fn default() -> Self {
        RerankEvalOptions {
            rerank_k: 100,
            at_k: 10,
            always_rerank_positives: true,
            max_queries: None,
            progress: true,
        }
    }
}

/// MAP, MRR@k and NDCG@k.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StMetrics {
    /// Mean average precision over the whole scored list.
    pub map: f64,
    /// MRR@k.
    pub mrr_at_k: f64,
    /// NDCG@k.
    pub ndcg_at_k: f64,
}

impl StMetrics {
    fn from_tuple((mrr, ndcg, ap): (f64, f64, f64)) -> Self {
        StMetrics {
            map: ap,
            mrr_at_k: mrr,
            ndcg_at_k: ndcg,
        }
    }

    /// Mean of each metric.
    pub fn mean<'a>(items: impl IntoIterator<Item = &'a StMetrics> + Clone) -> StMetrics {
        let v =
            |f: fn(&StMetrics) -> f64| mean(&items.clone().into_iter().map(f).collect::<Vec<_>>());
        StMetrics {
            map: v(|m| m.map),
            mrr_at_k: v(|m| m.mrr_at_k),
            ndcg_at_k: v(|m| m.ndcg_at_k),
        }
    }
}

/// One query of the `rerank` mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankQuery {
    /// Query id.
    pub query_id: String,
    /// Positives (grade > 0, existing documents).
    pub positives: usize,
    /// First-stage candidates used.
    pub candidates: usize,
    /// Positives among the candidates.
    pub positives_in_candidates: usize,
    /// Pairs sent to the reranker (0 when the query scores 0 without scoring).
    pub scored: usize,
    /// Metrics of the BM25 order.
    pub base: StMetrics,
    /// Metrics after reranking.
    pub reranked: StMetrics,
}

/// Wall-clock time of the stages of one dataset, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RerankTimings {
    /// Building the first stage (index + retrieval) when the dataset has no candidate lists.
    pub first_stage_ms: f64,
    /// Reranker calls.
    pub score_ms: f64,
    /// Everything.
    pub total_ms: f64,
}

/// Results of one dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankDatasetReport {
    /// Dataset name (`NanoMSMARCO`, ...).
    pub dataset: String,
    /// Where the candidates came from: `published` (the dataset's lists) or `tantivy-bm25`.
    pub first_stage: String,
    /// Queries evaluated.
    pub queries: usize,
    /// Mean base metrics.
    pub base: StMetrics,
    /// Mean reranked metrics.
    pub reranked: StMetrics,
    /// Pairs scored.
    pub pairs_scored: usize,
    /// Pairs per second of reranker time.
    pub pairs_per_second: f64,
    /// Stage timings.
    pub timings: RerankTimings,
    /// Data problems found while loading.
    pub issues: crate::dataset::DataIssues,
    /// Per-query details.
    pub per_query: Vec<RerankQuery>,
    /// Run of the base order (`base`) and of the reranked lists (`rerank`).
    #[serde(skip)]
    pub runs: Vec<Run>,
}

/// Results of the `rerank` mode over several datasets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankReport {
    /// Options used.
    pub options: RerankEvalOptions,
    /// Per dataset.
    pub datasets: Vec<RerankDatasetReport>,
    /// Mean over datasets of the base metrics.
    pub mean_base: StMetrics,
    /// Mean over datasets of the reranked metrics.
    pub mean_reranked: StMetrics,
}

/// Evaluate `reranker` on `datasets` with sentence-transformers' reranking protocol.
pub fn evaluate_rerank(
    datasets: &[Dataset],
    reranker: &dyn Reranker,
    options: &RerankEvalOptions,
) -> Result<RerankReport> {
    if options.rerank_k == 0 || options.at_k == 0 {
        return Err(EvalError::InvalidOption {
            option: "rerank_k / at_k",
            value: format!("{} / {}", options.rerank_k, options.at_k),
            reason: "must be at least 1",
        });
    }
    if options.max_queries == Some(0) {
        return Err(EvalError::InvalidOption {
            option: "max_queries",
            value: "0".into(),
            reason: "must be at least 1 (leave it unset for every query)",
        });
    }
    let reports = datasets
        .iter()
        .map(|ds| evaluate_dataset(ds, reranker, options))
        .collect::<Result<Vec<_>>>()?;
    Ok(RerankReport {
        options: options.clone(),
        mean_base: StMetrics::mean(reports.iter().map(|r| &r.base)),
        mean_reranked: StMetrics::mean(reports.iter().map(|r| &r.reranked)),
        datasets: reports,
    })
}

fn evaluate_dataset(
    ds: &Dataset,
    reranker: &dyn Reranker,
    options: &RerankEvalOptions,
) -> Result<RerankDatasetReport> {
    let started = Instant::now();
    let docs = ds.doc_index();
    let queries = ds.query_index();
    // Candidate lists: the dataset's, else our BM25.
    let (lists, first_stage, first_stage_time) = match &ds.candidates {
        Some(lists) => (lists.clone(), "published", Duration::ZERO),
        None => {
            let t = Instant::now();
            let (index, _guard) = build_index(ds, None, options.progress)?;
            let mut lists = Vec::new();
            for q in ds.queries.iter().filter(|q| ds.qrels.contains_key(&q.id)) {
                let hits = bm25_ids(&index, &q.id, &q.text, options.rerank_k)?;
                lists.push((q.id.clone(), hits.into_iter().map(|(id, _)| id).collect()));
            }
            (lists, "tantivy-bm25", t.elapsed())
        }
    };
    let lists: Vec<(String, Vec<String>)> = match options.max_queries {
        Some(n) => lists.into_iter().take(n).collect(),
        None => lists,
    };
    if lists.is_empty() {
        return Err(EvalError::EmptyDataset {
            dataset: ds.name.clone(),
            reason: "no query to evaluate".into(),
        });
    }
    let bar = progress_bar(options.progress, lists.len() as u64, &ds.name);
    let mut per_query = Vec::with_capacity(lists.len());
    let mut base_run = Run::new("base");
    let mut rerank_run = Run::new("rerank");
    let mut score_time = Duration::ZERO;
    let mut pairs_scored = 0;
    for (qid, ids) in &lists {
        let Some(&qi) = queries.get(qid.as_str()) else {
            continue;
        };
        let query = &ds.queries[qi];
        let positives: Vec<&str> = ds
            .qrels
            .get(qid)
            .map(|j| {
                j.iter()
                    .filter(|(d, &g)| g > 0 && docs.contains_key(d.as_str()))
                    .map(|(d, _)| d.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let is_pos: HashMap<&str, ()> = positives.iter().map(|p| (*p, ())).collect();
        // Candidates the corpus lacks are dropped, as the NanoBEIR loader drops them (a
        // hand-built `Dataset` can still hold some).
        let known = ids.iter().filter(|d| docs.contains_key(d.as_str()));
        let unknown = ids.len() - known.clone().count();
        if unknown > 0 {
            tracing::warn!(dataset = %ds.name, query = %qid, unknown, "candidates not in the corpus are skipped");
        }
        let documents: Vec<&str> = known.take(options.rerank_k).map(String::as_str).collect();

        // Base: the BM25 order with missed positives appended.
        let mut base_rel: Vec<bool> = documents.iter().map(|d| is_pos.contains_key(d)).collect();
        let found = base_rel.iter().filter(|&&r| r).count();
        let base = if found == 0 {
            StMetrics::default()
        } else {
            // A list that repeats a positive counts it each time, and Python's
            // `[True] * (positives - found)` is empty when that goes negative.
            base_rel.extend(std::iter::repeat_n(
                true,
                positives.len().saturating_sub(found),
            ));
            let n = base_rel.len();
            let scores: Vec<f64> = (0..n).map(|i| (n - i) as f64).collect();
            StMetrics::from_tuple(st::compute_metrics(&base_rel, &scores, options.at_k))
        };
        base_run.queries.push((
            qid.clone(),
            documents
                .iter()
                .enumerate()
                .map(|(i, d)| (d.to_string(), (documents.len() - i) as f64))
                .collect(),
        ));

        // Reranked.
        let docs_scored: Vec<&str> = if options.always_rerank_positives {
            positives
                .iter()
                .copied()
                .chain(
                    documents
                        .iter()
                        .copied()
                        .filter(|d| !is_pos.contains_key(d)),
                )
                .collect()
        } else {
            documents.clone()
        };
        let relevant: Vec<bool> = docs_scored.iter().map(|d| is_pos.contains_key(d)).collect();
        let (reranked, scored) = if relevant.iter().any(|&r| r) {
            let texts: Vec<String> = docs_scored
                .iter()
                .map(|d| ds.corpus[docs[d]].full_text())
                .collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let t = Instant::now();
            let scores =
                reranker
                    .rerank(&query.text, &refs)
                    .map_err(|source| EvalError::Rerank {
                        query_id: qid.clone(),
                        source: Box::new(source),
                    })?;
            score_time += t.elapsed();
            check_scores(qid, &scores, refs.len())?;
            let scores: Vec<f64> = scores.iter().map(|&s| f64::from(s)).collect();
            rerank_run.queries.push((
                qid.clone(),
                docs_scored
                    .iter()
                    .zip(&scores)
                    .map(|(d, &s)| (d.to_string(), s))
                    .collect(),
            ));
            pairs_scored += refs.len();
            (
                StMetrics::from_tuple(st::compute_metrics(&relevant, &scores, options.at_k)),
                refs.len(),
            )
        } else {
            (StMetrics::default(), 0)
        };
        per_query.push(RerankQuery {
            query_id: qid.clone(),
            positives: positives.len(),
            candidates: documents.len(),
            positives_in_candidates: found,
            scored,
            base,
            reranked,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let base = StMetrics::mean(per_query.iter().map(|q| &q.base));
    let reranked = StMetrics::mean(per_query.iter().map(|q| &q.reranked));
    tracing::info!(dataset = %ds.name, queries = per_query.len(), ?base, ?reranked, "rerank evaluation");
    Ok(RerankDatasetReport {
        dataset: ds.name.clone(),
        first_stage: first_stage.into(),
        queries: per_query.len(),
        base,
        reranked,
        pairs_scored,
        pairs_per_second: per_second(pairs_scored, score_time),
        timings: RerankTimings {
            first_stage_ms: ms(first_stage_time),
            score_ms: ms(score_time),
            total_ms: ms(started.elapsed()),
        },
        issues: ds.issues.clone(),
        per_query,
        runs: vec![base_run, rerank_run],
    })
}

pub(crate) fn check_scores(query_id: &str, scores: &[f32], expected: usize) -> Result<()> {
    if scores.len() != expected {
        return Err(EvalError::BadScores {
            query_id: query_id.into(),
            reason: format!("{} scores for {expected} texts", scores.len()),
        });
    }
    if let Some(bad) = scores.iter().find(|s| !s.is_finite()) {
        return Err(EvalError::BadScores {
            query_id: query_id.into(),
            reason: format!("non-finite score {bad}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{Document, Query};

    #[test]
    fn candidates_missing_from_the_corpus_are_skipped_not_a_panic() {
        let doc = |id: &str, text: &str| Document {
            id: id.into(),
            title: String::new(),
            text: text.into(),
        };
        let ds = Dataset {
            name: "hand-built".into(),
            corpus: vec![doc("a", "cats purr"), doc("b", "dogs bark")],
            queries: vec![Query {
                id: "q".into(),
                text: "cats".into(),
            }],
            qrels: [("q".to_string(), [("a".to_string(), 1)].into())].into(),
            candidates: Some(vec![(
                "q".into(),
                vec!["b".into(), "zzz".into(), "a".into()],
            )]),
            ..Default::default()
        };
        let seen = std::sync::Mutex::new(Vec::new());
        let reranker = |_q: &str, texts: &[&str]| {
            seen.lock().unwrap().push(texts.len());
            Ok::<_, std::convert::Infallible>(
                texts
                    .iter()
                    .map(|t| t.matches("cats").count() as f32)
                    .collect(),
            )
        };
        let options = RerankEvalOptions {
            progress: false,
            ..Default::default()
        };
        let report = evaluate_rerank(std::slice::from_ref(&ds), &reranker, &options).unwrap();
        // Two known candidates scored; the positive is ranked first after reranking.
        assert_eq!(*seen.lock().unwrap(), [2]);
        let r = &report.datasets[0];
        assert_eq!(r.reranked.ndcg_at_k, 1.0);
        assert!(r.base.ndcg_at_k < 1.0);
    }
}
