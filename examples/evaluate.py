"""Weight-free quality and diversity metrics of a checkpoint against real slices.

    python examples/evaluate.py --ckpt runs/RUN/latest.npz [--data DIR] [--num 500] [--json out.json]

Prints sliced Wasserstein distance, k-NN precision/recall, MS-SSIM diversity (generated vs real)
and memorisation (distance of samples to their nearest training image vs held-out reals).
"""
import argparse
import json

import _common  # noqa: F401  (first: makes nanostyle importable and imports it before NumPy)
import numpy as np
from _common import friendly_errors
from sample import load_generator


@friendly_errors
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", help="real images (default: the data the checkpoint was trained on)")
    p.add_argument("--num", type=int, default=500, help="number of generated images")
    p.add_argument("--trunc", type=float, default=1.0)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from nanostyle import metrics
    from nanostyle.data import load_default_dataset, load_image_folder, to_float
    from nanostyle.train import generate
    G, meta = load_generator(args.ckpt)
    res = meta["config"]["res"]
    data = args.data or meta["config"].get("data")
    dataset = load_image_folder(data, res) if data else load_default_dataset(res)
    reals = to_float(dataset.images)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(reals))
    # Memorisation compares samples with a held-out fifth of the reals: both measured against
    # the other four fifths (the held-out images were seen in training too, so this is a lower
    # bound on how far an unseen brain would be; a ratio well below 1 still flags copying).
    n_held = max(len(reals) // 5, 2)
    heldout, rest = reals[order[:n_held]], reals[order[n_held:]]
    fakes = generate(G, seeds=range(100_000, 100_000 + args.num), truncation_psi=args.trunc, noise_mode="random")
    results = metrics.evaluate(reals, fakes, train=rest, heldout=heldout, seed=args.seed)
    results.update(kimg=meta["cur_nimg"] / 1000, num_fake=len(fakes), num_real=len(reals))
    print(metrics.format_table(results))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
