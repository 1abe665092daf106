//! Length-sorted batching with a count cap and a token budget, and OOM back-off.

use crate::error::Result;

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

/// Run `f` on `batch`; if it fails because the device ran out of memory, split the batch in
/// two and retry each half (recursively, down to single items). Results come back in the
/// order of `batch`; no item is dropped or reordered.
pub fn run_with_backoff<T, F>(batch: &[usize], f: &mut F) -> Result<Vec<T>>
where
    F: FnMut(&[usize]) -> Result<Vec<T>>,
{
    match f(batch) {
        Ok(out) => Ok(out),
        Err(e) if e.is_out_of_memory() && batch.len() > 1 => {
            let mid = batch.len() / 2;
            tracing::warn!(
                batch = batch.len(),
                "device out of memory; splitting the batch into {} + {} and retrying",
                mid,
                batch.len() - mid
            );
            let mut left = run_with_backoff(&batch[..mid], f)?;
            let right = run_with_backoff(&batch[mid..], f)?;
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
    fn backoff_splits_until_it_fits_and_keeps_order() {
        let items: Vec<usize> = (0..13).collect();
        let mut calls = Vec::new();
        let mut f = |b: &[usize]| -> Result<Vec<usize>> {
            calls.push(b.len());
            if b.len() > 3 {
                Err(EncoderError::Candle(candle_core::Error::Msg(
                    "CUDA_ERROR_OUT_OF_MEMORY: out of memory".into(),
                )))
            } else {
                Ok(b.iter().map(|x| x * 10).collect())
            }
        };
        let out = run_with_backoff(&items, &mut f).unwrap();
        assert_eq!(out, items.iter().map(|x| x * 10).collect::<Vec<_>>());
        assert_eq!(calls[0], 13);
        assert!(calls.iter().all(|&c| c <= 13));
    }

    #[test]
    fn backoff_does_not_hide_other_errors() {
        let mut f = |_: &[usize]| -> Result<Vec<u8>> {
            Err(EncoderError::Candle(candle_core::Error::Msg(
                "shape mismatch".into(),
            )))
        };
        assert!(run_with_backoff(&[1, 2, 3], &mut f).is_err());
        let mut oom_single = |_: &[usize]| -> Result<Vec<u8>> {
            Err(EncoderError::Candle(candle_core::Error::Msg(
                "out of memory".into(),
            )))
        };
        assert!(run_with_backoff(&[1], &mut oom_single).is_err());
    }
}
