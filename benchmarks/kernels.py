"""Profile every op family, forward and backward, on every backend and implementation present.

    python benchmarks/kernels.py                 # readable table
    python benchmarks/kernels.py --json out.json # rows {op, pass, backend, impl, shape, median_ms, gflops|gbps, pct_of_peak}
    python benchmarks/kernels.py --quick         # small shapes (tests)
    python benchmarks/kernels.py --impl fast     # the CPU's fast paths only (default: fast and ref)

Rows are named after the op families of nanostyle/ops (the file that holds the op, its CPU
paths and its kernel launcher). On NumPy each op runs twice, on the fast CPU path (`impl` fast)
and on the plain reference (ref; ns.ops.use_impl), on CuPy on the CUDA kernels (cuda).
For each op: the median time (GPU: cupyx.profiler.benchmark, warm-up excluded; CPU:
perf_counter over repeats after a warm-up), achieved GFLOP/s (linear, conv2d, modulated_conv2d:
2 FLOPs per multiply-add) or GB/s (the rest: bytes read + written, each tensor once), and that
as a percentage of this machine's own ceiling measured in the same run: a large float32 matmul
for compute, a large copy (bytes read + written) for bandwidth. Shapes are those of the bench64
configuration (batch 16; 256 channels at 8-16, 128 at 32, 64 at 64).
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import nanostyle as ns  # noqa: E402
import numpy as np  # noqa: E402
from nanostyle import backend  # noqa: E402
from nanostyle.augment import _reflect  # noqa: E402  (the augmentation's own border reflection)
from nanostyle.autograd import ScatterAdd  # noqa: E402
from nanostyle.ops.adam import adam_step  # noqa: E402


def timer(backend_name, fn, repeats):
    if backend_name == "cupy":
        from cupyx.profiler import benchmark
        result = benchmark(fn, n_repeat=repeats, n_warmup=3)
        return float(np.median(result.gpu_times)) * 1e3
    fn()  # warm-up: first touch of fresh memory, BLAS thread start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def ceilings(xp, backend_name, quick):
    n = 1024 if quick else (4096 if backend_name == "cupy" else 2048)
    a = xp.asarray(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32))
    ms = timer(backend_name, lambda: a @ a, 3)
    gflops = 2 * n ** 3 / (ms / 1e3) / 1e9
    size = (16 << 20) if quick else (256 << 20)
    src = xp.asarray(np.random.default_rng(1).standard_normal(size // 4).astype(np.float32))
    dst = xp.empty_like(src)
    ms = timer(backend_name, lambda: xp.copyto(dst, src), 5)
    gbps = 2 * size / (ms / 1e3) / 1e9
    return gflops, gbps


def cases(quick, dtype):
    """(op name, shape label, forward fn builder, flops or None, bytes)."""
    rng = np.random.default_rng(0)
    N = 4 if quick else 16
    C = 32 if quick else 256
    res = 8 if quick else 16
    f = ns.ops.setup_filter([1, 3, 3, 1], dtype=dtype)
    r = lambda *s: rng.standard_normal(s).astype(dtype)
    item = np.dtype(dtype).itemsize
    x_bytes = N * C * res * res * item
    out = []
    out.append(("linear", f"[{N},{C}]x[{C},{C}]", lambda: (r(N, C), r(C, C), r(C)),
                lambda x, w, b: ns.ops.linear(x, w, b, activation="lrelu"), 2 * N * C * C, None))
    out.append(("bias_act", f"[{N},{C},{res},{res}] lrelu", lambda: (r(N, C, res, res), r(C)),
                lambda x, b: ns.ops.bias_act(x, b, act="lrelu"), None, 3 * x_bytes))
    out.append(("conv2d", f"[{N},{C},{res},{res}] 3x3 {C}->{C}", lambda: (r(N, C, res, res), r(C, C, 3, 3)),
                lambda x, w: ns.ops.conv2d(x, w, padding=1), 2 * N * C * C * 9 * res * res, None))
    C2, res2 = (16, 16) if quick else (128, 32)
    out.append(("conv2d", f"[{N},{C2},{res2},{res2}] 3x3 {C2}->{C2}", lambda: (r(N, C2, res2, res2), r(C2, C2, 3, 3)),
                lambda x, w: ns.ops.conv2d(x, w, padding=1), 2 * N * C2 * C2 * 9 * res2 * res2, None))
    out.append(("upfirdn2d", f"[{N},{C},{res},{res}] up2", lambda: (r(N, C, res, res),),
                lambda x: ns.ops.upfirdn2d(x, f, up=2, padding=(2, 1, 2, 1), gain=4), None, 5 * x_bytes))
    out.append(("upfirdn2d", f"[{N},{C},{2 * res},{2 * res}] down2", lambda: (r(N, C, 2 * res, 2 * res),),
                lambda x: ns.ops.upfirdn2d(x, f, down=2, padding=1), None, 5 * x_bytes))
    out.append(("modulated_conv2d", f"[{N},{C},{res},{res}] 3x3 demod", lambda: (r(N, C, res, res), r(C, C, 3, 3), r(N, C)),
                lambda x, w, s: ns.ops.modulated_conv2d(x, w, s, padding=1), 2 * N * C * C * 9 * res * res, None))
    out.append(("noise_injection", f"[{N},{C},{res},{res}]", lambda: (r(N, C, res, res), r(N, 1, res, res), r(1)),
                lambda x, n, s: ns.ops.noise_injection(x, n, s), None, 2 * x_bytes))
    out.append(("minibatch_std", f"[{N},{C},4,4] group 4", lambda: (r(N, C, 4, 4),),
                lambda x: ns.ops.minibatch_std(x), None, 2 * N * C * 16 * item))
    out.append(("softplus", f"[{N * 4096}]", lambda: (r(N * 4096),), ns.ops.softplus, None, 2 * N * 4096 * item))
    # the augmentation's translation backwards: the gradient of a gather whose indices repeat
    # (reflected borders) sums them up; scatter_add's own gradient is the gather
    R = 16 if quick else 64
    shift = rng.integers(-R // 8, R // 8 + 1, (N, 2))
    index = (np.arange(N)[:, None, None], slice(None), _reflect(np.arange(R)[None, :] - shift[:, 1:], R)[:, :, None],
             _reflect(np.arange(R)[None, :] - shift[:, :1], R)[:, None, :])

    def scatter_add(g):
        xp = backend.get_array_module(g.data)
        return ScatterAdd.apply(g, index=tuple(i if isinstance(i, slice) else xp.asarray(i) for i in index),
                                shape=(N, 1, R, R))
    out.append(("scatter_add", f"[{N},1,{R},{R}] translate", lambda: (r(N, R, R, 1),), scatter_add, None,
                2 * N * R * R * item))
    return out


def run(quick=False, backends=None, dtype=np.float32, impls=("fast", "ref")):
    rows = []
    available = ["numpy"] + (["cupy"] if backend.gpu_available() else [])
    for name in backends or available:
        if name not in available:
            print(f"skipping backend {name}: {backend.gpu_unavailable_reason()}", file=sys.stderr)
            continue
        xp = np if name == "numpy" else backend.xp_for_device("cuda")
        peak_gflops, peak_gbps = ceilings(xp, name, quick)
        rows.append(dict(op="ceiling_matmul", **{"pass": "forward"}, backend=name, impl="", shape="square fp32",
                         median_ms=None, gflops=peak_gflops, pct_of_peak=100.0))
        rows.append(dict(op="ceiling_copy", **{"pass": "forward"}, backend=name, impl="", shape="copy",
                         median_ms=None, gbps=peak_gbps, pct_of_peak=100.0))
        for impl in (impls if name == "numpy" else ("cuda",)):
            with ns.ops.use_impl(impl if impl != "cuda" else "fast"):
                rows += _time_ops(xp, name, impl, quick, dtype, peak_gflops, peak_gbps)
    return rows


def _time_ops(xp, name, impl, quick, dtype, peak_gflops, peak_gbps):
    rows = []
    repeats = 3 if quick else 10
    for op, shape, make, fn, flops, nbytes in cases(quick, dtype):
        arrays = [xp.asarray(a) for a in make()]
        tensors = [ns.Tensor(a, requires_grad=True) for a in arrays]
        with ns.no_grad():
            forward_ms = timer(name, lambda: fn(*[ns.Tensor(a) for a in arrays]), repeats)
        out = fn(*tensors)
        gy = ns.Tensor(xp.asarray(np.random.default_rng(1).standard_normal(out.shape).astype(dtype)))
        backward_ms = timer(name, lambda: ns.grad(fn(*tensors), tensors, gy), repeats) - forward_ms
        backward_ms = max(backward_ms, 1e-6)
        for pass_name, ms, scale in (("forward", forward_ms, 1), ("backward", backward_ms, 2)):
            row = dict(op=op, **{"pass": pass_name}, backend=name, impl=impl, shape=shape, median_ms=ms)
            if flops is not None:
                row["gflops"] = scale * flops / (ms / 1e3) / 1e9
                row["pct_of_peak"] = 100 * row["gflops"] / peak_gflops
            else:
                row["gbps"] = scale * nbytes / (ms / 1e3) / 1e9
                row["pct_of_peak"] = 100 * row["gbps"] / peak_gbps
            rows.append(row)
    # the optimiser step (no backward): p, g, m, v read, p, m, v written
    n = (1 << 16) if quick else (1 << 22)
    p, g, m, v = (xp.asarray(np.random.default_rng(i).standard_normal(n).astype(dtype)) for i in range(4))
    v = abs(v)
    step = [0]

    def adam():
        step[0] += 1
        adam_step(p, g, m, v, lr=1e-3, beta1=0.0, beta2=0.99, eps=1e-8, step=step[0])
    ms = timer(name, adam, repeats)
    gbps = 7 * n * np.dtype(dtype).itemsize / (ms / 1e3) / 1e9
    rows.append(dict(op="adam_step", **{"pass": "step"}, backend=name, impl=impl, shape=f"[{n}]", median_ms=ms,
                     gbps=gbps, pct_of_peak=100 * gbps / peak_gbps))
    return rows


def format_table(rows):
    lines = [f"{'op':18} {'pass':8} {'backend':7} {'impl':4} {'shape':32} {'median ms':>10} {'rate':>14} {'% peak':>7}"]
    for r in rows:
        rate = f"{r['gflops']:.1f} GFLOP/s" if "gflops" in r else f"{r['gbps']:.1f} GB/s"
        ms = "" if r["median_ms"] is None else f"{r['median_ms']:.3f}"
        lines.append(f"{r['op']:18} {r['pass']:8} {r['backend']:7} {r['impl']:4} {r['shape']:32} {ms:>10} {rate:>14} "
                     f"{r['pct_of_peak']:7.1f}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="write the rows as JSON to this file")
    p.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    p.add_argument("--backend", action="append", choices=["numpy", "cupy"], help="restrict to a backend")
    p.add_argument("--impl", action="append", choices=["fast", "ref"],
                   help="the CPU implementations to time (default: both)")
    args = p.parse_args(argv)
    rows = run(quick=args.quick, backends=args.backend, impls=tuple(args.impl or ("fast", "ref")))
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
