//! [`BiEncoder`]: texts in, pooled (and normalised) embeddings out; cosine relevance.
//!
//! Reads the sentence-transformers layout of a model directory as sentence-transformers
//! does: `modules.json` lists the modules (`Transformer`, `Pooling`, optionally `Normalize`;
//! any other module is an error), the `Pooling` module's `config.json` (usually
//! `1_Pooling/config.json`) picks mean or CLS pooling, `sentence_bert_config.json` gives
//! `max_seq_length`. A directory without `modules.json` is a plain transformers model:
//! mean pooling, not normalised, with a warning (sentence-transformers does the same).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::ModelConfig;
use crate::core::{CoreRequest, EncoderCore};
use crate::cross_encoder::{rank_scores, Ranked};
use crate::error::{EncoderError, Result};
use crate::models::{Architecture, Output, Pooling};
use crate::options::BiEncoderOptions;
use crate::tokenizer::{EncodedPair, PairTokenizer, Truncation};

#[derive(Deserialize, Default)]
struct SbertConfig {
    #[serde(default)]
    max_seq_length: Option<usize>,
}

/// sentence-transformers' `1_Pooling/config.json`: `pooling_mode` (a mode or a list of
/// modes, written since sentence-transformers 5) or the older `pooling_mode_*` flags.
#[derive(Deserialize, Default)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode: Option<serde_json::Value>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

impl PoolingConfig {
    /// The one pooling this crate implements, or an error naming the modes asked for
    /// (sentence-transformers concatenates several modes).
    ///
    /// As in sentence-transformers, `pooling_mode` wins over the flags, and a config with
    /// neither (or with every flag false) means mean pooling: that is followed, with a
    /// warning.
    fn resolve(&self, path: &Path) -> Result<Pooling> {
        if let Some(mode) = &self.pooling_mode {
            let invalid = |value: String, reason: &str| EncoderError::InvalidConfig {
                path: path.to_path_buf(),
                field: "pooling_mode".into(),
                value,
                reason: reason.into(),
            };
            let modes: Vec<&str> = match mode {
                serde_json::Value::String(m) => vec![m.as_str()],
                serde_json::Value::Array(list) => list
                    .iter()
                    .map(|m| {
                        m.as_str().ok_or_else(|| {
                            invalid(mode.to_string(), "expected a mode name or a list of them")
                        })
                    })
                    .collect::<Result<_>>()?,
                other => {
                    return Err(invalid(
                        other.to_string(),
                        "expected a mode name or a list of them",
                    ))
                }
            };
            return match modes.as_slice() {
                ["mean"] => Ok(Pooling::Mean),
                ["cls"] => Ok(Pooling::Cls),
                _ => Err(invalid(
                    modes.join(" + "),
                    "supported: exactly one of cls, mean",
                )),
            };
        }
        let modes = [
            ("cls_token", self.pooling_mode_cls_token),
            ("mean_tokens", self.pooling_mode_mean_tokens),
            ("max_tokens", self.pooling_mode_max_tokens),
            (
                "mean_sqrt_len_tokens",
                self.pooling_mode_mean_sqrt_len_tokens,
            ),
            ("weightedmean_tokens", self.pooling_mode_weightedmean_tokens),
            ("lasttoken", self.pooling_mode_lasttoken),
        ];
        let on: Vec<&str> = modes.iter().filter(|m| m.1).map(|m| m.0).collect();
        match on.as_slice() {
            [] => {
                tracing::warn!(
                    file = %path.display(),
                    "no pooling mode is switched on (no pooling_mode, every pooling_mode_* \
                     false or absent): mean pooling, as sentence-transformers reads it"
                );
                Ok(Pooling::Mean)
            }
            ["mean_tokens"] => Ok(Pooling::Mean),
            ["cls_token"] => Ok(Pooling::Cls),
            _ => Err(EncoderError::InvalidConfig {
                path: path.to_path_buf(),
                field: "pooling_mode_*".into(),
                value: on.join(" + "),
                reason:
                    "supported: exactly one of pooling_mode_cls_token, pooling_mode_mean_tokens"
                        .into(),
            }),
        }
    }
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

/// The sentence-transformers modules this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StModule {
    Transformer,
    Pooling,
    Normalize,
}

impl StModule {
    /// `sentence_transformers.models.Pooling` (the name before sentence-transformers 5) or
    /// `sentence_transformers.sentence_transformer.modules.pooling.Pooling` (since), etc.
    fn parse(kind: &str) -> Option<Self> {
        if !kind.starts_with("sentence_transformers.") {
            return None;
        }
        match kind.rsplit('.').next()? {
            "Transformer" => Some(StModule::Transformer),
            "Pooling" => Some(StModule::Pooling),
            "Normalize" => Some(StModule::Normalize),
            _ => None,
        }
    }
}

/// What a sentence-transformers directory asks for after the encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StLayout {
    /// `config.json` of the `Pooling` module; `None` without `modules.json`.
    pooling_config: Option<PathBuf>,
    normalize: bool,
}

/// Read `modules.json`: `Transformer` (stored in the directory itself), `Pooling`, then
/// optionally `Normalize`. Any other module (`Dense`, `LayerNorm`, custom code, ...) changes
/// the embeddings in a way this crate does not implement, so it is an error naming the file
/// and the module type.
fn read_modules(dir: &Path) -> Result<StLayout> {
    let path = dir.join("modules.json");
    let Some(entries) = read_json_opt::<Vec<ModuleEntry>>(&path)? else {
        tracing::warn!(
            dir = %dir.display(),
            "no modules.json: a plain transformers model, embedded with mean pooling and not \
             normalised, as sentence-transformers does (1_Pooling/config.json is not read)"
        );
        return Ok(StLayout {
            pooling_config: None,
            normalize: false,
        });
    };
    let mut kinds = Vec::with_capacity(entries.len());
    for entry in &entries {
        let kind = StModule::parse(&entry.kind).ok_or_else(|| EncoderError::InvalidConfig {
            path: path.clone(),
            field: "type".into(),
            value: entry.kind.clone(),
            reason: "this sentence-transformers module is not implemented; supported: \
                     Transformer, Pooling, Normalize"
                .into(),
        })?;
        kinds.push(kind);
    }
    let normalize = match kinds.as_slice() {
        [StModule::Transformer, StModule::Pooling] => false,
        [StModule::Transformer, StModule::Pooling, StModule::Normalize] => true,
        _ => {
            return Err(EncoderError::InvalidConfig {
                path: path.clone(),
                field: "modules".into(),
                value: format!("{kinds:?}"),
                reason: "expected Transformer, Pooling and optionally Normalize, in that order"
                    .into(),
            })
        }
    };
    let transformer = &entries[0].path;
    if !(transformer.is_empty() || transformer == ".") {
        return Err(EncoderError::InvalidConfig {
            path: path.clone(),
            field: "path".into(),
            value: transformer.clone(),
            reason: "the Transformer module must be the model directory itself (path \"\")".into(),
        });
    }
    // A relative folder inside the model directory (sentence-transformers refuses others); an
    // empty path would make the model's own config.json the pooling config.
    let pooling = std::path::Path::new(&entries[1].path);
    let inside = pooling
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if entries[1].path.is_empty() || !inside {
        return Err(EncoderError::InvalidConfig {
            path: path.clone(),
            field: "path".into(),
            value: entries[1].path.clone(),
            reason: "the Pooling module needs its own folder inside the model directory \
                     (e.g. \"1_Pooling\")"
                .into(),
        });
    }
    let pooling_config = dir.join(pooling).join("config.json");
    if !pooling_config.is_file() {
        return Err(EncoderError::MissingFile {
            what: format!(
                "{} lists a Pooling module at {:?}, but it has no config.json",
                path.display(),
                entries[1].path
            ),
            path: pooling_config,
        });
    }
    Ok(StLayout {
        pooling_config: Some(pooling_config),
        normalize,
    })
}

fn read_json_opt<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = EncoderError::read_text(path)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| EncoderError::malformed(path, e))
}

/// An embedding model (BERT or ModernBERT encoder) scoring by cosine similarity.
///
/// ```no_run
/// use tantivy_rerank_encoders::{BiEncoder, BiEncoderOptions};
/// # fn main() -> Result<(), tantivy_rerank_encoders::EncoderError> {
/// let model = BiEncoder::from_dir("models/all-MiniLM-L6-v2", BiEncoderOptions::default())?;
/// let scores = model.score("a query", &["a document", "another one"])?;
/// assert_eq!(scores.len(), 2);
/// # Ok(()) }
/// ```
pub struct BiEncoder {
    core: EncoderCore,
    pooling: Pooling,
    normalize: bool,
    cache: std::sync::Mutex<EmbeddingCache>,
}

/// Embeddings of recently seen texts: a reranker sees the same documents (and passages of
/// the same articles) for many queries, and their embeddings never change.
#[derive(Default)]
struct EmbeddingCache {
    capacity: usize,
    map: std::collections::HashMap<String, Vec<f32>>,
}

impl EmbeddingCache {
    fn insert(&mut self, text: &str, embedding: &[f32]) {
        if self.capacity == 0 {
            return;
        }
        if self.map.len() >= self.capacity {
            // Simple and bounded: start over rather than track recency.
            self.map.clear();
        }
        self.map.insert(text.to_string(), embedding.to_vec());
    }
}

impl std::fmt::Debug for BiEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BiEncoder")
            .field("dir", &self.core.dir)
            .field("pooling", &self.pooling)
            .field("normalize", &self.normalize)
            .field("max_length", &self.core.max_length)
            .finish()
    }
}

impl BiEncoder {
    /// Load from a local directory (sentence-transformers or plain transformers layout).
    /// `options.max_length` overrides `max_seq_length`.
    pub fn from_dir(dir: impl AsRef<Path>, options: BiEncoderOptions) -> Result<Self> {
        let dir = dir.as_ref();
        options.core().validate()?;
        let config_path = dir.join("config.json");
        let config = ModelConfig::from_file(&config_path)?;
        let architecture = Architecture::of(&config)?;
        // The sentence-transformers files are checked before any weights load.
        let layout = read_modules(dir)?;
        let pooling = match &layout.pooling_config {
            Some(path) => read_json_opt::<PoolingConfig>(path)?
                .unwrap_or_default()
                .resolve(path)?,
            None => Pooling::Mean,
        };
        let sbert: SbertConfig =
            read_json_opt(&dir.join("sentence_bert_config.json"))?.unwrap_or_default();
        if options.max_length.is_none() && sbert.max_seq_length == Some(0) {
            return Err(EncoderError::InvalidConfig {
                path: dir.join("sentence_bert_config.json"),
                field: "max_seq_length".into(),
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        let core = EncoderCore::load(
            CoreRequest {
                dir,
                config: &config,
                architecture,
                output: Output::Embedding(pooling),
                tokenizer: PairTokenizer::from_dir(dir)?,
                max_length: options.max_length.or(sbert.max_seq_length),
                // One text per input: only its end can be cut.
                truncation: Truncation::LongestFirst,
            },
            &options.core(),
        )?;
        Ok(Self {
            core,
            pooling,
            normalize: layout.normalize,
            cache: std::sync::Mutex::new(EmbeddingCache {
                capacity: options.embedding_cache,
                ..Default::default()
            }),
        })
    }

    /// Keep the embeddings of up to `capacity` texts (see
    /// [`BiEncoderOptions::embedding_cache`]; 0 turns the cache off). Cached embeddings are
    /// dropped.
    pub fn with_embedding_cache(self, capacity: usize) -> Self {
        if let Ok(mut c) = self.cache.lock() {
            c.capacity = capacity;
            c.map.clear();
        }
        self
    }

    /// Load from a directory if `id_or_dir` is one, else from the Hub.
    pub fn load(id_or_dir: &str, options: BiEncoderOptions) -> Result<Self> {
        let dir = crate::hub::resolve_model(id_or_dir, options.revision.as_deref())?;
        Self::from_dir(dir, options)
    }

    /// Effective maximum tokens per text.
    pub fn max_length(&self) -> usize {
        self.core.max_length
    }

    /// The tokenizer (with truncation applied).
    pub fn tokenizer(&self) -> &PairTokenizer {
        &self.core.tokenizer
    }

    /// How token states become one embedding.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Embeddings of `texts`, in input order.
    ///
    /// Texts seen recently come from the embedding cache (see
    /// [`BiEncoderOptions::embedding_cache`]); only the others run the model.
    pub fn embed<T: AsRef<str> + Sync>(&self, texts: &[T]) -> Result<Vec<Vec<f32>>> {
        let mut out: Vec<Option<Vec<f32>>> = match self.cache.lock() {
            Ok(c) => texts
                .iter()
                .map(|t| c.map.get(t.as_ref()).cloned())
                .collect(),
            Err(_) => vec![None; texts.len()],
        };
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
        if !missing.is_empty() {
            let todo: Vec<&str> = missing.iter().map(|&i| texts[i].as_ref()).collect();
            let encodings = self.core.tokenizer.encode_texts(&todo)?;
            let fresh = self.embed_encodings(&encodings)?;
            if let Ok(mut c) = self.cache.lock() {
                for (t, e) in todo.iter().zip(&fresh) {
                    c.insert(t, e);
                }
            }
            for (i, e) in missing.into_iter().zip(fresh) {
                out[i] = Some(e);
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Embeddings of already encoded texts.
    ///
    /// An encoding the model cannot look up (no tokens, more tokens than
    /// `max_position_embeddings`, an id outside the vocabulary or segment table) is an
    /// [`EncoderError::InvalidInput`] naming its index; nothing runs on the device then.
    pub fn embed_encodings(&self, encodings: &[EncodedPair]) -> Result<Vec<Vec<f32>>> {
        let (mut rows, _) = self.core.run(encodings, None)?;
        if self.normalize {
            for r in &mut rows {
                let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                r.iter_mut().for_each(|x| *x /= norm);
            }
        }
        Ok(rows)
    }

    /// Cosine similarity of `query` with each document.
    pub fn score<D: AsRef<str> + Sync>(&self, query: &str, documents: &[D]) -> Result<Vec<f32>> {
        if documents.is_empty() {
            return Ok(Vec::new());
        }
        let q = self.embed(&[query])?.pop().unwrap_or_default();
        let docs = self.embed(documents)?;
        Ok(docs.iter().map(|d| cosine(&q, d)).collect())
    }

    /// Documents best first by cosine similarity.
    pub fn rank<D: AsRef<str> + Sync>(
        &self,
        query: &str,
        documents: &[D],
        top_k: Option<usize>,
    ) -> Result<Vec<Ranked>> {
        rank_scores(&self.score(query, documents)?, top_k)
    }
}

/// Cosine similarity (0 for a zero vector).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::warnings_of;

    #[test]
    fn without_modules_json_mean_pooling_unnormalised_is_logged() {
        let dir = tempfile::tempdir().unwrap();
        let (layout, warnings) = warnings_of(|| read_modules(dir.path()));
        assert_eq!(
            layout.unwrap(),
            StLayout {
                pooling_config: None,
                normalize: false
            }
        );
        assert!(
            warnings.len() == 1
                && warnings[0].contains("no modules.json")
                && warnings[0].contains("mean pooling"),
            "{warnings:?}"
        );
    }

    #[test]
    fn pooling_config_without_a_mode_is_mean_with_a_warning() {
        let path = Path::new("m/1_Pooling/config.json");
        for json in [
            r#"{"pooling_mode_cls_token": false, "pooling_mode_mean_tokens": false}"#,
            r#"{"word_embedding_dimension": 384}"#,
        ] {
            let config: PoolingConfig = serde_json::from_str(json).unwrap();
            let (pooling, warnings) = warnings_of(|| config.resolve(path));
            assert_eq!(pooling.unwrap(), Pooling::Mean, "{json}");
            assert!(
                warnings.len() == 1
                    && warnings[0].contains("m/1_Pooling/config.json")
                    && warnings[0].contains("mean pooling"),
                "{json}: {warnings:?}"
            );
        }
        for json in [
            r#"{"pooling_mode_mean_tokens": true}"#,
            r#"{"pooling_mode": "mean"}"#,
        ] {
            let config: PoolingConfig = serde_json::from_str(json).unwrap();
            let (pooling, warnings) = warnings_of(|| config.resolve(path));
            assert_eq!(pooling.unwrap(), Pooling::Mean, "{json}");
            assert!(warnings.is_empty(), "{json}: {warnings:?}");
        }
    }
}
