//! Human tables and the output directory (JSON report + TREC run files).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::pipeline::PipelineReport;
use crate::reranking::RerankReport;

/// The report of one `eval` invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum EvalReport {
    /// sentence-transformers reranking protocol.
    Rerank {
        /// The dataset specification.
        dataset: String,
        /// The model (directory or Hub id).
        model: String,
        /// Results.
        report: RerankReport,
    },
    /// Full retrieval with trec_eval measures.
    Pipeline {
        /// The dataset specification.
        dataset: String,
        /// The model, when one reranked.
        model: Option<String>,
        /// One report per dataset.
        reports: Vec<PipelineReport>,
    },
}

impl EvalReport {
    /// A human-readable table of the aggregate numbers.
    pub fn table(&self) -> String {
        let mut s = String::new();
        match self {
            EvalReport::Rerank { model, report, .. } => {
                let k = report.options.at_k;
                let _ = writeln!(
                    s,
                    "rerank mode (sentence-transformers protocol), model {model}, rerank_k {}, always_rerank_positives {}",
                    report.options.rerank_k, report.options.always_rerank_positives
                );
                let mut block =
                    |name: &str, q: Option<usize>, b: &crate::StMetrics, r: &crate::StMetrics| {
                        let _ = writeln!(
                            s,
                            "\n{name}{}",
                            q.map(|q| format!(" ({q} queries)")).unwrap_or_default()
                        );
                        let _ = writeln!(s, "{:<9} {:>6} -> {:<6}", "", "Base", "Reranked");
                        let _ = writeln!(
                            s,
                            "{:<9} {:>6.2} -> {:.2}",
                            "MAP:",
                            b.map * 100.0,
                            r.map * 100.0
                        );
                        let _ = writeln!(
                            s,
                            "{:<9} {:>6.2} -> {:.2}",
                            format!("MRR@{k}:"),
                            b.mrr_at_k * 100.0,
                            r.mrr_at_k * 100.0
                        );
                        let _ = writeln!(
                            s,
                            "{:<9} {:>6.2} -> {:.2}",
                            format!("NDCG@{k}:"),
                            b.ndcg_at_k * 100.0,
                            r.ndcg_at_k * 100.0
                        );
                    };
                for d in &report.datasets {
                    block(&d.dataset, Some(d.queries), &d.base, &d.reranked);
                }
                if report.datasets.len() > 1 {
                    block(
                        "Mean over datasets",
                        None,
                        &report.mean_base,
                        &report.mean_reranked,
                    );
                }
                for d in &report.datasets {
                    let _ = writeln!(
                        s,
                        "{}: {} pairs scored, {:.1} pairs/s, first stage {}",
                        d.dataset, d.pairs_scored, d.pairs_per_second, d.first_stage
                    );
                }
            }
            EvalReport::Pipeline { model, reports, .. } => {
                let _ = writeln!(
                    s,
                    "pipeline mode (trec_eval measures), model {}",
                    model.as_deref().unwrap_or("none (BM25 only)")
                );
                // The measures keep their trec_eval names; say when the run is shallower.
                if let Some(k) = reports.iter().map(|r| r.options.top_k).min() {
                    if k < 100 {
                        let also = if k < 10 {
                            "; so do NDCG@10 and MRR@10"
                        } else {
                            ""
                        };
                        let _ = writeln!(
                            s,
                            "runs are cut at top_k = {k}: Recall@100 and MAP@100 count only those documents{also}"
                        );
                    }
                }
                let width = reports
                    .iter()
                    .flat_map(|r| r.systems.iter().map(|sys| sys.system.len()))
                    .max()
                    .unwrap_or(6)
                    .max(6);
                let _ = writeln!(
                    s,
                    "{:<20} {:<width$} {:>7} {:>8} {:>8} {:>10} {:>8} {:>9} {:>9}",
                    "dataset",
                    "system",
                    "queries",
                    "NDCG@10",
                    "MRR@10",
                    "Recall@100",
                    "MAP@100",
                    "ms/query",
                    "p95 ms"
                );
                for r in reports {
                    for sys in &r.systems {
                        let m = sys.mean;
                        let _ = writeln!(
                            s,
                            "{:<20} {:<width$} {:>7} {:>8.4} {:>8.4} {:>10.4} {:>8.4} {:>9.1} {:>9.1}",
                            r.dataset,
                            sys.system,
                            r.queries,
                            m.ndcg_10,
                            m.mrr_10,
                            m.recall_100,
                            m.map_100,
                            sys.latency.mean_ms,
                            sys.latency.p95_ms
                        );
                    }
                    let _ = writeln!(
                        s,
                        "{:<20} index {:.1} s, total {:.1} s",
                        "",
                        r.index_ms / 1e3,
                        r.total_ms / 1e3
                    );
                    for sys in r.systems.iter().filter(|sys| sys.pairs_scored > 0) {
                        let budget = match sys.queries_budget_cut {
                            0 => String::new(),
                            n => format!(", the budget cut {n} of {} queries short", r.queries),
                        };
                        let _ = writeln!(
                            s,
                            "{:<20} {}: {} pairs scored, {:.1} pairs/s{budget}",
                            "", sys.system, sys.pairs_scored, sys.pairs_per_second
                        );
                    }
                }
            }
        }
        s
    }

    /// Write `report.json` and one TREC run file per dataset and system
    /// (`<dataset>.<system>.trec`) into `dir` (created). Returns the files written.
    /// `report.json` comes first, so a run file that cannot be written (an id with
    /// whitespace) does not lose the report.
    pub fn write_outputs(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(EvalError::io(dir))?;
        let path = dir.join("report.json");
        let file = std::fs::File::create(&path).map_err(EvalError::io(&path))?;
        serde_json::to_writer_pretty(std::io::BufWriter::new(file), self).map_err(|source| {
            EvalError::Json {
                path: path.clone(),
                source,
            }
        })?;
        let mut written = vec![path];
        let runs: Vec<(&str, &crate::Run)> = match self {
            EvalReport::Rerank { report, .. } => report
                .datasets
                .iter()
                .flat_map(|d| d.runs.iter().map(move |r| (d.dataset.as_str(), r)))
                .collect(),
            EvalReport::Pipeline { reports, .. } => reports
                .iter()
                .flat_map(|d| d.systems.iter().map(move |s| (d.dataset.as_str(), &s.run)))
                .collect(),
        };
        for (dataset, run) in runs {
            let path = dir.join(run_file_name(dataset, &run.system));
            run.write_trec(&path)?;
            written.push(path);
        }
        Ok(written)
    }
}

/// The run file name of a dataset's system: one plain file name, whatever the dataset's name
/// holds (`..`, `/`, a drive prefix), so every file lands inside the output directory.
pub(crate) fn run_file_name(dataset: &str, system: &str) -> String {
    let clean = |s: &str| -> String {
        let kept: String = s
            .chars()
            .map(|c| match c {
                '/' | '\\' | ':' | '\0' => '_',
                c if c.is_control() => '_',
                c => c,
            })
            .collect();
        // With no separator left, only a name of dots (`.`, `..`) could leave the directory.
        if kept.chars().all(|c| c == '.') {
            "dataset".to_string()
        } else {
            kept
        }
    };
    format!("{}.{}.trec", clean(dataset), clean(system))
}

#[cfg(test)]
mod tests {
    use super::run_file_name;

    #[test]
    fn run_files_stay_in_the_output_directory() {
        assert_eq!(run_file_name("scifact", "bm25"), "scifact.bm25.trec");
        assert_eq!(
            run_file_name("scifact", "rerank[a > b]"),
            "scifact.rerank[a > b].trec"
        );
        for evil in [
            "..",
            "../..",
            "/etc/passwd",
            "a/../../b",
            "C:\\x",
            ".hidden",
            "\0x",
        ] {
            let name = run_file_name(evil, "bm25");
            let p = std::path::Path::new(&name);
            assert_eq!(p.components().count(), 1, "{evil}: {name}");
            assert!(
                matches!(p.components().next(), Some(std::path::Component::Normal(_))),
                "{evil}: {name}"
            );
        }
    }
}
