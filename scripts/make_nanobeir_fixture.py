#!/usr/bin/env python3
"""Write a tiny NanoBEIR-schema parquet fixture and the numbers sentence-transformers gives on it.

Output (committed): crates/eval/tests/fixtures/nanobeir/
  corpus/<split>-00000-of-00001.parquet   _id: string, text: string
  queries/<split>-00000-of-00001.parquet  _id: string, text: string
  qrels/<split>-00000-of-00001.parquet    query-id: string, corpus-id: string
  bm25/<split>-00000-of-00001.parquet     query-id: string, corpus-ids: list<string> (ranked)
  expected_st.json                        CrossEncoderNanoBEIREvaluator results + per-pair scores

The layout and schema are those of the Hub dataset `sentence-transformers/NanoBEIR-en`
(snappy-compressed parquet, pyarrow's default, as `datasets` writes them).

The expected numbers come from sentence-transformers' own `CrossEncoderNanoBEIREvaluator`
(the installed version, see scripts/requirements-fixtures.txt) scoring with the fixture model
crates/encoders/tests/fixtures/modernbert-1label-mean on CPU. The only thing replaced is how a
subset/split is loaded: `datasets.load_dataset` needs the Hub, so `_load_dataset_subset_split`
reads the same parquet files with pyarrow and hands back a minimal stand-in with the part of
the `datasets.Dataset` API the evaluator uses (`column_names`, column access, iteration, `map`).
Everything else (candidate lists, positives, base scores, metrics) is the evaluator's code.

Run: /work/venv-fixtures/bin/python scripts/make_nanobeir_fixture.py
"""

from __future__ import annotations

import glob
import json
import os
import sys
from pathlib import Path

# The evaluator keeps positives in a Python `set`: make its order reproducible.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable, *sys.argv])

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "eval" / "tests" / "fixtures" / "nanobeir"
MODEL = ROOT / "crates" / "encoders" / "tests" / "fixtures" / "modernbert-1label-mean"

# Each split: corpus {id: text}, queries {id: text}, qrels [(qid, docid)], bm25 {qid: [ids]}.
SPLITS = {
    "NanoMSMARCO": {
        "corpus": {
            "1001": "The capital of France is Paris, a city on the Seine.",
            "1002": "Bananas are yellow fruit rich in potassium.",
            "1003": "Mount Everest is the highest mountain on Earth.",
            "1004": "Paris hosted the Olympic Games in 1900, 1924 and 2024.",
            "1005": "Photosynthesis turns light into chemical energy in plants.",
            "1006": "The Eiffel Tower was built for the 1889 World's Fair.",
            "1007": "Everest lies in the Himalaya on the border of Nepal and China.",
            "1008": "A marathon is 42.195 kilometres long.",
            "1009": "Green plants absorb carbon dioxide and release oxygen.",
            "1010": "Lyon is a large French city known for its food.",
        },
        "queries": {
            "q1": "what is the capital of france",
            "q2": "highest mountain in the world",
            "q3": "how do plants make energy",
        },
        # q2 has a positive (1007) that BM25 misses; q3's only positive is missed entirely.
        "qrels": [("q1", "1001"), ("q2", "1003"), ("q2", "1007"), ("q3", "1005")],
        "bm25": {
            "q1": ["1004", "1001", "1010", "1006", "1002"],
            "q2": ["1008", "1003", "1002", "1006"],
            "q3": ["1009", "1002", "1008"],
        },
    },
    "NanoNFCorpus": {
        "corpus": {
            "MED-1": "Vitamin D deficiency is common in northern countries.",
            "MED-2": "Sunlight exposure helps the skin produce vitamin D.",
            "MED-3": "Fish oil contains omega-3 fatty acids.",
            "MED-4": "Regular exercise lowers blood pressure.",
            "MED-5": "Salt intake raises blood pressure in many adults.",
            "MED-6": "Green tea contains antioxidants called catechins.",
            "MED-7": "Vitamin D supplements may reduce the risk of fractures.",
            "MED-8": "Coffee consumption and heart health are debated.",
            "MED-9": "Dietary fibre improves digestion.",
            "MED-10": "Potassium helps to counter the effects of salt.",
            "MED-11": "Walking every day is a simple form of exercise.",
        },
        "queries": {
            "PLAIN-1": "vitamin d and sunlight",
            "PLAIN-2": "how to lower blood pressure",
            "PLAIN-3": "benefits of green tea",
        },
        "qrels": [
            ("PLAIN-1", "MED-1"),
            ("PLAIN-1", "MED-2"),
            ("PLAIN-1", "MED-7"),
            ("PLAIN-2", "MED-4"),
            ("PLAIN-2", "MED-5"),
            ("PLAIN-2", "MED-10"),
            ("PLAIN-2", "MED-11"),
            ("PLAIN-3", "MED-6"),
        ],
        "bm25": {
            "PLAIN-1": ["MED-2", "MED-7", "MED-9", "MED-1", "MED-3", "MED-8"],
            "PLAIN-2": ["MED-5", "MED-8", "MED-4", "MED-9", "MED-3", "MED-10"],
            "PLAIN-3": ["MED-6", "MED-8", "MED-3"],
        },
    },
}


def write(subset: str, split: str, table: pa.Table) -> None:
    path = OUT / subset / f"{split}-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="snappy")


def write_fixture() -> None:
    for split, d in SPLITS.items():
        write(
            "corpus",
            split,
            pa.table({"_id": list(d["corpus"]), "text": list(d["corpus"].values())}),
        )
        write(
            "queries",
            split,
            pa.table({"_id": list(d["queries"]), "text": list(d["queries"].values())}),
        )
        write(
            "qrels",
            split,
            pa.table(
                {
                    "query-id": [q for q, _ in d["qrels"]],
                    "corpus-id": [c for _, c in d["qrels"]],
                }
            ),
        )
        write(
            "bm25",
            split,
            pa.table(
                {
                    "query-id": list(d["bm25"]),
                    "corpus-ids": pa.array(list(d["bm25"].values()), type=pa.list_(pa.string())),
                }
            ),
        )


class _Subset:
    """The part of `datasets.Dataset` that CrossEncoderNanoBEIREvaluator uses."""

    def __init__(self, table: pa.Table):
        self._rows = table.to_pylist()
        self._table = table
        self.column_names = table.column_names

    def __getitem__(self, column: str):
        return self._table.column(column).to_pylist()

    def __iter__(self):
        return iter(self._rows)

    def map(self, fn, fn_kwargs):
        return [fn(row, **fn_kwargs) for row in self._rows]


def expected_numbers() -> dict:
    import numpy as np
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderNanoBEIREvaluator

    class LocalNanoBEIR(CrossEncoderNanoBEIREvaluator):
        def _load_dataset_subset_split(self, subset, split, required_columns):
            files = sorted(glob.glob(str(OUT / subset / f"{split}-*.parquet")))
            table = pa.concat_tables(pq.read_table(f) for f in files)
            missing = set(required_columns) - set(table.column_names)
            if missing:
                raise ValueError(f"{subset}/{split} misses {missing}")
            return _Subset(table)

    model = CrossEncoder(str(MODEL), device="cpu")
    runs = {}
    for name, kwargs in {
        "default": {},
        "no_always_positives": {"always_rerank_positives": False},
        "rerank_k_2": {"rerank_k": 2},
    }.items():
        ev = LocalNanoBEIR(["msmarco", "nfcorpus"], write_csv=False, **kwargs)
        runs[name] = {"config": ev.get_config_dict(), "results": {k: float(v) for k, v in ev(model).items()}}

    # Per-pair scores, for the parity of the Rust model and to check the fixture has no
    # near-ties that float noise could flip.
    scores = {}
    min_gap = float("inf")
    for split, d in SPLITS.items():
        for qid, qtext in d["queries"].items():
            ids = list(d["corpus"])
            s = model.predict([[qtext, d["corpus"][i]] for i in ids], convert_to_numpy=True)
            scores[f"{split}/{qid}"] = {i: float(v) for i, v in zip(ids, s)}
            srt = np.sort(s)
            min_gap = min(min_gap, float(np.min(np.diff(srt))))
    return {
        "model": "crates/encoders/tests/fixtures/modernbert-1label-mean",
        "datasets": ["msmarco", "nfcorpus"],
        "runs": runs,
        "pair_scores": scores,
        "min_score_gap_within_query": min_gap,
    }


def main() -> None:
    write_fixture()
    expected = expected_numbers()
    (OUT / "expected_st.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(json.dumps({k: v["results"] for k, v in expected["runs"].items()}, indent=1))
    print("min score gap within a query:", expected["min_score_gap_within_query"])


if __name__ == "__main__":
    main()
