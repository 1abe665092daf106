#!/usr/bin/env python3
"""Side-by-side speed of sentence-transformers' CrossEncoder.predict and `tantivy-rerank bench`.

Both sides score the same workload files with the same model directory, batch size, max
length, thread count, device and dtype, one after the other in the same run, each in its own
process (so each side's peak RSS is its own). For every workload it prints pairs/s, p50 and
p95 latency per query, and peak RSS of both sides, and the ratio ours / sentence-transformers.

Python side: ``torch.set_num_threads(threads)``, ``CrossEncoder(model, device, max_length)``
(``model_kwargs={"torch_dtype": ...}`` for f16/bf16), one ``predict(pairs, batch_size)`` per
query; warm-up runs are excluded and the median run is reported, exactly as our `bench` does.

Versions are pinned in ``scripts/requirements-bench.txt``. Unless ``--python`` is given, the
script creates ``.venv-bench`` from that file on first use and re-runs itself inside it.

Usage (from the project root, release binary built with ``cargo build --release``)::

    python3 scripts/bench_vs_sentence_transformers.py --model DIR \\
        --workload ../shared/bench/workload_1x100.json \\
        --workload ../shared/bench/workload_scifact_1x100.json \\
        [--make-model minilm-l6|modernbert-base|modernbert-large|mbert-2label] \\
        [--batch-size 32] [--max-length 512] [--threads 2] [--device cpu] [--dtype f32] \\
        [--warmup 1] [--runs 3] [--bin target/release/tantivy-rerank] [--json OUT]

``--make-model KIND`` first writes a full-size random model of that architecture into
``--model`` with ``scripts/make_fixtures.py --full-size`` if the directory does not exist.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-bench"
REQUIREMENTS = ROOT / "scripts" / "requirements-bench.txt"


def pinned() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip()] = version.strip()
    return pins


def version_mismatches() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    bad = []
    for name, want in pinned().items():
        try:
            have = version(name)
        except PackageNotFoundError:
            have = None
        if have != want:
            bad.append(f"{name} {have or 'missing'} (pinned {want})")
    return bad


def ensure_environment(args: argparse.Namespace) -> None:
    """Re-run inside .venv-bench (created on first use) unless the pins are already met."""
    if args.python:
        if Path(sys.executable).resolve() != Path(args.python).resolve():
            os.execv(args.python, [args.python, __file__, *sys.argv[1:]])
        return
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not (VENV / "bin" / "python").exists():
        print(f"creating {VENV} from {REQUIREMENTS} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "-r", str(REQUIREMENTS)], check=True)
    python = str(VENV / "bin" / "python")
    os.execv(python, [python, __file__, *sys.argv[1:]])


def peak_rss_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    rank = p / 100 * (len(xs) - 1)
    lo, hi = int(rank), min(int(rank) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


def load_workload(path: str) -> list[tuple[str, list[str]]]:
    data = json.loads(Path(path).read_text())
    queries = data["queries"] if "queries" in data else [data]
    return [(q["query"], q["passages"]) for q in queries]


def st_worker(args: argparse.Namespace) -> None:
    """Runs in its own process: benchmark CrossEncoder.predict, print one JSON line."""
    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(args.threads)
    dtypes = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
    model_kwargs = {} if args.dtype == "f32" else {"torch_dtype": dtypes[args.dtype]}
    model = CrossEncoder(args.model, device=args.device, max_length=args.max_length,
                         model_kwargs=model_kwargs)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    out = {"workloads": [], "torch_threads": torch.get_num_threads(),
           "attn_implementation": getattr(model.model.config, "_attn_implementation", None),
           "max_length": model.max_length}
    for path in args.workload:
        queries = load_workload(path)
        runs = []
        for r in range(args.warmup + args.runs):
            latencies = []
            start = time.perf_counter()
            for q, passages in queries:
                t = time.perf_counter()
                scores = model.predict([(q, p) for p in passages], batch_size=args.batch_size,
                                       show_progress_bar=False)
                sorted(range(len(scores)), key=lambda i: -scores[i])
                sync()
                latencies.append((time.perf_counter() - t) * 1e3)
            seconds = time.perf_counter() - start
            if r >= args.warmup:
                pairs = sum(len(p) for _, p in queries)
                runs.append({"seconds": seconds, "pairs_per_s": pairs / seconds, "latencies_ms": latencies})
        lat = [x for run in runs for x in run["latencies_ms"]]
        out["workloads"].append({
            "name": Path(path).stem,
            "median_pairs_per_s": statistics.median(r["pairs_per_s"] for r in runs),
            "latency_p50_ms": percentile(lat, 50),
            "latency_p95_ms": percentile(lat, 95),
            "runs": runs,
        })
    if args.device.startswith("cuda"):
        out["peak_device_mib"] = torch.cuda.max_memory_allocated() / 2**20
    out["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="model directory (both sides load it)")
    ap.add_argument("--make-model", choices=["minilm-l6", "modernbert-base", "modernbert-large", "mbert-2label"],
                    help="create --model as a full-size random model of this kind if missing")
    ap.add_argument("--workload", action="append", required=True, help="workload JSON (repeatable)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cuda:0)")
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"])
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "tantivy-rerank"),
                    help="our binary (cargo build --release; add --features cuda for GPUs)")
    ap.add_argument("--bench-args", default="", help="extra arguments for our bench (e.g. --max-batch-tokens 8192)")
    ap.add_argument("--python", help="use this interpreter (must have the pinned versions) instead of .venv-bench")
    ap.add_argument("--json", type=Path, help="also write both reports to this file")
    ap.add_argument("--st-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.st_worker:
        st_worker(args)
        return
    ensure_environment(args)
    bad = version_mismatches()
    if bad:
        raise SystemExit("version mismatch with scripts/requirements-bench.txt: " + ", ".join(bad))

    model = Path(args.model)
    if args.make_model and not (model / "config.json").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_fixtures.py"), "--full-size",
                        args.make_model, "--out", str(model)], check=True)
    if not Path(args.bin).exists():
        raise SystemExit(f"{args.bin} not found: run `cargo build --release` first")

    common = ["--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
              "--warmup", str(args.warmup), "--runs", str(args.runs)]
    worker = [sys.executable, __file__, "--st-worker", "--model", str(model), "--threads", str(args.threads),
              "--device", args.device, "--dtype", args.dtype, *common]
    for w in args.workload:
        worker += ["--workload", w]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    print(f"sentence-transformers: {' '.join(worker[2:])}", file=sys.stderr)
    st = json.loads(subprocess.run(worker, check=True, capture_output=True, text=True, env=env).stdout.splitlines()[-1])

    ours_cmd = [args.bin, "bench", "--model", str(model), "--threads", str(args.threads),
                "--device", args.device, "--dtype", args.dtype, "--json", *common, *args.bench_args.split()]
    for w in args.workload:
        ours_cmd += ["--workload", w]
    print(f"tantivy-rerank: {' '.join(ours_cmd)}", file=sys.stderr)
    ours = json.loads(subprocess.run(ours_cmd, check=True, capture_output=True, text=True,
                                     env=dict(os.environ, RAYON_NUM_THREADS=str(args.threads))).stdout)

    import sentence_transformers
    import torch
    import transformers

    print(f"\nmodel {model} | device {args.device} {args.dtype} | threads {args.threads} | "
          f"batch {args.batch_size} | max_length {args.max_length} (ST resolved {st['max_length']}, "
          f"ours {ours['max_length']}) | {args.warmup} warm-up + {args.runs} measured runs, median")
    print(f"sentence-transformers {sentence_transformers.__version__}, transformers {transformers.__version__}, "
          f"torch {torch.__version__} (attention: {st['attn_implementation']}, {st['torch_threads']} threads); "
          f"ours: {ours['family']} {ours['dtype']}, {ours['threads']} threads, max_batch_tokens {ours['max_batch_tokens']}")
    header = (f"{'workload':26} {'ST pairs/s':>10} {'ours pairs/s':>12} {'ratio':>6} "
              f"{'ST p50 ms':>10} {'ours p50 ms':>11} {'ST p95 ms':>10} {'ours p95 ms':>11}")
    print(header)
    rows = []
    for s, o in zip(st["workloads"], ours["workloads"]):
        ratio = o["median_pairs_per_s"] / s["median_pairs_per_s"]
        rows.append({"workload": s["name"], "st_pairs_per_s": s["median_pairs_per_s"],
                     "ours_pairs_per_s": o["median_pairs_per_s"], "ratio": ratio})
        print(f"{s['name']:26} {s['median_pairs_per_s']:10.2f} {o['median_pairs_per_s']:12.2f} {ratio:5.2f}x "
              f"{s['latency_p50_ms']:10.1f} {o['latency_p50_ms']:11.1f} {s['latency_p95_ms']:10.1f} "
              f"{o['latency_p95_ms']:11.1f}")
        split = o["split"]
        print(f"{'':26} ours split: tokenize {split['tokenize_ms']:.1f} ms, sort {split['sort_ms']:.2f} ms, "
              f"forward {split['forward_ms']:.1f} ms, other {split['other_ms']:.1f} ms")
    mem = f"peak RSS: sentence-transformers {st['peak_rss_mib']:.0f} MiB, ours {ours['peak_rss_mib']:.0f} MiB"
    if st.get("peak_device_mib") is not None:
        mem += f"; peak device memory: ST {st['peak_device_mib']:.0f} MiB (torch allocated), ours {ours.get('peak_device_mib') or float('nan'):.0f} MiB (in use)"
    print(mem)
    if args.json:
        args.json.write_text(json.dumps({"sentence_transformers": st, "ours": ours, "ratios": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
