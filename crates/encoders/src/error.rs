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

    /// A path names something that is not a regular file (a FIFO, socket, device or
    /// folder): reading it could block forever or read nothing.
    #[error("{path} is not a regular file ({kind}): refusing to read it")]
    NotAFile { path: PathBuf, kind: String },

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

    /// The tokenizer could not be built or failed on an input (`input`: its 0-based index
    /// in the batch, when it failed on one input of a batch).
    #[error("tokenizer error ({context}): {message}")]
    Tokenizer {
        context: String,
        message: String,
        input: Option<usize>,
    },

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

    /// The caller cancelled the work ([`crate::CancelToken`]) before it finished.
    #[error("cancelled before the model finished")]
    Cancelled,

    /// A tensor operation failed while running the model.
    #[error("model execution failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias for this crate.
pub type Result<T, E = EncoderError> = std::result::Result<T, E>;

impl EncoderError {
    /// Refuse `path` unless it is a regular file (symbolic links are followed); a missing
    /// one is [`EncoderError::MissingFile`].
    pub(crate) fn check_regular(path: &std::path::Path) -> Result<(), Self> {
        let meta = std::fs::metadata(path).map_err(|e| Self::io(path, e))?;
        if meta.is_file() {
            return Ok(());
        }
        let t = meta.file_type();
        let kind = if t.is_dir() {
            "a folder"
        } else {
            #[cfg(unix)]
            {
                use std::os::unix::fs::FileTypeExt;
                if t.is_fifo() {
                    "a FIFO"
                } else if t.is_socket() {
                    "a socket"
                } else if t.is_block_device() || t.is_char_device() {
                    "a device"
                } else {
                    "not a file"
                }
            }
            #[cfg(not(unix))]
            "not a file"
        };
        Err(EncoderError::NotAFile {
            path: path.to_path_buf(),
            kind: kind.into(),
        })
    }

    /// Read a whole regular file as text, reporting invalid UTF-8 with its byte offset and
    /// line.
    pub(crate) fn read_text(path: &std::path::Path) -> Result<String, Self> {
        Self::check_regular(path)?;
        let bytes = std::fs::read(path).map_err(|e| Self::io(path, e))?;
        String::from_utf8(bytes).map_err(|e| {
            let offset = e.utf8_error().valid_up_to();
            let line = 1 + e.as_bytes()[..offset]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            EncoderError::InvalidUtf8 {
                path: path.to_path_buf(),
                offset,
                line,
            }
        })
    }

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

    /// The 0-based index, in the batch the caller passed, of the input this error is about:
    /// one that could not be tokenised, cannot run through the model, or scored NaN.
    pub fn input_index(&self) -> Option<usize> {
        match self {
            EncoderError::InvalidInput { index, .. }
            | EncoderError::NonFiniteScore { index, .. } => Some(*index),
            EncoderError::Tokenizer { input, .. } => *input,
            _ => None,
        }
    }

    /// True when this error means the device ran out of memory (used by OOM back-off).
    ///
    /// Candle passes CUDA failures through as text, so this matches what they print: the
    /// driver's `CUDA_ERROR_OUT_OF_MEMORY` ("out of memory") and cuBLAS's
    /// `CUBLAS_STATUS_ALLOC_FAILED` (a matmul whose workspace could not be allocated).
    ///
    /// Only the innermost error is read: candle's wrappers add context text and a backtrace,
    /// and a backtrace names functions (a caller called `retry_out_of_memory` would match).
    pub fn is_out_of_memory(&self) -> bool {
        let EncoderError::Candle(outer) = self else {
            return false;
        };
        let mut e: &candle_core::Error = outer;
        loop {
            e = match e {
                candle_core::Error::WithBacktrace { inner, .. }
                | candle_core::Error::Context { inner, .. }
                | candle_core::Error::WithPath { inner, .. } => inner.as_ref(),
                _ => break,
            };
        }
        let msg = e.to_string().to_ascii_lowercase();
        [
            "out of memory",
            "out_of_memory",
            "cublas_status_alloc_failed",
        ]
        .iter()
        .any(|needle| msg.contains(needle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prints what cudarc's error types print (their `Display` is their `Debug`).
    #[derive(Debug)]
    struct CudaText(&'static str);

    impl std::fmt::Display for CudaText {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for CudaText {}

    fn cuda(text: &'static str) -> EncoderError {
        // Candle boxes CUDA errors and usually adds a backtrace and context around them.
        let inner = candle_core::Error::Cuda(Box::new(CudaText(text))).bt();
        EncoderError::Candle(inner.context("matmul"))
    }

    #[test]
    fn out_of_memory_is_recognised_from_the_driver_and_from_cublas() {
        assert!(
            cuda(r#"DriverError(CUDA_ERROR_OUT_OF_MEMORY, "out of memory")"#).is_out_of_memory()
        );
        assert!(cuda("CublasError(CUBLAS_STATUS_ALLOC_FAILED)").is_out_of_memory());
        assert!(!cuda("CublasError(CUBLAS_STATUS_EXECUTION_FAILED)").is_out_of_memory());
        assert!(!cuda(
            r#"DriverError(CUDA_ERROR_ILLEGAL_ADDRESS, "an illegal memory access was encountered")"#
        )
        .is_out_of_memory());
        // Context text (and backtraces, which name functions) around another error is not read.
        let wrapped = candle_core::Error::Cuda(Box::new(CudaText(
            "CublasError(CUBLAS_STATUS_EXECUTION_FAILED)",
        )))
        .context("the half batch after an out of memory split");
        assert!(!EncoderError::Candle(wrapped).is_out_of_memory());
        let not_candle = EncoderError::InvalidInput {
            index: 0,
            reason: "out of memory".into(),
        };
        assert!(!not_candle.is_out_of_memory(), "only device errors count");
    }
}
