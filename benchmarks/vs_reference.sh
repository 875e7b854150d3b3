#!/usr/bin/env bash
# nanostyle's bench64 step against the PyTorch reference (reference_torch.py) on this machine,
# alternating the two so that a machine whose speed drifts treats both alike; compare ratios.
#
#   bash benchmarks/vs_reference.sh [ROUNDS=2] [OUTDIR=vs-reference] [reference args...]
#
# Each round runs both under the default glibc allocator and under the tuned one
# (MALLOC_MMAP_THRESHOLD_ = MALLOC_TRIM_THRESHOLD_ = 16 GiB), --iters 3 each, and prints one
# line per run and nanostyle's lazy_iter_s as a fraction of the reference's. Arguments after
# OUTDIR go to the reference, e.g. `--isa avx2`; nanostyle's kernels follow the environment
# (OPENBLAS_CORETYPE). Needs `pip install torch==2.13.0`.
set -euo pipefail
ROUNDS=${1:-2}
OUT=${2:-vs-reference}
shift $(( $# < 2 ? $# : 2 ))
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$OUT"
for round in $(seq 1 "$ROUNDS"); do
  for alloc in default tuned; do
    settings=()
    if [ "$alloc" = tuned ]; then
      settings=(MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184)
    fi
    env "${settings[@]}" python "$ROOT/benchmarks/train_step.py" --config bench64 --iters 3 \
      --json "$OUT/nanostyle-$alloc-$round.json" > /dev/null
    env "${settings[@]}" python "$ROOT/benchmarks/reference_torch.py" --iters 3 "$@" \
      --json "$OUT/reference-$alloc-$round.json" > /dev/null
    python - "$OUT" "$alloc" "$round" <<'PY'
import json, sys
out, alloc, round_ = sys.argv[1:]
runs = {v: json.load(open(f"{out}/{v}-{alloc}-{round_}.json")) for v in ("nanostyle", "reference")}
for version, d in runs.items():
    kernels = d.get("openblas_core") or d.get("cpu_capability")
    print(round_, alloc, f"{version} ({kernels})",
          " ".join(f"{k}={d[k]:.3f}" for k in ("G_main_s", "D_main_s", "D_r1_s", "lazy_iter_s", "g_forward_s")))
ratio = runs["nanostyle"]["lazy_iter_s"] / runs["reference"]["lazy_iter_s"]
print(round_, alloc, f"nanostyle / reference lazy_iter_s = {ratio:.2f}", flush=True)
PY
  done
done
