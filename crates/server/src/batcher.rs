//! Batching across requests: every request's (query, document) pairs join one queue, and a
//! model thread takes them in arrival order, as many as fill one token budget, runs them as
//! one batch and answers each pair's waiter — the way text-embeddings-inference's queue
//! works. Many small concurrent requests thus fill whole batches, and a large request is
//! queued in chunks so that others' pairs join the batches in between.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use tantivy_rerank_encoders::{CrossEncoder, EncodedPair};
use tokio::sync::oneshot;

use crate::error::{ApiError, ErrorType};

/// The model's answer for one pair: its logits, or why the batch failed.
type Reply = Result<Vec<f32>, String>;

/// One pair waiting for the model.
struct Item {
    encoding: EncodedPair,
    reply: oneshot::Sender<Reply>,
}

/// The handle on the queue; clones share it.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Item>,
    chunk: usize,
}

/// Queue length gauge, batch size histograms and model time histogram.
pub(crate) const QUEUE_SIZE: &str = "tantivy_rerank_queue_size";
pub(crate) const BATCH_PAIRS: &str = "tantivy_rerank_batch_pairs";
pub(crate) const BATCH_TOKENS: &str = "tantivy_rerank_batch_tokens";
pub(crate) const INFERENCE_SECONDS: &str = "tantivy_rerank_inference_duration_seconds";

impl Batcher {
    /// Start the model thread. Each batch holds pairs of at most `max_batch_tokens` tokens
    /// together (a pair longer than that runs alone); a request's pairs enter the queue
    /// `chunk` at a time. The thread ends when every handle is dropped.
    pub fn start(model: Arc<CrossEncoder>, max_batch_tokens: usize, chunk: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Item>();
        let spawned = std::thread::Builder::new()
            .name("rerank-model".into())
            .spawn(move || worker(&model, &rx, max_batch_tokens.max(1)));
        if let Err(e) = spawned {
            // Without the thread every request fails with a Backend error (its reply is
            // dropped), which says so; the service stays up.
            tracing::error!(error = %e, "could not start the model thread");
        }
        Batcher {
            tx,
            chunk: chunk.max(1),
        }
    }

    /// Logits of `encodings`, in order, when the model has run them.
    pub async fn logits(&self, encodings: Vec<EncodedPair>) -> Result<Vec<Vec<f32>>, ApiError> {
        let mut out = Vec::with_capacity(encodings.len());
        let mut pending = std::collections::VecDeque::new();
        let mut items = encodings.into_iter().peekable();
        // Two chunks in flight: the model never waits for this request between its chunks,
        // and other requests' pairs are queued between them.
        while items.peek().is_some() || !pending.is_empty() {
            while pending.len() < 2 && items.peek().is_some() {
                let chunk: Vec<EncodedPair> = items.by_ref().take(self.chunk).collect();
                pending.push_back(self.submit(chunk)?);
            }
            if let Some(waiters) = pending.pop_front() {
                for w in waiters {
                    out.push(answer(w.await)?);
                }
            }
        }
        Ok(out)
    }

    /// [`Batcher::logits`] for a caller on a blocking thread (the search endpoint's reranker).
    pub fn logits_blocking(&self, encodings: Vec<EncodedPair>) -> Result<Vec<Vec<f32>>, ApiError> {
        let waiters = self.submit(encodings)?;
        waiters
            .into_iter()
            .map(|w| answer(w.blocking_recv()))
            .collect()
    }

    fn submit(
        &self,
        encodings: Vec<EncodedPair>,
    ) -> Result<Vec<oneshot::Receiver<Reply>>, ApiError> {
        let mut waiters = Vec::with_capacity(encodings.len());
        for encoding in encodings {
            let (reply, waiter) = oneshot::channel();
            self.tx
                .send(Item { encoding, reply })
                .map_err(|_| ApiError::new(ErrorType::Unhealthy, "the model thread has stopped"))?;
            metrics::gauge!(QUEUE_SIZE).increment(1.0);
            waiters.push(waiter);
        }
        Ok(waiters)
    }
}

fn answer(got: Result<Reply, oneshot::error::RecvError>) -> Result<Vec<f32>, ApiError> {
    match got {
        Ok(Ok(logits)) => Ok(logits),
        Ok(Err(message)) => Err(ApiError::new(ErrorType::Backend, message)),
        Err(_) => Err(ApiError::new(
            ErrorType::Backend,
            "the model thread dropped the request",
        )),
    }
}

/// The model thread: take the oldest pairs up to the token budget, run them, answer.
fn worker(model: &CrossEncoder, rx: &mpsc::Receiver<Item>, max_batch_tokens: usize) {
    let mut carried: Option<Item> = None;
    loop {
        let first = match carried.take() {
            Some(item) => item,
            None => match rx.recv() {
                Ok(item) => item,
                Err(_) => return, // every handle dropped: the service is gone
            },
        };
        let mut tokens = first.encoding.len();
        let mut batch = vec![first];
        while let Ok(item) = rx.try_recv() {
            if tokens + item.encoding.len() > max_batch_tokens {
                carried = Some(item);
                break;
            }
            tokens += item.encoding.len();
            batch.push(item);
        }
        metrics::gauge!(QUEUE_SIZE).decrement(batch.len() as f64);
        metrics::histogram!(BATCH_PAIRS).record(batch.len() as f64);
        metrics::histogram!(BATCH_TOKENS).record(tokens as f64);
        let (encodings, replies): (Vec<EncodedPair>, Vec<_>) =
            batch.into_iter().map(|i| (i.encoding, i.reply)).unzip();
        let started = Instant::now();
        let result = model.logits_of_encodings(&encodings);
        metrics::histogram!(INFERENCE_SECONDS).record(started.elapsed().as_secs_f64());
        match result {
            Ok((rows, _)) => {
                for (reply, row) in replies.into_iter().zip(rows) {
                    // A waiter that went away (client disconnected) needs no answer.
                    let _ = reply.send(Ok(row));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, pairs = encodings.len(), "model batch failed");
                let message = format!("model failed: {e}");
                for reply in replies {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
    }
}
