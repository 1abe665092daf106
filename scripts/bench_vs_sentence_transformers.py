#!/usr/bin/env python3
"""Side-by-side speed and ranking agreement of `tantivy-rerank bench`, sentence-transformers and ONNX Runtime.

Every peer scores the same workload files with the same model directory, batch size, max
length, thread count and device, one after the other in the same run, each in its own process
(so each peer's peak RSS is its own). The peers (``--peers``, comma-separated):

  ours-f32, ours-bf16 (ours-f16)  our bench binary with ``--dtype``; each ``--bin`` runs them all
  st-f32, st-bf16 (st-f16)        sentence-transformers' CrossEncoder.predict, the weights loaded
                                  with ``model_kwargs={"dtype": torch.bfloat16}`` (transformers 5)
  ort-f32, ort-int8               ONNX Runtime on the CPU: the model exported from transformers,
                                  ORT's transformer optimizer (BERT fusions), for int8 then
                                  ``quantize_dynamic`` (per-channel QInt8 weights, activations
                                  quantized on the fly), length-sorted batches

Default: all six on the CPU, ours and ST in f32 and bf16 on CUDA (ONNX Runtime is CPU-only
here). Without ``--peers``, an explicit ``--dtype D`` keeps the old pairing (ours-D and st-D)
and ``--ort`` adds ort-f32 to any selection.

For every workload it prints pairs/s, p50 and p95 latency per query, peak RSS, and the ratio
pairs/s / ST's (ST f32 when it ran, else the first ST peer), and, from the per-pair scores of
each peer's last measured run, Kendall's tau-b of every query's scores and the top-10 overlap
(how many of the reference's first 10 are in the peer's first 10, and whether the two top-10
lists are identical in order) against two references: the f32 run of the same family (ours bf16
vs ours f32 of the same binary, ST bf16 vs ST f32, ORT int8 vs ORT f32) and ST f32. Our bench
does not print per-pair scores, so our scores come from an untimed ``tantivy-rerank score`` of
the workload's pairs with the same model, dtype, device, batch size and max length (only for
the ours peers that have something to be compared with). Several queries in a workload: the mean
tau-b and mean overlap over the queries, and how many queries have the identical top 10.

Python side: ``torch.set_num_threads(threads)``, ``CrossEncoder(model, device, max_length)``
(``model_kwargs={"dtype": ...}`` for f16/bf16; the dtype of its parameters is printed), one
``predict(pairs, batch_size)`` per query; warm-up runs are excluded and the median run is
reported, exactly as our `bench` does. For ST in bf16/f16 on the CPU it also prints what
oneDNN reports for a small bf16 linear layer and attention in a subprocess (``ONEDNN_VERBOSE=1``:
the ISA and the matmul implementation, e.g. ``brg_matmul:avx10_1_512_amx``).

Versions are pinned in ``scripts/requirements-bench.txt`` and ``requirements-bench-ort.txt``.
Unless ``--python`` is given, the script creates ``.venv-bench`` from those files on first use
and re-runs itself inside it. ``--unpinned`` instead runs with the current interpreter's
packages as they are (the GPU machine has its own torch build and no network); the versions
used are printed either way.

``--bin`` may be repeated as ``LABEL=PATH`` (e.g. ``cuda=...`` and ``flash-attn=...``):
the Python peers run once and every binary is compared with them. Without ``--bin`` and
without ours peers named in ``--peers``, a missing target/release/tantivy-rerank only skips
the ours peers (said on stderr and under the table); a named one must exist.

FLOP floor: the forward FLOPs of every pair are counted from the model's config and the
tokenized lengths (linear layers 2*tokens*in*out, attention 4*len*keys*hidden with keys
limited to the window on ModernBERT's local layers; no padding) and divided by
``--peak-tflops`` (default 800 on CUDA: H100 dense bf16; none on the CPU). The table shows
the time of one run of the workload at that rate and run / floor.

Usage (from the project root, release binary built with ``cargo build --release``)::

    python3 scripts/bench_vs_sentence_transformers.py --model DIR \\
        --workload ../shared/bench/workload_1x100.json \\
        --workload ../shared/bench/workload_scifact_1x100.json \\
        [--make-model minilm-l6|modernbert-base|modernbert-large|mbert-2label] \\
        [--peers ours-f32,ours-bf16,st-f32,st-bf16,ort-f32,ort-int8] [--ort] \\
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
import shutil
import statistics
import subprocess
import sys
import tempfile
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


def workload_flops(tokenizer, config: dict, queries: list, max_length: int) -> float:
    """Forward FLOPs of one run over `queries` (every pair tokenized as the model sees it)."""
    flops = 0.0
    for q, passages in queries:
        enc = tokenizer([q] * len(passages), passages, truncation=True, max_length=max_length)
        flops += sum(forward_flops(config, len(ids)) for ids in enc["input_ids"])
    return flops


def time_workload(path: str, queries: list, score, args: argparse.Namespace) -> dict:
    """`args.warmup` uncounted and `args.runs` counted passes over `queries`, one `score(q, passages)`
    call per query plus the ranking by head score, as our bench does; the median run, and the head
    score of every pair in the last pass (`scores`, one list per query)."""
    runs = []
    scored = []
    for r in range(args.warmup + args.runs):
        latencies = []
        scored = []
        start = time.perf_counter()
        for q, passages in queries:
            t = time.perf_counter()
            scores = head_scores(score(q, passages))
            sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
            latencies.append((time.perf_counter() - t) * 1e3)
            scored.append(scores)
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
        "scores": [[float(x) for x in s] for s in scored],
    }


# A bf16/f16 linear layer and attention of MiniLM's sizes, run with ONEDNN_VERBOSE=1: which
# implementation oneDNN picks on this CPU (brg_matmul:..._amx means AMX tiles).
ONEDNN_PROBE = """
import torch
torch.set_num_threads({threads})
dt = getattr(torch, {dtype!r})
x, w, b = torch.randn(64, 384).to(dt), torch.randn(1536, 384).to(dt), torch.randn(1536).to(dt)
torch.nn.functional.linear(x, w, b)
q = torch.randn(2, 12, 64, 32).to(dt)
torch.nn.functional.scaled_dot_product_attention(q, q, q)
"""


def onednn_probe(threads: int, dtype: str) -> dict:
    """What oneDNN says it runs for ONEDNN_PROBE in `dtype`, from a subprocess."""
    code = ONEDNN_PROBE.format(threads=threads, dtype={"bf16": "bfloat16", "f16": "float16"}[dtype])
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, ONEDNN_VERBOSE="1"))
    except (OSError, subprocess.SubprocessError) as e:
        return {"error": str(e)}
    isa, impls = None, []
    for line in proc.stdout.splitlines():
        if not line.startswith("onednn_verbose"):
            continue
        if isa is None and "isa:" in line:
            isa = line.split("isa:", 1)[1].strip()
        f = line.split(",")
        if "exec" in f:
            i = f.index("exec")
            impl = " ".join(x for x in f[i + 2:i + 4] if x)
            if impl and impl not in impls:
                impls.append(impl)
    return {"isa": isa, "implementations": impls, "returncode": proc.returncode}


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
    # Parameters per dtype (some architectures keep a few modules in f32).
    by_dtype: dict[str, int] = {}
    for prm in model.model.parameters():
        name = str(prm.dtype).replace("torch.", "")
        by_dtype[name] = by_dtype.get(name, 0) + prm.numel()
    out = {"workloads": [], "dtype": args.dtype, "torch_threads": torch.get_num_threads(),
           "attn_implementation": getattr(model.model.config, "_attn_implementation", None),
           "param_dtype": str(next(model.model.parameters()).dtype).replace("torch.", ""),
           "param_numel_by_dtype": by_dtype, "max_length": model.max_length,
           "mkldnn_available": torch.backends.mkldnn.is_available()}
    cpu = getattr(torch.backends, "cpu", None)
    if cpu is not None and hasattr(cpu, "get_cpu_capability"):
        out["cpu_capability"] = cpu.get_cpu_capability()
    if args.device == "cpu" and args.dtype != "f32":
        out["onednn_probe"] = onednn_probe(args.threads, args.dtype)
    for path in args.workload:
        queries = load_workload(path)
        flops = workload_flops(model.tokenizer, config, queries, model.max_length)

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


def ort_export(hf, tok, config: dict, max_length: int, workdir: Path) -> tuple[Path, str, list[str]]:
    """The model exported to ONNX from transformers and optimised with ONNX Runtime's transformer
    optimizer (BERT fusions; plain graph optimisations for other architectures), written once into
    `workdir` and reused by the next ORT worker of the same run: (path, what the optimizer did,
    input names)."""
    import torch

    meta = workdir / "export.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        return workdir / m["file"], m["optimizer"], m["names"]
    raw_path, opt_path = workdir / "model.onnx", workdir / "model.opt.onnx"
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
    meta.write_text(json.dumps({"file": opt_path.name, "optimizer": fused, "names": names}))
    return opt_path, fused, names


def ort_quantize(src: Path, workdir: Path) -> tuple[Path, str]:
    """`src` with dynamic int8 quantization (onnxruntime.quantization.quantize_dynamic): weights
    int8 per output channel (QInt8), activations quantized (uint8) on the fly per call; ops the
    quantizer does not know stay f32. Returns the path and the quantized op counts."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst = workdir / (src.stem + ".int8.onnx")
    if not dst.exists():
        # ONNX shape inference gives no type to the outputs of ORT's fused ops (com.microsoft
        # domain: BiasGelu, SkipLayerNormalization, ...), which the MatMuls after them read:
        # those tensors are f32.
        quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    counts: dict[str, int] = {}
    for node in onnx.load(str(dst)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    quantized = {k: v for k, v in counts.items() if "Integer" in k or "Quant" in k or k.startswith("Q")}
    left_f32 = {k: v for k, v in counts.items() if k in ("MatMul", "Gemm", "Attention")}
    return dst, ("quantize_dynamic per_channel=True weight_type=QInt8: "
                 + ", ".join(f"{k} {v}" for k, v in sorted(quantized.items()))
                 + ("; still f32: " + ", ".join(f"{k} {v}" for k, v in sorted(left_f32.items())) if left_f32 else ""))


def ort_worker(args: argparse.Namespace) -> None:
    """Runs in its own process: ONNX Runtime on the CPU with the model of `ort_export` (f32) or its
    dynamic int8 quantization (`ort_quantize`), checked against transformers' logits (f32 must
    agree to 1e-3; int8's difference is reported), then timed on length-sorted batches (padded per
    batch) with `threads` intra-op threads. Prints one JSON line."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.model)
    hf = AutoModelForSequenceClassification.from_pretrained(args.model).eval()
    config = json.loads((Path(args.model) / "config.json").read_text())
    max_length = min(args.max_length, config.get("max_position_embeddings", args.max_length))
    workdir = Path(args.ort_dir) if args.ort_dir else Path(tempfile.mkdtemp(prefix="ort-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    model_path, fused, names = ort_export(hf, tok, config, max_length, workdir)
    quantization = None
    if args.ort_variant == "int8":
        model_path, quantization = ort_quantize(model_path, workdir)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])

    def run(pairs: list[tuple[str, str]]) -> np.ndarray:
        enc = tok([q for q, _ in pairs], [p for _, p in pairs], truncation=True, max_length=max_length)
        order = sorted(range(len(pairs)), key=lambda i: len(enc["input_ids"][i]))
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

    # The export must reproduce transformers before it is timed (int8: reported, not required).
    first_q, first_p = load_workload(args.workload[0])[0]
    check = [(first_q, p) for p in first_p[:8]]
    with torch.no_grad():
        enc = tok([q for q, _ in check], [p for _, p in check], truncation=True, max_length=max_length,
                  padding=True, return_tensors="pt")
        want = hf(**enc).logits.float().numpy()
    got = run(check)
    max_diff = float(np.abs(got - want).max())
    if args.ort_variant == "f32" and not max_diff < 1e-3:
        raise SystemExit(f"the ONNX export does not reproduce transformers: max |logit diff| {max_diff}")
    out = {"workloads": [], "variant": args.ort_variant, "max_abs_logit_diff": max_diff, "optimizer": fused,
           "quantization": quantization, "model_mib": model_path.stat().st_size / 2**20,
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


PEERS = ["ours-f32", "ours-bf16", "ours-f16", "st-f32", "st-bf16", "st-f16", "ort-f32", "ort-int8"]
SIDE = {"ours": "ours", "st": "ST", "ort": "ORT"}


def select_peers(args: argparse.Namespace) -> tuple[list[str], bool]:
    """The peers of this run in PEERS order, and whether ours were asked for by name (--peers or
    --bin), in which case a missing binary is an error rather than a skip."""
    if args.peers:
        names = [p.strip().lower() for p in args.peers.split(",") if p.strip()]
        unknown = [p for p in names if p not in PEERS]
        if unknown:
            raise SystemExit(f"unknown peer(s) {', '.join(unknown)}: choose from {', '.join(PEERS)}")
        if args.dtype:
            print(f"note: --dtype {args.dtype} is ignored with --peers (each peer names its dtype)", file=sys.stderr)
    elif args.dtype:
        names = [f"ours-{args.dtype}", f"st-{args.dtype}"]
    elif args.device == "cpu":
        names = ["ours-f32", "ours-bf16", "st-f32", "st-bf16", "ort-f32", "ort-int8"]
    else:
        names = ["ours-f32", "ours-bf16", "st-f32", "st-bf16"]
    if args.ort:
        names.append("ort-f32")
    named_ours = bool(args.bin) or bool(args.peers and any(p.startswith("ours-") for p in names))
    return [p for p in PEERS if p in names], named_ours


def agreement(ref: list[list[float]], got: list[list[float]], same_scale: bool) -> dict:
    """Kendall's tau-b of every query's scores and the overlap of its top 10 (ties broken by
    position), `got` against `ref`; means over the queries. `same_scale`: the two are the same
    kind of score (same family), so their largest difference means something too (across
    families it does not: ST applies the model's activation, ORT's are logits, ours the head's)."""
    if str(ROOT / "scripts") not in sys.path:
        sys.path.insert(0, str(ROOT / "scripts"))
    from gpu_parity import kendall_tau_b, ranking  # the same tau-b and tie order as the GPU parity proof

    taus, overlaps, identical, diffs = [], [], 0, []
    k = 10
    for r, g in zip(ref, got):
        if len(r) != len(g):
            raise ValueError(f"{len(g)} scores against {len(r)}")
        k = min(10, len(r))
        rr, gr = ranking(r)[:k], ranking(g)[:k]
        taus.append(kendall_tau_b(r, g))
        overlaps.append(len(set(rr) & set(gr)))
        identical += rr == gr
        diffs += [abs(a - b) for a, b in zip(r, g)]
    return {"kendall_tau_b": statistics.mean(taus), "kendall_tau_b_min": min(taus),
            "top10_overlap": statistics.mean(overlaps), "top_k": k, "top10_identical": identical,
            "queries": len(taus), "max_abs_score_diff": max(diffs) if diffs and same_scale else None}


def ours_scores(binary: str, args: argparse.Namespace, dtype: str, tmp: Path) -> list[list[list[float]]]:
    """Per-pair scores of our binary for every workload (one list per query), from an untimed
    `tantivy-rerank score` of the workload's pairs: our bench prints no scores."""
    extra, rest = [], args.bench_args.split()
    for i, a in enumerate(rest):  # the bench options that `score` also has
        if a in ("--kernels", "--truncation") and i + 1 < len(rest):
            extra += [a, rest[i + 1]]
        elif a.startswith(("--kernels=", "--truncation=")):
            extra.append(a)
    out = []
    for n, path in enumerate(args.workload):
        queries = load_workload(path)
        pairs = tmp / f"pairs-{n}.jsonl"
        pairs.write_text("".join(json.dumps({"query": q, "document": p}) + "\n" for q, ps in queries for p in ps))
        cmd = [binary, "score", "--model", args.model, "--input", str(pairs), "--device", args.device,
               "--dtype", dtype, "--batch-size", str(args.batch_size), "--max-length", str(args.max_length), *extra]
        print(f"  scores: {' '.join(cmd)}", file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              env=dict(os.environ, RAYON_NUM_THREADS=str(args.threads)))
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        flat = [json.loads(line)["score"] for line in proc.stdout.splitlines() if line.strip()]
        want = sum(len(ps) for _, ps in queries)
        if len(flat) != want:
            raise RuntimeError(f"{' '.join(cmd)}: {len(flat)} scores for {want} pairs")
        per_query, at = [], 0
        for _, ps in queries:
            per_query.append(flat[at:at + len(ps)])
            at += len(ps)
        out.append(per_query)
    return out


def warnings_of(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.splitlines() if "warn" in line.lower()][:5]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="model directory (every peer loads it)")
    ap.add_argument("--make-model", choices=["minilm-l6", "modernbert-base", "modernbert-large", "mbert-2label"],
                    help="create --model as a full-size random model of this kind if missing")
    ap.add_argument("--workload", action="append", required=True, help="workload JSON (repeatable)")
    ap.add_argument("--peers",
                    help="comma-separated peers to run: " + ", ".join(PEERS) + " (default: "
                         "ours-f32,ours-bf16,st-f32,st-bf16,ort-f32,ort-int8 on the CPU, the ours and st ones "
                         "on CUDA; with --dtype D and no --peers: ours-D,st-D)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cuda:0); ONNX Runtime always runs on the CPU")
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"],
                    help="without --peers: run ours and ST in this dtype only (the script's behaviour before --peers)")
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
    ap.add_argument("--json", type=Path, help="also write every report, the scores and the table rows to this file")
    ap.add_argument("--ort", action="store_true",
                    help="add the ort-f32 peer to the selection: export from transformers, ORT's transformer "
                         "optimizer, length-sorted batches; needs onnxruntime and onnx "
                         "(scripts/requirements-bench-ort.txt)")
    ap.add_argument("--st-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ort-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ort-variant", default="f32", choices=["f32", "int8"], help=argparse.SUPPRESS)
    ap.add_argument("--ort-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.st_worker:
        args.dtype = args.dtype or "f32"
        st_worker(args)
        return
    if args.ort_worker:
        ort_worker(args)
        return
    ensure_environment(args)
    bad = version_mismatches()
    if bad and not args.unpinned:
        raise SystemExit("version mismatch with scripts/requirements-bench.txt: " + ", ".join(bad))
    peers, named_ours = select_peers(args)
    bins = [b.split("=", 1) if "=" in b else [Path(b).name, b]
            for b in (args.bin or [str(ROOT / "target" / "release" / "tantivy-rerank")])]
    peak = args.peak_tflops or (800.0 if args.device.startswith("cuda") else None)

    model = Path(args.model)
    if args.make_model and not (model / "config.json").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_fixtures.py"), "--full-size",
                        args.make_model, "--out", str(model)], check=True)
    skipped = []
    missing = [path for _, path in bins if not Path(path).exists()]
    if missing and any(p.startswith("ours-") for p in peers):
        if named_ours:
            raise SystemExit(f"{missing[0]} not found: run `cargo build --release` (or scripts/build-cuda.sh) first")
        skipped.append(f"SKIPPED {', '.join(p for p in peers if p.startswith('ours-'))}: {missing[0]} not found "
                       f"(run `cargo build --release` first); only the Python peers ran")
        print(skipped[-1], file=sys.stderr)
        peers = [p for p in peers if not p.startswith("ours-")]
    if not peers:
        raise SystemExit("no peer to run")

    common = ["--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
              "--warmup", str(args.warmup), "--runs", str(args.runs)]
    worker = [sys.executable, __file__, "--model", str(model), "--threads", str(args.threads),
              "--device", args.device, *common]
    for w in args.workload:
        worker += ["--workload", w]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    tmp = Path(tempfile.mkdtemp(prefix="bench-vs-st-"))
    try:
        run_all(args, peers, bins, worker, common, env, tmp, peak, bad, skipped)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_all(args, peers, bins, worker, common, env, tmp: Path, peak, bad, skipped) -> None:
    # Every run: family (st/ort/ours), dtype (or int8), bin label (ours), side (table name),
    # report, scores (per workload, per query, per pair: head scores).
    runs: list[dict] = []
    failures: list[str] = []
    for peer in peers:
        family, dtype = peer.split("-", 1)
        if family == "ours":
            continue
        if family == "st":
            cmd = [worker[0], worker[1], "--st-worker", "--dtype", dtype, *worker[2:]]
        else:
            cmd = [worker[0], worker[1], "--ort-worker", "--ort-variant", dtype, "--ort-dir", str(tmp / "ort"),
                   *worker[2:]]
        name = f"{SIDE[family]} {dtype}"
        print(f"{name}: {' '.join(cmd[2:])}", file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            failures.append(f"{name} worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
            print(failures[-1], file=sys.stderr)
            continue
        report = json.loads(proc.stdout.splitlines()[-1])
        runs.append({"family": family, "dtype": dtype, "bin": None, "side": name, "report": report,
                     "scores": [w.pop("scores") for w in report["workloads"]]})

    ours_dtypes = [p.split("-", 1)[1] for p in peers if p.startswith("ours-")]
    for label, path in (bins if ours_dtypes else []):
        for dtype in ours_dtypes:
            ours_cmd = [path, "bench", "--model", str(args.model), "--threads", str(args.threads),
                        "--device", args.device, "--dtype", dtype, "--json", *common, *args.bench_args.split()]
            for w in args.workload:
                ours_cmd += ["--workload", w]
            side = f"ours {dtype}" if len(bins) == 1 else f"ours {label} {dtype}"
            print(f"{side}: {' '.join(ours_cmd)}", file=sys.stderr)
            proc = subprocess.run(ours_cmd, capture_output=True, text=True,
                                  env=dict(os.environ, RAYON_NUM_THREADS=str(args.threads)))
            if proc.returncode != 0:
                # Keep going: the other peers' numbers are still worth reporting.
                failures.append(f"tantivy-rerank ({label}, {dtype}) failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
                print(failures[-1], file=sys.stderr)
                continue
            report = json.loads(proc.stdout)
            report["stderr_warnings"] = warnings_of(proc.stderr)
            runs.append({"family": "ours", "dtype": dtype, "bin": label, "path": path, "side": side,
                         "report": report, "scores": None})

    def find(family: str, dtype: str, label=None) -> dict | None:
        return next((r for r in runs if r["family"] == family and r["dtype"] == dtype and r["bin"] == label), None)

    st_ref = find("st", "f32")
    for r in runs:
        r["family_ref"] = None if r["dtype"] == "f32" else find(r["family"], "f32", r["bin"])
    # Our scores cost an extra (untimed) pass: only for runs with something to compare against.
    for r in runs:
        if r["family"] != "ours":
            continue
        family_peers = [x for x in runs if x["family"] == "ours" and x["bin"] == r["bin"] and x is not r]
        wanted = st_ref is not None or r["family_ref"] is not None or (
            r["dtype"] == "f32" and any(x["dtype"] != "f32" for x in family_peers))
        if wanted:
            print(f"{r['side']}: per-pair scores with `score` (untimed)", file=sys.stderr)
            try:
                r["scores"] = ours_scores(r["path"], args, r["dtype"], tmp)
            except RuntimeError as e:
                failures.append(f"{r['side']} scores: {e}")
                print(failures[-1], file=sys.stderr)

    def compare(ref: dict | None, r: dict, k: int) -> dict | None:
        if ref is None or ref is r or not ref.get("scores") or not r.get("scores"):
            return None
        return agreement(ref["scores"][k], r["scores"][k], ref["family"] == r["family"])

    import sentence_transformers
    import torch
    import transformers

    st_runs = [r for r in runs if r["family"] == "st"]
    ort_runs = [r for r in runs if r["family"] == "ort"]
    ours_runs = [r for r in runs if r["family"] == "ours"]
    base = st_ref or (st_runs[0] if st_runs else None)
    resolved = f" (ST resolved {st_runs[0]['report']['max_length']})" if st_runs else ""
    print(f"\nmodel {args.model} | device {args.device} | threads {args.threads} | batch {args.batch_size} | "
          f"max_length {args.max_length}{resolved} | {args.warmup} warm-up + {args.runs} measured runs, median | "
          f"peers {', '.join(peers)}")
    print(f"sentence-transformers {sentence_transformers.__version__}, transformers {transformers.__version__}, "
          f"torch {torch.__version__}" + (f", onnxruntime {ort_runs[0]['report']['onnxruntime']}" if ort_runs else "")
          + ("" if not bad else f"; unpinned: {', '.join(bad)}"))
    for r in st_runs:
        s = r["report"]
        params = ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in s["param_numel_by_dtype"].items())
        line = (f"{r['side']}: attention {s['attn_implementation']}, parameters {params}, {s['torch_threads']} threads, "
                f"mkldnn {'available' if s['mkldnn_available'] else 'unavailable'}, cpu capability "
                f"{s.get('cpu_capability')}")
        probe = s.get("onednn_probe")
        if probe:
            line += (f"; oneDNN probe ({r['dtype']} linear + attention): isa {probe.get('isa')}, "
                     f"{', '.join(probe.get('implementations') or []) or 'no oneDNN primitive ran'}")
        print(line)
        want = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}[r["dtype"]]
        if s["param_dtype"] != want:
            print(f"WARNING: {r['side']} asked for {want} but its parameters are {s['param_dtype']}")
    for r in ort_runs:
        o = r["report"]
        print(f"{r['side']}: {o['optimizer']}" + (f"; {o['quantization']}" if o.get("quantization") else "")
              + f"; model file {o['model_mib']:.0f} MiB; max |logit diff| vs transformers f32 on 8 pairs "
              f"{o['max_abs_logit_diff']:.2e}" + (" (must be < 1e-3)" if r["dtype"] == "f32" else ""))
    for r in ours_runs:
        o = r["report"]
        got = o["dtype"]
        note = "" if got == r["dtype"] else f" -- asked for {r['dtype']}, the binary reports {got}"
        print(f"{r['side']} ({r['path']}): {o['family']} {o['device']} dtype {got}{note}, {o['threads']} threads, "
              f"max_length {o['max_length']}, max_batch_tokens {o['max_batch_tokens']}"
              + (f"; stderr: {' | '.join(o['stderr_warnings'])}" if o["stderr_warnings"] else ""))
    for s in skipped:
        print(s)

    floor_note = f", floor at {peak:g} TFLOP/s" if peak else ""
    ratio_note = f"pairs/s over {base['side']}'s" if base else "no ST peer ran"
    print(f"{'':28} {'':16} {'':>9} {'':>6} {'':>9} {'':>9} {'':>9} {'':>9} {'':>7}   "
          f"{'vs f32 of its family':^22}   {'vs ST f32':^22}")
    print(f"{'workload':28} {'side':16} {'pairs/s':>9} {'ratio':>6} {'p50 ms':>9} {'p95 ms':>9} "
          f"{'run ms':>9} {'floor ms':>9} {'/floor':>7} | {'tau-b':>7} {'top10':>7} {'order':>5} | "
          f"{'tau-b':>7} {'top10':>7} {'order':>5}   (ratio = {ratio_note}{floor_note})")

    def agree_cells(a: dict | None, dash: str) -> str:
        if a is None:
            return f"{dash:>7} {'':>7} {'':>5}"
        n = a["queries"]
        top = f"{a['top10_overlap']:.0f}/{a['top_k']}" if n == 1 else f"{a['top10_overlap']:.1f}/{a['top_k']}"
        order = ("same" if a["top10_identical"] else "diff") if n == 1 else f"{a['top10_identical']}/{n}"
        return f"{a['kendall_tau_b']:7.4f} {top:>7} {order:>5}"

    tokenizer = None
    rows = []
    for k, path in enumerate(args.workload):
        queries = load_workload(path)
        pairs = sum(len(p) for _, p in queries)
        name = Path(path).stem
        if st_runs:
            tflop = st_runs[0]["report"]["workloads"][k]["forward_tflop_per_run"]
        else:
            from transformers import AutoTokenizer

            config = json.loads((Path(args.model) / "config.json").read_text())
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(args.model)
            tflop = workload_flops(tokenizer, config, queries,
                                   min(args.max_length, config.get("max_position_embeddings", args.max_length))) / 1e12
        floor_ms = tflop / peak * 1e3 if peak else None
        base_w = base["report"]["workloads"][k] if base else None
        ort_f32 = find("ort", "f32")
        for r in st_runs + ort_runs + ours_runs:
            w = r["report"]["workloads"][k]
            run_ms = pairs / w["median_pairs_per_s"] * 1e3
            ratio = w["median_pairs_per_s"] / base_w["median_pairs_per_s"] if base_w and r is not base else None
            fl = f"{floor_ms:9.2f} {run_ms / floor_ms:6.1f}x" if floor_ms else f"{'-':>9} {'-':>7}"
            rt = f"{ratio:5.2f}x" if ratio is not None else f"{'-':>6}"
            fam = compare(r["family_ref"], r, k)
            vs_st = compare(st_ref, r, k)
            fam_dash = "-" if r["dtype"] == "f32" else ("no ref" if r["family_ref"] is None else "n/a")
            st_dash = "ref" if r is st_ref else ("no ref" if st_ref is None else "n/a")
            print(f"{name:28} {r['side']:16} {w['median_pairs_per_s']:9.2f} {rt} {w['latency_p50_ms']:9.2f} "
                  f"{w['latency_p95_ms']:9.2f} {run_ms:9.2f} {fl} | {agree_cells(fam, fam_dash)} | "
                  f"{agree_cells(vs_st, st_dash)}")
            if r["family"] == "ours":
                if ort_f32:
                    print(f"{'':28} {'':16} ours / ORT f32: "
                          f"{w['median_pairs_per_s'] / ort_f32['report']['workloads'][k]['median_pairs_per_s']:.2f}x")
                split = w["split"]
                print(f"{'':28} {'':16} split: tokenize {split['tokenize_ms']:.1f} ms, sort {split['sort_ms']:.2f} ms, "
                      f"forward {split['forward_ms']:.1f} ms, other {split['other_ms']:.1f} ms")
            rows.append({"workload": name, "side": r["side"], "family": r["family"], "dtype": r["dtype"],
                         "bin": r["bin"], "dtype_reported": r["report"].get("dtype"),
                         "pairs_per_s": w["median_pairs_per_s"], "ratio": ratio,
                         "ratio_base": base["side"] if base else None,
                         "p50_ms": w["latency_p50_ms"], "p95_ms": w["latency_p95_ms"],
                         "peak_rss_mib": r["report"].get("peak_rss_mib"),
                         "vs_family_f32": fam, "vs_st_f32": vs_st,
                         "forward_tflop_per_run": tflop, "floor_ms": floor_ms})
        print(f"{'':28} {'':16} forward work {tflop * 1e3:.1f} GFLOP per run ({pairs} pairs)")
    print("peak RSS: " + ", ".join(f"{r['side']} {r['report']['peak_rss_mib']:.0f} MiB" for r in runs
                                   if r["report"].get("peak_rss_mib") is not None))
    if any(r["report"].get("peak_device_mib") is not None for r in runs):
        print("peak device memory: " + ", ".join(
            f"{r['side']} {r['report']['peak_device_mib']:.0f} MiB"
            + (" (torch allocated)" if r["family"] == "st" else " (in use, context included)")
            for r in runs if r["report"].get("peak_device_mib") is not None))
    for f in failures:
        print("FAILED: " + f.splitlines()[0])
    if args.json:
        def plain(r: dict) -> dict:
            return {"side": r["side"], "family": r["family"], "dtype": r["dtype"], "bin": r["bin"],
                    "report": r["report"], "scores": r["scores"]}

        args.json.write_text(json.dumps({
            "peers": [plain(r) for r in runs], "rows": rows, "peak_tflops": peak, "failures": failures,
            "skipped": skipped,
            "versions": {"sentence_transformers": sentence_transformers.__version__,
                         "transformers": transformers.__version__, "torch": torch.__version__,
                         "onnxruntime": ort_runs[0]["report"]["onnxruntime"] if ort_runs else None},
            # The shape of the reports before --peers, for older readers of this file.
            "sentence_transformers": base["report"] if base else None,
            "onnxruntime": ort_f32["report"] if (ort_f32 := find("ort", "f32")) else None,
            "ours": {r["bin"]: r["report"] for r in reversed(ours_runs)},
        }, indent=1) + "\n")
    if failures:
        raise SystemExit(f"{len(failures)} peer run(s) failed (see above)")


if __name__ == "__main__":
    main()
