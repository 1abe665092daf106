//! `tantivy-rerank`: score pairs with a cross-encoder, index and search article corpora, and
//! evaluate retrieval quality.

mod bench;
mod cascade;
mod eval;
mod score;
mod search;
mod serve;
mod serve_abuse;
mod serve_bench;

use std::ffi::OsString;

use anyhow::Context;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tantivy-rerank",
    version,
    about = "BM25 retrieval in tantivy with neural reranking"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score (query, document) pairs from JSONL with a cross-encoder; one JSON line out per pair.
    Score(score::ScoreArgs),
    /// Import an article corpus into an on-disk tantivy index.
    Index(search::IndexArgs),
    /// Search an index with BM25, optionally reranking the top candidates with a model.
    Search(search::SearchArgs),
    /// Evaluate BM25 and a reranker on a BEIR or NanoBEIR dataset (tables, JSON, TREC runs).
    Eval(Box<eval::EvalArgs>),
    /// Measure reranking speed on workload files or dataset queries: pairs/s, tokens/s,
    /// latency percentiles, time split and peak memory.
    Bench(Box<bench::BenchArgs>),
    /// Serve a cross-encoder over HTTP: TEI /rerank and /predict, Cohere /v1/rerank and
    /// /v2/rerank, /search with --index, /health, /info and /metrics.
    Serve(Box<serve::ServeArgs>),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = parse_cli(std::env::args_os()).unwrap_or_else(|e| e.exit());
    // Model layers allocate and free large buffers in turn: recycle them instead of
    // page-faulting fresh ones in every layer (see the encoders' `memory` module).
    tantivy_rerank_encoders::memory::reuse_large_buffers();
    let result = match cli.command {
        Command::Score(args) => score::run(args),
        Command::Index(args) => search::index(args),
        Command::Search(args) => search::search(args),
        Command::Eval(args) => eval::run(*args),
        Command::Bench(args) => bench::run(*args),
        Command::Serve(args) => serve::run(*args),
    };
    match result {
        // The reader went away (`| head`): nothing left to do, and nothing to complain about.
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

/// Write `text` to standard output; a failed write (full disk, closed pipe) is an error
/// instead of `println!`'s panic.
pub(crate) fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to standard output")
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let kind = cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| cause.downcast_ref::<serde_json::Error>()?.io_error_kind());
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// A count flag of at least 1 (0 would make the command do nothing, or divide by it).
pub(crate) fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A `--model` value: a model directory or a Hub id, never empty and never a file.
pub(crate) fn model_spec(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("is empty: give a model directory or a Hub id such as org/name".into());
    }
    if std::path::Path::new(s).is_file() {
        return Err(format!(
            "{s} is a file: give the directory that holds config.json"
        ));
    }
    Ok(s.to_string())
}

/// Flags that load and run a model (`score::ModelOptions`).
const MODEL_FLAGS: &[&str] = &[
    "revision",
    "embedding_cache",
    "max_length",
    "batch_size",
    "truncation",
    "device",
    "dtype",
];
/// `eval` flags of `--mode pipeline` only.
const PIPELINE_FLAGS: &[&str] = &[
    "window",
    "budget_ms",
    "fusion",
    "top_k",
    "no_passages",
    "passage_length",
    "passage_stride",
    "aggregation",
    "index_dir",
];
const RERANK_FLAGS: &[&str] = &["rerank_k", "always_rerank_positives"];

/// Parse the command line, and refuse flags the chosen command would silently ignore.
fn parse_cli<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut command = Cli::command();
    let matches = command.try_get_matches_from_mut(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let Some(problem) = ignored_flag(&cli.command, &matches) else {
        return Ok(cli);
    };
    // Report it with the subcommand's usage line, as clap does for its own errors.
    let name = matches.subcommand_name().unwrap_or_default();
    let mut target = command.find_subcommand(name).cloned().unwrap_or(command);
    Err(target.error(ErrorKind::ArgumentConflict, problem))
}

fn ignored_flag(command: &Command, matches: &ArgMatches) -> Option<String> {
    let (_, sub) = matches.subcommand()?;
    let given = |ids: &[&'static str]| {
        ids.iter()
            .copied()
            .find(|id| sub.value_source(id) == Some(ValueSource::CommandLine))
            .map(|id| format!("--{}", id.replace('_', "-")))
    };
    let without_model = |rerank_flags: &[&'static str], what: &str| {
        given(rerank_flags)
            .or_else(|| given(MODEL_FLAGS))
            .map(|flag| format!("{flag} needs --model (without it, {what} is BM25 only)"))
    };
    if matches!(
        command,
        Command::Score(_) | Command::Bench(_) | Command::Serve(_)
    ) {
        if let Some(flag) = given(&["embedding_cache"]) {
            return Some(format!(
                "{flag} applies to embedding models, in search and eval only"
            ));
        }
    }
    match command {
        Command::Search(a) if a.cascade.model.is_empty() => {
            without_model(cascade::CASCADE_FLAGS, "search")
        }
        Command::Eval(a) => {
            let (other_mode, other_flags) = match a.mode {
                eval::Mode::Rerank => ("pipeline", PIPELINE_FLAGS),
                eval::Mode::Pipeline => ("rerank", RERANK_FLAGS),
            };
            if let Some(flag) = given(other_flags) {
                return Some(format!("{flag} applies to --mode {other_mode} only"));
            }
            match (a.mode, a.cascade.model.len()) {
                (eval::Mode::Rerank, 0) => Some("--mode rerank needs --model".into()),
                (eval::Mode::Rerank, 2..) => Some("--mode rerank takes one --model".into()),
                (eval::Mode::Pipeline, 0) => without_model(cascade::CASCADE_FLAGS, "the pipeline"),
                _ => None,
            }
        }
        Command::Bench(a) if a.dataset.is_none() => given(&["split", "queries", "candidates"])
            .map(|flag| format!("{flag} needs --dataset (it draws the queries)")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<Cli, String> {
        parse_cli(std::iter::once("tantivy-rerank").chain(args.split_whitespace()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_a_command_would_ignore_are_refused() {
        for (args, expect) in [
            ("search --index i q --window 5", "--window needs --model"),
            ("search --index i q --device cpu", "--device needs --model"),
            (
                "search --index i q --batch-size 8",
                "--batch-size needs --model",
            ),
            ("eval --dataset d --window 5", "--window needs --model"),
            ("eval --dataset d --dtype f32", "--dtype needs --model"),
            (
                "eval --dataset d --rerank-k 5",
                "--rerank-k applies to --mode rerank only",
            ),
            (
                "eval --dataset d --no-passages",
                "--no-passages needs --model",
            ),
            (
                "eval --dataset d --aggregation mean",
                "--aggregation needs --model",
            ),
            (
                "eval --dataset d --mode rerank",
                "--mode rerank needs --model",
            ),
            (
                "eval --dataset d --mode rerank --batch-size 8",
                "--mode rerank needs --model",
            ),
            (
                "eval --dataset d --mode rerank --model m --top-k 5",
                "--top-k applies to --mode pipeline only",
            ),
            (
                "eval --dataset d --mode rerank --model m --aggregation mean",
                "--aggregation applies to --mode pipeline only",
            ),
            (
                "eval --dataset d --no-passages --passage-length 50",
                "cannot be used with",
            ),
            (
                "eval --dataset d --aggregation maxx",
                "invalid value 'maxx'",
            ),
            ("search --index i q --top 0", "must be at least 1"),
            (
                "search --index i q --budget-ms 5",
                "--budget-ms needs --model",
            ),
            ("search --index i q --fusion rrf", "--fusion needs --model"),
            ("search --index i q --model m --budget-ms 0", "above 0"),
            (
                "search --index i q --model m --fusion linear:3",
                "within [0, 1]",
            ),
            (
                "eval --dataset d --mode rerank --model a --model b",
                "takes one --model",
            ),
            (
                "eval --dataset d --mode rerank --model a --budget-ms 9",
                "--budget-ms applies to --mode pipeline only",
            ),
            ("eval --dataset d --max-queries 0", "must be at least 1"),
            (
                "bench --model m --workload w --runs 0",
                "must be at least 1",
            ),
            (
                "index --corpus c --index i --memory-mb 0",
                "must be at least 1",
            ),
            // The test runs in crates/cli, beside this file.
            ("score --model src/main.rs --input x", "is a file"),
            ("search --index i q --model src/main.rs", "is a file"),
            (
                "bench --model m --workload w --queries 5",
                "--queries needs --dataset",
            ),
            ("bench --model m --serve-abuse", "--index <INDEX>"),
            (
                "bench --model m --serve-abuse --index i --workload w",
                "cannot be used with",
            ),
            (
                "serve --model m --max-concurrent-requests 2305843009213693952",
                "over the largest limit",
            ),
            ("serve --model m --max-connections 0", "must be at least 1"),
            ("serve --model m --idle-timeout 0", "above 0"),
            ("serve --model m --header-read-timeout nan", "above 0"),
        ] {
            let err = parse(args)
                .err()
                .unwrap_or_else(|| panic!("{args}: accepted"));
            assert!(err.contains(expect), "{args}: {err}");
        }
    }

    #[test]
    fn an_empty_model_is_refused() {
        for args in [
            vec!["score", "--model", "", "--input", "x"],
            vec!["search", "--index", "i", "q", "--model", " "],
        ] {
            let err = parse_cli(std::iter::once("tantivy-rerank").chain(args.iter().copied()))
                .err()
                .map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains("is empty")),
                "{args:?}: {err:?}"
            );
        }
    }

    #[test]
    fn flags_that_apply_are_accepted() {
        for args in [
            "search --index i q",
            "search --index i q --top 3",
            "search --index i q --model m --window 5 --device cpu",
            "eval --dataset d",
            "eval --dataset d --top-k 10 --max-queries 5",
            "eval --dataset d --model m --top-k 10 --no-passages",
            "eval --dataset d --model m --window 5 --aggregation first",
            "eval --dataset d --model a --model b --window 50 --window 5 --budget-ms 200",
            "eval --dataset d --model a --fusion rrf:30",
            "search --index i q --model a --model b --budget-ms 50 --fusion linear:0.5",
            "eval --dataset d --mode rerank --model m --rerank-k 5 --max-queries 3",
            "index --corpus c --index i --memory-mb 64",
            "bench --model m --dataset d --queries 5 --candidates 10",
            "bench --model m --serve-abuse --index i --abuse-seconds 3",
            "serve --model m --max-documents 10 --max-connections 100 --shutdown-timeout 0.5",
        ] {
            assert!(parse(args).is_ok(), "{args}: {:?}", parse(args).err());
        }
    }
}
