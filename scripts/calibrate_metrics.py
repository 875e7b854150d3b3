"""What precision and recall accept on the default data: the real slices against moved,
darkened, blurred and noisy copies of themselves, for the exact k-NN metric and the
pose/brightness-tolerant one.

    pip install scipy                 # for the warps of this script only, not needed by nanostyle
    python scripts/calibrate_metrics.py [--res 64] [--markdown]

Each row is one altered copy of the real set (the 123 slices and their mirror images, as the
training run sees them), compared with the unaltered set. A metric that judges realism should
keep small moves near 1 and push blur, noise and non-brains towards 0; the table in
docs/experiments.md ("Which precision and recall to read") comes from this script.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nanostyle import metrics  # noqa: E402
from nanostyle.data import load_default_dataset, to_float  # noqa: E402


def altered_sets(real, seed=1):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    res = real.shape[-1]
    centre = np.array([(res - 1) / 2] * 2)

    def affine(scale=1.0, degrees=0.0, shift=(0, 0)):
        out = np.empty_like(real)
        for i, image in enumerate(real):
            angle = np.deg2rad(degrees * rng.choice([-1, 1]))
            matrix = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / scale
            moved = centre + np.array(shift) * rng.choice([-1, 1], 2)
            out[i, 0] = ndimage.affine_transform(image[0], matrix, centre - matrix @ moved, order=1, cval=-1.0)
        return out

    def blur(sigma):
        return ndimage.gaussian_filter(real, (0, 0, sigma, sigma))

    def noise(sigma):
        return np.clip(real + sigma * rng.standard_normal(real.shape), -1, 1)

    def blotches(amplitude):
        # smooth intensity wobble inside the head: the texture of an undertrained generator
        field = ndimage.gaussian_filter(rng.standard_normal(real.shape), (0, 0, 1.5, 1.5))
        return np.clip(np.where(real > -0.9, real + amplitude * field / field.std(), real), -1, 1)

    return {
        "moved 1 px": affine(shift=(1, 0)), "moved 2 px": affine(shift=(2, 1)), "moved 3 px": affine(shift=(3, 2)),
        "zoom 0.95": affine(0.95), "zoom 1.05": affine(1.05), "zoom 0.90": affine(0.90),
        "turned 5 deg": affine(degrees=5), "10% darker": np.clip((real + 1) * 0.9 - 1, -1, 1),
        "blur sigma 0.5": blur(0.5), "blur sigma 1": blur(1.0), "blur sigma 1.5": blur(1.5), "blur sigma 2": blur(2.0),
        "noise sigma 0.03": noise(0.03), "noise sigma 0.1": noise(0.1), "noise sigma 0.2": noise(0.2),
        "blotches 0.1": blotches(0.1), "blotches 0.25": blotches(0.25),
        "uniform noise": rng.uniform(-1, 1, real.shape), "one slice repeated": np.repeat(real[60:61], len(real), 0),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    real = to_float(load_default_dataset(args.res).images).astype(np.float64)
    real = np.concatenate([real, real[..., ::-1]])
    header = ("altered copy", "precision", "recall", "precision_tolerant", "recall_tolerant")
    if args.markdown:
        print("| " + " | ".join(header) + " |\n|" + " --- |" * len(header))
    else:
        print(f"{header[0]:20s}" + "".join(f"{h:>20s}" for h in header[1:]))
    for name, altered in altered_sets(real).items():
        strict = metrics.precision_recall(real, altered)
        tolerant = metrics.precision_recall_tolerant(real, altered)
        values = (strict["precision"], strict["recall"], tolerant["precision_tolerant"], tolerant["recall_tolerant"])
        if args.markdown:
            print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) + " |", flush=True)
        else:
            print(f"{name:20s}" + "".join(f"{v:20.2f}" for v in values), flush=True)


if __name__ == "__main__":
    main()
