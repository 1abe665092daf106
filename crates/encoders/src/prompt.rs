//! The prompts of causal rerankers: a (query, document) pair rendered by a chat template into
//! the text the model reads, as sentence-transformers 6 renders it.
//!
//! sentence-transformers turns the pair into the messages `[{"role": "query", "content": q},
//! {"role": "document", "content": d}]` (after `{"role": "system", "content": instruction}`
//! when an instruction is given) and renders them with the checkpoint's chat template
//! (`chat_template.jinja`, else `chat_template` in `tokenizer_config.json`) the way
//! transformers does: Jinja with `trim_blocks` and `lstrip_blocks`, one trailing newline
//! dropped, no generation prompt, the tokenizer's special-token strings as variables. The
//! text is tokenised without added special tokens; a prompt over the maximum length keeps its
//! first tokens and ends with the template's tail (the tokens every rendering ends with), so
//! the document's end is what is cut.
//!
//! The original Qwen3-Reranker checkpoints carry only Qwen3's conversation template, which has
//! no place for a query and a document (sentence-transformers refuses them). For those, the
//! prompt of their model card is built in ([`QWEN3_RERANKER_TEMPLATE`]), with its default
//! instruction unless another one is given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{context, Environment, ErrorKind};
use serde::Serialize;

use crate::error::{EncoderError, Result};

/// The default instruction of Qwen3-Reranker's model card.
pub const QWEN3_RERANKER_INSTRUCTION: &str =
    "Given a web search query, retrieve relevant passages that answer the query";

/// The prompt of Qwen3-Reranker's model card as a chat template over `system` (the
/// instruction), `query` and `document` messages: the model card's prefix, then
/// `<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}`, then its suffix
/// (an empty thinking block and the assistant's turn).
pub const QWEN3_RERANKER_TEMPLATE: &str = concat!(
    "{%- set slot = namespace(instruction=\"",
    "Given a web search query, retrieve relevant passages that answer the query",
    "\", query=\"\", document=\"\") -%}\n",
    "{%- for m in messages -%}\n",
    "{%- if m[\"role\"] == \"system\" -%}{%- set slot.instruction = m[\"content\"] -%}\n",
    "{%- elif m[\"role\"] == \"query\" -%}{%- set slot.query = m[\"content\"] -%}\n",
    "{%- elif m[\"role\"] == \"document\" -%}{%- set slot.document = m[\"content\"] -%}\n",
    "{%- endif -%}\n",
    "{%- endfor -%}\n",
    "<|im_start|>system\n",
    "Judge whether the Document meets the requirements based on the Query and the Instruct ",
    "provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n",
    "<|im_start|>user\n",
    "<Instruct>: {{ slot.instruction }}\n",
    "<Query>: {{ slot.query }}\n",
    "<Document>: {{ slot.document }}<|im_end|>\n",
    "<|im_start|>assistant\n",
    "<think>\n\n</think>\n\n\n",
);

/// Where a prompt template came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PromptSource {
    /// The checkpoint's chat template (the file it was read from).
    Checkpoint { path: PathBuf },
    /// The built-in prompt of Qwen3-Reranker's model card.
    Qwen3RerankerModelCard,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'a str,
    content: &'a str,
}

/// A chat template ready to render pairs.
#[derive(Clone)]
pub struct PromptTemplate {
    env: Environment<'static>,
    source: PromptSource,
    /// The special tokens' strings (`bos_token`, `eos_token`, ...), as transformers passes
    /// them to the template.
    specials: BTreeMap<String, String>,
    /// The system message, when an instruction is given.
    instruction: Option<String>,
}

impl std::fmt::Debug for PromptTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptTemplate")
            .field("source", &self.source)
            .field("instruction", &self.instruction)
            .finish()
    }
}

/// The chat template of a model directory: `chat_template.jinja` (transformers 5), else the
/// `chat_template` of `tokenizer_config.json` (a string, or a list of named templates of
/// which `default` is used). `None` when it has none.
pub(crate) fn read_chat_template(dir: &Path) -> Result<Option<(String, PathBuf)>> {
    let file = dir.join("chat_template.jinja");
    if file.exists() {
        return Ok(Some((EncoderError::read_text(&file)?, file)));
    }
    let config = dir.join("tokenizer_config.json");
    if !config.exists() {
        return Ok(None);
    }
    let text = EncoderError::read_text(&config)?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| EncoderError::malformed(&config, e))?;
    Ok(match json.get("chat_template") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(t)) => Some((t.clone(), config)),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template").and_then(|t| t.as_str()))
            .map(|t| (t.to_string(), config)),
        Some(other) => {
            return Err(EncoderError::InvalidConfig {
                path: config,
                field: "chat_template".into(),
                value: other.to_string().chars().take(60).collect(),
                reason: "expected a template string or a list of named templates".into(),
            })
        }
    })
}

/// The special-token strings of `tokenizer_config.json` that transformers passes to chat
/// templates.
pub(crate) fn special_token_strings(dir: &Path) -> Result<BTreeMap<String, String>> {
    let config = dir.join("tokenizer_config.json");
    let mut out = BTreeMap::new();
    if !config.exists() {
        return Ok(out);
    }
    let text = EncoderError::read_text(&config)?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| EncoderError::malformed(&config, e))?;
    for key in [
        "bos_token",
        "eos_token",
        "unk_token",
        "sep_token",
        "pad_token",
        "cls_token",
        "mask_token",
    ] {
        let value = match json.get(key) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Object(o)) => o
                .get("content")
                .and_then(|c| c.as_str())
                .map(str::to_string),
            _ => None,
        };
        if let Some(v) = value {
            out.insert(key.to_string(), v);
        }
    }
    Ok(out)
}

impl PromptTemplate {
    /// Compile `template` (read from `source`) as transformers does.
    pub fn new(
        template: &str,
        source: PromptSource,
        specials: BTreeMap<String, String>,
        instruction: Option<String>,
    ) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        // Python's str methods (`startswith`, `split`, `strip`, ...) that templates call.
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        let invalid = |e: minijinja::Error| EncoderError::InvalidConfig {
            path: source.path(),
            field: "chat_template".into(),
            value: template.chars().take(60).collect(),
            reason: format!("the template does not compile: {e}"),
        };
        env.add_template_owned("chat", template.to_string())
            .map_err(invalid)?;
        Ok(Self {
            env,
            source,
            specials,
            instruction,
        })
    }

    /// The built-in prompt of Qwen3-Reranker's model card.
    pub fn qwen3_reranker(instruction: Option<String>) -> Result<Self> {
        Self::new(
            QWEN3_RERANKER_TEMPLATE,
            PromptSource::Qwen3RerankerModelCard,
            BTreeMap::new(),
            instruction,
        )
    }

    /// Where the template came from.
    pub fn source(&self) -> &PromptSource {
        &self.source
    }

    /// The instruction given (the system message), if any.
    pub fn instruction(&self) -> Option<&str> {
        self.instruction.as_deref()
    }

    /// The prompt of one pair.
    pub fn render(&self, query: &str, document: &str) -> Result<String> {
        let mut messages = Vec::with_capacity(3);
        if let Some(instruction) = &self.instruction {
            messages.push(Message {
                role: "system",
                content: instruction,
            });
        }
        messages.push(Message {
            role: "query",
            content: query,
        });
        messages.push(Message {
            role: "document",
            content: document,
        });
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| self.render_error(e))?;
        let mut vars: BTreeMap<&str, minijinja::Value> = self
            .specials
            .iter()
            .map(|(k, v)| (k.as_str(), minijinja::Value::from(v.as_str())))
            .collect();
        vars.insert("messages", minijinja::Value::from_serialize(&messages));
        vars.insert("add_generation_prompt", false.into());
        template
            .render(context! { ..minijinja::Value::from_serialize(&vars) })
            .map_err(|e| self.render_error(e))
    }

    fn render_error(&self, e: minijinja::Error) -> EncoderError {
        EncoderError::Tokenizer {
            context: format!("rendering the chat template of {}", self.source.describe()),
            message: e.to_string(),
            input: None,
        }
    }

    /// Whether the template places the query and the document in the prompt (what
    /// sentence-transformers checks before it scores pairs with a template): changing either
    /// must change the rendering.
    pub(crate) fn carries_pairs(&self) -> bool {
        let render = |q, d| self.render(q, d).ok();
        match (
            render("alpha", "bravo"),
            render("charlie", "bravo"),
            render("alpha", "foxtrot"),
        ) {
            (Some(a), Some(b), Some(c)) => a != b && a != c,
            _ => false,
        }
    }
}

impl PromptSource {
    fn path(&self) -> PathBuf {
        match self {
            PromptSource::Checkpoint { path } => path.clone(),
            PromptSource::Qwen3RerankerModelCard => {
                PathBuf::from("<built-in Qwen3-Reranker prompt>")
            }
        }
    }

    fn describe(&self) -> String {
        self.path().display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_prompt_is_the_model_cards() {
        let t = PromptTemplate::qwen3_reranker(None).unwrap();
        let text = t.render("what is rust?", "A language.").unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nJudge whether the Document meets the requirements based on the \
             Query and the Instruct provided. Note that the answer can only be \"yes\" or \"no\".\
             <|im_end|>\n<|im_start|>user\n<Instruct>: Given a web search query, retrieve \
             relevant passages that answer the query\n<Query>: what is rust?\n<Document>: A \
             language.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
        );
        let t = PromptTemplate::qwen3_reranker(Some("Find code".into())).unwrap();
        assert!(t
            .render("q", "d")
            .unwrap()
            .contains("<Instruct>: Find code\n<Query>: q\n<Document>: d<|im_end|>"));
        assert!(t.carries_pairs());
    }

    #[test]
    fn a_conversation_template_does_not_carry_pairs() {
        let chat = "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'user' %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}";
        let t = PromptTemplate::new(
            chat,
            PromptSource::Qwen3RerankerModelCard,
            BTreeMap::new(),
            None,
        )
        .unwrap();
        assert!(!t.carries_pairs());
        let raising = "{{ raise_exception('No user query found in messages.') }}";
        let t = PromptTemplate::new(
            raising,
            PromptSource::Qwen3RerankerModelCard,
            BTreeMap::new(),
            None,
        )
        .unwrap();
        assert!(!t.carries_pairs());
        let err = t.render("q", "d").unwrap_err().to_string();
        assert!(err.contains("No user query found"), "{err}");
    }

    #[test]
    fn python_string_methods_and_special_tokens_work() {
        let template = "{{ bos_token }}{% for m in messages %}{% if m.content.startswith('x') %}{{ m.content.upper() }}{% else %}{{ m.content.strip() }}{% endif %}|{% endfor %}";
        let mut specials = BTreeMap::new();
        specials.insert("bos_token".to_string(), "<s>".to_string());
        let t = PromptTemplate::new(
            template,
            PromptSource::Qwen3RerankerModelCard,
            specials,
            None,
        )
        .unwrap();
        assert_eq!(t.render("xy", "  d  ").unwrap(), "<s>XY|d|");
        let err = PromptTemplate::new(
            "{% if %}",
            PromptSource::Checkpoint {
                path: "m/chat_template.jinja".into(),
            },
            BTreeMap::new(),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("m/chat_template.jinja"), "{err}");
    }
}
