#!/usr/bin/env bash
# Issue 5's proof on a GPU machine (H100), prepared here and run there in as few calls as possible.
#
#   scripts/gpu-proof.sh prepare          # here: fills .gpu-proof/ (git-ignored), the folder to carry
#   scripts/gpu-proof.sh run [PHASE...]   # there, from the repo root; PHASE: models parity speed
#                                         # articles sweep (default: all, in that order)
#
# prepare (no GPU needed): compresses the CUDA binaries built by scripts/build-cuda.sh
# (.cuda-bin/tantivy-rerank-cuda and, if built, -flash-attn) with xz, copies the few files of
# ../shared the run needs (the ModernBERT and multilingual-BERT tokenizers and configs, the
# bench workloads; ../shared itself does not travel), and writes the long-document workload
# (1 query x 16 articles of >= 8,192 tokens, scripts/make_article_workload.py; it needs the
# `tokenizers` package: PYTHON=.venv-bench/bin/python picks an interpreter). It prints the
# size of what travels and fails if it reaches the 64 MiB one device call carries.
#
# run (on the GPU machine: torch, transformers and sentence-transformers installed, no Rust,
# no network). Every phase writes its log and JSON under $GPU_PROOF_RESULTS (default
# ./gpu-proof-out); when $OUT is set (the device tool's folder, which returns at most 8 files)
# the whole folder is also packed into $OUT/gpu-proof-results.tar.gz and all logs into
# $OUT/gpu-proof.log after every phase. A machine stays warm only ~30 s after a call and
# starts bare, so every call carries .gpu-proof and begins with `models`. Phases are cut at
# $GPU_PROOF_DEADLINE seconds after `run` starts (default 570, inside the 600 s a command
# may run), and the ones left are skipped, so what finished always comes back:
#   models   full-size random models made there by scripts/make_fixtures.py --full-size:
#            modernbert-base (1 label), modernbert-large (3 labels), mbert-2label (vocab.txt only).
#            Skipped for a model that already exists.
#   parity   scripts/gpu_parity.py on the 100 candidates of workload_1x100 for each model:
#            ours CPU f32 (reference) vs ours CUDA f32 / bf16 (each binary) and transformers
#            f32 / bf16 on the GPU.
#   speed    scripts/bench_vs_sentence_transformers.py, bf16, base and large, workload_1x100 and
#            workload_scifact_1x100, batch 32 and 128, every binary against one ST run.
#   articles 1 query x 16 articles x 8,192 tokens with the large model, ST vs every binary.
#   sweep    ours alone, base, both 1x100 workloads, --max-batch-tokens 4096 ... 65536 (for the
#            CUDA default; 100 x 512 tokens fit in 65536).
# A phase that fails is reported and the next one still runs; the exit status counts failures.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CARRY=$ROOT/.gpu-proof
MODE=${1:-}
[ $# -gt 0 ] && shift

prepare() {
  set -e
  local shared=${TANTIVY_RERANK_SHARED:-$ROOT/../shared}
  rm -rf "$CARRY"
  mkdir -p "$CARRY/bin" "$CARRY/shared/models" "$CARRY/shared/bench"
  local found=0
  for f in cuda flash-attn; do
    if [ -x "$ROOT/.cuda-bin/tantivy-rerank-$f" ]; then
      xz -T2 -9 -c "$ROOT/.cuda-bin/tantivy-rerank-$f" >"$CARRY/bin/tantivy-rerank-$f.xz"
      found=1
    else
      echo "note: .cuda-bin/tantivy-rerank-$f missing: scripts/build-cuda.sh [--flash-attn] builds it" >&2
    fi
  done
  [ $found = 1 ] || { echo "no CUDA binary in .cuda-bin: run scripts/build-cuda.sh first" >&2; exit 1; }
  cp -r "$shared/models/modernbert-tokenizer" "$shared/models/bert-base-multilingual-uncased" \
    "$CARRY/shared/models/"
  cp "$shared"/bench/workload_*.json "$CARRY/shared/bench/"
  "${PYTHON:-python3}" "$ROOT/scripts/make_article_workload.py" --shared "$shared" \
    --out "$CARRY/shared/bench/workload_articles_1x16x8192.json"
  du -ab "$CARRY" | sort -n | tail -12 | awk '{printf "%8.1f MiB  %s\n", $1/1048576, $2}'
  local tree carry
  tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
  carry=$(du -sb "$CARRY" | cut -f1)
  echo "carry .gpu-proof: $carry bytes + working tree $tree bytes (limit 67108864)"
  if [ $((carry + tree)) -ge 67108864 ]; then
    echo "too big for one device call: carry one binary at a time (move the other out of .cuda-bin)" >&2
    exit 1
  fi
}

RESULTS=${GPU_PROOF_RESULTS:-$ROOT/gpu-proof-out}
WORK=${GPU_PROOF_WORK:-/tmp/gpu-proof}
DEVICE=${GPU_PROOF_DEVICE:-cuda}
THREADS=${GPU_PROOF_THREADS:-$(nproc)}
DEADLINE=${GPU_PROOF_DEADLINE:-570}
MODELS=$WORK/models
BENCH=$CARRY/shared/bench
FAILED=0

pack() { # copy what exists so far into $OUT, so a call cut off at its time limit still returns it
  if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
    tar -czf "$OUT/gpu-proof-results.tar.gz" -C "$RESULTS" .
    (cd "$RESULTS" && for f in machine.txt *.log; do [ -f "$f" ] && { echo "##### $f"; cat "$f"; }; done) \
      >"$OUT/gpu-proof.log"
  fi
}

phase() { # phase NAME CMD...: run, log to $RESULTS/NAME.log, keep going on failure
  local name=$1
  shift
  local left=$((DEADLINE - SECONDS))
  if [ "$left" -lt 15 ]; then
    echo "=== $name: SKIPPED (deadline of $DEADLINE s reached): $*" | tee -a "$RESULTS/$name.log"
    FAILED=$((FAILED + 1))
    return
  fi
  echo "=== $name: $*" | tee -a "$RESULTS/$name.log"
  local start=$SECONDS
  if timeout --kill-after=5 "$((left - 10))" "$@" 2>&1 | tee -a "$RESULTS/$name.log"; then
    echo "=== $name: ok in $((SECONDS - start)) s" | tee -a "$RESULTS/$name.log"
  else
    echo "=== $name: FAILED in $((SECONDS - start)) s" | tee -a "$RESULTS/$name.log"
    FAILED=$((FAILED + 1))
  fi
  pack
}

bin_args() { # --bin LABEL=PATH for every unpacked binary
  for b in "$WORK"/bin/tantivy-rerank-*; do
    [ -x "$b" ] && printf -- '--bin %s=%s ' "${b##*/tantivy-rerank-}" "$b"
  done
}

run() {
  export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TANTIVY_RERANK_SHARED=$CARRY/shared
  mkdir -p "$RESULTS" "$WORK/bin" "$MODELS"
  local cu
  cu=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null) &&
    export LD_LIBRARY_PATH=$cu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  for x in "$CARRY"/bin/*.xz; do
    local b=$WORK/bin/$(basename "$x" .xz)
    if [ ! -x "$b" ]; then
      if command -v xz >/dev/null; then
        xz -dc "$x" >"$b"
      else
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$x" "$b"
      fi && chmod +x "$b"
    fi
    if ldd "$b" | grep -q 'not found'; then
      echo "$b: missing libraries:" && ldd "$b" | grep 'not found'
      FAILED=$((FAILED + 1))
    fi
  done
  {
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    python3 -c 'import torch, transformers, sentence_transformers as st; print("torch", torch.__version__, "transformers", transformers.__version__, "sentence-transformers", st.__version__)'
    nproc
  } | tee "$RESULTS/machine.txt"
  local phases=("$@")
  [ ${#phases[@]} -gt 0 ] || phases=(models parity speed articles sweep)
  local kind
  for p in "${phases[@]}"; do
    case "$p" in
      models)
        for kind in modernbert-base modernbert-large mbert-2label; do
          [ -f "$MODELS/$kind/config.json" ] ||
            phase models python3 scripts/make_fixtures.py --full-size "$kind" --out "$MODELS/$kind" \
              --shared "$CARRY/shared"
        done
        ;;
      parity)
        for kind in modernbert-base modernbert-large mbert-2label; do
          # shellcheck disable=SC2046
          phase parity python3 scripts/gpu_parity.py --model "$MODELS/$kind" --workload "$BENCH/workload_1x100.json" \
            $(bin_args) --device "$DEVICE" --dtypes f32,bf16 --torch --json "$RESULTS/parity-$kind.json"
        done
        ;;
      speed)
        for kind in modernbert-base modernbert-large; do
          for bs in 32 128; do
            # shellcheck disable=SC2046
            phase speed python3 scripts/bench_vs_sentence_transformers.py --unpinned --model "$MODELS/$kind" \
              --workload "$BENCH/workload_1x100.json" --workload "$BENCH/workload_scifact_1x100.json" \
              $(bin_args) --device "$DEVICE" --dtype bf16 --threads "$THREADS" --batch-size "$bs" \
              --warmup 2 --runs 5 --json "$RESULTS/speed-$kind-b$bs.json"
          done
        done
        ;;
      sweep)
        local b
        for b in "$WORK"/bin/tantivy-rerank-*; do
          for t in 4096 8192 16384 32768 65536; do
            phase sweep "$b" bench --model "$MODELS/modernbert-base" --workload "$BENCH/workload_1x100.json" \
              --workload "$BENCH/workload_scifact_1x100.json" --device "$DEVICE" --dtype bf16 \
              --batch-size 1000 --max-batch-tokens "$t" --max-length 512 --warmup 2 --runs 5
          done
        done
        ;;
      articles)
        # shellcheck disable=SC2046
        phase articles python3 scripts/bench_vs_sentence_transformers.py --unpinned \
          --model "$MODELS/modernbert-large" --workload "$BENCH/workload_articles_1x16x8192.json" \
          $(bin_args) --device "$DEVICE" --dtype bf16 --threads "$THREADS" --batch-size 16 --max-length 8192 \
          --warmup 1 --runs 3 --json "$RESULTS/articles-large.json"
        ;;
      *) echo "unknown phase $p" >&2; exit 2 ;;
    esac
  done
  echo "gpu-proof: ${#phases[@]} phase(s) done, $FAILED failure(s); logs in $RESULTS"
  pack
  [ "$FAILED" = 0 ]
}

case "$MODE" in
  prepare) prepare ;;
  run) run "$@" ;;
  *) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 2 ;;
esac
