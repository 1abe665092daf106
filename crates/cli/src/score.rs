//! `tantivy-rerank score`: the scriptable way to compare a model with the Python reference.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};
use tantivy_rerank_encoders::{
    CrossEncoder, CrossEncoderOptions, DeviceSpec, Kernels, Precision, Truncation,
};

/// A required `--model` plus the loading options.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model directory or Hugging Face Hub id.
    #[arg(long, value_parser = crate::model_spec)]
    pub model: String,
    #[command(flatten)]
    pub opts: ModelOptions,
}

/// Loading options shared by every command that loads a reranker (`--model` itself is
/// required in some commands and optional in others).
#[derive(Args, Debug, Clone)]
pub struct ModelOptions {
    /// Hub revision (branch, tag or commit).
    #[arg(long)]
    pub revision: Option<String>,
    /// Maximum tokens per pair (default: what the model and tokenizer allow).
    #[arg(long, value_parser = crate::at_least_one)]
    pub max_length: Option<usize>,
    /// Pairs per forward pass.
    #[arg(long, default_value_t = 32, value_parser = crate::at_least_one)]
    pub batch_size: usize,
    /// Truncation strategy: longest_first or only_second.
    #[arg(long, default_value = "longest_first")]
    pub truncation: String,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// f32, f16 or bf16 (default: bf16 on CUDA, f16 before compute capability 8.0, f32 on CPU).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Embedding models only: embeddings of this many recent texts are kept (default 10,000;
    /// 0 to measure every query at full cost).
    #[arg(long)]
    pub embedding_cache: Option<usize>,
    /// Causal (LLM) rerankers only: the instruction of the prompt (Qwen3-Reranker's default:
    /// "Given a web search query, retrieve relevant passages that answer the query").
    #[arg(long)]
    pub instruction: Option<String>,
    /// Kernels: auto (the fastest for the device and dtype) or portable (candle's ops).
    #[arg(long, default_value = "auto", value_parser = parse_kernels)]
    pub kernels: Kernels,
}

fn parse_kernels(s: &str) -> Result<Kernels, String> {
    match s {
        "auto" => Ok(Kernels::Auto),
        "portable" => Ok(Kernels::Portable),
        other => Err(format!("{other:?}: expected auto or portable")),
    }
}

impl ModelOptions {
    /// Build loader options from the flags.
    pub fn options(&self) -> anyhow::Result<CrossEncoderOptions> {
        let mut o = CrossEncoderOptions::default()
            .device(self.device.parse::<DeviceSpec>()?)
            .batch_size(self.batch_size)
            .truncation(self.truncation.parse::<Truncation>()?);
        if let Some(d) = &self.dtype {
            o = o.dtype(d.parse::<Precision>()?);
        }
        if let Some(m) = self.max_length {
            o = o.max_length(m);
        }
        if let Some(r) = &self.revision {
            o = o.revision(r.clone());
        }
        if let Some(i) = &self.instruction {
            o = o.instruction(i.clone());
        }
        Ok(o.kernels(self.kernels))
    }
}

impl ModelArgs {
    /// Load the cross-encoder.
    pub fn load(&self) -> anyhow::Result<CrossEncoder> {
        CrossEncoder::load(&self.model, self.opts.options()?)
            .with_context(|| format!("loading model {}", self.model))
    }
}

#[derive(Args, Debug)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// JSONL file with {"query": ..., "document": ...} per line ("-" for stdin).
    #[arg(long)]
    pub input: PathBuf,
}

#[derive(Deserialize)]
struct PairLine {
    query: String,
    document: String,
}

/// One line of the pairs file.
fn parse_pair(line: &str) -> serde_json::Result<PairLine> {
    serde_json::from_str(line)
}

#[derive(Serialize)]
struct ScoreLine<'a> {
    logits: &'a [f32],
    score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
}

pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    let reader: Box<dyn BufRead> = if args.input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(&args.input)
            .with_context(|| format!("opening {}", args.input.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut pairs = Vec::new();
    // The input line of every pair, for errors about one pair.
    let mut line_of = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| {
            let what = if e.kind() == std::io::ErrorKind::InvalidData {
                "not valid UTF-8 text".to_string()
            } else {
                e.to_string()
            };
            anyhow::anyhow!("{} line {}: {what}", args.input.display(), i + 1)
        })?;
        // Editors on Windows start UTF-8 files with a byte-order mark.
        let line = if i == 0 {
            line.strip_prefix('\u{feff}').unwrap_or(&line)
        } else {
            &line
        };
        if line.trim().is_empty() {
            continue;
        }
        let p = parse_pair(line).with_context(|| {
            format!(
                "{} line {}: expected {{\"query\": ..., \"document\": ...}}",
                args.input.display(),
                i + 1
            )
        })?;
        pairs.push((p.query, p.document));
        line_of.push(i + 1);
    }
    let model = args.model.load()?;
    let multi_label = model.labels().len() > 2;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    // Chunks of a few batches, each written (and flushed) as soon as it is scored: an
    // interrupted run keeps what it finished, and no result waits for the whole input.
    let chunk = model.batch_size().saturating_mul(8).max(1);
    for (c, part) in pairs.chunks(chunk).enumerate() {
        let first = c * chunk;
        let predictions = model.predict(part).map_err(|e| {
            let line = e
                .input_index()
                .and_then(|i| line_of.get(first + i))
                .copied();
            let e = anyhow::Error::from(e);
            match line {
                Some(line) => e.context(format!("{} line {line}", args.input.display())),
                None => e,
            }
        })?;
        for (i, p) in predictions.iter().enumerate() {
            if !p.score.is_finite() {
                bail!(
                    "{} line {}: the pair scored {} (non-finite)",
                    args.input.display(),
                    line_of[first + i],
                    p.score
                );
            }
            let class = multi_label.then(|| model.classification(p));
            let line = ScoreLine {
                logits: &p.logits,
                score: p.score,
                label: class.as_ref().map(|c| c.label.as_str()),
            };
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_pair;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any line: a pair or an error, never a panic.
        #[test]
        fn any_line_is_a_pair_or_an_error(line in ".{0,200}") {
            let _ = parse_pair(&line);
        }

        /// Any texts written as a pair read back exactly, other fields ignored.
        #[test]
        fn pairs_read_back(query in ".{0,50}", document in ".{0,200}", extra in proptest::option::of(".{0,10}")) {
            let mut v = serde_json::json!({"query": query, "document": document});
            if let Some(x) = extra {
                v["source"] = serde_json::Value::from(x);
            }
            let p = parse_pair(&v.to_string()).unwrap();
            prop_assert_eq!(p.query, query);
            prop_assert_eq!(p.document, document);
        }
    }
}
