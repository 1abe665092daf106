//! Splitting long documents into overlapping passages.

use serde::{Deserialize, Serialize};

use crate::error::{Result, SearchError};

/// How a candidate's text is split into passages before reranking.
///
/// Lengths are in **model tokens** when the reranker has a tokenizer
/// ([`Reranker::tokenizer`](crate::Reranker::tokenizer): the cross-encoder and the
/// bi-encoder), otherwise in whitespace-separated words. With a tokenizer, the length is
/// capped so that a passage fits the model's input (next to the query for a cross-encoder,
/// [`ModelTokenizer::passage_budget`](crate::ModelTokenizer::passage_budget)), and a passage
/// that the tokenizer counts as longer on its own (a word cut in two at its edge is tokenised
/// afresh) is shortened from its end, the next one starting no later than where it ends: the
/// model never silently truncates a passage, unless the query alone leaves less than
/// [`MIN_PASSAGE_TOKENS`](crate::MIN_PASSAGE_TOKENS). Only the first
/// `max_passages` passages of a document are scored: text beyond
/// `stride * (max_passages - 1) + length` tokens (or words) is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PassageOptions {
    /// Tokens (or words) per passage (default 200).
    pub length: usize,
    /// Tokens (or words) between passage starts (default 100; `stride < length` overlaps).
    pub stride: usize,
    /// At most this many passages per document (default 20).
    pub max_passages: usize,
}

impl Default for PassageOptions {
    fn default() -> Self {
        PassageOptions {
            length: 200,
            stride: 100,
            max_passages: 20,
        }
    }
}

impl PassageOptions {
    /// Reject zero values and a stride longer than the passage.
    pub fn validate(&self) -> Result<()> {
        let bad = |option, value: usize| SearchError::InvalidOption {
            option,
            value: value.to_string(),
            reason: "must be at least 1",
        };
        if self.length == 0 {
            return Err(bad("passages.length", self.length));
        }
        if self.stride == 0 {
            return Err(bad("passages.stride", self.stride));
        }
        if self.max_passages == 0 {
            return Err(bad("passages.max_passages", self.max_passages));
        }
        if self.stride > self.length {
            return Err(SearchError::InvalidOption {
                option: "passages.stride",
                value: self.stride.to_string(),
                reason: "must not exceed passages.length (the text between passages would never be scored)",
            });
        }
        Ok(())
    }
}

/// Byte ranges of the whitespace-separated words of `text`.
pub(crate) fn word_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                spans.push((s, i));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        spans.push((s, text.len()));
    }
    spans
}

/// Split `text` into passages of `options.length` words every `options.stride` words,
/// at most `options.max_passages` of them. Each passage is a slice of `text` (original
/// whitespace kept). A text of no words gives one empty passage, so every document is scored.
pub fn split_passages<'a>(text: &'a str, options: &PassageOptions) -> Vec<&'a str> {
    split_spans(text, &word_spans(text), options)
}

/// Split `text` into passages of `options.length` units every `options.stride` units, where
/// `spans` are the byte ranges of the units (tokens or words) in `text`.
pub fn split_spans<'a>(
    text: &'a str,
    spans: &[(usize, usize)],
    options: &PassageOptions,
) -> Vec<&'a str> {
    let fit = |_, end| Ok::<_, std::convert::Infallible>(end);
    match split_fitted(text, spans, options, fit) {
        Ok(passages) => passages.into_iter().map(|(p, _)| p).collect(),
        Err(never) => match never {},
    }
}

/// [`split_spans`], where `fit(start, end)` may shorten each passage to units
/// `start..fit(start, end)` (at least one unit). The next passage then starts no later than
/// where the shortened one ends, so no text between passages goes unscored. Each passage
/// comes with its number of units.
pub(crate) fn split_fitted<'a, E>(
    text: &'a str,
    spans: &[(usize, usize)],
    options: &PassageOptions,
    fit: impl Fn(usize, usize) -> Result<usize, E>,
) -> Result<Vec<(&'a str, usize)>, E> {
    if spans.is_empty() {
        return Ok(vec![("", 0)]);
    }
    let length = options.length.max(1);
    let stride = options.stride.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    while start < spans.len() && out.len() < options.max_passages.max(1) {
        let full = (start + length).min(spans.len());
        let end = fit(start, full)?.clamp(start + 1, full);
        out.push((span_text(text, spans, start, end), end - start));
        if end == spans.len() {
            break;
        }
        start = (start + stride).min(end);
    }
    Ok(out)
}

/// The text of units `start..end` (non-empty) of `spans`.
pub(crate) fn span_text<'a>(
    text: &'a str,
    spans: &[(usize, usize)],
    start: usize,
    end: usize,
) -> &'a str {
    slice_on_chars(text, spans[start].0, spans[end - 1].1)
}

/// `text[from..to]`, widened to the nearest char boundaries (token offsets of byte-level
/// tokenizers can fall inside a multi-byte character).
fn slice_on_chars(text: &str, mut from: usize, mut to: usize) -> &str {
    to = to.min(text.len());
    from = from.min(to);
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    while !text.is_char_boundary(to) {
        to += 1;
    }
    &text[from..to]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(length: usize, stride: usize, max_passages: usize) -> PassageOptions {
        PassageOptions {
            length,
            stride,
            max_passages,
        }
    }

    #[test]
    fn token_spans_and_char_boundaries() {
        // Spans as a byte-level tokenizer may report them: the emoji (4 bytes) split in two.
        let text = "ab 😀 cd";
        let spans = [(0, 2), (3, 5), (5, 7), (8, 10)];
        assert_eq!(
            split_spans(text, &spans, &opts(2, 2, 10)),
            ["ab 😀", "😀 cd"]
        );
        assert_eq!(split_spans(text, &[], &opts(2, 2, 10)), [""]);
    }

    #[test]
    fn splits_with_overlap_and_cap() {
        let text = "a b c d e f g";
        assert_eq!(
            split_passages(text, &opts(3, 2, 10)),
            ["a b c", "c d e", "e f g"]
        );
        assert_eq!(
            split_passages(text, &opts(3, 3, 10)),
            ["a b c", "d e f", "g"]
        );
        assert_eq!(split_passages(text, &opts(3, 2, 2)), ["a b c", "c d e"]);
        assert_eq!(split_passages(text, &opts(100, 50, 2)), [text]);
    }

    #[test]
    fn keeps_inner_whitespace_and_handles_empty() {
        assert_eq!(
            split_passages("  x\n\ny  z ", &opts(2, 1, 5)),
            ["x\n\ny", "y  z"]
        );
        assert_eq!(split_passages("   ", &opts(2, 1, 5)), [""]);
        assert_eq!(
            split_passages("héllo wörld ü", &opts(2, 2, 5)),
            ["héllo wörld", "ü"]
        );
    }

    #[test]
    fn zero_options_rejected() {
        assert!(opts(0, 1, 1).validate().is_err());
        assert!(opts(1, 0, 1).validate().is_err());
        let err = opts(3, 4, 1).validate().unwrap_err().to_string();
        assert!(err.contains("passages.stride"), "{err}");
        assert!(opts(3, 3, 1).validate().is_ok());
        assert!(opts(1, 1, 0).validate().is_err());
        assert!(PassageOptions::default().validate().is_ok());
    }
}
