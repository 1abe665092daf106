//! [`CancelToken`]: stop a search or a cascade that is running on another thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Result, SearchError};

/// A handle that stops a running [`ArticleIndex::search`](crate::ArticleIndex::search) or
/// [`Cascade`](crate::Cascade) run: give it to the run (in
/// [`SearchOptions::cancel`](crate::SearchOptions::cancel) or with
/// [`Cascade::cancel_on`](crate::Cascade::cancel_on)) and call [`CancelToken::cancel`] from
/// anywhere, or give it a deadline. Clones share one state.
///
/// The run checks it before the first stage, between stages and before every reranker call
/// (a cancellable stage calls its reranker [`StageOptions::budget_batch`] texts at a time, so
/// a long stage stops within one batch), and then fails with [`SearchError::Cancelled`]. A
/// reranker that holds the token can stop a call of its own early and return
/// [`RerankError::Cancelled`](crate::RerankError::Cancelled), which the run reports the same
/// way.
///
/// [`StageOptions::budget_batch`]: crate::StageOptions::budget_batch
///
/// ```
/// use tantivy_rerank_search::{CancelToken, SearchError};
/// let token = CancelToken::new();
/// let for_the_run = token.clone();
/// assert!(!for_the_run.is_cancelled());
/// token.cancel();
/// assert!(for_the_run.is_cancelled());
/// assert!(matches!(for_the_run.check(), Err(SearchError::Cancelled { .. })));
/// ```
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    cancelled: AtomicBool,
    deadline: Option<Instant>,
}

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// [`CancelToken::cancel`] was called.
    Cancelled,
    /// The token's deadline passed.
    DeadlinePassed,
}

impl std::fmt::Display for CancelReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CancelReason::Cancelled => "it was cancelled",
            CancelReason::DeadlinePassed => "its deadline passed",
        })
    }
}

impl CancelToken {
    /// A token that stops the run when [`CancelToken::cancel`] is called.
    pub fn new() -> Self {
        Self::default()
    }

    /// A token that also stops the run once `deadline` has passed.
    pub fn with_deadline(deadline: Instant) -> Self {
        CancelToken {
            inner: Arc::new(Inner {
                cancelled: AtomicBool::new(false),
                deadline: Some(deadline),
            }),
        }
    }

    /// Stop every run holding this token (or a clone of it) at its next check.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::Release);
    }

    /// The deadline, when the token has one.
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    /// Why a run holding the token must stop now, or `None` while it may go on.
    pub fn reason(&self) -> Option<CancelReason> {
        if self.inner.cancelled.load(Ordering::Acquire) {
            Some(CancelReason::Cancelled)
        } else if self.inner.deadline.is_some_and(|d| Instant::now() >= d) {
            Some(CancelReason::DeadlinePassed)
        } else {
            None
        }
    }

    /// Whether [`CancelToken::cancel`] was called or the deadline has passed.
    pub fn is_cancelled(&self) -> bool {
        self.reason().is_some()
    }

    /// `Err(SearchError::Cancelled)` when the run must stop.
    pub fn check(&self) -> Result<()> {
        match self.reason() {
            None => Ok(()),
            Some(reason) => Err(SearchError::Cancelled { reason }),
        }
    }
}

/// The tokens one run obeys: the cascade's own and the one of the search call.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stop<'t> {
    tokens: [Option<&'t CancelToken>; 2],
}

impl<'t> Stop<'t> {
    pub(crate) fn new(a: Option<&'t CancelToken>, b: Option<&'t CancelToken>) -> Self {
        Stop { tokens: [a, b] }
    }

    /// Whether any token is set (the run then checks between batches).
    pub(crate) fn is_set(&self) -> bool {
        self.tokens.iter().any(Option::is_some)
    }

    pub(crate) fn check(&self) -> Result<()> {
        self.tokens.iter().flatten().try_for_each(|t| t.check())
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.tokens.iter().flatten().any(|t| t.is_cancelled())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_token_stops_on_cancel_or_at_its_deadline() {
        let token = CancelToken::new();
        assert_eq!(token.reason(), None);
        let clone = token.clone();
        clone.cancel();
        assert_eq!(token.reason(), Some(CancelReason::Cancelled));

        let past = CancelToken::with_deadline(Instant::now() - Duration::from_millis(1));
        assert_eq!(past.reason(), Some(CancelReason::DeadlinePassed));
        let later = CancelToken::with_deadline(Instant::now() + Duration::from_secs(3600));
        assert!(later.check().is_ok());
        later.cancel();
        assert_eq!(later.reason(), Some(CancelReason::Cancelled));
    }

    #[test]
    fn a_stop_obeys_every_token_it_holds() {
        let (a, b) = (CancelToken::new(), CancelToken::new());
        assert!(!Stop::default().is_set());
        let stop = Stop::new(Some(&a), Some(&b));
        assert!(stop.is_set() && stop.check().is_ok());
        b.cancel();
        let err = stop.check().unwrap_err();
        assert!(err.to_string().contains("cancelled"), "{err}");
    }
}
