#!/usr/bin/env python3
"""How two TREC run files of the same queries rank differently: for the bf16 fidelity check.

    python3 scripts/compare_runs.py A.run B.run [--k 10]

For every query in A (ranked by score, ties by document id descending, as trec_eval orders
them) it compares B's top k with A's: the queries whose top-k list is identical in order, the
queries whose top-k set is identical, and the mean overlap. Standard library only.
"""

import argparse
from collections import defaultdict


def read_run(path: str) -> dict:
    runs = defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise SystemExit(f"{path}:{line_no}: expected 6 fields, got {len(parts)}")
            qid, _, doc, _, score, _ = parts
            runs[qid].append((float(score), doc))
    return {q: [d for _, d in sorted(v, key=lambda x: (-x[0], _neg(x[1])))] for q, v in runs.items()}


def _neg(doc: str):
    # trec_eval breaks score ties by document id, descending.
    return tuple(-ord(c) for c in doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    a, b = read_run(args.a), read_run(args.b)
    same_order = same_set = 0
    overlap = 0.0
    missing = [q for q in a if q not in b]
    for q, docs in a.items():
        top_a, top_b = docs[: args.k], b.get(q, [])[: args.k]
        same_order += top_a == top_b
        same_set += set(top_a) == set(top_b)
        overlap += len(set(top_a) & set(top_b)) / max(len(top_a), 1)
    n = len(a)
    print(f"queries {n}; top {args.k} identical in order: {same_order}; identical as a set: "
          f"{same_set}; mean overlap {overlap / max(n, 1):.4f}; queries missing from B: {len(missing)}")


if __name__ == "__main__":
    main()
