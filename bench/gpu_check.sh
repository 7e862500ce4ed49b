#!/usr/bin/env bash
# The CUDA path, measured on a machine with one NVIDIA GPU (issue 19). Every step has its own time limit and keeps
# its output in the output folder; a failing step is recorded and the next one runs.
#
#   bash bench/gpu_check.sh [--out DIR] [--quality-root DIR] [--dry-run]
#
# --dry-run prints every step with its command and time limit, and runs the steps that need no GPU (the
# environment, the mixed-precision check on the CPU with bf16); CI runs it (tests/test_gpu_check.py).
# On the GPU machine: a virtual environment over the machine's own PyTorch (--system-site-packages: such machines
# reach no package index), the project installed without dependencies, then the steps. Wheels the machine lacks can
# be put in .whl/ (installed from there, offline).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}
DRY=0
QROOT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --quality-root) QROOT=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
PY=${PYTHON:-python}
command -v "$PY" >/dev/null || PY=python3
export PYTHONUNBUFFERED=1

# step NAME LIMIT_S NEEDS_GPU COMMAND...: run (or, in a dry run, list) one step; its output goes to OUT/NAME.log
step() {
  local name=$1 limit=$2 gpu=$3; shift 3
  local cmd="$*"
  if [ "$DRY" = 1 ] && [ "$gpu" = gpu ]; then
    printf '%-14s %4ss  [needs a GPU: listed only]  %s\n' "$name" "$limit" "$cmd" | tee -a "$SUMMARY"
    return 0
  fi
  echo "running $name (at most ${limit}s) ..."
  local t0=$SECONDS
  timeout "$limit" bash -c "$cmd" > "$OUT/$name.log" 2>&1
  local rc=$?
  local verdict=ok
  [ $rc -eq 124 ] && verdict="TIMED OUT after ${limit}s"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && verdict="FAILED (exit $rc)"
  printf '%-14s %4ss  %-22s %3ss  %s\n' "$name" "$limit" "$verdict" "$((SECONDS - t0))" "$cmd" | tee -a "$SUMMARY"
  tail -n 5 "$OUT/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY"
}

if [ "$DRY" = 0 ]; then
  if [ ! -d .venv-gpu ]; then
    "$PY" -m venv --system-site-packages .venv-gpu || exit 1
  fi
  . .venv-gpu/bin/activate
  if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    python -m pip install -q --no-index --no-deps .whl/*.whl > "$OUT/install.log" 2>&1
  fi
  python -m pip install -q --no-deps --no-build-isolation -e . >> "$OUT/install.log" 2>&1 || \
    echo "install: the project could not be installed (see install.log); running from the checkout" | tee -a "$SUMMARY"
  PY=python
fi

DATA="$OUT/data"
step env 120 cpu "$PY -c 'import sys, torch; print(sys.version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available()); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"no GPU\")'; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true; $PY -c 'import faiss; print(\"faiss\", faiss.__version__, \"GPUs\", getattr(faiss, \"get_num_gpus\", lambda: 0)())' 2>&1 || true"
step data 120 cpu "$PY -c 'from pathlib import Path; from bench.amp_check import folder; import shutil; shutil.rmtree(\"$DATA\", ignore_errors=True); folder(Path(\"$DATA\"), n_classes=24, per_class=24, size=60)'"
if [ "$DRY" = 1 ]; then
  step amp-cpu 300 cpu "$PY -m bench.amp_check --device cpu --dtypes bf16 --epochs 2"
fi
step tests-cuda 420 gpu "EE_TEST_DEVICE=cuda QT_QPA_PLATFORM=offscreen $PY -m pytest -q -x -p no:cacheprovider tests/trainer tests/test_cli.py -m 'not gui'"
step amp-cuda 240 gpu "$PY -m bench.amp_check --device cuda --dtypes fp16,bf16 --epochs 3"
step train-bench 420 gpu "$PY -m bench.train --device cuda --amp auto --backbone resnet50 --image-size 224 --batch-classes 16 --batch-per-class 4 --repeats 2"
step nccl-1 240 gpu "rm -rf $OUT/run-nccl; torchrun --standalone --nproc_per_node=1 main.py train $DATA --out $OUT/run-nccl --device cuda --backbone resnet18 --no-pretrained --image-size 64 --epochs 1 --quiet"
step gloo-2 240 gpu "rm -rf $OUT/run-gloo; EMBEDDING_EXPLORER_DIST_BACKEND=gloo torchrun --standalone --nproc_per_node=2 main.py train $DATA --out $OUT/run-gloo --device cuda --backbone resnet18 --no-pretrained --image-size 64 --epochs 1 --quiet"
if [ -n "$QROOT" ] || [ "$DRY" = 1 ]; then
  step quality-224 540 gpu "$PY -m bench.quality.compare --root ${QROOT:-QUALITY_ROOT} --tasks photos --seeds 1 --image-size 224 --backbone resnet50 --threads 8"
else
  echo "quality-224: skipped (no --quality-root: the task folders are built from Debian packages on the CPU machine; carry them)" | tee -a "$SUMMARY"
fi
echo "summary: $SUMMARY"
grep -q "FAILED\|TIMED OUT" "$SUMMARY" && exit 1
exit 0
