#!/usr/bin/env bash
# Before/after timing of the bench64 training step in one run, alternating the two versions so
# that a machine whose speed drifts treats both alike (compare the ratios, not the seconds).
#
#   git worktree add /tmp/before <commit>
#   bash benchmarks/ab.sh /tmp/before [ROUNDS=3] [OUTDIR=ab-results]
#
# Each round runs before and after under the default glibc allocator and under the tuned one
# (MALLOC_MMAP_THRESHOLD_ = MALLOC_TRIM_THRESHOLD_ = 16 GiB), train_step.py --iters 3 each;
# prints one line per run and leaves the JSON files in OUTDIR.
set -euo pipefail
BEFORE=${1:?usage: ab.sh BEFORE_CHECKOUT [ROUNDS] [OUTDIR]}
ROUNDS=${2:-3}
OUT=${3:-ab-results}
AFTER="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$OUT"
for round in $(seq 1 "$ROUNDS"); do
  for alloc in default tuned; do
    for version in before after; do
      if [ "$version" = before ]; then root="$BEFORE"; else root="$AFTER"; fi
      settings=()
      if [ "$alloc" = tuned ]; then
        settings=(MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184)
      fi
      json="$OUT/$version-$alloc-$round.json"
      env "${settings[@]}" python "$root/benchmarks/train_step.py" --config bench64 --iters 3 --json "$json" > /dev/null
      python - "$json" "$round $alloc $version" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(sys.argv[2], " ".join(f"{k}={d[k]:.3f}" for k in ("G_main_s", "D_main_s", "D_r1_s", "lazy_iter_s", "g_forward_s")))
PY
    done
  done
done
