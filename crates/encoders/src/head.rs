//! From logits to one relevance score, for 1-, 2- and many-label heads.
//!
//! - 1 label: the activation sentence-transformers applies (`activation_fn` from
//!   `config_sentence_transformers.json`, `config.json`'s `sentence_transformers` section, or
//!   the legacy `sbert_ce_default_activation_function`; sigmoid when none is given).
//! - 2 labels: the softmax probability of the label that means "relevant" (index 1 unless
//!   `id2label` names it otherwise).
//! - 3+ labels: the expected grade `sum_i p_i * grade_i`. Without `label_grades`, three labels
//!   whose names say irrelevant / partial / relevant (for example `irrelevant`, `partial`,
//!   `sufficient`, in any order) get grades 0, 0.5 and 1 by name; other labels get the label
//!   order spread evenly over `[0, 1]`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::CommonConfig;
use crate::error::{EncoderError, Result};

/// Activation applied to a single-logit head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScoreActivation {
    /// `1 / (1 + e^-x)` (sentence-transformers' default for one label).
    #[default]
    Sigmoid,
    /// The raw logit.
    Identity,
    /// `tanh(x)`.
    Tanh,
}

impl ScoreActivation {
    /// Parse a sentence-transformers class path (`torch.nn.modules.activation.Sigmoid`, ...)
    /// or a short name (`sigmoid`, `identity`, `tanh`).
    pub fn from_name(name: &str) -> Option<Self> {
        let last = name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase();
        match last.as_str() {
            "sigmoid" => Some(ScoreActivation::Sigmoid),
            "identity" | "none" => Some(ScoreActivation::Identity),
            "tanh" => Some(ScoreActivation::Tanh),
            _ => None,
        }
    }

    /// Apply to one logit.
    pub fn apply(&self, x: f32) -> f32 {
        match self {
            ScoreActivation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            ScoreActivation::Identity => x,
            ScoreActivation::Tanh => x.tanh(),
        }
    }
}

impl std::str::FromStr for ScoreActivation {
    type Err = EncoderError;
    fn from_str(s: &str) -> Result<Self> {
        Self::from_name(s).ok_or_else(|| EncoderError::InvalidOption {
            name: "activation".into(),
            value: s.into(),
            reason: "expected sigmoid, identity or tanh".into(),
        })
    }
}

/// How a head's logits become one score.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScoreHead {
    /// One logit and an activation.
    Single { activation: ScoreActivation },
    /// Two labels: softmax probability of `relevant`.
    Binary { relevant: usize },
    /// Three or more labels: expected grade under the softmax.
    Graded { grades: Vec<f32> },
}

const RELEVANT_NAMES: &[&str] = &[
    "relevant",
    "positive",
    "pos",
    "true",
    "yes",
    "match",
    "entailment",
];
const IRRELEVANT_NAMES: &[&str] = &[
    "irrelevant",
    "not_relevant",
    "not relevant",
    "non_relevant",
    "negative",
    "neg",
    "false",
    "no",
    "no_match",
];
/// Middle grade of a three-label head.
const PARTIAL_NAMES: &[&str] = &[
    "partial",
    "partially_relevant",
    "partially relevant",
    "partly_relevant",
    "partly relevant",
    "somewhat_relevant",
    "somewhat relevant",
];
/// Top grade of a graded head (besides [`RELEVANT_NAMES`]).
const SUFFICIENT_NAMES: &[&str] = &[
    "sufficient",
    "highly_relevant",
    "highly relevant",
    "fully_relevant",
    "fully relevant",
    "perfect",
];

/// Read `activation_fn` the way sentence-transformers 6 does: `config_sentence_transformers.json`
/// (only when the folder is a sentence-transformers model, i.e. has `modules.json`), then
/// `config.json`'s `sentence_transformers.activation_fn`, then the legacy
/// `sbert_ce_default_activation_function`. Returns the class path and where it was found.
pub(crate) fn sentence_transformers_activation(
    model_dir: &Path,
    common: &CommonConfig,
) -> Result<Option<(String, String)>> {
    let st_path = model_dir.join("config_sentence_transformers.json");
    if model_dir.join("modules.json").exists() && st_path.exists() {
        let text = EncoderError::read_text(&st_path)?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| EncoderError::malformed(&st_path, e))?;
        if let Some(a) = v.get("activation_fn").and_then(|a| a.as_str()) {
            return Ok(Some((a.to_string(), st_path.display().to_string())));
        }
    }
    let cfg = model_dir.join("config.json").display().to_string();
    if let Some(a) = common
        .sentence_transformers
        .as_ref()
        .and_then(|s| s.activation_fn.clone())
    {
        return Ok(Some((
            a,
            format!("{cfg} (sentence_transformers.activation_fn)"),
        )));
    }
    if let Some(a) = common.sbert_ce_default_activation_function.clone() {
        return Ok(Some((
            a,
            format!("{cfg} (sbert_ce_default_activation_function)"),
        )));
    }
    Ok(None)
}

impl ScoreHead {
    /// Decide the head from the labels and the model directory's sentence-transformers
    /// settings; `activation` and `grades` override what the files say.
    pub fn resolve(
        labels: &[String],
        model_dir: &Path,
        common: &CommonConfig,
        activation: Option<ScoreActivation>,
        grades: Option<&BTreeMap<String, f32>>,
    ) -> Result<Self> {
        if grades.is_some() && labels.len() < 3 {
            tracing::warn!(
                labels = labels.len(),
                "label_grades apply to heads with three or more labels; ignored"
            );
        }
        if activation.is_some() && labels.len() > 1 {
            tracing::warn!(
                labels = labels.len(),
                "the activation option applies to single-logit heads; ignored"
            );
        }
        match labels.len() {
            0 => Err(EncoderError::InvalidConfig {
                path: model_dir.join("config.json"),
                field: "id2label".into(),
                value: "{}".into(),
                reason: "a classifier needs at least one label".into(),
            }),
            1 => {
                let activation = match activation {
                    Some(a) => a,
                    None => {
                        match sentence_transformers_activation(model_dir, common)? {
                            None => ScoreActivation::Sigmoid,
                            // Like sentence-transformers, only torch.* paths are imported; any
                            // other class falls back to the default.
                            Some((name, source)) if !name.starts_with("torch.") => {
                                tracing::warn!(%name, %source, "activation_fn is not a torch class; using sigmoid as sentence-transformers does");
                                ScoreActivation::Sigmoid
                            }
                            Some((name, source)) => {
                                ScoreActivation::from_name(&name).ok_or_else(|| {
                                    EncoderError::InvalidConfig {
                                    path: source.into(),
                                    field: "activation_fn".into(),
                                    value: name.clone(),
                                    reason:
                                        "supported: Sigmoid, Identity, Tanh (torch.nn class paths)"
                                            .into(),
                                }
                                })?
                            }
                        }
                    }
                };
                Ok(ScoreHead::Single { activation })
            }
            2 => Ok(ScoreHead::Binary {
                relevant: relevant_index(labels),
            }),
            n => {
                let grades = match grades {
                    None => named_grades(labels)
                        .unwrap_or_else(|| (0..n).map(|i| i as f32 / (n - 1) as f32).collect()),
                    Some(map) => labels
                        .iter()
                        .map(|l| {
                            map.get(l)
                                .copied()
                                .ok_or_else(|| EncoderError::InvalidOption {
                                    name: "label_grades".into(),
                                    value: l.clone(),
                                    reason: format!(
                                        "no grade given for label {l:?}; labels are {labels:?}"
                                    ),
                                })
                        })
                        .collect::<Result<_>>()?,
                };
                Ok(ScoreHead::Graded { grades })
            }
        }
    }

    /// The score of one row of logits (one value per label). A row shorter than the head
    /// needs scores NaN, which [`rank_scores`](crate::rank_scores) reports as an error.
    pub fn score(&self, logits: &[f32]) -> f32 {
        match self {
            ScoreHead::Single { activation } => {
                logits.first().map_or(f32::NAN, |&l| activation.apply(l))
            }
            ScoreHead::Binary { relevant } => {
                softmax(logits).get(*relevant).copied().unwrap_or(f32::NAN)
            }
            ScoreHead::Graded { grades } if grades.len() == logits.len() => {
                softmax(logits).iter().zip(grades).map(|(p, g)| p * g).sum()
            }
            ScoreHead::Graded { .. } => f32::NAN,
        }
    }

    /// The score before any activation, as TEI's `raw_scores` gives it: the logit of a
    /// single-logit head; for two labels the log-odds of the relevant one
    /// (`logit[relevant] - logit[other]`, whose sigmoid is [`score`](Self::score)); for three
    /// and more the expected grade itself (it has no activation to undo). NaN for a row that
    /// does not fit the head, as [`score`](Self::score).
    pub fn raw_score(&self, logits: &[f32]) -> f32 {
        match self {
            ScoreHead::Single { .. } => logits.first().copied().unwrap_or(f32::NAN),
            ScoreHead::Binary { relevant } if logits.len() == 2 && *relevant < 2 => {
                logits[*relevant] - logits[1 - relevant]
            }
            ScoreHead::Binary { .. } => f32::NAN,
            ScoreHead::Graded { .. } => self.score(logits),
        }
    }
}

fn relevant_index(labels: &[String]) -> usize {
    let norm: Vec<String> = labels
        .iter()
        .map(|l| l.trim().to_ascii_lowercase())
        .collect();
    if let Some(i) = norm
        .iter()
        .position(|l| RELEVANT_NAMES.contains(&l.as_str()))
    {
        return i;
    }
    if let Some(i) = norm
        .iter()
        .position(|l| IRRELEVANT_NAMES.contains(&l.as_str()))
    {
        return 1 - i;
    }
    1
}

/// Grades 0 / 0.5 / 1 of a three-label head whose names say irrelevant, partial and
/// relevant (each exactly once, any order); `None` for any other labels.
fn named_grades(labels: &[String]) -> Option<Vec<f32>> {
    if labels.len() != 3 {
        return None;
    }
    let grades: Vec<f32> = labels
        .iter()
        .map(|l| {
            let l = l.trim().to_ascii_lowercase();
            let l = l.as_str();
            if IRRELEVANT_NAMES.contains(&l) {
                Some(0.0)
            } else if PARTIAL_NAMES.contains(&l) {
                Some(0.5)
            } else if RELEVANT_NAMES.contains(&l) || SUFFICIENT_NAMES.contains(&l) {
                Some(1.0)
            } else {
                None
            }
        })
        .collect::<Option<_>>()?;
    let mut sorted = grades.clone();
    sorted.sort_by(f32::total_cmp);
    if sorted != [0.0, 0.5, 1.0] {
        return None;
    }
    if grades != sorted {
        tracing::info!(?labels, ?grades, "label grades taken from the label names");
    }
    Some(grades)
}

/// Numerically stable softmax (the max is subtracted first, as torch does).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn activation_paths_parse() {
        assert_eq!(
            ScoreActivation::from_name("torch.nn.modules.linear.Identity"),
            Some(ScoreActivation::Identity)
        );
        assert_eq!(
            ScoreActivation::from_name("torch.nn.modules.activation.Sigmoid"),
            Some(ScoreActivation::Sigmoid)
        );
        assert_eq!(ScoreActivation::from_name("torch.nn.ReLU"), None);
    }

    #[test]
    fn raw_scores_are_the_values_before_the_activation() {
        let single = ScoreHead::Single {
            activation: ScoreActivation::Sigmoid,
        };
        assert_eq!(single.raw_score(&[2.5]), 2.5);
        // Two labels: the log-odds of the relevant one, whose sigmoid is the probability.
        for relevant in [0, 1] {
            let head = ScoreHead::Binary { relevant };
            let logits = [0.3, -1.2];
            let raw = head.raw_score(&logits);
            let expect = logits[relevant] - logits[1 - relevant];
            assert!((raw - expect).abs() < 1e-6);
            let sigmoid = 1.0 / (1.0 + (-raw).exp());
            assert!((sigmoid - head.score(&logits)).abs() < 1e-6);
        }
        assert!(ScoreHead::Binary { relevant: 1 }.raw_score(&[1.0]).is_nan());
        // Three labels: the grade itself.
        let graded = ScoreHead::Graded {
            grades: vec![0.0, 0.5, 1.0],
        };
        let logits = [0.1, 0.2, 0.3];
        assert_eq!(graded.raw_score(&logits), graded.score(&logits));
    }

    #[test]
    fn binary_relevant_label_defaults_to_one_and_follows_names() {
        assert_eq!(relevant_index(&labels(&["LABEL_0", "LABEL_1"])), 1);
        assert_eq!(relevant_index(&labels(&["relevant", "irrelevant"])), 0);
        assert_eq!(relevant_index(&labels(&["not_relevant", "other"])), 1);
        assert_eq!(relevant_index(&labels(&["other", "negative"])), 0);
    }

    #[test]
    fn graded_score_is_expected_grade() {
        let dir = Path::new("/nonexistent");
        let head = ScoreHead::resolve(
            &labels(&["irrelevant", "partial", "sufficient"]),
            dir,
            &CommonConfig::default(),
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            head,
            ScoreHead::Graded {
                grades: vec![0.0, 0.5, 1.0]
            }
        );
        let s = head.score(&[0.0, 0.0, 0.0]);
        assert!((s - 0.5).abs() < 1e-6);
        let mut custom = BTreeMap::new();
        custom.insert("irrelevant".to_string(), 0.0);
        custom.insert("partial".to_string(), 0.2);
        let err = ScoreHead::resolve(
            &labels(&["irrelevant", "partial", "sufficient"]),
            dir,
            &CommonConfig::default(),
            None,
            Some(&custom),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sufficient"), "{err}");
    }

    #[test]
    fn three_graded_labels_follow_their_names_not_their_order() {
        let grades = |names: &[&str]| named_grades(&labels(names));
        assert_eq!(
            grades(&["irrelevant", "partial", "sufficient"]),
            Some(vec![0.0, 0.5, 1.0])
        );
        assert_eq!(
            grades(&["Sufficient", "irrelevant", "partially relevant"]),
            Some(vec![1.0, 0.0, 0.5])
        );
        assert_eq!(
            grades(&["relevant", "partial", "not_relevant"]),
            Some(vec![1.0, 0.5, 0.0])
        );
        // Unknown names, a repeated grade or another label count keep the label order.
        assert_eq!(grades(&["LABEL_0", "LABEL_1", "LABEL_2"]), None);
        assert_eq!(grades(&["irrelevant", "relevant", "sufficient"]), None);
        assert_eq!(
            grades(&["irrelevant", "partial", "relevant", "perfect"]),
            None
        );
        let head = |names: &[&str]| {
            let dir = Path::new("/nonexistent");
            ScoreHead::resolve(&labels(names), dir, &CommonConfig::default(), None, None).unwrap()
        };
        // Certain of label 0: the top grade when it is "sufficient", 0 when names say nothing.
        let named = head(&["sufficient", "partial", "irrelevant"]);
        assert!((named.score(&[20.0, 0.0, 0.0]) - 1.0).abs() < 1e-6);
        let ordered = head(&["LABEL_0", "LABEL_1", "LABEL_2"]);
        assert!(ordered.score(&[20.0, 0.0, 0.0]).abs() < 1e-6);
    }

    #[test]
    fn rows_of_the_wrong_length_score_nan() {
        let heads = [
            ScoreHead::Single {
                activation: ScoreActivation::Sigmoid,
            },
            ScoreHead::Binary { relevant: 1 },
            ScoreHead::Graded {
                grades: vec![0.0, 0.5, 1.0],
            },
        ];
        for head in &heads {
            assert!(head.score(&[]).is_nan(), "{head:?}");
        }
        assert!(heads[1].score(&[0.3]).is_nan());
        assert!(heads[2].score(&[0.3, 0.1]).is_nan());
        assert!(heads[2].score(&[0.3, 0.1, 0.2, 0.4]).is_nan());
        assert!(heads[1].score(&[0.0, 0.0]) == 0.5);
    }

    #[test]
    fn real_config_variants_resolve_activation() {
        // The four real configs of cross-encoder/ms-marco-MiniLM-L-6-v2 written by different
        // library versions all mean "Identity" except none, which means sigmoid.
        let shared = tantivy_rerank_testdata::shared_dir();
        let variants = shared.join("models/ms-marco-MiniLM-L-6-v2-config/config-variants");
        let expect = [
            (
                "config.sbert_ce_legacy.tf4.53.2.json",
                ScoreActivation::Identity,
            ),
            (
                "config.st5_activation_fn.tf4.53.3.json",
                ScoreActivation::Identity,
            ),
            ("config.tf4.36.2.json", ScoreActivation::Identity),
            ("config.transformers5.6.2.json", ScoreActivation::Sigmoid),
        ];
        for (file, want) in expect {
            let path = variants.join(file);
            let cfg = crate::config::ModelConfig::from_file(&path).unwrap();
            let labels = cfg.common.labels(&path).unwrap();
            // The variants folder holds no config_sentence_transformers.json.
            let head = ScoreHead::resolve(&labels, &variants, &cfg.common, None, None).unwrap();
            assert_eq!(head, ScoreHead::Single { activation: want }, "{file}");
        }
        // The model folder has config_sentence_transformers.json (ignored without modules.json)
        // and config.json's sentence_transformers section, both Identity.
        let dir = shared.join("models/ms-marco-MiniLM-L-6-v2-config");
        let cfg = crate::config::ModelConfig::from_file(&dir.join("config.json")).unwrap();
        let head = ScoreHead::resolve(&["LABEL_0".into()], &dir, &cfg.common, None, None).unwrap();
        assert_eq!(
            head,
            ScoreHead::Single {
                activation: ScoreActivation::Identity
            }
        );
    }
}
