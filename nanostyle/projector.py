"""Projection: the latent w (or W+) whose image matches a given slice, found by gradient descent
through the synthesis network, as StyleGAN2's projector does (Karras et al. 2020, sec. 5).

Adam on w, from w_avg, minimises
    loss = mean((x - y)^2) + ssim_weight * (1 - MS-SSIM(x, y)) + noise_weight * R(noise)
for the target x and the image y = synthesis(w, noise), both in [-1, 1]. While it runs, w is
perturbed by Gaussian noise of std w_std * 0.05 * max(0, 1 - t / 0.75)^2 (t: the share of steps
done) and the learning rate ramps up over the first 5 % of the steps and down (cosine) over the
last 25 %. Where the generator has noise inputs, their constant maps are optimised too, starting
from G's own, renormalised to mean 0 and std 1 after every step, and kept white by
    R = sum over maps n and their 2x2-averaged pyramids (down to 8x8) of
        mean(n * roll(n, 1, x))^2 + mean(n * roll(n, 1, y))^2
(StyleGAN2's noise regularisation), so they cannot draw the image themselves.

The image distance needs no downloaded weights: StyleGAN2 uses LPIPS (VGG16 features), which
would. Pixel MSE is the quantity the residual map shows and PSNR measures, but alone it barely
penalises a blurred structure; MS-SSIM (metrics.ms_ssim's definition: local means, contrasts and
correlations under 11x11 Gaussian windows at up to five scales) weighs the structure, and is
built here from upfirdn2d, so it is differentiable and costs a few FIR passes of one image. Its
weight is small by default (0.1): more buys structure on real slices but makes G's own images
harder to find again (docs/experiments.md, "Projection: finding a generator's own images"). The
metrics' feature embedding is no option: its orientation histograms have no useful gradient.
A pixel beyond [-1, 1] on the side where the target sits at that edge counts as a match, since
every picture of G's images clips it.
"""
import dataclasses
import os

import numpy as np

from . import backend
from .autograd import Tensor, concat, no_grad, where
from .data import to_float
from .metrics import _MS_SSIM_WEIGHTS, _gaussian_taps, _ms_ssim_scales
from .nn import copy_module
from .ops import upfirdn2d
from .optim import Adam

# StyleGAN2's projector schedule (its defaults)
W_AVG_SAMPLES = 10_000
INITIAL_NOISE_FACTOR = 0.05
NOISE_RAMP_LENGTH = 0.75
LR_RAMPDOWN_LENGTH = 0.25
LR_RAMPUP_LENGTH = 0.05


@dataclasses.dataclass
class Projection:
    """What `project` found.

    w         float32 [num_ws, w_dim]: the synthesis network's input (all rows equal unless W+);
              G.synthesis(Tensor(w[None]), noise_mode="const") redraws `image` with `noise` in G
    image     float32 [H, W] in [-1, 1]: the projected slice (the target's size)
    target    float32 [H, W] in [-1, 1]: the slice that was projected
    residual  float32 [H, W] in [0, 1]: |target - image| / 2, the share of the intensity range by
              which each pixel differs (the anomaly map)
    loss      list of float: the loss at every step
    noise     {state-dict name: float32 [R, R]}: the optimised noise maps ({} without noise
              inputs); G.load_state_dict({**G.state_dict(), **noise}) puts them into G
    frames    float32 [K, H, W] in [-1, 1]: the image every `frame_every` steps and at the end
    """
    w: np.ndarray
    image: np.ndarray
    target: np.ndarray
    residual: np.ndarray
    loss: list
    noise: dict
    frames: np.ndarray

    @property
    def psnr(self):
        """Peak signal-to-noise ratio of image against target in dB (data range 2, as 255 for uint8)."""
        return psnr(self.image, self.target)


def psnr(a, b):
    """10 log10(range^2 / MSE) in dB for images in [-1, 1] (range 2); inf when equal."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)


def target_image(image, resolution):
    """A target slice as float32 [resolution, resolution] in [-1, 1], or a ValueError that says
    what is wrong with it. Accepts uint8 (0..255) or float (-1..1) arrays [H, W], [1, H, W] or
    [1, 1, H, W]; refuses colour (convert to grayscale first, as training's loader does) and any
    other size (resize first: examples/project.py --resize does it as the loader does)."""
    array = np.asarray(image)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        raise ValueError(f"project: the target has {array.shape[-1]} colour channels ({array.shape}); the generator "
                         "draws grayscale slices: convert it first (PIL: image.convert('L'))")
    if array.ndim != 2:
        raise ValueError(f"project: the target must be one 2-D slice [H, W], got shape {np.shape(image)}")
    if array.shape != (resolution, resolution):
        raise ValueError(f"project: the target is {array.shape[0]}x{array.shape[1]}, the generator draws "
                         f"{resolution}x{resolution} slices; resize it first (PIL: image.resize(({resolution}, "
                         f"{resolution}), Image.LANCZOS), or examples/project.py --resize)")
    if array.dtype == np.uint8:
        return to_float(array)
    if array.dtype.kind != "f":
        raise ValueError(f"project: the target must be uint8 (0..255) or float (-1..1), got {array.dtype}")
    if not np.isfinite(array).all() or array.min() < -1.001 or array.max() > 1.001:
        raise ValueError(f"project: a float target must lie in [-1, 1], got {array.min():g}..{array.max():g}; "
                         "pass uint8 for 0..255 pixels")
    return np.clip(array, -1, 1).astype(np.float32)


def load_target(path, resolution, resize=False):
    """(uint8 [resolution, resolution], notes): a slice read from an image file as training's
    loader reads one (colour and alpha converted to grayscale, 16-bit scaled by its own range),
    with a note for each conversion made. A size other than resolution x resolution is an error,
    unless resize: then it is centre-cropped to a square and Lanczos-resized, as the loader does."""
    from PIL import Image, UnidentifiedImageError
    from .data import _to_grayscale, preprocess
    if not os.path.isfile(path):
        raise ValueError(f"target {path!r} does not exist; pass a PNG or JPG slice")
    try:
        with Image.open(path) as opened:
            mode = opened.mode
            gray = _to_grayscale(opened)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ValueError(f"target {path!r} cannot be read as an image ({type(error).__name__}: {error}); "
                         "pass a PNG or JPG slice") from None
    notes = []
    if mode != "L":
        how = "scaled by its own range" if mode in ("I;16", "I;16B", "I;16L", "I", "F") else "converted"
        notes.append(f"note: {path} is a mode-{mode} image, {how} to 8-bit grayscale as training's loader does")
    if gray.shape != (resolution, resolution):
        if not resize:
            raise ValueError(f"target {path!r} is {gray.shape[1]}x{gray.shape[0]}, the generator draws "
                             f"{resolution}x{resolution} slices; resize it first, or ask for it (resize=True, "
                             "--resize in examples/project.py: centre crop and Lanczos, as training's loader)")
        notes.append(f"note: {path} is {gray.shape[1]}x{gray.shape[0]}, centre-cropped and resized to "
                     f"{resolution}x{resolution}")
        gray = preprocess(gray, resolution)
    return gray, notes


# ---- the image distance: MS-SSIM in Tensor ops ---------------------------------------------------

def ms_ssim(a, b, floor=1e-6):
    """Multi-scale SSIM of each pair of images, differentiable: a, b Tensors [N, 1, H, W] in
    [-1, 1] (H, W >= 11) -> Tensor [N]. The definition of metrics.ms_ssim (same windows, constants,
    scales and weights), with each term below `floor` held at `floor` (no gradient there) instead
    of clamped to 0, whose fractional power has no derivative."""
    if a.shape != b.shape or a.ndim != 4 or min(a.shape[-2:]) < 11:
        raise ValueError(f"ms_ssim: a and b must be [N, C, H, W] of one shape with H, W >= 11, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    taps = _gaussian_taps().astype(a.dtype)
    pool = np.array([0.5, 0.5], dtype=a.dtype)
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    scales = _ms_ssim_scales(*a.shape[-2:])
    weights = _MS_SSIM_WEIGHTS[:scales] / _MS_SSIM_WEIGHTS[:scales].sum()
    value = None
    for scale in range(scales):
        blur = lambda x: upfirdn2d(x, taps)          # 'valid' 11x11 Gaussian window
        mu_a, mu_b = blur(a), blur(b)
        var_a = blur(a * a) - mu_a * mu_a
        var_b = blur(b * b) - mu_b * mu_b
        cov = blur(a * b) - mu_a * mu_b
        cs = (cov * 2 + c2) / (var_a + var_b + c2)
        if scale == scales - 1:
            cs = cs * ((mu_a * mu_b * 2 + c1) / (mu_a * mu_a + mu_b * mu_b + c1))
        term = cs.mean(axis=(2, 3))
        term = where(term.data > floor, term, term.dtype.type(floor))
        term = term ** float(weights[scale])
        value = term if value is None else value * term
        if scale < scales - 1:
            a, b = upfirdn2d(a, pool, down=2), upfirdn2d(b, pool, down=2)
    return value.mean(axis=1)


def noise_regularization(maps):
    """StyleGAN2's noise regulariser: for each map [R, R] (Tensor) and its 2x2-averaged halvings
    down to 8x8, the squared mean products with itself shifted by one pixel (cyclically) along x
    and along y, summed: 0 for white noise in expectation, large for maps with structure."""
    total = None
    for noise in maps:
        size = noise.shape[-1]
        x = noise.reshape(1, 1, size, size)
        while True:
            for axis in (2, 3):
                rolled = concat([x[:, :, -1:], x[:, :, :-1]], axis=2) if axis == 2 else \
                    concat([x[:, :, :, -1:], x[:, :, :, :-1]], axis=3)
                term = (x * rolled).mean() ** 2
                total = term if total is None else total + term
            if x.shape[-1] <= 8:
                break
            half = x.shape[-1] // 2
            x = x.reshape(1, 1, half, 2, half, 2).mean(axis=(3, 5))
    return total


# ---- the projector ------------------------------------------------------------------------------

def w_statistics(G, num=W_AVG_SAMPLES, seed=123):
    """(w_avg [w_dim], w_std): the mean of the mapping network's output over `num` random z (random
    classes for a conditional G), and the RMS distance of those w from it (StyleGAN2's projector)."""
    rng = np.random.default_rng(seed)
    ws = []
    for start in range(0, num, 1000):
        count = min(1000, num - start)
        z = rng.standard_normal((count, G.z_dim))
        ws.append(G.map(z, rng.integers(0, G.c_dim, count) if G.c_dim else None, batch=count))
    ws = np.concatenate(ws)
    w_avg = ws.mean(axis=0)
    return w_avg, float(np.sqrt(((ws - w_avg) ** 2).sum(axis=1).mean()))


def _noise_maps(G):
    """The noise_const buffers of the layers that have noise inputs, by state-dict name."""
    return {name: buffer for name, buffer in G.named_buffers() if name.endswith("noise_const")}


def project(G, image, steps=1000, wplus=False, lr=0.1, ssim_weight=0.1, noise_weight=1e5, seed=0,
            frame_every=None, progress=True, w_init=None):
    """The w (or W+) whose image matches `image`; returns a Projection.

    G: a Generator (e.g. nanostyle.load(...)), left unchanged (a copy is optimised).
    image: the target slice: uint8 [H, W] (0..255) or float [H, W] in [-1, 1], H = W = G's
        resolution (see target_image for what is refused and why).
    steps: Adam steps (1000 as StyleGAN2; fewer for a quick look, at some loss of fit).
    wplus: optimise one w per synthesis input (W+: closer fits, further from what G would draw
        from a z) instead of one w for all.
    lr: Adam's peak learning rate. ssim_weight: weight of 1 - MS-SSIM against the pixel MSE
        (0: MSE alone; more: more structure, less pixel fit). noise_weight: weight of the noise
        regulariser (only where G has noise inputs). seed: the w perturbation's draws.
    w_init: the start instead of w_avg: [w_dim], or [num_ws, w_dim] with wplus (e.g. an earlier
        projection's w, to continue it).
    frame_every: keep the image every this many steps in .frames (default: about 50 frames).
    progress: show a progress bar.
    """
    from tqdm import tqdm
    if steps < 1:
        raise ValueError(f"project: steps must be >= 1, got {steps}")
    target = target_image(image, G.img_resolution)
    G = copy_module(G).requires_grad_(False)
    xp, dtype = G.mapping.w_avg.xp, G.mapping.w_avg.dtype
    target_tensor = Tensor(xp.asarray(target.reshape(1, 1, *target.shape), dtype=dtype))
    w_avg, w_std = w_statistics(G)
    rows = G.num_ws if wplus else 1
    start = w_avg if w_init is None else backend.to_numpy(w_init)
    if np.shape(start) not in ((G.w_dim,), (1, G.w_dim), (rows, G.w_dim)):
        raise ValueError(f"project: w_init must be [{G.w_dim}]" + (f" or [{rows}, {G.w_dim}]" if wplus else "")
                         + f", got shape {np.shape(start)}")
    w = Tensor(xp.asarray(np.array(np.broadcast_to(start, (1, rows, G.w_dim))), dtype=dtype), requires_grad=True)
    maps = _noise_maps(G)
    for buffer in maps.values():
        buffer.data = _normalised(buffer.data)
        buffer.requires_grad = True
    optimizer = Adam([w] + list(maps.values()), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    rng = np.random.default_rng(seed)
    frame_every = frame_every or max(1, steps // 50)
    losses, frames = [], []
    bar = tqdm(range(steps), desc="projecting", unit="step", disable=not progress, dynamic_ncols=True)
    for step in bar:
        t = step / steps
        noise_scale = w_std * INITIAL_NOISE_FACTOR * max(0.0, 1.0 - t / NOISE_RAMP_LENGTH) ** 2
        ramp = min(1.0, (1.0 - t) / LR_RAMPDOWN_LENGTH)
        ramp = (0.5 - 0.5 * np.cos(ramp * np.pi)) * min(1.0, t / LR_RAMPUP_LENGTH)
        optimizer.lr = lr * ramp
        perturbation = Tensor(xp.asarray(rng.standard_normal(w.shape) * noise_scale, dtype=dtype))
        ws = (w + perturbation).broadcast_to((1, G.num_ws, G.w_dim))
        synth = G.synthesis(ws, noise_mode="const")
        # beyond the data range where the target sits at that edge: a match (pictures clip it)
        saturated = xp.logical_or(xp.logical_and(target_tensor.data >= 1, synth.data > 1),
                                  xp.logical_and(target_tensor.data <= -1, synth.data < -1))
        synth = where(saturated, target_tensor, synth)
        difference = synth - target_tensor
        loss = (difference * difference).mean()
        if ssim_weight:
            loss = loss + (1.0 - ms_ssim(synth, target_tensor)[0]) * float(ssim_weight)
        if maps and noise_weight:
            loss = loss + noise_regularization(list(maps.values())) * float(noise_weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with no_grad():
            for buffer in maps.values():
                buffer.data = _normalised(buffer.data)
        losses.append(float(loss.numpy()))
        if step % frame_every == 0:
            frames.append(_image(synth))
        if progress and step % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.4f}", psnr=f"{psnr(np.clip(_image(synth), -1, 1), target):.1f} dB",
                            refresh=False)
    bar.close()
    with no_grad():
        final = np.clip(_image(G.synthesis(w.detach().broadcast_to((1, G.num_ws, G.w_dim)), noise_mode="const")),
                        -1.0, 1.0)
    frames.append(final)
    return Projection(
        w=np.ascontiguousarray(np.broadcast_to(backend.to_numpy(w.data)[0], (G.num_ws, G.w_dim))).astype(np.float32),
        image=final, target=target, residual=(np.abs(target - final) / 2).astype(np.float32), loss=losses,
        noise={name: backend.to_numpy(buffer.data).astype(np.float32) for name, buffer in maps.items()},
        frames=np.clip(np.stack(frames), -1.0, 1.0).astype(np.float32))


def _normalised(noise):
    noise = noise - noise.mean()
    return noise * float(1.0 / np.sqrt(float((noise * noise).mean()) + 1e-12))


def _image(images):
    """The first image of a Tensor [N, 1, H, W] as NumPy float32 [H, W]."""
    return backend.to_numpy(images.data[0, 0]).astype(np.float32)
