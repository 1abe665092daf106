//! `tantivy-rerank eval`: measure a first stage and a reranker on BEIR or NanoBEIR data.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use tantivy_rerank_eval::{
    evaluate_pipeline, evaluate_rerank, load_datasets, Aggregation, DatasetSpec, EvalReport,
    NanoBeirSource, PassageOptions, PipelineOptions, RerankEvalOptions, DEFAULT_DATASET_ID,
};

use crate::score::ModelOptions;
use crate::search::load_reranker;

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
    /// Reranker: cross-encoder or embedding-model directory, or Hub id (pipeline: optional).
    #[arg(long, value_parser = crate::model_spec)]
    pub model: Option<String>,
    /// Qrels split of a BEIR directory.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// rerank: first-stage candidates reranked per query.
    #[arg(long, default_value_t = 100, value_parser = crate::at_least_one)]
    pub rerank_k: usize,
    /// rerank: score all positives even when BM25 missed them.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub always_rerank_positives: bool,
    /// pipeline: candidates reranked (needs --model).
    #[arg(long, default_value_t = 100, value_parser = crate::at_least_one)]
    pub window: usize,
    /// pipeline: documents retrieved and scored per query.
    #[arg(long, default_value_t = 100, value_parser = crate::at_least_one)]
    pub top_k: usize,
    /// pipeline: score documents whole (the model truncates) instead of split into passages.
    #[arg(long, conflicts_with_all = ["passage_length", "passage_stride", "aggregation"])]
    pub no_passages: bool,
    /// pipeline: passage length in model tokens (words for rerankers without a tokenizer).
    #[arg(long, default_value_t = 200, value_parser = crate::at_least_one)]
    pub passage_length: usize,
    /// pipeline: passage stride in model tokens (words for rerankers without a tokenizer);
    /// default half the passage length.
    #[arg(long, value_parser = crate::at_least_one)]
    pub passage_stride: Option<usize>,
    /// pipeline: passage score aggregation: max, first or mean.
    #[arg(long, default_value = "max", value_parser = ["max", "first", "mean"])]
    pub aggregation: String,
    /// pipeline: keep the index in this directory instead of a temporary one, or reuse the
    /// index found there (it must hold this dataset's corpus).
    #[arg(long)]
    pub index_dir: Option<PathBuf>,
    /// Evaluate only the first N queries of each dataset.
    #[arg(long, value_parser = crate::at_least_one)]
    pub max_queries: Option<usize>,
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
    let passages = (!args.no_passages).then(|| PassageOptions {
        length: args.passage_length,
        stride: args
            .passage_stride
            .unwrap_or((args.passage_length / 2).max(1)),
        ..Default::default()
    });
    if let Some(p) = &passages {
        p.validate()?;
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
    let reranker = match &args.model {
        Some(model) => Some(load_reranker(model, &args.model_opts)?),
        None => None,
    };
    let progress = !args.json || std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = match args.mode {
        Mode::Rerank => {
            let (Some(model), Some(reranker)) = (&args.model, &reranker) else {
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
            let aggregation = match args.aggregation.as_str() {
                "max" => Aggregation::Max,
                "first" => Aggregation::First,
                "mean" => Aggregation::Mean,
                other => bail!("--aggregation {other}: expected max, first or mean"),
            };
            if args.index_dir.is_some() && datasets.len() > 1 {
                bail!("--index-dir holds one index: use it with a single dataset");
            }
            let options = PipelineOptions {
                top_k: args.top_k,
                window: args.window,
                passages,
                aggregation,
                max_queries: args.max_queries,
                index_dir: args.index_dir.clone(),
                progress,
            };
            let reports = datasets
                .iter()
                .map(|ds| evaluate_pipeline(ds, reranker.as_deref(), &options))
                .collect::<Result<Vec<_>, _>>()?;
            EvalReport::Pipeline {
                dataset: args.dataset.clone(),
                model: args.model.clone(),
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
