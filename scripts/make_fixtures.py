#!/usr/bin/env python3
"""Generate the Python-reference fixtures for the `tantivy-rerank-encoders` parity tests.

No trained cross-encoder weights are available offline, so the Rust encoders are proven
correct by *parity* with the Python reference stack (transformers / sentence-transformers)
on tiny, randomly initialised models of the same architectures, plus the real tokenizers
and the real all-MiniLM-L6-v2 weights found in the shared folder.

What it writes (default: ``crates/encoders/tests/fixtures/``)
---------------------------------------------------------------
Five tiny classification models (each directory well under 2 MB), saved with
``save_pretrained`` and re-initialised with a seeded, deliberately *large* normal init so
that logits depend strongly on the input (transformers' std-0.02 init makes every pair score
almost the same, which would make a weak parity test):

* ``bert-2label-vocab/``  BertForSequenceClassification, 2 labels, hidden_act "gelu",
  ``pytorch_model.bin`` only (no safetensors), tokenizer = ``vocab.txt`` +
  ``tokenizer_config.json`` holding only ``{"model_max_length": 512}`` (no
  ``do_lower_case`` key, no ``tokenizer.json``), mimicking
  amberoad/bert-multilingual-passage-reranking-msmarco.  transformers therefore resolves
  do_lower_case=True / strip_accents=None (follows lowercase) / tokenize_chinese_chars=True,
  and sentence-transformers caps the advertised 512 to max_position_embeddings=64.
* ``bert-3label/``  BertForSequenceClassification, labels irrelevant/partial/sufficient,
  hidden_act "gelu_new" (tanh approximation), safetensors, tokenizer saved by transformers
  (``tokenizer.json`` present) from the same small WordPiece vocab, model_max_length 64.
* ``modernbert-1label-mean/``  ModernBertForSequenceClassification, 1 label, mean pooling,
  no biases anywhere.  Its ``config.json`` is rewritten into the OLD (transformers 4.4x)
  style of the published checkpoints (``global_attn_every_n_layers``, ``global_rope_theta``,
  ``local_rope_theta``, ``torch_dtype``; no ``layer_types`` / ``rope_parameters``); the
  script asserts transformers loads it back to identical logits.  Tokenizer
  model_max_length is the "unset" 1e30 of the real ModernBERT tokenizer, so
  sentence-transformers resolves max_length = max_position_embeddings = 128.  Also has a
  ``config_sentence_transformers.json`` without ``activation_fn``.
* ``modernbert-3label-cls-bias/``  3 labels, cls pooling, every bias on, config exactly as
  transformers writes it (new style: ``layer_types`` + ``rope_parameters`` + ``dtype``).
* ``modernbert-sliding/``  1 label, cls pooling, local_attention 8 (|i-j| <= 4) on layers
  1 and 2, long (60-256 token) reference pairs, plus ``logits_full_attention`` computed
  with the window disabled (same weights) to prove the window is not ignored.

The ModernBERT fixtures share a small byte-level BPE tokenizer (``tokenizer.json``) trained
here on the test texts, with the real ModernBERT normalizer (NFC), pre-tokenizer/decoder
(ByteLevel, no prefix space), ``[CLS] A [SEP] B [SEP]`` template (all type ids 0) and the
special tokens ``[UNK] [CLS] [SEP] [PAD] [MASK]`` appended after the BPE vocab (as in the
real one, ``[MASK]`` has lstrip=True); model_input_names has no token_type_ids.

Reranker fixtures (sentence-transformers 6.2 is the reference; every directory well under 2 MB):

* ``xlmr-1label/``  XLMRobertaForSequenceClassification, 1 label, 4,098 position rows (4,096
  tokens + the padding_idx offset of 2), with a SentencePiece-Unigram ``tokenizer.json`` trained
  here with `tokenizers` in XLM-R's layout (<s>=0 <pad>=1 </s>=2 <unk>=3, <mask> last,
  Metaspace, ``<s> A </s></s> B </s>``; no Precompiled charsmap can be built, so the normalizer
  is only the ``Replace(" {2,}", " ")`` half of the real one).  transformers 5 rebuilds the
  XLM-R pipeline from its class (WhitespaceSplit + Metaspace) instead of using tokenizer.json's,
  so each case records whether tokenizer.json, read as is, gives the same ids.
* ``electra-2label/``  ElectraForSequenceClassification, 2 labels, embedding_size 16 <
  hidden_size 32 (``embeddings_project``), the WordPiece vocab of the BERT fixtures,
  ``tokenizer_class`` "ElectraTokenizer" as cross-encoder/ms-marco-electra-base declares it.
* ``qwen3-reranker-st/``  Qwen3ForCausalLM (tied embeddings, 4 query / 2 key-value heads,
  head_dim 16 with hidden 32, q/k RMSNorm, rope_theta 1e6) saved by ``CrossEncoder.save``:
  modules.json = Transformer(text-generation) + LogitScore(yes, no), ``chat_template.jinja``
  rendering ST's query/document messages into Qwen3-Reranker's prompt (asserted equal, text and
  ids, to the model card recipe).  Byte-level BPE ``tokenizer.json`` trained here in Qwen's
  layout with Qwen3's 26 added tokens appended.  Also records a ``max_length=256`` run (ST cuts
  the rendered text and writes the template tail back) and a run with ST's ``prompt`` (used as
  the instruction).
* ``qwen3-reranker-original/``  the same weights and vocabulary in the original upload's layout:
  no ST files, a general ChatML template in tokenizer_config.json.  sentence-transformers 6.2
  loads it but ``predict`` raises (the template drops the query/document roles), so the
  reference is the model card's own recipe; the error is recorded.
* ``qwen2-reranker/``  Qwen2ForCausalLM (q/k/v biases, no q/k norm, untied LM head) saved by
  ``CrossEncoder(modules=[Transformer, LogitScore("1", "0")]).save`` with a "1"/"0" prompt.

Each reranker reference has ``cases`` (query, document or ``document_repeat``, the exact
``input_ids`` ``CrossEncoder.preprocess`` fed for that pair alone, ``logits`` = raw
``predict(activation_fn=Identity)`` of the pair alone, checked against the transformers forward)
and a ``sentence_transformers`` block: the batched raw and default-activated scores
(batch_size 4, so mixed lengths share a batch: right padding for the classifiers, LEFT padding
for the causal LMs), the batches ST formed, the activation and max length it resolved.  The
pairs run from 3 to ~5,000 tokens and include an empty query, an empty document and both empty.

Reference files:

* ``<model>.reference.json``  per model: transformers logits (model.eval(), float32, one
  unpadded pair at a time) for ~20 cases with their exact ``input_ids`` /
  ``token_type_ids`` from ``AutoTokenizer.from_pretrained(<dir>)(q, d, truncation=...,
  max_length=...)``, and the ``sentence_transformers.CrossEncoder(<dir>).predict`` scores
  (default settings, batch_size 4) with the max length and activation ST resolved.
  Pair ids come from the batch call ``tok([q], [d], ...)`` (what CrossEncoder uses); the
  unbatched ``tok(q, d, ...)`` differs only for an empty document, where transformers drops
  the falsy pair and returns ``[CLS] q [SEP]``; such cases also carry
  ``input_ids_unbatched_call``.
* ``tokenizer_parity.json``  ids of the REAL ModernBERT tokenizer and of the REAL
  bert-base-multilingual-uncased vocab (loaded from a vocab.txt-only directory, as a user
  of amberoad gets it) on ~40 adversarial pairs each (``document_repeat`` = n means the
  document is ``document * n``).
* ``minilm_embeddings.json``  SentenceTransformer(all-MiniLM-L6-v2) embeddings and the
  token ids ST fed to the model.

All floats are written as ``repr(float(x))`` of the float32 value (exact).

How to run (from the project root; the shared folder is ``../shared`` by default)::

    python -m venv .venv-fixtures
    .venv-fixtures/bin/pip install -r scripts/requirements-fixtures.txt
    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python scripts/make_fixtures.py \
        [--out crates/encoders/tests/fixtures] [--shared ../shared] [--only NAME ...]

Full-size random models (benchmarks and GPU parity, never committed)::

    .venv-fixtures/bin/python scripts/make_fixtures.py --full-size KIND --out DIR [--full-size-reference]

writes one randomly initialised (seeded) model of a published architecture. KIND is one of
``minilm-l6`` (cross-encoder/ms-marco-MiniLM-L-6-v2's config, 1 label), ``modernbert-base``
(ModernBERT-base dimensions, 1 label), ``modernbert-large`` (ModernBERT-large's config,
3 labels irrelevant/partial/sufficient), ``mbert-2label`` (bert-base-multilingual-uncased,
2 labels, ``vocab.txt`` only) -- these four with their real tokenizers from the shared folder --
``xlmr-large`` (BAAI/bge-reranker-v2-m3's shape: XLM-R large, 24 layers, 8,194 positions,
vocab_size 250,002, 1 label, with the small trained Unigram tokenizer, so ids stay below ~650),
``electra-base`` (cross-encoder/ms-marco-electra-base's shape, 1 label, real bert-base-uncased
vocab) and ``qwen3-0.6b`` (Qwen3-Reranker-0.6B's shape: hidden 1024, 28 layers, 16 heads, 8
key-value heads, head_dim 128, intermediate 3072, vocab_size 151,669, tied; saved as ST 6.2
saves it, with the small trained BPE).  ``--full-size-reference`` also writes
``<out>/full_size_reference.json``: sentence-transformers scores and ids for the 12 pairs of
``full_size_reference_pairs`` (8 short ones in several scripts, an empty document, two of a few
hundred tokens and one of about 2,000 tokens with the model's own tokenizer, which a 512-token
model such as ``electra-base`` truncates).

Everything is built locally; the Hugging Face Hub is never contacted.  The output is
deterministic (fixed seeds, single-threaded torch): running it twice gives identical files.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import unicodedata
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
import sentence_transformers  # noqa: E402
import tokenizers  # noqa: E402
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
    ModernBertConfig,
    ModernBertForSequenceClassification,
    PreTrainedTokenizerFast,
)

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

VERSIONS = {
    "python": sys.version.split()[0],
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "sentence_transformers": sentence_transformers.__version__,
    "tokenizers": tokenizers.__version__,
    "numpy": np.__version__,
}

LABELS3 = {0: "irrelevant", 1: "partial", 2: "sufficient"}


# --------------------------------------------------------------------------------------
# Test texts
# --------------------------------------------------------------------------------------

PARIS = (
    "Paris is the capital and most populous city of France. With an estimated population of "
    "2,102,650 residents in January 2023 in an area of more than 105 km2, Paris is the fourth-most "
    "populous city in the European Union. Since the 17th century, Paris has been one of the world's "
    "major centres of finance, diplomacy, commerce, culture, fashion, and gastronomy."
)
PHOTO = (
    "Photosynthesis is a process used by plants and other organisms to convert light energy into "
    "chemical energy that, through cellular respiration, can later be released to fuel the organism's "
    "activities. Some of this chemical energy is stored in carbohydrate molecules, such as sugars and "
    "starches, which are synthesized from carbon dioxide and water."
)
MARKET = (
    "The stock market closed higher on Friday as investors cheered strong earnings reports from "
    "technology companies, while oil prices fell for the third straight week amid concerns about "
    "weak demand in China and rising inventories in the United States."
)
EIFFEL = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is "
    "named after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 "
    "to 1889. Locally nicknamed La dame de fer, it was constructed as the centrepiece of the 1889 "
    "World's Fair, and to crown the centennial anniversary of the French Revolution."
)
RIVER = (
    "The Rhine is one of the major European rivers. The river begins in the Swiss canton of Graubünden "
    "in the southeastern Swiss Alps. It forms part of the Swiss-Liechtenstein, Swiss-Austrian and "
    "Swiss-German borders. After that the Rhine defines much of the Franco-German border, after which "
    "it flows in a mostly northerly direction through the German Rhineland."
)
COFFEE = (
    "Coffee is a beverage brewed from roasted coffee beans. Darkly coloured, bitter, and slightly "
    "acidic, coffee has a stimulating effect on humans, primarily due to its caffeine content. It has "
    "the highest sales in the world market for hot drinks. The café culture of Zürich and Vienna is "
    "famous; a naïve tourist may order a crème brûlée with it."
)
TOKYO = "東京タワーは高さ333メートルの電波塔です。北京にも有名な塔があります。東京は日本の首都です。"
MIXED = "Moscow (Москва) and Beijing (北京) are capitals; Zürich is not. Ελλάδα is Greece, and 東京 is Tokyo."
EMOJI = "We serve wood-fired pizza 🍕🔥 every day of the week 😀 — come hungry! 👍"

LONG_QUERY = (
    "what are the main historical, cultural and economic reasons that the city of paris became the "
    "capital of france and one of the most visited cities in the whole world"
)
LONG_DOC = " ".join([PARIS, EIFFEL, RIVER])

EXTRA_TRAIN_TEXT = [PHOTO, MARKET, COFFEE, TOKYO, MIXED, EMOJI, LONG_QUERY, LONG_DOC]


def model_cases(limit: int, small: int = 24) -> list[tuple[str, str, int, str]]:
    """~22 (query, document, max_length, truncation) cases for the short-context models."""
    lf, os_ = "longest_first", "only_second"
    return [
        ("what is the capital of france?", "Paris is the capital and most populous city of France.", limit, lf),
        ("what is the capital of france?", "The mitochondria is the powerhouse of the cell.", limit, lf),
        ("how do plants make food", PHOTO[:160], limit, lf),
        ("how do plants make food", MARKET[:160], limit, lf),
        ("café near Zürich", "A naïve visitor ordered a crème brûlée at the café in Zürich.", limit, lf),
        ("東京タワーの高さは？", TOKYO, limit, lf),
        ("best pizza 🍕 in town?", EMOJI, limit, lf),
        ("Москва vs 北京 vs Zürich", MIXED, limit, lf),
        ("", "Paris is the capital and most populous city of France.", limit, lf),
        ("what is the capital of france?", "", limit, lf),
        ("", "", limit, lf),
        ("   ", "\t\n  ", limit, lf),
        ("WHAT IS THE CAPITAL OF FRANCE?", "PARIS! Ça va? ÉCOLE NORMALE.", limit, lf),
        ("2+2=4? (yes)", "Version 3.14.159 released on 2024-01-01; cost: $9.99 (50% off).", limit, lf),
        ("what does [MASK] mean", "[CLS] is a special token, [MASK] too.", limit, lf),
        ("tell me about paris", LONG_DOC, limit, lf),
        ("tell me about paris", LONG_DOC, limit, os_),
        (LONG_QUERY, LONG_DOC, limit, lf),
        ("tell me about paris", LONG_DOC, small, lf),
        ("tell me about paris", LONG_DOC, small, os_),
        (LONG_QUERY, LONG_DOC, small, lf),
        ("how do plants make food", "Plants use photosynthesis.", small, lf),
    ]


def sliding_cases(limit: int = 256) -> list[tuple[str, str, int, str]]:
    lf, os_ = "longest_first", "only_second"
    return [
        ("what is the capital of france?", PARIS, limit, lf),
        ("what is the capital of france?", MARKET, limit, lf),
        ("how do plants make food from light", PHOTO, limit, lf),
        ("how do plants make food from light", RIVER, limit, lf),
        ("who built the eiffel tower and when", EIFFEL, limit, lf),
        ("who built the eiffel tower and when", COFFEE, limit, lf),
        ("where does the rhine river begin", RIVER, limit, lf),
        ("where does the rhine river begin", PARIS[:200], limit, lf),
        ("coffee culture in Zürich", COFFEE, limit, lf),
        (LONG_QUERY, PARIS, limit, lf),
        (LONG_QUERY, EIFFEL[:220], limit, lf),
        ("", PHOTO, limit, lf),
        ("tell me about paris", PARIS + " " + EIFFEL, limit, lf),
        ("tell me about paris", LONG_DOC, limit, lf),
        ("tell me about paris", LONG_DOC, limit, os_),
        (LONG_QUERY, LONG_DOC, limit, lf),
        (LONG_QUERY, LONG_DOC, 128, lf),
        ("tell me about paris", LONG_DOC, 128, os_),
        ("tokyo and moscow", MIXED + " " + TOKYO + " " + EMOJI, limit, lf),
        ("stock market news", MARKET + " " + COFFEE, limit, lf),
    ]


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def f32list(t) -> list:
    """Exact float32 values as Python floats (json writes repr(float))."""
    a = np.asarray(t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t, dtype=np.float32)
    return [float(x) for x in a.reshape(-1)] if a.ndim <= 1 else [f32list(r) for r in a]


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bert_normalize(text: str) -> str:
    """Lower-case + strip accents + space out CJK, like BertNormalizer(lowercase=True)."""
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    out = []
    for c in text:
        cp = ord(c)
        if (0x4E00 <= cp <= 0x9FFF) or (0x3400 <= cp <= 0x4DBF) or (0xF900 <= cp <= 0xFAFF):
            out.append(f" {c} ")
        else:
            out.append(c)
    return "".join(out)


def bert_words(text: str) -> list[str]:
    words, cur = [], []
    for c in text:
        cat = unicodedata.category(c)
        if c.isspace():
            if cur:
                words.append("".join(cur))
                cur = []
        elif cat.startswith("P") or (33 <= ord(c) <= 47 or 58 <= ord(c) <= 64 or 91 <= ord(c) <= 96 or 123 <= ord(c) <= 126):
            if cur:
                words.append("".join(cur))
                cur = []
            words.append(c)
        else:
            cur.append(c)
    if cur:
        words.append("".join(cur))
    return words


def all_texts() -> list[str]:
    texts = []
    for q, d, _, _ in model_cases(64) + sliding_cases():
        texts += [q, d]
    texts += EXTRA_TRAIN_TEXT
    return texts


# --------------------------------------------------------------------------------------
# Tokenizers for the tiny models
# --------------------------------------------------------------------------------------


def build_wordpiece_vocab(n_words: int = 220) -> list[str]:
    """[PAD]=0 [UNK] [CLS] [SEP] [MASK], chars, ##chars, frequent words.

    Emoji / other symbols (Unicode category "So") are left out on purpose so that words
    containing them become [UNK].
    """
    norm = [bert_normalize(t) for t in all_texts()]
    chars = sorted({c for t in norm for c in t if not c.isspace() and unicodedata.category(c) != "So"
                    and unicodedata.category(c)[0] != "C"})
    counts = Counter(w for t in norm for w in bert_words(t) if len(w) > 1 and all(c in chars for c in w))
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n_words]]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars]
    seen = set(vocab)
    for w in sorted(words):
        if w not in seen:
            vocab.append(w)
            seen.add(w)
    return vocab


def build_bpe_tokenizer(vocab_size: int = 640) -> Tokenizer:
    """Small byte-level BPE mimicking the real ModernBERT tokenizer.json layout."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(all_texts() * 2, trainer=trainer)
    # Specials appended after the BPE vocab, in the real tokenizer's order.
    tok.add_special_tokens([
        AddedToken("[UNK]", normalized=False, special=True),
        AddedToken("[CLS]", normalized=False, special=True),
        AddedToken("[SEP]", normalized=False, special=True),
        AddedToken("[PAD]", normalized=False, special=True),
        AddedToken("[MASK]", lstrip=True, normalized=False, special=True),
    ])
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:0 [SEP]:0",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tok


def save_modernbert_tokenizer(tok: Tokenizer, out: Path, model_max_length: int | None) -> PreTrainedTokenizerFast:
    kwargs = dict(
        tokenizer_object=copy.deepcopy(tok),
        unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]",
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=True,
    )
    if model_max_length is not None:
        kwargs["model_max_length"] = model_max_length
    fast = PreTrainedTokenizerFast(**kwargs)
    fast.save_pretrained(out)
    return fast


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


@torch.no_grad()
def reinit(model: torch.nn.Module, seed: int, head_scale: float = 2.0) -> None:
    """Seeded large-variance re-init so that logits depend strongly on the input."""
    g = torch.Generator().manual_seed(seed)
    head_names = ("classifier.", "pooler.", "head.")
    for name, p in sorted(model.named_parameters()):
        if p.ndim == 1 and ("norm" in name.lower()) and name.endswith("weight"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        elif p.ndim == 1:  # biases
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
        elif "embeddings" in name:
            p.copy_(torch.randn(p.shape, generator=g))
        else:
            fan_in = p.shape[1]
            std = 1.0 / fan_in ** 0.5
            if name.startswith(head_names) or any(f".{h}" in name for h in head_names):
                std *= head_scale
            p.copy_(std * torch.randn(p.shape, generator=g))


@torch.no_grad()
def logits_of(model, enc: dict) -> torch.Tensor:
    inputs = {k: torch.tensor([v]) for k, v in enc.items() if not k.startswith("_")}
    return model(**inputs).logits[0].float()


def encode(tok, q: str, d: str, max_length: int | None, truncation) -> dict:
    """Pair encoding exactly as a batch call ``tok([q], [d], ...)`` (what CrossEncoder does).

    The unbatched call ``tok(q, d, ...)`` gives the same ids EXCEPT when ``d == ""``:
    transformers then treats the falsy text_pair as absent and encodes a single sequence
    (``[CLS] q [SEP]`` instead of ``[CLS] q [SEP] [SEP]``).  That quirk is recorded
    separately as ``input_ids_unbatched_call``; the canonical ids are the batch ones.
    """
    kw = {} if max_length is None else {"truncation": truncation, "max_length": max_length}
    batch = tok([q], [d], **kw)
    enc = {k: list(v[0]) for k, v in batch.items()}
    single = {k: list(v) for k, v in tok(q, d, **kw).items()}
    if single != enc:
        assert d == "", f"batch/unbatched encodings differ for a non-empty document: {q!r} / {d[:40]!r}"
        enc["_unbatched"] = single
    return enc


def run_cases(model, tok, cases, extra_models: dict | None = None) -> list[dict]:
    out = []
    for q, d, L, trunc in cases:
        enc = encode(tok, q, d, L, trunc)
        full = encode(tok, q, d, None, None)
        case = {
            "query": q,
            "document": d,
            "max_length": L,
            "truncation": trunc,
            "input_ids": enc["input_ids"],
            "token_type_ids": enc.get("token_type_ids"),
            "truncated": len(full["input_ids"]) > len(enc["input_ids"]),
            "logits": f32list(logits_of(model, enc)),
        }
        if "_unbatched" in enc:
            case["input_ids_unbatched_call"] = enc["_unbatched"]["input_ids"]
        for key, m in (extra_models or {}).items():
            case[key] = f32list(logits_of(m, enc))
        out.append(case)
    return out


def st_block(model_dir: Path, cases: list[dict]) -> dict:
    from sentence_transformers import CrossEncoder
    from sentence_transformers.util import fullname

    ce = CrossEncoder(str(model_dir), device="cpu")
    pairs = [(c["query"], c["document"]) for c in cases]
    scores = ce.predict(pairs, batch_size=4, show_progress_bar=False)
    st_len = ce.max_seq_length
    for c in cases:
        c["st_default_max_length"] = c["max_length"] == st_len
        # ST always truncates "longest_first" at its max length; the case is equivalent to the
        # ST call when the lengths agree and either the strategy agrees or nothing was cut.
        c["st_equivalent"] = c["st_default_max_length"] and (c["truncation"] == "longest_first" or not c["truncated"])
    return {
        "max_length": st_len,
        "activation_fn": fullname(ce.activation_fn),
        "num_labels": ce.num_labels,
        "batch_size": 4,
        "scores": f32list(np.asarray(scores)),
        "equivalent_case_indices": [i for i, c in enumerate(cases) if c["st_equivalent"]],
    }


def check_st_agreement(ref: dict) -> float:
    """Max |ST score - activation(transformers logits)| over the equivalent cases."""
    act = ref["sentence_transformers"]["activation_fn"]
    worst = 0.0
    for i in ref["sentence_transformers"]["equivalent_case_indices"]:
        lg = torch.tensor(ref["cases"][i]["logits"])
        if act.endswith("Sigmoid"):
            exp = torch.sigmoid(lg)
        elif act.endswith("Identity"):
            exp = lg
        else:
            raise AssertionError(f"unexpected activation {act}")
        got = torch.tensor(ref["sentence_transformers"]["scores"][i]).reshape(exp.shape)
        worst = max(worst, float((got - exp).abs().max()))
    assert worst < 1e-4, f"ST disagrees with transformers by {worst}"
    return worst


def spread(cases: list[dict], key: str = "logits") -> tuple[float, float, float]:
    a = np.array([c[key] for c in cases], dtype=np.float64)
    return float(a.min()), float(a.max()), float(a.std(axis=0).mean())


def reference(name: str, model, tok, cases, model_dir: Path, extra_models=None) -> dict:
    model.eval()
    cfg = model.config
    ref = {
        "model": name,
        "versions": VERSIONS,
        "num_labels": cfg.num_labels,
        "id2label": {str(k): v for k, v in cfg.id2label.items()},
        "tokenizer_model_max_length": int(tok.model_max_length),
        "cases": run_cases(model, tok, cases, extra_models),
    }
    ref["sentence_transformers"] = st_block(model_dir, ref["cases"])
    ref["st_max_abs_diff_vs_transformers"] = check_st_agreement(ref)
    return ref


def clean_dir(d: Path) -> None:
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)


def make_bert_2label(out: Path, vocab: list[str]) -> dict:
    name = "bert-2label-vocab"
    d = out / name
    clean_dir(d)
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # amberoad-style: a tokenizer_config.json WITHOUT do_lower_case.
    write_json(d / "tokenizer_config.json", {"model_max_length": 512})
    torch.manual_seed(1)
    cfg = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu",
        num_labels=2, pad_token_id=0,
    )
    model = BertForSequenceClassification(cfg)
    reinit(model, seed=101)
    model.eval()
    # transformers 5.x ignores safe_serialization=False and always writes safetensors, so the
    # legacy pickle checkpoint is written with torch.save (what save_pretrained used to do).
    model.save_pretrained(d)
    for f in d.glob("*.safetensors"):
        f.unlink()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save(state, d / "pytorch_model.bin")
    assert (d / "pytorch_model.bin").exists()
    assert not (d / "tokenizer.json").exists()
    tok = AutoTokenizer.from_pretrained(str(d))
    loaded = AutoModelForSequenceClassification.from_pretrained(str(d)).eval()
    ref = reference(name, loaded, tok, model_cases(64), d)
    ref["tokenizer_resolved"] = {
        "class": type(tok).__name__,
        "do_lower_case": tok.do_lower_case,
        "strip_accents": tok.strip_accents,
        "tokenize_chinese_chars": tok.tokenize_chinese_chars,
        "model_max_length": int(tok.model_max_length),
    }
    assert not (d / "tokenizer.json").exists()
    return ref


def make_bert_3label(out: Path, vocab: list[str]) -> dict:
    name = "bert-3label"
    d = out / name
    clean_dir(d)
    tok0 = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, model_max_length=64)
    tok0.save_pretrained(d)
    torch.manual_seed(2)
    cfg = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=40, max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu_new",
        num_labels=3, id2label=dict(LABELS3), label2id={v: k for k, v in LABELS3.items()}, pad_token_id=0,
    )
    model = BertForSequenceClassification(cfg)
    reinit(model, seed=202, head_scale=3.0)
    model.save_pretrained(d)
    assert (d / "model.safetensors").exists() and (d / "tokenizer.json").exists()
    tok = AutoTokenizer.from_pretrained(str(d))
    loaded = AutoModelForSequenceClassification.from_pretrained(str(d)).eval()
    return reference(name, loaded, tok, model_cases(64), d)


def modernbert_config(tok: Tokenizer, **kw) -> ModernBertConfig:
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    vocab_size = (vocab_size + 63) // 64 * 64  # padded embedding rows, as in the real 50368
    ids = {t: tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]")}
    return ModernBertConfig(
        vocab_size=vocab_size,
        pad_token_id=ids["[PAD]"], cls_token_id=ids["[CLS]"], sep_token_id=ids["[SEP]"],
        bos_token_id=ids["[CLS]"], eos_token_id=ids["[SEP]"],
        **kw,
    )


OLD_STYLE_DROP = ("layer_types", "rope_parameters", "dtype", "sliding_window", "rope_scaling")


def rewrite_old_style(cfg_path: Path, every_n: int, global_theta: float, local_theta: float, local_attention: int) -> None:
    cfg = json.loads(cfg_path.read_text())
    for k in OLD_STYLE_DROP:
        cfg.pop(k, None)
    cfg.update({
        "global_attn_every_n_layers": every_n,
        "global_rope_theta": global_theta,
        "local_rope_theta": local_theta,
        "local_attention": local_attention,
        "torch_dtype": "float32",
        "position_embedding_type": "absolute",
        "transformers_version": "4.48.0",
    })
    cfg = dict(sorted(cfg.items()))
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


def make_modernbert_1label_mean(out: Path, bpe: Tokenizer) -> dict:
    name = "modernbert-1label-mean"
    d = out / name
    clean_dir(d)
    save_modernbert_tokenizer(bpe, d, model_max_length=None)
    torch.manual_seed(3)
    cfg = modernbert_config(
        bpe, hidden_size=32, num_attention_heads=4, num_hidden_layers=3, intermediate_size=48,
        global_attn_every_n_layers=3, local_attention=64, max_position_embeddings=128,
        global_rope_theta=160000.0, local_rope_theta=10000.0,
        classifier_pooling="mean", norm_bias=False, attention_bias=False, mlp_bias=False, classifier_bias=False,
        classifier_activation="gelu", hidden_activation="gelu", num_labels=1,
    )
    model = ModernBertForSequenceClassification(cfg)
    reinit(model, seed=303)
    model.save_pretrained(d)
    new_style = json.loads((d / "config.json").read_text())
    model = AutoModelForSequenceClassification.from_pretrained(str(d)).eval()  # as saved, new style
    rewrite_old_style(d / "config.json", every_n=3, global_theta=160000.0, local_theta=10000.0, local_attention=64)
    write_json(d / "config_sentence_transformers.json", {
        "__version__": {"sentence_transformers": sentence_transformers.__version__,
                        "transformers": transformers.__version__, "pytorch": torch.__version__},
        "model_type": "CrossEncoder",
        "prompts": {},
        "default_prompt_name": None,
    })
    tok = AutoTokenizer.from_pretrained(str(d))
    loaded = AutoModelForSequenceClassification.from_pretrained(str(d)).eval()
    assert loaded.config.layer_types == new_style["layer_types"], (loaded.config.layer_types, new_style["layer_types"])
    assert loaded.config.rope_parameters == new_style["rope_parameters"], loaded.config.rope_parameters
    assert loaded.config.local_attention == 64
    cases = model_cases(128)
    for q, dd, L, trunc in cases:
        enc = encode(tok, q, dd, L, trunc)
        a, b = logits_of(model, enc), logits_of(loaded, enc)
        assert torch.equal(a, b), f"old-style config changed logits: {a.tolist()} vs {b.tolist()}"
    ref = reference(name, loaded, tok, cases, d)
    ref["config_style"] = "old (global_attn_every_n_layers/global_rope_theta/local_rope_theta/torch_dtype), verified equal logits"
    return ref


def make_modernbert_3label(out: Path, bpe: Tokenizer) -> dict:
    name = "modernbert-3label-cls-bias"
    d = out / name
    clean_dir(d)
    save_modernbert_tokenizer(bpe, d, model_max_length=128)
    torch.manual_seed(4)
    cfg = modernbert_config(
        bpe, hidden_size=32, num_attention_heads=4, num_hidden_layers=4, intermediate_size=40,
        global_attn_every_n_layers=2, local_attention=64, max_position_embeddings=128,
        classifier_pooling="cls", norm_bias=True, attention_bias=True, mlp_bias=True, classifier_bias=True,
        num_labels=3, id2label=dict(LABELS3), label2id={v: k for k, v in LABELS3.items()},
    )
    model = ModernBertForSequenceClassification(cfg)
    reinit(model, seed=404)
    model.save_pretrained(d)
    tok = AutoTokenizer.from_pretrained(str(d))
    loaded = AutoModelForSequenceClassification.from_pretrained(str(d)).eval()
    return reference(name, loaded, tok, model_cases(128), d)


@torch.no_grad()
def explicit_window_logits(model, enc: dict, half_window: int) -> torch.Tensor:
    """Eager attention with a hand-built |i-j| <= half_window mask for sliding layers."""
    ids = torch.tensor([enc["input_ids"]])
    n = ids.shape[1]
    i = torch.arange(n)
    allowed = (i[:, None] - i[None, :]).abs() <= half_window
    sliding = torch.zeros(1, 1, n, n)
    sliding.masked_fill_(~allowed, torch.finfo(torch.float32).min)
    masks = {"full_attention": torch.zeros(1, 1, n, n), "sliding_attention": sliding}
    pooled = model.model(input_ids=ids, attention_mask=masks).last_hidden_state[:, 0]
    return model.classifier(model.drop(model.head(pooled)))[0]


def make_modernbert_sliding(out: Path, bpe: Tokenizer) -> dict:
    name = "modernbert-sliding"
    d = out / name
    clean_dir(d)
    save_modernbert_tokenizer(bpe, d, model_max_length=256)
    torch.manual_seed(5)
    cfg = modernbert_config(
        bpe, hidden_size=32, num_attention_heads=4, num_hidden_layers=3, intermediate_size=48,
        global_attn_every_n_layers=3, local_attention=8, max_position_embeddings=256,
        global_rope_theta=160000.0, local_rope_theta=10000.0,
        classifier_pooling="cls", num_labels=1,
    )
    model = ModernBertForSequenceClassification(cfg)
    reinit(model, seed=505)
    model.save_pretrained(d)
    tok = AutoTokenizer.from_pretrained(str(d))
    loaded = AutoModelForSequenceClassification.from_pretrained(str(d)).eval()
    assert loaded.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    assert loaded.config.sliding_window == 4

    # Same weights, window disabled: local_attention >= 2 * any sequence length.
    full_cfg = copy.deepcopy(loaded.config)
    full_cfg.local_attention = 4096
    full = ModernBertForSequenceClassification(full_cfg).eval()
    full.load_state_dict(loaded.state_dict())
    assert full.config.rope_parameters == loaded.config.rope_parameters

    # Eager twin, to check the exact mask condition with a hand-built mask.
    eager = AutoModelForSequenceClassification.from_pretrained(str(d), attn_implementation="eager").eval()

    cases = sliding_cases(256)
    ref = reference(name, loaded, tok, cases, d, extra_models={"logits_full_attention": full})
    n_differ = 0
    for c in ref["cases"]:
        n = len(c["input_ids"])
        assert 60 <= n <= 256, (n, c["query"][:30])
        diff = float(np.abs(np.array(c["logits"]) - np.array(c["logits_full_attention"])).max())
        n_differ += diff > 1e-3
        enc = {"input_ids": c["input_ids"]}
        hand = explicit_window_logits(eager, enc, half_window=4)
        assert torch.allclose(hand, torch.tensor(c["logits"]), atol=1e-5), (hand, c["logits"])
        hand_wrong = explicit_window_logits(eager, enc, half_window=3)
        assert not torch.allclose(hand_wrong, torch.tensor(c["logits"]), atol=1e-5)
    assert n_differ >= 0.8 * len(ref["cases"]), f"window barely matters: {n_differ}/{len(ref['cases'])}"
    ref["sliding_window_check"] = {
        "mask": "sliding layers attend j iff |i - j| <= local_attention // 2 (= 4 here); verified against a hand-built mask",
        "cases_with_full_attention_diff_gt_1e-3": n_differ,
    }
    return ref


# --------------------------------------------------------------------------------------
# Tokenizer parity on the real tokenizers
# --------------------------------------------------------------------------------------

HUNDRED_K = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do "  # 10 words


def parity_cases() -> list[dict]:
    lf, os_ = "longest_first", "only_second"
    c = []

    def add(q, d, max_length=None, truncation=None, repeat=None):
        case = {"query": q, "document": d, "max_length": max_length, "truncation": truncation}
        if repeat:
            case["document_repeat"] = repeat
        c.append(case)

    add("what is the capital of france?", "Paris is the capital and most populous city of France.")
    add("What Is The Capital Of France?", "PARIS IS THE CAPITAL. Ñandú, Ångström, ÉCOLE, Øresund, Ça va?")
    add("naïve café résumé façade", "crème brûlée, jalapeño, piñata, Zürich, São Paulo, Kraków")
    add("Straße und Fußgänger", "Die Straße ist groß; STRASSE; Maß, Gruß, weiß.")
    add("İstanbul ve IĞDIR", "ılık, İzmir, ŞİŞLİ, çığ, Öğretmen")
    add("Ελληνικά: Αθήνα", "Η Ακρόπολη βρίσκεται στην Αθήνα· ΣΟΦΊΑ, σοφία, ς.")
    add("Москва — столица России", "Санкт-Петербург, Ёлка, ЁЖ, Київ, Їжак, Ђорђе.")
    add("ما هي عاصمة مصر؟", "القاهرة هي عاصمة جمهورية مصر العربية وأكبر مدنها.")
    add("भारत की राजधानी क्या है?", "नई दिल्ली भारत की राजधानी है। हिन्दी, संस्कृत।")
    add("เมืองหลวงของประเทศไทย", "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย")
    add("中国的首都是哪里？", "北京是中华人民共和国的首都，也是全国的政治中心。")
    add("東京タワーの高さは？", "東京タワーは高さ３３３メートルの電波塔です。ｶﾀｶﾅ、ひらがな。")
    add("한국의 수도는 어디입니까?", "서울특별시는 대한민국의 수도입니다. 한글 ㄱㄴㄷ.")
    add("emoji 😀🍕🔥", "family 👨‍👩‍👧‍👦, flag 🇫🇷🇯🇵, skin 👍🏽, heart ❤️, keycap 1️⃣")
    add("control\u0000chars\u0007here", "tab\there\r\nnew line\u000bvt\u000cff\u001fus\u007fdel")
    add("zero\u200bwidth\u200cjoin\u200dand\ufeffbom", "soft\u00adhyphen, word\u2060joiner, \u2028line sep")
    add("mixed Москва 北京 Zürich", "abc東京def Αθήνα123 مصر xyz 😀 किताब")
    add("", "Paris is the capital of France.")
    add("what is the capital of france?", "")
    add("", "")
    add("   ", "\t\n  \u3000\u00a0")
    add("numbers 3.14159 and 1,000,000", "2024-01-01T12:00:00Z; $9.99; 50%; 1e-10; 0x1F; (a+b)*c=d/e")
    add("punctuation!!! ???", "...---...;;; \"quoted\" 'single' «guillemets» „low“ — – … ¿¡")
    add("what does [MASK] mean", "[CLS] is a special token, [SEP] [PAD] [UNK] [MASK] too; [cls] lower.")
    add("url https://example.com/a?b=c&d=e", "email: someone@example.org, path C:\\Users\\x, #hashtag @user")
    add("fullwidth ＡＢＣ１２３", "math ∑∫√∞ ≤≥ ½ ² ³ ℃ ™ ©")
    add("  leading and trailing spaces  ", "  multiple     internal   spaces  ")
    add("combining e\u0301 vs é", "Å vs A\u030a; ﬁ ligature; Ⅻ roman; ㎏ unit")
    long_doc = " ".join([PARIS, EIFFEL, RIVER, COFFEE])
    add("tell me about paris", long_doc, 64, lf)
    add("tell me about paris", long_doc, 64, os_)
    add(LONG_QUERY, long_doc, 64, lf)
    add(LONG_QUERY * 3, long_doc, 96, lf)
    add(LONG_QUERY, long_doc, 128, os_)
    add("tell me about paris", long_doc, 512, lf)
    add(LONG_QUERY * 4, long_doc * 3, 512, lf)
    add("what is lorem ipsum", HUNDRED_K, 512, lf, repeat=10_000)  # 100,000 words
    add("what is lorem ipsum", HUNDRED_K, 512, os_, repeat=10_000)
    add(LONG_QUERY, "東京タワー 北京 😀 " , 512, lf, repeat=2_000)
    add("short", "x", 8, lf)
    add("a b c d e f g h i j", "k l m n o p q r s t", 12, lf)
    add("a b c d e f g h i j", "k l m n o p q r s t", 16, os_)
    return c


def make_tokenizer_parity(shared: Path) -> dict:
    specs = {
        "modernbert": "models/modernbert-tokenizer",
        "multilingual": "models/bert-base-multilingual-uncased",
    }
    out = {"versions": VERSIONS, "tokenizers": {}}
    for key, rel in specs.items():
        tok = AutoTokenizer.from_pretrained(str(shared / rel))
        entry = {
            "dir": rel,
            "class": type(tok).__name__,
            "model_max_length": int(tok.model_max_length),
        }
        if key == "multilingual":
            entry["loaded_as"] = "AutoTokenizer.from_pretrained(<dir with only vocab.txt + config.json>)"
            entry["do_lower_case"] = tok.do_lower_case
            entry["strip_accents"] = tok.strip_accents
            entry["tokenize_chinese_chars"] = tok.tokenize_chinese_chars
            bt = tok.backend_tokenizer
            entry["backend_normalizer"] = str(bt.normalizer)
            entry["wordpiece_max_input_chars_per_word"] = bt.model.max_input_chars_per_word
            # BertTokenizer built from vocab.txt directly must agree with AutoTokenizer.
            direct = BertTokenizer.from_pretrained(str(shared / rel))
        else:
            direct = None
        cases = []
        for c in parity_cases():
            doc = c["document"] * c.get("document_repeat", 1)
            enc = encode(tok, c["query"], doc, c["max_length"], c["truncation"])
            if direct is not None:
                assert encode(direct, c["query"], doc, c["max_length"], c["truncation"]) == enc
            if c["max_length"] is not None:
                assert len(enc["input_ids"]) <= c["max_length"]
            case = {**c, "input_ids": enc["input_ids"], "token_type_ids": enc.get("token_type_ids")}
            if "_unbatched" in enc:
                case["input_ids_unbatched_call"] = enc["_unbatched"]["input_ids"]
            cases.append(case)
        entry["cases"] = cases
        out["tokenizers"][key] = entry
    return out


# --------------------------------------------------------------------------------------
# Real MiniLM embeddings
# --------------------------------------------------------------------------------------


def make_minilm(shared: Path) -> dict:
    from sentence_transformers import SentenceTransformer

    path = shared / "models/all-MiniLM-L6-v2"
    st = SentenceTransformer(str(path), device="cpu")
    modules = json.loads((path / "modules.json").read_text())
    normalized = any(m["type"].endswith("Normalize") for m in modules)
    sentences = [
        "The cat sits outside.",
        "A man is playing guitar.",
        "What is the capital of France?",
        "Paris is the capital and most populous city of France.",
        "",
        "naïve café in Zürich, crème brûlée!",
        "東京タワーは高さ333メートルの電波塔です。北京。",
        "Москва, Αθήνα, and 😀 emoji 🍕",
        "   leading and trailing whitespace   ",
        "[MASK] and [CLS] literals",
        PHOTO,
        " ".join([PARIS, EIFFEL, RIVER, COFFEE, MARKET]),  # > 256 tokens: truncated
    ]
    emb = st.encode(sentences, batch_size=4, convert_to_numpy=True, show_progress_bar=False)
    token_ids = []
    for s in sentences:
        feats = st.preprocess([s])
        token_ids.append([int(x) for x in feats["input_ids"][0]])
    assert len(token_ids[-1]) == st.max_seq_length, "long sentence should hit max_seq_length"
    # Cross-check: unbatched embeddings equal the batched ones.
    for i, s in enumerate(sentences):
        e1 = st.encode([s], convert_to_numpy=True, show_progress_bar=False)[0]
        assert np.allclose(e1, emb[i], atol=1e-5)
    return {
        "model_dir": "models/all-MiniLM-L6-v2",
        "versions": VERSIONS,
        "max_seq_length": int(st.max_seq_length),
        "normalized": normalized,
        "pooling": "mean",
        "sentences": sentences,
        "embeddings": f32list(emb),
        "token_ids": token_ids,
    }


# --------------------------------------------------------------------------------------
# Rerankers: XLM-R / ELECTRA sequence classifiers and Qwen3 / Qwen2 causal-LM rerankers
# --------------------------------------------------------------------------------------
#
# These fixtures are checked against sentence-transformers 6.2 itself: every score is what
# ``CrossEncoder(<dir>).predict`` returns, the ids are what ``CrossEncoder.preprocess`` fed the
# model, and the transformers forward pass on those ids is asserted to give the same raw score.
# See /work/notes/st6-rerankers.md (kept outside the repository) for the code-level facts.

# Roughly 1,900 characters of varied English prose; repeated for the long cases.
RERANK_LONG = " ".join([PARIS, EIFFEL, RIVER, COFFEE, PHOTO, MARKET])

# The literal text of every control token the fixtures' tokenizers know, inside user input.
SPECIAL_LITERALS = (
    "literals <s> </s> <pad> <unk> <mask> [CLS] [SEP] [PAD] <|endoftext|> <|im_start|>user "
    "<|im_end|> <think>x</think> yes no 1 0"
)

# Qwen3-Reranker's prompt, as published on its model card (the recipe the original checkpoint
# documents): system prefix, "<Instruct>/<Query>/<Document>" body, assistant prefill with an
# empty think block.  Score = logit("yes") - logit("no") at the last position.
QWEN3_RERANKER_DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
QWEN3_RERANKER_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_RERANKER_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_RERANKER_BODY = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"
QWEN3_MODEL_CARD_MAX_LENGTH = 8192

# A chat template (written for these fixtures) that renders a sentence-transformers
# (query, document) pair -- messages with roles "query" and "document", plus an optional
# "system" message (ST's `prompt`) used as the instruction -- into exactly
# QWEN3_RERANKER_PREFIX + QWEN3_RERANKER_BODY + QWEN3_RERANKER_SUFFIX.  The generator asserts
# that equality for every case.  (transformers renders with trim_blocks/lstrip_blocks and drops
# one trailing newline, hence the extra blank line at the end.)
QWEN3_RERANKER_TEMPLATE = """\
{%- set slot = namespace(instruction="Given a web search query, retrieve relevant passages that answer the query", query="", document="") -%}
{%- for m in messages -%}
{%- if m["role"] == "system" -%}{%- set slot.instruction = m["content"] -%}
{%- elif m["role"] == "query" -%}{%- set slot.query = m["content"] -%}
{%- elif m["role"] == "document" -%}{%- set slot.document = m["content"] -%}
{%- endif -%}
{%- endfor -%}
<|im_start|>system
Judge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>
<|im_start|>user
<Instruct>: {{ slot.instruction }}
<Query>: {{ slot.query }}
<Document>: {{ slot.document }}<|im_end|>
<|im_start|>assistant
<think>

</think>


"""

# A general-purpose ChatML template (system / user / assistant only, optional empty think block
# when enable_thinking is false), standing in for the conversation template that a plain Qwen3
# checkpoint -- and the original Qwen3-Reranker upload -- carries.  Roles it does not know, such
# as ST's "query" / "document", render nothing.
CHATML_TEMPLATE = """\
{%- for m in messages -%}
{%- if m["role"] in ["system", "user", "assistant"] -%}
{{ "<|im_start|>" + m["role"] + "\\n" + m["content"] + "<|im_end|>\\n" }}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{ "<|im_start|>assistant\\n" }}
{%- if enable_thinking is defined and enable_thinking is false %}{{ "<think>\\n\\n</think>\\n\\n" }}{% endif -%}
{%- endif -%}
"""

# A pointwise "1"/"0" relevance prompt for the Qwen2 fixture (mixedbread's mxbai-rerank-v2 family
# scores a Qwen2 model with the tokens "1" and "0"; this prompt is the fixture's own).
QWEN2_RELEVANCE_TEMPLATE = """\
{%- set slot = namespace(query="", document="") -%}
{%- for m in messages -%}
{%- if m["role"] == "query" -%}{%- set slot.query = m["content"] -%}
{%- elif m["role"] == "document" -%}{%- set slot.document = m["content"] -%}
{%- endif -%}
{%- endfor -%}
<|im_start|>system
You rate search results.<|im_end|>
<|im_start|>user
query: {{ slot.query }}
document: {{ slot.document }}
Is the document relevant to the query? Answer 1 for relevant, 0 for not relevant.<|im_end|>
<|im_start|>assistant

"""

# Qwen's pre-tokenization regex (the split the real Qwen2/Qwen3 tokenizer.json carries).
QWEN_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# The 26 added tokens of the Qwen3 tokenizer, in id order after the BPE vocab (151643..151668 in
# the real one), with their "special" flag.
QWEN_ADDED_TOKENS = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False), ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False),
)

# Shapes of the published checkpoints that the --full-size kinds copy.
QWEN3_RERANKER_0_6B_DIMS = dict(
    vocab_size=151669, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
    num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
)


def reranker_pairs() -> list[dict]:
    """22 (query, document) pairs; ``document_repeat`` = n means the document is ``document * n``."""
    c: list[dict] = []

    def add(q: str, d: str, repeat: int | None = None) -> None:
        entry = {"query": q, "document": d}
        if repeat:
            entry["document_repeat"] = repeat
        c.append(entry)

    add("what is the capital of france?", "Paris is the capital and most populous city of France.")
    add("what is the capital of france?", "The mitochondria is the powerhouse of the cell.")
    add("how do plants make food", PHOTO)
    add("how do plants make food", MARKET)
    add("café near Zürich", "A naïve visitor ordered a crème brûlée at the café in Zürich.")
    add("東京タワーの高さは？", TOKYO)
    add("best pizza 🍕 in town?", EMOJI)
    add("Москва vs 北京 vs Zürich", MIXED)
    add("", "Paris is the capital and most populous city of France.")  # empty query
    add("what is the capital of france?", "")  # empty document
    add("", "")
    add("a", "b")
    add("   ", "\t\n  ")
    add("tabs\tand\nnewlines  and  double  spaces", "  leading and trailing spaces  ")
    add("WHAT IS THE CAPITAL OF FRANCE?", "PARIS! Ça va? ÉCOLE NORMALE. 2+2=4 (yes); $9.99, 50% off.")
    add("what do these mean?", SPECIAL_LITERALS)
    add("tell me about paris", LONG_DOC)
    add(LONG_QUERY, RERANK_LONG)
    add("tell me about paris", RERANK_LONG, repeat=3)
    add(LONG_QUERY, RERANK_LONG, repeat=4)  # ~3,500 tokens with the XLM-R fixture's tokenizer
    add(LONG_QUERY, RERANK_LONG, repeat=9)  # ~3,900 tokens with the Qwen fixtures' tokenizer
    add("what is the capital of france?", RERANK_LONG, repeat=12)  # over 4,096: cut by XLM-R's limit
    return c


def full_size_reference_pairs(model_dir: Path, long_tokens: int = 2000) -> list[dict]:
    """The pairs of a ``--full-size-reference``: the 8 short pairs of ``reranker_pairs`` (several
    scripts, emoji), an empty document, two of a few hundred tokens, and LONG_QUERY with RERANK_LONG
    repeated until the pair has about ``long_tokens`` tokens with the tokenizer saved in
    ``model_dir`` (query and document counted without special tokens or template, so the model
    sees a little more; a model with fewer positions truncates it)."""
    tok = AutoTokenizer.from_pretrained(str(model_dir))

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    repeat = max(2, round((long_tokens - count(LONG_QUERY)) / count(RERANK_LONG)))
    pairs = [p for p in reranker_pairs() if "document_repeat" not in p][:8]
    pairs.append({"query": "what is the capital of france?", "document": ""})  # empty document
    pairs.append({"query": "tell me about paris", "document": LONG_DOC})
    pairs.append({"query": LONG_QUERY, "document": RERANK_LONG})
    pairs.append({"query": LONG_QUERY, "document": RERANK_LONG, "document_repeat": repeat})
    return pairs


def pair_texts(pairs: list[dict]) -> list[tuple[str, str]]:
    return [(p["query"], p["document"] * p.get("document_repeat", 1)) for p in pairs]


def reranker_training_texts() -> list[str]:
    texts = all_texts()
    for q, d in pair_texts(reranker_pairs()[:18]):
        texts += [q, d]
    texts += [QWEN3_RERANKER_PREFIX, QWEN3_RERANKER_SUFFIX, QWEN3_RERANKER_DEFAULT_INSTRUCTION,
              "<Instruct>: <Query>: <Document>:", "You rate search results.",
              "Is the document relevant to the query? Answer 1 for relevant, 0 for not relevant.",
              "Given a question, retrieve passages that answer it"]
    # "yes" / "no" must be single tokens without a leading space, as in the real Qwen vocab, and the
    # template's fixed text should merge (e.g. "\n\n" is one token in the real vocab).
    texts += ["yes", "no", "Yes", "No", "yes\n\nno\n\n", QWEN3_RERANKER_PREFIX + QWEN3_RERANKER_SUFFIX] * 40
    return texts


@torch.no_grad()
def reinit_decoder(model: torch.nn.Module, seed: int, embed_std: float = 1.0) -> None:
    """Seeded re-init of a decoder LM: the token embeddings (tied LM head included) get a large std
    so that logit("yes") - logit("no") varies strongly with the input."""
    reinit(model, seed, head_scale=1.0)
    g = torch.Generator().manual_seed(seed + 1)
    emb = model.get_input_embeddings().weight
    emb.copy_(embed_std * torch.randn(emb.shape, generator=g))
    head = model.get_output_embeddings().weight
    if head.data_ptr() != emb.data_ptr():  # an untied LM head gets the same large std
        head.copy_(embed_std * torch.randn(head.shape, generator=g))


def template_ids(tok: Tokenizer, template: str, pairs: list[dict]) -> list[list[int]]:
    """Token ids of each pair rendered through a chat template as sentence-transformers renders it
    (messages with roles "query" and "document"; no generation prompt; no special tokens added)."""
    fast = PreTrainedTokenizerFast(tokenizer_object=copy.deepcopy(tok))
    fast.chat_template = template
    return [list(fast.apply_chat_template([{"role": "query", "content": q}, {"role": "document", "content": d}],
                                          tokenize=True, return_dict=False))
            for q, d in pair_texts(pairs)]


@torch.no_grad()
def center_margin(model, id_lists: list[list[int]], true_id: int, false_id: int) -> None:
    """Move the true/false rows of the LM head along the mean last hidden state so that the mean
    margin logit(true) - logit(false) over these inputs is about 0 (instead of a large constant
    offset that would saturate the sigmoid of every default score)."""
    hs = torch.stack([model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1] for ids in id_lists])
    head = model.get_output_embeddings().weight
    margin = hs @ (head[true_id] - head[false_id])
    h = hs.mean(0)
    shift = margin.mean() * h / h.dot(h)
    head[true_id] -= 0.5 * shift
    head[false_id] += 0.5 * shift


# ---- tokenizers ----------------------------------------------------------------------


def build_xlmr_unigram(vocab_size: int = 1000) -> Tokenizer:
    """SentencePiece-style Unigram trained with `tokenizers`, in XLM-R's tokenizer.json layout.

    <s>=0 <pad>=1 </s>=2 <unk>=3, the trained pieces, then <mask> as the last vocab entry
    (250001 of 250002 in the real one, lstrip=True); Metaspace("▁", prepend always, split)
    pre-tokenizer and decoder; ``<s> A </s></s> B </s>`` template.  The real file's normalizer is
    ``Sequence[Precompiled(nmt_nfkc charsmap), Replace(" {2,}", " ")]``; no charsmap can be made
    here, so only the Replace is kept.
    """
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.Replace(tokenizers.Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, show_progress=False, unk_token="<unk>",
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"], max_piece_length=16,
    )
    tok.train_from_iterator(reranker_training_texts() * 2, trainer=trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    assert [v[0] for v in vocab[:4]] == ["<s>", "<pad>", "</s>", "<unk>"], vocab[:4]
    assert spec["model"]["unk_id"] == 3
    # The trainer is not reproducible in two ways: equal-score pieces come out in hash order, and
    # the required characters it appends last get scores min - 1e-4, min - 2e-4, ... in hash
    # order.  Rounded scores, that tail re-assigned in character order, and a (score, piece) order
    # make the file identical from run to run.
    rest = sorted(([piece, round(score, 6)] for piece, score in vocab[4:]), key=lambda v: (v[1], v[0]))
    k = 1
    while k < len(rest) and rest[k][1] - rest[k - 1][1] < 1.5e-4:
        k += 1
    top = rest[k - 1][1]
    tail = [[piece, round(top - i * 1e-4, 6)] for i, piece in enumerate(sorted(p for p, _ in rest[:k]))]
    vocab[4:] = sorted(rest[k:] + tail, key=lambda v: (-v[1], v[0]))
    vocab.append(["<mask>", 0.0])
    spec["added_tokens"].append({
        "id": len(vocab) - 1, "content": "<mask>", "single_word": False, "lstrip": True, "rstrip": False,
        "normalized": False, "special": True,
    })
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    assert tok.token_to_id("<mask>") == tok.get_vocab_size(with_added_tokens=True) - 1
    return tok


def build_qwen_bpe(vocab_size: int = 1100) -> Tokenizer:
    """Byte-level BPE in the real Qwen2/Qwen3 tokenizer.json layout, with Qwen3's 26 added tokens
    appended after the trained vocab (``yes``, ``no``, ``1``, ``0`` are ordinary BPE tokens)."""
    tok = Tokenizer(models.BPE(dropout=None, unk_token=None, continuing_subword_prefix="", end_of_word_suffix="",
                               fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[],
    )
    tok.train_from_iterator(reranker_training_texts() * 2, trainer=trainer)
    n = tok.get_vocab_size()
    for content, special in QWEN_ADDED_TOKENS:
        token = AddedToken(content, normalized=False, special=special)
        (tok.add_special_tokens if special else tok.add_tokens)([token])
    for i, (content, _) in enumerate(QWEN_ADDED_TOKENS):
        assert tok.token_to_id(content) == n + i, content
    for word in ("yes", "no", "1", "0"):
        assert tok.token_to_id(word) is not None and len(tok.encode(word).ids) == 1, word
    return tok


def save_qwen_tokenizer(tok: Tokenizer, d: Path, chat_template: str, template_in_config: bool) -> None:
    """tokenizer.json + a tokenizer_config.json with the real Qwen3 keys.

    ``template_in_config``: the chat template sits in tokenizer_config.json (as checkpoints saved
    by transformers 4.4x carry it) instead of transformers 5's chat_template.jinja."""
    fast = PreTrainedTokenizerFast(tokenizer_object=copy.deepcopy(tok), eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", model_max_length=131072)
    fast.save_pretrained(d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg = {k: v for k, v in cfg.items() if k == "added_tokens_decoder"}
    cfg.update({
        "add_prefix_space": False, "bos_token": None, "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>", "errors": "replace", "model_max_length": 131072,
        "pad_token": "<|endoftext|>", "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    })
    if template_in_config:
        cfg["chat_template"] = chat_template
        (d / "chat_template.jinja").unlink(missing_ok=True)
    else:
        (d / "chat_template.jinja").write_text(chat_template, encoding="utf-8")
    write_json(d / "tokenizer_config.json", dict(sorted(cfg.items())))
    (d / "special_tokens_map.json").unlink(missing_ok=True)


def check_tokenizer_json(d: Path, tok, texts: list, pair: bool) -> list[bool]:
    """Whether tokenizer.json, loaded as is by the `tokenizers` library (what the Rust side does),
    encodes each text (or pair) like the transformers tokenizer does (no truncation)."""
    raw = Tokenizer.from_file(str(d / "tokenizer.json"))
    agree = []
    for t in texts:
        if pair:
            want = tok([t[0]], [t[1]])["input_ids"][0]
            got = raw.encode(t[0], t[1]).ids
        else:
            want = tok(t, add_special_tokens=False)["input_ids"]
            got = raw.encode(t, add_special_tokens=False).ids
        agree.append(list(want) == list(got))
    return agree


# ---- sentence-transformers reference ---------------------------------------------------


def st_reference(model_dir: Path, pairs: list[dict], batch_size: int = 4, prompt: str | None = None,
                 ce_kwargs: dict | None = None, check_forward: bool = True) -> tuple[list[dict], dict]:
    """Per-case ids ST fed and raw (Identity) scores, plus the batched default ``predict``.

    Every case is also scored alone (batch of one, no padding); the transformers forward pass on
    the fed ids must reproduce that raw score, and the batched call must agree with it."""
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder.modules import LogitScore
    from sentence_transformers.util import fullname

    ce = CrossEncoder(str(model_dir), device="cpu", **(ce_kwargs or {}))
    transformer = ce[0]
    logit_score = next((m for m in ce if isinstance(m, LogitScore)), None)
    identity = torch.nn.Identity()
    texts = pair_texts(pairs)
    max_len = ce.max_seq_length
    cases = []
    for p, pair in zip(pairs, texts):
        feats = ce.preprocess([pair], prompt=prompt)
        ids = feats["input_ids"][0].tolist()
        assert bool(feats["attention_mask"].all()), "a single pair is never padded"
        untruncated = ce.preprocess([pair], prompt=prompt, processing_kwargs={"text": {"truncation": False}})
        n_full = int(untruncated["input_ids"].shape[1])
        raw = ce.predict([pair], batch_size=1, prompt=prompt, activation_fn=identity, convert_to_numpy=True)
        raw = np.asarray(raw, dtype=np.float32).reshape(-1)
        case = {**p, "input_ids": ids}
        if "token_type_ids" in feats:
            case["token_type_ids"] = feats["token_type_ids"][0].tolist()
        case["num_tokens"] = len(ids)
        case["truncated"] = n_full > len(ids)
        if case["truncated"]:
            case["num_tokens_untruncated"] = n_full
        if logit_score is not None and "document_repeat" not in p and not case["truncated"]:
            messages = transformer.input_formatter.pair_to_messages(pair)
            if prompt:
                messages = [{"role": "system", "content": prompt}] + messages
            case["rendered_text"] = transformer.processor.apply_chat_template(messages, tokenize=False)
        case["logits"] = [float(x) for x in raw]
        if check_forward:
            with torch.no_grad():
                inputs = {k: v for k, v in feats.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
                out = ce.model(**inputs).logits[0].float()
                if logit_score is not None:
                    last = out[-1]
                    want = last[logit_score.true_token_id]
                    if logit_score.false_token_id is not None:
                        want = want - last[logit_score.false_token_id]
                    want = want.reshape(1)
                else:
                    want = out
            diff = float((want - torch.from_numpy(raw)).abs().max())
            assert diff <= 1e-5, f"transformers forward disagrees with ST predict by {diff}"
        cases.append(case)

    raw_b = np.asarray(ce.predict(texts, batch_size=batch_size, prompt=prompt, activation_fn=identity),
                       dtype=np.float32).reshape(len(texts), -1)
    act_b = np.asarray(ce.predict(texts, batch_size=batch_size, prompt=prompt), dtype=np.float32)
    order = np.argsort([-ce._input_length(t) for t in texts])
    batches = [[int(i) for i in order[s:s + batch_size]] for s in range(0, len(order), batch_size)]
    single = np.array([c["logits"] for c in cases], dtype=np.float32)
    diff_b = float(np.abs(raw_b - single).max())
    tok = transformer.tokenizer
    block = {
        "class": "sentence_transformers.CrossEncoder",
        "modules": [type(m).__name__ for m in ce],
        "max_length": int(max_len),
        "activation_fn": fullname(ce.activation_fn),
        "num_labels": ce.num_labels,
        "batch_size": batch_size,
        "padding_side": tok.padding_side,
        "pad_token_id": tok.pad_token_id,
        "batches": batches,
        "scores_raw": f32list(raw_b if ce.num_labels > 1 else raw_b.reshape(-1)),
        "scores": f32list(act_b),
        "batched_vs_single_max_abs_diff": diff_b,
    }
    if prompt is not None:
        block["prompt"] = prompt
    if logit_score is not None:
        block["logit_score"] = {"true_token_id": logit_score.true_token_id,
                                "false_token_id": logit_score.false_token_id}
        block["message_format"] = transformer.input_formatter.message_format
        block["attn_implementation"] = ce.model.config._attn_implementation
    # The default activation applied to the single-pair raw scores gives the batched default scores.
    act = ce.activation_fn(torch.from_numpy(single)).numpy()
    if ce.num_labels == 1:
        act = act.reshape(-1)
    block["activated_single_vs_batched_max_abs_diff"] = float(np.abs(act - act_b).max())
    assert diff_b < 1e-4, f"batched ST scores differ from single-pair ones by {diff_b}"
    return cases, block


def eager_vs_sdpa(model_dir: Path, pairs: list[dict], st: dict) -> dict:
    """Batched raw scores with attn_implementation="eager" against the default (sdpa) ones."""
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(str(model_dir), device="cpu", model_kwargs={"attn_implementation": "eager"})
    raw = np.asarray(ce.predict(pair_texts(pairs), batch_size=st["batch_size"], activation_fn=torch.nn.Identity()),
                     dtype=np.float32)
    diff = float(np.abs(raw.reshape(-1) - np.asarray(st["scores_raw"], dtype=np.float32).reshape(-1)).max())
    assert diff < 1e-4, diff
    return {"default": st.get("attn_implementation", "sdpa"), "eager_max_abs_diff": diff}


@torch.no_grad()
def left_padding_check(model, long_ids: list[int], short_ids: list[int], pad_id: int) -> dict:
    """A left-padded batch as sentence-transformers builds it (no position_ids passed, so the model
    uses arange(seq_len): a left-padded row's real tokens start at position n_pad), against the same
    batch with position_ids = cumsum(mask) - 1, and against the short row scored alone."""
    n = len(long_ids)
    pad = n - len(short_ids)
    ids = torch.tensor([long_ids, [pad_id] * pad + short_ids])
    mask = torch.tensor([[1] * n, [0] * pad + [1] * len(short_ids)])
    default = model(input_ids=ids, attention_mask=mask).logits[1, -1].float()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    shifted = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[1, -1].float()
    alone = model(input_ids=torch.tensor([short_ids])).logits[0, -1].float()
    return {
        "pad_tokens": pad,
        "default_position_ids_vs_alone_max_abs_logit_diff": float((default - alone).abs().max()),
        "cumsum_position_ids_vs_alone_max_abs_logit_diff": float((shifted - alone).abs().max()),
    }


def finish_reference(name: str, d: Path, cases: list[dict], st: dict, **extra) -> dict:
    ref = {"model": name, "versions": VERSIONS, **extra, "cases": cases, "sentence_transformers": st}
    scores = np.array([c["logits"] for c in cases], dtype=np.float64)
    ref["raw_score_spread"] = {"min": float(scores.min()), "max": float(scores.max()),
                               "std_across_cases": float(scores.std(axis=0).mean())}
    return ref


# ---- XLM-R -------------------------------------------------------------------------------


def save_xlmr_tokenizer(tok: Tokenizer, d: Path, model_max_length: int) -> None:
    fast = PreTrainedTokenizerFast(
        tokenizer_object=copy.deepcopy(tok), bos_token="<s>", eos_token="</s>", sep_token="</s>",
        cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
        model_input_names=["input_ids", "attention_mask"], model_max_length=model_max_length,
    )
    fast.save_pretrained(d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = "XLMRobertaTokenizer"
    write_json(d / "tokenizer_config.json", dict(sorted(cfg.items())))


def xlmr_model(tok: Tokenizer, num_labels: int = 1, vocab_size: int | None = None, **dims):
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    cfg = XLMRobertaConfig(
        vocab_size=vocab_size or tok.get_vocab_size(with_added_tokens=True), pad_token_id=1, bos_token_id=0,
        eos_token_id=2, type_vocab_size=1, layer_norm_eps=1e-5, num_labels=num_labels, **dims,
    )
    cfg.architectures = ["XLMRobertaForSequenceClassification"]
    return XLMRobertaForSequenceClassification(cfg)


def make_xlmr_1label(out: Path, tok: Tokenizer) -> dict:
    name = "xlmr-1label"
    d = out / name
    clean_dir(d)
    save_xlmr_tokenizer(tok, d, model_max_length=4096)
    torch.manual_seed(11)
    model = xlmr_model(tok, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                       max_position_embeddings=4098, hidden_act="gelu")
    reinit(model, seed=1101, head_scale=4.0)
    model.eval()
    hf_tok = AutoTokenizer.from_pretrained(str(d))
    with torch.no_grad():  # centre the logit over the short pairs, so that Sigmoid does not saturate
        short = pair_texts([p for p in reranker_pairs() if "document_repeat" not in p])
        mean = torch.stack([logits_of(model, encode(hf_tok, q, doc, None, None)) for q, doc in short]).mean()
        model.classifier.out_proj.bias -= mean
    model.save_pretrained(d)
    assert type(hf_tok).__name__ == "XLMRobertaTokenizer", type(hf_tok)
    assert [hf_tok.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    assert hf_tok.mask_token_id == model.config.vocab_size - 1
    pairs = reranker_pairs()
    cases, st = st_reference(d, pairs)
    assert st["max_length"] == 4096 and st["activation_fn"] == "torch.nn.modules.activation.Sigmoid", st
    agree = check_tokenizer_json(d, hf_tok, pair_texts(pairs), pair=True)
    for c, ok in zip(cases, agree):
        c["tokenizer_json_ids_match"] = ok
        if not ok:
            q, doc = pair_texts([c])[0]
            c["tokenizer_json_input_ids_untruncated"] = Tokenizer.from_file(str(d / "tokenizer.json")).encode(q, doc).ids
    # XLM-R position ids: padding_idx + running count of non-pad tokens; pad tokens keep padding_idx.
    ids0 = torch.tensor([cases[0]["input_ids"]])
    positions0 = (torch.cumsum(ids0.ne(1).int(), dim=1) * ids0.ne(1).int() + 1)[0].tolist()
    assert max(c["num_tokens"] for c in cases) == 4096 and any(c["truncated"] for c in cases)
    assert any(2000 <= c["num_tokens"] <= 4096 and not c["truncated"] for c in cases)
    return finish_reference(
        name, d, cases, st,
        tokenizer_resolved={"class": type(hf_tok).__name__, "model_max_length": int(hf_tok.model_max_length),
                            "backend_normalizer": str(hf_tok.backend_tokenizer.normalizer),
                            "backend_pre_tokenizer": str(hf_tok.backend_tokenizer.pre_tokenizer)},
        tokenizer_json_mismatches=sum(not ok for ok in agree),
        attention_implementation=eager_vs_sdpa(d, pairs, st),
        position_ids_rule="padding_idx(1) + cumsum(input_ids != 1), and padding_idx for pad tokens",
        position_ids_case0=positions0,
    )


# ---- ELECTRA -------------------------------------------------------------------------------


def electra_model(num_labels: int, **dims):
    from transformers import ElectraConfig, ElectraForSequenceClassification

    cfg = ElectraConfig(num_labels=num_labels, type_vocab_size=2, pad_token_id=0, **dims)
    cfg.architectures = ["ElectraForSequenceClassification"]
    return ElectraForSequenceClassification(cfg)


def make_electra_2label(out: Path, vocab: list[str]) -> dict:
    name = "electra-2label"
    d = out / name
    clean_dir(d)
    BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, model_max_length=512).save_pretrained(d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = "ElectraTokenizer"  # what cross-encoder/ms-marco-electra-base declares
    write_json(d / "tokenizer_config.json", dict(sorted(cfg.items())))
    torch.manual_seed(12)
    model = electra_model(2, vocab_size=len(vocab), embedding_size=16, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=48, max_position_embeddings=512,
                          hidden_act="gelu")
    assert hasattr(model.electra, "embeddings_project")
    with torch.no_grad():
        reinit(model, seed=1201, head_scale=2.0)
        # embeddings_project is a plain Linear: fan-in init, not the embedding tables' std 1.
        g = torch.Generator().manual_seed(1202)
        w = model.electra.embeddings_project.weight
        w.copy_(torch.randn(w.shape, generator=g) / w.shape[1] ** 0.5)
    model.eval()
    model.save_pretrained(d)
    hf_tok = AutoTokenizer.from_pretrained(str(d))
    cases, st = st_reference(d, reranker_pairs())
    assert st["max_length"] == 512 and st["activation_fn"] == "torch.nn.modules.linear.Identity", st
    agree = check_tokenizer_json(d, hf_tok, pair_texts(reranker_pairs()), pair=True)
    assert all(agree), "ELECTRA tokenizer.json disagrees with transformers"
    return finish_reference(
        name, d, cases, st,
        tokenizer_resolved={"class": type(hf_tok).__name__, "model_max_length": int(hf_tok.model_max_length)},
        head="dense -> exact (erf) GELU -> out_proj on the first token, whatever hidden_act is",
    )


# ---- Qwen3 / Qwen2 causal-LM rerankers -------------------------------------------------------


def qwen3_model(tok: Tokenizer, vocab_size: int | None = None, **dims):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        vocab_size=vocab_size or tok.get_vocab_size(with_added_tokens=True), hidden_act="silu", rms_norm_eps=1e-6,
        tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        attention_bias=False, use_sliding_window=False, sliding_window=None, max_window_layers=28,
        bos_token_id=tok.token_to_id("<|endoftext|>"), eos_token_id=tok.token_to_id("<|im_end|>"),
        **dims,
    )
    cfg.architectures = ["Qwen3ForCausalLM"]
    return Qwen3ForCausalLM(cfg)


def model_card_scores(model, hf_tok, pairs: list[dict], instruction: str | None = None,
                      max_length: int = QWEN3_MODEL_CARD_MAX_LENGTH) -> dict:
    """The Qwen3-Reranker model card's own recipe: body = "<Instruct>: ...\\n<Query>: ...\\n<Document>: ..."
    tokenized alone and cut (longest_first) to max_length - len(prefix) - len(suffix) tokens, then
    prefix + body + suffix ids, LEFT padded in one batch; score = logit(yes) - logit(no) at the last
    position (the card reports exp(log_softmax([no, yes]))[yes] = sigmoid(score))."""
    instruction = instruction or QWEN3_RERANKER_DEFAULT_INSTRUCTION
    prefix_ids = hf_tok.encode(QWEN3_RERANKER_PREFIX, add_special_tokens=False)
    suffix_ids = hf_tok.encode(QWEN3_RERANKER_SUFFIX, add_special_tokens=False)
    bodies = [QWEN3_RERANKER_BODY.format(instruction=instruction, query=q, document=doc) for q, doc in pair_texts(pairs)]
    enc = hf_tok(bodies, padding=False, truncation="longest_first", return_attention_mask=False,
                 max_length=max_length - len(prefix_ids) - len(suffix_ids))
    ids = [prefix_ids + list(e) + suffix_ids for e in enc["input_ids"]]
    yes, no = hf_tok.convert_tokens_to_ids("yes"), hf_tok.convert_tokens_to_ids("no")

    def score(batch_ids: list[list[int]]) -> torch.Tensor:
        padded = hf_tok.pad({"input_ids": batch_ids}, padding=True, return_tensors="pt")
        assert hf_tok.padding_side == "left"
        with torch.no_grad():
            last = model(**padded).logits[:, -1, :].float()
        return last[:, yes] - last[:, no]

    single = torch.cat([score([x]) for x in ids])
    batched = score(ids)
    two = torch.stack([torch.zeros_like(single), single], 1)  # [no, yes] logits shifted by -no
    prob = torch.nn.functional.log_softmax(two, dim=1)[:, 1].exp()
    return {"ids": ids, "raw": single, "raw_batched": batched, "prob": prob,
            "prefix_ids": prefix_ids, "suffix_ids": suffix_ids, "yes": yes, "no": no}


def build_qwen_stage(stage: Path, tok: Tokenizer, model, template: str) -> None:
    clean_dir(stage)
    save_qwen_tokenizer(tok, stage, template, template_in_config=False)
    model.save_pretrained(stage)


def st_save(ce, d: Path) -> None:
    """``CrossEncoder.save`` into a clean directory, without the generated README model card."""
    clean_dir(d)
    ce.save(str(d))
    (d / "README.md").unlink(missing_ok=True)


def make_qwen3_rerankers(out: Path, tok: Tokenizer, stage_root: Path) -> list[tuple[str, dict]]:
    """qwen3-reranker-st and qwen3-reranker-original: the SAME weights and vocabulary, saved the way
    sentence-transformers 6.2 saves a causal CrossEncoder, and in the original upload's layout."""
    from sentence_transformers import CrossEncoder

    torch.manual_seed(13)
    model = qwen3_model(tok, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=16, max_position_embeddings=40960)
    reinit_decoder(model, seed=1301)
    model.eval()
    short = [p for p in reranker_pairs() if "document_repeat" not in p]
    center_margin(model, template_ids(tok, QWEN3_RERANKER_TEMPLATE, short), tok.token_to_id("yes"), tok.token_to_id("no"))
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    # ---- ST layout: CrossEncoder(<plain dir with the reranker chat template>) builds
    # Transformer(text-generation) + LogitScore(yes, no); .save() writes the ST files.
    stage = stage_root / "qwen3-st-stage"
    build_qwen_stage(stage, tok, model, QWEN3_RERANKER_TEMPLATE)
    st_name = "qwen3-reranker-st"
    st_dir = out / st_name
    st_save(CrossEncoder(str(stage), device="cpu"), st_dir)
    pairs = reranker_pairs()
    cases, st = st_reference(st_dir, pairs)
    hf_tok = AutoTokenizer.from_pretrained(str(st_dir), padding_side="left")
    assert type(hf_tok).__name__ == "Qwen2Tokenizer", type(hf_tok)
    assert st["logit_score"] == {"true_token_id": hf_tok.convert_tokens_to_ids("yes"),
                                 "false_token_id": hf_tok.convert_tokens_to_ids("no")}
    assert st["activation_fn"] == "torch.nn.modules.activation.Sigmoid" and st["max_length"] == 40960
    card = model_card_scores(model, hf_tok, pairs)
    for i, (c, (q, doc)) in enumerate(zip(cases, pair_texts(pairs))):
        body = QWEN3_RERANKER_BODY.format(instruction=QWEN3_RERANKER_DEFAULT_INSTRUCTION, query=q, document=doc)
        if "rendered_text" in c:
            assert c["rendered_text"] == QWEN3_RERANKER_PREFIX + body + QWEN3_RERANKER_SUFFIX, c["rendered_text"]
        c["model_card_ids_equal"] = c["input_ids"] == card["ids"][i]
        assert c["model_card_ids_equal"], f"ST ids differ from the model card recipe for case {i}"
        assert abs(c["logits"][0] - float(card["raw"][i])) <= 1e-5
    rendered = [c["rendered_text"] for c in cases if "rendered_text" in c]
    assert all(check_tokenizer_json(st_dir, hf_tok, rendered, pair=False))

    # Truncation: CrossEncoder(max_length=256) cuts the RENDERED text from the right, then writes the
    # template's tail (everything after the document) back over the last tokens.
    trunc_pairs = [p for p in pairs if p.get("document_repeat") or p["document"] in (LONG_DOC, RERANK_LONG)]
    t_cases, t_st = st_reference(st_dir, trunc_pairs, ce_kwargs={"max_length": 256})
    t_card = model_card_scores(model, hf_tok, trunc_pairs, max_length=256)
    suffix = t_card["suffix_ids"]
    for i, c in enumerate(t_cases):
        assert c["truncated"] and c["num_tokens"] == 256 and c["input_ids"][-len(suffix):] == suffix
        c["model_card_ids_equal"] = c["input_ids"] == t_card["ids"][i]
        assert c["model_card_ids_equal"]

    # ST `prompt` becomes a system message; the template uses it as the instruction.
    prompt = "Given a question, retrieve passages that answer it"
    p_pairs = pairs[:4]
    p_cases, p_st = st_reference(st_dir, p_pairs, prompt=prompt)
    p_card = model_card_scores(model, hf_tok, p_pairs, instruction=prompt)
    for i, c in enumerate(p_cases):
        assert c["input_ids"] == p_card["ids"][i]

    lp = left_padding_check(model, cases[16]["input_ids"], cases[0]["input_ids"], st["pad_token_id"])
    assert lp["default_position_ids_vs_alone_max_abs_logit_diff"] < 1e-4, lp
    st_ref = finish_reference(
        st_name, st_dir, cases, st,
        left_padding_check=lp,
        attention_implementation=eager_vs_sdpa(st_dir, pairs, st),
        chat_template=(st_dir / "chat_template.jinja").read_text(encoding="utf-8"),
        model_card_prompt={"prefix": QWEN3_RERANKER_PREFIX, "body": QWEN3_RERANKER_BODY,
                           "suffix": QWEN3_RERANKER_SUFFIX, "default_instruction": QWEN3_RERANKER_DEFAULT_INSTRUCTION,
                           "prefix_ids": card["prefix_ids"], "suffix_ids": card["suffix_ids"]},
        truncation={"ce_max_length": 256, "cases": t_cases, "sentence_transformers": t_st,
                    "rule": "render, tokenize (no special tokens added), keep the first max_length tokens, then "
                            "overwrite the last len(suffix) of them with the template tail after the document "
                            "(= model card recipe with max_length)"},
        prompt_cases={"prompt": prompt, "cases": p_cases, "sentence_transformers": p_st},
    )

    # ---- original layout: plain Qwen3ForCausalLM, general chat template in tokenizer_config.json,
    # no ST files.  ST 6.2 loads it (yes/no LogitScore) but predict() refuses the template.
    orig_name = "qwen3-reranker-original"
    orig_dir = out / orig_name
    clean_dir(orig_dir)
    save_qwen_tokenizer(tok, orig_dir, CHATML_TEMPLATE, template_in_config=True)
    model.save_pretrained(orig_dir)
    # config.json in the style of the original upload (transformers 4.5x): rope_theta / rope_scaling /
    # torch_dtype, no layer_types / rope_parameters / dtype.
    ocfg = json.loads((orig_dir / "config.json").read_text())
    for k in ("layer_types", "rope_parameters", "dtype"):
        ocfg.pop(k)
    ocfg.update(rope_theta=1000000.0, rope_scaling=None, torch_dtype="float32", transformers_version="4.51.0")
    (orig_dir / "config.json").write_text(json.dumps(dict(sorted(ocfg.items())), indent=2) + "\n")
    reloaded = AutoConfig.from_pretrained(str(orig_dir))
    assert reloaded.rope_parameters["rope_theta"] == 1000000.0 and reloaded.layer_types == ["full_attention"] * 2
    orig_tok = AutoTokenizer.from_pretrained(str(orig_dir), padding_side="left")
    st_attempt: dict = {}
    try:
        ce = CrossEncoder(str(orig_dir), device="cpu")
        st_attempt["loads"] = True
        st_attempt["modules"] = repr(ce).replace("\n", " ")
        st_attempt["activation_fn"] = type(ce.activation_fn).__name__
        try:
            ce.predict(pair_texts(pairs[:2]))
            st_attempt["predict"] = "ok"
        except Exception as exc:  # the expected outcome
            msg = str(exc).splitlines()[0].replace(str(orig_dir), "<model dir>")
            st_attempt["predict_error"] = f"{type(exc).__name__}: {msg}"
    except Exception as exc:
        st_attempt["loads"] = False
        st_attempt["load_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    assert "predict_error" in st_attempt, st_attempt
    ocard = model_card_scores(AutoModelForCausalLM.from_pretrained(str(orig_dir)).eval(), orig_tok, pairs)
    o_cases = []
    for i, p in enumerate(pairs):
        o_cases.append({**p, "input_ids": ocard["ids"][i], "num_tokens": len(ocard["ids"][i]),
                        "logits": [float(ocard["raw"][i])], "model_card_probability": float(ocard["prob"][i])})
        assert o_cases[-1]["input_ids"] == cases[i]["input_ids"]
        assert abs(o_cases[-1]["logits"][0] - cases[i]["logits"][0]) <= 1e-5
    o_trunc = model_card_scores(model, orig_tok, trunc_pairs, max_length=256)
    orig_ref = {
        "model": orig_name,
        "versions": VERSIONS,
        "layout": "Qwen3ForCausalLM + tokenizer (general ChatML template in tokenizer_config.json); no modules.json, "
                  "no sentence_bert_config.json, no LogitScore config, no reranker template; config.json in the "
                  "transformers 4.5x style (rope_theta, torch_dtype; no layer_types / rope_parameters)",
        "reference": "model card recipe (sentence-transformers 6.2 cannot score this layout, see sentence_transformers_v6)",
        "sentence_transformers_v6": st_attempt,
        "model_card_recipe": {
            "prefix": QWEN3_RERANKER_PREFIX, "body": QWEN3_RERANKER_BODY, "suffix": QWEN3_RERANKER_SUFFIX,
            "default_instruction": QWEN3_RERANKER_DEFAULT_INSTRUCTION, "max_length": QWEN3_MODEL_CARD_MAX_LENGTH,
            "prefix_ids": ocard["prefix_ids"], "suffix_ids": ocard["suffix_ids"],
            "true_token_id": ocard["yes"], "false_token_id": ocard["no"],
            "body_truncation": "tokenizer(body, truncation='longest_first', max_length=max_length - len(prefix_ids) - "
                               "len(suffix_ids)); no special tokens are added by the Qwen tokenizer",
            "padding": "left, pad_token <|endoftext|>, all pairs in one batch",
            "score": "logits[:, -1, yes] - logits[:, -1, no] ('logits'); model card probability = "
                     "exp(log_softmax([no, yes])[1]) = sigmoid(score)",
        },
        "cases": o_cases,
        "batched": {"scores_raw": f32list(ocard["raw_batched"]),
                    "batched_vs_single_max_abs_diff": float((ocard["raw_batched"] - ocard["raw"]).abs().max())},
        "truncation": {"max_length": 256, "cases": [
            {**p, "input_ids": o_trunc["ids"][i], "logits": [float(o_trunc["raw"][i])]} for i, p in enumerate(trunc_pairs)]},
        "same_weights_as": st_name,
    }
    scores = np.array([c["logits"][0] for c in o_cases])
    orig_ref["raw_score_spread"] = {"min": float(scores.min()), "max": float(scores.max()), "std_across_cases": float(scores.std())}
    return [(st_name, st_ref), (orig_name, orig_ref)]


def qwen2_model(tok: Tokenizer, **dims):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=tok.get_vocab_size(with_added_tokens=True), hidden_act="silu", rms_norm_eps=1e-6,
        tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        use_sliding_window=False, sliding_window=None, max_window_layers=24,
        bos_token_id=tok.token_to_id("<|endoftext|>"), eos_token_id=tok.token_to_id("<|im_end|>"),
        **dims,
    )
    cfg.architectures = ["Qwen2ForCausalLM"]
    return Qwen2ForCausalLM(cfg)


def make_qwen2_reranker(out: Path, tok: Tokenizer, stage_root: Path) -> dict:
    """Qwen2ForCausalLM (q/k/v biases, no q/k norm, untied LM head) scored with "1" vs "0",
    built as CrossEncoder(modules=[Transformer(text-generation), LogitScore("1", "0")]).save()."""
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder.modules import LogitScore, Transformer

    name = "qwen2-reranker"
    torch.manual_seed(14)
    model = qwen2_model(tok, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=32768)
    reinit_decoder(model, seed=1401)
    model.eval()
    short = [p for p in reranker_pairs() if "document_repeat" not in p]
    center_margin(model, template_ids(tok, QWEN2_RELEVANCE_TEMPLATE, short), tok.token_to_id("1"), tok.token_to_id("0"))
    assert model.model.layers[0].self_attn.q_proj.bias is not None
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    stage = stage_root / "qwen2-stage"
    build_qwen_stage(stage, tok, model, QWEN2_RELEVANCE_TEMPLATE)
    transformer = Transformer(str(stage), transformer_task="text-generation")
    one, zero = transformer.tokenizer.convert_tokens_to_ids("1"), transformer.tokenizer.convert_tokens_to_ids("0")
    d = out / name
    st_save(CrossEncoder(modules=[transformer, LogitScore(true_token_id=one, false_token_id=zero)], device="cpu"), d)
    cases, st = st_reference(d, reranker_pairs())
    assert st["logit_score"] == {"true_token_id": one, "false_token_id": zero}, st
    return finish_reference(name, d, cases, st,
                            chat_template=(d / "chat_template.jinja").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------


FULL_SIZE_KINDS = ("minilm-l6", "modernbert-base", "modernbert-large", "mbert-2label",
                   "xlmr-large", "qwen3-0.6b", "electra-base")


def make_full_size(kind: str, out: Path, shared: Path, seed: int = 0, reference: bool = False) -> None:
    """A full-size, randomly initialised model of a published reranker architecture."""
    models_dir = shared / "models"
    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count() or 1)  # the fixtures use one thread; these are big
    out.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    src = None
    if kind == "minilm-l6":
        src = models_dir / "ms-marco-MiniLM-L-6-v2-config"
        cfg = BertConfig.from_pretrained(src, num_labels=1)
        cfg.architectures = ["BertForSequenceClassification"]
        model = BertForSequenceClassification(cfg)
        files = ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                 "config_sentence_transformers.json"]
    elif kind == "mbert-2label":
        src = models_dir / "bert-base-multilingual-uncased"
        cfg = BertConfig.from_pretrained(src, num_labels=2)
        cfg.architectures = ["BertForSequenceClassification"]
        model = BertForSequenceClassification(cfg)
        # transformers' BERT init (std 0.02) leaves [CLS] nearly independent of the input: the
        # 100 candidates then score within ~1e-2 of each other and even torch's own bf16 ranks
        # them with Kendall tau ~0.78 against its f32 (measured on 30 candidates). The seeded
        # 1/sqrt(fan_in) re-init gives input-dependent scores (tau 0.97 for torch bf16 there).
        reinit(model, seed, head_scale=1.0)
        files = ["vocab.txt"]
        (out / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512}) + "\n")
    elif kind in ("modernbert-base", "modernbert-large"):
        src = models_dir / "modernbert-tokenizer"
        base = json.loads((src / "config.json").read_text())
        dims = dict(hidden_size=768, num_hidden_layers=22, num_attention_heads=12, intermediate_size=1152) \
            if kind == "modernbert-base" else {}
        labels = ["LABEL_0"] if kind == "modernbert-base" else ["irrelevant", "partial", "sufficient"]
        base.update(dims)
        base.update(architectures=["ModernBertForSequenceClassification"],
                    id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
        for k in ("_name_or_path", "transformers_version", "torch_dtype"):
            base.pop(k, None)
        cfg = ModernBertConfig.from_dict(base)
        model = ModernBertForSequenceClassification(cfg)
        files = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
    elif kind == "xlmr-large":
        # BAAI/bge-reranker-v2-m3's shape (XLM-R large, 8,192-token positions, 1 label) with the
        # small trained Unigram tokenizer: ids stay below ~1,000 of the 250,002 embedding rows.
        tok = build_xlmr_unigram()
        save_xlmr_tokenizer(tok, out, model_max_length=8192)
        model = xlmr_model(tok, vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                           intermediate_size=4096, max_position_embeddings=8194, hidden_act="gelu")
        reinit(model, seed, head_scale=1.0)
    elif kind == "electra-base":
        # cross-encoder/ms-marco-electra-base's shape (1 label, embedding_size == hidden_size, so no
        # embeddings_project) with the real bert-base-uncased WordPiece vocab from the shared folder.
        src = models_dir / "ms-marco-MiniLM-L-6-v2-config"
        model = electra_model(1, vocab_size=30522, embedding_size=768, hidden_size=768, num_hidden_layers=12,
                              num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512,
                              hidden_act="gelu")
        reinit(model, seed, head_scale=1.0)
        files = ["tokenizer.json", "vocab.txt", "special_tokens_map.json"]
        tc = json.loads((src / "tokenizer_config.json").read_text())
        tc.update(tokenizer_class="ElectraTokenizer", model_max_length=512)
        write_json(out / "tokenizer_config.json", tc)
    elif kind == "qwen3-0.6b":
        # Qwen/Qwen3-Reranker-0.6B's shape, saved as sentence-transformers 6.2 saves a causal
        # CrossEncoder (reranker chat template + LogitScore yes/no), with the small trained BPE.
        from sentence_transformers import CrossEncoder

        tok = build_qwen_bpe()
        model = qwen3_model(tok, **QWEN3_RERANKER_0_6B_DIMS)
        reinit_decoder(model, seed, embed_std=0.25)
        model.eval()
        short = [p for p in reranker_pairs() if "document_repeat" not in p][:6]
        center_margin(model, template_ids(tok, QWEN3_RERANKER_TEMPLATE, short), tok.token_to_id("yes"),
                      tok.token_to_id("no"))
        stage = out.parent / (out.name + ".stage")
        build_qwen_stage(stage, tok, model, QWEN3_RERANKER_TEMPLATE)
        del model
        ce = CrossEncoder(str(stage), device="cpu")
        for p in out.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        ce.save(str(out))
        (out / "README.md").unlink(missing_ok=True)
        shutil.rmtree(stage)
        model = ce.model
    else:
        raise SystemExit(f"unknown --full-size {kind}; choose from {', '.join(FULL_SIZE_KINDS)}")
    model.eval()
    if kind != "qwen3-0.6b":
        model.save_pretrained(out)
    for f in files:
        shutil.copyfile(src / f, out / f)
    n = sum(p.numel() for p in model.parameters())
    print(f"{kind}: {n / 1e6:.1f}M parameters -> {out}")
    if reference:
        del model
        pairs = full_size_reference_pairs(out)
        cases, st = st_reference(out, pairs, batch_size=4)
        ref = finish_reference(kind, out, cases, st, seed=seed)
        write_json(out / "full_size_reference.json", ref)
        ntok = [c["num_tokens"] for c in cases]
        print(f"{kind}: full_size_reference.json, {len(cases)} cases of {min(ntok)}-{max(ntok)} tokens, raw scores "
              f"[{ref['raw_score_spread']['min']:+.3f}, {ref['raw_score_spread']['max']:+.3f}], "
              f"act={st['activation_fn'].rsplit('.', 1)[-1]} max_length={st['max_length']}")


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=root / "crates/encoders/tests/fixtures")
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("TANTIVY_RERANK_SHARED", root.parent / "shared")))
    ap.add_argument("--full-size", choices=FULL_SIZE_KINDS,
                    help="write one full-size random model to --out instead of the fixtures")
    ap.add_argument("--full-size-reference", action="store_true",
                    help="with --full-size: also write <out>/full_size_reference.json (sentence-transformers scores)")
    ap.add_argument("--seed", type=int, default=0, help="seed of --full-size")
    ap.add_argument("--only", nargs="+", metavar="NAME",
                    help="regenerate only these fixtures (names as in the fixtures folder, e.g. xlmr-1label)")
    args = ap.parse_args()
    out: Path = args.out.resolve()
    shared: Path = args.shared.resolve()
    transformers.logging.set_verbosity_error()
    if args.full_size:
        make_full_size(args.full_size, out, shared, args.seed, reference=args.full_size_reference)
        return
    out.mkdir(parents=True, exist_ok=True)

    vocab = build_wordpiece_vocab()
    bpe = build_bpe_tokenizer()
    unigram = build_xlmr_unigram()
    qwen_bpe = build_qwen_bpe()
    print(f"wordpiece vocab: {len(vocab)} entries; BPE vocab: {bpe.get_vocab_size(with_added_tokens=True)}; "
          f"XLM-R Unigram: {unigram.get_vocab_size(with_added_tokens=True)}; "
          f"Qwen BPE: {qwen_bpe.get_vocab_size(with_added_tokens=True)}")

    import tempfile

    stage_root = Path(tempfile.mkdtemp(prefix="make_fixtures_"))
    builders = [
        ("bert-2label-vocab", lambda: make_bert_2label(out, vocab)),
        ("bert-3label", lambda: make_bert_3label(out, vocab)),
        ("modernbert-1label-mean", lambda: make_modernbert_1label_mean(out, bpe)),
        ("modernbert-3label-cls-bias", lambda: make_modernbert_3label(out, bpe)),
        ("modernbert-sliding", lambda: make_modernbert_sliding(out, bpe)),
    ]
    selected = set(args.only or [])
    rerank_builders = [
        (["xlmr-1label"], lambda: [("xlmr-1label", make_xlmr_1label(out, unigram))]),
        (["electra-2label"], lambda: [("electra-2label", make_electra_2label(out, vocab))]),
        (["qwen3-reranker-st", "qwen3-reranker-original"], lambda: make_qwen3_rerankers(out, qwen_bpe, stage_root)),
        (["qwen2-reranker"], lambda: [("qwen2-reranker", make_qwen2_reranker(out, qwen_bpe, stage_root))]),
    ]
    for name, build in builders:
        if selected and name not in selected:
            continue
        ref = build()
        write_json(out / f"{name}.reference.json", ref)
        lo, hi, sd = spread(ref["cases"])
        st = ref["sentence_transformers"]
        size = dir_size(out / name)
        assert size < 2_000_000, f"{name} is {size} bytes"
        print(f"{name:28s} dir {size/1024:7.1f} KiB  logits [{lo:+.3f}, {hi:+.3f}] mean std across cases {sd:.3f}  "
              f"ST max_length={st['max_length']} act={st['activation_fn'].rsplit('.', 1)[-1]} "
              f"ST-vs-HF {ref['st_max_abs_diff_vs_transformers']:.2e} ({len(st['equivalent_case_indices'])} cases)")
        assert sd > 0.3, f"{name}: logits barely vary across inputs ({sd})"
        if name == "modernbert-sliding":
            lo2, hi2, _ = spread(ref["cases"], "logits_full_attention")
            print(f"{'':28s} full-attention logits [{lo2:+.3f}, {hi2:+.3f}], "
                  f"{ref['sliding_window_check']['cases_with_full_attention_diff_gt_1e-3']}/{len(ref['cases'])} differ > 1e-3")

    for names, build in rerank_builders:
        if selected and not selected & set(names):
            continue
        for name, ref in build():
            write_json(out / f"{name}.reference.json", ref)
            size = dir_size(out / name)
            ref_size = (out / f"{name}.reference.json").stat().st_size
            assert size < 2_000_000, f"{name} is {size} bytes"
            sp = ref["raw_score_spread"]
            st = ref.get("sentence_transformers")
            st_txt = (f"ST max_length={st['max_length']} act={st['activation_fn'].rsplit('.', 1)[-1]} "
                      f"batched-vs-single {st['batched_vs_single_max_abs_diff']:.2e}") if st else \
                f"ST 6.2: {ref['sentence_transformers_v6'].get('predict_error', '')[:60]}"
            ntok = [c.get("num_tokens", len(c["input_ids"])) for c in ref["cases"]]
            print(f"{name:28s} dir {size/1024:7.1f} KiB  ref {ref_size/1024:6.1f} KiB  {len(ref['cases'])} cases "
                  f"{min(ntok)}-{max(ntok)} tokens  raw [{sp['min']:+.3f}, {sp['max']:+.3f}] std {sp['std_across_cases']:.3f}  "
                  + st_txt)
            assert sp["std_across_cases"] > 0.3, f"{name}: scores barely vary across inputs"
    shutil.rmtree(stage_root, ignore_errors=True)

    if selected:
        return
    parity = make_tokenizer_parity(shared)
    write_json(out / "tokenizer_parity.json", parity)
    print(f"tokenizer_parity.json {(out / 'tokenizer_parity.json').stat().st_size/1024:.1f} KiB, "
          + ", ".join(f"{k}: {len(v['cases'])} cases" for k, v in parity["tokenizers"].items()))

    minilm = make_minilm(shared)
    write_json(out / "minilm_embeddings.json", minilm)
    print(f"minilm_embeddings.json {(out / 'minilm_embeddings.json').stat().st_size/1024:.1f} KiB, "
          f"max_seq_length={minilm['max_seq_length']} normalized={minilm['normalized']}")


if __name__ == "__main__":
    main()
