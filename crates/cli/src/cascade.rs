//! The second-stage flags that `search` and `eval` share: one `--model` per stage of a
//! cascade, its window, passages, aggregation, fusion and a latency budget.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tantivy_rerank_search::{
    load_model_reranker, Aggregation, Combination, PassageOptions, RerankOptions, Reranker,
    StageOptions,
};

use crate::score::ModelOptions;

#[derive(Args, Debug, Clone)]
pub struct CascadeArgs {
    /// Reranker: a cross-encoder or embedding-model directory, or a Hub id. Repeat it for a
    /// cascade: each later model reranks the best candidates of the one before.
    #[arg(long, value_parser = crate::model_spec)]
    pub model: Vec<String>,
    /// Candidates each stage reranks, once per --model in the same order (default: 100 for
    /// the first stage, a tenth of the stage before for each later one, at least 1).
    #[arg(long, value_parser = crate::at_least_one)]
    pub window: Vec<usize>,
    /// Per-query latency budget in milliseconds: each stage starts no batch that its measured
    /// cost says would end past it; what is left unscored keeps its earlier order.
    #[arg(long, value_parser = budget_ms)]
    pub budget_ms: Option<f64>,
    /// How each stage's score is fused with BM25's: rerank (the stage's score alone),
    /// linear:ALPHA (weight of the stage's score, min-max normalised) or rrf / rrf:K.
    #[arg(long, default_value = "rerank", value_parser = fusion)]
    pub fusion: Combination,
    /// Score documents whole (the model truncates) instead of split into passages.
    #[arg(long, conflicts_with_all = ["passage_length", "passage_stride", "aggregation"])]
    pub no_passages: bool,
    /// Passage length in model tokens (words for rerankers without a tokenizer).
    #[arg(long, default_value_t = 200, value_parser = crate::at_least_one)]
    pub passage_length: usize,
    /// Passage stride in model tokens (words for rerankers without a tokenizer); default
    /// half the passage length.
    #[arg(long, value_parser = crate::at_least_one)]
    pub passage_stride: Option<usize>,
    /// Passage score aggregation: max, first or mean.
    #[arg(long, default_value = "max", value_parser = ["max", "first", "mean"])]
    pub aggregation: String,
}

/// The flags of the second stage that need a `--model`.
pub const CASCADE_FLAGS: &[&str] = &[
    "window",
    "budget_ms",
    "fusion",
    "no_passages",
    "passage_length",
    "passage_stride",
    "aggregation",
];

fn budget_ms(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(ms) if ms.is_finite() && ms > 0.0 && ms < 1e9 => Ok(ms),
        Ok(_) => Err("must be a number of milliseconds above 0 (and below 1e9)".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn fusion(s: &str) -> Result<Combination, String> {
    let (kind, value) = match s.split_once(':') {
        Some((k, v)) => (k, Some(v)),
        None => (s, None),
    };
    let number = |v: &str| v.parse::<f32>().map_err(|e| format!("{v}: {e}"));
    match (kind, value) {
        ("rerank", None) => Ok(Combination::RerankOnly),
        ("linear", Some(v)) => {
            let alpha = number(v)?;
            if !(0.0..=1.0).contains(&alpha) {
                return Err(format!("linear:{v}: the weight must be within [0, 1]"));
            }
            Ok(Combination::Linear { alpha })
        }
        ("rrf", None) => Ok(Combination::rrf()),
        ("rrf", Some(v)) => {
            let k = number(v)?;
            if !(k.is_finite() && k >= 0.0) {
                return Err(format!("rrf:{v}: k must be finite and >= 0"));
            }
            Ok(Combination::Rrf { k })
        }
        _ => Err("expected rerank, linear:ALPHA, rrf or rrf:K".into()),
    }
}

/// A short name for a model in reports: the last part of its path or Hub id.
pub fn model_name(model: &str) -> String {
    let trimmed = model.trim_end_matches(['/', '\\']);
    trimmed
        .rsplit(['/', '\\'])
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(trimmed)
        .to_string()
}

impl CascadeArgs {
    /// The second stage's options, checked before any model loads.
    pub fn rerank_options(&self) -> anyhow::Result<RerankOptions> {
        if !self.window.is_empty() && self.window.len() != self.model.len() {
            bail!(
                "--window is given {} times for {} --model: give one window per model, in the same order",
                self.window.len(),
                self.model.len()
            );
        }
        let passages = (!self.no_passages).then(|| PassageOptions {
            length: self.passage_length,
            stride: self
                .passage_stride
                .unwrap_or((self.passage_length / 2).max(1)),
            ..Default::default()
        });
        let aggregation = match self.aggregation.as_str() {
            "max" => Aggregation::Max,
            "first" => Aggregation::First,
            "mean" => Aggregation::Mean,
            other => bail!("--aggregation {other}: expected max, first or mean"),
        };
        let mut window = 100;
        let stages = self
            .model
            .iter()
            .enumerate()
            .map(|(i, model)| {
                window = match self.window.get(i) {
                    Some(&w) => w,
                    None if i == 0 => 100,
                    None => (window / 10).max(1),
                };
                StageOptions {
                    name: Some(model_name(model)),
                    window,
                    passages,
                    aggregation,
                    ..Default::default()
                }
            })
            .collect();
        let options = RerankOptions {
            stages,
            combination: self.fusion,
            budget: self.budget_ms.map(|ms| Duration::from_secs_f64(ms / 1e3)),
        };
        if !self.model.is_empty() {
            options.validate()?;
        }
        Ok(options)
    }

    /// Load one reranker per `--model`, in order.
    pub fn load(&self, opts: &ModelOptions) -> anyhow::Result<Vec<Arc<dyn Reranker>>> {
        self.model
            .iter()
            .map(|m| load_reranker(m, opts).map(Arc::from))
            .collect()
    }
}

/// Load a cross-encoder, or an embedding model when the checkpoint is not a classifier.
pub fn load_reranker(model: &str, opts: &ModelOptions) -> anyhow::Result<Box<dyn Reranker>> {
    let cross = opts.options()?;
    let mut bi = tantivy_rerank_encoders::BiEncoderOptions::from(&cross);
    if let Some(n) = opts.embedding_cache {
        bi = bi.embedding_cache(n);
    }
    load_model_reranker(model, cross, bi).with_context(|| format!("loading {model}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_and_budget_values() {
        assert_eq!(fusion("rerank").unwrap(), Combination::RerankOnly);
        assert_eq!(fusion("rrf").unwrap(), Combination::rrf());
        assert_eq!(fusion("rrf:10").unwrap(), Combination::Rrf { k: 10.0 });
        assert_eq!(
            fusion("linear:0.25").unwrap(),
            Combination::Linear { alpha: 0.25 }
        );
        for bad in ["linear", "linear:2", "rrf:-1", "rrf:x", "max", "rerank:1"] {
            assert!(fusion(bad).is_err(), "{bad}");
        }
        assert_eq!(budget_ms("12.5").unwrap(), 12.5);
        for bad in ["0", "-3", "nan", "inf", "1e12", "x"] {
            assert!(budget_ms(bad).is_err(), "{bad}");
        }
        assert_eq!(
            model_name("../shared/models/all-MiniLM-L6-v2/"),
            "all-MiniLM-L6-v2"
        );
        assert_eq!(model_name("org/name"), "name");
    }
}
