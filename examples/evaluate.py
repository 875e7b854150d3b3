"""Weight-free quality and diversity metrics of a checkpoint against real slices.

    python examples/evaluate.py --ckpt runs/RUN/latest.npz [--data DIR] [--num 500] [--json out.json]

Prints sliced Wasserstein distance, k-NN precision/recall, MS-SSIM diversity (generated vs real)
and memorisation (distance of samples to their nearest training image vs held-out reals).
A conditional checkpoint is evaluated class by class: each class's samples against that class's
reals (keys "<class>/<metric>" in --json).
"""
import argparse
import json

import _common  # noqa: F401  (first: makes nanostyle importable and imports it before NumPy)
from _common import friendly_errors
from sample import load_generator


@friendly_errors
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", help="real images (default: the data the checkpoint was trained on)")
    p.add_argument("--num", type=int, default=500,
                   help="number of generated images (per class, for a conditional model)")
    p.add_argument("--trunc", type=float, default=1.0)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from nanostyle import metrics
    from nanostyle.data import load_data, load_default_dataset, slice_groups, to_float
    G, meta = load_generator(args.ckpt)
    config = meta["config"]
    res = config["res"]
    data = args.data or config.get("data")
    class_names = meta.get("class_names") if G.c_dim else None
    dataset = load_data(data, res, classes=class_names or config.get("classes"), crop_border=config.get("crop_border", 0),
                        axis=config.get("axis", "axial")) if data else load_default_dataset(res)
    if class_names:
        results, groups = {}, slice_groups(dataset)
        for label, name in enumerate(class_names):
            rows = dataset.labels == label
            found = evaluate_set(G, to_float(dataset.images[rows]), groups[rows], args, c=label)
            print(f"class {name}:\n" + metrics.format_table(found))
            results.update({f"{name}/{key}": value for key, value in found.items()})
        results.update(kimg=meta["cur_nimg"] / 1000)
    else:
        results = evaluate_set(G, to_float(dataset.images), slice_groups(dataset), args)
        results.update(kimg=meta["cur_nimg"] / 1000)
        print(metrics.format_table(results))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
        print(f"wrote {args.json}")


def evaluate_set(G, reals, groups, args, c=None):
    """The metrics of G's samples (of class c) against `reals` (their slice `groups`)."""
    from nanostyle import metrics
    from nanostyle.data import heldout_split
    # Memorisation compares samples with held-out reals, both measured against the remaining
    # slices. Whole groups are held out (OASIS subjects; on other data runs of 8 neighbouring
    # slices), so a held-out slice has no near-twin left in the reference set. The model saw
    # these slices in training too, so this is a lower bound on how far an unseen brain would
    # be; a ratio well below 1 still flags copying.
    rest, held = heldout_split(groups, fraction=0.2, seed=args.seed)
    heldout, rest = reals[held], reals[rest]
    fakes = G.generate(seeds=range(100_000, 100_000 + args.num), c=c, truncation_psi=args.trunc, noise_mode="random")
    results = metrics.evaluate(reals, fakes, train=rest, heldout=heldout, seed=args.seed)
    results.update(num_fake=len(fakes), num_real=len(reals))
    return results


if __name__ == "__main__":
    main()
