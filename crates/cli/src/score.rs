//! `tantivy-rerank score`: the scriptable way to compare a model with the Python reference.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};
use tantivy_rerank_encoders::{
    CrossEncoder, CrossEncoderOptions, DeviceSpec, Precision, Truncation,
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
        Ok(o)
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
        let p: PairLine = serde_json::from_str(line).with_context(|| {
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
    let predictions = model.predict(&pairs).map_err(|e| {
        let line = e.input_index().and_then(|i| line_of.get(i)).copied();
        let e = anyhow::Error::from(e);
        match line {
            Some(line) => e.context(format!("{} line {line}", args.input.display())),
            None => e,
        }
    })?;
    let multi_label = model.labels().len() > 1;
    let classes = if multi_label && model.labels().len() > 2 {
        Some(
            predictions
                .iter()
                .map(|p| model.classification(p))
                .collect::<Vec<_>>(),
        )
    } else {
        None
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for (i, p) in predictions.iter().enumerate() {
        if !p.score.is_finite() {
            bail!(
                "{} line {}: the pair scored {} (non-finite)",
                args.input.display(),
                line_of[i],
                p.score
            );
        }
        let line = ScoreLine {
            logits: &p.logits,
            score: p.score,
            label: classes.as_ref().map(|c| c[i].label.as_str()),
        };
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
