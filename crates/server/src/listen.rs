//! The accept loop: HTTP/1.1 connections on hyper, each in its own task, with a connection
//! cap, a header read timeout, an idle keep-alive timeout, and a shutdown that ends within
//! its timeout whatever the clients do.
//!
//! Each connection is watched by its task: a client that has not sent a whole request head
//! within the header timeout (counted from the connection's start, or from the first byte of
//! a later request) is disconnected, as is one that moves no byte in either direction for the
//! idle timeout while none of its requests is being handled. At the connection cap, the
//! connection idle the longest is closed to make room; when none is idle, new connections
//! wait in the listen backlog until one ends. On shutdown the listener closes, connections
//! with no request in flight close at once, the others finish their request (keep-alive off)
//! until the shutdown timeout, and then every task left is dropped: its requests' futures are
//! dropped with it, which cancels their work.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Open connections (gauge) and connections closed by the service, by reason.
pub(crate) const CONNECTIONS: &str = "tantivy_rerank_connections";
pub(crate) const CONNECTIONS_CLOSED: &str = "tantivy_rerank_connections_closed_total";

/// The connection settings of [`serve`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) shutdown_timeout: Duration,
}

/// Why the service closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// The client or hyper ended it (the normal case; not counted as a closing reason).
    Ended,
    HeaderTimeout,
    IdleTimeout,
    /// Closed to make room for a new connection at the cap.
    Evicted,
    /// Closed at shutdown with no request in flight.
    Shutdown,
}

impl Closed {
    fn label(self) -> Option<&'static str> {
        match self {
            Closed::Ended => None,
            Closed::HeaderTimeout => Some("header_timeout"),
            Closed::IdleTimeout => Some("idle_timeout"),
            Closed::Evicted => Some("evicted"),
            Closed::Shutdown => Some("shutdown"),
        }
    }
}

/// What a connection's task needs to know of its connection, updated by its I/O and its
/// requests.
#[derive(Debug)]
struct Activity {
    base: Instant,
    /// Nanoseconds after `base` of the last byte read or written.
    last_io: AtomicU64,
    /// Nanoseconds after `base`, plus one, when the request head being read began; 0 when no
    /// head is being read.
    head_started: AtomicU64,
    /// Requests of the connection being handled.
    running: AtomicUsize,
    /// Wakes the task when the state above changes in a way that moves a deadline.
    changed: Notify,
    /// Asks the task to close the connection if it is idle.
    evict: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            base: Instant::now(),
            last_io: AtomicU64::new(0),
            // A new connection is reading its first request head from the start.
            head_started: AtomicU64::new(1),
            running: AtomicUsize::new(0),
            changed: Notify::new(),
            evict: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn at(&self, nanos: u64) -> Instant {
        self.base + Duration::from_nanos(nanos)
    }

    fn read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        // Bytes with no request being handled start the next request's head.
        if self.running.load(Ordering::Acquire) == 0
            && self
                .head_started
                .compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    /// A request's head was read and its handling begins.
    fn enter(self: &Arc<Self>) -> RequestGuard {
        self.running.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
        self.changed.notify_one();
        RequestGuard(self.clone())
    }

    fn is_idle(&self) -> bool {
        self.running.load(Ordering::Acquire) == 0 && self.head_started.load(Ordering::Acquire) == 0
    }

    /// When the connection is due to be closed, and why, unless something happens first;
    /// `None` while a request is being handled (its own timeout applies).
    fn deadline(&self, limits: &Limits) -> Option<(Instant, Closed)> {
        if self.running.load(Ordering::Acquire) > 0 {
            return None;
        }
        match self.head_started.load(Ordering::Acquire) {
            0 => Some((
                self.at(self.last_io.load(Ordering::Relaxed)) + limits.idle_timeout,
                Closed::IdleTimeout,
            )),
            started => Some((
                self.at(started - 1) + limits.header_read_timeout,
                Closed::HeaderTimeout,
            )),
        }
    }
}

/// Held while a request is handled (by the future hyper polls, so a dropped request counts
/// as ended too).
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_io.store(a.now(), Ordering::Relaxed);
        a.running.fetch_sub(1, Ordering::AcqRel);
        a.changed.notify_one();
    }
}

/// A TCP stream that reports its reads and writes to its connection's [`Activity`].
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The open connections, for closing an idle one at the cap.
#[derive(Default)]
struct Registry {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
}

impl Registry {
    fn insert(&self, activity: Arc<Activity>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut open) = self.open.lock() {
            open.insert(id, activity);
        }
        id
    }

    fn remove(&self, id: u64) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&id);
        }
    }

    /// Ask the connection idle the longest to close; false when none is idle.
    fn evict_idlest(&self) -> bool {
        let Ok(open) = self.open.lock() else {
            return false;
        };
        let idlest = open
            .values()
            .filter(|a| a.is_idle())
            .min_by_key(|a| a.at(a.last_io.load(Ordering::Relaxed)));
        match idlest {
            Some(a) => {
                a.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A connection slot: at once, or after closing an idle connection, or when one ends.
async fn slot(slots: &Arc<Semaphore>, registry: &Registry) -> OwnedSemaphorePermit {
    loop {
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return permit;
        }
        registry.evict_idlest();
        // A connection that turns idle meanwhile is asked on the next round.
        tokio::select! {
            permit = slots.clone().acquire_owned() => {
                if let Ok(permit) = permit {
                    return permit;
                }
            }
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// Accept errors that concern one connection only (it was reset before we took it).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serve `router` on `listener` until `shutdown` resolves, then shut down within
/// `limits.shutdown_timeout`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let registry = Arc::new(Registry::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = slot(&slots, &registry) => permit,
        };
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        // Reap the tasks of connections that ended.
        while tasks.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors (EMFILE) or memory: wait for connections to end
                // instead of spinning on the error.
                tracing::warn!(error = %e, "accepting a connection failed; retrying shortly");
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        tasks.spawn(connection(
            stream,
            router.clone(),
            limits,
            registry.clone(),
            permit,
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = tasks.len();
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = tasks.len(),
            of = open,
            timeout_s = limits.shutdown_timeout.as_secs_f64(),
            "shutdown timeout: closing the connections whose requests are still running"
        );
        // Dropping a connection's task drops its requests' futures, which cancels their work.
        tasks.shutdown().await;
    }
    Ok(())
}

/// One connection, until it ends or is closed.
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: Limits,
    registry: Arc<Registry>,
    _slot: OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
) {
    metrics::gauge!(CONNECTIONS).increment(1.0);
    let activity = Arc::new(Activity::new());
    let id = registry.insert(activity.clone());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let guard = activity.enter();
            let router = router.clone();
            async move {
                let _guard = guard;
                router.oneshot(request.map(Body::new)).await
            }
        })
    };
    let io = TokioIo::new(Tracked {
        stream,
        activity: activity.clone(),
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The header and idle timeouts are this task's (hyper's own header timeout also counts
    // the wait for a next request on a keep-alive connection, and needs a timer).
    builder.header_read_timeout(None).keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping && activity.running.load(Ordering::Acquire) == 0 {
        conn.as_mut().graceful_shutdown();
    }
    let closed = loop {
        let deadline = activity.deadline(&limits);
        let due = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break Closed::Ended;
            }
            () = due => {
                // Re-read: the state may have changed just as the deadline came.
                if let Some((at, why)) = activity.deadline(&limits) {
                    if Instant::now() >= at {
                        break why;
                    }
                }
            }
            () = activity.changed.notified() => {}
            () = activity.evict.notified() => {
                if activity.is_idle() {
                    break Closed::Evicted;
                }
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_err() || activity.running.load(Ordering::Acquire) == 0 {
                    break Closed::Shutdown;
                }
                // Finish the request in flight, then close.
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    registry.remove(id);
    metrics::gauge!(CONNECTIONS).decrement(1.0);
    if let Some(reason) = closed.label() {
        tracing::debug!(reason, "closing a connection");
        metrics::counter!(CONNECTIONS_CLOSED, "reason" => reason).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4,
            shutdown_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_connection_is_due_by_its_state() {
        let a = Arc::new(Activity::new());
        // New: reading its first head.
        let (at, why) = a.deadline(&limits()).unwrap();
        assert_eq!(why, Closed::HeaderTimeout);
        assert!(at <= a.base + Duration::from_secs(10));
        assert!(!a.is_idle());
        // Handling a request: no deadline of ours.
        let guard = a.enter();
        assert!(a.deadline(&limits()).is_none());
        // Bytes while a request runs (its body, a pipelined head) start no head.
        a.read();
        drop(guard);
        assert!(a.is_idle());
        assert_eq!(a.deadline(&limits()).unwrap().1, Closed::IdleTimeout);
        // The first byte of the next request starts its head's clock.
        a.read();
        assert_eq!(a.deadline(&limits()).unwrap().1, Closed::HeaderTimeout);
    }

    #[test]
    fn the_idlest_connection_is_the_one_asked_to_close() {
        let registry = Registry::default();
        let busy = Arc::new(Activity::new());
        let _running = busy.enter();
        registry.insert(busy.clone());
        assert!(
            !registry.evict_idlest(),
            "a connection handling a request is never idle"
        );
        let idle = Arc::new(Activity::new());
        drop(idle.enter());
        registry.insert(idle.clone());
        assert!(registry.evict_idlest());
        // The permit is stored: the connection's task sees it when it next waits.
        let notified = idle.evict.notified();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        tokio::pin!(notified);
        assert!(notified.as_mut().poll(&mut cx).is_ready());
    }
}
