"""How near the convolutions of a training step run to the GEMM ceiling, and the fastest step
NumPy + OpenBLAS could give if every convolution ran at it.

    python benchmarks/conv_ceiling.py [--config bench64] [--iters 2] [--json FILE]

1. Runs the G main, D main and D R1 steps as train_step.py does (the batch's halves on their
   threads) and times every convolution pass inside them: forward, input gradient and weight
   gradient, grouped by shape, in thread-seconds (each half's own time).
2. For each shape, times the GEMMs the pass amounts to at the least: im2col's product
   ([O, C*k*k] x [C*k*k, N*Ho*Wo] and its two adjoints) and one kernel tap's ([O, C] x
   [C, N*Ho*Wo], k*k of which make the pass, as the window GEMMs do it), each as is and
   transposed (pixel-major), over blocks of at most 8192 output positions (CEILING_COLUMNS), on
   contiguous operands, with no patch copy, no layout copy and no margins; as many
   single-threaded GEMMs at once as the step runs halves. The fastest of the four is the
   ceiling: a convolution written as these BLAS calls does its multiplies no faster (short of an
   algorithm with fewer multiplies, such as Winograd's).
3. Prints, per step and for lazy_iter_s (G + D + R1/16): the time measured, and the time with
   every convolution at its ceiling and everything else as measured, i.e. the floor of any
   NumPy + OpenBLAS implementation that keeps the rest of the step as it is.
"""
import argparse
import collections
import importlib
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_step  # noqa: E402  (puts the checkout first on sys.path, imports nanostyle first)
import numpy as np  # noqa: E402
from nanostyle import blas, parallel  # noqa: E402

conv = importlib.import_module("nanostyle.ops.conv2d")
STEPS = ("G_main_s", "D_main_s", "D_r1_s")


PASSES = (("conv2d", "forward"), ("conv_transpose2d", "input"), ("conv2d_weight_grad", "weight"))


class PassTimer:
    """Within `with PassTimer() as timer:`, the three passes of every implementation in conv2d's
    table (conv2d.IMPLEMENTATIONS) are wrapped; while `timer.on`, each call's seconds and FLOPs
    add up under (pass, batch, C, O, k*k, stride, Ho, Wo)."""

    def __init__(self):
        self.on, self.lock = False, threading.Lock()
        self.seconds, self.flops = collections.Counter(), collections.Counter()
        self.originals = dict(conv.IMPLEMENTATIONS)

    def __enter__(self):
        for impl, passes in self.originals.items():
            conv.IMPLEMENTATIONS[impl] = passes._replace(
                **{name: self._wrap(getattr(passes, name), kind) for name, kind in PASSES})
        return self

    def __exit__(self, *exc):
        conv.IMPLEMENTATIONS.update(self.originals)

    def _wrap(self, fn, kind):
        def timed(a, b, *rest):                         # forward (x, w, ...), input (g, w, ...), weight (x, g, ...)
            start = time.perf_counter()
            out = fn(a, b, *rest)
            seconds = time.perf_counter() - start
            if self.on:
                stride = rest[-2]
                w_shape = {"forward": b.shape, "input": b.shape, "weight": out.shape}[kind]
                g_shape = {"forward": out.shape, "input": a.shape, "weight": b.shape}[kind]
                O, C, kh, kw = w_shape
                N, _, Ho, Wo = g_shape
                key = (kind, N, C, O, kh * kw, stride[0], Ho, Wo)
                with self.lock:
                    self.seconds[key] += seconds
                    self.flops[key] += 2 * N * O * Ho * Wo * C * kh * kw
            return out
        return timed

    def clear(self):
        self.seconds.clear()
        self.flops.clear()


# Output positions per GEMM in the ceiling: a block of the pass's columns (the whole pass when
# smaller), so the operands are the size a cache-blocked convolution would hand BLAS; the pass's
# whole patch matrix (up to 75 MB at 64 px) would make the ceiling memory-bound and too low.
CEILING_COLUMNS = 8192


def gemm_operands(key, transposed, per_tap=False):
    """Contiguous operands (a, b) of the least GEMM of a pass, [M, K] x [K, N], over one block
    of at most CEILING_COLUMNS output positions: im2col's, with all k*k taps in one product, or
    (per_tap) one tap's, as the window GEMMs do it, k*k of which make the pass."""
    kind, N, C, O, kk, _, Ho, Wo = key
    L, K = min(N * Ho * Wo, CEILING_COLUMNS), C * (1 if per_tap else kk)
    m, k, n = {"forward": (O, K, L), "input": (K, O, L), "weight": (O, L, K)}[kind]
    if transposed:
        m, n = n, m
    rng = np.random.default_rng(0)
    return (rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32))


def ceiling_gflops(key, threads, min_seconds=0.1, rounds=2):
    """The fastest of the four GEMMs (all taps in one or one tap; as is or transposed), in
    GFLOP/s per thread, `threads` single-threaded GEMMs at once; the best of `rounds` (a ceiling
    errs high, which only lowers the floor)."""
    best = 0.0
    for transposed, per_tap in ((False, False), (True, False), (False, True), (True, True)) * rounds:
        a, b = gemm_operands(key, transposed, per_tap)
        flops = 2 * a.shape[0] * a.shape[1] * b.shape[1]
        c = np.empty((a.shape[0], b.shape[1]), np.float32)
        blas.gemm(a, b, c)
        start = time.perf_counter()
        blas.gemm(a, b, c)
        reps = max(2, int(min_seconds / (time.perf_counter() - start)))
        barrier = threading.Barrier(threads)

        def run(_):                                     # one per half, as training splits (BLAS single-threaded)
            c = np.empty((a.shape[0], b.shape[1]), np.float32)
            blas.gemm(a, b, c)
            barrier.wait()
            start = time.perf_counter()
            for _ in range(reps):
                blas.gemm(a, b, c)
            return flops * reps / (time.perf_counter() - start) / 1e9
        best = max(best, min(parallel.split_batch(run, threads)))
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="bench64", choices=sorted(train_step.CONFIGS))
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if not blas.available(np.float32):
        sys.exit("conv_ceiling: needs NumPy's OpenBLAS callable directly (nanostyle.blas.available)")

    phases, cfg, _, parts = train_step.build_phases(args.config, "cpu")
    steps = {}
    with PassTimer() as timer:
        for name in STEPS:
            phases[name]()                              # warm-up, not counted
            timer.clear()
            timer.on = True
            start = time.perf_counter()
            for _ in range(args.iters):
                phases[name]()
            wall = (time.perf_counter() - start) / args.iters
            timer.on = False
            steps[name] = dict(wall=wall, passes={k: (s / args.iters, timer.flops[k] / args.iters)
                                                  for k, s in timer.seconds.items()})

    keys = sorted({k for step in steps.values() for k in step["passes"]})
    ceiling = {k: ceiling_gflops(k, parts) for k in keys}

    weights = {"G_main_s": 1.0, "D_main_s": 1.0, "D_r1_s": 1.0 / cfg["r1_interval"]}
    results = dict(config=args.config, iters=args.iters, parts=parts, openblas_core=blas.core_name(),
                   openblas_coretype=os.environ.get("OPENBLAS_CORETYPE"))
    print(f"{args.config}: {parts} parts at once, OpenBLAS {blas.core_name()} kernels; seconds per step")
    print(f"{'step':10} {'measured':>9} {'conv share':>10} {'conv GF/s':>9} {'ceiling GF/s':>12} {'at ceiling':>10}")
    lazy = lazy_floor = 0.0
    for name in STEPS:
        wall, passes = steps[name]["wall"], steps[name]["passes"]
        conv_s = sum(s for s, _ in passes.values())
        flops = sum(f for _, f in passes.values())
        ideal_s = sum(f / (ceiling[k] * 1e9) for k, (_, f) in passes.items())
        floor = wall - (conv_s - ideal_s) / parts      # the halves save alike, each on its core
        lazy += weights[name] * wall
        lazy_floor += weights[name] * floor
        results[name] = dict(measured_s=wall, floor_s=floor, conv_thread_s=conv_s, conv_gflop=flops / 1e9,
                             conv_share=conv_s / (wall * parts), conv_gflops_per_thread=flops / conv_s / 1e9,
                             ceiling_gflops_per_thread=flops / ideal_s / 1e9)
        print(f"{name:10} {wall:9.3f} {conv_s / (wall * parts):10.0%} {flops / conv_s / 1e9:9.1f} "
              f"{flops / ideal_s / 1e9:12.1f} {floor:10.3f}")
    results.update(lazy_iter_s=lazy, lazy_iter_floor_s=lazy_floor, floor_ratio=lazy_floor / lazy)
    print(f"lazy_iter_s {lazy:.3f} measured, {lazy_floor:.3f} with every convolution at its ceiling "
          f"({lazy_floor / lazy:.2f}x)")
    print("\nthe 20 costliest pass shapes (per thread: batch N, C -> O channels, taps, stride, output;"
          "\nthread-ms over one G, D and R1 step):")
    print(f"{'pass':8} {'N':>3} {'C':>4} {'O':>4} {'kk':>2} {'s':>1} {'out':>7} {'ms':>8} {'GF/s':>6} {'ceiling':>7}")
    seconds, flops = collections.Counter(), collections.Counter()   # summed over the three steps
    for step in steps.values():
        for k, (s, f) in step["passes"].items():
            seconds[k] += s
            flops[k] += f
    rates = {k: (s, flops[k]) for k, s in seconds.items()}
    for k, (s, f) in sorted(rates.items(), key=lambda kv: -kv[1][0])[:20]:
        kind, N, C, O, kk, stride, Ho, Wo = k
        print(f"{kind:8} {N:3} {C:4} {O:4} {kk:2} {stride:1} {f'{Ho}x{Wo}':>7} {1e3 * s:8.1f} "
              f"{f / s / 1e9:6.1f} {ceiling[k]:7.1f}")
    results["passes"] = [dict(pass_=k[0], N=k[1], C=k[2], O=k[3], taps=k[4], stride=k[5], Ho=k[6], Wo=k[7],
                              thread_s=s, gflop=f / 1e9, ceiling_gflops=ceiling[k]) for k, (s, f) in rates.items()]
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
