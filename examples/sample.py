"""Images from a nanostyle checkpoint (its G_ema).

    python examples/sample.py --ckpt runs/RUN/latest.npz --seeds 0-63          # one PNG per seed
    python examples/sample.py --ckpt w.npz --num 16 --grid --trunc 0.7
    python examples/sample.py --ckpt w.npz --interp          # latent interpolation GIF
    python examples/sample.py --ckpt w.npz --mix             # style-mixing grid
"""
import argparse
import os

import _common  # noqa: F401  (first: makes nanostyle importable and imports it before NumPy)
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


def load_generator(path):
    from nanostyle.checkpoint import CheckpointError, load_checkpoint
    from nanostyle.networks import Generator
    arrays, meta = load_checkpoint(path)
    try:
        config = meta["config"]
        G = Generator(img_resolution=config["res"], img_channels=1, **meta["network"]["G"])
        G.load_state_dict({k[len("G_ema/"):]: v for k, v in arrays.items() if k.startswith("G_ema/")})
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path!r} holds no usable generator: {error}") from None
    return G, meta


@friendly_errors
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="checkpoint .npz (latest.npz or ckpt-*.npz)")
    p.add_argument("--seeds", help="seeds, e.g. 0-63 or 1,5,9 (default 0-63)")
    p.add_argument("--num", type=int, help="number of images (seeds 0..num-1)")
    p.add_argument("--trunc", type=float, default=1.0, help="truncation psi (1 = none)")
    p.add_argument("--out", default="samples", help="output folder (default ./samples)")
    p.add_argument("--grid", action="store_true", help="write one grid PNG instead of one PNG per seed")
    p.add_argument("--interp", action="store_true", help="write a latent-interpolation GIF")
    p.add_argument("--mix", action="store_true", help="write a style-mixing grid")
    p.add_argument("--noise", choices=["const", "random", "none"], default="const")
    args = p.parse_args(argv)

    from nanostyle import viz
    G, meta = load_generator(args.ckpt)
    seeds = parse_seeds(args.seeds) if args.seeds else list(range(args.num if args.num else 64))
    os.makedirs(args.out, exist_ok=True)
    images = G.generate(seeds=seeds, truncation_psi=args.trunc, noise_mode=args.noise)
    if args.grid:
        path = os.path.join(args.out, "grid.png")
        viz.save_image_grid(images, path)
        print(f"wrote {path} ({len(seeds)} images)")
    else:
        paths = viz.save_images(images, args.out, [f"seed{s:04d}" for s in seeds])
        print(f"wrote {len(paths)} PNGs to {args.out}")
    if args.interp:
        write_interpolation(G, seeds[:8], args)
    if args.mix:
        write_style_mix(G, seeds[:6], args)


def write_interpolation(G, seeds, args, steps=12):
    """Spherical-free linear interpolation in z between consecutive seeds, as one GIF."""
    from nanostyle import viz
    if len(seeds) < 2:
        seeds = [seeds[0], seeds[0] + 1]
    zs = [np.random.default_rng(s).standard_normal(G.z_dim) for s in seeds + seeds[:1]]
    frames = []
    for a, b in zip(zs[:-1], zs[1:]):
        for t in np.linspace(0, 1, steps, endpoint=False):
            frames.append((1 - t) * a + t * b)
    images = G.generate(z=np.asarray(frames, dtype=np.float32), truncation_psi=args.trunc, noise_mode="const")
    paths = viz.save_images(images, os.path.join(args.out, "interp_frames"), [f"f{i:04d}" for i in range(len(images))])
    out = os.path.join(args.out, "interpolation.gif")
    viz.make_gif(paths, out, duration_ms=80)
    print(f"wrote {out} ({len(paths)} frames)")


def write_style_mix(G, seeds, args):
    """Rows: coarse styles (first ws) from row seeds; columns: fine styles from column seeds."""
    from nanostyle import viz
    from nanostyle.autograd import Tensor, concat, no_grad
    from nanostyle import backend
    half = len(seeds) // 2 or 1
    rows, cols = seeds[:half], seeds[half:] or seeds[:1]
    z = lambda s: Tensor(np.random.default_rng(s).standard_normal((1, G.z_dim)).astype(np.float32))
    cutoff = max(G.num_ws // 2, 1)
    tiles = []
    with no_grad():
        for r in rows:
            ws_r = G.mapping(z(r), truncation_psi=args.trunc)
            for c in cols:
                ws_c = G.mapping(z(c), truncation_psi=args.trunc)
                ws = concat([ws_r[:, :cutoff], ws_c[:, cutoff:]], axis=1)
                tiles.append(backend.to_numpy(G.synthesis(ws, noise_mode="const").data)[0])
    out = os.path.join(args.out, "style_mix.png")
    viz.save_image_grid(np.stack(tiles), out, nrow=len(cols))
    print(f"wrote {out} ({len(rows)} x {len(cols)}: coarse styles by row, fine styles by column)")


if __name__ == "__main__":
    main()
