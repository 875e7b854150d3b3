"""The latent space as a picture: the w of sampled images projected to two dimensions, coloured
by class for a conditional model, written as a PNG.

    python examples/plot_latents.py --ckpt runs/RUN/latest.npz                # latents.png, by PCA
    python examples/plot_latents.py --ckpt cond.npz --num 2000 --method both  # PCA and UMAP side by side

PCA (NumPy): w centred on its mean, projected on the two directions of largest variance; each
axis says its share of the total variance of w, so a picture whose axes hold a few percent shows
little of the space. UMAP (--method umap or both) needs `pip install umap-learn`; PCA needs
nothing beyond nanostyle.
"""
import argparse
import os

import _common  # first: makes this checkout's nanostyle importable
import numpy as np
from _common import friendly_errors


def _parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common.add_model_options(p, "checkpoint: a run's latest.npz or ckpt-<kimg>.npz, or the run folder; "
                                 "its G_ema is used (required)")
    p.add_argument("--num", type=int, default=1000,
                   help="number of sampled images, split evenly over the classes of a conditional model (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="first seed: z of sample i from seed + i (default 0)")
    p.add_argument("--trunc", type=float, default=1.0, help="truncation psi applied to w (default 1 = none)")
    p.add_argument("--method", choices=["pca", "umap", "both"], default="pca",
                   help="projection: pca (NumPy), umap (needs umap-learn) or both side by side (default pca)")
    p.add_argument("--out", default="latents.png", help="output PNG (default ./latents.png)")
    return p


def sample_w(G, seeds, labels, trunc, batch=256):
    """w [N, w_dim] (float64) of the samples of `seeds` (and class `labels`, for a conditional G)."""
    z = np.stack([np.random.default_rng(int(s)).standard_normal(G.z_dim) for s in seeds]).astype(np.float32)
    return G.map(z, labels, truncation_psi=trunc, batch=batch)


def pca(x, components=2):
    """(coordinates [N, components], share of the total variance on each axis) of x [N, D]."""
    centred = x - x.mean(axis=0)
    _, singular, directions = np.linalg.svd(centred, full_matrices=False)
    variance = singular ** 2
    return centred @ directions[:components].T, variance[:components] / max(variance.sum(), 1e-300)


def umap_2d(x, seed):
    try:
        import umap
    except ImportError:
        raise ValueError("--method umap needs umap-learn: pip install umap-learn (or use --method pca)") from None
    return umap.UMAP(n_components=2, random_state=seed).fit_transform(x)


def plot(panels, labels, names, title, path):
    """One scatter panel per (coordinates, x label, y label, panel title), points coloured by class."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(5.5 * len(panels), 5), dpi=100)
    FigureCanvasAgg(figure)
    for i, (coordinates, xlabel, ylabel, panel_title) in enumerate(panels):
        ax = figure.add_subplot(1, len(panels), i + 1)
        for label, name in enumerate(names):
            rows = labels == label
            ax.scatter(coordinates[rows, 0], coordinates[rows, 1], s=6, alpha=0.6, label=name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title)
        ax.grid(alpha=0.3)
        if len(names) > 1:
            ax.legend(markerscale=3)
    figure.suptitle(title)
    from nanostyle.checkpoint import write_atomic
    write_atomic(path, lambda handle: figure.savefig(handle, format="png", bbox_inches="tight"))


@friendly_errors
def main(argv=None):
    args = _parser().parse_args(argv)
    if args.num < 2:
        raise ValueError(f"--num {args.num}: need at least 2 samples to project")
    G = _common.load_model(args)
    seeds = range(args.seed, args.seed + args.num)
    if G.c_dim:
        names = G.class_names
        labels = np.arange(args.num) * G.c_dim // args.num            # evenly over the classes
    else:
        names, labels = ["samples"], np.zeros(args.num, dtype=np.int64)
    w = sample_w(G, seeds, labels if G.c_dim else None, args.trunc)
    panels = []
    if args.method in ("pca", "both"):
        coordinates, share = pca(w)
        panels.append((coordinates, f"PC1 ({100 * share[0]:.1f} % of the variance of w)",
                       f"PC2 ({100 * share[1]:.1f} % of the variance of w)", "PCA"))
    if args.method in ("umap", "both"):
        panels.append((umap_2d(w, args.seed), "UMAP 1", "UMAP 2", "UMAP"))
    kimg = G.kimg
    title = (f"w of {args.num} samples, {os.path.basename(args.ckpt)} at {kimg:g} kimg"
             + (f", truncation {args.trunc:g}" if args.trunc != 1 else ""))
    plot(panels, labels, names, title, args.out)
    print(f"wrote {args.out} ({args.method}; {', '.join(names) if G.c_dim else 'unconditional'})")


if __name__ == "__main__":
    main()
