//! `bench --serve-clients N`: the rerank service on a loopback port, driven by concurrent
//! HTTP clients with the benchmark's own pairs, so the service's throughput compares with the
//! direct benchmark's in the same run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tantivy_rerank_encoders::CrossEncoder;
use tantivy_rerank_eval::bench::Workload;
use tantivy_rerank_server::{Server, ServerOptions};

/// The service benchmark of one workload.
#[derive(Debug, Clone, Serialize)]
pub struct ServeReport {
    /// The workload.
    pub workload: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Documents per request.
    pub docs_per_request: usize,
    /// Requests measured (after one warm-up request per client).
    pub requests: usize,
    /// Pairs scored in them.
    pub pairs: usize,
    /// Wall time of the measured requests, seconds.
    pub seconds: f64,
    /// Pairs per second through the service.
    pub pairs_per_s: f64,
    /// Median request latency, ms.
    pub latency_p50_ms: f64,
    /// 99th percentile request latency, ms.
    pub latency_p99_ms: f64,
    /// Requests answered with an error (or a wrong number of scores).
    pub errors: usize,
    /// `pairs_per_s` over the direct benchmark's median pairs/s.
    pub ratio_to_direct: f64,
}

/// Requests of `docs` documents from every query of `workload`, `runs` times over.
fn requests(workload: &Workload, runs: usize, docs: usize) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for _ in 0..runs {
        for q in &workload.queries {
            for chunk in q.passages.chunks(docs) {
                out.push(serde_json::json!({"query": q.query, "texts": chunk}));
            }
        }
    }
    out
}

pub fn run(
    model: Arc<CrossEncoder>,
    workload: &Workload,
    runs: usize,
    clients: usize,
    docs: usize,
    direct_pairs_per_s: f64,
) -> anyhow::Result<ServeReport> {
    let options = ServerOptions {
        model_id: "bench".into(),
        ..Default::default()
    };
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            addr_tx.send(listener.local_addr()?)?;
            Server::new(model, None, options)?
                .run(listener, async move {
                    let _ = stop_rx.await;
                })
                .await?;
            Ok(())
        })
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(60))
        .context("the service did not start")?;
    let url = format!("http://{addr}/rerank");
    let work = requests(workload, runs, docs);
    if work.is_empty() {
        bail!("workload {} has no pairs", workload.name);
    }
    let next = AtomicUsize::new(0);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(600))
        .max_idle_connections_per_host(clients)
        .build();
    let send = |body: &serde_json::Value| -> bool {
        let n = body["texts"].as_array().map_or(0, Vec::len);
        match agent.post(&url).send_json(body) {
            Ok(r) => {
                r.into_json::<serde_json::Value>()
                    .ok()
                    .and_then(|v| v.as_array().map(Vec::len))
                    == Some(n)
            }
            Err(_) => false,
        }
    };
    // Warm-up: one request per client, not measured.
    std::thread::scope(|s| {
        for c in 0..clients {
            let (send, work) = (&send, &work);
            s.spawn(move || send(&work[c % work.len()]));
        }
    });
    let started = Instant::now();
    let results: Vec<(Vec<f64>, usize, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let (send, work, next) = (&send, &work, &next);
                s.spawn(move || {
                    let (mut latencies, mut errors, mut pairs) = (Vec::new(), 0, 0);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(body) = work.get(i) else { break };
                        let t = Instant::now();
                        if send(body) {
                            pairs += body["texts"].as_array().map_or(0, Vec::len);
                        } else {
                            errors += 1;
                        }
                        latencies.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    (latencies, errors, pairs)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    match server.join() {
        Ok(r) => r?,
        Err(_) => bail!("the service thread panicked"),
    }
    let errors = results.iter().map(|r| r.1).sum();
    let pairs: usize = results.iter().map(|r| r.2).sum();
    let mut latencies: Vec<f64> = results.into_iter().flat_map(|r| r.0).collect();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let n = latencies.len();
        latencies[((q * n as f64).ceil() as usize).clamp(1, n) - 1]
    };
    let pairs_per_s = pairs as f64 / seconds;
    Ok(ServeReport {
        workload: workload.name.clone(),
        clients,
        docs_per_request: docs,
        requests: latencies.len(),
        pairs,
        seconds,
        pairs_per_s,
        latency_p50_ms: at(0.5),
        latency_p99_ms: at(0.99),
        errors,
        ratio_to_direct: pairs_per_s / direct_pairs_per_s,
    })
}
