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
        [--out crates/encoders/tests/fixtures] [--shared ../shared]

Full-size random models (benchmarks and GPU parity, never committed)::

    .venv-fixtures/bin/python scripts/make_fixtures.py --full-size KIND --out DIR

writes one randomly initialised (transformers' own init, seeded) classification model of a
published architecture with its real tokenizer from the shared folder. KIND is one of
``minilm-l6`` (cross-encoder/ms-marco-MiniLM-L-6-v2's config, 1 label), ``modernbert-base``
(ModernBERT-base dimensions, 1 label), ``modernbert-large`` (ModernBERT-large's config,
3 labels irrelevant/partial/sufficient) and ``mbert-2label`` (bert-base-multilingual-uncased,
2 labels, ``vocab.txt`` only).

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


FULL_SIZE_KINDS = ("minilm-l6", "modernbert-base", "modernbert-large", "mbert-2label")


def make_full_size(kind: str, out: Path, shared: Path, seed: int = 0) -> None:
    """A full-size, randomly initialised classification model with its real tokenizer."""
    models_dir = shared / "models"
    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count() or 1)  # the fixtures use one thread; these are big
    out.mkdir(parents=True, exist_ok=True)
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
    else:
        raise SystemExit(f"unknown --full-size {kind}; choose from {', '.join(FULL_SIZE_KINDS)}")
    model.eval()
    model.save_pretrained(out)
    for f in files:
        shutil.copyfile(src / f, out / f)
    n = sum(p.numel() for p in model.parameters())
    print(f"{kind}: {n / 1e6:.1f}M parameters -> {out}")


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=root / "crates/encoders/tests/fixtures")
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("TANTIVY_RERANK_SHARED", root.parent / "shared")))
    ap.add_argument("--full-size", choices=FULL_SIZE_KINDS,
                    help="write one full-size random model to --out instead of the fixtures")
    ap.add_argument("--seed", type=int, default=0, help="seed of --full-size")
    args = ap.parse_args()
    out: Path = args.out.resolve()
    shared: Path = args.shared.resolve()
    if args.full_size:
        make_full_size(args.full_size, out, shared, args.seed)
        return
    out.mkdir(parents=True, exist_ok=True)
    transformers.logging.set_verbosity_error()

    vocab = build_wordpiece_vocab()
    bpe = build_bpe_tokenizer()
    print(f"wordpiece vocab: {len(vocab)} entries; BPE vocab: {bpe.get_vocab_size(with_added_tokens=True)}")

    builders = [
        ("bert-2label-vocab", lambda: make_bert_2label(out, vocab)),
        ("bert-3label", lambda: make_bert_3label(out, vocab)),
        ("modernbert-1label-mean", lambda: make_modernbert_1label_mean(out, bpe)),
        ("modernbert-3label-cls-bias", lambda: make_modernbert_3label(out, bpe)),
        ("modernbert-sliding", lambda: make_modernbert_sliding(out, bpe)),
    ]
    for name, build in builders:
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
