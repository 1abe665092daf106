//! Memory back to the system when the service goes idle.
//!
//! The `tantivy-rerank` binary tells glibc to keep freed buffers for reuse (see the encoders'
//! `memory::reuse_large_buffers`): fast under load, but a large request then leaves the
//! process at its peak size for good. Once no request has been in flight for a moment, the
//! free memory of every heap is handed back with `malloc_trim`, and again later while the
//! service stays idle (work a request left behind, such as pairs still queued for the model,
//! frees its memory after the request has ended).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// How long after the last request ends free memory is handed back, each time the service is
/// still idle then.
const SETTLE: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
];

/// Times free memory was handed back (counter).
pub(crate) const TRIMS: &str = "tantivy_rerank_memory_trims_total";

/// Requests in flight, and a wake-up for the trimming task when they drop to none.
#[derive(Default)]
pub(crate) struct Idle {
    in_flight: AtomicUsize,
    became_idle: Notify,
}

/// Held while a request is in flight.
pub(crate) struct Busy(Arc<Idle>);

impl Idle {
    pub(crate) fn enter(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Hand free memory back at each of [`SETTLE`] after the last request ended, while the
    /// service stays idle; runs until the runtime stops.
    pub(crate) async fn trim_when_idle(self: Arc<Self>) {
        loop {
            self.became_idle.notified().await;
            let idle_since = tokio::time::Instant::now();
            for after in SETTLE {
                tokio::time::sleep_until(idle_since + after).await;
                if !self.is_idle() {
                    // Busy again: the next time it goes idle starts the schedule anew.
                    break;
                }
                let trimmed = tokio::task::spawn_blocking(release_free_memory).await;
                if matches!(trimmed, Ok(true)) {
                    metrics::counter!(TRIMS).increment(1);
                }
            }
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.became_idle.notify_one();
        }
    }
}

/// Return the free memory of every malloc heap to the system; whether it was done (glibc
/// only).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() -> bool {
    // SAFETY: malloc_trim takes no pointers; it walks glibc's own heaps under their locks.
    unsafe { libc::malloc_trim(0) };
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_request_out_wakes_the_trimming_task() {
        use std::future::Future;
        let idle = Arc::new(Idle::default());
        let first = idle.enter();
        let second = idle.enter();
        drop(first);
        assert!(!idle.is_idle());
        drop(second);
        assert!(idle.is_idle());
        // The last request out leaves a wake-up for the trimming task.
        let notified = idle.became_idle.notified();
        tokio::pin!(notified);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(notified.as_mut().poll(&mut cx).is_ready());
    }
}
