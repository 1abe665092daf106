//! Length-sorted batching with a count cap and a token budget, and OOM back-off.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::Result;

/// The padded-token budget of a model's batches. It starts at the configured value and is
/// lowered when the device runs out of memory, so later calls plan batches that fit instead
/// of failing once per large batch before splitting it.
#[derive(Debug)]
pub struct TokenBudget {
    /// `usize::MAX` means no budget.
    limit: AtomicUsize,
}

impl TokenBudget {
    /// A budget of `max_batch_tokens` padded tokens per batch (`None`: unlimited).
    pub fn new(max_batch_tokens: Option<usize>) -> Self {
        TokenBudget {
            limit: AtomicUsize::new(max_batch_tokens.unwrap_or(usize::MAX)),
        }
    }

    /// The budget now.
    pub fn get(&self) -> Option<usize> {
        match self.limit.load(Ordering::Relaxed) {
            usize::MAX => None,
            n => Some(n),
        }
    }

    /// A batch of `padded_tokens` ran out of memory: plan later batches at half of it.
    fn shrink_below(&self, padded_tokens: usize) {
        let new = (padded_tokens / 2).max(1);
        let old = self.limit.fetch_min(new, Ordering::Relaxed);
        if new < old {
            tracing::warn!(
                max_batch_tokens = new,
                "device out of memory at {padded_tokens} padded tokens; later batches are planned within {new}"
            );
        }
    }
}

/// Split items into batches: longest first, each batch at most `batch_size` items and (when
/// `max_batch_tokens` is set) at most that many padded tokens (`items * longest`); a single
/// item longer than the budget still gets a batch of its own. Returns indices into `lengths`.
pub fn plan_batches(
    lengths: &[usize],
    batch_size: usize,
    max_batch_tokens: Option<usize>,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Stable sort: equal lengths keep input order, so results are deterministic.
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
    let batch_size = batch_size.max(1);
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0usize;
    for idx in order {
        let len = lengths[idx];
        let new_longest = longest.max(len);
        let over_count = current.len() >= batch_size;
        let over_tokens = max_batch_tokens
            .map(|budget| !current.is_empty() && new_longest * (current.len() + 1) > budget)
            .unwrap_or(false);
        if over_count || over_tokens {
            batches.push(std::mem::take(&mut current));
            longest = 0;
        }
        longest = longest.max(len);
        current.push(idx);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Run `f` on `batch` (indices into `lengths`); if it fails because the device ran out of
/// memory, lower `budget` below the batch's padded size, split the batch in two and retry
/// each half (recursively, down to single items). Results come back in the order of
/// `batch`; no item is dropped or reordered.
pub fn run_with_backoff<T, F>(
    batch: &[usize],
    lengths: &[usize],
    budget: &TokenBudget,
    f: &mut F,
) -> Result<Vec<T>>
where
    F: FnMut(&[usize]) -> Result<Vec<T>>,
{
    match f(batch) {
        Ok(out) => Ok(out),
        Err(e) if e.is_out_of_memory() && batch.len() > 1 => {
            let longest = batch.iter().map(|&i| lengths[i]).max().unwrap_or(0);
            budget.shrink_below(longest * batch.len());
            let mid = batch.len() / 2;
            tracing::warn!(
                batch = batch.len(),
                "device out of memory; splitting the batch into {} + {} and retrying",
                mid,
                batch.len() - mid
            );
            let mut left = run_with_backoff(&batch[..mid], lengths, budget, f)?;
            let right = run_with_backoff(&batch[mid..], lengths, budget, f)?;
            left.extend(right);
            Ok(left)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::EncoderError;

    #[test]
    fn batches_respect_count_and_budget() {
        let lengths = [10, 50, 20, 50, 5, 30];
        let b = plan_batches(&lengths, 2, None);
        assert_eq!(b, vec![vec![1, 3], vec![5, 2], vec![0, 4]]);
        // Budget 100 padded tokens: 50+50 fits, 30 alone... 30*2=60 with 20 fits.
        let b = plan_batches(&lengths, 32, Some(100));
        assert_eq!(b, vec![vec![1, 3], vec![5, 2, 0], vec![4]]);
        // An item above the budget still runs alone.
        let b = plan_batches(&[500, 10], 32, Some(100));
        assert_eq!(b, vec![vec![0], vec![1]]);
        assert!(plan_batches(&[], 4, None).is_empty());
        let all: usize = plan_batches(&lengths, 3, Some(70))
            .iter()
            .map(Vec::len)
            .sum();
        assert_eq!(all, lengths.len());
    }

    #[test]
    fn backoff_splits_until_it_fits_keeps_order_and_lowers_the_budget() {
        let items: Vec<usize> = (0..13).collect();
        let lengths = vec![10; 13];
        let budget = TokenBudget::new(Some(1000));
        let calls = std::cell::RefCell::new(Vec::new());
        // The device holds at most 30 padded tokens.
        let mut f = |b: &[usize]| -> Result<Vec<usize>> {
            calls.borrow_mut().push(b.len());
            if b.len() * 10 > 30 {
                Err(EncoderError::Candle(candle_core::Error::Msg(
                    "CUDA_ERROR_OUT_OF_MEMORY: out of memory".into(),
                )))
            } else {
                Ok(b.iter().map(|x| x * 10).collect())
            }
        };
        let out = run_with_backoff(&items, &lengths, &budget, &mut f).unwrap();
        assert_eq!(out, items.iter().map(|x| x * 10).collect::<Vec<_>>());
        assert_eq!(calls.borrow()[0], 13);
        assert!(calls.borrow().iter().all(|&c| c <= 13));
        // 130 failed, then 60 (halves of 6 and 7), then 40: half of the smallest failure.
        assert_eq!(budget.get(), Some(20));
        // Planned with the lowered budget, the next call fits at once.
        calls.borrow_mut().clear();
        for batch in plan_batches(&lengths, 32, budget.get()) {
            run_with_backoff(&batch, &lengths, &budget, &mut f).unwrap();
        }
        let calls = calls.into_inner();
        assert!(
            !calls.is_empty() && calls.iter().all(|&c| c * 10 <= 30),
            "{calls:?}"
        );
        assert_eq!(TokenBudget::new(None).get(), None);
    }

    #[test]
    fn backoff_does_not_hide_other_errors() {
        let mut f = |_: &[usize]| -> Result<Vec<u8>> {
            Err(EncoderError::Candle(candle_core::Error::Msg(
                "shape mismatch".into(),
            )))
        };
        let lengths = [4, 4, 4, 4];
        let budget = TokenBudget::new(Some(100));
        assert!(run_with_backoff(&[1, 2, 3], &lengths, &budget, &mut f).is_err());
        assert_eq!(
            budget.get(),
            Some(100),
            "only out-of-memory lowers the budget"
        );
        let mut oom_single = |_: &[usize]| -> Result<Vec<u8>> {
            Err(EncoderError::Candle(candle_core::Error::Msg(
                "out of memory".into(),
            )))
        };
        assert!(run_with_backoff(&[1], &lengths, &budget, &mut oom_single).is_err());
    }
}
