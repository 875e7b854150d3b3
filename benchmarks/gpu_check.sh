#!/usr/bin/env bash
# Every check that needs a GPU, in one go (a lent GPU machine is short-lived; see RESULTS.md):
#
#     bash benchmarks/gpu_check.sh OUTDIR
#
# 1. the GPU parity tests (`pytest -m gpu`), 2. benchmarks/kernels.py (both backends),
# 3. benchmarks/train_step.py --config bench64 on the GPU, 4. a short training run of the main
# command on the GPU, then sample.py and evaluate.py on its checkpoint (and sample.py on the CPU
# from the same checkpoint), 5. the whole `pytest` with the GPU present. Each step has its own
# time limit, so one that hangs does not take the rest with it. Writes at most 8 files to OUTDIR.
set -u
OUTDIR=${1:-gpu-check}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
LOG=$OUTDIR/log.txt
RUN=$(mktemp -d)/run

source benchmarks/_step.sh   # step NAME SECONDS COMMAND...

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    lscpu 2>/dev/null | grep -E 'Model name|^CPU\(s\)'
    $PY -c "import sys, numpy, cupy; print(sys.version.split()[0], 'numpy', numpy.__version__, 'cupy', cupy.__version__)" 2>&1
    git log --oneline -1 2>/dev/null
} >"$LOG"
cat "$LOG"

step "pytest -m gpu" 150 $PY -m pytest -m gpu -q -p no:cacheprovider --tb=short
step "kernels.py" 120 $PY benchmarks/kernels.py --json "$OUTDIR/kernels.json"
step "train_step bench64 cuda" 90 $PY benchmarks/train_step.py --config bench64 --iters 10 --device cuda \
    --json "$OUTDIR/train_step_cuda.json"
step "train_oasis --res 64 (1.5 minutes)" 130 $PY examples/train_oasis.py --res 64 --minutes 1.5 --metrics 0 --snap 1 \
    --out "$RUN"
step "sample.py (cuda)" 40 $PY examples/sample.py --ckpt "$RUN/latest.npz" --grid --out "$RUN/samples-cuda"
step "sample.py (cpu)" 40 env NANOSTYLE_DEVICE=cpu $PY examples/sample.py --ckpt "$RUN/latest.npz" --grid \
    --out "$RUN/samples-cpu"
step "evaluate.py" 90 $PY examples/evaluate.py --ckpt "$RUN/latest.npz" --num 200 --json "$RUN/eval.json"
tar czf "$OUTDIR/run.tgz" --exclude='*.npz' -C "$(dirname "$RUN")" run 2>>"$LOG"
XDIST=$($PY -c "import xdist" 2>/dev/null && echo "-n 8")   # the CPU tests in parallel where pytest-xdist is there
step "pytest (all)" 150 $PY -m pytest -q -p no:cacheprovider --tb=short $XDIST
echo "done $(date -u +%H:%M:%S)" | tee -a "$LOG"
