"""Data loading at OASIS size: first load, cached load and peak memory of nanostyle.data.

    python benchmarks/data_load.py [--num 11328] [--size 256] [--res 256] [--workers N] [--json FILE]

Builds a folder like OASIS's keras_png_slices_* (11,328 grayscale PNGs of 256x256 by default)
in a temporary folder: brain-like slices (a skull ring, smooth tissue texture, dark ventricles,
scanner noise), not random pixels, so the PNGs compress and decode like real ones. Then loads it
twice, each time in its own Python process so that each peak resident memory (getrusage
ru_maxrss) is its own: first with an empty cache (decode on threads + write the .npy cache),
then again (the cache, memory-mapped). Each load also draws one batch of 32 as float32, as the
training loop does. Targets (issue 27): cached start under 5 s, peak memory well under 2 GB.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smooth_fields(rng, count, size, cells=8):
    """`count` smooth random fields in [0, 1] (cells x cells noise, bicubic-upsampled)."""
    from PIL import Image
    fields = []
    for _ in range(count):
        coarse = rng.uniform(0, 255, (cells, cells)).astype(np.uint8)
        fields.append(np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), np.float32) / 255)
    return fields


def brain_slice(rng, fields, size):
    """One uint8 slice: head ellipse with a skull ring, textured tissue, ventricles, noise;
    fields: (coarse, fine) lists from smooth_fields."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    cy, cx = rng.normal(0, 0.02, 2)
    ry, rx = rng.uniform(0.36, 0.45), rng.uniform(0.28, 0.36)     # a slice higher up is smaller
    radius = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2
    coarse, fine = fields
    tissue = (0.45 + 0.3 * coarse[rng.integers(len(coarse))]                     # grey/white matter
              + 0.2 * fine[rng.integers(len(fine))] * coarse[rng.integers(len(coarse))])   # folds
    image = np.where(radius < 0.85, tissue, 0.0)
    image = np.where((radius >= 0.88) & (radius < 1.0), 0.9, image)                 # skull
    ventricle = ((y - cy) / (0.25 * ry)) ** 2 + ((x - cx) / (0.12 * rx)) ** 2
    image = np.where(ventricle < 1, 0.15, image)
    image = image + rng.normal(0, 0.012, image.shape) * (radius < 1.05)             # scanner noise
    return np.clip(image * 255, 0, 255).astype(np.uint8)


def build_folder(folder, num, size, seed=0):
    """num PNGs in OASIS's layout and naming; returns their mean size in bytes."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    fields = smooth_fields(rng, 64, size), smooth_fields(rng, 64, size, cells=28)
    os.makedirs(folder)
    seeds = rng.integers(0, 2 ** 31, num)

    def write(i):
        image = brain_slice(np.random.default_rng(seeds[i]), fields, size)
        path = os.path.join(folder, f"case_{i // 32:03d}_slice_{i % 32}.nii.png")
        Image.fromarray(image).save(path)
        return os.path.getsize(path)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        sizes = list(pool.map(write, range(num)))
    return float(np.mean(sizes))


def child(folder, res, cache_dir, workers):
    """One load in this process: prints seconds and peak memory as JSON."""
    import resource
    start = time.perf_counter()
    sys.path.insert(0, ROOT)
    from nanostyle.data import load_data
    imported = time.perf_counter()
    dataset = load_data(folder, res, cache_dir=cache_dir, workers=workers, verbose=False)
    loaded = time.perf_counter()
    batch = dataset.batch(np.random.default_rng(0).choice(len(dataset), 32, replace=False))
    done = time.perf_counter()
    print(json.dumps(dict(images=len(dataset), memmap=isinstance(dataset.images, np.memmap),
                          import_s=imported - start, load_s=loaded - imported, batch_s=done - loaded,
                          batch_shape=list(batch.shape),
                          peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))


def run_child(folder, res, cache_dir, workers):
    command = [sys.executable, os.path.abspath(__file__), "--child", folder, "--res", str(res),
               "--cache", cache_dir] + (["--workers", str(workers)] if workers else [])
    start = time.perf_counter()
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num", type=int, default=11328, help="images (OASIS: 9,664 + 1,120 + 544)")
    p.add_argument("--size", type=int, default=256, help="side of each PNG")
    p.add_argument("--res", type=int, default=256, help="training resolution to load at")
    p.add_argument("--workers", type=int, help="decoding threads (default: the loader's own)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.res, args.cache, args.workers)

    temp = tempfile.mkdtemp(prefix="nanostyle-data-load-")
    try:
        folder = os.path.join(temp, "keras_png_slices_train")
        start = time.perf_counter()
        mean_png = build_folder(folder, args.num, args.size)
        built_s = time.perf_counter() - start
        print(f"built {args.num} PNGs of {args.size}x{args.size} (mean {mean_png / 1024:.1f} KiB) in {built_s:.1f} s")
        cache = os.path.join(temp, "cache")
        first = run_child(folder, args.res, cache, args.workers)
        cached = run_child(folder, args.res, cache, args.workers)
        cache_mb = sum(os.path.getsize(os.path.join(cache, f)) for f in os.listdir(cache)) / 2 ** 20
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    float32_gb = args.num * args.res * args.res * 4 / 2 ** 30
    print(f"{'load':8s} {'images':>7s} {'load s':>8s} {'process s':>10s} {'batch ms':>9s} {'peak RSS MB':>12s}")
    for name, r in (("first", first), ("cached", cached)):
        print(f"{name:8s} {r['images']:7d} {r['load_s']:8.2f} {r['process_s']:10.2f} {r['batch_s'] * 1000:9.1f} "
              f"{r['peak_rss_mb']:12.0f}")
    print(f"cache on disk: {cache_mb:.0f} MiB uint8 (memory-mapped: {cached['memmap']}); "
          f"the whole set as float32 would be {float32_gb:.2f} GiB")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(dict(num=args.num, size=args.size, res=args.res, mean_png_bytes=mean_png, build_s=built_s,
                           first=first, cached=cached, cache_mib=cache_mb), handle, indent=1)


if __name__ == "__main__":
    main()
