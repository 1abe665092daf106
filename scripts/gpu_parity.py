#!/usr/bin/env python3
"""GPU-vs-CPU parity of `tantivy-rerank score` on one workload query (issue 5's parity proof).

For one model directory and the candidates of one workload query it scores every pair with:
  * our binary on the CPU in f32: the reference (its CPU path matches transformers within 1e-4,
    see crates/encoders/tests/parity.rs);
  * our binary on --device in each of --dtypes (default f32 and bf16), for each --bin given
    (e.g. the `cuda` build and the `flash-attn` build);
  * with --torch, transformers' AutoModelForSequenceClassification on --device in f32 and bf16
    (what sentence-transformers runs), to show how far torch itself moves in bf16.
and reports, against the CPU f32 reference: max |logit diff|, max |score diff|, whether the
ranking of the candidates is identical, Kendall's tau-b of the scores, and the overlap of the
top 10. Pass criteria (issue 5): f32 within 1e-3 with the same ranking; f16/bf16 within 2e-2
with tau >= 0.95. The exit status is 1 when one of our rows misses them (transformers' rows
are shown for comparison only).

    python3 scripts/gpu_parity.py --model DIR --workload W.json \\
        --bin cuda=.gpu-proof/bin/tantivy-rerank-cuda [--bin flash-attn=...] \\
        [--device cuda] [--dtypes f32,bf16] [--torch] [--max-length N] [--json OUT]

Scores from logits follow crates/encoders/src/head.rs: 1 label sigmoid, 2 labels softmax[1],
n labels the expected grade with grades spread evenly over [0, 1].
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOLERANCE = {"f32": 1e-3, "f16": 2e-2, "bf16": 2e-2}
MIN_TAU = 0.95


def score_of(logits: list[float]) -> float:
    if len(logits) == 1:
        return 1 / (1 + math.exp(-logits[0]))
    m = max(logits)
    e = [math.exp(x - m) for x in logits]
    p = [x / sum(e) for x in e]
    if len(logits) == 2:
        return p[1]
    n = len(logits)
    return sum(pi * i / (n - 1) for i, pi in enumerate(p))


def kendall_tau_b(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b (ties in either list count as neither concordant nor discordant)."""
    conc = disc = tx = ty = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            a = (x[i] > x[j]) - (x[i] < x[j])
            b = (y[i] > y[j]) - (y[i] < y[j])
            if a == 0 and b == 0:
                continue
            if a == 0:
                tx += 1
            elif b == 0:
                ty += 1
            elif a == b:
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + tx) * (conc + disc + ty))
    return (conc - disc) / denom if denom else 1.0


def ranking(scores: list[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def compare(ref: list[list[float]], got: list[list[float]]) -> dict:
    ref_s = [score_of(r) for r in ref]
    got_s = [score_of(g) for g in got]
    r_rank, g_rank = ranking(ref_s), ranking(got_s)
    first_diff = next((i for i, (a, b) in enumerate(zip(r_rank, g_rank)) if a != b), None)
    return {
        "max_abs_logit_diff": max(abs(a - b) for r, g in zip(ref, got) for a, b in zip(r, g)),
        "max_abs_score_diff": max(abs(a - b) for a, b in zip(ref_s, got_s)),
        "same_ranking": first_diff is None,
        "first_rank_difference": first_diff,
        "kendall_tau_b": kendall_tau_b(ref_s, got_s),
        "top10_overlap": len(set(r_rank[:10]) & set(g_rank[:10])),
    }


def run_ours(binary: str, model: str, pairs: Path, device: str, dtype: str, max_length: int | None,
             batch_size: int) -> tuple[list[list[float]], float]:
    cmd = [binary, "score", "--model", model, "--input", str(pairs), "--device", device,
           "--dtype", dtype, "--batch-size", str(batch_size)]
    if max_length:
        cmd += ["--max-length", str(max_length)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return [json.loads(line)["logits"] for line in proc.stdout.splitlines() if line.strip()], seconds


def run_torch(model: str, query: str, passages: list[str], device: str, dtype: str,
              max_length: int | None, batch_size: int) -> list[list[float]]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch_dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(model)
    net = AutoModelForSequenceClassification.from_pretrained(model, dtype=torch_dtype).to(device).eval()
    limit = min(x for x in (max_length, tok.model_max_length, net.config.max_position_embeddings) if x)
    out = []
    with torch.inference_mode():
        for i in range(0, len(passages), batch_size):
            chunk = passages[i:i + batch_size]
            enc = tok([query] * len(chunk), chunk, truncation=True, max_length=limit, padding=True,
                      return_tensors="pt").to(device)
            out += net(**enc).logits.float().cpu().tolist()
    del net
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--workload", required=True, help='{"query", "passages"} JSON (the first query is used)')
    ap.add_argument("--bin", action="append", required=True, help="[LABEL=]PATH of our binary (repeatable)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--torch", action="store_true", help="also run transformers on --device (f32 and bf16)")
    ap.add_argument("--max-length", type=int)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    data = json.loads(Path(args.workload).read_text())
    first = data["queries"][0] if "queries" in data else data
    query, passages = first["query"], first["passages"]
    bins = [b.split("=", 1) if "=" in b else [Path(b).name, b] for b in args.bin]

    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "pairs.jsonl"
        pairs.write_text("".join(json.dumps({"query": query, "document": p}) + "\n" for p in passages))
        ref, ref_s = run_ours(bins[0][1], args.model, pairs, "cpu", "f32", args.max_length, args.batch_size)
        rows = []

        def row(side: str, dtype: str, measure) -> None:
            # One failing side must not lose the rows already measured.
            base = {"side": side, "device": args.device, "dtype": dtype}
            try:
                rows.append({**base, **measure()})
            except Exception as e:  # noqa: BLE001 - reported in the table and the JSON
                print(f"{side} {dtype}: {e}", file=sys.stderr)
                rows.append({**base, "error": str(e)[-2000:]})

        for label, path in bins:
            for dtype in args.dtypes.split(","):
                def ours(path=path, dtype=dtype):
                    got, secs = run_ours(path, args.model, pairs, args.device, dtype, args.max_length,
                                         args.batch_size)
                    return {"process_seconds": secs, **compare(ref, got)}
                row(f"ours ({label})", dtype, ours)
        if args.torch:
            for dtype in ("f32", "bf16"):
                row("transformers", dtype, lambda dtype=dtype: compare(
                    ref, run_torch(args.model, query, passages, args.device, dtype, args.max_length,
                                   args.batch_size)))

    spread = sorted(score_of(r) for r in ref)
    min_gap = min(b - a for a, b in zip(spread, spread[1:]))
    print(f"\n{args.model}: {len(passages)} candidates, reference = ours CPU f32 "
          f"({ref_s:.1f} s in all; scores {spread[0]:.4f}..{spread[-1]:.4f}, closest two {min_gap:.2e} apart)")
    print(f"{'side':24} {'dtype':5} {'max|dlogit|':>11} {'max|dscore|':>11} {'same rank':>9} "
          f"{'tau-b':>6} {'top10':>5}  verdict")
    for r in rows:
        if "error" in r:
            r["within_issue_tolerance"] = False
            print(f"{r['side']:24} {r['dtype']:5} ERROR: {r['error'].splitlines()[0][:80]}")
            continue
        tol = TOLERANCE[r["dtype"]]
        ok = r["max_abs_logit_diff"] <= tol and (r["same_ranking"] if r["dtype"] == "f32"
                                                  else r["kendall_tau_b"] >= MIN_TAU)
        r["within_issue_tolerance"] = ok
        print(f"{r['side']:24} {r['dtype']:5} {r['max_abs_logit_diff']:11.2e} {r['max_abs_score_diff']:11.2e} "
              f"{str(r['same_ranking']):>9} {r['kendall_tau_b']:6.3f} {r['top10_overlap']:5d}  "
              f"{'PASS' if ok else 'FAIL'} (tol {tol:g}{'' if r['dtype'] == 'f32' else f', tau >= {MIN_TAU}'})")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "candidates": len(passages),
                                         "reference_seconds": ref_s, "reference_min_score_gap": min_gap,
                                         "rows": rows}, indent=1) + "\n")
    sys.stdout.flush()
    if not all(r["within_issue_tolerance"] for r in rows if r["side"].startswith("ours")):
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
