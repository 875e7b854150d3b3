#!/usr/bin/env bash
# Two processes against two threads on a 2-core CPU, alternating in one run so that a machine whose
# speed drifts treats both alike (compare the ratios, not the seconds):
#
#   bash benchmarks/processes_vs_threads.sh [ROUNDS=3] [OUTDIR=pvt-results] [ITERS=3]
#
# threads:   python benchmarks/train_step.py --config C      (one process, each batch in 2 parts
#            at once on threads, single-threaded BLAS inside the parts: what training does today)
# processes: OPENBLAS_NUM_THREADS=1 NANOSTYLE_NUM_THREADS=1 mpiexec -n 2 python
#            benchmarks/train_step.py --config C --dist mpi  (each process its 8 rows of the batch,
#            one single-threaded BLAS each, the gradients summed over MPI once per phase)
# for C in cpu64 (the `cpu` networks at res 64, batch 16) and bench64. Prints one line per run and,
# at the end, the median and range of img/s and lazy_iter_s per configuration and mode (and of the
# processes' G and D all-reduces alone); the JSON files stay in OUTDIR.
set -euo pipefail
ROUNDS=${1:-3}
OUT=${2:-pvt-results}
ITERS=${3:-3}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY=${PYTHON:-python}
MPIEXEC=${MPIEXEC:-$(command -v mpiexec || echo "$(dirname "$(command -v "$PY")")/mpiexec")}
mkdir -p "$OUT"
for round in $(seq 1 "$ROUNDS"); do
  for config in cpu64 bench64; do
    for mode in threads processes; do
      json="$OUT/$config-$mode-$round.json"
      if [ "$mode" = threads ]; then
        "$PY" "$ROOT/benchmarks/train_step.py" --config "$config" --iters "$ITERS" --json "$json" > /dev/null
      else
        OPENBLAS_NUM_THREADS=1 NANOSTYLE_NUM_THREADS=1 "$MPIEXEC" -n 2 "$PY" "$ROOT/benchmarks/train_step.py" \
          --config "$config" --iters "$ITERS" --dist mpi --json "$json" > /dev/null
      fi
      "$PY" - "$json" "$round $config $mode" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
keys = ("G_main_s", "D_main_s", "D_r1_s", "lazy_iter_s", "img_per_s", "allreduce_G_s", "allreduce_D_s")
print(sys.argv[2], " ".join(f"{k}={d[k]:.3f}" for k in keys if k in d),
      f"parts={d['parts']} processes={d.get('processes', 1)}", flush=True)
PY
    done
  done
done
"$PY" - "$OUT" <<'PY'
import glob, json, os, statistics, sys
runs = {}
for path in glob.glob(os.path.join(sys.argv[1], "*.json")):
    config, mode, _ = os.path.basename(path)[:-5].rsplit("-", 2)
    runs.setdefault((config, mode), []).append(json.load(open(path)))
print("\n| config | mode | runs | img/s median (range) | lazy_iter_s median (range) |\n| --- | --- | --- | --- | --- |")
for (config, mode), found in sorted(runs.items()):
    cells = []
    for key in ("img_per_s", "lazy_iter_s"):
        values = [d[key] for d in found]
        cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
    print(f"| {config} | {mode} | {len(found)} | {cells[0]} | {cells[1]} |")
for (config, mode), found in sorted(runs.items()):
    if "allreduce_G_s" in found[0]:
        print(f"{config} {mode}: all-reduce alone, ms: G", " ".join(f"{d['allreduce_G_s'] * 1e3:.1f}" for d in found),
              "| D", " ".join(f"{d['allreduce_D_s'] * 1e3:.1f}" for d in found))
PY
