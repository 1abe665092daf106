//! `tantivy-rerank bench`: throughput, latency, time split and peak memory of a reranker.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use tantivy_rerank_eval::bench::{
    bench_workload_with, peak_rss_bytes, BenchOptions, Workload, WorkloadReport,
};
use tantivy_rerank_eval::load_beir;

use crate::score::ModelArgs;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Token budget per forward pass (default: 4,096 on the CPU, 65,536 on CUDA).
    #[arg(long)]
    pub max_batch_tokens: Option<usize>,
    /// Workload file: {"query", "passages"} or {"queries": [...]} (repeatable).
    #[arg(long)]
    pub workload: Vec<PathBuf>,
    /// BEIR dataset directory to draw queries from (BM25 top --candidates of each).
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Qrels split of --dataset.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Queries drawn from --dataset, spread evenly over its judged queries.
    #[arg(long, default_value_t = 10, value_parser = crate::at_least_one)]
    pub queries: usize,
    /// Candidates per dataset query.
    #[arg(long, default_value_t = 100, value_parser = crate::at_least_one)]
    pub candidates: usize,
    /// Warm-up runs (not measured).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Measured runs; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = crate::at_least_one)]
    pub runs: usize,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also serve the model over HTTP on a loopback port and drive it with this many
    /// concurrent clients, on the same pairs (`--runs` times each workload): pairs/s and
    /// p50/p99 latency of the service, and its ratio to the direct benchmark above.
    #[arg(long, value_parser = crate::at_least_one)]
    pub serve_clients: Option<usize>,
    /// Documents per request of the service benchmark.
    #[arg(long, default_value_t = 10, value_parser = crate::at_least_one)]
    pub docs_per_request: usize,
    /// Instead of the workloads: start `tantivy-rerank serve --model M --index DIR` on a
    /// loopback port and measure it under abuse: 8 well-behaved /rerank clients alone, then
    /// beside 4 abusive ones (abandoned large searches, slow headers, 300 KB queries, a huge
    /// max_chunks_per_doc): their p50/p99, the server's peak and after-load RSS, its CPU-s
    /// after the abusers left, and whether SIGTERM ends it within its shutdown timeout.
    #[arg(long, requires = "index", conflicts_with_all = ["workload", "dataset", "serve_clients"])]
    pub serve_abuse: bool,
    /// The index `--serve-abuse` serves /search on.
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// The abusive clients of `--serve-abuse`, one of each kind given (default: all four).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub abuse: Vec<crate::serve_abuse::AbuseKind>,
    /// Seconds of each `--serve-abuse` phase (the default outlasts the service's default
    /// 10 s header timeout, so the slow-header connections are seen closed).
    #[arg(long, default_value_t = 15.0)]
    pub abuse_seconds: f64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The whole `bench` report.
#[derive(Serialize)]
struct BenchReport {
    model: String,
    family: String,
    device: String,
    dtype: String,
    threads: usize,
    batch_size: usize,
    max_length: usize,
    max_batch_tokens: Option<usize>,
    workloads: Vec<WorkloadReport>,
    /// The service benchmark of each workload, with `--serve-clients`.
    serve: Vec<crate::serve_bench::ServeReport>,
    /// Peak resident set size of the process (model, data and activations), MiB.
    peak_rss_mib: Option<f64>,
    /// Peak device memory in use while benchmarking, MiB (CUDA only).
    peak_device_mib: Option<f64>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.serve_abuse {
        let index = crate::serve_abuse::check_index(args.index.as_ref())?;
        let kinds = match args.abuse.is_empty() {
            true => crate::serve_abuse::ALL_KINDS.to_vec(),
            false => args.abuse.clone(),
        };
        let report = crate::serve_abuse::run(&args.model.model, index, args.abuse_seconds, &kinds)?;
        return match args.json {
            true => crate::print_stdout(&(serde_json::to_string_pretty(&report)? + "\n")),
            false => crate::print_stdout(&crate::serve_abuse::table(&report)),
        };
    }
    if args.index.is_some() || !args.abuse.is_empty() {
        bail!("--index and --abuse are for --serve-abuse");
    }
    if args.workload.is_empty() && args.dataset.is_none() {
        bail!("give at least one --workload FILE or a --dataset DIR");
    }
    if let Some(n) = args.threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        // More threads than cores only measures the scheduler (and 100,000 of them stall the
        // machine for minutes before the first pair is scored).
        if let Ok(cores) = std::thread::available_parallelism() {
            if n > cores.get() {
                bail!(
                    "--threads {n} is more than the {} cores this process may use",
                    cores.get()
                );
            }
        }
        // candle reads RAYON_NUM_THREADS for its own pool; gemm and our kernels use rayon's.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("setting the thread count")?;
    }
    let mut workloads = Vec::new();
    for path in &args.workload {
        workloads.push(Workload::from_file(path)?);
    }
    if let Some(dir) = &args.dataset {
        let ds = load_beir(dir, &args.split)
            .with_context(|| format!("loading dataset {}", dir.display()))?;
        workloads.push(Workload::from_dataset(
            &ds,
            args.queries,
            args.candidates,
            None,
        )?);
    }
    let mut options = args.model.opts.options()?;
    if let Some(t) = args.max_batch_tokens {
        options = options.max_batch_tokens(t);
    }
    let model = tantivy_rerank_encoders::CrossEncoder::load(&args.model.model, options)
        .with_context(|| format!("loading model {}", args.model.model))?;
    let model = std::sync::Arc::new(model);
    let bench = BenchOptions {
        warmup_runs: args.warmup,
        runs: args.runs,
    };
    let mut device_peak = tantivy_rerank_encoders::DeviceMemory::new(model.device());
    let mut reports = Vec::new();
    for w in &workloads {
        if !args.json {
            eprintln!(
                "{}: {} queries, {} pairs per run; {} warm-up + {} measured runs",
                w.name,
                w.queries.len(),
                w.pairs(),
                bench.warmup_runs,
                bench.runs
            );
        }
        reports.push(bench_workload_with(&model, w, &bench, || {
            device_peak.sample()
        })?);
    }
    let mut serve = Vec::new();
    if let Some(clients) = args.serve_clients {
        for (w, direct) in workloads.iter().zip(&reports) {
            if !args.json {
                eprintln!(
                    "{}: service on loopback, {clients} clients, {} documents per request",
                    w.name, args.docs_per_request
                );
            }
            serve.push(crate::serve_bench::run(
                model.clone(),
                w,
                bench.runs,
                clients,
                args.docs_per_request,
                direct.median_pairs_per_s,
            )?);
        }
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let report = BenchReport {
        model: args.model.model.clone(),
        family: model.architecture().to_string(),
        device: format!("{:?}", model.device().location()),
        dtype: format!("{:?}", model.dtype()).to_lowercase(),
        threads: rayon::current_num_threads(),
        batch_size: model.batch_size(),
        max_length: model.max_length(),
        max_batch_tokens: model.max_batch_tokens(),
        workloads: reports,
        serve,
        peak_rss_mib: peak_rss_bytes().map(mib),
        peak_device_mib: device_peak.peak_bytes().map(mib),
    };
    if args.json {
        crate::print_stdout(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else {
        crate::print_stdout(&table(&report))?;
    }
    Ok(())
}

fn table(r: &BenchReport) -> String {
    let mut s = format!(
        "model {} ({}), {} {}, {} threads, batch {}, max_length {}, max_batch_tokens {}\n",
        r.model,
        r.family,
        r.device,
        r.dtype,
        r.threads,
        r.batch_size,
        r.max_length,
        r.max_batch_tokens
            .map_or_else(|| "none".into(), |t| t.to_string()),
    );
    s += &format!(
        "{:<32} {:>9} {:>10} {:>9} {:>9} {:>11} {:>9} {:>10} {:>9}\n",
        "workload",
        "pairs/s",
        "tokens/s",
        "p50 ms",
        "p95 ms",
        "tokenize ms",
        "sort ms",
        "forward ms",
        "other ms"
    );
    for w in &r.workloads {
        s += &format!(
            "{:<32} {:>9.2} {:>10.0} {:>9.1} {:>9.1} {:>11.1} {:>9.2} {:>10.1} {:>9.1}\n",
            w.name,
            w.median_pairs_per_s,
            w.median_tokens_per_s,
            w.latency_p50_ms,
            w.latency_p95_ms,
            w.split.tokenize_ms,
            w.split.sort_ms,
            w.split.forward_ms,
            w.split.other_ms
        );
    }
    if !r.serve.is_empty() {
        s += &format!(
            "{:<32} {:>9} {:>8} {:>9} {:>9} {:>9} {:>7} {:>12}\n",
            "service (HTTP, loopback)",
            "pairs/s",
            "clients",
            "requests",
            "p50 ms",
            "p99 ms",
            "errors",
            "vs direct"
        );
        for v in &r.serve {
            s += &format!(
                "{:<32} {:>9.2} {:>8} {:>9} {:>9.1} {:>9.1} {:>7} {:>11.2}x\n",
                v.workload,
                v.pairs_per_s,
                v.clients,
                v.requests,
                v.latency_p50_ms,
                v.latency_p99_ms,
                v.errors,
                v.ratio_to_direct
            );
        }
    }
    if let Some(m) = r.peak_rss_mib {
        s += &format!("peak RSS {m:.0} MiB\n");
    }
    if let Some(m) = r.peak_device_mib {
        s += &format!("peak device memory {m:.0} MiB\n");
    }
    s
}
