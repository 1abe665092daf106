#!/usr/bin/env python3
"""Call a running `tantivy-rerank serve` with the official Cohere Python SDK (v1 Client and
v2 ClientV2, `base_url` set to the service) and check what it parses.

    python3 -m venv .venv-clients && .venv-clients/bin/pip install -r scripts/requirements-clients.txt
    tantivy-rerank serve --model DIR --port 8080 [--api-key KEY] &
    .venv-clients/bin/python scripts/check_clients.py --url http://127.0.0.1:8080 [--api-key KEY]

Exits non-zero, naming the check, when the SDK fails or a result is wrong; prints one line
per check otherwise.
"""

import argparse
import json
import sys
import urllib.request

import cohere

QUERY = "which team won super bowl 50"
DOCS = [
    "The Denver Broncos won Super Bowl 50.",
    "Bananas are yellow and grow in bunches.",
    "Super Bowl 50 was played at Levi's Stadium.",
    "Paris is the capital of France.",
]


def tei_scores(url, key):
    """The service's own TEI `/rerank` scores, to compare the SDK's answers with."""
    body = json.dumps({"query": QUERY, "texts": DOCS}).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url + "/rerank", data=body, headers=headers)
    with urllib.request.urlopen(req) as r:
        ranks = json.load(r)
    return {item["index"]: item["score"] for item in ranks}


def check(name, ok, detail=""):
    if not ok:
        print(f"FAIL {name} {detail}")
        sys.exit(1)
    print(f"ok   {name} {detail}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--api-key", default="")
    args = p.parse_args()
    expected = tei_scores(args.url, args.api_key)
    # The SDK refuses an empty key; the service ignores the header without --api-key.
    key = args.api_key or "unused"

    v1 = cohere.Client(api_key=key, base_url=args.url)
    r = v1.rerank(model="any", query=QUERY, documents=DOCS, top_n=3, return_documents=True)
    check("v1 results", len(r.results) == 3, f"{len(r.results)} results")
    for res in r.results:
        check(
            f"v1 index {res.index}",
            abs(res.relevance_score - expected[res.index]) < 1e-5
            and res.document is not None
            and res.document.text == DOCS[res.index],
            f"relevance_score {res.relevance_score:.6f}",
        )
    scores = [res.relevance_score for res in r.results]
    check("v1 best first", scores == sorted(scores, reverse=True))
    check("v1 meta", r.meta is not None and r.meta.api_version.version == "1")

    v2 = cohere.ClientV2(api_key=key, base_url=args.url)
    r = v2.rerank(model="any", query=QUERY, documents=DOCS, max_tokens_per_doc=4096)
    check("v2 results", len(r.results) == len(DOCS), f"{len(r.results)} results")
    for res in r.results:
        check(
            f"v2 index {res.index}",
            abs(res.relevance_score - expected[res.index]) < 1e-5,
            f"relevance_score {res.relevance_score:.6f}",
        )
    check("v2 id", bool(r.id))

    # A wrong key is the SDK's UnauthorizedError when the service has one.
    if args.api_key:
        bad = cohere.ClientV2(api_key="wrong", base_url=args.url)
        try:
            bad.rerank(model="any", query=QUERY, documents=DOCS)
            check("wrong key refused", False)
        except cohere.core.api_error.ApiError as e:
            check("wrong key refused", e.status_code == 401, f"status {e.status_code}")
    print("all checks passed")


if __name__ == "__main__":
    main()
