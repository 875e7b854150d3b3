"""Datasets of 2-D grayscale slices: image folders (the OASIS PNG layout included), NIfTI/Analyze
volumes cut into slices (volumes.py), and the default MNI152 slices shipped in the package.

    ds = load_data("keras_png_slices_train", res=64)    # or a .nii.gz, or a folder of volumes
    ds.images   uint8 [N, 1, res, res] (memory-mapped from the cache)   ds.labels   int64 [N]
    ds.batch(index) -> float32 [len(index), 1, res, res] in [-1, 1]: only a batch becomes float
    ds.class_names, ds.files, ds.skipped      (skipped: [(path, reason)] of files left out)

Folder rules: images (.png, .jpg, .jpeg) or volumes (.nii, .nii.gz, Analyze .img/.hdr), found
recursively and sorted, never both in one folder; names starting with "." (macOS's ._x.png)
and folders named keras_png_slices_seg* (the OASIS segmentation masks) are left out.
`classes="AD,NC"` keeps the files under those immediate subfolders and labels them in that
order; `classes="*"` labels every immediate subfolder (sorted by name).
Each image becomes 8-bit grayscale (RGB(A), palette and 16-bit inputs are converted; 16-bit data
is scaled by its own range), loses `crop_border` pixels on each side, is centre-cropped to a
square and resized to res x res (Lanczos); volume slices take the same path after volumes.py.
One bad file never ends a run: a file that cannot be decoded (truncated, not an image, a
decompression bomb above the pixel limit, a 4-D or empty volume) is named, skipped and counted
in one summary line; only a dataset where nothing loads is an error.
The result is cached as a uint8 .npy, opened memory-mapped, beside a .json of what it holds;
the .json records every file's name, size and mtime, so a changed file rebuilds the cache, and
a broken cache is rebuilt, never trusted.
"""
import contextlib
import hashlib
import json
import os
import re
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from . import volumes
from .checkpoint import remove_temporaries, write_atomic
from .volumes import AXES, MIN_BRAIN_FRACTION

CACHE_VERSION = 2
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
SEGMENTATION_PREFIX = "keras_png_slices_seg"
DEFAULT_ASSET = os.path.join(os.path.dirname(__file__), "assets", "mni152_axial.npz")
# Far above a 256-1024 px slice, far below a decompression bomb; checked from the header, before
# any pixel is decoded. NANOSTYLE_MAX_PIXELS or max_pixels= raises it.
DEFAULT_MAX_PIXELS = 4096 * 4096
SUMMARY_NAMES = 3               # files named in a summary line; the rest are counted


class DataError(ValueError):
    """A dataset cannot be used; the message says what was found and what to do."""


@dataclass
class SliceDataset:
    images: np.ndarray                      # uint8 [N, 1, res, res]; a read-only memmap when cached
    labels: np.ndarray                      # int64 [N]
    class_names: list = field(default_factory=list)
    files: list = field(default_factory=list)     # per image; volume slices: "path[axial 57]"
    skipped: list = field(default_factory=list)   # [(path, reason)]
    source: str = ""
    num_upscaled: int = 0                   # images smaller than res x res, used upscaled

    def __len__(self):
        return len(self.images)

    @property
    def resolution(self):
        return self.images.shape[-1]

    def batch(self, index):
        """float32 [len(index), 1, res, res] in [-1, 1]: the images at `index` (ints, an int
        array or a slice), read from the memory-mapped cache; the rest stay uint8 on disk."""
        return to_float(self.images[index])


def to_float(images):
    """uint8 -> float32 in [-1, 1]."""
    floats = np.asarray(images, dtype=np.float32) / np.float32(127.5)
    floats -= np.float32(1)
    return floats


def to_uint8(images):
    """float in [-1, 1] -> uint8 (clipped, rounded)."""
    return np.clip(np.round((np.asarray(images, dtype=np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _warn(message):
    print(f"warning: {message}", file=sys.stderr)


def _note(message, verbose):
    if verbose:
        print(f"note: {message}", file=sys.stderr)


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


# ---------------------------------------------------------------------------------------------
# Loading


def load_data(path, res, classes=None, crop_border=0, cache_dir=None, verbose=True, *, axis="axial",
              workers=None, max_pixels=None, max_voxels=None, min_brain_fraction=MIN_BRAIN_FRACTION):
    """Load (and cache) `path` as res x res grayscale slices -> SliceDataset.

    path: a folder of images, a folder of volumes, or one volume file (.nii, .nii.gz, .img/.hdr).
    classes: None (one class), "AD,NC" or a list (those immediate subfolders, labelled in that
        order), or "*" (every immediate subfolder, sorted).
    axis: "axial" | "coronal" | "sagittal", for volumes. min_brain_fraction: a volume slice is
        kept when this share of its pixels is brain (volumes.py).
    workers: decoding threads (default min(8, cores)); the result does not depend on it.
    max_pixels: the largest image (width x height) decoded; default DEFAULT_MAX_PIXELS or the
        environment's NANOSTYLE_MAX_PIXELS. max_voxels: the same for volumes (NANOSTYLE_MAX_VOXELS).

    A file that cannot be used (unreadable, truncated, not an image, above the size limit, a 4-D,
    empty, constant or non-finite volume) is skipped and named in one summary line on stderr;
    the full list is in `.skipped`. Raises DataError when `path` is missing, holds nothing
    usable, mixes images and volumes, when nothing in it loads (naming the first failure), and
    when `path` is a single volume that cannot be used (naming it and the reason)."""
    res = _check_int("res", res, 1)
    crop_border = _check_int("crop_border", crop_border, 0)
    if axis not in AXES:
        raise DataError(f"axis must be one of {', '.join(AXES)} (--axis); got {axis!r}")
    if not 0 <= min_brain_fraction <= 1:
        raise DataError(f"min_brain_fraction must be between 0 and 1; got {min_brain_fraction!r}")
    workers = min(8, os.cpu_count() or 1) if workers is None else _check_int("workers", workers, 1)
    max_pixels = _limit("max_pixels", max_pixels, "NANOSTYLE_MAX_PIXELS", DEFAULT_MAX_PIXELS)
    max_voxels = _limit("max_voxels", max_voxels, "NANOSTYLE_MAX_VOXELS", volumes.DEFAULT_MAX_VOXELS)
    class_spec = _parse_classes(classes)

    if os.path.isfile(path):
        if volumes.volume_suffix(path) is None:
            raise DataError(f"--data {path!r} is a file but not a volume; pass a folder of PNG/JPG images, "
                            "or a NIfTI/Analyze volume (.nii, .nii.gz, .img/.hdr) or a folder of them")
        if class_spec is not None:
            raise DataError(f"--classes needs a folder whose subfolders are the classes; {path!r} is one volume")
        directory, name = os.path.split(path)
        listed = volumes.volumes_in(directory, os.listdir(directory or "."))
        # an Analyze pair is one volume, named by its .img, whichever half was passed
        volume, companions = next((v, c) for v, c in listed if name in map(os.path.basename, [v] + c))
        items, kind, class_names, base = [(volume, 0, companions)], "volumes", [], directory or "."
    elif os.path.isdir(path):
        items, kind, class_names = _list_folder(path, class_spec, verbose)
        base = path
    else:
        raise DataError(f"--data {path!r} does not exist; pass a folder of PNG/JPG images (searched "
                        "recursively), or a NIfTI/Analyze volume or a folder of them")

    if kind == "volumes":
        volumes.require_nibabel()
        workers = min(workers, 4)          # a volume in flight holds a few copies of itself
        decode = _VolumeDecoder(res, crop_border, axis, min_brain_fraction, max_voxels)
        options = dict(axis=axis, min_brain_fraction=min_brain_fraction, max_voxels=max_voxels)
    else:
        decode = _ImageDecoder(res, crop_border, max_pixels)
        options = dict(max_pixels=max_pixels)
    options.update(version=CACHE_VERSION, source=os.path.abspath(path), kind=kind, res=res,
                   crop_border=crop_border, classes=class_spec)
    cache_dir = cache_dir or default_cache_dir()
    digest = hashlib.sha1(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]
    name = os.path.basename(os.path.abspath(path)).replace(".", "_")
    cache = os.path.join(cache_dir, f"slices-{name}-{res}-{digest}")
    listing = _listing_digest(items, base)

    what = "volume files" if kind == "volumes" else "image files"
    with _pil_pixel_limit(max_pixels):
        images, record = _cached_or_built(cache, listing, items, base, decode, res, workers, what, verbose)
    if not len(images):
        first, reason = record["skipped"][0]
        if os.path.isfile(path):
            raise DataError(f"volume {path!r} cannot be used: {reason}")
        raise DataError(f"none of the {len(items)} {what} in {path!r} could be used ({len(record['skipped'])} "
                        f"skipped; first: {first}: {reason}); check that they are valid "
                        + ("NIfTI/Analyze volumes" if kind == "volumes" else "PNG/JPG files"))

    skipped = record["skipped"]
    if skipped:
        shown = "; ".join(f"{file} ({reason})" for file, reason in skipped[:SUMMARY_NAMES])
        more = f"; and {len(skipped) - SUMMARY_NAMES} more" if len(skipped) > SUMMARY_NAMES else ""
        _warn(f"skipped {len(skipped)} of {len(items)} {what} that could not be used: {shown}{more} "
              "(all of them are listed in the dataset's .skipped)")
    if record["upscaled"]:
        file, size = record["first_upscaled"]
        unit = "slices" if kind == "volumes" else "images"
        _warn(f"{record['upscaled']} of {len(images)} {unit} are smaller than {res}x{res} and were upscaled "
              f"(first: {file}, {size}); pass a smaller --res or leave them out")
    sources, slices = record["source"], record["slice"]
    files = [items[i][0] if k < 0 else f"{items[i][0]}[{axis} {k}]" for i, k in zip(sources, slices)]
    labels = np.asarray([items[i][1] for i in sources], dtype=np.int64)
    return SliceDataset(images, labels, class_names, files, skipped, os.path.abspath(path), record["upscaled"])


load_image_folder = load_data   # the older name, kept for existing callers


def check_minibatch_std_group(dataset, group_size):
    """Raise DataError unless `dataset` holds at least one minibatch-stddev group of images
    (and at least 2: the diversity metrics compare pairs). Call it before training with the
    discriminator's group size."""
    need = max(int(group_size), 2)
    if len(dataset) >= need:
        return
    count = len(dataset.skipped)
    skipped = f" ({count} file{' was' if count == 1 else 's were'} skipped as unusable)" if count else ""
    why = (f"datasets need at least as many images as one minibatch-stddev group of the discriminator "
           f"({int(group_size)})" if need == group_size else "the diversity metrics compare pairs")
    raise DataError(f"{dataset.source or 'the dataset'} holds {len(dataset)} image{'s' * (len(dataset) != 1)}"
                    f"{skipped}; training needs at least {need} images: {why}. Add images to --data")


def default_cache_dir():
    return os.environ.get("NANOSTYLE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "nanostyle")


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"{name} must be a whole number >= {minimum}; got {value!r}")
    return int(value)


def _limit(name, value, variable, default):
    if value is None:
        text = os.environ.get(variable)
        if not text:
            return default
        try:
            value = int(text)
        except ValueError:
            raise DataError(f"{variable}={text!r} is not a whole number") from None
        name = variable
    return _check_int(name, value, 1)


def _parse_classes(classes):
    """None | "*" | [names] (from "AD,NC" or a list)."""
    if classes is None:
        return None
    if isinstance(classes, str):
        if classes.strip() == "*":
            return "*"
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    classes = list(classes)
    if not classes:
        return None
    if len(set(classes)) != len(classes):
        raise DataError(f"--classes names a folder twice: {classes}")
    return classes


@contextlib.contextmanager
def _pil_pixel_limit(max_pixels):
    """PIL refuses images above 2 x Image.MAX_IMAGE_PIXELS at open; when the caller allows more
    than PIL does, PIL's limit is raised to ours for the load (our own check comes first)."""
    previous = Image.MAX_IMAGE_PIXELS
    if previous is not None and max_pixels > previous:
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


# ---------------------------------------------------------------------------------------------
# Listing


def _is_hidden(name):
    return name.startswith(".")


def _list_folder(root, class_spec, verbose):
    """-> (items [(path, label, companion paths)], "images" | "volumes", class_names)."""
    subfolders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not _is_hidden(d))
    if class_spec == "*":
        subfolders = [d for d in subfolders if not d.startswith(SEGMENTATION_PREFIX)]
        loose = sorted(n for n in os.listdir(root) if not _is_hidden(n) and os.path.isfile(os.path.join(root, n))
                       and (_is_image(n) or volumes.volume_suffix(n)))
        if not subfolders:
            raise DataError(f"--classes '*' labels images by their subfolder, but {root!r} has no subfolders; "
                            "put each class in its own subfolder (e.g. AD/, NC/), or leave --classes out")
        if loose:
            raise DataError(f"--classes '*' labels images by their subfolder, but {len(loose)} files lie directly "
                            f"in {root!r} (first: {loose[0]}); move them into a class subfolder, or name the "
                            "classes to use with --classes")
        class_names = subfolders
    elif class_spec:
        missing = [c for c in class_spec if c not in subfolders]
        if missing:
            raise DataError(f"class folder(s) {missing} not found in {root}; its subfolders are "
                            f"{subfolders or 'none'}. Pass --classes with names from that list.")
        class_names = class_spec
    else:
        class_names = []
    roots = [(os.path.join(root, c), i) for i, c in enumerate(class_names)] or [(root, 0)]

    image_items, volume_items, seen_ext = [], [], {}
    hidden, left_out_seg = 0, False
    for base, label in roots:
        for directory, dirs, names in os.walk(base):
            kept = [d for d in dirs if not _is_hidden(d) and not d.startswith(SEGMENTATION_PREFIX)]
            left_out_seg |= any(d.startswith(SEGMENTATION_PREFIX) for d in dirs)
            dirs[:] = sorted(kept)
            names = sorted(names)
            hidden += sum(_is_hidden(n) and (_is_image(n) or volumes.volume_suffix(n) is not None) for n in names)
            names = [n for n in names if not _is_hidden(n)]
            for name in names:
                ext = os.path.splitext(name)[1].lower()
                seen_ext[ext or "(none)"] = seen_ext.get(ext or "(none)", 0) + 1
                if _is_image(name):
                    image_items.append((os.path.join(directory, name), label, []))
            volume_items += [(p, label, extra) for p, extra in volumes.volumes_in(directory, names)]
    if left_out_seg:
        _note(f"left out folders named {SEGMENTATION_PREFIX}* (OASIS segmentation masks)", verbose)
    if hidden:
        _note(f"left out {hidden} hidden files (names starting with '.', such as macOS's ._ files)", verbose)
    if image_items and volume_items:
        raise DataError(f"{root!r} holds both images ({len(image_items)}, first: {image_items[0][0]}) and volumes "
                        f"({len(volume_items)}, first: {volume_items[0][0]}); volumes are cut into slices and "
                        "scaled per volume while images are used as they are, so one dataset takes one kind: "
                        "pass a folder of images or a folder of volumes")
    if not image_items and not volume_items:
        found = ", ".join(f"{n} {e}" for e, n in sorted(seen_ext.items())) or "no files at all"
        raise DataError(f"no images in {root!r} (found {found}); nanostyle reads .png, .jpg and .jpeg images, "
                        "or .nii, .nii.gz and Analyze .img/.hdr volumes, recursively")
    if volume_items:
        return volume_items, "volumes", class_names
    return image_items, "images", class_names


def _is_image(name):
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _listing_digest(items, base):
    """A digest of every input file's name, size and mtime (Analyze headers included)."""
    listing = []
    for path, label, companions in items:
        for file in [path] + list(companions):
            stat = os.stat(file)
            listing.append((os.path.relpath(file, base), label, stat.st_size, stat.st_mtime_ns))
    return hashlib.sha1(json.dumps(listing).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Decoding: one file -> its slices, on threads (PIL and zlib release the GIL while decoding)


class _ImageDecoder:
    def __init__(self, res, crop_border, max_pixels):
        self.res, self.crop_border, self.max_pixels = res, crop_border, max_pixels

    def __call__(self, path):
        """-> ([(-1, uint8 [res, res])], (width, height) of the source)."""
        try:
            image = Image.open(path)
        except Image.DecompressionBombError as error:     # above PIL's own limit, which is higher
            pixels = re.search(r"\((\d+) pixels\)", str(error))
            raise _Unusable(self._too_large(f"{int(pixels.group(1)):,} pixels" if pixels else str(error))) from None
        with image:
            width, height = image.size
            if width * height > self.max_pixels:      # from the header: nothing is decoded yet
                raise _Unusable(self._too_large(f"{width}x{height} = {width * height:,} pixels"))
            image.load()
            gray = _to_grayscale(image)
        return [(-1, preprocess(gray, self.res, self.crop_border))], (width, height)

    def _too_large(self, size):
        return (f"{size}, above the limit of {self.max_pixels:,} per image (a decompression bomb, or not "
                "a slice); raise it with NANOSTYLE_MAX_PIXELS or max_pixels= if the file is genuine")


class _VolumeDecoder:
    def __init__(self, res, crop_border, axis, min_brain_fraction, max_voxels):
        self.res, self.crop_border, self.axis = res, crop_border, axis
        self.min_brain_fraction, self.max_voxels = min_brain_fraction, max_voxels

    def __call__(self, path):
        """-> ([(slice index, uint8 [res, res])], (width, height) of a slice)."""
        kept = volumes.brain_slices(path, self.axis, self.min_brain_fraction, self.max_voxels)
        height, width = kept[0][1].shape
        return [(k, preprocess(s, self.res, self.crop_border)) for k, s in kept], (width, height)


class _Unusable(Exception):
    """A file is readable but cannot be used; the message says why."""


def _reason(error):
    if isinstance(error, (_Unusable, volumes.VolumeError, DataError)):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _attempt(decode, path):
    try:
        return decode(path)
    except Exception as error:      # one bad file never ends a run: it is named and skipped
        return error


def _decoded_in_order(decode, paths, workers):
    """decode(path) or the exception it raised, for each path in order, `workers` at a time."""
    if workers == 1:
        for path in paths:
            yield _attempt(decode, path)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="nanostyle-data")
    pending = deque()
    try:
        for path in paths:
            pending.append(pool.submit(_attempt, decode, path))
            if len(pending) >= 4 * workers:       # bounded look-ahead: memory stays flat
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------
# The cache: <name>.npy (uint8 [N, 1, res, res], memory-mapped) and <name>.json (what it holds)


# A cache's temporary file (write_atomic's) that nothing has written to for this long was left by
# a process killed while building it; one still being built grows with every slice decoded.
STALE_TEMPORARY_S = 3600


def _remove_stale_temporaries(folder, verbose):
    """Remove the cache builds that killed processes left in `folder` (they can be as large as a
    whole cache); a build in progress elsewhere is left alone."""
    removed = remove_temporaries(folder, ("slices-*.npy", "slices-*.json"), min_age_s=STALE_TEMPORARY_S)
    if removed:
        _note(f"removed {len(removed)} unfinished cache file{'s' * (len(removed) > 1)} left by a "
              f"killed run in {folder}: {', '.join(removed)}", verbose)


def _cached_or_built(cache, listing, items, base, decode, res, workers, what, verbose):
    """-> (images, record): the cache when it is whole and current, else a fresh build."""
    npy, meta = cache + ".npy", cache + ".json"
    _remove_stale_temporaries(os.path.dirname(cache), verbose)
    if os.path.exists(meta) or os.path.exists(npy):
        try:
            return _read_cache(npy, meta, listing, len(items), res, base)
        except _StaleCache:
            _note(f"the files changed since {meta} was written; rebuilding it", verbose)
        except Exception as error:     # a broken cache is rebuilt, never trusted
            _warn(f"ignoring unreadable cache {npy} ({_reason(error)}); rebuilding it")
    description = f"preprocessing {len(items)} {what} to {res}x{res}"

    def build_into(handle):
        record = _build(items, decode, res, workers, _FileSink(handle, res), description, verbose)[1]
        if not record["count"]:
            raise _NothingLoaded(record)          # leaves no cache behind
        return record

    try:
        record = write_atomic(npy, build_into)
    except _NothingLoaded as nothing:
        return np.zeros((0, 1, res, res), np.uint8), nothing.record
    except OSError as error:
        _warn(f"could not write the cache {npy}: {error} (continuing without it, in memory)")
        return _build(items, decode, res, workers, _MemorySink(res), description, verbose)
    images = np.load(npy, mmap_mode="r", allow_pickle=False)
    try:
        stored = dict(record, version=CACHE_VERSION, listing=listing, res=res,
                      skipped=[[os.path.relpath(f, base), r] for f, r in record["skipped"]],
                      first_upscaled=_relative_first(record["first_upscaled"], base))
        write_atomic(meta, lambda handle: handle.write(json.dumps(stored).encode("utf-8")))
    except OSError as error:
        _warn(f"could not write the cache {meta}: {error} (the next run decodes again)")
    return images, record


class _NothingLoaded(Exception):
    def __init__(self, record):
        super().__init__("no file could be used")
        self.record = record


def _relative_first(first, base):
    return None if first is None else [os.path.relpath(first[0], base), first[1]]


class _StaleCache(Exception):
    pass


def _read_cache(npy, meta, listing, num_items, res, base):
    with open(meta, "rb") as handle:
        record = json.loads(handle.read().decode("utf-8"))
    if record.get("version") != CACHE_VERSION or record.get("listing") != listing:
        raise _StaleCache()
    images = np.load(npy, mmap_mode="r", allow_pickle=False)
    count = int(record["count"])
    if images.dtype != np.uint8 or images.shape != (count, 1, res, res):
        raise DataError(f"holds {images.dtype} {images.shape}, its record says uint8 {(count, 1, res, res)}")
    source, slices = np.asarray(record["source"], np.int64), np.asarray(record["slice"], np.int64)
    if len(source) != count or len(slices) != count or (count and not 0 <= source.min() <= source.max() < num_items):
        raise DataError("its record of source files does not match the listing")
    record["source"], record["slice"] = source.tolist(), slices.tolist()
    record["skipped"] = [(os.path.join(base, f), r) for f, r in record["skipped"]]
    first = record["first_upscaled"]
    record["first_upscaled"] = None if first is None else (os.path.join(base, first[0]), first[1])
    return images, record


class _FileSink:
    """Streams [1, res, res] uint8 slices into an open .npy: a header for 0 images first, the
    true count written over it at the end (NumPy leaves room in the header for that)."""

    def __init__(self, handle, res):
        self.handle, self.res, self.count = handle, res, 0
        self.header_size = self._header()

    def _header(self):
        self.handle.seek(0)
        np.lib.format.write_array_header_1_0(self.handle, {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
            "shape": (self.count, 1, self.res, self.res)})
        return self.handle.tell()

    def add(self, image):
        self.handle.write(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
        self.count += 1

    def finish(self):
        end = self.handle.tell()
        if self._header() != self.header_size:
            raise OSError("the .npy header changed size")   # cannot happen with NumPy's padding
        self.handle.seek(end)
        return None      # the caller opens the finished file memory-mapped


class _MemorySink:
    def __init__(self, res):
        self.res, self.images = res, []

    def add(self, image):
        self.images.append(image)

    def finish(self):
        if not self.images:
            return np.zeros((0, 1, self.res, self.res), np.uint8)
        return np.stack(self.images)[:, None]


def _build(items, decode, res, workers, sink, description, verbose):
    """Decode every item into `sink`, in order -> (sink's images, record of what went where)."""
    record = dict(count=0, source=[], slice=[], skipped=[], upscaled=0, first_upscaled=None)
    progress = _progress(len(items), description, verbose, minimum=2 if isinstance(decode, _VolumeDecoder) else 200)
    try:
        for index, result in enumerate(_decoded_in_order(decode, [p for p, _, _ in items], workers)):
            path = items[index][0]
            progress.update(1)
            if isinstance(result, Exception):
                record["skipped"].append((path, _reason(result)))
                continue
            slices, (width, height) = result
            for k, image in slices:
                sink.add(image)
                record["source"].append(index)
                record["slice"].append(k)
            if min(width, height) - 2 * decode.crop_border < res:
                record["upscaled"] += len(slices)
                if record["first_upscaled"] is None:
                    record["first_upscaled"] = (path, f"{width}x{height}")
    finally:
        progress.close()
    record["count"] = len(record["source"])
    return sink.finish(), record


# ---------------------------------------------------------------------------------------------
# The default data, held-out splits


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
_VOLUME_SLICE = re.compile(r"^(.*)\[(?:axial|coronal|sagittal) \d+\]$")   # slices of volumes: "path[axial 57]"


def slice_groups(dataset, block=8):
    """A group number per slice, for held-out splits that hold out neighbours together.

    When every slice comes from a volume, the group is the volume; when every file name carries
    an OASIS subject (`case_NNN`), the group is the subject: a held-out brain is unseen as a whole. Otherwise (the default data: one brain's axial slices in
    anatomical order; or any folder without subject names) groups are runs of `block` consecutive
    slices in file order (fewer when that would make fewer than 5 groups): a held-out slice's
    neighbours, nearly the same image, go with it."""
    if block < 1:
        raise ValueError(f"slice_groups: block must be >= 1, got {block}")
    volume_slices = [_VOLUME_SLICE.match(f) for f in dataset.files]
    if volume_slices and len(volume_slices) == len(dataset) and all(volume_slices):
        _, groups = np.unique([m.group(1) for m in volume_slices], return_inverse=True)
        return groups.astype(np.int64)
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


def _progress(total, description, enabled, minimum=200):
    try:
        from tqdm import tqdm
        return tqdm(total=total, desc=description, unit="img" if minimum > 2 else "vol",
                    disable=not enabled or total < minimum, file=sys.stderr)
    except ImportError:  # tqdm is a dependency, but a missing bar must not stop the data
        class _Silent:
            def update(self, n):
                pass

            def close(self):
                pass
        return _Silent()
