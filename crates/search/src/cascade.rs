//! [`Cascade`]: the second stage on the candidates of any tantivy search — one reranking
//! stage or a chain of them, with passages, aggregation, fusion and a latency budget.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use tantivy::{DocAddress, Searcher};

use crate::cancel::{CancelToken, Stop};
use crate::error::{RerankError, Result, SearchError};
use crate::loader::DocLoader;
use crate::passages::{span_text, split_fitted, word_spans, PassageOptions};
use crate::rerank::{
    Aggregation, Combination, Hit, PassageHit, RerankOptions, RerankResults, StageOptions,
    StageReport, Timings,
};
use crate::reranker::{ModelInput, ModelTokenizer, Reranker};

/// One reranking stage: a [`Reranker`] and how many candidates it sees, how it cuts long
/// texts into passages and how it aggregates their scores.
///
/// A stage learns what its reranker costs per token from every call it makes; clones share
/// that estimate (see [`Cascade::budget`]).
#[derive(Clone)]
pub struct Stage<'a> {
    reranker: Arc<dyn Reranker + 'a>,
    options: StageOptions,
    cost: Arc<CostModel>,
}

impl std::fmt::Debug for Stage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage")
            .field("options", &self.options)
            .field("seconds_per_token", &self.cost.estimate())
            .finish()
    }
}

impl<'a> Stage<'a> {
    /// A stage with default options (window 100, passages of 200 tokens, max aggregation).
    pub fn new(reranker: impl Reranker + 'a) -> Self {
        Self::shared(Arc::new(reranker))
    }

    /// A stage of a reranker borrowed for `'a` (a model you keep using elsewhere).
    pub fn borrowed(reranker: &'a (dyn Reranker + 'a)) -> Self {
        Self::new(Borrowed(reranker))
    }

    /// A stage whose reranker is shared (with other stages, threads or cascades).
    pub fn shared(reranker: Arc<dyn Reranker + 'a>) -> Self {
        Stage {
            reranker,
            options: StageOptions::default(),
            cost: Arc::default(),
        }
    }

    /// Replace every option.
    pub fn with_options(mut self, options: StageOptions) -> Self {
        self.options = options;
        self
    }

    /// The name in reports.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.options.name = Some(name.into());
        self
    }

    /// How many candidates the stage scores.
    pub fn window(mut self, window: usize) -> Self {
        self.options.window = window;
        self
    }

    /// Passage splitting (`None`: each text whole).
    pub fn passages(mut self, passages: Option<PassageOptions>) -> Self {
        self.options.passages = passages;
        self
    }

    /// Passage score aggregation.
    pub fn aggregation(mut self, aggregation: Aggregation) -> Self {
        self.options.aggregation = aggregation;
        self
    }

    /// Texts per reranker call under a latency budget.
    pub fn with_budget_batch(mut self, texts: usize) -> Self {
        self.options.budget_batch = texts;
        self
    }

    /// The options.
    pub fn options(&self) -> &StageOptions {
        &self.options
    }

    /// The reranker.
    pub fn reranker(&self) -> &(dyn Reranker + 'a) {
        &*self.reranker
    }

    /// The reranker's measured cost, in seconds per token (an estimated token count:
    /// passage tokens, or words for a reranker without a tokenizer), once it has run.
    pub fn seconds_per_token(&self) -> Option<f64> {
        self.cost.estimate()
    }
}

/// A borrowed reranker, as an owned one.
struct Borrowed<'a>(&'a (dyn Reranker + 'a));

impl Reranker for Borrowed<'_> {
    fn rerank(&self, query: &str, texts: &[&str]) -> Result<Vec<f32>, RerankError> {
        self.0.rerank(query, texts)
    }
    fn tokenizer(&self) -> Option<ModelTokenizer<'_>> {
        self.0.tokenizer()
    }
}

/// Seconds per token of a reranker, smoothed over its calls.
#[derive(Debug, Default)]
struct CostModel {
    seconds_per_token: Mutex<Option<f64>>,
}

impl CostModel {
    fn estimate(&self) -> Option<f64> {
        self.seconds_per_token.lock().ok().and_then(|g| *g)
    }

    fn observe(&self, elapsed: Duration, tokens: usize) {
        if tokens == 0 {
            return;
        }
        let measured = elapsed.as_secs_f64() / tokens as f64;
        if let Ok(mut g) = self.seconds_per_token.lock() {
            // Recent calls weigh most: the cost changes with batch shapes and machine load.
            *g = Some(g.map_or(measured, |old| 0.5 * old + 0.5 * measured));
        }
    }
}

/// The second stage: one reranking [`Stage`] or a chain of them, on the candidates of any
/// tantivy search.
///
/// Each stage scores the best `window` documents of the stage before it (the first stage:
/// of the first-stage candidates) and orders what it scored by its score, fused with the
/// first-stage score as [`Combination`] says. What a stage did not score keeps its earlier
/// order below; no candidate is ever dropped. Every hit reports each stage's score; every
/// result reports each stage's time.
///
/// ```
/// use tantivy::collector::TopDocs;
/// use tantivy::query::QueryParser;
/// use tantivy::schema::{Schema, STORED, TEXT};
/// use tantivy::{doc, Index};
/// use tantivy_rerank_search::{Cascade, Stage, StoredText};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut builder = Schema::builder();
/// let headline = builder.add_text_field("headline", TEXT | STORED);
/// let content = builder.add_text_field("content", TEXT | STORED);
/// let index = Index::create_in_ram(builder.build());
/// let mut writer = index.writer(15_000_000)?;
/// writer.add_document(doc!(headline => "Cats", content => "Cats purr and sleep."))?;
/// writer.add_document(doc!(headline => "Dogs", content => "Dogs bark at cats."))?;
/// writer.commit()?;
///
/// // Any first stage: here BM25 over both fields.
/// let searcher = index.reader()?.searcher();
/// let query = QueryParser::for_index(&index, vec![headline, content]).parse_query("cats")?;
/// let candidates = searcher.search(&query, &TopDocs::with_limit(100))?;
///
/// // Any reranker: here a closure preferring texts about dogs.
/// let dogs = |_q: &str, texts: &[&str]| {
///     Ok::<_, std::convert::Infallible>(texts.iter().map(|t| t.matches("Dogs").count() as f32).collect())
/// };
/// let cascade = Cascade::new(Stage::new(dogs).window(50));
/// let text = StoredText::new(&index.schema(), ["headline", "content"])?;
/// let results = cascade.rerank(&searcher, "cats", &candidates, &text, 10)?;
/// assert_eq!(results.hits[0].doc, "Dogs\nDogs bark at cats.");
/// assert_eq!(results.hits[0].first_stage_rank, 2);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Cascade<'a> {
    stages: Vec<Stage<'a>>,
    combination: Combination,
    budget: Option<Duration>,
    cancel: Option<CancelToken>,
}

/// A first-stage candidate with its loaded document.
pub(crate) struct Loaded<D> {
    pub(crate) score: f32,
    pub(crate) address: DocAddress,
    pub(crate) doc: D,
}

/// When a query started, what happened before the second stage, and the token of the
/// search call that may stop it.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    /// Start of the query: the latency budget counts from here.
    pub(crate) started: Instant,
    pub(crate) retrieve: Duration,
    pub(crate) fetch: Duration,
    pub(crate) cancel: Option<CancelToken>,
}

impl<'a> Cascade<'a> {
    /// A second stage of one stage.
    pub fn new(first: Stage<'a>) -> Self {
        Cascade {
            stages: vec![first],
            combination: Combination::RerankOnly,
            budget: None,
            cancel: None,
        }
    }

    /// A second stage of one stage of `reranker`, with default options.
    pub fn of(reranker: impl Reranker + 'a) -> Self {
        Self::new(Stage::new(reranker))
    }

    /// Add a stage after the last one: it scores the best of what that one scored.
    pub fn then(mut self, stage: Stage<'a>) -> Self {
        self.stages.push(stage);
        self
    }

    /// How each stage's score is fused with the first-stage score.
    pub fn combination(mut self, combination: Combination) -> Self {
        self.combination = combination;
        self
    }

    /// A per-query latency budget. Each stage then scores its candidates in the order of the
    /// stage before it, batch by batch ([`StageOptions::budget_batch`] texts per reranker
    /// call), and starts no batch that its measured cost per token says would end past the
    /// budget; candidates left unscored keep their earlier order below the scored ones, and
    /// the result says how many were scored ([`StageReport::docs_scored`]) and that the budget
    /// cut in. The budget counts from the start of the query when the search runs here
    /// (`ArticleIndex::search`, the collector), else from the call. The first call of a
    /// stage, before any cost is measured, scores one document.
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Stop every run of this cascade when `token` is cancelled (or its deadline passes): the
    /// run checks it before each stage and before each reranker call, calls the reranker
    /// [`StageOptions::budget_batch`] texts at a time so that a long stage stops within one
    /// batch, and fails with [`SearchError::Cancelled`]. A token for one search call goes in
    /// [`SearchOptions::cancel`](crate::SearchOptions::cancel) instead.
    pub fn cancel_on(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// A cascade of `options`' stages, the `i`-th run by `rerankers[i]`.
    pub fn from_options(
        options: &RerankOptions,
        rerankers: Vec<Arc<dyn Reranker + 'a>>,
    ) -> Result<Self> {
        options.validate()?;
        if rerankers.len() != options.stages.len() {
            return Err(SearchError::InvalidOption {
                option: "stages",
                value: format!(
                    "{} stages, {} rerankers",
                    options.stages.len(),
                    rerankers.len()
                ),
                reason: "give one reranker per stage",
            });
        }
        Ok(Cascade {
            stages: rerankers
                .into_iter()
                .zip(&options.stages)
                .map(|(r, o)| Stage::shared(r).with_options(o.clone()))
                .collect(),
            combination: options.combination,
            budget: options.budget,
            cancel: None,
        })
    }

    /// The options this cascade runs with.
    pub fn options(&self) -> RerankOptions {
        RerankOptions {
            stages: self.stages.iter().map(|s| s.options.clone()).collect(),
            combination: self.combination,
            budget: self.budget,
        }
    }

    /// The stages.
    pub fn stages(&self) -> &[Stage<'a>] {
        &self.stages
    }

    /// Check the options ([`RerankOptions::validate`]).
    pub fn validate(&self) -> Result<()> {
        self.options().validate()
    }

    /// Rerank the first-stage `candidates` (best first, as a `TopDocs` collector returns
    /// them) that `searcher` found for `query`: load each one's document with `loader`,
    /// run the stages, and return the best `top_n` hits.
    pub fn rerank<L: DocLoader>(
        &self,
        searcher: &Searcher,
        query: &str,
        candidates: &[(f32, DocAddress)],
        loader: &L,
        top_n: usize,
    ) -> Result<RerankResults<L::Doc>> {
        let started = Instant::now();
        self.validate()?;
        check_top_n(top_n)?;
        self.rerank_since(
            searcher,
            query,
            candidates,
            loader,
            top_n,
            started,
            Duration::ZERO,
            None,
        )
    }

    /// [`Cascade::rerank`] for a query that started at `started` and spent `retrieve` in the
    /// first stage; the caller has checked the options and `top_n`, once per query
    /// ([`Cascade::rerank`] before anything runs, the collector when it merges the fruits).
    /// `cancel` is the search call's token, obeyed with the cascade's own.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rerank_since<L: DocLoader>(
        &self,
        searcher: &Searcher,
        query: &str,
        candidates: &[(f32, DocAddress)],
        loader: &L,
        top_n: usize,
        started: Instant,
        retrieve: Duration,
        cancel: Option<&CancelToken>,
    ) -> Result<RerankResults<L::Doc>> {
        Stop::new(self.cancel.as_ref(), cancel).check()?;
        let t = Instant::now();
        let keep = candidates
            .len()
            .min(self.stages[0].options.window.max(top_n));
        let loaded = load_candidates(searcher, &candidates[..keep], loader)?;
        let clock = Clock {
            started,
            retrieve,
            fetch: t.elapsed(),
            cancel: cancel.cloned(),
        };
        let mut results = self.run(query, loaded, &|d: &L::Doc| loader.text(d), top_n, clock)?;
        // Those past the window and past `top_n` were not loaded, but they were candidates.
        results.candidates = candidates.len();
        Ok(results)
    }

    /// The second stage on loaded candidates (best first-stage first).
    pub(crate) fn run<D: Send + Sync>(
        &self,
        query: &str,
        candidates: Vec<Loaded<D>>,
        text: &(dyn Fn(&D) -> Cow<'_, str> + Sync),
        top_n: usize,
        clock: Clock,
    ) -> Result<RerankResults<D>> {
        let n = candidates.len();
        let window = self.stages[0].options.window.min(n);
        let texts: Vec<Cow<'_, str>> = candidates[..window].iter().map(|c| text(&c.doc)).collect();
        let deadline = self.budget.map(|b| clock.started + b);
        let stop = Stop::new(self.cancel.as_ref(), clock.cancel.as_ref());
        let stages = self.stages.len();
        let mut order: Vec<usize> = (0..n).collect();
        let mut state: Vec<DocState> = vec![DocState::new(stages); n];
        let mut scored_before = window;
        let mut reports = Vec::with_capacity(stages);
        let mut timings = Timings {
            retrieve: clock.retrieve,
            fetch: clock.fetch,
            ..Timings::default()
        };
        let describe = |i: usize| {
            let a = candidates[i].address;
            format!(
                "at {}/{} (first-stage rank {})",
                a.segment_ord,
                a.doc_id,
                i + 1
            )
        };
        for (k, stage) in self.stages.iter().enumerate() {
            let t = Instant::now();
            let eligible: Vec<usize> = order[..stage.options.window.min(scored_before)].to_vec();
            let docs: Vec<&str> = eligible.iter().map(|&i| texts[i].as_ref()).collect();
            stop.check()?;
            let outcome = stage.score(query, &docs, deadline, stop)?;
            timings.score += t.elapsed();
            let t_merge = Instant::now();
            let mut scored = Vec::with_capacity(eligible.len());
            for (pos, (&doc, result)) in eligible.iter().zip(outcome.docs).enumerate() {
                let Some(passages) = result else { continue };
                let s = &passages.scores;
                if let Some(&bad) = s.iter().find(|v| !v.is_finite()) {
                    return Err(SearchError::NonFiniteScore {
                        query: query.to_string(),
                        doc: describe(doc),
                        value: bad,
                    });
                }
                let best = (0..s.len())
                    .max_by(|&a, &b| s[a].total_cmp(&s[b]).then(b.cmp(&a)))
                    .unwrap_or(0);
                let value = aggregate(stage.options.aggregation, s, best);
                state[doc].stage_scores[k] = Some(value);
                state[doc].best = stage.options.passages.map(|_| PassageHit {
                    index: best,
                    of: s.len(),
                    text: passages.best_text(best),
                    score: s.get(best).copied().unwrap_or(0.0),
                });
                scored.push((doc, pos, value));
            }
            let finals = fuse(self.combination, &scored, &candidates);
            let mut ranked: Vec<(usize, usize, f32)> = scored
                .iter()
                .zip(&finals)
                .map(|(&(doc, pos, _), &f)| (doc, pos, f))
                .collect();
            ranked.sort_by(|a, b| desc(a.2, b.2).then(a.1.cmp(&b.1)));
            for &(doc, _, f) in &ranked {
                state[doc].depth = k + 1;
                state[doc].score = Some(f);
            }
            let mut is_scored = vec![false; n];
            for &(doc, ..) in &ranked {
                is_scored[doc] = true;
            }
            let mut next: Vec<usize> = ranked.iter().map(|&(doc, ..)| doc).collect();
            next.extend(order.iter().copied().filter(|&d| !is_scored[d]));
            order = next;
            scored_before = ranked.len();
            timings.merge += t_merge.elapsed();
            reports.push(StageReport {
                name: stage
                    .options
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("stage {}", k + 1)),
                docs: eligible.len(),
                docs_scored: ranked.len(),
                passages_scored: outcome.passages,
                budget_cut: outcome.budget_cut,
                time: t.elapsed(),
            });
        }
        let t_merge = Instant::now();
        let mut slots: Vec<Option<Loaded<D>>> = candidates.into_iter().map(Some).collect();
        let mut hits = Vec::with_capacity(top_n.min(n));
        for &i in order.iter().take(top_n) {
            let Some(c) = slots[i].take() else { continue };
            let st = std::mem::replace(&mut state[i], DocState::new(0));
            let deepest = st.depth.checked_sub(1);
            hits.push(Hit {
                rerank_score: deepest.and_then(|k| st.stage_scores[k]),
                score: st.score,
                passage: st.best,
                stage_scores: st.stage_scores,
                ..Hit::first_stage(c.doc, c.address, c.score, i + 1)
            });
        }
        timings.merge += t_merge.elapsed();
        Ok(RerankResults {
            query: query.to_string(),
            hits,
            candidates: n,
            passages_scored: reports.iter().map(|r| r.passages_scored).sum(),
            budget_exhausted: reports.iter().any(|r| r.budget_cut),
            stages: reports,
            timings,
        })
    }
}

pub(crate) fn check_top_n(top_n: usize) -> Result<()> {
    if top_n == 0 {
        return Err(SearchError::InvalidOption {
            option: "top_n",
            value: "0".into(),
            reason: "must be at least 1",
        });
    }
    Ok(())
}

/// Load the documents of `candidates` with `loader`, in parallel, order kept.
pub(crate) fn load_candidates<L: DocLoader>(
    searcher: &Searcher,
    candidates: &[(f32, DocAddress)],
    loader: &L,
) -> Result<Vec<Loaded<L::Doc>>> {
    candidates
        .par_iter()
        .map(|&(score, address)| {
            let doc = loader
                .load(searcher, address)
                .map_err(|source| SearchError::Load {
                    address: format!("{}/{}", address.segment_ord, address.doc_id),
                    source,
                })?;
            Ok(Loaded {
                score,
                address,
                doc,
            })
        })
        .collect()
}

/// What the stages made of one candidate.
#[derive(Debug, Clone)]
struct DocState {
    stage_scores: Vec<Option<f32>>,
    /// Stages that scored it (they form a prefix of the cascade).
    depth: usize,
    /// Final score in the deepest of them.
    score: Option<f32>,
    best: Option<PassageHit>,
}

impl DocState {
    fn new(stages: usize) -> Self {
        DocState {
            stage_scores: vec![None; stages],
            depth: 0,
            score: None,
            best: None,
        }
    }
}

/// The passage scores of one document in one stage.
struct ScoredPassages<'t> {
    passages: Vec<&'t str>,
    scores: Vec<f32>,
}

impl ScoredPassages<'_> {
    fn best_text(&self, best: usize) -> String {
        self.passages
            .get(best)
            .map(|p| p.to_string())
            .unwrap_or_default()
    }
}

/// What a stage did with its documents.
struct StageOutcome<'t> {
    /// Per document, in the order given: its passages and their scores, or `None` when the
    /// budget left it unscored.
    docs: Vec<Option<ScoredPassages<'t>>>,
    passages: usize,
    budget_cut: bool,
}

impl Stage<'_> {
    /// Cut `docs` into passages, score them with the reranker (one call; or batch by batch
    /// within the budget until `deadline`, or while `stop` lets it go on) and return the
    /// scores per document.
    fn score<'t>(
        &self,
        query: &str,
        docs: &[&'t str],
        deadline: Option<Instant>,
        stop: Stop<'_>,
    ) -> Result<StageOutcome<'t>> {
        // A reranker that fails once the run is cancelled (or says it stopped for it) is
        // reported as the cancellation, with the reason the token gives.
        let rerank_err = |source: RerankError| match (stop.check(), source) {
            (Err(cancelled), _) => cancelled,
            (Ok(()), RerankError::Cancelled) => SearchError::Cancelled {
                reason: crate::CancelReason::Cancelled,
            },
            (Ok(()), source) => SearchError::Rerank {
                query: query.to_string(),
                source,
            },
        };
        let tokenizer = self.reranker.tokenizer();
        let passages = build_passages(query, docs, tokenizer, &self.options, stop)
            .map_err(|e| rerank_err(RerankError::Tokenizer(e)))?;
        stop.check()?;
        // What each text costs the model, in tokens (words without a tokenizer): its units,
        // plus the query's when the model reads them together.
        let query_units = match (deadline, tokenizer) {
            (None, _) => 0,
            (Some(_), Some(t)) if t.input == ModelInput::WithQuery => t
                .tokenizer
                .count_tokens(query)
                .map_err(|e| rerank_err(RerankError::Tokenizer(e)))?,
            (Some(_), Some(_)) => 0,
            (Some(_), None) => query.split_whitespace().count(),
        };
        let doc_units: Vec<usize> = passages
            .iter()
            .map(|p| p.iter().map(|(_, u)| u + query_units).sum())
            .collect();
        let mut scores: Vec<Option<Vec<f32>>> = vec![None; docs.len()];
        let mut budget_cut = false;
        let mut start = 0;
        while start < docs.len() {
            let end = match (deadline, self.cost.estimate()) {
                // Nothing may stop the stage: one call.
                (None, _) if !stop.is_set() => docs.len(),
                // Nothing measured yet under a budget: one document measures the cost.
                (Some(_), None) => start + 1,
                // Under a budget or a cancel token: `budget_batch` texts a call (at least
                // one document).
                (None, _) | (Some(_), Some(_)) => {
                    let mut end = start;
                    let mut texts = 0;
                    while end < docs.len() && (end == start || texts < self.options.budget_batch) {
                        texts += passages[end].len();
                        end += 1;
                    }
                    end
                }
            };
            let units: usize = doc_units[start..end].iter().sum();
            if let Some(deadline) = deadline {
                let now = Instant::now();
                let predicted = self.cost.estimate().map_or(Duration::ZERO, |c| {
                    Duration::from_secs_f64(c * units as f64)
                });
                if now >= deadline || deadline - now < predicted {
                    budget_cut = true;
                    break;
                }
            }
            stop.check()?;
            let flat: Vec<&str> = passages[start..end]
                .iter()
                .flatten()
                .map(|&(p, _)| p)
                .collect();
            let t = Instant::now();
            let got = self.reranker.rerank(query, &flat).map_err(rerank_err)?;
            if got.len() != flat.len() {
                return Err(SearchError::ScoreCountMismatch {
                    query: query.to_string(),
                    expected: flat.len(),
                    got: got.len(),
                });
            }
            self.cost.observe(t.elapsed(), units);
            let mut rest = got.as_slice();
            for (slot, doc_passages) in scores[start..end].iter_mut().zip(&passages[start..end]) {
                let (mine, tail) = rest.split_at(doc_passages.len());
                *slot = Some(mine.to_vec());
                rest = tail;
            }
            start = end;
        }
        let scored_passages = passages[..start].iter().map(Vec::len).sum();
        let docs = passages
            .into_iter()
            .zip(scores)
            .map(|(p, s)| {
                s.map(|scores| ScoredPassages {
                    passages: p.into_iter().map(|(t, _)| t).collect(),
                    scores,
                })
            })
            .collect();
        Ok(StageOutcome {
            docs,
            passages: scored_passages,
            budget_cut,
        })
    }
}

/// Passages of every document with their units (tokens, or words without a tokenizer).
/// Passages are cut by the reranker's tokens when it has a tokenizer, else by words, and
/// never longer than what the model reads whole next to the query. Once `stop` says stop,
/// the documents not yet cut are left without passages (the caller checks `stop` next).
fn build_passages<'t>(
    query: &str,
    texts: &[&'t str],
    tokenizer: Option<ModelTokenizer<'_>>,
    options: &StageOptions,
    stop: Stop<'_>,
) -> std::result::Result<Vec<Vec<(&'t str, usize)>>, crate::BoxError> {
    let Some(mut popts) = options.passages else {
        return Ok(texts
            .iter()
            .map(|&t| vec![(t, whole_units(t, tokenizer))])
            .collect());
    };
    let budget = tokenizer.map(|t| t.passage_budget(query)).transpose()?;
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
        .map(|&text| {
            if stop.is_cancelled() {
                return Ok(Vec::new());
            }
            let spans = match tokenizer {
                Some(t) => t.tokenizer.token_spans(text, need)?,
                None => word_spans(text),
            };
            split_fitted(text, &spans, &popts, |start, end| {
                fitted_end(text, &spans, start, end, budget, tokenizer)
            })
        })
        .collect()
}

/// Units of a text scored whole: what the model reads of it at most, estimated from its
/// length (about 4 bytes a token), or its words without a tokenizer.
fn whole_units(text: &str, tokenizer: Option<ModelTokenizer<'_>>) -> usize {
    match tokenizer {
        Some(t) => (text.len() / 4 + 1).min(t.tokenizer.max_tokens()),
        None => text.split_whitespace().count().max(1),
    }
}

/// The end of the passage of units `start..end`, moved back until the tokenizer counts no
/// more than `budget` tokens in it. A slice of a text can take more tokens than the units it
/// was cut from (a word cut in two is tokenised afresh), and the model would silently
/// truncate it. A passage of fewer bytes than the budget is not counted: no tokenizer makes
/// more tokens than bytes, plus one for a word marker some put in front.
fn fitted_end(
    text: &str,
    spans: &[(usize, usize)],
    start: usize,
    mut end: usize,
    budget: Option<usize>,
    tokenizer: Option<ModelTokenizer<'_>>,
) -> std::result::Result<usize, crate::BoxError> {
    let (Some(budget), Some(t)) = (budget, tokenizer) else {
        return Ok(end);
    };
    loop {
        let passage = span_text(text, spans, start, end);
        if passage.len() < budget || end - start == 1 {
            return Ok(end);
        }
        let n = t.tokenizer.count_tokens(passage)?;
        if n <= budget {
            return Ok(end);
        }
        end -= (n - budget).min(end - start - 1);
    }
}

fn aggregate(aggregation: Aggregation, scores: &[f32], best: usize) -> f32 {
    match aggregation {
        Aggregation::Max => scores.get(best).copied().unwrap_or(0.0),
        Aggregation::First => scores.first().copied().unwrap_or(0.0),
        // In f64: passages of huge finite scores must not sum past f32.
        Aggregation::Mean => {
            (scores.iter().map(|&v| f64::from(v)).sum::<f64>() / scores.len().max(1) as f64) as f32
        }
    }
}

/// Final scores of the documents a stage scored, `(candidate, position, stage score)`:
/// the stage score fused with the first-stage score.
fn fuse<D>(
    combination: Combination,
    scored: &[(usize, usize, f32)],
    candidates: &[Loaded<D>],
) -> Vec<f32> {
    let stage: Vec<f32> = scored.iter().map(|s| s.2).collect();
    match combination {
        Combination::RerankOnly => stage,
        Combination::Linear { alpha } => {
            let first: Vec<f32> = scored.iter().map(|s| candidates[s.0].score).collect();
            let r = min_max(&stage);
            let b = min_max(&first);
            r.iter()
                .zip(&b)
                .map(|(r, b)| alpha * r + (1.0 - alpha) * b)
                .collect()
        }
        Combination::Rrf { k } => {
            let mut by_stage: Vec<usize> = (0..scored.len()).collect();
            by_stage.sort_by(|&a, &b| desc(stage[a], stage[b]).then(scored[a].1.cmp(&scored[b].1)));
            let mut stage_rank = vec![0usize; scored.len()];
            for (rank, &i) in by_stage.iter().enumerate() {
                stage_rank[i] = rank + 1;
            }
            scored
                .iter()
                .zip(&stage_rank)
                .map(|(s, &r)| 1.0 / (k + (s.0 + 1) as f32) + 1.0 / (k + r as f32))
                .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reranker::PassageTokenizer;
    use crate::BoxError;

    /// Candidates `d0..d{n-1}` with first-stage scores `n..1`; text `t<i>\nbody of doc <i> with words`.
    fn cands(n: usize) -> Vec<Loaded<String>> {
        (0..n)
            .map(|i| Loaded {
                score: (n - i) as f32,
                address: DocAddress::new(0, i as u32),
                doc: format!("t{i}\nbody of doc {i} with words"),
            })
            .collect()
    }

    fn clock() -> Clock {
        Clock {
            started: Instant::now(),
            retrieve: Duration::ZERO,
            fetch: Duration::ZERO,
            cancel: None,
        }
    }

    fn run(
        cascade: &Cascade<'_>,
        c: Vec<Loaded<String>>,
        top_n: usize,
    ) -> Result<RerankResults<String>> {
        cascade.run(
            "q",
            c,
            &|d: &String| Cow::Borrowed(d.as_str()),
            top_n,
            clock(),
        )
    }

    fn ids(r: &RerankResults<String>) -> Vec<String> {
        r.hits
            .iter()
            .map(|h| h.doc.split('\n').next().unwrap_or("").replace('t', "d"))
            .collect()
    }

    type ScoreFn = fn(&str, &[&str]) -> std::result::Result<Vec<f32>, std::convert::Infallible>;

    /// Scores each text by the doc number in its first line (`t<i>`): reverses BM25 order.
    fn by_number() -> ScoreFn {
        |_q, texts| {
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
        }
    }

    fn whole(window: usize) -> Stage<'static> {
        Stage::new(by_number()).window(window).passages(None)
    }

    #[test]
    fn window_reranked_tail_in_first_stage_order() {
        let r = run(&Cascade::new(whole(3)), cands(6), 5).unwrap();
        assert_eq!(ids(&r), ["d2", "d1", "d0", "d3", "d4"]);
        assert_eq!(r.passages_scored, 3);
        assert!(r.hits[3].rerank_score.is_none() && r.hits[3].first_stage_rank == 4);
        assert_eq!(r.hits[0].stage_scores, [Some(2.0)]);
        assert_eq!(r.stages.len(), 1);
        assert_eq!((r.stages[0].docs, r.stages[0].docs_scored), (3, 3));
        assert!(!r.budget_exhausted);
    }

    #[test]
    fn rrf_and_linear_fuse() {
        let cascade = Cascade::new(whole(3)).combination(Combination::rrf());
        let r = run(&cascade, cands(3), 3).unwrap();
        // Ranks (first stage, rerank): d0 (1,3), d1 (2,2), d2 (3,1). 1/61 + 1/63 > 2/62
        // (convexity); d0 and d2 tie exactly and the tie goes to the better first-stage rank.
        assert_eq!(ids(&r), ["d0", "d2", "d1"]);
        let cascade = Cascade::new(whole(3)).combination(Combination::Linear { alpha: 0.0 });
        let r = run(&cascade, cands(3), 3).unwrap();
        assert_eq!(r.hits[0].doc, cands(1)[0].doc);
        assert_eq!(r.hits[0].score, Some(1.0));
    }

    #[test]
    fn huge_finite_scores_fuse_and_average_without_overflow() {
        // Scores by doc number: t0 -> f32::MAX, t1 -> -f32::MAX, t2 -> 0.
        let extreme = |_q: &str, t: &[&str]| {
            Ok::<_, std::convert::Infallible>(
                t.iter()
                    .map(|t| match t.split('\n').next() {
                        Some("t0") => f32::MAX,
                        Some("t1") => -f32::MAX,
                        _ => 0.0,
                    })
                    .collect(),
            )
        };
        let cascade = Cascade::new(Stage::new(extreme).window(3).passages(None))
            .combination(Combination::Linear { alpha: 0.5 });
        let r = run(&cascade, cands(3), 3).unwrap();
        // d0: best first-stage and best rerank score -> 1.0; d1: 0.5 * 0 + 0.5 * 0.5; d2: 0.5 * 0.5 + 0.
        assert_eq!(ids(&r), ["d0", "d1", "d2"]);
        assert_eq!(r.hits[0].score, Some(1.0));
        assert!(r.hits.iter().all(|h| h.score.is_some_and(f32::is_finite)));
        // The mean of passages that each score near f32::MAX stays finite.
        let mut c = cands(1);
        c[0].doc = "a b c d".into();
        let big = |_q: &str, t: &[&str]| Ok::<_, std::convert::Infallible>(vec![3e38; t.len()]);
        let stage = Stage::new(big)
            .passages(Some(PassageOptions {
                length: 1,
                stride: 1,
                max_passages: 10,
            }))
            .aggregation(Aggregation::Mean);
        let r = run(&Cascade::new(stage), c, 10).unwrap();
        assert!(r.passages_scored > 1);
        assert_eq!(r.hits[0].rerank_score, Some(3e38));
    }

    /// Cuts texts by words, counts a word starting with `x` as two tokens (as a tokenizer may
    /// split a word fragment more finely than the whole text it was cut from), reads
    /// `[CLS] query [SEP] text [SEP]` (3 special tokens) and takes at most `max` tokens.
    struct Words {
        max: usize,
        seen: Mutex<Vec<String>>,
    }

    impl PassageTokenizer for Words {
        fn token_spans(
            &self,
            text: &str,
            _need: usize,
        ) -> std::result::Result<Vec<(usize, usize)>, BoxError> {
            Ok(word_spans(text))
        }
        fn count_tokens(&self, text: &str) -> std::result::Result<usize, BoxError> {
            let words = text.split_whitespace();
            Ok(words.map(|w| if w.starts_with('x') { 2 } else { 1 }).sum())
        }
        fn special_tokens(&self, pair: bool) -> usize {
            if pair {
                3
            } else {
                2
            }
        }
        fn max_tokens(&self) -> usize {
            self.max
        }
    }

    impl Reranker for Words {
        fn rerank(&self, _q: &str, texts: &[&str]) -> std::result::Result<Vec<f32>, RerankError> {
            let mut seen = self.seen.lock().unwrap();
            seen.extend(texts.iter().map(|t| t.to_string()));
            Ok(texts
                .iter()
                .map(|t| t.split_whitespace().count() as f32)
                .collect())
        }
        fn tokenizer(&self) -> Option<ModelTokenizer<'_>> {
            Some(ModelTokenizer {
                tokenizer: self,
                input: ModelInput::WithQuery,
            })
        }
    }

    fn words(max: usize) -> Words {
        Words {
            max,
            seen: Mutex::default(),
        }
    }

    #[test]
    fn passages_are_shortened_until_the_model_reads_them_whole_and_leave_no_gap() {
        let reranker = words(13);
        let mut c = cands(1);
        c[0].doc = "a xb c xd e xf g h i j k l m n o".into();
        let cascade = Cascade::new(Stage::borrowed(&reranker));
        run(&cascade, c, 10).unwrap();
        // Budget: 13 - (1 query token + 3 special tokens) = 9 tokens, so passages of 9
        // words every 9 words; "a xb c xd e xf g h i" counts 12 and is cut to 6 words.
        let seen = reranker.seen.lock().unwrap().clone();
        assert_eq!(seen, ["a xb c xd e xf", "g h i j k l m n o"]);
        for p in &seen {
            assert!(reranker.count_tokens(p).unwrap() <= 9, "{p}");
        }
    }

    #[test]
    fn a_long_query_leaves_passages_the_minimum() {
        let reranker = words(9);
        let mut c = cands(1);
        c[0].doc = "a b c d e f g h i j k l m".into();
        let cascade = Cascade::new(Stage::borrowed(&reranker).passages(Some(PassageOptions {
            length: 100,
            stride: 100,
            max_passages: 10,
        })));
        // 9 - (1 + 3) = 5 < MIN_PASSAGE_TOKENS: passages of 8 words.
        let r = run(&cascade, c, 1).unwrap();
        assert_eq!(r.passages_scored, 2);
        assert_eq!(r.hits[0].rerank_score, Some(8.0));
    }

    #[test]
    fn tokenizer_errors_are_reported() {
        struct Broken;
        impl PassageTokenizer for Broken {
            fn token_spans(
                &self,
                _t: &str,
                _n: usize,
            ) -> std::result::Result<Vec<(usize, usize)>, BoxError> {
                Err("vocabulary is gone".into())
            }
            fn count_tokens(&self, _t: &str) -> std::result::Result<usize, BoxError> {
                Ok(1)
            }
            fn special_tokens(&self, _pair: bool) -> usize {
                2
            }
            fn max_tokens(&self) -> usize {
                64
            }
        }
        impl Reranker for Broken {
            fn rerank(&self, _q: &str, t: &[&str]) -> std::result::Result<Vec<f32>, RerankError> {
                Ok(vec![0.0; t.len()])
            }
            fn tokenizer(&self) -> Option<ModelTokenizer<'_>> {
                Some(ModelTokenizer {
                    tokenizer: self,
                    input: ModelInput::Alone,
                })
            }
        }
        let err = run(&Cascade::of(Broken), cands(2), 2).unwrap_err();
        assert!(
            matches!(
                &err,
                SearchError::Rerank {
                    source: RerankError::Tokenizer(_),
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("vocabulary is gone"), "{err}");
    }

    #[test]
    fn nan_and_count_mismatch_fail() {
        let nan = |_q: &str, t: &[&str]| Ok::<_, std::convert::Infallible>(vec![f32::NAN; t.len()]);
        let err = run(&Cascade::of(nan), cands(2), 2).unwrap_err();
        assert!(matches!(err, SearchError::NonFiniteScore { .. }), "{err}");
        assert!(err.to_string().contains("first-stage rank 1"), "{err}");
        let short = |_q: &str, _t: &[&str]| Ok::<_, std::convert::Infallible>(vec![1.0]);
        let err = run(&Cascade::of(short), cands(2), 2).unwrap_err();
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
        let failing = |_q: &str, _t: &[&str]| Err::<Vec<f32>, _>("boom");
        let err = run(&Cascade::of(failing), cands(2), 2).unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
    }

    #[test]
    fn passages_aggregate() {
        let mut c = cands(1);
        c[0].doc = "x x x x x x x x x x target y y".to_string();
        let count = |_q: &str, t: &[&str]| {
            Ok::<_, std::convert::Infallible>(
                t.iter()
                    .map(|p| p.matches("target").count() as f32)
                    .collect(),
            )
        };
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
            let stage = Stage::new(count).passages(Some(popts)).aggregation(agg);
            let r = run(&Cascade::new(stage), c.clone_docs(), 1).unwrap();
            assert_eq!(r.passages_scored, 4);
            assert_eq!(r.hits[0].rerank_score, Some(expect));
            let p = r.hits[0].passage.as_ref().unwrap();
            assert_eq!((p.index, p.of, p.text.as_str()), (2, 4, "x x target y"));
        }
    }

    trait CloneDocs {
        fn clone_docs(&self) -> Self;
    }

    impl CloneDocs for Vec<Loaded<String>> {
        fn clone_docs(&self) -> Self {
            self.iter()
                .map(|c| Loaded {
                    score: c.score,
                    address: c.address,
                    doc: c.doc.clone(),
                })
                .collect()
        }
    }

    #[test]
    fn a_cascade_scores_each_stage_on_the_best_of_the_one_before() {
        // Stage 1 (window 6 of 8) reverses the order; stage 2 (window 3) sees its best three
        // (d5, d4, d3) and prefers even numbers.
        let calls = Mutex::new(Vec::new());
        let even = |_q: &str, t: &[&str]| {
            calls.lock().unwrap().push(t.len());
            Ok::<_, std::convert::Infallible>(
                by_number()("q", t)?
                    .into_iter()
                    .map(|n| {
                        if (n as usize).is_multiple_of(2) {
                            100.0 + n
                        } else {
                            n
                        }
                    })
                    .collect(),
            )
        };
        let cascade = Cascade::new(whole(6).name("small"))
            .then(Stage::new(even).window(3).passages(None).name("large"));
        let r = run(&cascade, cands(8), 8).unwrap();
        assert_eq!(ids(&r), ["d4", "d5", "d3", "d2", "d1", "d0", "d6", "d7"]);
        assert_eq!(*calls.lock().unwrap(), [3]);
        assert_eq!(r.hits[0].stage_scores, [Some(4.0), Some(104.0)]);
        assert_eq!(r.hits[0].rerank_score, Some(104.0));
        assert_eq!(r.hits[3].stage_scores, [Some(2.0), None]);
        assert_eq!(r.hits[3].rerank_score, Some(2.0));
        assert_eq!(r.hits[6].stage_scores, [None, None]);
        assert!(r.hits[6].score.is_none());
        let names: Vec<&str> = r.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["small", "large"]);
        assert_eq!((r.stages[1].docs, r.stages[1].docs_scored), (3, 3));
        assert_eq!(r.passages_scored, 9);
    }

    #[test]
    fn a_budget_stops_scoring_between_batches_and_drops_nothing() {
        // Each call sleeps 20 ms, whatever its size; after its first call (one document) the
        // stage knows its cost and starts no batch it predicts would end past the budget.
        // 100 documents at 2 a batch cannot fit in 300 ms even when the machine is busy and
        // the sleeps run long; at least the probe and two batches always fit.
        let slow = |_q: &str, t: &[&str]| {
            std::thread::sleep(Duration::from_millis(20));
            by_number()("q", t)
        };
        let stage = Stage::new(slow)
            .window(100)
            .passages(None)
            .with_budget_batch(2);
        let cascade = Cascade::new(stage).budget(Duration::from_millis(300));
        let r = run(&cascade, cands(100), 100).unwrap();
        assert!(r.budget_exhausted && r.stages[0].budget_cut);
        let scored = r.stages[0].docs_scored;
        assert!((3..100).contains(&scored), "{scored}");
        assert_eq!(r.hits.len(), 100, "no candidate is dropped");
        // Scored ones first (reversed), then the rest in first-stage order.
        let got = ids(&r);
        let mut want: Vec<String> = (0..scored).rev().map(|i| format!("d{i}")).collect();
        want.extend((scored..100).map(|i| format!("d{i}")));
        assert_eq!(got, want);
        assert!(cascade.stages()[0].seconds_per_token().is_some());
        // A budget already spent scores nothing but still returns every candidate.
        let spent = Clock {
            started: Instant::now() - Duration::from_secs(1),
            ..clock()
        };
        let r = cascade
            .run(
                "q",
                cands(4),
                &|d: &String| Cow::Borrowed(d.as_str()),
                4,
                spent,
            )
            .unwrap();
        assert_eq!(r.stages[0].docs_scored, 0);
        assert_eq!(ids(&r), ["d0", "d1", "d2", "d3"]);
        assert!(r.hits.iter().all(|h| h.score.is_none()));
    }

    /// A reranker that counts its calls and cancels `token` on call number `cancel_at`.
    fn cancelling(
        token: CancelToken,
        cancel_at: usize,
        calls: &std::sync::atomic::AtomicUsize,
    ) -> impl Fn(&str, &[&str]) -> std::result::Result<Vec<f32>, std::convert::Infallible> + '_
    {
        move |q, t| {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            if n == cancel_at {
                token.cancel();
            }
            by_number()(q, t)
        }
    }

    #[test]
    fn a_cancelled_run_stops_at_the_next_batch_with_a_typed_error() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // 100 documents, 2 a call: 50 calls if nothing stops the stage. The token is
        // cancelled during call 3; no call starts after it.
        let token = CancelToken::new();
        let calls = AtomicUsize::new(0);
        let stage = Stage::new(cancelling(token.clone(), 3, &calls))
            .window(100)
            .passages(None)
            .with_budget_batch(2);
        let cascade = Cascade::new(stage).cancel_on(token);
        let err = run(&cascade, cands(100), 10).unwrap_err();
        assert!(
            matches!(
                err,
                SearchError::Cancelled {
                    reason: crate::CancelReason::Cancelled
                }
            ),
            "{err}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        // The token of the search call (the clock's) stops it the same way.
        let token = CancelToken::new();
        let calls = AtomicUsize::new(0);
        let stage = Stage::new(cancelling(token.clone(), 1, &calls))
            .window(100)
            .passages(None)
            .with_budget_batch(10);
        let c = Clock {
            cancel: Some(token),
            ..clock()
        };
        let err = Cascade::new(stage)
            .run(
                "q",
                cands(100),
                &|d: &String| Cow::Borrowed(d.as_str()),
                10,
                c,
            )
            .unwrap_err();
        assert!(matches!(err, SearchError::Cancelled { .. }), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_cancelled_run_stops_cutting_passages() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        /// Cuts by words; cancels its token when it starts on its first text.
        struct Cancels {
            token: CancelToken,
            texts: AtomicUsize,
        }
        impl PassageTokenizer for Cancels {
            fn token_spans(
                &self,
                text: &str,
                _need: usize,
            ) -> std::result::Result<Vec<(usize, usize)>, BoxError> {
                self.texts.fetch_add(1, Ordering::SeqCst);
                self.token.cancel();
                Ok(word_spans(text))
            }
            fn count_tokens(&self, text: &str) -> std::result::Result<usize, BoxError> {
                Ok(text.split_whitespace().count())
            }
            fn special_tokens(&self, _pair: bool) -> usize {
                2
            }
            fn max_tokens(&self) -> usize {
                512
            }
        }
        impl Reranker for Cancels {
            fn rerank(&self, _q: &str, t: &[&str]) -> std::result::Result<Vec<f32>, RerankError> {
                Ok(vec![0.0; t.len()])
            }
            fn tokenizer(&self) -> Option<ModelTokenizer<'_>> {
                Some(ModelTokenizer {
                    tokenizer: self,
                    input: ModelInput::WithQuery,
                })
            }
        }
        let token = CancelToken::new();
        let reranker = Cancels {
            token: token.clone(),
            texts: AtomicUsize::new(0),
        };
        let cascade = Cascade::new(Stage::borrowed(&reranker).window(1_000)).cancel_on(token);
        let err = run(&cascade, cands(1_000), 10).unwrap_err();
        assert!(matches!(err, SearchError::Cancelled { .. }), "{err}");
        // Texts already being cut on other threads finish; no other one starts.
        let cut = reranker.texts.load(Ordering::SeqCst);
        assert!(
            cut <= rayon::current_num_threads(),
            "{cut} of 1,000 texts cut"
        );
    }

    #[test]
    fn cancelling_between_stages_skips_the_later_stages() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let token = CancelToken::new();
        let (first, second) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let cascade = Cascade::new(
            Stage::new(cancelling(token.clone(), 1, &first))
                .window(5)
                .passages(None),
        )
        .then(
            Stage::new(cancelling(CancelToken::new(), 0, &second))
                .window(2)
                .passages(None),
        )
        .cancel_on(token);
        assert!(matches!(
            run(&cascade, cands(5), 5),
            Err(SearchError::Cancelled { .. })
        ));
        assert_eq!(first.load(Ordering::SeqCst), 1, "one batch of 5");
        assert_eq!(second.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_passed_deadline_or_a_reranker_that_stopped_is_a_cancellation() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = AtomicUsize::new(0);
        let past = CancelToken::with_deadline(Instant::now() - Duration::from_millis(1));
        let stage = Stage::new(cancelling(CancelToken::new(), 0, &calls)).passages(None);
        let err = run(&Cascade::new(stage).cancel_on(past), cands(3), 3).unwrap_err();
        assert!(
            matches!(
                err,
                SearchError::Cancelled {
                    reason: crate::CancelReason::DeadlinePassed
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("deadline"), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        // A reranker that reports it stopped (a queue that dropped the pairs of a cancelled
        // request) makes the run a cancellation, not a reranker failure.
        struct Stopped;
        impl Reranker for Stopped {
            fn rerank(&self, _q: &str, _t: &[&str]) -> std::result::Result<Vec<f32>, RerankError> {
                Err(RerankError::Cancelled)
            }
        }
        let err = run(&Cascade::of(Stopped), cands(2), 2).unwrap_err();
        assert!(matches!(err, SearchError::Cancelled { .. }), "{err}");
    }

    #[test]
    fn options_round_trip_and_one_reranker_per_stage() {
        let cascade = Cascade::new(whole(5).name("a"))
            .then(whole(2))
            .budget(Duration::from_millis(5));
        let options = cascade.options();
        assert_eq!(options.stages.len(), 2);
        let rerankers: Vec<Arc<dyn Reranker>> = vec![Arc::new(by_number()), Arc::new(by_number())];
        let again = Cascade::from_options(&options, rerankers).unwrap();
        assert_eq!(again.options(), options);
        let err = Cascade::from_options(&options, vec![Arc::new(by_number())]).unwrap_err();
        assert!(err.to_string().contains("2 stages, 1 rerankers"), "{err}");
    }
}
