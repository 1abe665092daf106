//! Model files from a local directory or the Hugging Face Hub.
//!
//! The Hub cache is the one the Python libraries use (`$HF_HUB_CACHE`, else `$HF_HOME/hub`,
//! else `~/.cache/huggingface/hub`), so a model downloaded by transformers is found here
//! without network. With `HF_HUB_OFFLINE=1` only the cache is consulted.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{EncoderError, Result};

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
    let fetched = fetch_repo(
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
        let api = build_api()?;
        let repo_api = api.repo(Repo::with_revision(
            repo_id.into(),
            RepoType::Model,
            revision.into(),
        ));
        for shard in shard_names(&index)? {
            repo_api
                .get(&shard)
                .map_err(|e| hub_err(repo_id, &shard, e))?;
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
    let text = std::fs::read_to_string(index).map_err(|e| EncoderError::io(index, e))?;
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

fn build_api() -> Result<hf_hub::api::sync::Api> {
    let mut builder = ApiBuilder::from_cache(Cache::new(hub_cache_dir())).with_progress(true);
    if let Some(endpoint) = non_empty_env("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(token) = non_empty_env("HF_TOKEN") {
        builder = builder.with_token(Some(token));
    }
    builder.build().map_err(|e| EncoderError::Hub {
        repo: "<api>".into(),
        message: e.to_string(),
    })
}

fn hub_err(repo: &str, file: &str, e: impl std::fmt::Display) -> EncoderError {
    EncoderError::Hub {
        repo: repo.into(),
        message: format!("{file}: {e}"),
    }
}

/// A handle on a Hub repo plus its file listing.
fn open_repo(
    repo_id: &str,
    repo_type: RepoType,
    revision: &str,
) -> Result<(hf_hub::api::sync::ApiRepo, hf_hub::api::RepoInfo)> {
    let api = build_api()?;
    let repo_api = api.repo(Repo::with_revision(
        repo_id.into(),
        repo_type,
        revision.into(),
    ));
    let info = repo_api
        .info()
        .map_err(|e| hub_err(repo_id, "<repo listing>", e))?;
    Ok((repo_api, info))
}

/// Download the wanted files of a Hub repo (model or dataset) into the shared cache, listing
/// the repo first so optional files that do not exist are not requested. Returns local paths.
pub fn fetch_repo(
    repo_id: &str,
    repo_type: RepoType,
    revision: &str,
    wanted: &[Wanted<'_>],
) -> Result<Vec<PathBuf>> {
    let (repo_api, info) = open_repo(repo_id, repo_type, revision)?;
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
            out.push(repo_api.get(name).map_err(|e| hub_err(repo_id, name, e))?);
        }
    }
    Ok(out)
}

/// List the files of a Hub repo (e.g. to pick `<subset>/<split>*.parquet` of a dataset).
pub fn list_repo_files(repo_id: &str, repo_type: RepoType, revision: &str) -> Result<Vec<String>> {
    let (_, info) = open_repo(repo_id, repo_type, revision)?;
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
