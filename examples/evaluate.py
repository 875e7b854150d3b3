"""Weight-free quality and diversity metrics of a checkpoint against real slices.

    python examples/evaluate.py --ckpt runs/RUN/latest.npz [--data DIR] [--num 500] [--json out.json]

Prints sliced Wasserstein distance, k-NN precision/recall (exact and pose-tolerant), MS-SSIM
diversity (generated vs real) and memorisation (distance of samples to their nearest training
image vs held-out reals). A conditional checkpoint is evaluated class by class: each class's
samples against that class's reals (keys "<class>/<metric>" in --json).
In Python: nanostyle.evaluate(nanostyle.load(CKPT), num=500).
"""
import argparse
import json

import _common  # first: makes this checkout's nanostyle importable
from _common import friendly_errors


def _parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common.add_model_options(p)
    p.add_argument("--data", metavar="DIR", help="folder of real slices (default: the data the checkpoint was "
                                                 "trained on; the shipped MNI152 slices if none)")
    p.add_argument("--num", type=int, default=500,
                   help="number of generated images, per class for a conditional model (default 500)")
    p.add_argument("--trunc", type=float, default=1.0, metavar="PSI",
                   help="truncation psi of the samples (default 1 = none)")
    p.add_argument("--json", metavar="FILE", help="also write the results to this JSON file (default: print only)")
    p.add_argument("--seed", type=int, default=0, help="seed of the metrics' random draws and of the held-out "
                                                       "split (default 0)")
    return p


@friendly_errors
def main(argv=None):
    args = _parser().parse_args(argv)
    import nanostyle as ns
    from nanostyle import metrics
    G = _common.load_model(args)
    results = ns.evaluate(G, data=args.data, num=args.num, truncation_psi=args.trunc, seed=args.seed)
    if G.c_dim:
        for name in G.class_names:
            found = {key.split("/", 1)[1]: value for key, value in results.items() if key.startswith(name + "/")}
            print(f"class {name}:\n" + metrics.format_table(found))
    else:
        print(metrics.format_table(results))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
