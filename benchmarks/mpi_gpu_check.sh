#!/usr/bin/env bash
# The multi-process checks that need a GPU, in one go (for a lent GPU machine; about 3 minutes):
#
#     bash benchmarks/mpi_gpu_check.sh OUTDIR
#
# 1. two processes sharing one GPU through the mpi backend (CuPy buffers staged through the host
#    unless the MPI is CUDA-aware): a tiny run of 0.064 kimg, against one process computing each
#    batch in the same 2 parts; prints how many of the checkpoints' arrays differ (0 expected: the
#    two parts' gradients are summed alike);
# 2. the nccl backend's collectives with one process (NCCL through CuPy; needs nvidia-nccl-cu13);
# 3. the tests marked gpu in tests/test_distributed.py (the nccl backend with 2 processes needs
#    2 GPUs and is skipped, with the reason, on a machine with one);
# 4. train_step.py --config bench64 on the GPU, one process and two processes sharing it (each
#    its 8 rows; the all-reduces alone reported as allreduce_G_s / allreduce_D_s).
# Each step has its own time limit; everything goes to OUTDIR/log.txt.
set -u
OUTDIR=${1:-mpi-gpu-check}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
MPIEXEC=${MPIEXEC:-$(command -v mpiexec || echo "$(dirname "$(command -v "$PY")")/mpiexec")}
LOG=$OUTDIR/log.txt
RUNS=$(mktemp -d)

source benchmarks/_step.sh   # step NAME SECONDS COMMAND...

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    $PY -c "import mpi4py, cupy; from mpi4py import MPI; from cupy.cuda import nccl; print('mpi4py', mpi4py.__version__, \
MPI.Get_library_version().splitlines()[0], 'cupy', cupy.__version__, 'nccl', getattr(nccl, 'available', '?'))" 2>&1
    git log --oneline -1 2>/dev/null
} >"$LOG"
cat "$LOG"

TINY='"res": 16, "cfg": "tiny", "seed": 1, "kimg": 0.064, "device": "cuda", "metrics_kimg": 0'
step "one process, 2 parts (cuda)" 120 $PY tests/test_distributed.py train "{$TINY, \"parts\": 2, \"out\": \"$RUNS/one\"}"
step "2 processes sharing the GPU, --dist mpi" 120 "$MPIEXEC" -n 2 $PY tests/test_distributed.py train \
    "{$TINY, \"dist\": \"mpi\", \"out\": \"$RUNS/two\"}"
step "compare" 30 $PY - "$RUNS/one/latest.npz" "$RUNS/two/latest.npz" <<'PY'
import sys
import numpy as np
from nanostyle.checkpoint import load_checkpoint
(a, meta_a), (b, meta_b) = load_checkpoint(sys.argv[1]), load_checkpoint(sys.argv[2])
different = [k for k in a if not np.array_equal(a[k], b[k])]
print("cur_nimg", meta_a["cur_nimg"], meta_b["cur_nimg"], "parts", meta_a["config"]["parts"], meta_b["config"]["parts"])
print(f"{len(different)} of {len(a)} arrays differ", different[:8])
for k in different[:8]:
    print(k, float(np.abs(a[k].astype(float) - b[k]).max() / max(np.abs(a[k]).max(), 1e-30)))
PY
grep -h "processes" "$RUNS/two/log.txt" >>"$LOG"
step "nccl, one process" 120 "$MPIEXEC" -n 1 $PY tests/test_distributed.py nccl
step "pytest -m gpu tests/test_distributed.py" 240 $PY -m pytest -m gpu -q -p no:cacheprovider -rs tests/test_distributed.py
step "train_step bench64 cuda, one process" 120 $PY benchmarks/train_step.py --config bench64 --iters 10 --device cuda \
    --json "$OUTDIR/train_step_one.json"
step "train_step bench64 cuda, 2 processes on one GPU" 150 "$MPIEXEC" -n 2 $PY benchmarks/train_step.py --config bench64 \
    --iters 10 --device cuda --dist mpi --json "$OUTDIR/train_step_two.json"
echo "done $(date -u +%H:%M:%S)" | tee -a "$LOG"
