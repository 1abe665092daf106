//! Model files from a local directory or the Hugging Face Hub.
//!
//! The Hub cache is the one the Python libraries use (`$HF_HUB_CACHE`, else `$HF_HOME/hub`,
//! else `~/.cache/huggingface/hub`), so a model downloaded by transformers is found here
//! without network. With `HF_HUB_OFFLINE=1` only the cache is consulted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hf_hub::api::sync::{Api, ApiBuilder};
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{EncoderError, Result};

/// How long a Hub request may go without an answer: `metadata` for a repo listing or a file's
/// metadata (`HF_HUB_ETAG_TIMEOUT`, default 10 s), `download` for a download that receives
/// nothing (`HF_HUB_DOWNLOAD_TIMEOUT`, default 10 s) — the variables `huggingface_hub` reads.
/// A request past its timeout fails with an error naming the URL; its connection is
/// abandoned (the thread that waits on it ends with the process).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HubTimeouts {
    /// Listing and metadata requests.
    pub metadata: Duration,
    /// Silence while a file downloads.
    pub download: Duration,
}

impl HubTimeouts {
    /// From `HF_HUB_ETAG_TIMEOUT` and `HF_HUB_DOWNLOAD_TIMEOUT` (seconds), else 10 s each. A
    /// value that is not a positive number of seconds is an error naming the variable.
    pub fn from_env() -> Result<Self> {
        let read = |key: &str| -> Result<Duration> {
            match non_empty_env(key) {
                None => Ok(Duration::from_secs(10)),
                Some(v) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| EncoderError::InvalidOption {
                        name: key.into(),
                        value: v.clone(),
                        reason: "must be a number of seconds above 0".into(),
                    }),
            }
        };
        Ok(HubTimeouts {
            metadata: read("HF_HUB_ETAG_TIMEOUT")?,
            download: read("HF_HUB_DOWNLOAD_TIMEOUT")?,
        })
    }
}

/// Where and how to reach the Hub.
#[derive(Debug, Clone)]
struct HubSettings {
    endpoint: String,
    cache: PathBuf,
    token: Option<String>,
    timeouts: HubTimeouts,
}

impl HubSettings {
    fn from_env() -> Result<Self> {
        Ok(HubSettings {
            endpoint: non_empty_env("HF_ENDPOINT")
                .unwrap_or_else(|| "https://huggingface.co".into())
                .trim_end_matches('/')
                .to_string(),
            cache: hub_cache_dir(),
            token: non_empty_env("HF_TOKEN"),
            timeouts: HubTimeouts::from_env()?,
        })
    }
}

/// When a request last showed life, in milliseconds from its start, and whether it is
/// downloading (then the download timeout applies).
#[derive(Default)]
struct Liveness {
    last_ms: AtomicU64,
    downloading: std::sync::atomic::AtomicBool,
}

/// Run `job` on its own thread and wait for it, as long as it shows life often enough: a
/// request that stays silent past its timeout is an error naming `url`.
fn with_timeouts<T: Send + 'static>(
    repo: &str,
    url: &str,
    timeouts: HubTimeouts,
    job: impl FnOnce(Arc<Liveness>, Instant) -> std::result::Result<T, String> + Send + 'static,
) -> Result<T> {
    let live = Arc::new(Liveness::default());
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let job_live = live.clone();
    std::thread::Builder::new()
        .name("hub-request".into())
        .spawn(move || {
            let _ = tx.send(job(job_live, started));
        })
        .map_err(|e| hub_err(repo, url, format!("cannot start a request thread: {e}")))?;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(result) => return result.map_err(|e| hub_err(repo, url, e)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(hub_err(
                    repo,
                    url,
                    "the request thread ended without an answer",
                ))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        let (limit, variable) = if live.downloading.load(Ordering::Relaxed) {
            (timeouts.download, "HF_HUB_DOWNLOAD_TIMEOUT")
        } else {
            (timeouts.metadata, "HF_HUB_ETAG_TIMEOUT")
        };
        let last = Duration::from_millis(live.last_ms.load(Ordering::Relaxed));
        if started.elapsed().saturating_sub(last) > limit {
            return Err(EncoderError::Hub {
                repo: repo.into(),
                message: format!(
                    "{url}: no answer for {:.1} s; the request is abandoned (set {variable} to \
                     wait longer, or HF_HUB_OFFLINE=1 to use the cache only)",
                    limit.as_secs_f64()
                ),
            });
        }
    }
}

/// A download progress that shows a bar on a terminal and tells the watchdog it is alive.
struct LiveProgress {
    live: Arc<Liveness>,
    started: Instant,
    bar: Option<indicatif::ProgressBar>,
}

impl LiveProgress {
    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.live.last_ms.store(ms, Ordering::Relaxed);
    }
}

impl hf_hub::api::Progress for LiveProgress {
    fn init(&mut self, size: usize, filename: &str) {
        self.live.downloading.store(true, Ordering::Relaxed);
        self.touch();
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let bar = indicatif::ProgressBar::new(size as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} {bar:30} {bytes}/{total_bytes} [{elapsed_precise} < {eta_precise}] {bytes_per_sec}",
            ) {
                bar.set_style(style);
            }
            bar.set_message(format!("downloading {filename}"));
            self.bar = Some(bar);
        }
    }

    fn update(&mut self, size: usize) {
        self.touch();
        if let Some(bar) = &self.bar {
            bar.inc(size as u64);
        }
    }

    fn finish(&mut self) {
        self.touch();
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// `name` of `repo`, from the cache when it is there, else downloaded within the timeouts.
fn get_file(
    settings: &HubSettings,
    api: &Api,
    repo: &Repo,
    repo_id: &str,
    name: &str,
) -> Result<PathBuf> {
    if let Some(path) = Cache::new(settings.cache.clone())
        .repo(repo.clone())
        .get(name)
    {
        return Ok(path);
    }
    let url = api.repo(repo.clone()).url(name);
    let (api, repo, file) = (api.clone(), repo.clone(), name.to_string());
    with_timeouts(repo_id, &url, settings.timeouts, move |live, started| {
        let progress = LiveProgress {
            live,
            started,
            bar: None,
        };
        api.repo(repo)
            .download_with_progress(&file, progress)
            .map_err(|e| e.to_string())
    })
}

/// The Hub cache directory, resolved like `huggingface_hub` does.
pub fn hub_cache_dir() -> PathBuf {
    if let Some(p) = non_empty_env("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(home) = non_empty_env("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    let home = non_empty_env("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("huggingface").join("hub")
}

/// True when `HF_HUB_OFFLINE` asks for cache-only operation.
pub fn hub_offline() -> bool {
    non_empty_env("HF_HUB_OFFLINE")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

fn non_empty_env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// Files an encoder directory may contain besides the weights and tokenizer.
const OPTIONAL_FILES: &[&str] = &[
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
    "modules.json",
    "1_Pooling/config.json",
    // Causal rerankers: the prompt template (transformers 5 writes it on its own) and the
    // true/false tokens of sentence-transformers' LogitScore module.
    "chat_template.jinja",
    "1_LogitScore/config.json",
];

/// A file selection rule for [`fetch_repo`].
pub enum Wanted<'a> {
    /// This exact file must exist.
    Required(&'a str),
    /// The first of these that the repo has must exist.
    FirstOf(&'a [&'a str]),
    /// Taken if present.
    Optional(&'a str),
}

/// Make the model `repo_id` (at `revision`, default `main`) available locally and return the
/// snapshot directory that holds its files.
pub fn model_dir_from_hub(repo_id: &str, revision: Option<&str>) -> Result<PathBuf> {
    let revision = revision.unwrap_or("main");
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string());
    let cache = Cache::new(hub_cache_dir());
    let cached = cache.repo(repo.clone());
    // Fast path: everything needed is already in the cache (no network at all).
    let mut cached_dir = None;
    if let Some(config) = cached.get("config.json") {
        let dir = config.parent().map(Path::to_path_buf).unwrap_or_default();
        let has_weights = [
            "model.safetensors",
            "model.safetensors.index.json",
            "pytorch_model.bin",
        ]
        .iter()
        .any(|f| cached.get(f).is_some());
        let has_tokenizer = ["tokenizer.json", "vocab.txt"]
            .iter()
            .any(|f| cached.get(f).is_some());
        let shards = cached
            .get("model.safetensors.index.json")
            .is_none_or(|index| shards_present(&index));
        if has_weights && has_tokenizer && shards {
            // The optional files (sentence-transformers settings, pooling) change scores, so
            // the cache is only enough once each is there or known to be absent from the repo.
            if hub_offline() || optional_files_settled(&dir) {
                return Ok(dir);
            }
            cached_dir = Some(dir);
        }
    }
    if hub_offline() {
        return Err(EncoderError::Hub {
            repo: format!("{repo_id}@{revision}"),
            message: format!(
                "HF_HUB_OFFLINE is set and the model is not complete in the cache {}",
                hub_cache_dir().display()
            ),
        });
    }
    let settings = HubSettings::from_env()?;
    let fetched = fetch_repo_with(
        &settings,
        repo_id,
        RepoType::Model,
        revision,
        &[
            Wanted::Required("config.json"),
            Wanted::FirstOf(&[
                "model.safetensors",
                "model.safetensors.index.json",
                "pytorch_model.bin",
            ]),
            Wanted::FirstOf(&["tokenizer.json", "vocab.txt"]),
        ]
        .into_iter()
        .chain(OPTIONAL_FILES.iter().map(|f| Wanted::Optional(f)))
        .collect::<Vec<_>>(),
    );
    let files = match (fetched, cached_dir) {
        (Ok(files), _) => files,
        (Err(e), Some(dir)) => {
            tracing::warn!(repo = %repo_id, error = %e, "cannot reach the Hub to check for optional files; using the cached model as it is");
            return Ok(dir);
        }
        (Err(e), None) => return Err(e),
    };
    let config = files
        .iter()
        .find(|p| p.ends_with("config.json"))
        .cloned()
        .ok_or_else(|| EncoderError::Hub {
            repo: repo_id.into(),
            message: "config.json was not downloaded".into(),
        })?;
    let dir = config.parent().map(Path::to_path_buf).unwrap_or_default();
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let repo = Repo::with_revision(repo_id.into(), RepoType::Model, revision.into());
        let api = build_api(&settings)?;
        for shard in shard_names(&index)? {
            get_file(&settings, &api, &repo, repo_id, &shard)?;
        }
    }
    mark_absent_optional_files(&dir);
    Ok(dir)
}

/// `<repo>/.no_exist/<commit>/`: where `huggingface_hub` records files a revision does not
/// have, for a snapshot directory `<repo>/snapshots/<commit>`.
fn no_exist_dir(snapshot: &Path) -> Option<PathBuf> {
    let commit = snapshot.file_name()?;
    let repo = snapshot.parent()?.parent()?;
    Some(repo.join(".no_exist").join(commit))
}

/// Every optional file is either in the snapshot or recorded as absent from the repo.
fn optional_files_settled(snapshot: &Path) -> bool {
    let Some(no_exist) = no_exist_dir(snapshot) else {
        return false;
    };
    OPTIONAL_FILES
        .iter()
        .all(|f| snapshot.join(f).exists() || no_exist.join(f).exists())
}

/// After a fetch that listed the repo, record the optional files it does not have (as
/// `huggingface_hub` does) so the next load needs no network. Failing to write is harmless.
fn mark_absent_optional_files(snapshot: &Path) {
    let Some(no_exist) = no_exist_dir(snapshot) else {
        return;
    };
    for f in OPTIONAL_FILES.iter().filter(|f| !snapshot.join(f).exists()) {
        let marker = no_exist.join(f);
        let written = marker
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&marker, b""));
        if let Err(e) = written {
            tracing::debug!(path = %marker.display(), error = %e, "cannot record an absent file");
        }
    }
}

fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = EncoderError::read_text(index)?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| EncoderError::malformed(index, e))?;
    let mut names: Vec<String> = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.values()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.dedup();
    Ok(names)
}

fn shards_present(index: &Path) -> bool {
    let dir = index.parent().unwrap_or(Path::new("."));
    shard_names(index)
        .map(|names| names.iter().all(|n| dir.join(n).exists()))
        .unwrap_or(false)
}

fn build_api(settings: &HubSettings) -> Result<hf_hub::api::sync::Api> {
    let builder = ApiBuilder::from_cache(Cache::new(settings.cache.clone()))
        .with_progress(false)
        .with_endpoint(settings.endpoint.clone())
        .with_token(settings.token.clone());
    builder.build().map_err(|e| EncoderError::Hub {
        repo: "<api>".into(),
        message: e.to_string(),
    })
}

fn hub_err(repo: &str, file: &str, e: impl std::fmt::Display) -> EncoderError {
    let e = e.to_string();
    // The HTTP client's errors often start with the URL already: name it once.
    let message = if e.contains(file) {
        e
    } else {
        format!("{file}: {e}")
    };
    EncoderError::Hub {
        repo: repo.into(),
        message,
    }
}

/// A handle on a Hub repo plus its file listing (within the metadata timeout).
fn open_repo(
    settings: &HubSettings,
    repo: &Repo,
    repo_type: RepoType,
    repo_id: &str,
) -> Result<(Api, hf_hub::api::RepoInfo)> {
    let api = build_api(settings)?;
    let kind = match repo_type {
        RepoType::Model => "models",
        RepoType::Dataset => "datasets",
        RepoType::Space => "spaces",
    };
    let url = format!(
        "{}/api/{kind}/{repo_id}/revision/{}",
        settings.endpoint,
        repo.revision()
    );
    let (listing, listed) = (api.clone(), repo.clone());
    let info = with_timeouts(repo_id, &url, settings.timeouts, move |_, _| {
        listing.repo(listed).info().map_err(|e| e.to_string())
    })?;
    Ok((api, info))
}

/// Download the wanted files of a Hub repo (model or dataset) into the shared cache, listing
/// the repo first so optional files that do not exist are not requested. Returns local paths.
pub fn fetch_repo(
    repo_id: &str,
    repo_type: RepoType,
    revision: &str,
    wanted: &[Wanted<'_>],
) -> Result<Vec<PathBuf>> {
    fetch_repo_with(
        &HubSettings::from_env()?,
        repo_id,
        repo_type,
        revision,
        wanted,
    )
}

fn fetch_repo_with(
    settings: &HubSettings,
    repo_id: &str,
    repo_type: RepoType,
    revision: &str,
    wanted: &[Wanted<'_>],
) -> Result<Vec<PathBuf>> {
    let repo = Repo::with_revision(repo_id.into(), repo_type, revision.into());
    let (api, info) = open_repo(settings, &repo, repo_type, repo_id)?;
    let listed: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let mut out = Vec::new();
    for w in wanted {
        let name = match w {
            Wanted::Required(f) => {
                if !listed.contains(f) {
                    return Err(hub_err(repo_id, f, "not in the repository"));
                }
                Some(*f)
            }
            Wanted::FirstOf(options) => {
                Some(*options.iter().find(|f| listed.contains(f)).ok_or_else(|| {
                    hub_err(
                        repo_id,
                        &options.join(" | "),
                        "none of these is in the repository",
                    )
                })?)
            }
            Wanted::Optional(f) => listed.contains(f).then_some(*f),
        };
        if let Some(name) = name {
            out.push(get_file(settings, &api, &repo, repo_id, name)?);
        }
    }
    Ok(out)
}

/// List the files of a Hub repo (e.g. to pick `<subset>/<split>*.parquet` of a dataset).
pub fn list_repo_files(repo_id: &str, repo_type: RepoType, revision: &str) -> Result<Vec<String>> {
    let repo = Repo::with_revision(repo_id.into(), repo_type, revision.into());
    let (_, info) = open_repo(&HubSettings::from_env()?, &repo, repo_type, repo_id)?;
    Ok(info.siblings.into_iter().map(|s| s.rfilename).collect())
}

/// Resolve a model argument: an existing directory is used as is, anything else is a Hub id.
pub fn resolve_model(id_or_dir: &str, revision: Option<&str>) -> Result<PathBuf> {
    let p = Path::new(id_or_dir);
    if p.is_dir() {
        return Ok(p.to_path_buf());
    }
    if p.exists()
        || id_or_dir.starts_with('.')
        || id_or_dir.starts_with('/')
        || id_or_dir.matches('/').count() > 1
    {
        return Err(EncoderError::MissingFile {
            path: p.to_path_buf(),
            what: "model directory not found (and it does not look like a Hub id owner/name)"
                .into(),
        });
    }
    model_dir_from_hub(id_or_dir, revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_errors_name_the_url_once() {
        let url = "https://hub.example/acme/m/resolve/main/config.json";
        let with = hub_err("acme/m", url, format!("{url}: Connection refused")).to_string();
        assert_eq!(with.matches(url).count(), 1, "{with}");
        let without = hub_err("acme/m", url, "Connection refused").to_string();
        assert_eq!(without.matches(url).count(), 1, "{without}");
        assert!(without.contains("Connection refused") && without.contains("acme/m"));
    }

    /// A Hub endpoint that accepts the connection and never answers fails within the
    /// timeout, naming the URL.
    #[test]
    fn a_silent_endpoint_times_out_naming_the_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Accept and hold connections, never answering, for the test's length.
        let held = std::thread::spawn(move || {
            let mut open = Vec::new();
            for stream in listener.incoming().take(4) {
                open.push(stream);
            }
            std::thread::sleep(Duration::from_secs(5));
        });
        let cache = tempfile::tempdir().unwrap();
        let settings = HubSettings {
            endpoint: format!("http://{addr}"),
            cache: cache.path().to_path_buf(),
            token: None,
            timeouts: HubTimeouts {
                metadata: Duration::from_millis(500),
                download: Duration::from_millis(500),
            },
        };
        let started = Instant::now();
        let err = fetch_repo_with(
            &settings,
            "acme/silent",
            RepoType::Model,
            "main",
            &[Wanted::Required("config.json")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert!(
            err.contains(&format!(
                "http://{addr}/api/models/acme/silent/revision/main"
            )) && err.contains("HF_HUB_ETAG_TIMEOUT"),
            "{err}"
        );
        drop(held);
    }

    #[test]
    fn timeouts_come_from_the_environment_variables_huggingface_hub_reads() {
        // Only this test sets these variables.
        std::env::set_var("HF_HUB_DOWNLOAD_TIMEOUT", "2.5");
        std::env::set_var("HF_HUB_ETAG_TIMEOUT", "");
        let t = HubTimeouts::from_env().unwrap();
        assert_eq!(t.download, Duration::from_millis(2500));
        assert_eq!(t.metadata, Duration::from_secs(10));
        std::env::set_var("HF_HUB_ETAG_TIMEOUT", "soon");
        let err = HubTimeouts::from_env().unwrap_err().to_string();
        assert!(
            err.contains("HF_HUB_ETAG_TIMEOUT") && err.contains("soon"),
            "{err}"
        );
        std::env::remove_var("HF_HUB_ETAG_TIMEOUT");
        std::env::remove_var("HF_HUB_DOWNLOAD_TIMEOUT");
    }

    /// A model laid out in the Python cache format is found without network.
    #[test]
    fn cached_model_is_used_offline() {
        let tmp = tempfile::tempdir().unwrap();
        let repo_dir = tmp.path().join("models--acme--tiny");
        let snap = repo_dir.join("snapshots").join("abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::write(repo_dir.join("refs").join("main"), "abc123").unwrap();
        for f in ["config.json", "model.safetensors", "vocab.txt"] {
            std::fs::write(snap.join(f), "x").unwrap();
        }
        // Env vars are process-wide; this is the only test touching them.
        std::env::set_var("HF_HUB_CACHE", tmp.path());
        std::env::set_var("HF_HUB_OFFLINE", "1");
        let dir = model_dir_from_hub("acme/tiny", None).unwrap();
        assert_eq!(dir, snap);
        let err = model_dir_from_hub("acme/missing", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HF_HUB_OFFLINE") && err.contains("acme/missing"),
            "{err}"
        );
        std::env::remove_var("HF_HUB_OFFLINE");

        // Online, the optional files are not settled yet: the Hub is asked (here an endpoint
        // that refuses connections), and when it cannot be reached the cached model is used.
        assert!(!optional_files_settled(&snap));
        std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
        assert_eq!(model_dir_from_hub("acme/tiny", None).unwrap(), snap);
        let err = model_dir_from_hub("acme/missing", None).unwrap_err();
        assert!(matches!(err, EncoderError::Hub { .. }), "{err}");
        // Optional files recorded as absent, as huggingface_hub does, settle the cache.
        mark_absent_optional_files(&snap);
        let no_exist = repo_dir.join(".no_exist").join("abc123");
        assert!(no_exist.join("1_Pooling/config.json").is_file());
        assert!(no_exist.join("modules.json").is_file());
        assert!(optional_files_settled(&snap));
        std::fs::write(snap.join("modules.json"), "[]").unwrap();
        std::fs::remove_file(no_exist.join("modules.json")).unwrap();
        assert!(
            optional_files_settled(&snap),
            "a cached file needs no marker"
        );
        assert_eq!(model_dir_from_hub("acme/tiny", None).unwrap(), snap);
        std::env::remove_var("HF_ENDPOINT");
        std::env::remove_var("HF_HUB_CACHE");
    }
}
