//! `bench --serve-abuse`: the service (`tantivy-rerank serve`, a child process on a loopback
//! port) with well-behaved clients alone, then beside abusive ones, and what the abuse cost
//! the well-behaved: their latency percentiles, the server's memory, the CPU it still burns
//! after the abusers left, and whether SIGTERM ends it within its shutdown timeout.
//!
//! Linux only: the server's CPU time and memory are read from `/proc/<pid>`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

/// Well-behaved clients.
const POLITE_CLIENTS: usize = 8;

/// The kinds of abusive client, one client each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AbuseKind {
    /// `/search` with window 500, abandoned after 300 ms, over and over.
    AbandonedSearch,
    /// 64 connections sending their request head one byte a second.
    SlowHeaders,
    /// 300 KB queries to `/rerank` and `/search`.
    HugeQueries,
    /// 1.76 MB of documents to `/v2/rerank` with `max_chunks_per_doc` 10,000, abandoned
    /// after 2 s.
    HugeChunks,
}

/// Every kind.
pub const ALL_KINDS: [AbuseKind; 4] = [
    AbuseKind::AbandonedSearch,
    AbuseKind::SlowHeaders,
    AbuseKind::HugeQueries,
    AbuseKind::HugeChunks,
];
/// Connections the slow-header client keeps trickling.
const SLOWLORIS_CONNECTIONS: usize = 64;
/// The shutdown timeout the server is started with.
const SHUTDOWN_TIMEOUT_S: f64 = 5.0;
/// How long after the abusive clients left the server's CPU time is counted from, and for
/// how long.
const CPU_AFTER: Duration = Duration::from_secs(1);
const CPU_WINDOW: Duration = Duration::from_secs(5);

/// Latency of the well-behaved clients' requests in one phase.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Requests answered 200 with a score per text.
    pub requests: usize,
    /// Other answers and transport errors.
    pub errors: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// What the abusive clients did and got.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Abuse {
    /// `/search` requests (window 500) whose client hung up after 300 ms.
    pub abandoned_searches: usize,
    /// Slow-header connections opened, and how many the server closed.
    pub slow_header_connections: usize,
    pub slow_header_closed_by_server: usize,
    /// Answers to 300 KB queries (`/rerank` and `/search`), by status.
    pub huge_query_statuses: BTreeMap<String, usize>,
    /// Answers to `/v2/rerank` of 1.76 MB of documents with `max_chunks_per_doc` 10,000, by
    /// status (`abandoned`: the client hung up after 2 s).
    pub huge_chunks_statuses: BTreeMap<String, usize>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct AbuseReport {
    pub model: String,
    pub index: String,
    /// Seconds of each phase.
    pub seconds: f64,
    pub polite_clients: usize,
    /// One abusive client of each kind.
    pub abusive_clients: Vec<AbuseKind>,
    /// The well-behaved clients alone.
    pub unloaded: Latency,
    /// The same clients beside the abusive ones.
    pub under_abuse: Latency,
    /// `under_abuse.p99_ms / unloaded.p99_ms`; the criterion is at most 3.
    pub p99_ratio: f64,
    pub p99_within_3x: bool,
    pub abuse: Abuse,
    /// The server's resident memory after its warm-up, before the measured phases, MiB.
    pub server_rss_before_mib: f64,
    /// The server's peak resident memory (VmHWM), MiB.
    pub server_peak_rss_mib: f64,
    /// Its resident memory once the clients have left (after the CPU window), MiB.
    pub server_rss_after_mib: f64,
    /// CPU seconds the server used from 1 s to 6 s after every client left.
    pub server_cpu_s_after_abuse: f64,
    /// Seconds from SIGTERM (sent with an idle connection, a slow header and a search in
    /// flight) to the process's exit, and the shutdown timeout it was started with.
    pub sigterm_exit_s: f64,
    pub shutdown_timeout_s: f64,
    pub sigterm_within_timeout: bool,
}

/// The server process: killed if still running when dropped.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn start_server(model: &str, index: &Path) -> anyhow::Result<ServerProcess> {
    let exe = std::env::current_exe().context("finding this program to start the service")?;
    let mut child = Command::new(exe)
        .args(["serve", "--model", model, "--index"])
        .arg(index)
        .args(["--port", "0", "--shutdown-timeout"])
        .arg(SHUTDOWN_TIMEOUT_S.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting tantivy-rerank serve")?;
    let stderr = child.stderr.take().context("the service's stderr")?;
    let (tx, rx) = std::sync::mpsc::channel::<Result<SocketAddr, String>>();
    std::thread::spawn(move || {
        let mut tail = Vec::new();
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(rest) = line.split("ready on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    sent = tx
                        .send(addr.parse().map_err(|e| format!("{addr}: {e}")))
                        .is_ok();
                    continue;
                }
                tail.push(line);
            }
        }
        if !sent {
            let _ = tx.send(Err(tail.join("\n")));
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(300)) {
        Ok(Ok(addr)) => addr,
        Ok(Err(log)) => bail!("the service did not start:\n{log}"),
        Err(_) => {
            let _ = child.kill();
            bail!("the service did not start within 300 s")
        }
    };
    Ok(ServerProcess { child, addr })
}

/// CPU seconds (user + system) of process `pid`.
fn cpu_seconds(pid: u32, ticks_per_s: f64) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: count fields after it.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("an unexpected /proc stat line")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .context("a short /proc stat line")?
            .parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / ticks_per_s)
}

/// A `/proc/<pid>/status` value in kB, as MiB.
fn status_mib(pid: u32, key: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .with_context(|| format!("no {key} in /proc/{pid}/status"))?;
    Ok(kb / 1024.0)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let n = sorted.len();
    sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1]
}

/// The well-behaved clients: small `/rerank` requests, back to back, until `stop`.
fn polite(addr: SocketAddr, stop: &AtomicBool) -> Latency {
    let url = format!("http://{addr}/rerank");
    let texts: Vec<String> = (0..10)
        .map(|i| format!("Super Bowl {i} was played in a stadium and the home team won."))
        .collect();
    let body = serde_json::json!({"query": "which team won the super bowl", "texts": texts});
    let results: Vec<(Vec<f64>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..POLITE_CLIENTS)
            .map(|_| {
                let (url, body) = (&url, &body);
                s.spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(120))
                        .build();
                    let (mut latencies, mut errors) = (Vec::new(), 0);
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let ok = agent.post(url).send_json(body).ok().and_then(|r| {
                            r.into_json::<serde_json::Value>()
                                .ok()?
                                .as_array()
                                .map(Vec::len)
                        }) == Some(10);
                        if ok {
                            latencies.push(t.elapsed().as_secs_f64() * 1e3);
                        } else {
                            errors += 1;
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                    (latencies, errors)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let errors = results.iter().map(|r| r.1).sum();
    let mut all: Vec<f64> = results.into_iter().flat_map(|r| r.0).collect();
    all.sort_by(f64::total_cmp);
    Latency {
        requests: all.len(),
        errors,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
    }
}

/// Send a whole request on a new connection (not reading the answer).
fn send_request(addr: SocketAddr, path: &str, body: &[u8]) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(addr).ok()?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    Some(stream)
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
    }
}

/// The four abusive clients, until `stop`.
fn abusive(addr: SocketAddr, stop: &AtomicBool, kinds: &[AbuseKind]) -> Abuse {
    let on = |k: AbuseKind| kinds.contains(&k);
    let abuse = Mutex::new(Abuse::default());
    let count = |f: &dyn Fn(&mut Abuse)| {
        if let Ok(mut a) = abuse.lock() {
            f(&mut a);
        }
    };
    let words = |n: usize| -> String {
        (0..n)
            .map(|i| ["football", "river", "history", "university", "music"][i % 5])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let huge_query = words(60_000); // about 300 KB
    let status_of = |r: Result<ureq::Response, ureq::Error>| match r {
        Ok(r) => r.status().to_string(),
        Err(ureq::Error::Status(code, _)) => code.to_string(),
        Err(_) => "transport error".to_string(),
    };
    let slowloris_closed = AtomicUsize::new(0);
    std::thread::scope(|s| {
        // 1. Large searches abandoned after 300 ms.
        s.spawn(|| {
            if !on(AbuseKind::AbandonedSearch) {
                return;
            }
            let body = serde_json::json!({"query": "the history of the university football team", "window": 500})
                .to_string();
            while !stop.load(Ordering::Relaxed) {
                let stream = send_request(addr, "/search", body.as_bytes());
                sleep_unless(stop, Duration::from_millis(300));
                drop(stream);
                count(&|a| a.abandoned_searches += 1);
            }
        });
        // 2. Slow headers: one byte a second on each of many connections.
        s.spawn(|| {
            if !on(AbuseKind::SlowHeaders) {
                return;
            }
            let head = b"POST /rerank HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\nX-Padding: ";
            let mut conns: Vec<(TcpStream, usize)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                while conns.len() < SLOWLORIS_CONNECTIONS {
                    match TcpStream::connect(addr) {
                        Ok(c) => {
                            count(&|a| a.slow_header_connections += 1);
                            conns.push((c, 0));
                        }
                        Err(_) => break,
                    }
                }
                conns.retain_mut(|(c, sent)| {
                    let byte = head.get(*sent).copied().unwrap_or(b'x');
                    *sent += 1;
                    let alive = c.write_all(&[byte]).is_ok();
                    if !alive {
                        slowloris_closed.fetch_add(1, Ordering::Relaxed);
                    }
                    alive
                });
                sleep_unless(stop, Duration::from_secs(1));
            }
            // Those the server closed since the last round.
            for (c, _) in &conns {
                let mut byte = [0u8; 1];
                let closed = c.set_nonblocking(true).is_ok()
                    && match std::io::Read::read(&mut &*c, &mut byte) {
                        Ok(0) => true,
                        Ok(_) => false,
                        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                    };
                if closed {
                    slowloris_closed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        // 3. 300 KB queries.
        s.spawn(|| {
            if !on(AbuseKind::HugeQueries) {
                return;
            }
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(120))
                .build();
            let rerank = serde_json::json!({"query": huge_query, "texts": ["a", "b", "c"]});
            let search = serde_json::json!({"query": huge_query, "window": 100});
            let mut turn = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let (path, body) = match turn % 2 {
                    0 => ("rerank", &rerank),
                    _ => ("search", &search),
                };
                turn += 1;
                let status =
                    status_of(agent.post(&format!("http://{addr}/{path}")).send_json(body));
                count(&|a| {
                    *a.huge_query_statuses
                        .entry(format!("/{path} {status}"))
                        .or_default() += 1
                });
            }
        });
        // 4. Long documents with a huge max_chunks_per_doc, abandoned after 2 s.
        s.spawn(|| {
            if !on(AbuseKind::HugeChunks) {
                return;
            }
            // 20 documents of 88 KB: under the default payload limit of 2 MB.
            let docs: Vec<String> = (0..20).map(|_| words(11_000)).collect();
            let body = serde_json::json!({"query": "which university has a football team", "documents": docs,
                                          "max_chunks_per_doc": 10_000})
            .to_string();
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(2))
                .build();
            while !stop.load(Ordering::Relaxed) {
                let status = match agent
                    .post(&format!("http://{addr}/v2/rerank"))
                    .set("Content-Type", "application/json")
                    .send_string(&body)
                {
                    Ok(r) => r.status().to_string(),
                    Err(ureq::Error::Status(code, _)) => code.to_string(),
                    Err(_) => "abandoned".to_string(),
                };
                count(&|a| *a.huge_chunks_statuses.entry(status.clone()).or_default() += 1);
            }
        });
    });
    let mut abuse = abuse.into_inner().unwrap_or_default();
    abuse.slow_header_closed_by_server = slowloris_closed.into_inner();
    abuse
}

/// SIGTERM with an idle connection, a slow header and a search in flight: seconds to exit.
fn sigterm(server: &mut ServerProcess) -> anyhow::Result<f64> {
    let addr = server.addr;
    let idle = TcpStream::connect(addr).ok();
    let mut slow = TcpStream::connect(addr).ok();
    if let Some(s) = slow.as_mut() {
        let _ = s.write_all(b"POST /rerank HT");
    }
    let search = send_request(
        addr,
        "/search",
        serde_json::json!({"query": "university football history", "window": 500})
            .to_string()
            .as_bytes(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status()?;
    if !killed.success() {
        bail!("kill -TERM {pid} failed");
    }
    let started = Instant::now();
    let limit = Duration::from_secs_f64(SHUTDOWN_TIMEOUT_S + 30.0);
    loop {
        if server.child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop((idle, slow, search));
    Ok(started.elapsed().as_secs_f64())
}

pub fn run(
    model: &str,
    index: &Path,
    seconds: f64,
    kinds: &[AbuseKind],
) -> anyhow::Result<AbuseReport> {
    if kinds.is_empty() {
        bail!("no abusive client: give at least one kind");
    }
    if !Path::new("/proc/self/stat").exists() {
        bail!("--serve-abuse reads the server's CPU time and memory from /proc: Linux only");
    }
    if !(seconds.is_finite() && seconds > 0.0) {
        bail!("--abuse-seconds must be above 0");
    }
    let ticks = clock_ticks();
    let phase = Duration::from_secs_f64(seconds);
    let mut server = start_server(model, index)?;
    let addr = server.addr;
    let pid = server.child.id();
    eprintln!("serve-abuse: service pid {pid} on {addr}");
    // Warm-up, not measured.
    let warm = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| polite(addr, &warm));
        std::thread::sleep(Duration::from_secs(2));
        warm.store(true, Ordering::Relaxed);
    });
    let rss_before = status_mib(pid, "VmRSS:")?;
    eprintln!("serve-abuse: {POLITE_CLIENTS} well-behaved clients alone for {seconds} s");
    let stop = AtomicBool::new(false);
    let unloaded = std::thread::scope(|s| {
        let h = s.spawn(|| polite(addr, &stop));
        std::thread::sleep(phase);
        stop.store(true, Ordering::Relaxed);
        h.join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))
    })?;
    eprintln!(
        "serve-abuse: the same beside {} abusive clients for {seconds} s",
        kinds.len()
    );
    let stop = AtomicBool::new(false);
    let (under_abuse, abuse) = std::thread::scope(|s| {
        let p = s.spawn(|| polite(addr, &stop));
        let a = s.spawn(|| abusive(addr, &stop, kinds));
        std::thread::sleep(phase);
        stop.store(true, Ordering::Relaxed);
        match (p.join(), a.join()) {
            (Ok(p), Ok(a)) => Ok((p, a)),
            _ => Err(anyhow::anyhow!("a client thread panicked")),
        }
    })?;
    // Every client has left; what the server still burns is work nobody waits for.
    std::thread::sleep(CPU_AFTER);
    let cpu_from = cpu_seconds(pid, ticks)?;
    std::thread::sleep(CPU_WINDOW);
    let cpu_s_after = cpu_seconds(pid, ticks)? - cpu_from;
    let peak = status_mib(pid, "VmHWM:")?;
    let after = status_mib(pid, "VmRSS:")?;
    eprintln!("serve-abuse: SIGTERM with an idle connection, a slow header and a search in flight");
    let exit_s = sigterm(&mut server)?;
    let p99_ratio = under_abuse.p99_ms / unloaded.p99_ms;
    Ok(AbuseReport {
        model: model.to_string(),
        index: index.display().to_string(),
        seconds,
        polite_clients: POLITE_CLIENTS,
        abusive_clients: kinds.to_vec(),
        p99_within_3x: p99_ratio <= 3.0,
        p99_ratio,
        unloaded,
        under_abuse,
        abuse,
        server_rss_before_mib: rss_before,
        server_peak_rss_mib: peak,
        server_rss_after_mib: after,
        server_cpu_s_after_abuse: cpu_s_after,
        sigterm_exit_s: exit_s,
        shutdown_timeout_s: SHUTDOWN_TIMEOUT_S,
        // Half a second past the timeout to close the connections and exit.
        sigterm_within_timeout: exit_s <= SHUTDOWN_TIMEOUT_S + 0.5,
    })
}

/// The report as text.
pub fn table(r: &AbuseReport) -> String {
    let mut s = format!(
        "service under abuse: model {}, index {}, {} s a phase\n",
        r.model, r.index, r.seconds
    );
    s += &format!(
        "{:<44} {:>9} {:>7} {:>9} {:>9}\n",
        "well-behaved /rerank clients", "requests", "errors", "p50 ms", "p99 ms"
    );
    for (name, l) in [
        (format!("{} alone", r.polite_clients), &r.unloaded),
        (
            format!(
                "{} beside {} abusive",
                r.polite_clients,
                r.abusive_clients.len()
            ),
            &r.under_abuse,
        ),
    ] {
        s += &format!(
            "{name:<44} {:>9} {:>7} {:>9.1} {:>9.1}\n",
            l.requests, l.errors, l.p50_ms, l.p99_ms
        );
    }
    s += &format!(
        "p99 under abuse / alone: {:.2}x ({})\n",
        r.p99_ratio,
        if r.p99_within_3x {
            "within 3x"
        } else {
            "OVER 3x"
        }
    );
    let a = &r.abuse;
    s += &format!(
        "abuse: {} abandoned searches; {} slow-header connections, {} closed by the server; 300 KB queries {:?}; huge max_chunks_per_doc {:?}\n",
        a.abandoned_searches,
        a.slow_header_connections,
        a.slow_header_closed_by_server,
        a.huge_query_statuses,
        a.huge_chunks_statuses
    );
    s += &format!(
        "server: RSS {:.0} MiB before the load, {:.0} MiB at its peak, {:.0} MiB after the load; {:.2} CPU-s from {} s to {} s after the clients left\n",
        r.server_rss_before_mib,
        r.server_peak_rss_mib,
        r.server_rss_after_mib,
        r.server_cpu_s_after_abuse,
        CPU_AFTER.as_secs(),
        (CPU_AFTER + CPU_WINDOW).as_secs()
    );
    s += &format!(
        "SIGTERM: exited after {:.2} s (shutdown timeout {} s: {})\n",
        r.sigterm_exit_s,
        r.shutdown_timeout_s,
        if r.sigterm_within_timeout {
            "within"
        } else {
            "NOT within"
        }
    );
    s
}

/// The index folder, checked before the service starts.
pub fn check_index(index: Option<&PathBuf>) -> anyhow::Result<&Path> {
    let index = index
        .context("--serve-abuse needs --index DIR (an index built by `tantivy-rerank index`)")?;
    if !index.join("meta.json").is_file() {
        bail!("{} holds no index (no meta.json)", index.display());
    }
    Ok(index)
}
