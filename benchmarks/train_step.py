"""Seconds per training iteration for a named configuration (docs/design.md, "The bench64
configuration").

    python benchmarks/train_step.py --config bench64 [--iters 5] [--json FILE]
    mpiexec -n 2 python benchmarks/train_step.py --config bench64 --dist mpi   # each rank its rows

Reports medians over --iters of: the G main step, the D main step and the D R1 step (each with
its Adam update, run as the training loop runs them, by train.phase_step: on a CPU the batch in
parts at once, one per core, see --parts), lazy_iter_s = G + D + R1/16, g_forward_s (G at batch 16 without
gradients), img/s = batch / lazy_iter_s, and peak memory (process max RSS on the CPU; CuPy's
memory-pool peak on a GPU). bench64: res 64, batch 16, z = w = 256, 2 mapping layers, channel_base 4096,
channel_max 256, R1 gamma 1 every 16, style mixing off, no augmentation, float32.
Under mpiexec with --dist, each process computes its rows of the batch and the phases sum the
gradients across the processes (train.phase_step with the communicator); rank 0 reports, with
allreduce_G_s and allreduce_D_s: the G and D phases' all-reduces alone.
"""
import argparse
import functools
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import nanostyle as ns  # noqa: E402  (before NumPy: under mpiexec it shares the cores among ranks)
import numpy as np  # noqa: E402
from nanostyle import backend, blas, distributed, parallel  # noqa: E402
from nanostyle.losses import StyleGAN2Loss  # noqa: E402
from nanostyle.optim import Adam, lazy_regularization  # noqa: E402
from nanostyle.train import build_networks, default_parts, phase_step  # noqa: E402

CONFIGS = {"bench64": dict(net="bench64", res=64, batch=16, gamma=1.0, r1_interval=16),
           "cpu64": dict(net="cpu", res=64, batch=16, gamma=1.0, r1_interval=16),
           "cpu128": dict(net="cpu", res=128, batch=16, gamma=0.2048, r1_interval=16),
           "cpu256": dict(net="cpu", res=256, batch=16, gamma=0.8192, r1_interval=16)}


def synchronize(xp):
    if xp is not np:
        xp.cuda.Device().synchronize()


def build_phases(config_name, device, parts=None, comm=None):
    """The configuration's networks, optimisers and loss, and its timed steps as callables:
    {"G_main_s", "D_main_s", "D_r1_s", "g_forward_s"} -> fn(); returns (phases, cfg, xp, parts).
    With a communicator `comm`, `parts` are this process's parts of its rows."""
    comm = comm or distributed.Single()
    cfg = CONFIGS[config_name]
    xp = backend.xp_for_device(device)
    G, D = build_networks(cfg["net"], cfg["res"])
    if device != "cpu":
        G.to(device)
        D.to(device)
    lr, betas = lazy_regularization(0.0025, (0.0, 0.99), cfg["r1_interval"])
    opt_G, opt_D = Adam(G.parameters()), Adam(D.parameters(), lr=lr, betas=betas)
    loss = StyleGAN2Loss(G, D, None, r1_gamma=cfg["gamma"], style_mixing_prob=0.0)
    rng = np.random.default_rng(0)
    B = cfg["batch"]
    real = ns.Tensor(xp.asarray(rng.uniform(-1, 1, (B, 1, cfg["res"], cfg["res"])).astype(np.float32)))

    def z():
        return ns.Tensor(xp.asarray(rng.standard_normal((B, G.z_dim)).astype(np.float32)))

    if parts is None:                 # as the training loop picks it
        parts = default_parts(B // comm.size, D, device)

    def step(G_trains, loss_of, opt):
        G.requires_grad_(G_trains)
        D.requires_grad_(not G_trains)
        zs = z()
        phase_step(G if G_trains else D, opt, lambda rows, r, first: loss_of(zs[rows], rows, r, first),
                   B, rng, parts=parts, comm=comm)

    phases = {
        "G_main_s": lambda: step(True, lambda zs, rows, r, first: loss.generator_loss(zs, r, update_emas=first), opt_G),
        "D_main_s": lambda: step(False, lambda zs, rows, r, first: loss.discriminator_loss(real[rows], zs, r), opt_D),
        "D_r1_s": lambda: step(False, lambda zs, rows, r, first: loss.r1_loss(real[rows], r, cfg["r1_interval"]), opt_D),
    }

    def g_forward():
        with ns.no_grad():
            G(z(), rng=rng)

    phases["g_forward_s"] = g_forward
    if comm.size > 1:                 # the phases' all-reduces alone, on buffers of their sizes
        for name, module in (("allreduce_G_s", G), ("allreduce_D_s", D)):
            size = module.num_parameters() + sum(b.size for _, b in module.named_buffers())
            phases[name] = functools.partial(comm.allreduce_sum, xp.zeros(size, dtype=np.float32))
    return phases, cfg, xp, parts


def measure(config_name, iters, device, parts=None, comm=None):
    comm = comm or distributed.Single()
    phases, cfg, xp, parts = build_phases(config_name, device, parts, comm)
    B = cfg["batch"]
    results = {}
    for name, fn in phases.items():
        fn()  # warm-up
        synchronize(xp)
        times = []
        for _ in range(iters):
            start = time.perf_counter()
            fn()
            synchronize(xp)
            times.append(time.perf_counter() - start)
        comm.barrier()               # the next phase starts together on every rank
        results[name] = statistics.median(times)
    results["lazy_iter_s"] = results["G_main_s"] + results["D_main_s"] + results["D_r1_s"] / cfg["r1_interval"]
    results["img_per_s"] = B / results["lazy_iter_s"]
    if xp is np:
        results["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    else:
        results["peak_memory_mb"] = xp.get_default_memory_pool().total_bytes() / 2 ** 20
    results.update(config=config_name, device=device, iters=iters,
                   malloc_mmap_threshold=os.environ.get("MALLOC_MMAP_THRESHOLD_"),
                   malloc_trim_threshold=os.environ.get("MALLOC_TRIM_THRESHOLD_"),
                   nanostyle_threads=parallel.THREADS, parts=parts, processes=comm.size, dist=comm.name,
                   openblas_core=blas.core_name(), openblas_coretype=os.environ.get("OPENBLAS_CORETYPE"))
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="bench64", choices=sorted(CONFIGS))
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--parts", type=int, default=None,
                   help="parts of each batch computed at once on threads (default: as training picks; 1 = none); "
                        "under mpiexec, of each process's rows")
    p.add_argument("--dist", choices=["none", "mpi", "nccl"], help="under mpiexec: as train_oasis.py's --dist")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    device = args.device or backend.default_device()
    comm = distributed.init(args.dist, device)
    with comm.fail_together():
        results = measure(args.config, args.iters, device, args.parts, comm)
    if comm.rank != 0:
        return
    for key, value in results.items():
        print(f"{key:24} {value:.4f}" if isinstance(value, float) else f"{key:24} {value}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
