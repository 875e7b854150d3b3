"""Images from a trained checkpoint (its G_ema): one PNG per seed, or a grid.

    python examples/sample.py --ckpt runs/RUN/latest.npz --seeds 0-63          # one PNG per seed
    python examples/sample.py --ckpt runs/RUN/latest.npz --num 16 --grid --trunc 0.7
    python examples/sample.py --ckpt runs/RUN/latest.npz --interp              # latent interpolation GIF
    python examples/sample.py --ckpt runs/RUN/latest.npz --mix                 # style-mixing grid
    python examples/sample.py --ckpt cond.npz --class AD       # a conditional model's class (name or index)
    python examples/sample.py --ckpt cond.npz                  # conditional: a grid, one row per class

In Python: G = nanostyle.load(CKPT); G.sample(seeds=range(64)) gives these images as uint8
[N, 1, R, R].
"""
import argparse
import os

import _common  # first: makes this checkout's nanostyle importable
import numpy as np
from _common import friendly_errors


def parse_seeds(text):
    seeds = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-", 1)
            seeds.extend(range(int(lo), int(hi) + 1))
        elif part:
            seeds.append(int(part))
    if not seeds:
        raise ValueError(f"--seeds {text!r} names no seed; use e.g. 0-63 or 1,5,9")
    return seeds


def class_index(G, name):
    """The index of class `name` (a class name or an index) of generator G."""
    if not getattr(G, "c_dim", 0):
        raise ValueError(f"--class {name}: this checkpoint's generator is unconditional (trained without --cond), "
                         "so it has no classes; drop --class")
    names = G.class_names
    if name in names:
        return names.index(name)
    if name.isdigit() and int(name) < G.c_dim:
        return int(name)
    listed = ", ".join(f"{i} ({n})" for i, n in enumerate(names))
    raise ValueError(f"--class {name!r} is not a class of this checkpoint; its classes are {listed}")


def _parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common.add_model_options(p)
    p.add_argument("--seeds", help="seeds, e.g. 0-63 or 1,5,9; z is drawn from each (default 0-63, or "
                                   "0..N-1 with --num N)")
    p.add_argument("--num", type=int, metavar="N", help="number of images, seeds 0..N-1 (default 64)")
    p.add_argument("--trunc", type=float, default=1.0, metavar="PSI",
                   help="truncation psi: w pulled towards its average, less variety, fewer odd samples "
                        "(default 1 = none)")
    p.add_argument("--out", default="samples", metavar="DIR", help="output folder (default ./samples)")
    p.add_argument("--grid", action="store_true", help="write one grid PNG instead of one PNG per seed "
                                                       "(default: one PNG per seed)")
    p.add_argument("--interp", action="store_true", help="also write a latent-interpolation GIF through the "
                                                         "first 8 seeds (default: off)")
    p.add_argument("--mix", action="store_true", help="also write a style-mixing grid of the first 6 seeds "
                                                      "(default: off)")
    p.add_argument("--noise", choices=["const", "random", "none"], default="const",
                   help="noise inputs: const (a seed gives the same image every time), random or none "
                        "(default const; the 'cpu' networks have none)")
    p.add_argument("--class", dest="class_name", metavar="CLASS",
                   help="a conditional model's class, by name (e.g. AD) or index (default: a grid with one row "
                        "per class, seeds 0-7, for a conditional model)")
    return p


@friendly_errors
def main(argv=None):
    args = _parser().parse_args(argv)
    import nanostyle as ns
    from nanostyle import viz
    G = _common.load_model(args)
    args.class_index = class_index(G, args.class_name) if args.class_name is not None else None
    if G.c_dim and args.class_index is None:
        if args.interp or args.mix:
            raise ValueError("--interp and --mix of a conditional model need --class (a name or an index)")
        write_class_grid(G, parse_seeds(args.seeds) if args.seeds else list(range(args.num or 8)), args)
        return
    seeds = parse_seeds(args.seeds) if args.seeds else list(range(args.num if args.num else 64))
    os.makedirs(args.out, exist_ok=True)
    images = G.sample(seeds=seeds, c=args.class_index, truncation_psi=args.trunc, noise_mode=args.noise)
    # a class's files carry its name, so that they sit beside other classes' in one folder
    prefix = f"{(G.class_names)[args.class_index]}-" \
        if args.class_index is not None else ""
    if args.grid:
        path = os.path.join(args.out, f"{prefix}grid.png")
        ns.save_image_grid(images, path)
        print(f"wrote {path} ({len(seeds)} images)")
    else:
        paths = viz.save_images(images, args.out, [f"{prefix}seed{s:04d}" for s in seeds])
        print(f"wrote {len(paths)} PNGs to {args.out}")
    if args.interp:
        write_interpolation(G, seeds[:8], args)
    if args.mix:
        write_style_mix(G, seeds[:6], args)


def write_class_grid(G, seeds, args):
    """A conditional model's samples: one row per class, one column per seed."""
    import nanostyle as ns
    names = G.class_names
    images = G.sample(seeds=list(seeds) * G.c_dim, c=np.repeat(np.arange(G.c_dim), len(seeds)),
                      truncation_psi=args.trunc, noise_mode=args.noise)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "classes.png")
    ns.save_image_grid(images, path, nrow=len(seeds))
    print(f"wrote {path} (rows: {', '.join(names)}; columns: seeds {seeds[0]}-{seeds[-1]}); "
          "--class NAME writes one class's images")


def write_interpolation(G, seeds, args, steps=12):
    """Linear interpolation in z between consecutive seeds (and back to the first), as one GIF."""
    from nanostyle import viz
    if len(seeds) < 2:
        seeds = [seeds[0], seeds[0] + 1]
    zs = [np.random.default_rng(s).standard_normal(G.z_dim) for s in seeds + seeds[:1]]
    frames = []
    for a, b in zip(zs[:-1], zs[1:]):
        for t in np.linspace(0, 1, steps, endpoint=False):
            frames.append((1 - t) * a + t * b)
    images = G.sample(z=np.asarray(frames, dtype=np.float32), c=args.class_index, truncation_psi=args.trunc,
                      noise_mode="const")
    out = os.path.join(args.out, "interpolation.gif")
    viz.save_gif(images[:, 0], out)
    print(f"wrote {out} ({len(images)} frames)")


def write_style_mix(G, seeds, args):
    """Rows: coarse styles (first ws) from row seeds; columns: fine styles from column seeds."""
    from nanostyle import backend, viz
    from nanostyle.autograd import Tensor, concat, no_grad
    half = len(seeds) // 2 or 1
    rows, cols = seeds[:half], seeds[half:] or seeds[:1]
    xp = G.mapping.w_avg.xp
    z = lambda s: Tensor(xp.asarray(np.random.default_rng(s).standard_normal((1, G.z_dim)).astype(np.float32)))
    label = G.one_hot(args.class_index, 1)
    label = None if label is None else Tensor(xp.asarray(label))
    cutoff = max(G.num_ws // 2, 1)
    tiles = []
    with no_grad():
        for r in rows:
            ws_r = G.mapping(z(r), label, truncation_psi=args.trunc)
            for c in cols:
                ws_c = G.mapping(z(c), label, truncation_psi=args.trunc)
                ws = concat([ws_r[:, :cutoff], ws_c[:, cutoff:]], axis=1)
                tiles.append(backend.to_numpy(G.synthesis(ws, noise_mode="const").data)[0])
    out = os.path.join(args.out, "style_mix.png")
    viz.save_image_grid(np.stack(tiles), out, nrow=len(cols))
    print(f"wrote {out} ({len(rows)} x {len(cols)}: coarse styles by row, fine styles by column)")


if __name__ == "__main__":
    main()
