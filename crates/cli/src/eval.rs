//! `tantivy-rerank eval`: measure a first stage and a reranker on BEIR or NanoBEIR data.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use tantivy_rerank_eval::{
    evaluate_pipeline, evaluate_rerank, load_datasets, DatasetSpec, EvalReport, NanoBeirSource,
    PipelineOptions, RerankEvalOptions, DEFAULT_DATASET_ID,
};

use crate::cascade::CascadeArgs;
use crate::score::ModelOptions;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Mode {
    /// sentence-transformers' reranking protocol (NanoBEIR model-card numbers).
    Rerank,
    /// Full retrieval: tantivy BM25, optional rerank, trec_eval measures.
    Pipeline,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A BEIR directory, `nanobeir` (sentence-transformers' default 11), `nanobeir:all`, or
    /// `nanobeir:msmarco,nfcorpus,nq`.
    #[arg(long)]
    pub dataset: String,
    /// Read NanoBEIR parquet files from this directory (`<subset>/<split>*.parquet`) instead
    /// of the Hub.
    #[arg(long)]
    pub nanobeir_dir: Option<PathBuf>,
    /// Hub dataset repo of NanoBEIR.
    #[arg(long, default_value = DEFAULT_DATASET_ID)]
    pub nanobeir_id: String,
    #[arg(long, value_enum, default_value = "pipeline")]
    pub mode: Mode,
    /// Qrels split of a BEIR directory.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// rerank: first-stage candidates reranked per query.
    #[arg(long, default_value_t = 100, value_parser = crate::at_least_one)]
    pub rerank_k: usize,
    /// rerank: score all positives even when BM25 missed them.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub always_rerank_positives: bool,
    /// pipeline: documents retrieved and scored per query.
    #[arg(long, default_value_t = 100, value_parser = crate::at_least_one)]
    pub top_k: usize,
    /// pipeline: keep the index in this directory instead of a temporary one, or reuse the
    /// index found there (it must hold this dataset's corpus).
    #[arg(long)]
    pub index_dir: Option<PathBuf>,
    /// Evaluate only the first N queries of each dataset.
    #[arg(long, value_parser = crate::at_least_one)]
    pub max_queries: Option<usize>,
    /// The reranker(s): one --model for --mode rerank; for --mode pipeline, none (BM25
    /// only), one, or several (a cascade, with --window, --budget-ms and --fusion): the
    /// pipeline then reports BM25, each shorter prefix of the cascade, the whole cascade
    /// and, with a budget, the budgeted cascade, each with NDCG@10 and time per query.
    #[command(flatten)]
    pub cascade: CascadeArgs,
    #[command(flatten)]
    pub model_opts: ModelOptions,
    /// Write report.json and TREC run files here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the JSON report on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let spec: DatasetSpec = args.dataset.parse()?;
    // Checked before anything loads.
    let rerank = args.cascade.rerank_options()?;
    if matches!(args.mode, Mode::Rerank) && args.cascade.model.len() != 1 {
        bail!("--mode rerank takes exactly one --model");
    }
    if let Some(out) = args.out.as_ref().filter(|o| o.exists() && !o.is_dir()) {
        bail!("--out {} is a file; give a directory", out.display());
    }
    let source = match &args.nanobeir_dir {
        Some(dir) => NanoBeirSource::Dir(dir.clone()),
        None => NanoBeirSource::Hub {
            dataset_id: args.nanobeir_id.clone(),
            revision: "main".into(),
        },
    };
    let datasets = load_datasets(&spec, &args.split, &source)
        .with_context(|| format!("loading dataset {}", args.dataset))?;
    for ds in &datasets {
        tracing::info!(dataset = %ds.name, docs = ds.corpus.len(), queries = ds.queries.len(), judged = ds.qrels.len(), "loaded");
    }
    let rerankers = args.cascade.load(&args.model_opts)?;
    let progress = !args.json || std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = match args.mode {
        Mode::Rerank => {
            let (Some(model), Some(reranker)) = (args.cascade.model.first(), rerankers.first())
            else {
                bail!("--mode rerank needs --model");
            };
            let options = RerankEvalOptions {
                rerank_k: args.rerank_k,
                always_rerank_positives: args.always_rerank_positives,
                max_queries: args.max_queries,
                progress,
                ..Default::default()
            };
            EvalReport::Rerank {
                dataset: args.dataset.clone(),
                model: model.clone(),
                report: evaluate_rerank(&datasets, reranker.as_ref(), &options)?,
            }
        }
        Mode::Pipeline => {
            if args.index_dir.is_some() && datasets.len() > 1 {
                bail!("--index-dir holds one index: use it with a single dataset");
            }
            let options = PipelineOptions {
                top_k: args.top_k,
                rerank,
                max_queries: args.max_queries,
                index_dir: args.index_dir.clone(),
                progress,
            };
            let models: Vec<&dyn tantivy_rerank_search::Reranker> =
                rerankers.iter().map(|r| r.as_ref()).collect();
            let reports = datasets
                .iter()
                .map(|ds| evaluate_pipeline(ds, &models, &options))
                .collect::<Result<Vec<_>, _>>()?;
            EvalReport::Pipeline {
                dataset: args.dataset.clone(),
                model: (!args.cascade.model.is_empty()).then(|| args.cascade.model.join(" > ")),
                reports,
            }
        }
    };
    // Results first: a failure writing the files must not lose them.
    if args.json {
        crate::print_stdout(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else {
        crate::print_stdout(&report.table())?;
    }
    if let Some(dir) = &args.out {
        let files = report
            .write_outputs(dir)
            .with_context(|| format!("writing outputs to {}", dir.display()))?;
        for f in files {
            eprintln!("wrote {}", f.display());
        }
    }
    Ok(())
}
