//! The one error type of the encoders crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running an encoder.
///
/// Variants carry the file, field, tensor or value that failed so that the message alone
/// tells a user what to fix.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// A file the model needs does not exist.
    #[error("missing file {path}: {what}")]
    MissingFile { path: PathBuf, what: String },

    /// A file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A JSON file (config, tokenizer config, ...) is not valid or lacks a required field.
    #[error("malformed {path}: {message}")]
    MalformedFile { path: PathBuf, message: String },

    /// A text file is not valid UTF-8.
    #[error("{path} is not valid UTF-8 (first invalid byte at offset {offset}, line {line})")]
    InvalidUtf8 {
        path: PathBuf,
        offset: usize,
        line: usize,
    },

    /// The config names an architecture this crate cannot run.
    #[error("unsupported architecture {found:?} in {path}; supported: {supported}")]
    UnsupportedArchitecture {
        path: PathBuf,
        found: String,
        supported: String,
    },

    /// A config value is outside what the architecture allows.
    #[error("invalid config value {field} = {value} in {path}: {reason}")]
    InvalidConfig {
        path: PathBuf,
        field: String,
        value: String,
        reason: String,
    },

    /// A tensor the architecture needs is not in the checkpoint.
    #[error("tensor {name} not found in {path}")]
    MissingTensor { name: String, path: PathBuf },

    /// A tensor has a different shape from the one the config implies.
    #[error("tensor {name} in {path} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        path: PathBuf,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// The number of labels in `config.json` does not match the classifier's weight.
    #[error("{config} declares {config_labels} labels (id2label/num_labels) but tensor {tensor} in {weights} has {tensor_labels} output rows")]
    LabelCountMismatch {
        config: PathBuf,
        config_labels: usize,
        tensor: String,
        weights: PathBuf,
        tensor_labels: usize,
    },

    /// An encoded input cannot run through the model: no tokens, longer than the model's
    /// position table, or an id outside the model's vocabulary or segment table.
    #[error("input {index} cannot run through the model: {reason}")]
    InvalidInput { index: usize, reason: String },

    /// A model produced a NaN or infinite score.
    #[error("model produced a non-finite score ({value}) for input {index}")]
    NonFiniteScore { index: usize, value: f32 },

    /// The weights file is unreadable (truncated, corrupt, unknown format).
    #[error("cannot load weights from {path}: {message}")]
    Weights { path: PathBuf, message: String },

    /// The tokenizer could not be built or failed on an input.
    #[error("tokenizer error ({context}): {message}")]
    Tokenizer { context: String, message: String },

    /// A user-supplied option is invalid.
    #[error("invalid option {name} = {value}: {reason}")]
    InvalidOption {
        name: String,
        value: String,
        reason: String,
    },

    /// Downloading from or resolving in the Hugging Face Hub failed.
    #[error("hub error for {repo}: {message}")]
    Hub { repo: String, message: String },

    /// The requested device is not available in this build or on this machine.
    #[error("device {requested} unavailable: {reason}")]
    Device { requested: String, reason: String },

    /// A tensor operation failed while running the model.
    #[error("model execution failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias for this crate.
pub type Result<T, E = EncoderError> = std::result::Result<T, E>;

impl EncoderError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            EncoderError::MissingFile {
                path,
                what: source.to_string(),
            }
        } else {
            EncoderError::Io { path, source }
        }
    }

    pub(crate) fn malformed(path: impl Into<PathBuf>, message: impl ToString) -> Self {
        EncoderError::MalformedFile {
            path: path.into(),
            message: message.to_string(),
        }
    }

    /// True when this error means the device ran out of memory (used by OOM back-off).
    pub fn is_out_of_memory(&self) -> bool {
        match self {
            EncoderError::Candle(e) => {
                let msg = e.to_string().to_ascii_lowercase();
                msg.contains("out of memory") || msg.contains("out_of_memory")
            }
            _ => false,
        }
    }
}
