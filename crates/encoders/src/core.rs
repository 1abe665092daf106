//! The encoder core that [`CrossEncoder`](crate::CrossEncoder),
//! [`BiEncoder`](crate::BiEncoder) and the [`InferenceQueue`](crate::InferenceQueue) share:
//! loading (config, architecture, device and dtype, tokenizer, weights, the effective maximum
//! length), and the one forward path: checked encodings, packed into a batch, through the
//! model, back as f32 rows.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Device};

use crate::batching::{plan_batches, run_with_backoff, TokenBudget};
use crate::cancel::CancelToken;
use crate::config::ModelConfig;
use crate::device::Precision;
use crate::error::{EncoderError, Result};
use crate::models::{Architecture, InputLimits, Model, Output, PackedBatch};
use crate::options::CoreOptions;
use crate::tokenizer::{EncodedPair, PairTokenizer, Truncation};
use crate::weights::WeightFiles;

/// Default token budget of one forward pass: 4,096 on the CPU (bigger batches gain nothing
/// there and their temporaries cost page faults), 65,536 on CUDA.
pub fn default_max_batch_tokens(device: &Device) -> usize {
    if device.is_cuda() {
        65_536
    } else {
        4_096
    }
}

/// Where the time of one [`EncoderCore::run`] went.
pub(crate) struct RunStats {
    /// Forward passes that ran (not attempts that ran out of memory).
    pub(crate) batches: usize,
    /// Length sorting and batch planning.
    pub(crate) sort: Duration,
    /// The forward passes, host/device copies included.
    pub(crate) forward: Duration,
}

/// A loaded model with its tokenizer and batching settings.
pub(crate) struct EncoderCore {
    pub(crate) model: Box<dyn Model>,
    pub(crate) architecture: &'static Architecture,
    pub(crate) limits: InputLimits,
    pub(crate) tokenizer: PairTokenizer,
    pub(crate) max_length: usize,
    pub(crate) batch_size: usize,
    pub(crate) budget: TokenBudget,
    pub(crate) device: Device,
    pub(crate) dtype: DType,
    pub(crate) dir: PathBuf,
}

/// What a model kind decides before the core loads.
pub(crate) struct CoreRequest<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) config: &'a ModelConfig,
    pub(crate) architecture: &'static Architecture,
    pub(crate) output: Output,
    /// The tokenizer, as the model kind reads its inputs.
    pub(crate) tokenizer: PairTokenizer,
    /// The maximum length asked for (the user's, or the model's own setting).
    pub(crate) max_length: Option<usize>,
    pub(crate) truncation: Truncation,
}

impl EncoderCore {
    /// Open the device, check the tokenizer against `config.json`, load the weights on the
    /// backend for the device and dtype, and resolve the effective maximum length.
    pub(crate) fn load(request: CoreRequest<'_>, options: &CoreOptions) -> Result<Self> {
        options.validate()?;
        let dir = request.dir;
        let config_path = dir.join("config.json");
        let device = options.device.open()?;
        let dtype = options
            .dtype
            .unwrap_or_else(|| Precision::default_for(&device))
            .dtype();
        let tokenizer = request.tokenizer;
        if let Some(vocab_size) = request.config.common.vocab_size {
            tokenizer.check_vocab_fits(vocab_size, &config_path)?;
        }
        let files = WeightFiles::find(dir)?;
        let (model, dtype) = request.architecture.load(
            request.config,
            &files,
            &request.output,
            options.kernels,
            &device,
            dtype,
        )?;
        let limits = model.limits();
        let (tokenizer, max_length) = truncating_tokenizer(
            &tokenizer,
            request.max_length,
            limits.max_positions,
            &config_path,
            request.truncation,
        )?;
        let budget = options
            .max_batch_tokens
            .unwrap_or_else(|| default_max_batch_tokens(&device));
        Ok(EncoderCore {
            model,
            architecture: request.architecture,
            limits,
            tokenizer,
            max_length,
            batch_size: options.batch_size,
            budget: TokenBudget::new(Some(budget)),
            device,
            dtype,
            dir: dir.to_path_buf(),
        })
    }

    /// Reject encodings the embedding tables cannot look up, before any of them reaches the
    /// device: an out-of-range index there fails with a bare "invalid index" on the CPU and
    /// aborts a CUDA kernel, which poisons the device for the rest of the process.
    pub(crate) fn check_encodings(&self, encodings: &[EncodedPair]) -> Result<()> {
        let InputLimits {
            vocab_size: vocab,
            max_positions: positions,
            type_vocab_size: segments,
        } = self.limits;
        let problem = |e: &EncodedPair| -> Option<String> {
            if e.is_empty() {
                return Some("it has no tokens".into());
            }
            if e.len() > positions {
                return Some(format!(
                    "{} tokens, more than the model's {positions} positions (config.json)",
                    e.len()
                ));
            }
            if let Some(id) = e.ids.iter().find(|&&id| id as usize >= vocab) {
                return Some(format!(
                    "token id {id} is outside vocab_size = {vocab} in config.json"
                ));
            }
            let n = segments?;
            let t = e.type_ids.iter().find(|&&t| t as usize >= n)?;
            Some(format!(
                "segment id {t} is outside type_vocab_size = {n} in config.json"
            ))
        };
        for (index, e) in encodings.iter().enumerate() {
            if let Some(reason) = problem(e) {
                return Err(EncoderError::InvalidInput { index, reason });
            }
        }
        Ok(())
    }

    /// One forward pass over `encodings` (already checked): one row of f32 outputs each.
    pub(crate) fn forward(&self, encodings: &[&EncodedPair]) -> Result<Vec<Vec<f32>>> {
        let packed = PackedBatch::new(encodings, &self.device, self.dtype)?;
        let rows = self
            .model
            .forward(&packed)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        if rows.len() != encodings.len() {
            return Err(EncoderError::Candle(candle_core::Error::Msg(format!(
                "the model returned {} rows for {} inputs",
                rows.len(),
                encodings.len()
            ))));
        }
        Ok(rows)
    }

    /// Run the model over `encodings` in length-sorted batches within the batch size and the
    /// token budget, splitting a batch that runs out of device memory; returns one row of
    /// f32 outputs per encoding, in input order, and where the time went. Between batches it
    /// stops with [`EncoderError::Cancelled`] once `cancel` is cancelled.
    ///
    /// An encoding the model cannot look up (no tokens, more tokens than
    /// the model's positions, an id outside the vocabulary or segment table) is an
    /// [`EncoderError::InvalidInput`] naming its index; nothing runs on the device then.
    pub(crate) fn run(
        &self,
        encodings: &[EncodedPair],
        cancel: Option<&CancelToken>,
    ) -> Result<(Vec<Vec<f32>>, RunStats)> {
        self.check_encodings(encodings)?;
        let t = Instant::now();
        let lengths: Vec<usize> = encodings.iter().map(EncodedPair::len).collect();
        let batches = plan_batches(&lengths, self.batch_size, self.budget.get());
        let sort = t.elapsed();
        let t = Instant::now();
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); encodings.len()];
        let mut batches_run = 0;
        for batch in batches {
            if cancel.is_some_and(CancelToken::is_cancelled) {
                return Err(EncoderError::Cancelled);
            }
            let mut run = |idx: &[usize]| -> Result<Vec<Vec<f32>>> {
                let refs: Vec<&EncodedPair> = idx.iter().map(|&i| &encodings[i]).collect();
                let rows = self.forward(&refs)?;
                batches_run += 1; // batches that ran, not attempts that ran out of memory
                Ok(rows)
            };
            let rows = run_with_backoff(&batch, &lengths, &self.budget, &mut run)?;
            for (&i, row) in batch.iter().zip(rows) {
                out[i] = row;
            }
        }
        let stats = RunStats {
            batches: batches_run,
            sort,
            forward: t.elapsed(),
        };
        Ok((out, stats))
    }
}

/// Resolve the effective maximum length as sentence-transformers 6 does: the user's value
/// when given (it replaces the tokenizer's `model_max_length`), otherwise the smaller of the
/// tokenizer's `model_max_length` and the model's positions. A user value past the positions
/// is capped there with a warning (transformers would index past its position table and fail).
pub(crate) fn effective_max_length(
    user: Option<usize>,
    tokenizer: Option<usize>,
    positions: usize,
) -> Result<usize> {
    match user {
        Some(0) => Err(EncoderError::InvalidOption {
            name: "max_length".into(),
            value: "0".into(),
            reason: "must be at least 1".into(),
        }),
        Some(u) if u > positions => {
            tracing::warn!(
                max_length = u,
                max_position_embeddings = positions,
                "max_length is past the model's positions: inputs are cut at {positions} tokens"
            );
            Ok(positions)
        }
        Some(u) => Ok(u),
        None => Ok(tokenizer.map_or(positions, |t| t.min(positions))),
    }
}

/// The tokenizer truncating at the effective maximum length ([`effective_max_length`]).
///
/// A limit too small for the special tokens is blamed on where it came from: the user's
/// option, `max_position_embeddings` in `config_path`, or the tokenizer's `model_max_length`.
fn truncating_tokenizer(
    tokenizer: &PairTokenizer,
    user: Option<usize>,
    positions: usize,
    config_path: &Path,
    truncation: Truncation,
) -> Result<(PairTokenizer, usize)> {
    let max_length = effective_max_length(user, tokenizer.model_max_length(), positions)?;
    let truncating = tokenizer
        .with_truncation(max_length, truncation)
        .map_err(|e| {
            let reason = match &e {
                EncoderError::InvalidOption { reason, .. } => reason.clone(),
                _ => return e,
            };
            if user == Some(max_length) {
                e
            } else if positions == max_length {
                EncoderError::InvalidConfig {
                    path: config_path.to_path_buf(),
                    field: "max_position_embeddings".into(),
                    value: positions.to_string(),
                    reason,
                }
            } else {
                EncoderError::InvalidConfig {
                    path: tokenizer.config_path(),
                    field: "model_max_length".into(),
                    value: max_length.to_string(),
                    reason,
                }
            }
        })?;
    Ok((truncating, max_length))
}
