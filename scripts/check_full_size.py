#!/usr/bin/env python3
"""Parity of `tantivy-rerank score` with sentence-transformers on a full-size random model.

``scripts/make_fixtures.py --full-size KIND --out DIR --full-size-reference`` writes a full-size,
randomly initialised model and ``DIR/full_size_reference.json``: for each pair the ids
sentence-transformers fed the model and the raw logits of ``CrossEncoder.predict`` (pair alone,
Identity activation), plus the batched default scores. This script writes those pairs as JSONL,
scores them with the release binary::

    tantivy-rerank score --model DIR --input pairs.jsonl --device cpu [--max-length N]

and compares the raw ``logits`` of every pair with the reference (max |diff|, also against the
batched raw scores), the ``score`` with ST's activated batched scores, and the order of all pairs
by score (identical ranking, Kendall tau-b). It exits 1 when the max |logit diff| exceeds
``--tolerance`` (default 1e-3: full-size f32 models of 12-28 layers accumulate float rounding
differently in candle and torch; the actual value is always printed), 2 when the binary fails.

Standard library only; run it with any python3 (from the project root, after
``cargo build --release``)::

    python3 scripts/check_full_size.py /tmp/models/xlmr-large [--reference JSON]
        [--bin target/release/tantivy-rerank] [--tolerance 1e-3] [--max-length auto|st|N]
        [--batch-size N] [--pairs-out pairs.jsonl] [--json report.json]

``--max-length auto`` (default) passes ``--max-length`` only when the reference was made with an
explicit one (``CrossEncoder(max_length=...)``); otherwise both sides resolve it themselves, which
is part of what is checked. ``st`` passes the max length ST resolved; a number passes that.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def reference_pairs(ref: dict) -> list[tuple[str, str]]:
    """(query, document) of every case; ``document_repeat`` = n means the document is ``document * n``."""
    return [(c["query"], c["document"] * c.get("document_repeat", 1)) for c in ref["cases"]]


def explicit_max_length(ref: dict) -> int | None:
    """The max length the reference was made with, when it was given explicitly (the fixtures'
    truncation blocks record it as ``ce_max_length``; ``--full-size-reference`` uses ST's default)."""
    for holder in (ref, ref.get("sentence_transformers", {})):
        if holder.get("ce_max_length") is not None:
            return int(holder["ce_max_length"])
    return None


def kendall_tau_b(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b (ties in either list handled as scipy.stats.kendalltau does); O(n^2)."""
    n = len(x)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom else float("nan")


def order(xs: list[float]) -> list[int]:
    """Indices best first; ties keep input order."""
    return sorted(range(len(xs)), key=lambda i: -xs[i])


def head_score(logits: list[float], ref_score: float | None = None) -> float:
    """One number per pair to rank by: the only logit for 1 label, else the softmax of label 1 for
    2 labels, else the expected grade over evenly spaced grades (as the crate's heads do)."""
    if len(logits) == 1:
        return logits[0]
    m = max(logits)
    e = [math.exp(v - m) for v in logits]
    s = sum(e)
    p = [v / s for v in e]
    if len(p) == 2:
        return p[1]
    return sum(pi * k / (len(p) - 1) for k, pi in enumerate(p))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path, help="model directory written by make_fixtures.py --full-size")
    ap.add_argument("--reference", type=Path, help="reference JSON (default: MODEL/full_size_reference.json)")
    ap.add_argument("--bin", type=Path, default=ROOT / "target" / "release" / "tantivy-rerank")
    ap.add_argument("--tolerance", type=float, default=1e-3, help="max |raw logit diff| allowed (default 1e-3)")
    ap.add_argument("--max-length", default="auto", help="auto (default), st, or a number of tokens")
    ap.add_argument("--batch-size", type=int, help="pass --batch-size to score (default: the binary's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--extra", default="", help="more arguments for `score`, space separated")
    ap.add_argument("--pairs-out", type=Path, help="keep the JSONL pairs file here (default: a temporary file)")
    ap.add_argument("--json", type=Path, help="also write the comparison to this file")
    args = ap.parse_args()

    ref_path = args.reference or args.model / "full_size_reference.json"
    ref = json.loads(ref_path.read_text(encoding="utf-8"))
    st = ref.get("sentence_transformers", {})
    cases = ref["cases"]
    pairs = reference_pairs(ref)
    if not args.bin.exists():
        print(f"{args.bin} not found: run `cargo build --release` first", file=sys.stderr)
        return 2

    if args.max_length == "auto":
        max_length = explicit_max_length(ref)
    elif args.max_length == "st":
        max_length = int(st["max_length"])
    else:
        max_length = int(args.max_length)

    if args.pairs_out:
        pairs_path = args.pairs_out
        pairs_path.parent.mkdir(parents=True, exist_ok=True)
    else:
        fd, name = tempfile.mkstemp(prefix="check_full_size_", suffix=".jsonl")
        os.close(fd)
        pairs_path = Path(name)
    with pairs_path.open("w", encoding="utf-8") as f:
        for q, d in pairs:
            f.write(json.dumps({"query": q, "document": d}, ensure_ascii=False) + "\n")

    cmd = [str(args.bin), "score", "--model", str(args.model), "--input", str(pairs_path), "--device", args.device]
    if max_length is not None:
        cmd += ["--max-length", str(max_length)]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    cmd += args.extra.split()
    print("$ " + " ".join(cmd), file=sys.stderr)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak_rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if not args.pairs_out:
        pairs_path.unlink(missing_ok=True)
    if proc.returncode != 0:
        print(f"score failed ({proc.returncode}):\n{proc.stderr[-4000:]}", file=sys.stderr)
        return 2
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    if len(lines) != len(cases):
        print(f"score printed {len(lines)} lines for {len(cases)} pairs:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return 2

    ours_logits = [[float(v) for v in line["logits"]] for line in lines]
    ours_scores = [float(line["score"]) for line in lines]
    ref_logits = [[float(v) for v in c["logits"]] for c in cases]
    width = {len(x) for x in ref_logits} | {len(x) for x in ours_logits}
    if len(width) != 1:
        print(f"logit widths differ: ours {[len(x) for x in ours_logits]} vs reference "
              f"{[len(x) for x in ref_logits]}", file=sys.stderr)
        return 1

    def max_diff(a: list[list[float]], b: list[list[float]]) -> float:
        return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))

    per_case = [max(abs(x - y) for x, y in zip(o, r)) for o, r in zip(ours_logits, ref_logits)]
    diff = max(per_case)
    raw_batched = st.get("scores_raw")
    diff_batched = None
    if raw_batched is not None:
        rb = [[float(v)] if not isinstance(v, list) else [float(x) for x in v] for v in raw_batched]
        diff_batched = max_diff(ours_logits, rb)
    st_scores = st.get("scores")
    score_diff = None
    if st_scores is not None:
        flat = [float(v) if not isinstance(v, list) else float(head_score(v)) for v in st_scores]
        score_diff = max(abs(a - b) for a, b in zip(ours_scores, flat))

    ours_rank_key = [head_score(x) for x in ours_logits]
    ref_rank_key = [head_score(x) for x in ref_logits]
    identical = order(ours_rank_key) == order(ref_rank_key)
    tau = kendall_tau_b(ours_rank_key, ref_rank_key)
    spread = ref.get("raw_score_spread", {})
    gaps = sorted(ref_rank_key)
    min_gap = min((b - a for a, b in zip(gaps, gaps[1:])), default=float("nan"))

    print(f"model {args.model} ({ref.get('model')}, seed {ref.get('seed')}); reference {ref_path.name}: "
          f"{len(cases)} pairs, ST max_length {st.get('max_length')}, activation "
          f"{str(st.get('activation_fn', '?')).rsplit('.', 1)[-1]}; score passed --max-length "
          f"{max_length if max_length is not None else '(none: resolved by the binary)'}")
    print(f"{'#':>3} {'tokens':>13} {'reference logit':>16} {'ours':>16} {'|diff|':>10}  pair")
    for i, c in enumerate(cases):
        ntok = str(c.get("num_tokens", len(c.get("input_ids", []))))
        if c.get("truncated"):
            ntok += f"<-{c.get('num_tokens_untruncated')}"
        q, d = pairs[i]
        label = f"{q[:24]!r} / {d[:24]!r}" + (f" x{c['document_repeat']}" if c.get("document_repeat") else "")
        print(f"{i:3d} {ntok:>13} {ref_logits[i][0]:16.7f} {ours_logits[i][0]:16.7f} {per_case[i]:10.2e}  {label}")
    print(f"max |logit diff| vs single-pair reference: {diff:.3e} (tolerance {args.tolerance:g})"
          + (f"; vs ST batched raw: {diff_batched:.3e}" if diff_batched is not None else "")
          + (f"; max |score diff| vs ST batched scores: {score_diff:.3e}" if score_diff is not None else ""))
    print(f"ranking of all {len(cases)} pairs by score: {'identical' if identical else 'DIFFERENT'}, "
          f"Kendall tau-b {tau:.4f}; reference raw scores span [{spread.get('min', float('nan')):+.3f}, "
          f"{spread.get('max', float('nan')):+.3f}], closest two {min_gap:.2e} apart")
    print(f"score run: {seconds:.1f} s wall (load included), peak RSS {peak_rss_mib:.0f} MiB")
    ok = diff <= args.tolerance
    print("PASS" if ok else f"FAIL: max |logit diff| {diff:.3e} > {args.tolerance:g}")
    if args.json:
        args.json.write_text(json.dumps({
            "model": str(args.model), "reference": str(ref_path), "kind": ref.get("model"),
            "command": cmd, "pairs": len(cases), "num_tokens": [c.get("num_tokens") for c in cases],
            "reference_logits": ref_logits, "ours_logits": ours_logits, "ours_scores": ours_scores,
            "per_case_max_abs_diff": per_case, "max_abs_logit_diff": diff,
            "max_abs_logit_diff_vs_batched": diff_batched, "max_abs_score_diff_vs_batched": score_diff,
            "ranking_identical": identical, "kendall_tau_b": tau, "tolerance": args.tolerance, "pass": ok,
            "score_seconds": seconds, "score_peak_rss_mib": peak_rss_mib,
            "stderr_tail": proc.stderr[-2000:],
        }, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
