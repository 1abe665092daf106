//! trec_eval's measures on graded qrels, as pytrec_eval reports them.
//!
//! - A run is first ordered as trec_eval orders it: score descending, ties broken by
//!   document id descending (byte-wise, `strcmp`); the rank column of a run file is ignored.
//! - `ndcg_cut.k`: DCG of the top `k` with gain = the judged grade (unjudged or grade <= 0:
//!   gain 0) and discount `1 / log2(rank + 1)`, over the ideal DCG of all judgements with
//!   grade > 0 sorted descending.
//! - MRR@k: trec_eval's `recip_rank` of the run cut to its first `k` documents (1/rank of the
//!   first document with grade >= 1, else 0).
//! - `recall.k`: relevant (grade >= 1) documents in the top `k` over all relevant judgements.
//! - `map_cut.k`: sum of precision at the rank of each relevant document in the top `k`,
//!   over all relevant judgements.
//!
//! Queries whose judgements have no relevant document score 0 on every measure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Sort `(doc id, score)` pairs as trec_eval does: score descending, then doc id descending.
/// Scores are compared as 32-bit floats, the precision trec_eval (and pytrec_eval) keeps, so
/// two scores that differ only past it tie there and here alike.
pub fn trec_order<S: AsRef<str>>(run: &mut [(S, f64)]) {
    run.sort_by(|a, b| {
        (b.1 as f32)
            .total_cmp(&(a.1 as f32))
            .then_with(|| b.0.as_ref().as_bytes().cmp(a.0.as_ref().as_bytes()))
    });
}

/// Keep the first occurrence of each document id of a run in trec order (its best score);
/// returns how many repeats were dropped. trec_eval refuses a run with a repeated document,
/// and pytrec_eval's run (a dict) cannot hold one; counting it twice would inflate every
/// measure.
pub fn drop_repeated_docs<S: AsRef<str>>(run: &mut Vec<(S, f64)>) -> usize {
    let before = run.len();
    let mut seen = std::collections::HashSet::new();
    run.retain(|(d, _)| seen.insert(d.as_ref().to_owned()));
    before - run.len()
}

/// The measures of one query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TrecMetrics {
    /// `ndcg_cut.10`.
    #[serde(rename = "ndcg@10")]
    pub ndcg_10: f64,
    /// `recip_rank` of the top 10.
    #[serde(rename = "mrr@10")]
    pub mrr_10: f64,
    /// `recall.100`.
    #[serde(rename = "recall@100")]
    pub recall_100: f64,
    /// `map_cut.100`.
    #[serde(rename = "map@100")]
    pub map_100: f64,
}

impl TrecMetrics {
    /// Mean of each measure over `per_query` (all zero for none).
    pub fn mean<'a>(per_query: impl IntoIterator<Item = &'a TrecMetrics>) -> TrecMetrics {
        let mut sum = TrecMetrics::default();
        let mut n = 0usize;
        for m in per_query {
            sum.ndcg_10 += m.ndcg_10;
            sum.mrr_10 += m.mrr_10;
            sum.recall_100 += m.recall_100;
            sum.map_100 += m.map_100;
            n += 1;
        }
        if n > 0 {
            let n = n as f64;
            sum.ndcg_10 /= n;
            sum.mrr_10 /= n;
            sum.recall_100 /= n;
            sum.map_100 /= n;
        }
        sum
    }
}

/// All four measures of a run already in trec order (see [`trec_order`]).
pub fn evaluate<S: AsRef<str>>(ranked: &[S], judged: &BTreeMap<String, i64>) -> TrecMetrics {
    TrecMetrics {
        ndcg_10: ndcg_cut(ranked, judged, 10),
        mrr_10: recip_rank_cut(ranked, judged, 10),
        recall_100: recall(ranked, judged, 100),
        map_100: map_cut(ranked, judged, 100),
    }
}

fn grade<S: AsRef<str>>(judged: &BTreeMap<String, i64>, id: &S) -> i64 {
    judged.get(id.as_ref()).copied().unwrap_or(0)
}

fn num_relevant(judged: &BTreeMap<String, i64>) -> usize {
    judged.values().filter(|&&g| g >= 1).count()
}

/// trec_eval `ndcg_cut.k`.
pub fn ndcg_cut<S: AsRef<str>>(ranked: &[S], judged: &BTreeMap<String, i64>, k: usize) -> f64 {
    let disc = |i: usize| 1.0 / ((i + 2) as f64).log2();
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| grade(judged, d).max(0) as f64 * disc(i))
        .sum();
    let mut ideal: Vec<i64> = judged.values().copied().filter(|&g| g > 0).collect();
    ideal.sort_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, &g)| g as f64 * disc(i))
        .sum();
    if idcg > 0.0 {
        dcg / idcg
    } else {
        0.0
    }
}

/// trec_eval `recip_rank` of the first `k` documents.
pub fn recip_rank_cut<S: AsRef<str>>(
    ranked: &[S],
    judged: &BTreeMap<String, i64>,
    k: usize,
) -> f64 {
    ranked
        .iter()
        .take(k)
        .position(|d| grade(judged, d) >= 1)
        .map(|r| 1.0 / (r + 1) as f64)
        .unwrap_or(0.0)
}

/// trec_eval `recall.k`.
pub fn recall<S: AsRef<str>>(ranked: &[S], judged: &BTreeMap<String, i64>, k: usize) -> f64 {
    let rel = num_relevant(judged);
    if rel == 0 {
        return 0.0;
    }
    let found = ranked
        .iter()
        .take(k)
        .filter(|d| grade(judged, *d) >= 1)
        .count();
    found as f64 / rel as f64
}

/// trec_eval `map_cut.k`.
pub fn map_cut<S: AsRef<str>>(ranked: &[S], judged: &BTreeMap<String, i64>, k: usize) -> f64 {
    let rel = num_relevant(judged);
    if rel == 0 {
        return 0.0;
    }
    let mut found = 0usize;
    let mut sum = 0.0;
    for (i, d) in ranked.iter().take(k).enumerate() {
        if grade(judged, d) >= 1 {
            found += 1;
            sum += found as f64 / (i + 1) as f64;
        }
    }
    sum / rel as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_tie_at_32_bit_precision_and_repeats_count_once() {
        // Equal as f32: the tie goes to the larger doc id, as in trec_eval.
        let mut run = vec![("a", 0.100_000_000_000_000_02), ("b", 0.1)];
        trec_order(&mut run);
        assert_eq!(run[0].0, "b");
        let judged: BTreeMap<String, i64> = [("a".to_string(), 1), ("b".to_string(), 1)].into();
        let mut run = vec![("a", 3.0), ("a", 2.0), ("c", 1.0)];
        trec_order(&mut run);
        assert_eq!(drop_repeated_docs(&mut run), 1);
        assert_eq!(run, [("a", 3.0), ("c", 1.0)]);
        let ids: Vec<&str> = run.iter().map(|r| r.0).collect();
        let m = evaluate(&ids, &judged);
        assert_eq!((m.recall_100, m.map_100), (0.5, 0.5));
    }

    #[test]
    fn tie_break_is_docid_descending() {
        let mut run = vec![("a", 1.0), ("c", 1.0), ("b", 2.0)];
        trec_order(&mut run);
        let ids: Vec<&str> = run.iter().map(|r| r.0).collect();
        assert_eq!(ids, ["b", "c", "a"]);
    }
}
