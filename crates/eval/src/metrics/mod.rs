//! Ranking metrics, in two flavours that give different numbers on purpose:
//!
//! - [`st`]: what sentence-transformers' `CrossEncoderRerankingEvaluator` computes (MRR@k of
//!   a reversed `np.argsort`, scikit-learn's tie-averaged `ndcg_score`, and
//!   `average_precision_score` over the whole scored list, binary relevance), so `rerank`
//!   numbers compare with model cards;
//! - [`trec`]: trec_eval / pytrec_eval definitions on graded qrels (`ndcg_cut`,
//!   `recip_rank`, `recall`, `map_cut`), with trec_eval's ordering of a run (score
//!   descending, ties by document id descending), so `pipeline` numbers compare with BEIR
//!   papers and any run file we write re-scores to the same value.

pub mod st;
pub mod trec;

/// Arithmetic mean (0 for an empty slice).
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}
