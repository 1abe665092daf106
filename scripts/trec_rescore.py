#!/usr/bin/env python3
"""Re-score a TREC run file with pytrec_eval (the trec_eval C code) against BEIR qrels.

  python scripts/trec_rescore.py QRELS.tsv RUN.trec [--queries N]

Prints the means of ndcg_cut_10, recip_rank of the top 10 (MRR@10), recall_100 and map_cut_100
over the queries of the run that have judgements. A judged query that retrieved nothing has no
line in the run file; `tantivy-rerank eval` scores it 0, so pass its report's `queries` as
`--queries N` to average over the same N queries (the missing ones count 0).
"""

import argparse
import csv

import pytrec_eval


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("qrels")
    ap.add_argument("run")
    ap.add_argument("--queries", type=int, help="queries evaluated (report.json's `queries`); those without a line in the run count 0")
    args = ap.parse_args()
    qrels = {}
    with open(args.qrels) as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) != 3 or not row[2].strip().lstrip("-").isdigit():
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
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
    if args.queries is not None:
        if args.queries < n:
            raise SystemExit(f"--queries {args.queries} is fewer than the {n} judged queries in the run")
        n = args.queries
    mean = lambda m, res: sum(v[m] for v in res.values()) / n
    print(f"queries {n}  NDCG@10 {mean('ndcg_cut_10', full):.4f}  MRR@10 {mean('recip_rank', rr):.4f}  "
          f"Recall@100 {mean('recall_100', full):.4f}  MAP@100 {mean('map_cut_100', full):.4f}")


if __name__ == "__main__":
    main()
