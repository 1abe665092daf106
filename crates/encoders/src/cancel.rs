//! [`CancelToken`]: how a caller stops work it no longer needs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag shared by the caller that may give up on a piece of work and the code doing it;
/// clones share the flag. The model stops between batches once it is set (a forward pass in
/// progress runs to its end), and the [`InferenceQueue`](crate::InferenceQueue) drops the
/// pairs of a cancelled request that have not run yet.
///
/// ```
/// use tantivy_rerank_encoders::CancelToken;
/// let token = CancelToken::new();
/// let seen_by_worker = token.clone();
/// token.cancel();
/// assert!(seen_by_worker.is_cancelled());
/// ```
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask the work to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`cancel`](Self::cancel) was called on this token or a clone.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}
