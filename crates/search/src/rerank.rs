//! Options and results of the second stage: stages, aggregation, fusion, the latency budget,
//! hits and timings. The stage itself runs in [`Cascade`](crate::Cascade).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tantivy::DocAddress;

use crate::error::{Result, SearchError};
use crate::passages::PassageOptions;

/// How passage scores become one document score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Best passage (MaxP). Default.
    #[default]
    Max,
    /// First passage only (FirstP); the other passages are still scored and reported.
    First,
    /// Mean of the passage scores.
    Mean,
}

/// How the first-stage score and a stage's score combine into the score that orders the
/// documents the stage scored.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Combination {
    /// The stage's score alone. Default.
    #[default]
    RerankOnly,
    /// `alpha * minmax(stage) + (1 - alpha) * minmax(first stage)`, both min-max normalised
    /// over the documents the stage scored (a constant list normalises to 0). `alpha` in
    /// `[0, 1]`.
    Linear {
        /// Weight of the stage's score.
        alpha: f32,
    },
    /// Reciprocal-rank fusion: `1 / (k + first_stage_rank) + 1 / (k + stage_rank)`, ranks
    /// from 1.
    Rrf {
        /// The RRF constant (60 in the literature).
        k: f32,
    },
}

impl Combination {
    /// Reciprocal-rank fusion with the usual `k = 60`.
    pub fn rrf() -> Self {
        Combination::Rrf { k: 60.0 }
    }

    fn validate(&self) -> Result<()> {
        match *self {
            Combination::Linear { alpha } if !(0.0..=1.0).contains(&alpha) => {
                Err(SearchError::InvalidOption {
                    option: "combination.alpha",
                    value: alpha.to_string(),
                    reason: "must be within [0, 1]",
                })
            }
            Combination::Rrf { k } if !(k.is_finite() && k >= 0.0) => {
                Err(SearchError::InvalidOption {
                    option: "combination.k",
                    value: k.to_string(),
                    reason: "must be finite and >= 0",
                })
            }
            _ => Ok(()),
        }
    }
}

/// Options of one reranking stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StageOptions {
    /// A name for reports (default: `stage N`).
    pub name: Option<String>,
    /// How many of the best candidates of the stage before it this stage scores (default
    /// 100). The first stage takes them from the first-stage (retrieval) order; a later
    /// stage only from what the stage before it scored.
    pub window: usize,
    /// Split candidates into passages (default on: 200 model tokens, or words for a reranker
    /// without a tokenizer, stride 100, at most 20 passages). `None` scores each text whole;
    /// the model then truncates it.
    pub passages: Option<PassageOptions>,
    /// Passage score aggregation (default [`Aggregation::Max`]).
    pub aggregation: Aggregation,
    /// Texts (passages) per reranker call when a latency budget is set (default 32): the
    /// budget is checked before each call. Without a budget a stage makes one call.
    pub budget_batch: usize,
}

impl Default for StageOptions {
    fn default() -> Self {
        StageOptions {
            name: None,
            window: 100,
            passages: Some(PassageOptions::default()),
            aggregation: Aggregation::Max,
            budget_batch: 32,
        }
    }
}

impl StageOptions {
    /// Check the options.
    pub fn validate(&self) -> Result<()> {
        for (option, value) in [("window", self.window), ("budget_batch", self.budget_batch)] {
            if value == 0 {
                return Err(SearchError::InvalidOption {
                    option,
                    value: "0".into(),
                    reason: "must be at least 1",
                });
            }
        }
        if let Some(p) = &self.passages {
            p.validate()?;
        }
        Ok(())
    }
}

/// Options of the whole second stage: its stages (a cascade when more than one), the score
/// fusion and the latency budget. With the rerankers of its stages it makes a
/// [`Cascade`](crate::Cascade).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RerankOptions {
    /// The stages in order (default: one stage with default options).
    pub stages: Vec<StageOptions>,
    /// Score fusion of each stage with the first stage (default [`Combination::RerankOnly`]).
    pub combination: Combination,
    /// Per-query latency budget (milliseconds in JSON; default none). See
    /// [`Cascade::budget`](crate::Cascade::budget).
    #[serde(with = "opt_duration_ms")]
    pub budget: Option<Duration>,
}

impl Default for RerankOptions {
    fn default() -> Self {
        RerankOptions {
            stages: vec![StageOptions::default()],
            combination: Combination::RerankOnly,
            budget: None,
        }
    }
}

impl RerankOptions {
    /// Check the options: at least one stage, each valid, a valid fusion, a budget above 0.
    pub fn validate(&self) -> Result<()> {
        if self.stages.is_empty() {
            return Err(SearchError::InvalidOption {
                option: "stages",
                value: "[]".into(),
                reason: "a second stage needs at least one stage",
            });
        }
        for s in &self.stages {
            s.validate()?;
        }
        self.combination.validate()?;
        if self.budget == Some(Duration::ZERO) {
            return Err(SearchError::InvalidOption {
                option: "budget",
                value: "0 ms".into(),
                reason: "must be above 0 (leave it unset for no budget)",
            });
        }
        Ok(())
    }
}

/// A document's highest-scoring passage in the deepest stage that scored it, the one to show
/// as its snippet. With [`Aggregation::Max`] it decided the document's score; with `First`
/// or `Mean` the score comes from the first passage or from all of them, and this is still
/// the best one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassageHit {
    /// 0-based index of the passage within the document's scored passages.
    pub index: usize,
    /// How many passages of the document were scored.
    pub of: usize,
    /// The passage text.
    pub text: String,
    /// Its score.
    pub score: f32,
}

/// One result of a search: the document, where the first stage put it, and what each
/// reranking stage made of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit<D> {
    /// The document, as the [`DocLoader`](crate::DocLoader) loaded it.
    pub doc: D,
    /// Address in the searcher of this query.
    pub address: DocAddress,
    /// First-stage (retrieval) score, e.g. BM25.
    pub first_stage_score: f32,
    /// 1-based first-stage rank.
    pub first_stage_rank: usize,
    /// Each stage's (aggregated) score, in stage order; `None` for stages that did not score
    /// it (past their window, or cut by the latency budget). Empty without reranking.
    pub stage_scores: Vec<Option<f32>>,
    /// The score of the deepest stage that scored it; `None` when none did.
    pub rerank_score: Option<f32>,
    /// Its final score after [`Combination`] in that stage; `None` when no stage scored it
    /// (such hits keep their first-stage order below the scored ones).
    pub score: Option<f32>,
    /// The best passage in that stage, when passage splitting is on.
    pub passage: Option<PassageHit>,
}

impl<D> Hit<D> {
    /// A hit with only its first-stage score, at 1-based `rank`.
    pub fn first_stage(doc: D, address: DocAddress, score: f32, rank: usize) -> Self {
        Hit {
            doc,
            address,
            first_stage_score: score,
            first_stage_rank: rank,
            stage_scores: Vec::new(),
            rerank_score: None,
            score: None,
            passage: None,
        }
    }
}

/// Wall-clock time of each step of one query. Serialised as milliseconds (`f64`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Query parsing and first-stage collection (0 when the first stage ran elsewhere).
    #[serde(with = "duration_ms")]
    pub retrieve: Duration,
    /// Loading the candidates' documents and texts.
    #[serde(with = "duration_ms")]
    pub fetch: Duration,
    /// Every stage: passage splitting, token counting and the reranker calls.
    #[serde(with = "duration_ms")]
    pub score: Duration,
    /// Aggregation, fusion and sorting.
    #[serde(with = "duration_ms")]
    pub merge: Duration,
}

impl Timings {
    /// Sum of all steps.
    pub fn total(&self) -> Duration {
        self.retrieve + self.fetch + self.score + self.merge
    }
}

/// What one reranking stage did for one query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// The stage's name.
    pub name: String,
    /// Candidates the stage was given (its window, or fewer when fewer came).
    pub docs: usize,
    /// Of those, candidates it scored (fewer only when the latency budget cut in).
    pub docs_scored: usize,
    /// Texts sent to its reranker (passages, or documents when splitting is off).
    pub passages_scored: usize,
    /// Whether the latency budget stopped it before it scored all its candidates.
    pub budget_cut: bool,
    /// Its wall-clock time: passages, reranker calls, aggregation and fusion.
    #[serde(with = "duration_ms")]
    pub time: Duration,
}

/// Results of one search: hits best first, and what each stage did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankResults<D> {
    /// The query text.
    pub query: String,
    /// Best first: what the deepest stage scored (by its final score), then what only
    /// earlier stages scored, then the first-stage tail.
    pub hits: Vec<Hit<D>>,
    /// First-stage candidates.
    pub candidates: usize,
    /// Texts sent to rerankers, all stages together.
    pub passages_scored: usize,
    /// One report per reranking stage (empty without reranking).
    pub stages: Vec<StageReport>,
    /// Whether the latency budget left candidates unscored in some stage.
    pub budget_exhausted: bool,
    /// Per-step timings.
    pub timings: Timings,
}

impl<D> RerankResults<D> {
    /// Results without hits (a query with no searchable terms).
    pub fn empty(query: &str) -> Self {
        RerankResults {
            query: query.to_string(),
            hits: Vec::new(),
            candidates: 0,
            passages_scored: 0,
            stages: Vec::new(),
            budget_exhausted: false,
            timings: Timings::default(),
        }
    }

    /// One line with the per-step timings, for logs and terminals.
    pub fn timing_summary(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let t = &self.timings;
        let mut line = format!(
            "retrieve {:.1} ms, fetch {:.1} ms, score {:.1} ms ({} passages), merge {:.1} ms",
            ms(t.retrieve),
            ms(t.fetch),
            ms(t.score),
            self.passages_scored,
            ms(t.merge)
        );
        if self.stages.len() > 1 || self.budget_exhausted {
            for s in &self.stages {
                line.push_str(&format!(
                    "; {}: {}/{} docs in {:.1} ms{}",
                    s.name,
                    s.docs_scored,
                    s.docs,
                    ms(s.time),
                    if s.budget_cut { " (budget)" } else { "" }
                ));
            }
        }
        line
    }
}

pub(crate) mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1e3)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Duration::try_from_secs_f64(ms / 1e3).map_err(serde::de::Error::custom)
    }
}

mod opt_duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_secs_f64() * 1e3)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|ms| Duration::try_from_secs_f64(ms / 1e3).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_and_budget_serialize_as_ms() {
        let t = Timings {
            retrieve: Duration::from_micros(1500),
            ..Default::default()
        };
        let v = serde_json::to_value(t).unwrap();
        assert_eq!(v["retrieve"], 1.5);
        let back: Timings = serde_json::from_value(v).unwrap();
        assert_eq!(back, t);
        let o = RerankOptions {
            budget: Some(Duration::from_millis(250)),
            ..Default::default()
        };
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(v["budget"], 250.0);
        assert_eq!(serde_json::from_value::<RerankOptions>(v).unwrap(), o);
        let none: RerankOptions = serde_json::from_str(r#"{"budget": null}"#).unwrap();
        assert_eq!(none, RerankOptions::default());
        assert!(serde_json::from_str::<RerankOptions>(r#"{"budget": -1}"#).is_err());
    }

    #[test]
    fn invalid_options_name_the_option() {
        let name = |o: RerankOptions| match o.validate() {
            Err(SearchError::InvalidOption { option, .. }) => option,
            other => panic!("expected InvalidOption, got {other:?}"),
        };
        let stage = |s: StageOptions| RerankOptions {
            stages: vec![s],
            ..Default::default()
        };
        assert_eq!(
            name(stage(StageOptions {
                window: 0,
                ..Default::default()
            })),
            "window"
        );
        assert_eq!(
            name(RerankOptions {
                stages: vec![],
                ..Default::default()
            }),
            "stages"
        );
        assert_eq!(
            name(RerankOptions {
                combination: Combination::Linear { alpha: 2.0 },
                ..Default::default()
            }),
            "combination.alpha"
        );
        assert_eq!(
            name(RerankOptions {
                budget: Some(Duration::ZERO),
                ..Default::default()
            }),
            "budget"
        );
        assert!(RerankOptions::default().validate().is_ok());
    }
}
