#!/usr/bin/env python3
"""transformers' bf16 logits of the committed fixture models, for the bf16 parity test.

For each fixture in ``crates/encoders/tests/fixtures`` this loads the model in bfloat16 as
sentence-transformers 6 does with ``model_kwargs={"dtype": torch.bfloat16}`` (what a
sentence-transformers user runs on the CPU: oneDNN's bf16 kernels on CPUs with AMX or
AVX512-BF16), feeds it the exact ``input_ids`` of every case of ``<name>.reference.json``, one
pair at a time (no padding), and writes ``<name>.bf16.json``: the raw logits per case (a
classifier's logits; a causal reranker's ``logit(true) - logit(false)`` at the last token, as
sentence-transformers' ``LogitScore`` computes it), beside the float32 logits of the reference
file, with the largest difference between the two.

    .venv-fixtures/bin/python scripts/make_bf16_references.py [--fixtures DIR] [NAME ...]
"""

import argparse
import json
import platform
from pathlib import Path

import torch
import transformers
import sentence_transformers
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = [
    "bert-2label-vocab",
    "bert-3label",
    "modernbert-1label-mean",
    "modernbert-3label-cls-bias",
    "modernbert-sliding",
    "xlmr-1label",
    "electra-2label",
    "qwen3-reranker-st",
    "qwen2-reranker",
]


def f32list(x) -> list:
    return [float(v) for v in torch.as_tensor(x, dtype=torch.float32).reshape(-1).tolist()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixtures", type=Path, default=ROOT / "crates/encoders/tests/fixtures")
    ap.add_argument("names", nargs="*", default=DEFAULT)
    args = ap.parse_args()
    torch.manual_seed(0)
    for name in args.names:
        ref = json.loads((args.fixtures / f"{name}.reference.json").read_text())
        model_dir = args.fixtures / name
        config = json.loads((model_dir / "config.json").read_text())
        causal = config["architectures"][0].endswith("ForCausalLM")
        if causal:
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
            score = json.loads((model_dir / "1_LogitScore" / "config.json").read_text())
            true_id, false_id = score["true_token_id"], score["false_token_id"]
        else:
            model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.bfloat16)
        model.eval()
        dtypes = {str(p.dtype) for p in model.parameters()}
        assert dtypes == {"torch.bfloat16"}, dtypes
        cases = []
        worst = 0.0
        for case in ref["cases"]:
            ids = torch.tensor([case["input_ids"]])
            inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            if case.get("token_type_ids") is not None:
                inputs["token_type_ids"] = torch.tensor([case["token_type_ids"]])
            with torch.inference_mode():
                out = model(**inputs).logits
            if causal:
                last = out[0, -1].float()
                value = last[true_id] - (last[false_id] if false_id is not None else 0.0)
                logits = [float(value)]
            else:
                logits = f32list(out[0])
            f32 = case["logits"]
            diff = max(abs(a - b) for a, b in zip(logits, f32))
            worst = max(worst, diff)
            cases.append({"logits_bf16": logits, "logits_f32": f32, "max_abs_diff": diff})
        out = {
            "model": name,
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "sentence_transformers": sentence_transformers.__version__,
            },
            "cpu": platform.processor() or platform.machine(),
            "dtype": "bfloat16",
            "cases": cases,
            "max_abs_diff_bf16_vs_f32": worst,
        }
        (args.fixtures / f"{name}.bf16.json").write_text(json.dumps(out, indent=1) + "\n")
        print(f"{name}: {len(cases)} cases, transformers bf16 vs f32 max |diff| {worst:.3e}")


if __name__ == "__main__":
    main()
