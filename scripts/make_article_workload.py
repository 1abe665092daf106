#!/usr/bin/env python3
"""Write a long-document reranking workload: one question and N whole articles of at least
T tokens each, from the SQuAD article corpus in ../shared/data/squad-articles.

The GPU proof (issue 5) reranks 1 query x 16 articles x 8,192 tokens with a ModernBERT-large
cross-encoder. Only 13 of the 48 SQuAD articles reach 8,192 ModernBERT tokens on their own,
so articles are taken longest first and, once the long ones run out, the remaining ones are
joined (blank line between them) until each passage has at least T tokens. Each passage is
then truncated by the model to its max_length (8,192), so every pair is full length.

    python3 scripts/make_article_workload.py --out DIR/workload_articles_1x16x8192.json \\
        [--shared ../shared] [--count 16] [--tokens 8192]

Token counts use the real ModernBERT tokenizer (shared/models/modernbert-tokenizer) through
the `tokenizers` package. The output has the same schema as shared/bench/workload_*.json
({"query", "passages"}) plus the provenance of each passage.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from tokenizers import Tokenizer


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--shared", type=Path,
                    default=Path(os.environ.get("TANTIVY_RERANK_SHARED", root.parent / "shared")))
    ap.add_argument("--count", type=int, default=16, help="passages (articles)")
    ap.add_argument("--tokens", type=int, default=8192, help="minimum tokens per passage")
    args = ap.parse_args()

    data = args.shared / "data" / "squad-articles"
    tok = Tokenizer.from_file(str(args.shared / "models" / "modernbert-tokenizer" / "tokenizer.json"))
    articles = [json.loads(line) for line in (data / "corpus.jsonl").read_text().splitlines() if line.strip()]

    def text(a: dict) -> str:
        return f"{a['title']}\n{a['text']}"

    def count(t: str) -> int:
        return len(tok.encode(t, add_special_tokens=False).ids)

    ranked = sorted(((count(text(a)), a) for a in articles), key=lambda x: -x[0])
    passages, sources = [], []
    pending, pending_ids, pending_tokens = [], [], 0
    for n, a in ranked:
        if len(passages) == args.count:
            break
        pending.append(text(a))
        pending_ids.append(a["_id"])
        pending_tokens = count("\n\n".join(pending))
        if pending_tokens >= args.tokens:
            passages.append("\n\n".join(pending))
            sources.append({"articles": pending_ids, "tokens": pending_tokens})
            pending, pending_ids = [], []
    if len(passages) < args.count:
        raise SystemExit(f"only {len(passages)} passages of >= {args.tokens} tokens could be made "
                         f"from {len(articles)} articles")

    # The query: the first question judged against the longest article.
    first = sources[0]["articles"][0]
    qrels = (data / "qrels" / "test.tsv")
    if not qrels.exists():
        qrels = next((data / "qrels").glob("*.tsv"))
    qid = next(line.split("\t")[0] for line in qrels.read_text().splitlines()[1:]
               if line.split("\t")[1] == first)
    query = next(json.loads(line)["text"] for line in (data / "queries.jsonl").read_text().splitlines()
                 if line.strip() and json.loads(line)["_id"] == qid)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "description": f"1 SQuAD question x {args.count} whole Wikipedia articles (SQuAD v1.1 dev, "
                       f"CC BY-SA 4.0) of >= {args.tokens} ModernBERT tokens each; articles shorter "
                       "than that are joined with the next ones",
        "query": query,
        "passages": passages,
        "sources": sources,
    }, ensure_ascii=False) + "\n")
    print(f"{args.out}: query {query!r}, {len(passages)} passages, "
          f"{min(s['tokens'] for s in sources)}-{max(s['tokens'] for s in sources)} tokens")


if __name__ == "__main__":
    main()
