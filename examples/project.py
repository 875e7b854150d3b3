"""Project a real slice into a trained generator: find the w whose image matches it, and show
where the two differ (an anomaly map: what the generator cannot draw).

    python examples/project.py --ckpt runs/RUN/latest.npz --target slice.png --out projection
    python examples/project.py --ckpt runs/RUN/latest.npz --target big.png --resize --wplus --steps 500

Writes into --out: projected.png (the projection, native resolution, grayscale), residual.png
(|target - projection| as a heat map, black 0 to yellow --residual-max), comparison.png (the
three with a colour bar), w.npy (float32 [num_ws, w_dim], the synthesis input), noise.npz (the
optimised noise maps, where G has noise inputs) and optimisation.gif (target | projection |
residual as the optimisation runs). In Python: nanostyle.project(G, image).
"""
import argparse
import os

import _common  # first: makes this checkout's nanostyle importable
import numpy as np
from _common import friendly_errors


def _parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common.add_model_options(p)
    p.add_argument("--target", required=True, metavar="SLICE",
                   help="the slice to project: a PNG/JPG at the generator's resolution, grayscale (colour is "
                        "converted with a note) (required)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder, created if needed (required)")
    p.add_argument("--steps", type=int, default=1000, help="optimisation steps (default 1000, as StyleGAN2)")
    p.add_argument("--wplus", action="store_true",
                   help="optimise one w per synthesis layer (W+): closer fits, less like G's own samples "
                        "(default: one w for all layers)")
    p.add_argument("--resize", action="store_true",
                   help="centre-crop and Lanczos-resize a target of another size to the generator's, as "
                        "training's loader does (default: another size is an error)")
    p.add_argument("--lr", type=float, default=0.1, help="Adam's peak learning rate on w (default 0.1)")
    p.add_argument("--ssim-weight", type=float, default=1.0,
                   help="weight of 1 - MS-SSIM beside the pixel MSE in the loss (default 1; 0 = MSE alone)")
    p.add_argument("--noise-weight", type=float, default=1e5,
                   help="weight of the noise maps' regulariser, where G has noise inputs (default 1e5)")
    p.add_argument("--residual-max", type=float, default=0.25, metavar="SHARE",
                   help="residual heat map scale: this share of the intensity range and more is the "
                        "brightest colour (default 0.25)")
    p.add_argument("--seed", type=int, default=0, help="seed of the w perturbation during optimisation (default 0)")
    return p


@friendly_errors
def main(argv=None):
    args = _parser().parse_args(argv)
    if args.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {args.steps}")
    if not args.residual_max > 0:
        raise ValueError(f"--residual-max must be > 0, got {args.residual_max}")
    import nanostyle as ns
    from nanostyle import viz
    from nanostyle.data import to_uint8
    from nanostyle.projector import load_target
    G = _common.load_model(args)
    target, notes = load_target(args.target, G.img_resolution, resize=args.resize)
    for note in notes:
        print(note)
    result = ns.project(G, target, steps=args.steps, wplus=args.wplus, lr=args.lr, ssim_weight=args.ssim_weight,
                        noise_weight=args.noise_weight, seed=args.seed)
    os.makedirs(args.out, exist_ok=True)
    path = lambda name: os.path.join(args.out, name)
    viz.save_png(to_uint8(result.image), path("projected.png"))
    viz.save_png(viz.heat_map(result.residual, vmax=args.residual_max), path("residual.png"))
    viz.plot_projection(result.target, result.image, result.residual, path("comparison.png"), vmax=args.residual_max,
                        title=f"{os.path.basename(args.target)}: PSNR {result.psnr:.1f} dB after {args.steps} steps")
    np.save(path("w.npy"), result.w)
    written = ["projected.png", "residual.png", "comparison.png", "w.npy"]
    if result.noise:
        np.savez(path("noise.npz"), **result.noise)
        written.append("noise.npz")
    viz.save_gif(_gif_frames(result, args.residual_max), path("optimisation.gif"))
    written.append("optimisation.gif")
    print(f"projected {args.target}: PSNR {result.psnr:.1f} dB, loss {result.loss[0]:.4g} -> {result.loss[-1]:.4g}; "
          f"wrote {', '.join(written)} to {args.out}")


def _gif_frames(result, residual_max, min_height=192):
    """target | projection | residual heat map per frame, enlarged (nearest) to at least min_height."""
    from nanostyle import viz
    from nanostyle.data import to_uint8
    gray = lambda image: np.repeat(to_uint8(image)[:, :, None], 3, axis=2)
    scale = max(1, -(-min_height // result.target.shape[0]))
    frames = []
    for image in result.frames:
        residual = np.abs(result.target - image) / 2
        row = np.concatenate([gray(result.target), gray(image), viz.heat_map(residual, vmax=residual_max)], axis=1)
        frames.append(row.repeat(scale, axis=0).repeat(scale, axis=1))
    return np.stack(frames)


if __name__ == "__main__":
    main()
