#!/usr/bin/env bash
# Build the CUDA binary of tantivy-rerank on a machine with no GPU and no system CUDA toolkit,
# from PyPI's CUDA 13.0 wheels (the H100 machines run driver R580 = CUDA 13.0).
#
#   scripts/build-cuda.sh            # cargo build --release --features cuda  -> .cuda-bin/tantivy-rerank
#   scripts/build-cuda.sh --flash-attn   # adds candle-flash-attn: 2-4 h of nvcc on 2 cores, cached
#                                        # per kernel, so an interrupted build resumes
#   scripts/build-cuda.sh --check    # cargo check --features cuda (what CI runs: proves it compiles)
#
# Environment: CUDA_WHEELS (default ~/.cache/cuda-wheels) holds the toolchain between builds;
# CUDA_COMPUTE_CAP (default 90: H100/H200). Each feature set gets its own target folder
# (target/cuda, target/cuda-flash) because switching features recompiles candle's kernels.
#
# Why each step (checked with candle 0.11.1, cudarc 0.19.10):
# - CUDA is pinned to 13.0.x: the R580 driver rejects PTX from a newer toolkit and cudarc 0.19.10
#   refuses nvcc >= 13.5.
# - candle links the CUDA libraries at build time (cudarc dynamic-linking). The wheels ship only
#   libX.so.N, so unversioned links are made, and libcuda.so (part of the driver, in no wheel)
#   gets a link-time stub built from cudarc's declarations. The stub is never shipped: at run
#   time the driver's libcuda.so.1 is used, and libcublas/libcublasLt/libcurand/libcudart come
#   from PyTorch's nvidia wheels or a CUDA install (see README, "GPU").
# - flash-attn: candle-flash-attn's build clones CUTLASS v3.5.0; offline, the same headers come
#   from PyPI's nvidia-cutlass 3.5.0.0 wheel, placed where cudaforge looks for its checkout.
set -euo pipefail

MODE=build
FEATURES=cuda
for arg in "$@"; do
  case "$arg" in
    --check) MODE=check ;;
    --flash-attn) FEATURES=flash-attn ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DIR=${CUDA_WHEELS:-$HOME/.cache/cuda-wheels}
mkdir -p "$DIR"

cargo fetch --quiet

[ -x "$DIR/venv/bin/python" ] || python3 -m venv "$DIR/venv"
"$DIR/venv/bin/pip" install -q \
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
  nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
CU=$("$DIR/venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
(
  cd "$CU/lib"
  for l in cublas cublasLt cudart nvrtc; do ln -sf "lib$l.so.13" "lib$l.so"; done
  ln -sf libcurand.so.10 libcurand.so
)
ln -sfn lib "$CU/lib64"

# Link-time stub of the driver library: every cu* entry point cudarc declares.
CUDARC_SRC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | tail -1)
mkdir -p "$CU/lib/stubs"
grep -oE '^\s+fn cu[A-Za-z0-9_]+\(' "$CUDARC_SRC/src/driver/sys/mod.rs" |
  sed -E 's/^\s+fn (cu[A-Za-z0-9_]+)\(/\1/' | sort -u |
  awk '{print "int " $1 "(void) { return 999; }"}' >"$CU/lib/stubs/libcuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CU/lib/stubs/libcuda.so" "$CU/lib/stubs/libcuda_stub.c"

export CUDA_HOME=$CU CUDA_PATH=$CU CUDA_ROOT=$CU
export PATH=$CU/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
export LIBRARY_PATH=$CU/lib:$CU/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}

if [ "$FEATURES" = flash-attn ]; then
  export CUDAFORGE_HOME=$DIR/cudaforge-home
  export CANDLE_FLASH_ATTN_BUILD_DIR=${CANDLE_FLASH_ATTN_BUILD_DIR:-$DIR/flash-attn-build}
  mkdir -p "$CANDLE_FLASH_ATTN_BUILD_DIR"
  # Resumable: each finished kernel object is kept and reused by the next run (see the wrapper).
  install -m 755 "$ROOT/scripts/nvcc-resumable" "$CU/bin/nvcc-resumable"
  export NVCC=$CU/bin/nvcc-resumable
  NVCC_RESUMABLE_DIR=$(realpath "$CANDLE_FLASH_ATTN_BUILD_DIR")
  export NVCC_RESUMABLE_DIR
  D=$CUDAFORGE_HOME/git/checkouts/cutlass-7d49e6c7e2f8896c
  if [ ! -d "$D/include" ]; then
    tmp=$(mktemp -d)
    "$DIR/venv/bin/pip" download -q --no-deps -d "$tmp" nvidia-cutlass==3.5.0.0
    mkdir -p "$D/tools/util"
    (cd "$tmp" && unzip -q ./*.whl 'cutlass_library/source/include/*' 'cutlass_library/source/tools/util/include/*')
    cp -r "$tmp/cutlass_library/source/include" "$D/include"
    cp -r "$tmp/cutlass_library/source/tools/util/include" "$D/tools/util/include"
    git -C "$D" init -q && echo 7d49e6c7e2f8896c47f586706e67e1fb215529dc >"$D/.git/HEAD"
    rm -rf "$tmp"
  fi
  TARGET=$ROOT/target/cuda-flash
else
  TARGET=$ROOT/target/cuda
fi

start=$(date +%s)
if [ "$MODE" = check ]; then
  CARGO_TARGET_DIR=$TARGET cargo check --workspace --all-targets --features "tantivy-rerank/$FEATURES,tantivy-rerank-cli/$FEATURES"
else
  CARGO_TARGET_DIR=$TARGET cargo build --release -p tantivy-rerank-cli --features "$FEATURES"
  mkdir -p "$ROOT/.cuda-bin"
  # Stripped (the release profile keeps line tables): ~64 MB instead of ~220 MB, ~13 MB with xz,
  # small enough to carry to a GPU machine.
  strip -o "$ROOT/.cuda-bin/tantivy-rerank-$FEATURES" "$TARGET/release/tantivy-rerank"
  echo "built $ROOT/.cuda-bin/tantivy-rerank-$FEATURES ($(du -h "$ROOT/.cuda-bin/tantivy-rerank-$FEATURES" | cut -f1))"
fi
echo "cuda $MODE ($FEATURES) took $(($(date +%s) - start)) s"
