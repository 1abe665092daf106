#!/usr/bin/env python3
"""Reference values of every metric the eval crate computes, from the reference implementations.

Output (committed): crates/eval/tests/fixtures/metric_references.json

- `st` cases: sentence-transformers' `CrossEncoderRerankingEvaluator.compute_metrics`
  (MRR@10 of `np.argsort(...)[::-1]`, sklearn `ndcg_score(k=10)` with tie averaging, sklearn
  `average_precision_score`), called directly, on lists with ties, all-relevant lists, a single
  relevant item past the cut-off, and so on. numpy's default argsort orders tied scores in
  an unspecified, platform-dependent way (SIMD sorts), so for MRR the cases also record the
  bounds given by the best and the worst order of tied items; NDCG (tie-averaged) and AP
  (ties enter together) are exact.
- `st_evaluator` cases: whole `CrossEncoderRerankingEvaluator` runs on "documents" samples
  (base and reranked, `always_rerank_positives` true and false, a query with no positive among
  its candidates, a candidate list that repeats its positive) with a stand-in model whose scores come from a table.
- `trec` cases: pytrec_eval (pytrec-eval-terrier, the trec_eval 9 C code) on graded qrels:
  `ndcg_cut_10`, `recall_100`, `map_cut_100` on the full run and `recip_rank` on the run cut
  to its top 10 in trec_eval order (score descending, doc id descending). Cases: ties (broken by
  doc id), graded relevance, grade 0 judgements, a query with no relevant document, an
  all-relevant query, relevant documents past the cut-offs, judged documents never retrieved.

Run: /work/venv-fixtures/bin/python scripts/make_metric_references.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytrec_eval
from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

OUT = Path(__file__).resolve().parent.parent / "crates" / "eval" / "tests" / "fixtures" / "metric_references.json"


def st_cases():
    rng = np.random.default_rng(7)
    cases = [
        ("no ties", [0, 1, 0, 0, 1], [0.1, 0.9, 0.3, 0.8, 0.2]),
        ("all tied", [1, 0, 0, 1], [0.5, 0.5, 0.5, 0.5]),
        ("tie at the top", [0, 1, 1, 0, 0], [0.9, 0.9, 0.2, 0.1, 0.05]),
        ("tie across the cut-off", [0] * 9 + [0, 1, 0], [1.0 - 0.01 * i for i in range(9)] + [0.5, 0.5, 0.5]),
        ("all relevant", [1, 1, 1], [0.3, 0.2, 0.1]),
        ("single relevant past rank 10", [0] * 11 + [1], [1.0 - 0.05 * i for i in range(12)]),
        ("relevant last with ties", [0, 0, 1], [0.7, 0.7, 0.7]),
    ]
    for n in (8, 16):
        y = [int(v) for v in rng.integers(0, 2, n)]
        y[0] = 1
        s = [float(v) for v in np.round(rng.random(n), 1)]  # rounding makes ties
        cases.append((f"random with ties n={n}", y, s))
    ev = CrossEncoderRerankingEvaluator(samples=[], at_k=10)
    out = []
    for name, y, s in cases:
        mrr, ndcg, ap = ev.compute_metrics(y, np.array(s, dtype=np.float32))
        # numpy's default argsort orders ties in an unspecified (SIMD, platform dependent)
        # way, so with ties MRR is only defined up to the best and worst order of the tied
        # items: record both bounds.
        s32 = np.array(s, dtype=np.float32)
        bounds = []
        for relevant_first in (True, False):
            order = sorted(range(len(y)), key=lambda i: (-s32[i], -y[i] if relevant_first else y[i]))
            bounds.append(next((1 / (r + 1) for r, i in enumerate(order[:10]) if y[i]), 0.0))
        out.append(
            {
                "name": name,
                "relevant": y,
                "scores": s,
                "mrr@10": float(mrr),
                "mrr@10_max": float(bounds[0]),
                "mrr@10_min": float(bounds[1]),
                "ndcg@10": float(ndcg),
                "map": float(ap),
            }
        )
    return out


class TableModel:
    """A stand-in CrossEncoder: the score of (query, doc) comes from a table."""

    def __init__(self, table):
        self.table = table

        class Card:
            def set_evaluation_metrics(self, *a, **k):
                pass

        self.model_card_data = Card()

    def predict(self, pairs, **kwargs):
        return np.array([self.table[q][d] for q, d in pairs], dtype=np.float32)


def st_evaluator_cases():
    samples = [
        # positive d2 found at rank 2, positive d9 missed by the first stage
        {"query": "q1", "positive": ["d2", "d9"], "documents": ["d1", "d2", "d3", "d4"]},
        # no positive among the candidates
        {"query": "q2", "positive": ["d5"], "documents": ["d6", "d7", "d8"]},
        # all candidates relevant
        {"query": "q3", "positive": ["d1", "d3"], "documents": ["d3", "d1"]},
        # a candidate list that repeats its positive (counted twice, as Python does)
        {"query": "q4", "positive": ["d4"], "documents": ["d4", "d5", "d4"]},
    ]
    table = {
        "q1": {"d1": 0.2, "d2": 0.7, "d3": 0.9, "d4": 0.1, "d9": 0.8},
        "q2": {"d5": 0.4, "d6": 0.6, "d7": 0.3, "d8": 0.5},
        "q3": {"d1": 0.9, "d3": 0.2},
        "q4": {"d4": 0.3, "d5": 0.6},
    }
    out = []
    for always in (True, False):
        ev = CrossEncoderRerankingEvaluator(samples=samples, always_rerank_positives=always, write_csv=False)
        res = ev(TableModel(table))
        out.append({"always_rerank_positives": always, "samples": samples, "scores": table, "results": {k: float(v) for k, v in res.items()}})
    return out


def trec_cases():
    qrels = {
        "q1": {"d1": 2, "d2": 1, "d3": 0, "d9": 3},  # graded, a grade 0, d9 never retrieved
        "q2": {"a": 1, "b": 1, "c": 1},  # all retrieved documents relevant, tied scores
        "q3": {"x": 0, "y": 0},  # judged, nothing relevant
        "q4": {"z": 1},  # relevant document only at rank 12
        "q5": {"m": 1, "n": 2},  # ties between relevant and non-relevant, broken by doc id
    }
    run = {
        "q1": {"d1": 3.0, "d2": 2.5, "d3": 2.5, "d4": 2.5, "d5": 1.0},
        "q2": {"a": 1.0, "b": 1.0, "c": 1.0},
        "q3": {"x": 5.0, "w": 4.0},
        "q4": {**{f"o{i:02d}": 20.0 - i for i in range(11)}, "z": 1.0},
        "q5": {"l": 1.0, "m": 1.0, "n": 0.5, "o": 1.0, "k": 0.5},
    }
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "map_cut.100"}).evaluate(run)

    def trec_sorted(docs):
        return sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)

    top10 = {q: dict(trec_sorted(d)[:10]) for q, d in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    out = []
    for q in run:
        out.append(
            {
                "query": q,
                "qrels": qrels[q],
                "run": run[q],
                "ndcg@10": full[q]["ndcg_cut_10"],
                "mrr@10": rr[q]["recip_rank"],
                "recall@100": full[q]["recall_100"],
                "map@100": full[q]["map_cut_100"],
            }
        )
    return out


def main():
    data = {
        "generator": "scripts/make_metric_references.py",
        "st": st_cases(),
        "st_evaluator": st_evaluator_cases(),
        "trec": trec_cases(),
    }
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(data["trec"], indent=1))


if __name__ == "__main__":
    main()
