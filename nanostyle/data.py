"""Datasets of 2-D grayscale slices: any image folder (the OASIS PNG layout included), and the
default MNI152 slices shipped in the package.

    ds = load_image_folder("keras_png_slices_train", res=64)      # or load_default_dataset(64)
    ds.images   uint8 [N, 1, res, res]        ds.labels   int64 [N]
    ds.class_names, ds.files, ds.skipped      (skipped: [(path, reason)] of unreadable files)

Folder rules: PNG/JPG/JPEG found recursively, sorted; folders named keras_png_slices_seg* (the
OASIS segmentation masks) are left out; `classes="AD,NC"` keeps the files under those immediate
subfolders and labels them in that order. Each image becomes 8-bit grayscale (RGB(A), palette
and 16-bit inputs are converted; 16-bit data is scaled by its own range), loses `crop_border`
pixels on each side, is centre-cropped to a square and resized to res x res (Lanczos).
The result is cached once as a uint8 .npz (key: the folder, every file's name, size and mtime,
and the options), so a second run starts at once and a changed file rebuilds the cache.
"""
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

CACHE_VERSION = 1
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
SEGMENTATION_PREFIX = "keras_png_slices_seg"
DEFAULT_ASSET = os.path.join(os.path.dirname(__file__), "assets", "mni152_axial.npz")


class DataError(ValueError):
    """A dataset cannot be used; the message says what was found and what to do."""


@dataclass
class SliceDataset:
    images: np.ndarray                      # uint8 [N, 1, res, res]
    labels: np.ndarray                      # int64 [N]
    class_names: list = field(default_factory=list)
    files: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    source: str = ""

    def __len__(self):
        return len(self.images)

    @property
    def resolution(self):
        return self.images.shape[-1]


def to_float(images):
    """uint8 -> float32 in [-1, 1]."""
    return (np.asarray(images, dtype=np.float32) / 127.5 - 1.0).astype(np.float32)


def to_uint8(images):
    """float in [-1, 1] -> uint8 (clipped, rounded)."""
    return np.clip(np.round((np.asarray(images, dtype=np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _warn(message):
    print(f"warning: {message}", file=sys.stderr)


def _to_grayscale(image):
    """Any PIL image -> 2-D uint8 array."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        return np.round((array - low) * scale).astype(np.uint8)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def preprocess(gray, res, crop_border=0):
    """2-D uint8 -> res x res uint8: border crop, centre square crop, Lanczos resize."""
    if crop_border:
        if 2 * crop_border >= min(gray.shape):
            raise DataError(f"crop_border={crop_border} removes the whole {gray.shape} image")
        gray = gray[crop_border:-crop_border, crop_border:-crop_border]
    h, w = gray.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    gray = gray[top:top + side, left:left + side]
    if side != res:
        gray = np.asarray(Image.fromarray(gray).resize((res, res), Image.LANCZOS))
    return gray


def _list_images(root, classes):
    files, labels, seen_ext, skipped_seg = [], [], {}, False
    if classes:
        subfolders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        missing = [c for c in classes if c not in subfolders]
        if missing:
            raise DataError(f"class folder(s) {missing} not found in {root}; its subfolders are "
                            f"{subfolders or 'none'}. Pass --classes with names from that list.")
        roots = [(os.path.join(root, c), i) for i, c in enumerate(classes)]
    else:
        roots = [(root, 0)]
    for base, label in roots:
        for directory, dirs, names in os.walk(base):
            kept = [d for d in dirs if not d.startswith(SEGMENTATION_PREFIX)]
            skipped_seg |= len(kept) != len(dirs)
            dirs[:] = sorted(kept)
            for name in sorted(names):
                ext = os.path.splitext(name)[1].lower()
                seen_ext[ext or "(none)"] = seen_ext.get(ext or "(none)", 0) + 1
                if ext in IMAGE_EXTENSIONS:
                    files.append(os.path.join(directory, name))
                    labels.append(label)
    return files, labels, seen_ext, skipped_seg


def _cache_path(root, files, res, crop_border, classes, cache_dir):
    listing = []
    for path in files:
        stat = os.stat(path)
        listing.append((os.path.relpath(path, root), stat.st_size, stat.st_mtime_ns))
    key = json.dumps([CACHE_VERSION, os.path.abspath(root), listing, res, crop_border, classes])
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f"slices-{os.path.basename(os.path.abspath(root))}-{res}-{digest}.npz")


def default_cache_dir():
    return os.environ.get("NANOSTYLE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "nanostyle")


def _write_npz_atomic(path, **arrays):
    from .checkpoint import write_atomic
    write_atomic(path, lambda handle: np.savez(handle, **arrays))


def load_image_folder(path, res, classes=None, crop_border=0, cache_dir=None, verbose=True):
    """Load (and cache) every image under `path` as res x res grayscale slices."""
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    classes = list(classes) if classes else None
    if not os.path.isdir(path):
        raise DataError(f"data folder {path!r} does not exist or is not a folder; pass --data with a "
                        "folder of PNG/JPG images (searched recursively)")
    files, labels, seen_ext, skipped_seg = _list_images(path, classes)
    if skipped_seg and verbose:
        print(f"note: left out folders named {SEGMENTATION_PREFIX}* (OASIS segmentation masks)", file=sys.stderr)
    if not files:
        found = ", ".join(f"{n} {e}" for e, n in sorted(seen_ext.items())) or "no files at all"
        raise DataError(f"no images in {path!r} (found {found}); nanostyle reads .png, .jpg and .jpeg "
                        "files, recursively")
    cache_dir = cache_dir or default_cache_dir()
    cache = _cache_path(path, files, res, crop_border, classes, cache_dir)
    if os.path.exists(cache):
        try:
            with np.load(cache, allow_pickle=False) as stored:
                images, kept = stored["images"], stored["kept"]
                skipped = [tuple(s.split("\t", 1)) for s in stored["skipped"].tolist()]
            for file, reason in skipped:
                _warn(f"skipped unreadable image {file}: {reason}")
            return SliceDataset(images, np.asarray(labels, np.int64)[kept], classes or [],
                                [files[i] for i in kept], skipped, os.path.abspath(path))
        except Exception as error:  # a broken cache is rebuilt, never trusted
            if verbose:
                _warn(f"ignoring unreadable cache {cache} ({error}); rebuilding it")
    images, kept, skipped = [], [], []
    progress = _progress(len(files), f"preprocessing {len(files)} images to {res}x{res}", verbose)
    for i, file in enumerate(files):
        try:
            with Image.open(file) as image:
                image.load()
                gray = _to_grayscale(image)
            images.append(preprocess(gray, res, crop_border))
            kept.append(i)
        except DataError:
            raise
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
            reason = str(error) or type(error).__name__
            skipped.append((file, reason))
            _warn(f"skipped unreadable image {file}: {reason}")
        progress.update(1)
    progress.close()
    if not images:
        raise DataError(f"none of the {len(files)} image files in {path!r} could be read "
                        f"({len(skipped)} unreadable; first: {skipped[0][0]}: {skipped[0][1]}); "
                        "check that they are valid PNG/JPG files")
    images = np.stack(images)[:, None]
    kept = np.asarray(kept, dtype=np.int64)
    try:
        _write_npz_atomic(cache, images=images, kept=kept,
                          skipped=np.asarray([f"{f}\t{r}" for f, r in skipped], dtype=str))
    except OSError as error:
        if verbose:
            _warn(f"could not write the cache {cache}: {error} (continuing without it)")
    return SliceDataset(images, np.asarray(labels, np.int64)[kept], classes or [],
                        [files[i] for i in kept], skipped, os.path.abspath(path))


def load_default_dataset(res):
    """The MNI152 2009a axial slices shipped with the package (see assets/MNI152_NOTICE.txt)."""
    with np.load(DEFAULT_ASSET, allow_pickle=False) as stored:
        slices = stored["slices"]
    if res > slices.shape[-1]:
        raise DataError(f"the default data is {slices.shape[-1]}x{slices.shape[-1]}; --res {res} is larger. "
                        f"Use --res {slices.shape[-1]} or less, or pass --data with larger images")
    images = np.stack([preprocess(s, res) for s in slices])[:, None]
    return SliceDataset(images, np.zeros(len(images), np.int64), [],
                        [f"mni152:axial{i}" for i in range(len(images))], [], "default: MNI152 2009a axial slices")


_SUBJECT = re.compile(r"case_(\d+)")   # OASIS file names: case_001_slice_0.nii.png


def slice_groups(dataset, block=8):
    """A group number per slice, for held-out splits that hold out neighbours together.

    When every file name carries an OASIS subject (`case_NNN`), the group is the subject, so a
    held-out brain is unseen as a whole. Otherwise (the default data: one brain's axial slices in
    anatomical order; or any folder without subject names) groups are runs of `block` consecutive
    slices in file order (fewer when that would make fewer than 5 groups): a held-out slice's
    neighbours, nearly the same image, go with it."""
    if block < 1:
        raise ValueError(f"slice_groups: block must be >= 1, got {block}")
    subjects = [_SUBJECT.search(os.path.basename(f)) for f in dataset.files]
    if subjects and len(subjects) == len(dataset) and all(subjects):
        _, groups = np.unique([int(m.group(1)) for m in subjects], return_inverse=True)
        return groups.astype(np.int64)
    block = max(1, min(block, len(dataset) // 5))
    return np.arange(len(dataset), dtype=np.int64) // block


def heldout_split(groups, fraction=0.2, seed=0):
    """(train, heldout) index arrays: whole groups, drawn at random, held out until at least
    `fraction` of the slices are (at least one group, never all of them)."""
    groups = np.asarray(groups)
    unique = np.unique(groups)
    if len(unique) < 2:
        raise ValueError(f"heldout_split: need at least 2 groups to hold one out, got {len(unique)}")
    if not 0 < fraction < 1:
        raise ValueError(f"heldout_split: fraction must be between 0 and 1, got {fraction}")
    chosen, count = [], 0
    for group in np.random.default_rng(seed).permutation(unique)[:-1]:
        if count >= fraction * len(groups):
            break
        chosen.append(group)
        count += int(np.sum(groups == group))
    held = np.isin(groups, chosen)
    return np.flatnonzero(~held), np.flatnonzero(held)


def _progress(total, description, enabled):
    try:
        from tqdm import tqdm
        return tqdm(total=total, desc=description, disable=not enabled or total < 200, file=sys.stderr)
    except ImportError:  # tqdm is a dependency, but a missing bar must not stop the data
        class _Silent:
            def update(self, n):
                pass

            def close(self):
                pass
        return _Silent()
