//! Throughput and latency of a cross-encoder on fixed workloads (`tantivy-rerank bench`).
//!
//! A [`Workload`] is a list of queries, each with the passages to score, read from a workload
//! file (the format of `../shared/bench/*.json`: `{"query": ..., "passages": [...]}`) or drawn
//! from a dataset (each query's BM25 top-k from a tantivy index of the corpus).
//! [`bench_workload`] scores every query once per run, after warm-up runs that are not
//! counted, and reports per run: wall time, pairs/s, tokens/s, per-query latencies and the
//! split into tokenisation, sorting (batch planning and ranking the scores) and the model
//! forward pass. The headline numbers are the median run and the latency percentiles over
//! all measured queries.
//!
//! ```
//! use tantivy_rerank_eval::bench::{percentile, Workload};
//! let w = Workload::from_json_str("demo", r#"{"query": "q", "passages": ["a", "b"]}"#).unwrap();
//! assert_eq!(w.pairs(), 2);
//! assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.5);
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tantivy_rerank_encoders::CrossEncoder;
use tantivy_rerank_search::{DocLoader, SearchOptions};

use crate::dataset::Dataset;
use crate::error::{EvalError, Result};

/// One query and the passages to score against it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkloadQuery {
    /// The query text.
    pub query: String,
    /// Candidate passages, in first-stage order.
    pub passages: Vec<String>,
}

/// Queries with their candidates: what one benchmark run scores.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Workload {
    /// Display name (file stem or dataset name).
    pub name: String,
    /// The queries.
    pub queries: Vec<WorkloadQuery>,
}

/// Workload files hold one query (`{"query", "passages"}`) or several (`{"queries": [...]}`).
#[derive(Deserialize)]
struct ManyQueries {
    queries: Vec<WorkloadQuery>,
}

const WORKLOAD_SHAPE: &str =
    "expected {\"query\": str, \"passages\": [str]} or {\"queries\": [{\"query\", \"passages\"}]}";

impl Workload {
    /// Read a workload file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Self::parse(&name, &text).map_err(|(line, column, message)| EvalError::Malformed {
            path: path.to_path_buf(),
            line,
            column,
            message,
        })
    }

    /// Parse workload JSON (used by [`from_file`](Self::from_file)).
    pub fn from_json_str(name: &str, json: &str) -> Result<Self> {
        Self::parse(name, json).map_err(|(line, column, message)| EvalError::Malformed {
            path: name.into(),
            line,
            column,
            message,
        })
    }

    fn parse(name: &str, json: &str) -> std::result::Result<Self, (usize, usize, String)> {
        let at = |e: serde_json::Error| (e.line(), e.column(), format!("{e} ({WORKLOAD_SHAPE})"));
        // The shape is decided by the keys, then the text is read again as that shape, so
        // errors keep their line and column.
        let value: serde_json::Value = serde_json::from_str(json).map_err(at)?;
        let Some(object) = value.as_object() else {
            return Err((1, 1, format!("not a JSON object ({WORKLOAD_SHAPE})")));
        };
        let one_form = object.contains_key("query") || object.contains_key("passages");
        let queries = match (object.contains_key("queries"), one_form) {
            (true, true) => {
                return Err((
                    1,
                    1,
                    format!("has both `queries` and `query`/`passages` ({WORKLOAD_SHAPE})"),
                ))
            }
            (true, false) => {
                serde_json::from_str::<ManyQueries>(json)
                    .map_err(at)?
                    .queries
            }
            (false, _) => vec![serde_json::from_str::<WorkloadQuery>(json).map_err(at)?],
        };
        if queries.is_empty() || queries.iter().all(|q| q.passages.is_empty()) {
            return Err((1, 1, "the workload has no passages to score".into()));
        }
        if let Some(i) = queries.iter().position(|q| q.query.trim().is_empty()) {
            return Err((1, 1, format!("query {} is empty", i + 1)));
        }
        Ok(Self {
            name: name.into(),
            queries,
        })
    }

    /// `queries` judged queries of `ds`, spread evenly over its query file, each with the texts
    /// of its BM25 top `candidates` from a tantivy index of the corpus (built in a temporary
    /// directory, or reused from `index_dir`).
    pub fn from_dataset(
        ds: &Dataset,
        queries: usize,
        candidates: usize,
        index_dir: Option<&Path>,
    ) -> Result<Self> {
        if queries == 0 || candidates == 0 {
            return Err(EvalError::InvalidOption {
                option: if queries == 0 {
                    "queries"
                } else {
                    "candidates"
                },
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        let judged: Vec<_> = ds
            .queries
            .iter()
            .filter(|q| ds.qrels.contains_key(&q.id) && !q.text.trim().is_empty())
            .collect();
        if judged.is_empty() {
            return Err(EvalError::EmptyDataset {
                dataset: ds.name.clone(),
                reason: "no query has both text and judgements".into(),
            });
        }
        let (index, _guard) = crate::common::build_index(ds, index_dir, false)?;
        let n = queries.min(judged.len());
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let q = judged[i * judged.len() / n];
            let options = SearchOptions::default().top_n(candidates);
            let hits = index
                .search(&q.text, &options)
                .map_err(|source| EvalError::Search {
                    context: format!("query `{}`", q.id),
                    source: Box::new(source),
                })?
                .hits;
            let loader = index.loader();
            out.push(WorkloadQuery {
                query: q.text.clone(),
                passages: hits
                    .iter()
                    .map(|h| loader.text(&h.doc).into_owned())
                    .collect(),
            });
        }
        if out.iter().all(|q| q.passages.is_empty()) {
            return Err(EvalError::EmptyDataset {
                dataset: ds.name.clone(),
                reason: format!("BM25 retrieved no document for any of the {n} queries"),
            });
        }
        Ok(Self {
            name: format!("{} ({n} queries x top {candidates})", ds.name),
            queries: out,
        })
    }

    /// Pairs scored per run.
    pub fn pairs(&self) -> usize {
        self.queries.iter().map(|q| q.passages.len()).sum()
    }
}

/// How many runs to make.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct BenchOptions {
    /// Runs made first and not counted (model warm-up, allocator, caches).
    pub warmup_runs: usize,
    /// Measured runs; the median is reported.
    pub runs: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            warmup_runs: 1,
            runs: 3,
        }
    }
}

/// One measured pass over a workload.
#[derive(Debug, Clone, Serialize)]
pub struct RunMeasurement {
    /// Wall time of the run in seconds.
    pub seconds: f64,
    /// Pairs scored.
    pub pairs: usize,
    /// Real tokens fed to the model.
    pub tokens: usize,
    /// Pairs per second.
    pub pairs_per_s: f64,
    /// Tokens per second.
    pub tokens_per_s: f64,
    /// Tokenisation time, ms.
    pub tokenize_ms: f64,
    /// Batch planning and ranking the scores, ms.
    pub sort_ms: f64,
    /// Model forward passes (with host/device copies), ms.
    pub forward_ms: f64,
    /// Latency of each query, ms.
    pub query_latencies_ms: Vec<f64>,
}

/// Where the time of the median run went, ms.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TimeSplit {
    /// Tokenisation.
    pub tokenize_ms: f64,
    /// Batch planning and ranking.
    pub sort_ms: f64,
    /// Model forward passes.
    pub forward_ms: f64,
    /// Everything else (building pairs, heads, bookkeeping).
    pub other_ms: f64,
}

/// Results for one workload.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    /// The workload's name.
    pub name: String,
    /// Queries per run.
    pub queries: usize,
    /// Pairs per run.
    pub pairs: usize,
    /// Real tokens per run.
    pub tokens: usize,
    /// Warm-up runs made before measuring.
    pub warmup_runs: usize,
    /// Every measured run.
    pub runs: Vec<RunMeasurement>,
    /// Median pairs/s over the measured runs.
    pub median_pairs_per_s: f64,
    /// Median tokens/s over the measured runs.
    pub median_tokens_per_s: f64,
    /// Median per-query latency over all measured queries, ms.
    pub latency_p50_ms: f64,
    /// 95th percentile per-query latency, ms.
    pub latency_p95_ms: f64,
    /// Split of the median run.
    pub split: TimeSplit,
}

/// Score `workload` with `model`: `options.warmup_runs` uncounted runs, then
/// `options.runs` measured ones.
pub fn bench_workload(
    model: &CrossEncoder,
    workload: &Workload,
    options: &BenchOptions,
) -> Result<WorkloadReport> {
    bench_workload_with(model, workload, options, || {})
}

/// [`bench_workload`], calling `after_query` after every scored query (e.g. to sample device
/// memory).
pub fn bench_workload_with(
    model: &CrossEncoder,
    workload: &Workload,
    options: &BenchOptions,
    mut after_query: impl FnMut(),
) -> Result<WorkloadReport> {
    if options.runs == 0 {
        return Err(EvalError::InvalidOption {
            option: "runs",
            value: "0".into(),
            reason: "must be at least 1",
        });
    }
    for _ in 0..options.warmup_runs {
        run_once(model, workload, &mut after_query)?;
    }
    let runs = (0..options.runs)
        .map(|_| run_once(model, workload, &mut after_query))
        .collect::<Result<Vec<_>>>()?;
    let mut by_speed: Vec<&RunMeasurement> = runs.iter().collect();
    by_speed.sort_by(|a, b| a.pairs_per_s.total_cmp(&b.pairs_per_s));
    let median = by_speed[by_speed.len() / 2];
    let latencies: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.query_latencies_ms.iter().copied())
        .collect();
    let split = TimeSplit {
        tokenize_ms: median.tokenize_ms,
        sort_ms: median.sort_ms,
        forward_ms: median.forward_ms,
        other_ms: (median.seconds * 1e3 - median.tokenize_ms - median.sort_ms - median.forward_ms)
            .max(0.0),
    };
    Ok(WorkloadReport {
        name: workload.name.clone(),
        queries: workload.queries.len(),
        pairs: median.pairs,
        tokens: median.tokens,
        warmup_runs: options.warmup_runs,
        median_pairs_per_s: median_of(runs.iter().map(|r| r.pairs_per_s)),
        median_tokens_per_s: median_of(runs.iter().map(|r| r.tokens_per_s)),
        latency_p50_ms: percentile(&latencies, 50.0),
        latency_p95_ms: percentile(&latencies, 95.0),
        split,
        runs,
    })
}

fn run_once(
    model: &CrossEncoder,
    workload: &Workload,
    after_query: &mut impl FnMut(),
) -> Result<RunMeasurement> {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (mut tokenize, mut sort, mut forward) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut pairs, mut tokens) = (0, 0);
    let mut latencies = Vec::with_capacity(workload.queries.len());
    let started = Instant::now();
    for (i, q) in workload.queries.iter().enumerate() {
        let t = Instant::now();
        let batch: Vec<(&str, &str)> = q
            .passages
            .iter()
            .map(|p| (q.query.as_str(), p.as_str()))
            .collect();
        let (predictions, stats) =
            model
                .predict_with_stats(&batch)
                .map_err(|source| EvalError::Model {
                    context: format!("workload {}, query {}", workload.name, i + 1),
                    source: Box::new(source),
                })?;
        let ts = Instant::now();
        let mut order: Vec<usize> = (0..predictions.len()).collect();
        order.sort_by(|&a, &b| predictions[b].score.total_cmp(&predictions[a].score));
        std::hint::black_box(&order);
        sort += stats.sort + ts.elapsed();
        tokenize += stats.tokenize;
        forward += stats.forward;
        pairs += stats.pairs;
        tokens += stats.tokens;
        latencies.push(ms(t.elapsed()));
        after_query();
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(RunMeasurement {
        seconds,
        pairs,
        tokens,
        pairs_per_s: pairs as f64 / seconds,
        tokens_per_s: tokens as f64 / seconds,
        tokenize_ms: ms(tokenize),
        sort_ms: ms(sort),
        forward_ms: ms(forward),
        query_latencies_ms: latencies,
    })
}

fn median_of(xs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.collect();
    percentile(&v, 50.0)
}

/// Linear-interpolated percentile (numpy's default) of `xs`; NaN when empty.
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = p.clamp(0.0, 100.0) / 100.0 * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
}

/// Peak resident set size of this process in bytes (`VmHWM`), where the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_numpy_linear() {
        let xs = [15.0, 20.0, 35.0, 40.0, 50.0];
        assert_eq!(percentile(&xs, 50.0), 35.0);
        assert!((percentile(&xs, 95.0) - 48.0).abs() < 1e-12);
        assert_eq!(percentile(&[3.0], 95.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn workload_formats_and_errors() {
        let one = Workload::from_json_str("a", r#"{"query": "q", "passages": ["x", "y"]}"#);
        assert_eq!(one.unwrap().pairs(), 2);
        let many = Workload::from_json_str(
            "b",
            r#"{"queries": [{"query": "q", "passages": ["x"]}, {"query": "r", "passages": ["y", "z"]}]}"#,
        )
        .unwrap();
        assert_eq!((many.queries.len(), many.pairs()), (2, 3));
        let err = Workload::from_json_str("c", r#"{"query": "q"}"#).unwrap_err();
        assert!(err.to_string().contains("expected"), "{err}");
        let err = Workload::from_json_str("d", r#"{"query": " ", "passages": ["x"]}"#);
        assert!(err.unwrap_err().to_string().contains("empty"));
        let err = Workload::from_json_str("e", r#"{"query": "q", "passages": []}"#);
        assert!(err.unwrap_err().to_string().contains("no passages"));
    }

    #[test]
    fn peak_rss_is_reported_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().unwrap() > 1024 * 1024);
        }
    }
}
