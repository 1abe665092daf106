//! `config.json` as Hugging Face writes it: the fields every architecture shares (labels,
//! sentence-transformers settings, dtype). Each architecture parses its own fields in its own
//! file under `models/`, with the defaults of transformers' config class.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{EncoderError, Result};

/// The most labels a classification head may have here (a crafted `num_labels` must not size
/// anything before the checkpoint's classifier can be compared with it).
pub const MAX_LABELS: usize = 65_536;

/// The parts of `config.json` every architecture shares.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct CommonConfig {
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub num_labels: Option<usize>,
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    /// Rows of the token embedding table.
    #[serde(default)]
    pub vocab_size: Option<usize>,
    /// transformers < 5 writes `torch_dtype`.
    #[serde(default)]
    pub torch_dtype: Option<String>,
    /// transformers >= 5 writes `dtype`.
    #[serde(default)]
    pub dtype: Option<String>,
    /// sentence-transformers >= 4 stores its settings here.
    #[serde(default)]
    pub sentence_transformers: Option<SentenceTransformersSection>,
    /// sentence-transformers < 4 stored the activation under this key.
    #[serde(default)]
    pub sbert_ce_default_activation_function: Option<String>,
}

/// The `sentence_transformers` object of `config.json`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct SentenceTransformersSection {
    #[serde(default)]
    pub activation_fn: Option<String>,
}

impl CommonConfig {
    /// The checkpoint's stored dtype (`dtype` or the older `torch_dtype`).
    pub fn stored_dtype(&self) -> Option<&str> {
        self.dtype.as_deref().or(self.torch_dtype.as_deref())
    }

    /// Labels in index order, as transformers reads them (at most [`MAX_LABELS`]): the length of `id2label` is the
    /// label count (`num_labels` is rarely written); without `id2label` transformers assumes
    /// two labels `LABEL_0`, `LABEL_1` unless `num_labels` says otherwise.
    pub fn labels(&self, path: &Path) -> Result<Vec<String>> {
        match &self.id2label {
            Some(map) if !map.is_empty() => {
                if map.len() > MAX_LABELS {
                    return Err(EncoderError::InvalidConfig {
                        path: path.to_path_buf(),
                        field: "id2label".into(),
                        value: format!("{} labels", map.len()),
                        reason: format!("at most {MAX_LABELS}"),
                    });
                }
                let mut labels: Vec<Option<String>> = vec![None; map.len()];
                for (k, v) in map {
                    let idx: usize = k.trim().parse().map_err(|_| EncoderError::InvalidConfig {
                        path: path.to_path_buf(),
                        field: "id2label".into(),
                        value: k.clone(),
                        reason: "keys must be label indices 0..n".into(),
                    })?;
                    if idx >= labels.len() {
                        return Err(EncoderError::InvalidConfig {
                            path: path.to_path_buf(),
                            field: "id2label".into(),
                            value: k.clone(),
                            reason: format!("index out of range for {} labels", labels.len()),
                        });
                    }
                    labels[idx] = Some(v.clone());
                }
                Ok(labels
                    .into_iter()
                    .enumerate()
                    .map(|(i, l)| l.unwrap_or_else(|| format!("LABEL_{i}")))
                    .collect())
            }
            _ => {
                let n = self.num_labels.unwrap_or(2);
                // Checked before a name is made for each: a crafted count would allocate
                // gigabytes of names before the classifier's shape could refuse it.
                if n == 0 || n > MAX_LABELS {
                    return Err(EncoderError::InvalidConfig {
                        path: path.to_path_buf(),
                        field: "num_labels".into(),
                        value: n.to_string(),
                        reason: format!("must be between 1 and {MAX_LABELS}"),
                    });
                }
                Ok((0..n).map(|i| format!("LABEL_{i}")).collect())
            }
        }
    }
}

/// A parsed `config.json` together with the path it came from.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Where the config was read from (used in error messages).
    pub path: PathBuf,
    /// The raw JSON, for architecture-specific parsing.
    pub raw: serde_json::Value,
    /// The shared fields.
    pub common: CommonConfig,
}

impl ModelConfig {
    /// Read and parse `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = EncoderError::read_text(path)?;
        Self::from_json_str(&text, path)
    }

    /// Parse config text; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let raw: serde_json::Value =
            serde_json::from_str(text).map_err(|e| EncoderError::malformed(path, e))?;
        if !raw.is_object() {
            return Err(EncoderError::malformed(path, "expected a JSON object"));
        }
        let common: CommonConfig =
            serde_json::from_value(raw.clone()).map_err(|e| EncoderError::malformed(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            raw,
            common,
        })
    }

    /// Parse the architecture-specific part.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.raw.clone()).map_err(|e| EncoderError::malformed(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> ModelConfig {
        ModelConfig::from_json_str(json, Path::new("config.json")).unwrap()
    }

    #[test]
    fn labels_come_from_id2label_length() {
        let c = cfg(r#"{"id2label": {"0": "irrelevant", "2": "sufficient", "1": "partial"}}"#);
        let labels = c.common.labels(&c.path).unwrap();
        assert_eq!(labels, vec!["irrelevant", "partial", "sufficient"]);
    }

    #[test]
    fn labels_default_to_two_without_id2label() {
        let c = cfg(r#"{"model_type": "bert"}"#);
        assert_eq!(c.common.labels(&c.path).unwrap().len(), 2);
        let c = cfg(r#"{"model_type": "bert", "num_labels": 1}"#);
        assert_eq!(c.common.labels(&c.path).unwrap(), vec!["LABEL_0"]);
    }

    #[test]
    fn bad_id2label_key_is_named() {
        let c = cfg(r#"{"id2label": {"zero": "a"}}"#);
        let err = c.common.labels(&c.path).unwrap_err().to_string();
        assert!(err.contains("id2label") && err.contains("zero"), "{err}");
    }

    #[test]
    fn malformed_json_names_file() {
        let err = ModelConfig::from_json_str("{not json", Path::new("/m/config.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/m/config.json"), "{err}");
    }
}
