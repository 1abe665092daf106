//! Rerank options, results and the pure second-stage logic (passages, aggregation, fusion).

use std::cmp::Ordering;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tantivy::DocAddress;

use crate::error::{Result, SearchError};
use crate::passages::{span_text, split_fitted, word_spans, PassageOptions};
use crate::reranker::Reranker;

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

/// How the first-stage (BM25) and rerank scores combine into the final score of the
/// documents inside the rerank window.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Combination {
    /// Final score = rerank score. Default.
    #[default]
    RerankOnly,
    /// `alpha * minmax(rerank) + (1 - alpha) * minmax(bm25)`, both min-max normalised over
    /// the window (a constant list normalises to 0). `alpha` in `[0, 1]`.
    Linear {
        /// Weight of the rerank score.
        alpha: f32,
    },
    /// Reciprocal-rank fusion: `1 / (k + bm25_rank) + 1 / (k + rerank_rank)`, ranks from 1.
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
}

/// Options of a reranked search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RerankOptions {
    /// How many first-stage candidates are reranked (default 100).
    pub window: usize,
    /// How many hits are returned (default 10). When `top_n > window`, the candidates
    /// past the window follow the reranked ones in BM25 order, with no rerank score.
    pub top_n: usize,
    /// Split candidates into passages (default on: 200 model tokens, or words for a reranker
    /// without a tokenizer, stride 100, at most 20 passages). `None` scores title + body
    /// whole; the model then truncates it.
    pub passages: Option<PassageOptions>,
    /// Passage score aggregation (default [`Aggregation::Max`]).
    pub aggregation: Aggregation,
    /// Score combination (default [`Combination::RerankOnly`]).
    pub combination: Combination,
}

impl Default for RerankOptions {
    fn default() -> Self {
        RerankOptions {
            window: 100,
            top_n: 10,
            passages: Some(PassageOptions::default()),
            aggregation: Aggregation::Max,
            combination: Combination::RerankOnly,
        }
    }
}

impl RerankOptions {
    /// Check the options.
    pub fn validate(&self) -> Result<()> {
        // A window of 0 would rerank nothing: `search_bm25` is the BM25-only search.
        for (option, value) in [("window", self.window), ("top_n", self.top_n)] {
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
        match self.combination {
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

/// A first-stage (BM25) hit with its stored text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Document id.
    pub id: String,
    /// BM25 score.
    pub score: f32,
    /// Stored title.
    pub title: String,
    /// Stored body.
    pub body: String,
    /// Where the document lives in the searcher that found it.
    pub address: DocAddress,
}

impl Candidate {
    /// Title and body joined by a newline (just the body when the title is empty): the text
    /// the reranker sees.
    pub fn text(&self) -> String {
        if self.title.trim().is_empty() {
            self.body.clone()
        } else {
            format!("{}\n{}", self.title, self.body)
        }
    }
}

/// A document's highest-scoring passage, the one to show as its snippet. With
/// [`Aggregation::Max`] it decided the document's score; with `First` or `Mean` the score
/// comes from the first passage or from all of them, and this is still the best one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassageHit {
    /// 0-based index of the passage within the document's scored passages.
    pub index: usize,
    /// How many passages of the document were scored.
    pub of: usize,
    /// The passage text.
    pub text: String,
    /// Its rerank score.
    pub score: f32,
}

/// One result of a reranked search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// Document id.
    pub id: String,
    /// Stored title.
    pub title: String,
    /// Stored body.
    pub body: String,
    /// Address in the searcher of this query.
    pub address: DocAddress,
    /// First-stage BM25 score.
    pub bm25_score: f32,
    /// 1-based first-stage rank.
    pub bm25_rank: usize,
    /// Aggregated rerank score; `None` for candidates past the rerank window.
    pub rerank_score: Option<f32>,
    /// Final score after [`Combination`]; `None` past the window (those keep BM25 order).
    pub score: Option<f32>,
    /// The best passage, when passage splitting is on.
    pub passage: Option<PassageHit>,
}

impl Hit {
    /// A hit that only has its first-stage (BM25) score, at 1-based `rank`.
    pub(crate) fn first_stage(c: Candidate, rank: usize) -> Self {
        Hit {
            id: c.id,
            title: c.title,
            body: c.body,
            address: c.address,
            bm25_score: c.score,
            bm25_rank: rank,
            rerank_score: None,
            score: None,
            passage: None,
        }
    }
}

/// Wall-clock time of each stage of one query. Serialised as milliseconds (`f64`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Query parsing and first-stage collection.
    #[serde(with = "duration_ms")]
    pub retrieve: Duration,
    /// Reading stored text of the candidates.
    #[serde(with = "duration_ms")]
    pub fetch: Duration,
    /// Passage splitting, token counting and the reranker call.
    #[serde(with = "duration_ms")]
    pub score: Duration,
    /// Aggregation, fusion and sorting.
    #[serde(with = "duration_ms")]
    pub merge: Duration,
}

impl Timings {
    /// Sum of all stages.
    pub fn total(&self) -> Duration {
        self.retrieve + self.fetch + self.score + self.merge
    }
}

impl RerankResults {
    /// One line with the per-stage timings, for logs and terminals.
    pub fn timing_summary(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let t = &self.timings;
        format!(
            "retrieve {:.1} ms, fetch {:.1} ms, score {:.1} ms ({} passages), merge {:.1} ms",
            ms(t.retrieve),
            ms(t.fetch),
            ms(t.score),
            self.passages_scored,
            ms(t.merge)
        )
    }
}

/// Results of one reranked search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankResults {
    /// The query.
    pub query: String,
    /// Best first: the reranked window sorted by final score, then the BM25 tail.
    pub hits: Vec<Hit>,
    /// First-stage candidates retrieved.
    pub candidates: usize,
    /// Texts sent to the reranker (passages, or documents when splitting is off).
    pub passages_scored: usize,
    /// Per-stage timings.
    pub timings: Timings,
}

mod duration_ms {
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

/// Passages of every window document: `(document index, passage text)`. Passages are cut by
/// the reranker's tokens when it has a tokenizer, else by words, and never longer than what
/// fits next to the query.
fn build_passages<R: Reranker + ?Sized>(
    query: &str,
    texts: &[String],
    reranker: &R,
    options: &RerankOptions,
) -> Vec<Vec<String>> {
    let Some(mut popts) = options.passages else {
        return texts.iter().map(|t| vec![t.clone()]).collect();
    };
    let budget = reranker.passage_budget(query);
    if let Some(budget) = budget {
        popts.length = popts.length.min(budget);
        popts.stride = popts.stride.min(popts.length);
    }
    // The units the passages can reach: later ones are never scored.
    let need = popts
        .stride
        .saturating_mul(popts.max_passages.saturating_sub(1))
        .saturating_add(popts.length);
    texts
        .par_iter()
        .map(|text| {
            let spans = reranker
                .token_spans_head(text, need)
                .unwrap_or_else(|| word_spans(text));
            split_fitted(text, &spans, &popts, |start, end| {
                fitted_end(text, &spans, start, end, budget, reranker)
            })
            .into_iter()
            .map(str::to_string)
            .collect()
        })
        .collect()
}

/// The end of the passage of units `start..end`, moved back until the reranker counts no
/// more than `budget` tokens in it. A slice of a text can take more tokens than the units it
/// was cut from (a word cut in two is tokenised afresh), and the model would silently
/// truncate it. A passage of fewer bytes than the budget is not counted: no tokenizer makes
/// more tokens than bytes, plus one for a word marker some put in front.
fn fitted_end<R: Reranker + ?Sized>(
    text: &str,
    spans: &[(usize, usize)],
    start: usize,
    mut end: usize,
    budget: Option<usize>,
    reranker: &R,
) -> usize {
    let Some(budget) = budget else {
        return end;
    };
    loop {
        let passage = span_text(text, spans, start, end);
        if passage.len() < budget || end - start == 1 {
            return end;
        }
        match reranker.count_tokens(passage) {
            Some(n) if n > budget => end -= (n - budget).min(end - start - 1),
            _ => return end,
        }
    }
}

fn min_max(values: &[f32]) -> Vec<f32> {
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(f64::from(v)), hi.max(f64::from(v)))
        });
    values
        .iter()
        .map(|&v| {
            if hi > lo {
                ((f64::from(v) - lo) / (hi - lo)) as f32
            } else {
                0.0
            }
        })
        .collect()
}

fn desc(a: f32, b: f32) -> Ordering {
    b.total_cmp(&a)
}

/// The second stage on already fetched candidates (best BM25 first): score the first
/// `options.window` with one `reranker` call, aggregate, fuse and sort them, then append
/// the rest in BM25 order; return the first `options.top_n` hits.
///
/// Returns `(hits, passages scored, score time, merge time)`.
pub(crate) fn rerank_candidates<R: Reranker + ?Sized>(
    query: &str,
    candidates: Vec<Candidate>,
    reranker: &R,
    options: &RerankOptions,
) -> Result<(Vec<Hit>, usize, Duration, Duration)> {
    let t_score = Instant::now();
    let window = options.window.min(candidates.len());
    let texts: Vec<String> = candidates[..window].iter().map(Candidate::text).collect();
    let passages = build_passages(query, &texts, reranker, options);
    let flat: Vec<&str> = passages.iter().flatten().map(String::as_str).collect();
    let scores = if flat.is_empty() {
        Vec::new()
    } else {
        reranker
            .rerank(query, &flat)
            .map_err(|source| SearchError::Rerank {
                query: query.to_string(),
                source,
            })?
    };
    if scores.len() != flat.len() {
        return Err(SearchError::ScoreCountMismatch {
            query: query.to_string(),
            expected: flat.len(),
            got: scores.len(),
        });
    }
    let score_time = t_score.elapsed();

    let t_merge = Instant::now();
    // Aggregate per document.
    let mut aggregated = Vec::with_capacity(window);
    let mut best_passage = Vec::with_capacity(window);
    let mut offset = 0;
    for (doc, doc_passages) in passages.iter().enumerate() {
        let s = &scores[offset..offset + doc_passages.len()];
        offset += doc_passages.len();
        if let Some(bad) = s.iter().find(|v| !v.is_finite()) {
            return Err(SearchError::NonFiniteScore {
                query: query.to_string(),
                doc_id: candidates[doc].id.clone(),
                value: *bad,
            });
        }
        let best = (0..s.len())
            .max_by(|&a, &b| s[a].total_cmp(&s[b]).then(b.cmp(&a)))
            .unwrap_or(0);
        let value = match options.aggregation {
            Aggregation::Max => s.get(best).copied().unwrap_or(0.0),
            Aggregation::First => s.first().copied().unwrap_or(0.0),
            // In f64: passages of huge finite scores must not sum past f32.
            Aggregation::Mean => {
                (s.iter().map(|&v| f64::from(v)).sum::<f64>() / s.len().max(1) as f64) as f32
            }
        };
        aggregated.push(value);
        best_passage.push((best, s.len(), s.get(best).copied().unwrap_or(0.0)));
    }

    let bm25: Vec<f32> = candidates[..window].iter().map(|c| c.score).collect();
    let finals: Vec<f32> = match options.combination {
        Combination::RerankOnly => aggregated.clone(),
        Combination::Linear { alpha } => {
            let r = min_max(&aggregated);
            let b = min_max(&bm25);
            r.iter()
                .zip(&b)
                .map(|(r, b)| alpha * r + (1.0 - alpha) * b)
                .collect()
        }
        Combination::Rrf { k } => {
            let mut by_rerank: Vec<usize> = (0..window).collect();
            by_rerank.sort_by(|&a, &b| desc(aggregated[a], aggregated[b]).then(a.cmp(&b)));
            let mut rerank_rank = vec![0usize; window];
            for (rank, &doc) in by_rerank.iter().enumerate() {
                rerank_rank[doc] = rank + 1;
            }
            (0..window)
                .map(|d| 1.0 / (k + (d + 1) as f32) + 1.0 / (k + rerank_rank[d] as f32))
                .collect()
        }
    };
    let mut order: Vec<usize> = (0..window).collect();
    order.sort_by(|&a, &b| desc(finals[a], finals[b]).then(a.cmp(&b)));

    let top_n = options.top_n;
    let mut slots: Vec<Option<Candidate>> = candidates.into_iter().map(Some).collect();
    let mut hits = Vec::with_capacity(top_n.min(slots.len()));
    for &doc in order.iter().take(top_n) {
        let Some(c) = slots[doc].take() else { continue };
        let passage = options.passages.map(|_| {
            let (index, of, score) = best_passage[doc];
            PassageHit {
                index,
                of,
                text: passages[doc].get(index).cloned().unwrap_or_default(),
                score,
            }
        });
        hits.push(Hit {
            rerank_score: Some(aggregated[doc]),
            score: Some(finals[doc]),
            passage,
            ..Hit::first_stage(c, doc + 1)
        });
    }
    let tail = top_n.saturating_sub(hits.len());
    for (i, slot) in slots.iter_mut().enumerate().skip(window).take(tail) {
        if let Some(c) = slot.take() {
            hits.push(Hit::first_stage(c, i + 1));
        }
    }
    Ok((hits, flat.len(), score_time, t_merge.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reranker::FnReranker;

    fn cands(n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                id: format!("d{i}"),
                score: (n - i) as f32,
                title: format!("t{i}"),
                body: format!("body of doc {i} with words"),
                address: DocAddress::new(0, i as u32),
            })
            .collect()
    }

    type ScoreFn = fn(&str, &[&str]) -> Result<Vec<f32>, std::convert::Infallible>;

    /// Scores each text by the doc number in its title (`t<i>`): reverses BM25 order.
    fn by_len() -> FnReranker<ScoreFn> {
        FnReranker::new(|_q: &str, texts: &[&str]| {
            Ok(texts
                .iter()
                .map(|t| {
                    t.trim_start_matches('t')
                        .split('\n')
                        .next()
                        .and_then(|n| n.parse::<f32>().ok())
                        .unwrap_or(0.0)
                })
                .collect())
        })
    }

    #[test]
    fn window_reranked_tail_in_bm25_order() {
        let opts = RerankOptions {
            window: 3,
            top_n: 5,
            passages: None,
            ..Default::default()
        };
        let (hits, n, _, _) = rerank_candidates("q", cands(6), &by_len(), &opts).unwrap();
        let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["d2", "d1", "d0", "d3", "d4"]);
        assert_eq!(n, 3);
        assert!(hits[3].rerank_score.is_none() && hits[3].bm25_rank == 4);
    }

    #[test]
    fn rrf_and_linear_fuse() {
        let opts = RerankOptions {
            window: 3,
            top_n: 3,
            passages: None,
            combination: Combination::rrf(),
            ..Default::default()
        };
        let (hits, ..) = rerank_candidates("q", cands(3), &by_len(), &opts).unwrap();
        // Ranks (bm25, rerank): d0 (1,3), d1 (2,2), d2 (3,1). 1/61 + 1/63 > 2/62 (convexity);
        // d0 and d2 tie exactly and the tie goes to the better BM25 rank.
        let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids, ["d0", "d2", "d1"]);
        let opts = RerankOptions {
            combination: Combination::Linear { alpha: 0.0 },
            ..opts
        };
        let (hits, ..) = rerank_candidates("q", cands(3), &by_len(), &opts).unwrap();
        assert_eq!(hits[0].id, "d0");
        assert_eq!(hits[0].score, Some(1.0));
    }

    #[test]
    fn huge_finite_scores_fuse_and_average_without_overflow() {
        // Scores by doc number: t0 -> f32::MAX, t1 -> -f32::MAX, t2 -> 0.
        let extreme = FnReranker::new(|_q: &str, t: &[&str]| {
            Ok::<_, std::convert::Infallible>(
                t.iter()
                    .map(|t| match t.split('\n').next() {
                        Some("t0") => f32::MAX,
                        Some("t1") => -f32::MAX,
                        _ => 0.0,
                    })
                    .collect(),
            )
        });
        let opts = RerankOptions {
            window: 3,
            top_n: 3,
            passages: None,
            combination: Combination::Linear { alpha: 0.5 },
            ..Default::default()
        };
        let (hits, ..) = rerank_candidates("q", cands(3), &extreme, &opts).unwrap();
        let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        // d0: best BM25 and best rerank score -> 1.0; d1: 0.5 * 0 + 0.5 * 0.5; d2: 0.5 * 0.5 + 0.
        assert_eq!(ids, ["d0", "d1", "d2"]);
        assert_eq!(hits[0].score, Some(1.0));
        assert!(hits.iter().all(|h| h.score.is_some_and(f32::is_finite)));
        // The mean of passages that each score near f32::MAX stays finite.
        let mut c = cands(1);
        c[0].body = "a b c d".into();
        let big = FnReranker::new(|_q: &str, t: &[&str]| {
            Ok::<_, std::convert::Infallible>(vec![3e38; t.len()])
        });
        let opts = RerankOptions {
            passages: Some(PassageOptions {
                length: 1,
                stride: 1,
                max_passages: 10,
            }),
            aggregation: Aggregation::Mean,
            ..Default::default()
        };
        let (hits, n, ..) = rerank_candidates("q", c, &big, &opts).unwrap();
        assert!(n > 1);
        assert_eq!(hits[0].rerank_score, Some(3e38));
    }

    /// Cuts passages by words, but counts a word starting with `x` as two tokens, as a
    /// tokenizer may split a word fragment more finely than the whole text it was cut from.
    struct Growing(std::sync::Mutex<Vec<String>>);

    impl Reranker for Growing {
        fn rerank(&self, _q: &str, texts: &[&str]) -> Result<Vec<f32>, crate::RerankError> {
            let mut seen = self.0.lock().unwrap();
            seen.extend(texts.iter().map(|t| t.to_string()));
            Ok(vec![0.0; texts.len()])
        }
        fn max_tokens(&self) -> Option<usize> {
            Some(13)
        }
        fn token_spans(&self, text: &str) -> Option<Vec<(usize, usize)>> {
            Some(word_spans(text))
        }
        fn count_tokens(&self, text: &str) -> Option<usize> {
            let words = text.split_whitespace();
            Some(words.map(|w| if w.starts_with('x') { 2 } else { 1 }).sum())
        }
    }

    #[test]
    fn passages_are_shortened_until_the_model_reads_them_whole_and_leave_no_gap() {
        let reranker = Growing(Default::default());
        let mut c = cands(1);
        c[0].title = String::new();
        c[0].body = "a xb c xd e xf g h i j k l m n o".into();
        let opts = RerankOptions {
            passages: Some(PassageOptions::default()),
            ..Default::default()
        };
        rerank_candidates("q", c, &reranker, &opts).unwrap();
        // Budget: 13 - (1 query token + 3 special tokens) = 9 tokens, so passages of 9
        // words every 9 words; "a xb c xd e xf g h i" counts 12 and is cut to 6 words.
        let seen = reranker.0.lock().unwrap().clone();
        assert_eq!(seen, ["a xb c xd e xf", "g h i j k l m n o"]);
        for p in &seen {
            assert!(reranker.count_tokens(p).unwrap() <= 9, "{p}");
        }
    }

    #[test]
    fn nan_and_count_mismatch_fail() {
        let nan = FnReranker::new(|_q: &str, t: &[&str]| {
            Ok::<_, std::convert::Infallible>(vec![f32::NAN; t.len()])
        });
        let err = rerank_candidates("q", cands(2), &nan, &RerankOptions::default()).unwrap_err();
        assert!(matches!(err, SearchError::NonFiniteScore { .. }), "{err}");
        let short =
            FnReranker::new(|_q: &str, _t: &[&str]| Ok::<_, std::convert::Infallible>(vec![1.0]));
        let err = rerank_candidates("q", cands(2), &short, &RerankOptions::default()).unwrap_err();
        assert!(
            matches!(
                err,
                SearchError::ScoreCountMismatch {
                    expected: 2,
                    got: 1,
                    ..
                }
            ),
            "{err}"
        );
        let failing = FnReranker::new(|_q: &str, _t: &[&str]| Err::<Vec<f32>, _>("boom"));
        let err =
            rerank_candidates("q", cands(2), &failing, &RerankOptions::default()).unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
    }

    #[test]
    fn passages_aggregate_and_fit_tokens() {
        let mut c = cands(1);
        c[0].title = String::new();
        c[0].body = "x x x x x x x x x x target y y".to_string();
        let count = FnReranker::new(|_q: &str, t: &[&str]| {
            Ok::<_, std::convert::Infallible>(
                t.iter()
                    .map(|p| p.matches("target").count() as f32)
                    .collect(),
            )
        });
        let popts = PassageOptions {
            length: 4,
            stride: 4,
            max_passages: 10,
        };
        for (agg, expect) in [
            (Aggregation::Max, 1.0),
            (Aggregation::First, 0.0),
            (Aggregation::Mean, 0.25),
        ] {
            let opts = RerankOptions {
                passages: Some(popts),
                aggregation: agg,
                ..Default::default()
            };
            let (hits, n, ..) = rerank_candidates("q", c.clone(), &count, &opts).unwrap();
            assert_eq!(n, 4);
            assert_eq!(hits[0].rerank_score, Some(expect));
            let p = hits[0].passage.as_ref().unwrap();
            assert_eq!((p.index, p.of, p.text.as_str()), (2, 4, "x x target y"));
        }
        // A budget of 8 words (9 max - 0 query words - 3, at least 8) splits the 13 words.
        let limited = FnReranker::new(|_q: &str, t: &[&str]| {
            Ok::<_, std::convert::Infallible>(
                t.iter()
                    .map(|p| p.split_whitespace().count() as f32)
                    .collect(),
            )
        })
        .with_max_tokens(9);
        let opts = RerankOptions {
            passages: Some(PassageOptions {
                length: 100,
                stride: 100,
                max_passages: 10,
            }),
            ..Default::default()
        };
        let (hits, n, ..) = rerank_candidates("", c, &limited, &opts).unwrap();
        assert!(n > 1, "{n}");
        assert!(hits[0].rerank_score.unwrap() <= 8.0);
    }

    #[test]
    fn timings_serialize_as_ms() {
        let t = Timings {
            retrieve: Duration::from_micros(1500),
            ..Default::default()
        };
        let v = serde_json::to_value(t).unwrap();
        assert_eq!(v["retrieve"], 1.5);
        let back: Timings = serde_json::from_value(v).unwrap();
        assert_eq!(back, t);
    }
}
