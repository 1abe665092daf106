#!/usr/bin/env python3
"""Re-score a TREC run file with pytrec_eval (the trec_eval C code) against BEIR qrels.

  python scripts/trec_rescore.py QRELS.tsv RUN.trec [--queries N]

Prints the means of ndcg_cut_10, recip_rank of the top 10 (MRR@10), recall_100 and map_cut_100
over the queries of the run that have judgements. A judged query that retrieved nothing has no
line in the run file; `tantivy-rerank eval` scores it 0, so pass its report's `queries` as
`--queries N` to average over the same N queries (the missing ones count 0).
"""

import argparse
import math
import re

import pytrec_eval


NUMBER = re.compile(r"[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|infinity|nan)", re.IGNORECASE)


def read_qrels(path):
    """The qrels formats `tantivy-rerank eval` reads, with the same rules: BEIR TSV
    (query-id, corpus-id, score; a header on line 1 only if its score is not a number) or TREC
    (qid iter docid rel, whitespace separated); integer grades, `1.0` included; the last of
    repeated judgements wins. Anything else stops with the file and line."""
    qrels = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            tab = line.split("\t")
            if len(tab) == 3:
                qid, did, grade = (c.strip() for c in tab)
            elif len(line.split()) == 4:
                qid, _, did, grade = line.split()
            else:
                raise SystemExit(f"{path}:{line_no}: expected 3 tab-separated columns or 4 TREC columns")
            # Rust's f64 syntax: no `_` separators or surrounding spaces, which float() allows.
            if not NUMBER.fullmatch(grade):
                if line_no == 1:
                    continue  # header
                raise SystemExit(f"{path}:{line_no}: relevance grade `{grade}` is not an integer")
            value = float(grade)
            if not math.isfinite(value) or value != int(value):
                raise SystemExit(f"{path}:{line_no}: relevance grade `{grade}` is not an integer")
            if not qid or not did:
                raise SystemExit(f"{path}:{line_no}: empty query or document id")
            qrels.setdefault(qid, {})[did] = int(value)
    return qrels


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("qrels")
    ap.add_argument("run")
    ap.add_argument("--queries", type=int, help="queries evaluated (report.json's `queries`); those without a line in the run count 0")
    args = ap.parse_args()
    qrels = read_qrels(args.qrels)
    run = {}
    with open(args.run) as f:
        for line in f:
            qid, _, did, _, score, _ = line.split()
            run.setdefault(qid, {})[did] = float(score)
    run = {q: d for q, d in run.items() if q in qrels}
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "map_cut.100"}).evaluate(run)
    top10 = {q: dict(sorted(d.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:10]) for q, d in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    n = len(full)
    if n == 0 and not args.queries:
        raise SystemExit(f"no query of {args.run} has judgements in {args.qrels}")
    if args.queries is not None:
        if args.queries < n:
            raise SystemExit(f"--queries {args.queries} is fewer than the {n} judged queries in the run")
        n = args.queries
    mean = lambda m, res: sum(v[m] for v in res.values()) / n
    print(f"queries {n}  NDCG@10 {mean('ndcg_cut_10', full):.4f}  MRR@10 {mean('recip_rank', rr):.4f}  "
          f"Recall@100 {mean('recall_100', full):.4f}  MAP@100 {mean('map_cut_100', full):.4f}")


if __name__ == "__main__":
    main()
