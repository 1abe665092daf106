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
``--unpinned`` instead runs with the current interpreter's packages as they are (the GPU
machine has its own torch build and no network); the versions used are printed either way.

``--bin`` may be repeated as ``LABEL=PATH`` (e.g. ``cuda=...`` and ``flash-attn=...``):
sentence-transformers runs once and every binary is compared with it.

FLOP floor: the worker counts the forward FLOPs of every pair from the model's config and
the tokenized lengths (linear layers 2*tokens*in*out, attention 4*len*keys*hidden with keys
limited to the window on ModernBERT's local layers; no padding) and divides by
``--peak-tflops`` (default 800 on CUDA: H100 dense bf16; none on the CPU). The table shows
the time of one run of the workload at that rate and ours / floor.

Usage (from the project root, release binary built with ``cargo build --release``)::

    python3 scripts/bench_vs_sentence_transformers.py --model DIR \\
        --workload ../shared/bench/workload_1x100.json \\
        --workload ../shared/bench/workload_scifact_1x100.json \\
        [--make-model minilm-l6|modernbert-base|modernbert-large|mbert-2label] \\
        [--batch-size 32] [--max-length 512] [--threads 2] [--device cpu] [--dtype f32] \\
        [--warmup 1] [--runs 3] [--bin [LABEL=]target/release/tantivy-rerank ...] [--json OUT]
        [--unpinned] [--peak-tflops 800]

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
REQUIREMENTS_ORT = ROOT / "scripts" / "requirements-bench-ort.txt"


def pinned() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines() + REQUIREMENTS_ORT.read_text().splitlines():
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
    if args.unpinned:
        return
    if args.python:
        if Path(sys.executable).resolve() != Path(args.python).resolve():
            os.execv(args.python, [args.python, __file__, *sys.argv[1:]])
        return
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not (VENV / "bin" / "python").exists():
        print(f"creating {VENV} from {REQUIREMENTS} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "-r", str(REQUIREMENTS),
                        "-r", str(REQUIREMENTS_ORT)], check=True)
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


def forward_flops(config: dict, length: int) -> float:
    """Forward FLOPs of one sequence of `length` tokens through the encoder (no padding)."""
    h, layers = config["hidden_size"], config["num_hidden_layers"]
    inter = config["intermediate_size"]
    if config.get("model_type") == "modernbert":
        # Wqkv, Wo, Wi (input and gate), mlp Wo.
        linear = 2 * length * (h * 3 * h + h * h + h * 2 * inter + inter * h)
        every = config.get("global_attn_every_n_layers", 3)
        window = config.get("local_attention", 128)
        flops = 0.0
        for layer in range(layers):
            keys = length if layer % every == 0 else min(length, window + 1)
            flops += linear + 4 * length * keys * h
        return flops
    linear = 2 * length * (h * 3 * h + h * h + 2 * h * inter)
    return layers * (linear + 4 * length * length * h)


def time_workload(path: str, queries: list, score, args: argparse.Namespace) -> dict:
    """`args.warmup` uncounted and `args.runs` counted passes over `queries`, one `score(q, passages)`
    call per query plus the ranking by head score, as our bench does; the median run."""
    runs = []
    for r in range(args.warmup + args.runs):
        latencies = []
        start = time.perf_counter()
        for q, passages in queries:
            t = time.perf_counter()
            scores = score(q, passages)
            sorted(range(len(scores)), key=head_scores(scores).__getitem__, reverse=True)
            latencies.append((time.perf_counter() - t) * 1e3)
        seconds = time.perf_counter() - start
        if r >= args.warmup:
            pairs = sum(len(p) for _, p in queries)
            runs.append({"seconds": seconds, "pairs_per_s": pairs / seconds, "latencies_ms": latencies})
    lat = [x for run in runs for x in run["latencies_ms"]]
    return {
        "name": Path(path).stem,
        "median_pairs_per_s": statistics.median(r["pairs_per_s"] for r in runs),
        "latency_p50_ms": percentile(lat, 50),
        "latency_p95_ms": percentile(lat, 95),
        "runs": runs,
    }


def st_worker(args: argparse.Namespace) -> None:
    """Runs in its own process: benchmark CrossEncoder.predict, print one JSON line."""
    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(args.threads)
    import transformers

    dtypes = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
    # transformers 5 renamed from_pretrained's `torch_dtype` to `dtype`.
    key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    model_kwargs = {} if args.dtype == "f32" else {key: dtypes[args.dtype]}
    model = CrossEncoder(args.model, device=args.device, max_length=args.max_length,
                         model_kwargs=model_kwargs)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    config = json.loads((Path(args.model) / "config.json").read_text())
    out = {"workloads": [], "torch_threads": torch.get_num_threads(),
           "attn_implementation": getattr(model.model.config, "_attn_implementation", None),
           "param_dtype": str(next(model.model.parameters()).dtype).replace("torch.", ""),
           "max_length": model.max_length}
    for path in args.workload:
        queries = load_workload(path)
        flops = 0.0
        for q, passages in queries:
            enc = model.tokenizer([q] * len(passages), passages, truncation=True, max_length=model.max_length)
            flops += sum(forward_flops(config, len(ids)) for ids in enc["input_ids"])
        def score(q: str, passages: list[str]):
            scores = model.predict([(q, p) for p in passages], batch_size=args.batch_size,
                                   show_progress_bar=False)
            sync()
            return scores

        report = time_workload(path, queries, score, args)
        report["forward_tflop_per_run"] = flops / 1e12
        out["workloads"].append(report)
    if args.device.startswith("cuda"):
        out["peak_device_mib"] = torch.cuda.max_memory_allocated() / 2**20
    out["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(out))


def ort_worker(args: argparse.Namespace) -> None:
    """Runs in its own process: the model exported to ONNX from transformers, optimised with
    ONNX Runtime's transformer optimizer (BERT fusions; plain graph optimisations for other
    architectures), checked against transformers' logits, then timed on length-sorted batches
    (padded per batch) with `threads` intra-op threads. Prints one JSON line."""
    import tempfile

    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.model)
    hf = AutoModelForSequenceClassification.from_pretrained(args.model).eval()
    config = json.loads((Path(args.model) / "config.json").read_text())
    max_length = min(args.max_length, config.get("max_position_embeddings", args.max_length))
    tmp = Path(tempfile.mkdtemp(prefix="ort-bench-"))
    raw_path, opt_path = tmp / "model.onnx", tmp / "model.opt.onnx"
    sample = tok(["what is it"] * 2, ["a short passage", "a somewhat longer passage of text here"],
                 truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    axes["logits"] = {0: "batch"}
    export_kwargs = dict(input_names=names, output_names=["logits"], dynamic_axes=axes, opset_version=17)
    with torch.no_grad():
        try:
            torch.onnx.export(hf, tuple(sample[n] for n in names), str(raw_path), dynamo=False, **export_kwargs)
        except TypeError:
            torch.onnx.export(hf, tuple(sample[n] for n in names), str(raw_path), **export_kwargs)
    fused = "none"
    try:
        from onnxruntime.transformers import optimizer

        if config.get("model_type") == "bert":
            heads, hidden = config["num_attention_heads"], config["hidden_size"]
            opt = optimizer.optimize_model(str(raw_path), model_type="bert", num_heads=heads, hidden_size=hidden)
            opt.save_model_to_file(str(opt_path))
            fused = "bert fusions: " + ", ".join(f"{k} {v}" for k, v in opt.get_fused_operator_statistics().items() if v)
        else:
            opt_path = raw_path
            fused = "graph optimisations only (no transformer fusions for this architecture)"
    except Exception as e:  # the plain export still runs; say so
        opt_path = raw_path
        fused = f"optimizer failed ({e}); plain export"
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(opt_path), so, providers=["CPUExecutionProvider"])

    def run(pairs: list[tuple[str, str]]) -> np.ndarray:
        enc = tok([q for q, _ in pairs], [p for _, p in pairs], truncation=True, max_length=max_length)
        order = sorted(range(len(pairs)), key=lambda i: len(enc["input_ids"][i]))
        out = np.zeros((len(pairs), config.get("num_labels", len(config.get("id2label", {0: 0})))),
                       dtype=np.float32)
        rows = []
        for b in range(0, len(order), args.batch_size):
            idx = order[b:b + args.batch_size]
            width = max(len(enc["input_ids"][i]) for i in idx)
            feed = {}
            for n in names:
                pad = tok.pad_token_id if n == "input_ids" else 0
                feed[n] = np.array([enc[n][i] + [pad] * (width - len(enc[n][i])) for i in idx], dtype=np.int64)
            logits = session.run(["logits"], feed)[0]
            rows.append((idx, logits))
        out = np.zeros((len(pairs), rows[0][1].shape[1]), dtype=np.float32)
        for idx, logits in rows:
            out[idx] = logits
        return out

    # The export must reproduce transformers before it is timed.
    first_q, first_p = load_workload(args.workload[0])[0]
    check = [(first_q, p) for p in first_p[:8]]
    with torch.no_grad():
        enc = tok([q for q, _ in check], [p for _, p in check], truncation=True, max_length=max_length,
                  padding=True, return_tensors="pt")
        want = hf(**enc).logits.float().numpy()
    got = run(check)
    max_diff = float(np.abs(got - want).max())
    if not max_diff < 1e-3:
        raise SystemExit(f"the ONNX export does not reproduce transformers: max |logit diff| {max_diff}")
    out = {"workloads": [], "max_abs_logit_diff": max_diff, "optimizer": fused,
           "onnxruntime": ort.__version__, "threads": args.threads}
    for path in args.workload:
        def score(q: str, passages: list[str]):
            logits = run([(q, p) for p in passages])
            return logits if logits.shape[1] > 1 else logits[:, 0]

        out["workloads"].append(time_workload(path, load_workload(path), score, args))
    out["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(out))


def head_scores(scores):
    """One relevance score per pair from CrossEncoder.predict's output, as our heads compute it:
    one label as returned (ST applied its activation), two labels P(label 1), three or more the
    expected grade over evenly spaced grades 0..1."""
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        return s
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return p[:, 1] if s.shape[1] == 2 else p @ np.linspace(0.0, 1.0, s.shape[1])


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
    ap.add_argument("--bin", action="append",
                    help="[LABEL=]PATH of our binary, repeatable (default target/release/tantivy-rerank; "
                         "cargo build --release, or scripts/build-cuda.sh for GPUs)")
    ap.add_argument("--peak-tflops", type=float,
                    help="peak rate for the FLOP floor (default 800 on CUDA, H100 dense bf16)")
    ap.add_argument("--unpinned", action="store_true",
                    help="use this interpreter's packages as installed instead of the pinned .venv-bench")
    ap.add_argument("--bench-args", default="", help="extra arguments for our bench (e.g. --max-batch-tokens 8192)")
    ap.add_argument("--python", help="use this interpreter (must have the pinned versions) instead of .venv-bench")
    ap.add_argument("--json", type=Path, help="also write both reports to this file")
    ap.add_argument("--ort", action="store_true",
                    help="also time ONNX Runtime (CPU): export from transformers, ORT's transformer optimizer, "
                         "length-sorted batches; needs onnxruntime and onnx (scripts/requirements-bench-ort.txt)")
    ap.add_argument("--st-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ort-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.st_worker:
        st_worker(args)
        return
    if args.ort_worker:
        ort_worker(args)
        return
    ensure_environment(args)
    bad = version_mismatches()
    if bad and not args.unpinned:
        raise SystemExit("version mismatch with scripts/requirements-bench.txt: " + ", ".join(bad))
    bins = [b.split("=", 1) if "=" in b else [Path(b).name, b]
            for b in (args.bin or [str(ROOT / "target" / "release" / "tantivy-rerank")])]
    peak = args.peak_tflops or (800.0 if args.device.startswith("cuda") else None)

    model = Path(args.model)
    if args.make_model and not (model / "config.json").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_fixtures.py"), "--full-size",
                        args.make_model, "--out", str(model)], check=True)
    for _, path in bins:
        if not Path(path).exists():
            raise SystemExit(f"{path} not found: run `cargo build --release` (or scripts/build-cuda.sh) first")

    common = ["--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
              "--warmup", str(args.warmup), "--runs", str(args.runs)]
    worker = [sys.executable, __file__, "--st-worker", "--model", str(model), "--threads", str(args.threads),
              "--device", args.device, "--dtype", args.dtype, *common]
    for w in args.workload:
        worker += ["--workload", w]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    print(f"sentence-transformers: {' '.join(worker[2:])}", file=sys.stderr)
    proc = subprocess.run(worker, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"sentence-transformers worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    st = json.loads(proc.stdout.splitlines()[-1])
    ort_report = None
    if args.ort:
        ort_cmd = [arg if arg != "--st-worker" else "--ort-worker" for arg in worker]
        print(f"onnxruntime: {' '.join(ort_cmd[2:])}", file=sys.stderr)
        proc = subprocess.run(ort_cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"onnxruntime worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        ort_report = json.loads(proc.stdout.splitlines()[-1])

    ours_all = []
    failures = []
    for label, path in bins:
        ours_cmd = [path, "bench", "--model", str(model), "--threads", str(args.threads),
                    "--device", args.device, "--dtype", args.dtype, "--json", *common, *args.bench_args.split()]
        for w in args.workload:
            ours_cmd += ["--workload", w]
        print(f"tantivy-rerank ({label}): {' '.join(ours_cmd)}", file=sys.stderr)
        proc = subprocess.run(ours_cmd, capture_output=True, text=True,
                              env=dict(os.environ, RAYON_NUM_THREADS=str(args.threads)))
        if proc.returncode != 0:
            # Keep going: the other binaries' and ST's numbers are still worth reporting.
            failures.append(f"tantivy-rerank ({label}) failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
            print(failures[-1], file=sys.stderr)
            continue
        ours_all.append((label, json.loads(proc.stdout)))

    import sentence_transformers
    import torch
    import transformers

    print(f"\nmodel {model} | device {args.device} {args.dtype} | threads {args.threads} | "
          f"batch {args.batch_size} | max_length {args.max_length} (ST resolved {st['max_length']}) | "
          f"{args.warmup} warm-up + {args.runs} measured runs, median")
    print(f"sentence-transformers {sentence_transformers.__version__}, transformers {transformers.__version__}, "
          f"torch {torch.__version__} (attention: {st['attn_implementation']}, parameters {st['param_dtype']}, "
          f"{st['torch_threads']} threads)" + ("" if not bad else f"; unpinned: {', '.join(bad)}"))
    if ort_report:
        print(f"onnxruntime {ort_report['onnxruntime']}: {ort_report['optimizer']}; export reproduces "
              f"transformers to max |logit diff| {ort_report['max_abs_logit_diff']:.2e}")
    for label, ours in ours_all:
        print(f"ours ({label}): {ours['family']} {ours['device']} {ours['dtype']}, {ours['threads']} threads, "
              f"max_length {ours['max_length']}, max_batch_tokens {ours['max_batch_tokens']}")
    floor_note = f", floor at {peak:g} TFLOP/s" if peak else ""
    print(f"{'workload':28} {'side':16} {'pairs/s':>9} {'ratio':>6} {'p50 ms':>9} {'p95 ms':>9} "
          f"{'run ms':>9} {'floor ms':>9} {'/floor':>7}   (ratio = pairs/s over ST's{floor_note})")
    rows = []
    for k, s_w in enumerate(st["workloads"]):
        pairs = sum(len(p) for _, p in load_workload(args.workload[k]))
        floor_ms = s_w["forward_tflop_per_run"] / peak * 1e3 if peak else None

        def line(side: str, w: dict, ratio: float | None) -> None:
            run_ms = pairs / w["median_pairs_per_s"] * 1e3
            fl = f"{floor_ms:9.2f} {run_ms / floor_ms:6.1f}x" if floor_ms else f"{'-':>9} {'-':>7}"
            rt = f"{ratio:5.2f}x" if ratio is not None else f"{'-':>6}"
            print(f"{s_w['name']:28} {side:16} {w['median_pairs_per_s']:9.2f} {rt} {w['latency_p50_ms']:9.2f} "
                  f"{w['latency_p95_ms']:9.2f} {run_ms:9.2f} {fl}")

        line("ST", s_w, None)
        ort_w = ort_report["workloads"][k] if ort_report else None
        if ort_w:
            line("ORT", ort_w, ort_w["median_pairs_per_s"] / s_w["median_pairs_per_s"])
        for label, ours in ours_all:
            o = ours["workloads"][k]
            ratio = o["median_pairs_per_s"] / s_w["median_pairs_per_s"]
            line(f"ours {label}", o, ratio)
            if ort_w:
                print(f"{'':28} {'':16} ours / ORT: {o['median_pairs_per_s'] / ort_w['median_pairs_per_s']:.2f}x")
            split = o["split"]
            print(f"{'':28} {'':16} split: tokenize {split['tokenize_ms']:.1f} ms, sort {split['sort_ms']:.2f} ms, "
                  f"forward {split['forward_ms']:.1f} ms, other {split['other_ms']:.1f} ms")
            rows.append({"workload": s_w["name"], "bin": label, "st_pairs_per_s": s_w["median_pairs_per_s"],
                         "ort_pairs_per_s": ort_w["median_pairs_per_s"] if ort_w else None,
                         "ours_pairs_per_s": o["median_pairs_per_s"], "ratio": ratio,
                         "st_p50_ms": s_w["latency_p50_ms"], "ours_p50_ms": o["latency_p50_ms"],
                         "forward_tflop_per_run": s_w["forward_tflop_per_run"], "floor_ms": floor_ms})
        print(f"{'':28} {'':16} forward work {s_w['forward_tflop_per_run'] * 1e3:.1f} GFLOP per run ({pairs} pairs)")
    mem = f"peak RSS: sentence-transformers {st['peak_rss_mib']:.0f} MiB" + (
        f", ORT {ort_report['peak_rss_mib']:.0f} MiB" if ort_report else "") + "".join(
        f", ours ({label}) {ours['peak_rss_mib']:.0f} MiB" for label, ours in ours_all)
    if st.get("peak_device_mib") is not None:
        mem += f"; peak device memory: ST {st['peak_device_mib']:.0f} MiB (torch allocated)" + "".join(
            f", ours ({label}) {ours.get('peak_device_mib') or float('nan'):.0f} MiB (in use, context included)"
            for label, ours in ours_all)
    print(mem)
    if args.json:
        args.json.write_text(json.dumps({"sentence_transformers": st, "onnxruntime": ort_report,
                                         "ours": dict(ours_all), "rows": rows,
                                         "peak_tflops": peak, "failures": failures}, indent=1) + "\n")
    if failures:
        raise SystemExit(f"{len(failures)} of {len(bins)} binaries failed (see above)")


if __name__ == "__main__":
    main()
