"""Pictures people would rather look at than read: image grids, loss and metric curves, and the
training GIF. Matplotlib is used through its object API with the Agg canvas, so the user's
interactive backend is never touched."""
import math
import os

import numpy as np
from PIL import Image

from .checkpoint import write_atomic
from .data import to_uint8


def image_grid(images, nrow=None, padding=2):
    """[N, C, H, W] uint8, or floats in [-1, 1] -> one uint8 image [rows*H, cols*W] (or [.., .., 3])."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"image_grid: images must be [N, C, H, W], got {images.shape}")
    N, C, H, W = images.shape
    ncol = nrow or int(math.ceil(math.sqrt(N)))
    nrows = int(math.ceil(N / ncol))
    tiles = _pixels(images).transpose(0, 2, 3, 1)
    grid = np.zeros((nrows * (H + padding) + padding, ncol * (W + padding) + padding, C), dtype=np.uint8)
    for i in range(N):
        r, c = divmod(i, ncol)
        y, x = padding + r * (H + padding), padding + c * (W + padding)
        grid[y:y + H, x:x + W] = tiles[i]
    return grid[:, :, 0] if C == 1 else grid


def _pixels(images):
    """uint8 as they are; floats in [-1, 1] through to_uint8."""
    return images if images.dtype == np.uint8 else to_uint8(images)


def save_png(pixels, path):
    """Write uint8 [H, W] (grayscale) or [H, W, 3] (RGB) as a PNG, atomically."""
    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    write_atomic(path, lambda handle: image.save(handle, format="PNG"))


def heat_map(values, vmax=1.0, cmap="inferno"):
    """values [H, W] (>= 0) -> uint8 RGB [H, W, 3] through a matplotlib colour map: 0 is its first
    colour, vmax and above its last; one fixed scale, so maps of different images compare."""
    from matplotlib import colormaps
    rgba = colormaps[cmap](np.clip(np.asarray(values, dtype=np.float64) / vmax, 0.0, 1.0))
    return np.round(rgba[..., :3] * 255).astype(np.uint8)


def save_image_grid(images, path, nrow=None):
    """Write images [N, C, H, W] (uint8, as Generator.sample gives, or floats in [-1, 1], as
    generate gives) as one PNG grid to `path`, `nrow` images a row (default: a square), 2-pixel
    black borders; written atomically."""
    save_png(image_grid(images, nrow), path)


def save_images(images, folder, names):
    """One PNG per image [N, C, H, W] (uint8, or floats in [-1, 1]) at native resolution
    (grayscale for one channel), named by `names`; returns the paths."""
    os.makedirs(folder, exist_ok=True)
    images = np.asarray(images)
    pixels = _pixels(images).transpose(0, 2, 3, 1)
    paths = []
    for tile, name in zip(pixels, names):
        path = os.path.join(folder, name if name.endswith(".png") else name + ".png")
        save_png(tile[:, :, 0] if tile.shape[2] == 1 else tile, path)
        paths.append(path)
    return paths


def _figure(rows=1, cols=1, width=8, height=4):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure, [figure.add_subplot(rows, cols, i + 1) for i in range(rows * cols)]


def _smooth(values, window):
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 3 or window < 2:
        return values
    window = min(window, len(values))
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def _save_figure(figure, path):
    write_atomic(path, lambda handle: figure.savefig(handle, format="png", bbox_inches="tight"))


def plot_losses(records, path, keys=("loss_G", "loss_D", "r1_penalty", "ada_p")):
    """Loss curves against kimg: raw values faint, a moving average solid."""
    keys = [k for k in keys if any(k in r for r in records)]
    figure, axes = _figure(1, max(len(keys), 1), width=4 * max(len(keys), 1), height=3.2)
    for ax, key in zip(axes, keys):
        points = [(r["kimg"], r[key]) for r in records if key in r and r[key] is not None]
        if not points:
            continue
        kimg, values = map(np.asarray, zip(*points))
        ax.plot(kimg, values, alpha=0.3, linewidth=0.8)
        ax.plot(kimg, _smooth(values, max(len(values) // 20, 1)), linewidth=1.6)
        ax.set_title(key)
        ax.set_xlabel("kimg")
        ax.grid(alpha=0.3)
    _save_figure(figure, path)


def plot_metrics(records, path, keys=None):
    """Metric curves against kimg, one panel per metric."""
    if keys is None:
        keys = sorted({k for r in records for k, v in r.items() if k != "kimg" and isinstance(v, (int, float))})
    keys = list(keys) or ["(none)"]
    cols = 2 if len(keys) == 4 else min(len(keys), 3)
    rows = int(math.ceil(len(keys) / cols))
    figure, axes = _figure(rows, cols, width=4 * cols, height=3 * rows)
    figure.subplots_adjust(hspace=0.45, wspace=0.3)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes, keys):
        points = [(r["kimg"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        if points:
            kimg, values = zip(*points)
            ax.plot(kimg, values, marker="o", markersize=3)
        ax.set_title(key)
        ax.set_xlabel("kimg")
        ax.grid(alpha=0.3)
    _save_figure(figure, path)


def plot_projection(target, image, residual, path, vmax=0.25, title=None):
    """Target, projection (floats [H, W] in [-1, 1]) and residual ([H, W] in [0, 1], shown as a
    heat map from 0 to vmax with its colour bar) side by side, as one PNG."""
    figure, axes = _figure(1, 3, width=11, height=3.6)
    for ax, picture, name in zip(axes[:2], (target, image), ("target", "projection")):
        ax.imshow(np.asarray(picture), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(name)
    shown = axes[2].imshow(np.asarray(residual), cmap="inferno", vmin=0, vmax=vmax, interpolation="nearest")
    axes[2].set_title("|target - projection| (share of range)")
    figure.colorbar(shown, ax=axes[2], fraction=0.046, pad=0.04)
    for ax in axes:
        ax.set_axis_off()
    if title:
        figure.suptitle(title)
    _save_figure(figure, path)


def save_gif(frames, path, duration_ms=80):
    """An animated GIF of uint8 frames [K, H, W] or [K, H, W, 3], looping, written atomically."""
    images = [Image.fromarray(np.asarray(frame, dtype=np.uint8)) for frame in frames]
    if not images:
        raise ValueError("save_gif: no frames")
    write_atomic(path, lambda handle: images[0].save(handle, format="GIF", save_all=True,
                                                     append_images=images[1:], duration=duration_ms, loop=0))
    return path


def make_gif(png_paths, out_path, duration_ms=300):
    """An animated GIF of the snapshot grids (grayscale PNGs), written atomically; None for none."""
    if not png_paths:
        return None
    frames = []
    for p in png_paths:
        with Image.open(p) as image:
            frames.append(np.asarray(image.convert("L")))
    return save_gif(frames, out_path, duration_ms)
