//! Retrieval evaluation for tantivy-rerank: "how much does this reranker improve my search?"
//!
//! Two modes, two sets of metric definitions, each matching its reference implementation:
//!
//! - **`rerank`** ([`evaluate_rerank`]) reproduces sentence-transformers'
//!   `CrossEncoderNanoBEIREvaluator`: rerank the published BM25 top `rerank_k` of each NanoBEIR
//!   query (positives always included by default) and report MAP, MRR@10 and NDCG@10 of the
//!   BM25 order ("Base") and of the reranked order, per dataset and their mean, so numbers are
//!   comparable with model cards;
//! - **`pipeline`** ([`evaluate_pipeline`]) runs the real system: index the corpus with the
//!   tantivy first stage, retrieve, optionally rerank with the search crate's pipeline, and
//!   score with trec_eval's NDCG@10, MRR@10, Recall@100 and MAP@100 on graded qrels.
//!
//! Datasets come from a BEIR directory ([`load_beir`]) or NanoBEIR parquet files, from the
//! Hugging Face Hub or a local directory ([`load_nanobeir`]); [`DatasetSpec`] parses the CLI's
//! `--dataset` value. Every evaluated system is also written as a TREC run file ([`Run`]).
//!
//! ```
//! use tantivy_rerank_eval::{evaluate_pipeline, Dataset, Document, PipelineOptions, Query};
//! use tantivy_rerank_eval::{RerankOptions, StageOptions};
//! # fn main() -> Result<(), tantivy_rerank_eval::EvalError> {
//! let doc = |id: &str, text: &str| Document { id: id.into(), title: String::new(), text: text.into() };
//! let ds = Dataset {
//!     name: "toy".into(),
//!     corpus: vec![doc("a", "cats purr"), doc("b", "cats and dogs"), doc("c", "dogs bark")],
//!     queries: vec![Query { id: "q".into(), text: "cats".into() }],
//!     qrels: [("q".to_string(), [("b".to_string(), 1)].into())].into(),
//!     ..Default::default()
//! };
//! // Any `Reranker` works; this one prefers texts that mention dogs.
//! let dogs = |_q: &str, texts: &[&str]| {
//!     Ok::<_, std::convert::Infallible>(texts.iter().map(|t| t.matches("dogs").count() as f32).collect())
//! };
//! let whole_docs = StageOptions { passages: None, ..Default::default() };
//! let rerank = RerankOptions { stages: vec![whole_docs], ..Default::default() };
//! let options = PipelineOptions { progress: false, rerank, ..Default::default() };
//! let report = evaluate_pipeline(&ds, &[&dogs], &options)?;
//! let (bm25, rerank) = (&report.systems[0], &report.systems[1]);
//! assert_eq!(rerank.mean.mrr_10, 1.0);
//! assert!(rerank.mean.ndcg_10 >= bm25.mean.ndcg_10);
//! # Ok(()) }
//! ```

pub mod bench;
mod common;
mod dataset;
mod error;
pub mod metrics;
mod nanobeir;
mod pipeline;
mod report;
mod reranking;
mod run;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use dataset::{load_beir, read_qrels, DataIssues, Dataset, Document, Qrels, Query};
pub use error::{EvalError, Result};
pub use metrics::trec::TrecMetrics;
pub use nanobeir::{
    default_datasets, load_nanobeir, load_split, split_name, NanoBeirSource, DEFAULT_DATASET_ID,
    NANOBEIR_DATASETS,
};
pub use pipeline::{
    evaluate_pipeline, score_run, Latency, PipelineOptions, PipelineReport, StepTimings,
    SystemReport,
};
pub use report::EvalReport;
pub use reranking::{
    evaluate_rerank, RerankDatasetReport, RerankEvalOptions, RerankQuery, RerankReport,
    RerankTimings, StMetrics,
};
pub use run::Run;
pub use tantivy_rerank_search::{
    Aggregation, Combination, PassageOptions, RerankOptions, StageOptions,
};

/// What `--dataset` names.
///
/// - `PATH`: a BEIR directory (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`);
/// - `nanobeir`: the NanoBEIR datasets sentence-transformers' evaluator uses by default (all
///   but arguana and touche2020); `nanobeir:all`: all 13;
/// - `nanobeir:msmarco,nfcorpus,nq`: those NanoBEIR datasets.
///
/// NanoBEIR comes from the Hub unless a local directory is given separately (the CLI's
/// `--nanobeir-dir`), which keeps paths containing `:` or `,` unambiguous.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DatasetSpec {
    /// A BEIR directory.
    Beir {
        /// The directory.
        dir: PathBuf,
    },
    /// NanoBEIR datasets by short name.
    NanoBeir {
        /// Short names (`msmarco`, ...).
        names: Vec<String>,
    },
}

impl FromStr for DatasetSpec {
    type Err = EvalError;

    fn from_str(spec: &str) -> Result<Self> {
        // `nanobeir` in any case (`NanoBEIR:nq`), unless a folder has that name.
        let prefix = spec.get(.."nanobeir".len());
        let rest = match prefix {
            Some(p) if p.eq_ignore_ascii_case("nanobeir") && !Path::new(spec).is_dir() => {
                &spec["nanobeir".len()..]
            }
            _ => return Ok(DatasetSpec::Beir { dir: spec.into() }),
        };
        let names: Vec<String> = match rest.to_ascii_lowercase().as_str() {
            "" => default_datasets().iter().map(|s| s.to_string()).collect(),
            ":all" => NANOBEIR_DATASETS
                .iter()
                .map(|(s, _)| s.to_string())
                .collect(),
            _ => {
                let Some(list) = rest.strip_prefix(':') else {
                    return Ok(DatasetSpec::Beir { dir: spec.into() });
                };
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }
        };
        if names.is_empty() {
            return Err(EvalError::DatasetSpec {
                spec: spec.into(),
                reason: "no dataset named after `nanobeir:`".into(),
            });
        }
        let mut seen = std::collections::HashSet::new();
        for n in &names {
            if !seen.insert(split_name(n)?) {
                return Err(EvalError::DatasetSpec {
                    spec: spec.into(),
                    reason: format!("`{n}` is named twice (it would count twice in the mean)"),
                });
            }
        }
        Ok(DatasetSpec::NanoBeir { names })
    }
}

/// Load the datasets of `spec`: a BEIR directory with the qrels of `split`, or NanoBEIR splits
/// from `source`.
pub fn load_datasets(
    spec: &DatasetSpec,
    split: &str,
    source: &NanoBeirSource,
) -> Result<Vec<Dataset>> {
    match spec {
        DatasetSpec::Beir { dir } => Ok(vec![load_beir(dir, split)?]),
        DatasetSpec::NanoBeir { names } => {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            load_nanobeir(source, &names)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_specs() {
        assert_eq!(
            "nanobeir:msmarco, nq".parse::<DatasetSpec>().unwrap(),
            DatasetSpec::NanoBeir {
                names: vec!["msmarco".into(), "nq".into()]
            }
        );
        match "nanobeir".parse::<DatasetSpec>().unwrap() {
            DatasetSpec::NanoBeir { names } => assert_eq!(names.len(), 11),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            "NanoBEIR:MSMARCO".parse::<DatasetSpec>().unwrap(),
            DatasetSpec::NanoBeir {
                names: vec!["MSMARCO".into()]
            }
        );
        assert!(matches!(
            "NANOBEIR:all".parse::<DatasetSpec>().unwrap(),
            DatasetSpec::NanoBeir { names } if names.len() == 13
        ));
        let err = "nanobeir:msmarco,nq,NanoMSMARCO"
            .parse::<DatasetSpec>()
            .unwrap_err();
        assert!(
            err.to_string().contains("`NanoMSMARCO` is named twice"),
            "{err}"
        );
        assert!("nanobeir:foo".parse::<DatasetSpec>().is_err());
        assert!("nanobeir:".parse::<DatasetSpec>().is_err());
        assert_eq!(
            "data/scifact".parse::<DatasetSpec>().unwrap(),
            DatasetSpec::Beir {
                dir: "data/scifact".into()
            }
        );
    }
}
