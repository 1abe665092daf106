//! [`InferenceQueue`]: one model, many concurrent callers (a service).
//!
//! Every caller's encoded pairs join one queue; a model thread forms each batch from the
//! requests in turn (deficit round robin by tokens: each turn gives every waiting request the
//! same number of tokens' credit, and a request adds its pairs while its credit covers them,
//! until the batch size or the model's token budget is reached), runs the batch through the same forward path as
//! [`CrossEncoder::predict`] (out-of-memory back-off included), and completes each request
//! with the head's predictions once all of its pairs have run. So a large request cannot
//! starve small ones: they share every batch with it, and a request of long pairs gets no
//! more of a batch's tokens than one of short pairs. A request whose [`Ticket`] is dropped,
//! or whose [`CancelToken`] is cancelled, leaves the queue: none of its pairs that have not
//! run yet are computed.
//!
//! A [`Ticket`] is a `Future` (for async callers) and can also be waited on from a thread.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::batching::run_with_backoff;
use crate::cancel::CancelToken;
use crate::cross_encoder::{CrossEncoder, Prediction};
use crate::error::{EncoderError, Result};
use crate::tokenizer::EncodedPair;

/// What happened in one batch, for metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchReport {
    /// Pairs in the batch.
    pub pairs: usize,
    /// Their tokens (unpadded).
    pub tokens: usize,
    /// Requests that had pairs in it.
    pub requests: usize,
    /// Pairs still waiting after the batch was formed.
    pub queued_pairs: usize,
    /// Forward time.
    pub seconds: f64,
}

/// Settings of an [`InferenceQueue`]; batch size and token budget are the model's own.
#[derive(Clone, Default)]
pub struct QueueOptions {
    /// Called after every batch (e.g. to record metrics).
    pub on_batch: Option<Arc<dyn Fn(BatchReport) + Send + Sync>>,
}

impl std::fmt::Debug for QueueOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueOptions")
            .field("on_batch", &self.on_batch.is_some())
            .finish()
    }
}

/// A model thread serving the pairs of many requests; clones share it. The thread ends when
/// the last clone is dropped (requests still queued then fail with
/// [`EncoderError::Cancelled`]).
///
/// ```no_run
/// use std::sync::Arc;
/// use tantivy_rerank_encoders::{CrossEncoder, CrossEncoderOptions, InferenceQueue, QueueOptions};
/// # fn main() -> Result<(), tantivy_rerank_encoders::EncoderError> {
/// let model = Arc::new(CrossEncoder::load("cross-encoder/ms-marco-MiniLM-L6-v2", CrossEncoderOptions::default())?);
/// let queue = InferenceQueue::start(model, QueueOptions::default())?;
/// // From many threads (or tasks: a Ticket is a Future) at once:
/// let ticket = queue.rerank("capital of France", &["Paris is the capital.", "Bananas."], None)?;
/// let predictions = ticket.wait()?;
/// assert_eq!(predictions.len(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct InferenceQueue {
    shared: Arc<Shared>,
    model: Arc<CrossEncoder>,
    _alive: Arc<Alive>,
}

impl std::fmt::Debug for InferenceQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceQueue")
            .field("model", &self.model)
            .finish()
    }
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic on the model thread cannot leave the state half-updated in a way that
        // matters more than refusing every later request would.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Tokens of credit a waiting request gets at each turn of batch forming: small next to a
/// model's input (so that a request of long pairs waits several turns for each) and large
/// enough that forming a batch takes few turns.
const TURN_CREDIT: usize = 64;

#[derive(Default)]
struct State {
    requests: VecDeque<Request>,
    next_id: u64,
    /// The request that goes first in the next batch (round robin).
    turn: usize,
    stopped: bool,
}

struct Request {
    id: u64,
    encodings: Arc<Vec<EncodedPair>>,
    /// Indices of `encodings`, longest first (less padding on devices that pad).
    order: Vec<usize>,
    /// Position in `order` of the next pair to run.
    next: usize,
    rows: Vec<Option<Vec<f32>>>,
    done: usize,
    completion: Arc<Completion>,
    caller: Option<CancelToken>,
    /// Tokens this request may still add before its next turn's credit (deficit round robin).
    credit: usize,
}

impl Request {
    fn cancelled(&self) -> bool {
        self.completion.dropped.is_cancelled()
            || self.caller.as_ref().is_some_and(CancelToken::is_cancelled)
    }
    fn has_pending(&self) -> bool {
        self.next < self.order.len()
    }
}

/// Where a request's result goes.
struct Completion {
    result: Mutex<Option<Result<Vec<Prediction>>>>,
    ready: Condvar,
    waker: Mutex<Option<Waker>>,
    /// Set when the ticket is dropped before its result was taken.
    dropped: CancelToken,
}

impl Completion {
    fn complete(&self, result: Result<Vec<Prediction>>) {
        if let Ok(mut slot) = self.result.lock() {
            if slot.is_none() {
                *slot = Some(result);
            }
        }
        self.ready.notify_all();
        if let Some(w) = self.waker.lock().ok().and_then(|mut w| w.take()) {
            w.wake();
        }
    }

    fn take(&self) -> Option<Result<Vec<Prediction>>> {
        self.result.lock().ok().and_then(|mut r| r.take())
    }
}

/// Stops the model thread when the last queue handle is dropped.
struct Alive {
    shared: Arc<Shared>,
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.work.notify_all();
    }
}

impl InferenceQueue {
    /// Start the model thread of `model`.
    pub fn start(model: Arc<CrossEncoder>, options: QueueOptions) -> Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
        });
        let (worker_shared, worker_model) = (shared.clone(), model.clone());
        std::thread::Builder::new()
            .name("rerank-model".into())
            .spawn(move || worker(&worker_shared, &worker_model, &options))
            .map_err(|e| EncoderError::InvalidOption {
                name: "inference queue".into(),
                value: "model thread".into(),
                reason: format!("cannot start the model thread: {e}"),
            })?;
        Ok(Self {
            _alive: Arc::new(Alive {
                shared: shared.clone(),
            }),
            shared,
            model,
        })
    }

    /// The model it serves.
    pub fn model(&self) -> &Arc<CrossEncoder> {
        &self.model
    }

    /// Tokenise `(query, document)` pairs on the calling thread and queue them.
    pub fn rerank<D: AsRef<str> + Sync>(
        &self,
        query: &str,
        documents: &[D],
        cancel: Option<CancelToken>,
    ) -> Result<Ticket> {
        let pairs: Vec<(&str, &str)> = documents.iter().map(|d| (query, d.as_ref())).collect();
        self.submit(self.model.encode(&pairs)?, cancel)
    }

    /// Queue encoded inputs (checked against the model first: a bad one is an
    /// [`EncoderError::InvalidInput`] naming its index, and nothing is queued). The ticket
    /// gives their predictions in input order. Cancelling `cancel`, or dropping the ticket,
    /// withdraws the pairs that have not run yet.
    pub fn submit(
        &self,
        encodings: Vec<EncodedPair>,
        cancel: Option<CancelToken>,
    ) -> Result<Ticket> {
        self.model.core().check_encodings(&encodings)?;
        let completion = Arc::new(Completion {
            result: Mutex::new(None),
            ready: Condvar::new(),
            waker: Mutex::new(None),
            dropped: CancelToken::new(),
        });
        let ticket = Ticket {
            completion: completion.clone(),
            shared: self.shared.clone(),
        };
        if encodings.is_empty() {
            completion.complete(Ok(Vec::new()));
            return Ok(ticket);
        }
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by(|&a, &b| encodings[b].len().cmp(&encodings[a].len()));
        let mut state = self.shared.lock();
        if state.stopped {
            return Err(EncoderError::Cancelled);
        }
        let id = state.next_id;
        state.next_id += 1;
        state.requests.push_back(Request {
            id,
            rows: vec![None; encodings.len()],
            encodings: Arc::new(encodings),
            order,
            next: 0,
            done: 0,
            completion,
            caller: cancel,
            credit: 0,
        });
        drop(state);
        self.shared.work.notify_all();
        Ok(ticket)
    }

    /// Pairs queued and not yet run.
    pub fn queued_pairs(&self) -> usize {
        self.shared.lock().queued_pairs()
    }
}

impl State {
    fn queued_pairs(&self) -> usize {
        self.requests.iter().map(|r| r.order.len() - r.next).sum()
    }

    /// Complete and remove cancelled requests (their waiting pairs are never run).
    fn retire_cancelled(&mut self) {
        self.requests.retain(|r| {
            if r.cancelled() {
                r.completion.complete(Err(EncoderError::Cancelled));
                false
            } else {
                true
            }
        });
    }

    /// The next batch: the requests' pairs in turns (each turn adds [`TURN_CREDIT`] tokens to
    /// every waiting request's credit, and a request adds its next pairs while its credit
    /// covers their tokens), until the batch size or the padded-token budget is reached. A
    /// request keeps unused credit for the next batch, and loses it once it has no pairs left.
    fn next_batch(&mut self, batch_size: usize, budget: Option<usize>) -> Vec<Item> {
        let n = self.requests.len();
        let mut picked: Vec<Item> = Vec::new();
        if n == 0 {
            return picked;
        }
        let start = self.turn % n;
        self.turn = self.turn.wrapping_add(1);
        let mut longest = 0usize;
        'fill: loop {
            let mut waiting = false;
            for k in 0..n {
                let r = &mut self.requests[(start + k) % n];
                if !r.has_pending() {
                    r.credit = 0;
                    continue;
                }
                waiting = true;
                r.credit = r.credit.saturating_add(TURN_CREDIT);
                while r.has_pending() {
                    let index = r.order[r.next];
                    let len = r.encodings[index].len().max(1);
                    if len > r.credit {
                        break;
                    }
                    let new_longest = longest.max(len);
                    let full = picked.len() >= batch_size.max(1)
                        || budget.is_some_and(|b| new_longest * (picked.len() + 1) > b);
                    if full && !picked.is_empty() {
                        break 'fill;
                    }
                    picked.push(Item {
                        request: r.id,
                        encodings: r.encodings.clone(),
                        index,
                    });
                    r.next += 1;
                    r.credit -= len;
                    longest = new_longest;
                }
            }
            if !waiting {
                break;
            }
        }
        picked
    }

    /// Store the rows of a batch; complete the requests that are whole.
    fn store(&mut self, model: &CrossEncoder, items: &[Item], rows: Vec<Vec<f32>>) {
        for (item, row) in items.iter().zip(rows) {
            if let Some(r) = self.requests.iter_mut().find(|r| r.id == item.request) {
                r.rows[item.index] = Some(row);
                r.done += 1;
            }
        }
        self.requests.retain_mut(|r| {
            if r.done < r.rows.len() {
                return true;
            }
            let rows: Vec<Vec<f32>> = r
                .rows
                .iter_mut()
                .map(|x| x.take().unwrap_or_default())
                .collect();
            r.completion.complete(model.predictions(rows));
            false
        });
    }

    /// Fail every request that had a pair in a failed batch.
    fn fail(&mut self, items: &[Item], error: &EncoderError) {
        let failed: Vec<u64> = items.iter().map(|i| i.request).collect();
        let message = error.to_string();
        self.requests.retain(|r| {
            if failed.contains(&r.id) {
                r.completion
                    .complete(Err(EncoderError::Candle(candle_core::Error::Msg(
                        message.clone(),
                    ))));
                false
            } else {
                true
            }
        });
    }
}

/// One pair of a batch.
struct Item {
    request: u64,
    encodings: Arc<Vec<EncodedPair>>,
    index: usize,
}

/// The model thread.
fn worker(shared: &Shared, model: &CrossEncoder, options: &QueueOptions) {
    loop {
        let (items, queued) = {
            let mut state = shared.lock();
            loop {
                state.retire_cancelled();
                if state.stopped {
                    for r in state.requests.drain(..) {
                        r.completion.complete(Err(EncoderError::Cancelled));
                    }
                    return;
                }
                if state.requests.iter().any(Request::has_pending) {
                    break;
                }
                // Woken by a new request, a dropped ticket or the last handle going away;
                // the timeout also notices cancellation through a caller's token.
                state = shared
                    .work
                    .wait_timeout(state, Duration::from_millis(100))
                    .map(|(s, _)| s)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            let items = state.next_batch(model.batch_size(), model.max_batch_tokens());
            (items, state.queued_pairs())
        };
        let lengths: Vec<usize> = items.iter().map(|i| i.encodings[i.index].len()).collect();
        let all: Vec<usize> = (0..items.len()).collect();
        let started = Instant::now();
        let core = model.core();
        let result = run_with_backoff(&all, &lengths, &core.budget, &mut |idx: &[usize]| {
            let refs: Vec<&EncodedPair> = idx
                .iter()
                .map(|&i| &items[i].encodings[items[i].index])
                .collect();
            core.forward(&refs)
        });
        let seconds = started.elapsed().as_secs_f64();
        if let Some(report) = &options.on_batch {
            let mut requests: Vec<u64> = items.iter().map(|i| i.request).collect();
            requests.dedup();
            report(BatchReport {
                pairs: items.len(),
                tokens: lengths.iter().sum(),
                requests: requests.len(),
                queued_pairs: queued,
                seconds,
            });
        }
        let mut state = shared.lock();
        match result {
            Ok(rows) => state.store(model, &items, rows),
            Err(e) => {
                tracing::error!(error = %e, pairs = items.len(), "model batch failed");
                state.fail(&items, &e);
            }
        }
    }
}

/// The result of a queued request: `await` it, or [`wait`](Ticket::wait) for it on a thread.
/// Dropping it withdraws the request's pairs that have not run yet.
pub struct Ticket {
    completion: Arc<Completion>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").finish_non_exhaustive()
    }
}

impl Ticket {
    /// Whether the result is there (waiting would not block).
    pub fn is_ready(&self) -> bool {
        self.completion
            .result
            .lock()
            .map(|r| r.is_some())
            .unwrap_or(true)
    }

    /// Block until the predictions are ready.
    pub fn wait(self) -> Result<Vec<Prediction>> {
        self.wait_unless(None)
    }

    /// Block until the predictions are ready, or until `cancel` is cancelled (then the
    /// request is withdrawn and the result is [`EncoderError::Cancelled`]).
    pub fn wait_unless(self, cancel: Option<&CancelToken>) -> Result<Vec<Prediction>> {
        self.wait_until(|| cancel.is_some_and(CancelToken::is_cancelled))
    }

    /// Block until the predictions are ready, or until `cancelled()` says the caller gave up
    /// (it is asked every 50 ms; then the request is withdrawn and the result is
    /// [`EncoderError::Cancelled`]).
    pub fn wait_until(self, cancelled: impl Fn() -> bool) -> Result<Vec<Prediction>> {
        let mut slot = self
            .completion
            .result
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(result) = slot.take() {
                return result;
            }
            if cancelled() {
                return Err(EncoderError::Cancelled);
            }
            slot = self
                .completion
                .ready
                .wait_timeout(slot, Duration::from_millis(50))
                .map(|(s, _)| s)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

impl Future for Ticket {
    type Output = Result<Vec<Prediction>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(result) = self.completion.take() {
            return Poll::Ready(result);
        }
        if let Ok(mut w) = self.completion.waker.lock() {
            *w = Some(cx.waker().clone());
        }
        // The result may have come between the first look and storing the waker.
        match self.completion.take() {
            Some(result) => Poll::Ready(result),
            None => Poll::Pending,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let finished = self
            .completion
            .result
            .lock()
            .map(|r| r.is_some())
            .unwrap_or(true);
        self.completion.dropped.cancel();
        if !finished {
            self.shared.work.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CrossEncoderOptions, DeviceSpec};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn model(batch_size: usize) -> Arc<CrossEncoder> {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert-3label");
        Arc::new(
            CrossEncoder::from_dir(
                dir,
                CrossEncoderOptions::default()
                    .device(DeviceSpec::Cpu)
                    .batch_size(batch_size),
            )
            .unwrap(),
        )
    }

    fn docs(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                format!(
                    "document {i} about paris and the capital of france {}",
                    "word ".repeat(i % 17)
                )
            })
            .collect()
    }

    /// Counts the pairs the model thread ran.
    fn counting() -> (QueueOptions, Arc<AtomicUsize>) {
        let ran = Arc::new(AtomicUsize::new(0));
        let seen = ran.clone();
        let on_batch: Arc<dyn Fn(BatchReport) + Send + Sync> = Arc::new(move |b: BatchReport| {
            seen.fetch_add(b.pairs, Ordering::SeqCst);
        });
        (
            QueueOptions {
                on_batch: Some(on_batch),
            },
            ran,
        )
    }

    #[test]
    fn queued_predictions_equal_direct_ones_in_input_order() {
        let model = model(4);
        let queue = InferenceQueue::start(model.clone(), QueueOptions::default()).unwrap();
        let docs = docs(37);
        let direct = model.rank("capital of france", &docs, None).unwrap();
        let queued = queue
            .rerank("capital of france", &docs, None)
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(queued.len(), docs.len());
        for r in direct {
            assert!((queued[r.index].score - r.score).abs() < 1e-6);
        }
        assert!(queue
            .rerank("q", &[] as &[&str], None)
            .unwrap()
            .wait()
            .unwrap()
            .is_empty());
        // A bad input is refused before anything is queued, naming its index.
        let mut bad = model.encode(&[("q", "d")]).unwrap();
        bad.push(crate::EncodedPair {
            ids: vec![],
            type_ids: vec![],
        });
        let err = queue.submit(bad, None).unwrap_err();
        assert_eq!(err.input_index(), Some(1));
        assert_eq!(queue.queued_pairs(), 0);
    }

    /// A small request queued behind a large one shares its batches: it is answered while the
    /// large one still has most of its pairs to run.
    #[test]
    fn a_small_request_is_not_starved_by_a_large_one() {
        let queue = InferenceQueue::start(model(4), QueueOptions::default()).unwrap();
        let large = queue.rerank("paris", &docs(2_000), None).unwrap();
        let small = queue.rerank("paris", &docs(3), None).unwrap();
        assert_eq!(small.wait().unwrap().len(), 3);
        assert!(
            !large.is_ready(),
            "the small request waited for the large one"
        );
        assert!(queue.queued_pairs() > 1_000, "{}", queue.queued_pairs());
        assert_eq!(large.wait().unwrap().len(), 2_000);
    }

    /// Batches are shared by tokens, not by pairs: a request of 512-token pairs gets about as
    /// many of a batch's tokens as one of 16-token pairs, and both make progress.
    #[test]
    fn a_request_of_long_pairs_gets_no_more_of_a_batch_than_one_of_short_pairs() {
        let request = |id: u64, pairs: usize, len: usize| {
            let encodings: Vec<EncodedPair> = (0..pairs)
                .map(|_| EncodedPair {
                    ids: vec![1; len],
                    type_ids: vec![0; len],
                })
                .collect();
            Request {
                id,
                rows: vec![None; pairs],
                encodings: Arc::new(encodings),
                order: (0..pairs).collect(),
                next: 0,
                done: 0,
                completion: Arc::new(Completion {
                    result: Mutex::new(None),
                    ready: Condvar::new(),
                    waker: Mutex::new(None),
                    dropped: CancelToken::new(),
                }),
                caller: None,
                credit: 0,
            }
        };
        let mut state = State::default();
        state.requests.push_back(request(0, 1_000, 512));
        state.requests.push_back(request(1, 1_000, 16));
        let (mut long_tokens, mut short_tokens) = (0usize, 0usize);
        for _ in 0..3 {
            for item in state.next_batch(64, None) {
                let len = item.encodings[item.index].len();
                match item.request {
                    0 => long_tokens += len,
                    _ => short_tokens += len,
                }
            }
        }
        assert!(long_tokens > 0 && short_tokens > 0);
        let ratio = long_tokens as f64 / short_tokens as f64;
        assert!(
            (0.5..2.0).contains(&ratio),
            "{long_tokens} vs {short_tokens}"
        );
        // One request alone still fills whole batches.
        let mut alone = State::default();
        alone.requests.push_back(request(0, 100, 512));
        assert_eq!(alone.next_batch(8, None).len(), 8);
    }

    /// Dropping a ticket, or cancelling its token, withdraws the pairs that have not run.
    #[test]
    fn cancelled_requests_leave_the_queue() {
        for by_token in [false, true] {
            let (options, ran) = counting();
            let queue = InferenceQueue::start(model(4), options).unwrap();
            let token = CancelToken::new();
            let ticket = queue
                .rerank("paris", &docs(4_000), Some(token.clone()))
                .unwrap();
            while ran.load(Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            if by_token {
                token.cancel();
                let err = ticket.wait_unless(Some(&token)).unwrap_err();
                assert!(matches!(err, EncoderError::Cancelled), "{err}");
            } else {
                drop(ticket);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while queue.queued_pairs() > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(queue.queued_pairs(), 0, "by token: {by_token}");
            // The batch running at the time finishes; nothing after it.
            std::thread::sleep(Duration::from_millis(50));
            let done = ran.load(Ordering::SeqCst);
            assert!(done < 4_000 / 2, "by token {by_token}: {done} pairs ran");
            // The queue still serves others.
            assert_eq!(
                queue
                    .rerank("q", &docs(5), None)
                    .unwrap()
                    .wait()
                    .unwrap()
                    .len(),
                5
            );
        }
    }

    /// A ticket is a future: awaiting it gives the predictions.
    #[test]
    fn tickets_can_be_awaited() {
        let queue = InferenceQueue::start(model(8), QueueOptions::default()).unwrap();
        let ticket = queue.rerank("q", &docs(10), None).unwrap();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut ticket = Box::pin(ticket);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Poll::Ready(r) = ticket.as_mut().poll(&mut cx) {
                assert_eq!(r.unwrap().len(), 10);
                break;
            }
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
