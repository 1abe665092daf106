//! Pair tokenisation identical to transformers' `tokenizer(query, doc, truncation=..., max_length=L)`.
//!
//! A model directory provides either `tokenizer.json` (loaded as is) or, like
//! `amberoad/bert-multilingual-passage-reranking-msmarco`, only `vocab.txt` (+ optionally
//! `tokenizer_config.json`), from which a WordPiece tokenizer is built the way transformers'
//! `BertTokenizer` does: lower-casing defaults to true when `do_lower_case` is absent, accent
//! stripping follows lower-casing unless `strip_accents` says otherwise, CJK characters are
//! split, control characters are removed.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::utils::truncation::TruncationError;
use tokenizers::{AddedToken, Encoding, Tokenizer};

use crate::error::{EncoderError, Result};
use crate::prompt::PromptTemplate;

/// How a (query, document) pair longer than the maximum length is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// Remove tokens from the longer of the two sequences first (transformers' default).
    #[default]
    LongestFirst,
    /// Only ever cut the document; fails if the query alone is too long.
    OnlySecond,
}

impl FromStr for Truncation {
    type Err = EncoderError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "longest_first" => Ok(Truncation::LongestFirst),
            "only_second" => Ok(Truncation::OnlySecond),
            other => Err(EncoderError::InvalidOption {
                name: "truncation".into(),
                value: other.into(),
                reason: "expected longest_first or only_second".into(),
            }),
        }
    }
}

impl std::fmt::Display for Truncation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Truncation::LongestFirst => "longest_first",
            Truncation::OnlySecond => "only_second",
        })
    }
}

/// Token ids of one encoded (query, document) pair, special tokens included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPair {
    /// Input ids.
    pub ids: Vec<u32>,
    /// Segment ids: 0 for `[CLS] query [SEP]`, 1 for `document [SEP]`.
    pub type_ids: Vec<u32>,
}

impl EncodedPair {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    /// True for an encoding without tokens (never produced with special tokens on).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The subset of `tokenizer_config.json` this crate reads.
#[derive(Debug, Clone, Default, Deserialize)]
struct TokenizerConfig {
    #[serde(default)]
    tokenizer_class: Option<String>,
    #[serde(default)]
    do_lower_case: Option<bool>,
    #[serde(default)]
    strip_accents: Option<bool>,
    #[serde(default)]
    tokenize_chinese_chars: Option<bool>,
    #[serde(default)]
    model_max_length: Option<serde_json::Value>,
    #[serde(default)]
    unk_token: Option<TokenSpec>,
    #[serde(default)]
    cls_token: Option<TokenSpec>,
    #[serde(default)]
    sep_token: Option<TokenSpec>,
    #[serde(default)]
    pad_token: Option<TokenSpec>,
    #[serde(default)]
    mask_token: Option<TokenSpec>,
}

/// A special token is written either as a string or as an `AddedToken` object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum TokenSpec {
    Plain(String),
    Object { content: String },
}

impl TokenSpec {
    fn content(&self) -> &str {
        match self {
            TokenSpec::Plain(s) => s,
            TokenSpec::Object { content } => content,
        }
    }
}

fn token_or(spec: &Option<TokenSpec>, default: &str) -> String {
    spec.as_ref()
        .map(|t| t.content().to_string())
        .unwrap_or_else(|| default.to_string())
}

/// A tokenizer for (query, document) pairs with truncation settings applied.
#[derive(Clone)]
pub struct PairTokenizer {
    inner: Tokenizer,
    model_max_length: Option<usize>,
    source: PathBuf,
    /// `tokenizer_config.json` (read when it exists).
    config_path: PathBuf,
    /// `(max_length, strategy)` applied by `encode_*` (the inner tokenizer itself never
    /// truncates).
    truncation: Option<(usize, Truncation)>,
    /// True when the tokens of a text before a word end followed by a space do not depend
    /// on what follows (see [`tokenizes_words_alone`]): long texts are then tokenised only
    /// as far as truncation or passage cutting needs.
    words_alone: bool,
    /// A causal reranker's prompt: pairs are rendered by it and tokenised as one text.
    prompt: Option<std::sync::Arc<Prompt>>,
}

/// A prompt template with what its tokenisation needs.
#[derive(Debug)]
struct Prompt {
    template: PromptTemplate,
    /// The tokens every rendering ends with: restored at the end of a prompt cut short.
    tail: Vec<u32>,
    /// The tokens of the prompt of an empty pair (its fixed text).
    overhead: usize,
}

impl std::fmt::Debug for PairTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairTokenizer")
            .field("source", &self.source)
            .field("model_max_length", &self.model_max_length)
            .finish()
    }
}

fn read_tokenizer_config(path: &Path) -> Result<TokenizerConfig> {
    if !path.exists() {
        return Ok(TokenizerConfig::default());
    }
    let text = EncoderError::read_text(path)?;
    serde_json::from_str(&text).map_err(|e| EncoderError::malformed(path, e))
}

/// Parse `vocab.txt` as transformers' `load_vocab` does: one token per line, the line number
/// is the id, `\n` or `\r\n` line ends, later duplicates win.
pub(crate) fn parse_vocab(text: &str) -> Vec<String> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    if text.ends_with('\n') {
        lines.pop();
    }
    lines
        .into_iter()
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect()
}

impl PairTokenizer {
    /// Load the tokenizer of a model directory: `tokenizer.json` when present, otherwise
    /// WordPiece built from `vocab.txt` and `tokenizer_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        let config_path = dir.join("tokenizer_config.json");
        let config = read_tokenizer_config(&config_path)?;
        if json.exists() {
            Self::from_tokenizer_json(&json, &config, &config_path)
        } else {
            let vocab = dir.join("vocab.txt");
            if !vocab.exists() {
                return Err(EncoderError::MissingFile {
                    path: dir.join("tokenizer.json"),
                    what: format!(
                        "neither tokenizer.json nor vocab.txt exists in {}",
                        dir.display()
                    ),
                });
            }
            Self::from_vocab_with_config(&vocab, &config, &config_path)
        }
    }

    fn from_tokenizer_json(
        path: &Path,
        config: &TokenizerConfig,
        config_path: &Path,
    ) -> Result<Self> {
        let text = EncoderError::read_text(path)?;
        let mut inner = Tokenizer::from_str(&text).map_err(|e| EncoderError::malformed(path, e))?;
        // Without a post-processor no [CLS]/[SEP] is added, and a model trained with them
        // would score inputs it never saw, without a word: refuse.
        if inner.get_post_processor().is_none() {
            return Err(EncoderError::InvalidConfig {
                path: path.to_path_buf(),
                field: "post_processor".into(),
                value: "null".into(),
                reason: "the tokenizer would add no special tokens ([CLS], [SEP]) to the \
                         model's inputs; give the tokenizer.json the model was trained with"
                    .into(),
            });
        }
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| EncoderError::malformed(path, e))?;
        if config.tokenizer_class.as_deref() == Some("XLMRobertaTokenizer") {
            as_transformers_builds_xlm_roberta(&mut inner, path)?;
        }
        Ok(Self {
            words_alone: tokenizes_words_alone(&inner),
            inner,
            model_max_length: model_max_length(config, config_path)?,
            source: path.to_path_buf(),
            config_path: config_path.to_path_buf(),
            truncation: None,
            prompt: None,
        })
    }

    /// Build a BERT WordPiece tokenizer from `vocab.txt` (and an optional
    /// `tokenizer_config.json` next to it), as transformers' `BertTokenizer` does.
    pub fn from_vocab_file(vocab_path: &Path) -> Result<Self> {
        let config_path = vocab_path
            .parent()
            .map(|p| p.join("tokenizer_config.json"))
            .unwrap_or_else(|| PathBuf::from("tokenizer_config.json"));
        let config = read_tokenizer_config(&config_path)?;
        Self::from_vocab_with_config(vocab_path, &config, &config_path)
    }

    fn from_vocab_with_config(
        vocab_path: &Path,
        config: &TokenizerConfig,
        config_path: &Path,
    ) -> Result<Self> {
        let text = EncoderError::read_text(vocab_path)?;
        let tokens = parse_vocab(&text);
        if tokens.is_empty() {
            return Err(EncoderError::malformed(vocab_path, "vocabulary is empty"));
        }
        let mut vocab: ahash::AHashMap<String, u32> = ahash::AHashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            vocab.insert(t.clone(), i as u32);
        }
        let unk = token_or(&config.unk_token, "[UNK]");
        let cls = token_or(&config.cls_token, "[CLS]");
        let sep = token_or(&config.sep_token, "[SEP]");
        let pad = token_or(&config.pad_token, "[PAD]");
        let mask = token_or(&config.mask_token, "[MASK]");
        let id_of = |tok: &str, field: &str| {
            vocab
                .get(tok)
                .copied()
                .ok_or_else(|| EncoderError::InvalidConfig {
                    path: vocab_path.to_path_buf(),
                    field: field.into(),
                    value: tok.into(),
                    reason: "special token is not in the vocabulary".into(),
                })
        };
        let cls_id = id_of(&cls, "cls_token")?;
        let sep_id = id_of(&sep, "sep_token")?;
        id_of(&unk, "unk_token")?;
        let wordpiece = WordPiece::builder()
            .vocab(vocab.clone())
            .unk_token(unk.clone())
            .continuing_subword_prefix("##".into())
            .max_input_chars_per_word(100)
            .build()
            .map_err(|e| EncoderError::malformed(vocab_path, e))?;
        let lowercase = config.do_lower_case.unwrap_or(true);
        let mut inner = Tokenizer::new(wordpiece);
        inner
            .with_normalizer(Some(BertNormalizer::new(
                true,
                config.tokenize_chinese_chars.unwrap_or(true),
                config.strip_accents,
                lowercase,
            )))
            .map_err(|e| EncoderError::malformed(vocab_path, e))?;
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        inner.with_post_processor(Some(BertProcessing::new(
            (sep.clone(), sep_id),
            (cls.clone(), cls_id),
        )));
        let specials: Vec<AddedToken> = [pad, unk, cls, sep, mask]
            .into_iter()
            .filter(|t| vocab.contains_key(t))
            .map(|t| AddedToken::from(t, true))
            .collect();
        inner
            .add_special_tokens(specials)
            .map_err(|e| EncoderError::malformed(vocab_path, e))?;
        Ok(Self {
            words_alone: tokenizes_words_alone(&inner),
            inner,
            model_max_length: model_max_length(config, config_path)?,
            source: vocab_path.to_path_buf(),
            config_path: config_path.to_path_buf(),
            truncation: None,
            prompt: None,
        })
    }

    /// `model_max_length` from `tokenizer_config.json`, when it is a real limit.
    pub fn model_max_length(&self) -> Option<usize> {
        self.model_max_length
    }

    /// The file the tokenizer was built from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The `tokenizer_config.json` next to it (which may not exist).
    pub fn config_path(&self) -> PathBuf {
        self.config_path.clone()
    }

    /// Id of a token, if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// A copy that renders pairs with `template` (a causal reranker's prompt) and tokenises
    /// the prompt as one text, without special tokens.
    pub fn with_prompt(&self, template: PromptTemplate) -> Result<Self> {
        let encode = |q: &str, d: &str| -> Result<Vec<u32>> {
            let text = template.render(q, d)?;
            let enc = self
                .inner
                .encode_fast(text.as_str(), false)
                .map_err(|e| Self::tokenizer_error("encoding a prompt".into(), e))?;
            Ok(enc.get_ids().to_vec())
        };
        // The tail: the longest common token suffix of two renderings with different
        // contents (what sentence-transformers restores at the end of a cut prompt).
        let (a, b) = (encode("0", "0")?, encode("1 2 3 4", "1 2 3 4")?);
        let common = a
            .iter()
            .rev()
            .zip(b.iter().rev())
            .take_while(|(x, y)| x == y)
            .count();
        let tail = a[a.len() - common..].to_vec();
        let overhead = encode("", "")?.len();
        let mut copy = self.clone();
        copy.prompt = Some(std::sync::Arc::new(Prompt {
            template,
            tail,
            overhead,
        }));
        Ok(copy)
    }

    /// The prompt template, for a causal reranker.
    pub fn prompt(&self) -> Option<&PromptTemplate> {
        self.prompt.as_ref().map(|p| &p.template)
    }

    /// A copy whose encodings are truncated to `max_length` tokens (special tokens included).
    pub fn with_truncation(&self, max_length: usize, truncation: Truncation) -> Result<Self> {
        if let Some(prompt) = &self.prompt {
            if max_length <= prompt.tail.len() {
                return Err(EncoderError::InvalidOption {
                    name: "max_length".into(),
                    value: max_length.to_string(),
                    reason: format!(
                        "must exceed the {} tokens the prompt always ends with",
                        prompt.tail.len()
                    ),
                });
            }
            let mut copy = self.clone();
            copy.truncation = Some((max_length, truncation));
            return Ok(copy);
        }
        let added = self.special_tokens(true);
        if max_length <= added {
            return Err(EncoderError::InvalidOption {
                name: "max_length".into(),
                value: max_length.to_string(),
                reason: format!("must exceed the {added} special tokens of a pair"),
            });
        }
        let mut copy = self.clone();
        copy.truncation = Some((max_length, truncation));
        Ok(copy)
    }

    /// The maximum length set by [`with_truncation`](Self::with_truncation).
    pub fn max_length(&self) -> Option<usize> {
        self.truncation.map(|(max_length, _)| max_length)
    }

    /// Check that every id this tokenizer can produce has a row in a model's embedding table
    /// of `vocab_size` rows (`config_path` names the file that number came from).
    ///
    /// The base vocabulary, or a special token every input carries, reaching past the table
    /// means the tokenizer belongs to another model: that is an error, reported before any
    /// weights are loaded. Added tokens past the table only get a warning here; an input that
    /// actually contains one is rejected when it is scored
    /// ([`EncoderError::InvalidInput`]).
    pub fn check_vocab_fits(&self, vocab_size: usize, config_path: &Path) -> Result<()> {
        let mismatch = |what: String| EncoderError::InvalidConfig {
            path: config_path.to_path_buf(),
            field: "vocab_size".into(),
            value: vocab_size.to_string(),
            reason: format!(
                "the tokenizer {} {what}, past the model's embedding table: \
                 the tokenizer and the model do not belong together",
                self.source.display()
            ),
        };
        let base_max = self.inner.get_vocab(false).into_values().max();
        if let Some(id) = base_max.filter(|&id| id as usize >= vocab_size) {
            return Err(mismatch(format!("has base-vocabulary ids up to {id}")));
        }
        for probe in [self.encode_pair("a", "b")?, self.encode_single("a")?] {
            if let Some(&id) = probe.ids.iter().find(|&&id| id as usize >= vocab_size) {
                return Err(mismatch(format!(
                    "puts special token id {id} in every input"
                )));
            }
        }
        let mut past: Vec<(u32, String)> = self
            .inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(id, _)| *id as usize >= vocab_size)
            .map(|(id, token)| (id, token.content))
            .collect();
        if !past.is_empty() {
            past.sort();
            tracing::warn!(
                tokenizer = %self.source.display(),
                config = %config_path.display(),
                vocab_size,
                count = past.len(),
                first = ?past.first(),
                "added tokens have ids outside the model's embedding table; \
                 inputs that contain them will be rejected"
            );
        }
        Ok(())
    }

    /// The special tokens its post-processor adds to one input: to a (query, document) pair
    /// when `pair` (`[CLS] q [SEP] d [SEP]`: 3 for BERT and ModernBERT), else to a text alone
    /// (`[CLS] t [SEP]`: 2). 0 for a tokenizer without a post-processor.
    pub fn special_tokens(&self, pair: bool) -> usize {
        if let Some(prompt) = &self.prompt {
            return prompt.overhead;
        }
        self.inner
            .get_post_processor()
            .map(|p| tokenizers::PostProcessor::added_tokens(p, pair))
            .unwrap_or(0)
    }

    fn tokenizer_error(context: String, e: impl std::fmt::Display) -> EncoderError {
        EncoderError::Tokenizer {
            context,
            message: e.to_string(),
            input: None,
        }
    }

    /// Encode one (query, document) pair with special tokens.
    ///
    /// Each side is tokenised in full, cut to the lengths [`pair_lengths`] gives, then the
    /// post-processor adds the special tokens: the same steps and the same lengths as
    /// transformers' fast tokenizer. (tokenizers 0.23.2's own pipeline stops tokenising each
    /// side at `max_length` tokens, which makes `longest_first` pick the wrong side when both
    /// sides are long; and its `truncate_encodings` keeps every cut-off window as an
    /// "overflowing" encoding, which the pair post-processor then combines window by window:
    /// memory and time grow with the product of the two lengths. The cut here keeps no
    /// overflow, so the cost stays linear in the input.)
    pub fn encode_pair(&self, query: &str, document: &str) -> Result<EncodedPair> {
        if let Some(prompt) = &self.prompt {
            return self.encode_prompt(prompt, query, document);
        }
        let enc = self.encode_pair_encoding(query, document)?;
        Ok(EncodedPair {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
        })
    }

    fn encode_pair_encoding(&self, query: &str, document: &str) -> Result<Encoding> {
        let ctx = || {
            format!(
                "encoding pair (query of {} bytes, document of {} bytes)",
                query.len(),
                document.len()
            )
        };
        let err = |e| Self::tokenizer_error(ctx(), e);
        let Some((max_length, strategy)) = self.truncation else {
            let first = self.inner.encode_fast(query, false).map_err(err)?;
            let mut second = self.inner.encode_fast(document, false).map_err(err)?;
            second.set_type_ids(vec![1; second.len()]);
            return self
                .inner
                .post_process(first, Some(second), true)
                .map_err(err);
        };
        let budget = max_length.saturating_sub(self.special_tokens(true));
        // Each side keeps at most `budget` tokens, so a long side is tokenised only as far
        // as a word end past them (`Head::Partial`). Its exact length matters only when it
        // decides which side is longer (longest_first) or the query's room (only_second):
        // then it is tokenised in full.
        let mut first = self.encode_head(query, budget, false).map_err(err)?;
        let mut second = self.encode_head(document, budget, false).map_err(err)?;
        let (n1, n2) = (first.tokens(), second.tokens());
        let exact_needed = match strategy {
            Truncation::LongestFirst => (
                first.is_partial() && !(second.is_complete() && n2 < n1),
                second.is_partial() && !(first.is_complete() && n1 < n2),
            ),
            Truncation::OnlySecond => (first.is_partial(), false),
        };
        if exact_needed.0 {
            first = Head::Complete(self.inner.encode_fast(query, false).map_err(err)?);
        }
        if exact_needed.1 {
            second = Head::Complete(self.inner.encode_fast(document, false).map_err(err)?);
        }
        let (first, mut second) = (first.into_encoding(), second.into_encoding());
        second.set_type_ids(vec![1; second.len()]);
        let (n1, n2) = pair_lengths(first.len(), second.len(), budget, strategy).map_err(|e| {
            let why = format!(
                "{e}: only_second truncation cuts the document only, and the query \
                 ({} tokens) with the special tokens leaves no room for one document \
                 token in max_length = {max_length}; use longest_first, a shorter \
                 query or a larger max_length",
                first.len()
            );
            Self::tokenizer_error(ctx(), why)
        })?;
        let (first, second) = (keep_prefix(first, n1), keep_prefix(second, n2));
        self.inner
            .post_process(first, Some(second), true)
            .map_err(err)
    }

    /// The tokens of `text` (no special tokens) when only its first `need` matter: all of
    /// them for a short text or a tokenizer that cannot be cut ([`Head::Complete`]);
    /// otherwise those of a prefix that holds at least `need + HEAD_MARGIN` tokens
    /// ([`Head::Partial`]). The prefix starts at 8 bytes a token and doubles while it holds too
    /// few, so a text with fewer tokens than its length suggests costs at most about three
    /// passes over the whole text.
    ///
    /// The prefix ends at a word end within [`WORD_END_REACH`] bytes of the guess, and then
    /// its tokens are the text's own first tokens. A text with no word end there (a run of
    /// CJK characters, which a byte-level BPE reads as one word; words joined by commas with
    /// no space) is cut at a character boundary instead, so its cost stays bounded by what is
    /// needed too: only the tokens next to the cut can differ from the whole text's, and the
    /// prefix holds `HEAD_MARGIN` tokens more than are kept (in practice hundreds more).
    fn encode_head(
        &self,
        text: &str,
        need: usize,
        offsets: bool,
    ) -> std::result::Result<Head, tokenizers::Error> {
        let encode = |t: &str| {
            if offsets {
                self.inner.encode(t, false)
            } else {
                self.inner.encode_fast(t, false)
            }
        };
        let want = need.saturating_add(HEAD_MARGIN);
        let mut guess = want.saturating_mul(8).max(4096);
        while self.words_alone && guess < text.len() {
            let reach = guess.saturating_add(WORD_END_REACH);
            let cut = word_end_from(text, guess, reach).unwrap_or_else(|| char_floor(text, reach));
            if cut >= text.len() {
                break;
            }
            let enc = encode(&text[..cut])?;
            if enc.len() >= want {
                return Ok(Head::Partial(enc));
            }
            guess = guess.saturating_mul(2);
        }
        encode(text).map(Head::Complete)
    }

    /// The prompt of a pair, tokenised: when it is longer than the maximum length, its first
    /// tokens and then the template's tail, so the document's end is cut (or the query's, when
    /// the document is gone), as sentence-transformers 6 cuts it. A long prompt is tokenised
    /// only as far as that needs (see [`encode_head`](Self::encode_head)).
    fn encode_prompt(&self, prompt: &Prompt, query: &str, document: &str) -> Result<EncodedPair> {
        let text = prompt.template.render(query, document)?;
        let ctx = || {
            format!(
                "encoding the prompt of a pair (query of {} bytes, document of {} bytes)",
                query.len(),
                document.len()
            )
        };
        let mut ids = match self.truncation {
            Some((max_length, _)) => self
                .encode_head(&text, max_length, false)
                .map_err(|e| Self::tokenizer_error(ctx(), e))?
                .into_encoding()
                .get_ids()
                .to_vec(),
            None => self
                .inner
                .encode_fast(text.as_str(), false)
                .map_err(|e| Self::tokenizer_error(ctx(), e))?
                .get_ids()
                .to_vec(),
        };
        if let Some((max_length, _)) = self.truncation {
            if ids.len() >= max_length {
                ids.truncate(max_length - prompt.tail.len());
                ids.extend_from_slice(&prompt.tail);
            }
        }
        Ok(EncodedPair {
            type_ids: vec![0; ids.len()],
            ids,
        })
    }

    /// Encode one text with special tokens (`[CLS] text [SEP]`); a causal reranker reads it
    /// as the query of a pair with an empty document.
    pub fn encode_single(&self, text: &str) -> Result<EncodedPair> {
        if let Some(prompt) = &self.prompt {
            return self.encode_prompt(prompt, text, "");
        }
        let ctx = || format!("encoding text of {} bytes", text.len());
        let enc = match self.truncation {
            Some((max_length, _)) => {
                let budget = max_length.saturating_sub(self.special_tokens(false));
                let head = self
                    .encode_head(text, budget, false)
                    .map_err(|e| Self::tokenizer_error(ctx(), e))?;
                keep_prefix(head.into_encoding(), budget)
            }
            None => self
                .inner
                .encode_fast(text, false)
                .map_err(|e| Self::tokenizer_error(ctx(), e))?,
        };
        let enc = self
            .inner
            .post_process(enc, None, true)
            .map_err(|e| Self::tokenizer_error(ctx(), e))?;
        Ok(EncodedPair {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
        })
    }

    /// Number of tokens in `text` (no special tokens, no truncation); cheaper than
    /// [`token_spans`](Self::token_spans), which also works out the offsets.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        let enc = self.inner.encode_fast(text, false).map_err(|e| {
            Self::tokenizer_error(format!("encoding text of {} bytes", text.len()), e)
        })?;
        Ok(enc.len())
    }

    /// Byte ranges in `text` of its tokens (no special tokens, no truncation), e.g. to cut
    /// a long document into passages of a given number of model tokens.
    pub fn token_spans(&self, text: &str) -> Result<Vec<(usize, usize)>> {
        let enc = self.inner.encode(text, false).map_err(|e| {
            Self::tokenizer_error(format!("encoding text of {} bytes", text.len()), e)
        })?;
        Ok(enc.get_offsets().to_vec())
    }

    /// The byte ranges of the first tokens of `text`: all of them, or at least the first
    /// `need` when the text is long (see [`token_spans`](Self::token_spans)). Cutting the
    /// first `need` tokens into passages needs no more.
    pub fn token_spans_head(&self, text: &str, need: usize) -> Result<Vec<(usize, usize)>> {
        let head = self.encode_head(text, need, true).map_err(|e| {
            Self::tokenizer_error(format!("encoding text of {} bytes", text.len()), e)
        })?;
        Ok(head.into_encoding().get_offsets().to_vec())
    }

    /// Encode many pairs in parallel (rayon); output order equals input order.
    pub fn encode_pairs<Q: AsRef<str> + Sync, D: AsRef<str> + Sync>(
        &self,
        pairs: &[(Q, D)],
    ) -> Result<Vec<EncodedPair>> {
        pairs
            .par_iter()
            .enumerate()
            .map(|(i, (q, d))| {
                self.encode_pair(q.as_ref(), d.as_ref())
                    .map_err(|e| at_input(e, i))
            })
            .collect()
    }

    /// Encode many single texts in parallel; output order equals input order.
    pub fn encode_texts<T: AsRef<str> + Sync>(&self, texts: &[T]) -> Result<Vec<EncodedPair>> {
        texts
            .par_iter()
            .enumerate()
            .map(|(i, t)| self.encode_single(t.as_ref()).map_err(|e| at_input(e, i)))
            .collect()
    }
}

/// How many tokens of a query of `n1` and a document of `n2` tokens (special tokens not
/// counted) a pair cut to `budget` tokens keeps: the rule of `tokenizers`'
/// `truncate_encodings`, which transformers' (fast) tokenizers apply.
///
/// `longest_first`: a pair that fits is kept whole; if the shorter side fits in half the
/// budget it is kept and the longer side gets the rest; otherwise each side gets half, and
/// the odd token goes to the longer side (to the document when both are equally long).
/// `only_second`: the document loses what is too much, and must keep at least one token.
fn pair_lengths(
    n1: usize,
    n2: usize,
    budget: usize,
    strategy: Truncation,
) -> std::result::Result<(usize, usize), TruncationError> {
    if n1 + n2 <= budget {
        return Ok((n1, n2));
    }
    match strategy {
        Truncation::LongestFirst => {
            let (short, long) = (n1.min(n2), n1.max(n2));
            let (keep_short, keep_long) = if 2 * short <= budget {
                (short, budget - short)
            } else {
                (budget / 2, budget / 2 + budget % 2)
            };
            let keep_long = keep_long.min(long);
            Ok(if n1 > n2 {
                (keep_long, keep_short)
            } else {
                (keep_short, keep_long)
            })
        }
        Truncation::OnlySecond => {
            let to_remove = n1 + n2 - budget;
            if n2 > to_remove {
                Ok((n1, n2 - to_remove))
            } else {
                Err(TruncationError::SequenceTooShort)
            }
        }
    }
}

/// Tokens past what is needed that a prefix must still hold (see `encode_head`).
const HEAD_MARGIN: usize = 16;

/// The tokens of a whole text, or of a prefix that holds all of those needed.
enum Head {
    Complete(Encoding),
    Partial(Encoding),
}

impl Head {
    fn tokens(&self) -> usize {
        match self {
            Head::Complete(e) | Head::Partial(e) => e.len(),
        }
    }
    fn is_complete(&self) -> bool {
        matches!(self, Head::Complete(_))
    }
    fn is_partial(&self) -> bool {
        !self.is_complete()
    }
    fn into_encoding(self) -> Encoding {
        match self {
            Head::Complete(e) | Head::Partial(e) => e,
        }
    }
}

/// How far past the guessed cut `encode_head` looks for a word end before it cuts a word.
const WORD_END_REACH: usize = 4096;

/// The largest char boundary of `text` at or below `i` (the text's length past its end).
fn char_floor(text: &str, i: usize) -> usize {
    if i >= text.len() {
        return text.len();
    }
    (0..=i)
        .rev()
        .find(|&p| text.is_char_boundary(p))
        .unwrap_or(0)
}

/// The first byte position in `from..until` where a word ends: an ASCII space, tab or line
/// break right after a letter or digit. `None` when there is none.
fn word_end_from(text: &str, from: usize, until: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    (from.max(1)..bytes.len().min(until)).find(|&p| {
        // An ASCII byte is always a char boundary in UTF-8.
        matches!(bytes[p], b' ' | b'\t' | b'\n' | b'\r')
            && text[..p]
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric)
    })
}

/// True when `tokenizer` gives the tokens of a text up to a word end (see [`word_end_from`])
/// whatever follows it: its normalizer works char by char (Unicode normal forms, lower
/// case, accents, BERT's cleaning), its pre-tokenizer splits at whitespace (BERT, byte-level,
/// whitespace, metaspace, punctuation, digits), and no added token spans a word end. Any
/// other tokenizer is always run on the whole text.
fn tokenizes_words_alone(tokenizer: &Tokenizer) -> bool {
    fn all_of(value: &serde_json::Value, allowed: &[&str]) -> bool {
        match value {
            serde_json::Value::Null => true,
            serde_json::Value::Object(map) => match map.get("type").and_then(|t| t.as_str()) {
                Some("Sequence") => ["normalizers", "pretokenizers"]
                    .iter()
                    .filter_map(|k| map.get(*k))
                    .flat_map(|v| v.as_array().into_iter().flatten())
                    .all(|v| all_of(v, allowed)),
                // A regex split is local only for the known byte-level BPE patterns, whose
                // alternatives never join a letter or digit with the whitespace after it.
                Some("Split") => {
                    allowed.contains(&"Split")
                        && map
                            .get("pattern")
                            .and_then(|p| p.get("Regex"))
                            .and_then(|r| r.as_str())
                            .is_some_and(|r| WORD_LOCAL_SPLITS.contains(&r))
                }
                Some(t) => allowed.contains(&t),
                None => false,
            },
            _ => false,
        }
    }
    let (Ok(normalizer), Ok(pre)) = (
        serde_json::to_value(tokenizer.get_normalizer()),
        serde_json::to_value(tokenizer.get_pre_tokenizer()),
    ) else {
        return false;
    };
    let local_normalizer = all_of(
        &normalizer,
        &[
            "BertNormalizer",
            "NFC",
            "NFD",
            "NFKC",
            "NFKD",
            "Lowercase",
            "StripAccents",
        ],
    );
    let splits_words = all_of(
        &pre,
        &[
            "BertPreTokenizer",
            "ByteLevel",
            "Whitespace",
            "WhitespaceSplit",
            "Metaspace",
            "Punctuation",
            "Digits",
            "Split",
        ],
    );
    let added_within_words = tokenizer
        .get_added_tokens_decoder()
        .values()
        .any(|t| word_end_from(&t.content, 0, usize::MAX).is_some());
    local_normalizer && splits_words && !added_within_words
}

/// Give an XLM-RoBERTa tokenizer the normalizer and pre-tokenizer transformers 5 gives it.
///
/// transformers 5 does not run an `XLMRobertaTokenizer`'s `tokenizer.json` as written: it
/// keeps the vocabulary and the post-processor, keeps only the `Precompiled` part of the
/// normalizer (dropping the `Replace` of repeated spaces), and splits at whitespace before the
/// `Metaspace` pre-tokenizer. Read as written, the file gives other ids for texts with tabs or
/// line breaks, with leading or trailing spaces, or with spaces before a special token.
fn as_transformers_builds_xlm_roberta(tokenizer: &mut Tokenizer, path: &Path) -> Result<()> {
    use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
    use tokenizers::{NormalizerWrapper, PreTokenizerWrapper};
    fn precompiled(value: &serde_json::Value) -> Vec<serde_json::Value> {
        match value.get("type").and_then(|t| t.as_str()) {
            Some("Precompiled") => vec![value.clone()],
            Some("Sequence") => value
                .get("normalizers")
                .and_then(|n| n.as_array())
                .into_iter()
                .flatten()
                .flat_map(precompiled)
                .collect(),
            _ => Vec::new(),
        }
    }
    let current = serde_json::to_value(tokenizer.get_normalizer())
        .map_err(|e| EncoderError::malformed(path, e))?;
    let kept = precompiled(&current);
    let normalizer: Option<NormalizerWrapper> = match kept.len() {
        0 => None,
        _ => Some(
            serde_json::from_value(serde_json::json!({"type": "Sequence", "normalizers": kept}))
                .map_err(|e| EncoderError::malformed(path, e))?,
        ),
    };
    tokenizer
        .with_normalizer(normalizer)
        .map_err(|e| EncoderError::malformed(path, e))?;
    let pre = Sequence::new(vec![
        PreTokenizerWrapper::WhitespaceSplit(WhitespaceSplit),
        PreTokenizerWrapper::Metaspace(Metaspace::new('\u{2581}', PrependScheme::Always, true)),
    ]);
    tokenizer.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(pre)));
    Ok(())
}

/// The pre-tokenizer regexes of byte-level BPE tokenizers (Qwen2/Qwen3, and GPT-4's, which
/// Llama 3 uses) under which a word end followed by whitespace always ends a pre-token: the
/// tokens before it do not depend on the text after it.
const WORD_LOCAL_SPLITS: &[&str] = &[
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
];

/// The first `n` tokens of `enc`, with no "overflowing" remainder (tokenizers'
/// `Encoding::truncate` keeps every cut-off window, which the pair post-processor multiplies).
/// Like `Encoding::truncate`, the cut drops the sequence ranges, which post-processing sets.
fn keep_prefix(enc: Encoding, n: usize) -> Encoding {
    if n >= enc.len() {
        return enc;
    }
    Encoding::new(
        enc.get_ids()[..n].to_vec(),
        enc.get_type_ids()[..n].to_vec(),
        enc.get_tokens()[..n].to_vec(),
        enc.get_word_ids()[..n].to_vec(),
        enc.get_offsets()[..n].to_vec(),
        enc.get_special_tokens_mask()[..n].to_vec(),
        enc.get_attention_mask()[..n].to_vec(),
        Vec::new(),
        ahash::AHashMap::new(),
    )
}

/// `e`, failing input `index` of a batch, with that index (see [`EncoderError::input_index`]).
fn at_input(e: EncoderError, index: usize) -> EncoderError {
    match e {
        EncoderError::Tokenizer {
            context, message, ..
        } => EncoderError::Tokenizer {
            context: format!("input {index}: {context}"),
            message,
            input: Some(index),
        },
        other => other,
    }
}

/// `model_max_length` of `tokenizer_config.json` as a limit on the tokens of an input.
///
/// transformers writes `1e30` (VERY_LARGE_INTEGER) when a tokenizer has no limit; absent or
/// `null` means the same. `0` makes transformers' tokenizer skip truncation altogether (a
/// falsy `max_length`), so it is no limit either, with a warning: inputs are still cut at
/// `max_position_embeddings`, where transformers would fail with an index error. A negative
/// or fractional value (transformers fails on every truncating call) or anything but a
/// number is an error naming the file.
fn model_max_length(config: &TokenizerConfig, path: &Path) -> Result<Option<usize>> {
    let value = match &config.model_max_length {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let invalid = |reason: &str| EncoderError::InvalidConfig {
        path: path.to_path_buf(),
        field: "model_max_length".into(),
        value: value.to_string(),
        reason: reason.into(),
    };
    let v = value
        .as_f64()
        .ok_or_else(|| invalid("expected a number of tokens"))?;
    if v >= 1e12 {
        return Ok(None);
    }
    if v == 0.0 {
        tracing::warn!(
            file = %path.display(),
            "model_max_length is 0: treated as no tokenizer limit (transformers does not \
             truncate then); inputs are cut at the model's max_position_embeddings"
        );
        return Ok(None);
    }
    if v < 0.0 || v.fract() != 0.0 {
        return Err(invalid(
            "must be a whole number of tokens above 0 (or 1e30 for no limit)",
        ));
    }
    Ok(Some(v as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real article texts (the shared squad-articles corpus), every `step`-th one, with a
    /// multilingual one made of their sentences in other scripts.
    fn long_texts(step: usize) -> Vec<String> {
        let path = tantivy_rerank_testdata::shared_dir().join("data/squad-articles/corpus.jsonl");
        let text = std::fs::read_to_string(path).unwrap();
        let mut texts: Vec<String> = text
            .lines()
            .step_by(step)
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["text"].as_str().unwrap().to_string()
            })
            .collect();
        let mixed = "Zürich liegt am Zürichsee. 東京は日本の首都です。 Москва — столица России. \
                     Ελληνικά κείμενα, naïve café, 2024-11-24 ünïcödé\tand tabs\n"
            .repeat(400);
        texts.push(mixed);
        texts
    }

    #[test]
    fn long_texts_tokenised_in_part_give_the_tokens_of_the_whole_text() {
        let shared = tantivy_rerank_testdata::shared_dir();
        let texts = long_texts(8);
        let mut partial = 0;
        for dir in [
            "models/modernbert-tokenizer",
            "models/ms-marco-MiniLM-L-6-v2-config",
            "models/bert-base-multilingual-uncased",
        ] {
            let tok = PairTokenizer::from_dir(&shared.join(dir)).unwrap();
            assert!(tok.words_alone, "{dir}");
            let whole = PairTokenizer {
                words_alone: false,
                ..tok.clone()
            };
            for text in &texts {
                partial += usize::from(tok.encode_head(text, 300, false).unwrap().is_partial());
                let spans = tok.token_spans_head(text, 300).unwrap();
                let all = whole.token_spans(text).unwrap();
                assert!(spans.len() >= 300.min(all.len()), "{dir}");
                assert_eq!(
                    spans[..300.min(all.len())],
                    all[..300.min(all.len())],
                    "{dir}"
                );
            }
            for max_length in [16, 512] {
                for strategy in [Truncation::LongestFirst, Truncation::OnlySecond] {
                    let (t, w) = (
                        tok.with_truncation(max_length, strategy).unwrap(),
                        whole.with_truncation(max_length, strategy).unwrap(),
                    );
                    for (i, text) in texts.iter().enumerate() {
                        let other = &texts[(i + 1) % texts.len()];
                        let cut = other.char_indices().nth(3000).map_or(other.len(), |c| c.0);
                        // A query longer than the budget too (both sides cut), and a whole
                        // article as the query once.
                        let whole_query = (max_length == 512 && i % 3 == 0).then_some(other);
                        let queries = ["who built it?", &other[..cut]];
                        for query in queries.into_iter().chain(whole_query.map(String::as_str)) {
                            let what = format!("{dir}, {max_length}, {strategy:?}, text {i}");
                            match (t.encode_pair(query, text), w.encode_pair(query, text)) {
                                (Ok(a), Ok(b)) => assert_eq!(a, b, "{what}"),
                                (Err(a), Err(b)) => {
                                    assert_eq!(a.to_string(), b.to_string(), "{what}")
                                }
                                (a, b) => panic!("{what}: {a:?} vs {b:?}"),
                            }
                        }
                        assert_eq!(
                            t.encode_single(text).unwrap(),
                            w.encode_single(text).unwrap()
                        );
                    }
                }
            }
        }
        assert!(partial >= 3 * (texts.len() - 1), "{partial}");
    }

    /// Texts without a word end for kilobytes (a CJK run, words joined by commas) are cut
    /// inside a word, and their first tokens still equal the whole text's: the work stays
    /// bounded by what is needed.
    #[test]
    fn texts_without_word_ends_are_tokenised_in_part_too() {
        let shared = tantivy_rerank_testdata::shared_dir();
        let cjk = "東京は日本の首都であり、世界最大級の都市圏を形成する。中华人民共和国的首都是北京，                   一座有三千多年历史的城市。서울은대한민국의수도이다。"
            .repeat(600);
        let commas = (0..20_000)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(",");
        for dir in [
            "models/modernbert-tokenizer",
            "models/ms-marco-MiniLM-L-6-v2-config",
            "models/bert-base-multilingual-uncased",
        ] {
            let tok = PairTokenizer::from_dir(&shared.join(dir)).unwrap();
            let whole = PairTokenizer {
                words_alone: false,
                ..tok.clone()
            };
            for (what, text) in [("cjk", &cjk), ("commas", &commas)] {
                assert!(text.len() > 50_000 && word_end_from(text, 0, usize::MAX).is_none());
                for need in [8, 300, 510] {
                    let head = tok.encode_head(text, need, true).unwrap();
                    assert!(head.is_partial(), "{dir} {what}: bounded");
                    let spans = tok.token_spans_head(text, need).unwrap();
                    let all = whole.token_spans(text).unwrap();
                    assert!(spans.len() < all.len() / 4, "{dir} {what}: {}", spans.len());
                    assert_eq!(spans[..need], all[..need], "{dir} {what} need {need}");
                }
                let (t, w) = (
                    tok.with_truncation(512, Truncation::LongestFirst).unwrap(),
                    whole
                        .with_truncation(512, Truncation::LongestFirst)
                        .unwrap(),
                );
                assert_eq!(
                    t.encode_single(text).unwrap(),
                    w.encode_single(text).unwrap()
                );
                assert_eq!(
                    t.encode_pair("東京 query", text).unwrap(),
                    w.encode_pair("東京 query", text).unwrap(),
                    "{dir} {what}"
                );
            }
        }
    }

    #[test]
    fn word_ends_and_which_tokenizers_may_be_cut() {
        let end = |t: &str, from| word_end_from(t, from, usize::MAX);
        assert_eq!(end("ab cd", 0), Some(2));
        assert_eq!(end("ab  cd ", 3), Some(6));
        assert_eq!(end("ab, cd", 0), None);
        assert_eq!(end("ab,cd ef", 0), Some(5));
        assert_eq!(end("é\tx", 0), Some(2));
        assert_eq!(end("abc", 0), None);
        // Only within reach.
        assert_eq!(word_end_from("abcdef gh", 0, 4), None);
        assert_eq!(char_floor("aé", 2), 1);
        assert_eq!(char_floor("aé", 9), 3);
        let json = |pre: &str, added: &str| {
            format!(
                r#"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[{added}],
                "normalizer":{{"type":"Lowercase"}},"pre_tokenizer":{pre},"post_processor":null,
                "decoder":null,"model":{{"type":"WordLevel","vocab":{{"[UNK]":0,"a":1}},
                "unk_token":"[UNK]"}}}}"#
            )
        };
        let tok = |pre: &str, added: &str| Tokenizer::from_str(&json(pre, added)).unwrap();
        let token = |content: &str| {
            format!(
                r#"{{"id":2,"content":"{content}","single_word":false,"lstrip":false,
                "rstrip":false,"normalized":false,"special":false}}"#
            )
        };
        assert!(tokenizes_words_alone(&tok(r#"{"type":"Whitespace"}"#, "")));
        assert!(tokenizes_words_alone(&tok(
            r#"{"type":"Sequence","pretokenizers":[{"type":"WhitespaceSplit"},{"type":"Digits","individual_digits":true}]}"#,
            &token("   ")
        )));
        // A regex split can match across a word end; so can an added token.
        assert!(!tokenizes_words_alone(&tok(
            r#"{"type":"Split","pattern":{"String":"a b"},"behavior":"Isolated","invert":false}"#,
            ""
        )));
        assert!(!tokenizes_words_alone(&tok(
            r#"{"type":"Whitespace"}"#,
            &token("new york")
        )));
        assert!(tokenizes_words_alone(&tok("null", "")));
    }

    #[test]
    fn vocab_accepts_crlf_and_keeps_line_numbers() {
        let v = parse_vocab("[PAD]\r\n[UNK]\r\n\r\nhello\r\n");
        assert_eq!(v, vec!["[PAD]", "[UNK]", "", "hello"]);
        let v = parse_vocab("a\nb");
        assert_eq!(v, vec!["a", "b"]);
    }

    #[test]
    fn invalid_utf8_vocab_is_reported_with_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vocab.txt");
        std::fs::write(&path, b"[PAD]\n[UNK]\nok\n\xff\xfe\n").unwrap();
        let err = PairTokenizer::from_vocab_file(&path).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("vocab.txt") && msg.contains("line 4"), "{msg}");
    }

    #[test]
    fn missing_tokenizer_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = PairTokenizer::from_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("tokenizer.json") && err.contains("vocab.txt"),
            "{err}"
        );
    }

    #[test]
    fn model_max_length_is_read_as_transformers_does() {
        let path = Path::new("m/tokenizer_config.json");
        let limit = |json: &str| {
            let c: TokenizerConfig = serde_json::from_str(json).unwrap();
            model_max_length(&c, path)
        };
        assert_eq!(limit(r#"{"model_max_length": 1e30}"#).unwrap(), None);
        assert_eq!(
            limit(r#"{"model_max_length": 1000000000000000019884624838656}"#).unwrap(),
            None
        );
        assert_eq!(limit(r#"{"model_max_length": 512}"#).unwrap(), Some(512));
        assert_eq!(limit(r#"{"model_max_length": null}"#).unwrap(), None);
        assert_eq!(limit(r#"{}"#).unwrap(), None);
        // transformers does not truncate at all with 0: no limit, and a warning.
        let (zero, warnings) =
            crate::test_support::warnings_of(|| limit(r#"{"model_max_length": 0}"#));
        assert_eq!(zero.unwrap(), None);
        assert!(
            warnings.len() == 1
                && warnings[0].contains("model_max_length is 0")
                && warnings[0].contains("m/tokenizer_config.json"),
            "{warnings:?}"
        );
        let (_, warnings) =
            crate::test_support::warnings_of(|| limit(r#"{"model_max_length": 512}"#));
        assert!(warnings.is_empty(), "{warnings:?}");
        // transformers fails on every truncating call with these.
        for bad in ["-1", "-512", "0.5", "512.5", "\"512\"", "true"] {
            let err = limit(&format!(r#"{{"model_max_length": {bad}}}"#))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("m/tokenizer_config.json") && err.contains("model_max_length"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn vocab_fit_errors_on_base_and_special_ids_and_tolerates_rare_added_ids() {
        // The fixture's base vocabulary is ids 0..=639; [UNK] 640, [CLS] 641, [SEP] 642,
        // [PAD] 643 and [MASK] 644 are added tokens. Every input carries [CLS] and [SEP].
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/modernbert-sliding");
        let tok = PairTokenizer::from_dir(&dir).unwrap();
        let config = Path::new("model/config.json");
        assert!(tok.check_vocab_fits(704, config).is_ok());
        // [PAD] and [MASK] past the table: only a warning, inputs with them fail later.
        assert!(tok.check_vocab_fits(643, config).is_ok());
        let err = tok.check_vocab_fits(642, config).unwrap_err().to_string();
        assert!(
            err.contains("vocab_size = 642")
                && err.contains("model/config.json")
                && err.contains("special token id 642")
                && err.contains("tokenizer.json"),
            "{err}"
        );
        let err = tok.check_vocab_fits(639, config).unwrap_err().to_string();
        assert!(err.contains("base-vocabulary ids up to 639"), "{err}");
    }

    #[test]
    fn pair_lengths_follow_the_tokenizers_rule() {
        use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};
        let encoding = |n: usize| {
            Encoding::new(
                vec![7; n],
                vec![0; n],
                vec!["t".into(); n],
                vec![None; n],
                vec![(0, 0); n],
                vec![0; n],
                vec![1; n],
                Vec::new(),
                ahash::AHashMap::new(),
            )
        };
        let mut checked = 0;
        for (ours, theirs) in [
            (Truncation::LongestFirst, TruncationStrategy::LongestFirst),
            (Truncation::OnlySecond, TruncationStrategy::OnlySecond),
        ] {
            for budget in 1..14 {
                for n1 in 0..18 {
                    for n2 in 0..18 {
                        let params = TruncationParams {
                            direction: TruncationDirection::Right,
                            max_length: budget,
                            strategy: theirs,
                            stride: 0,
                        };
                        let want = tokenizers::utils::truncation::truncate_encodings(
                            encoding(n1),
                            Some(encoding(n2)),
                            &params,
                        )
                        .map(|(a, b)| (a.len(), b.map_or(0, |b| b.len())));
                        let got = pair_lengths(n1, n2, budget, ours);
                        match (&got, &want) {
                            (Ok(g), Ok(w)) => assert_eq!(g, w, "{ours} {n1}+{n2} in {budget}"),
                            (Err(_), Err(_)) => {}
                            _ => panic!("{ours} {n1}+{n2} in {budget}: {got:?} vs {want:?}"),
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 2 * 13 * 18 * 18);
        // The worked cases of the doc comment.
        let lf = Truncation::LongestFirst;
        assert_eq!(pair_lengths(3, 100, 10, lf).unwrap(), (3, 7));
        assert_eq!(pair_lengths(20, 20, 7, lf).unwrap(), (3, 4));
        assert_eq!(pair_lengths(21, 20, 7, lf).unwrap(), (4, 3));
        assert_eq!(pair_lengths(5, 30, 7, lf).unwrap(), (3, 4));
    }

    /// Two long sides cut to a few tokens: the ids are the heads of the two separately
    /// tokenised sides, and no "overflowing" windows are kept (tokenizers' own truncation
    /// kept every window of both sides and the post-processor combined them pairwise, so a
    /// pair of two 5,000-word texts took gigabytes).
    #[test]
    fn long_pair_is_cut_to_the_heads_without_overflow() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/modernbert-sliding");
        let base = PairTokenizer::from_dir(&dir).unwrap();
        let words = ["the", "city", "of", "paris", "is", "large", "and", "old"];
        let text = |n: usize, shift: usize| {
            (0..n)
                .map(|i| words[(i + shift) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        };
        let (query, document) = (text(300, 0), text(280, 3));
        let q_ids = base.inner().encode_fast(query.as_str(), false).unwrap();
        let d_ids = base.inner().encode_fast(document.as_str(), false).unwrap();
        let (q_ids, d_ids) = (q_ids.get_ids(), d_ids.get_ids());
        assert!(q_ids.len() > d_ids.len() && d_ids.len() > 100);
        let cls = base.token_to_id("[CLS]").unwrap();
        let sep = base.token_to_id("[SEP]").unwrap();
        // 16 tokens = 3 special + 13: both sides are longer than half, so the query (the
        // longer side) keeps 7 and the document 6.
        for (strategy, keep_q, keep_d) in [
            (Truncation::LongestFirst, 7, 6),
            (Truncation::OnlySecond, 0, 0),
        ] {
            let tok = base.with_truncation(16, strategy).unwrap();
            let result = tok.encode_pair_encoding(&query, &document);
            if strategy == Truncation::OnlySecond {
                // The query alone is longer than the limit.
                assert!(result.is_err());
                continue;
            }
            let enc = result.unwrap();
            assert!(
                enc.get_overflowing().is_empty(),
                "{strategy}: overflow kept"
            );
            let mut want = vec![cls];
            want.extend_from_slice(&q_ids[..keep_q]);
            want.push(sep);
            want.extend_from_slice(&d_ids[..keep_d]);
            want.push(sep);
            assert_eq!(enc.get_ids(), want.as_slice(), "{strategy}");
            assert_eq!(tok.encode_pair(&query, &document).unwrap().ids, want);
        }
        // only_second with a short query: the query whole, the document's head.
        let tok = base.with_truncation(16, Truncation::OnlySecond).unwrap();
        let short = base.inner().encode_fast("paris", false).unwrap();
        let short = short.get_ids();
        let enc = tok.encode_pair_encoding("paris", &document).unwrap();
        assert!(enc.get_overflowing().is_empty());
        let mut want = vec![cls];
        want.extend_from_slice(short);
        want.push(sep);
        want.extend_from_slice(&d_ids[..13 - short.len()]);
        want.push(sep);
        assert_eq!(enc.get_ids(), want.as_slice());
    }

    #[test]
    fn truncation_parses() {
        assert_eq!(
            "only_second".parse::<Truncation>().unwrap(),
            Truncation::OnlySecond
        );
        assert!("both".parse::<Truncation>().is_err());
    }
}
