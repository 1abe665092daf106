//! sentence-transformers' reranking metrics (`CrossEncoderRerankingEvaluator.compute_metrics`),
//! reproduced exactly, including scikit-learn's handling of tied scores.

/// MRR@k as sentence-transformers computes it: order by `np.argsort(y_score)[::-1]` and take
/// 1/rank of the first relevant item among the first `k`.
///
/// Among tied scores numpy's default (SIMD, unstable) argsort leaves the order unspecified and
/// platform dependent, so Python's MRR with ties is not reproducible in general; here the item
/// with the larger index comes first, which is what a stable argsort followed by the reversal
/// gives. Model scores rarely tie; the base (BM25) order never does.
pub fn mrr_at_k(relevant: &[bool], scores: &[f64], k: usize) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(b.cmp(&a)));
    order
        .iter()
        .take(k)
        .position(|&i| relevant[i])
        .map(|r| 1.0 / (r + 1) as f64)
        .unwrap_or(0.0)
}

/// `sklearn.metrics.ndcg_score([gains], [scores], k=k)` for one sample: DCG with discount
/// `1 / log2(rank + 1)` up to rank `k`, where a group of tied scores gets the mean gain of the
/// group times the sum of the group's discounts (McSherry & Najork), divided by the DCG of the
/// gains sorted descending; 0 when that ideal DCG is 0.
pub fn ndcg_at_k(gains: &[f64], scores: &[f64], k: usize) -> f64 {
    let n = gains.len();
    let discount = |i: usize| {
        if i < k {
            1.0 / ((i + 2) as f64).log2()
        } else {
            0.0
        }
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut dcg = 0.0;
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        let mean_gain =
            order[start..end].iter().map(|&i| gains[i]).sum::<f64>() / (end - start) as f64;
        let discounts: f64 = (start..end).map(discount).sum();
        dcg += mean_gain * discounts;
        start = end;
    }
    let mut ideal: Vec<f64> = gains.to_vec();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let idcg: f64 = ideal.iter().enumerate().map(|(i, g)| g * discount(i)).sum();
    if idcg == 0.0 {
        0.0
    } else {
        dcg / idcg
    }
}

/// `sklearn.metrics.average_precision_score(relevant, scores)`: the step-wise area under the
/// precision-recall curve with one threshold per distinct score, `sum_n (R_n - R_{n-1}) P_n`
/// (tied items enter together). 0 when nothing is relevant (sklearn warns and is undefined
/// there; the evaluator never asks).
pub fn average_precision(relevant: &[bool], scores: &[f64]) -> f64 {
    let positives = relevant.iter().filter(|&&r| r).count();
    if positives == 0 {
        return 0.0;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut seen, mut ap) = (0usize, 0usize, 0.0);
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        let new_tp = order[start..end].iter().filter(|&&i| relevant[i]).count();
        tp += new_tp;
        seen += end - start;
        if new_tp > 0 {
            ap += (new_tp as f64 / positives as f64) * (tp as f64 / seen as f64);
        }
        start = end;
    }
    ap
}

/// MRR@k, NDCG@k and AP of one scored list (binary relevance), as
/// `CrossEncoderRerankingEvaluator.compute_metrics` returns them.
pub fn compute_metrics(relevant: &[bool], scores: &[f64], k: usize) -> (f64, f64, f64) {
    let gains: Vec<f64> = relevant
        .iter()
        .map(|&r| if r { 1.0 } else { 0.0 })
        .collect();
    (
        mrr_at_k(relevant, scores, k),
        ndcg_at_k(&gains, scores, k),
        average_precision(relevant, scores),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        // Ranking: b (relevant), a, c.
        let rel = [false, true, false];
        let s = [0.5, 0.9, 0.1];
        assert_eq!(mrr_at_k(&rel, &s, 10), 1.0);
        assert!((average_precision(&rel, &s) - 1.0).abs() < 1e-12);
        // Ranking: a, b (relevant), c.
        let s = [0.95, 0.9, 0.1];
        assert_eq!(mrr_at_k(&rel, &s, 10), 0.5);
        assert!((average_precision(&rel, &s) - 0.5).abs() < 1e-12);
        // All tied: NDCG = mean gain * sum of discounts / ideal.
        let rel = [true, false];
        let s = [1.0, 1.0];
        let d = 1.0 + 1.0 / 3f64.log2();
        assert!((ndcg_at_k(&[1.0, 0.0], &s, 10) - 0.5 * d).abs() < 1e-12);
        // Tie: the larger index ranks first.
        assert_eq!(mrr_at_k(&rel, &s, 10), 0.5);
        assert!((average_precision(&rel, &s) - 0.5).abs() < 1e-12);
    }
}
