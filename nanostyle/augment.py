"""Differentiable augmentation with an adaptive probability (StyleGAN2-ADA, Karras et al. 2020b).

Every image the discriminator sees, real or generated, passes through the same random
transformations, each applied per sample with probability p. Because the transformations are
differentiable Tensor ops, the generator is trained through them and learns the clean
distribution, not the augmented one ("non-leaking" as long as p stays below about 0.8).

Transformations (ADA's names): xflip, integer translation up to 1/8 of the image (reflect
padding), brightness (additive, N(0, 0.2)), contrast (multiplicative around the image mean,
lognormal with log2-std 0.5), cutout (a square of half the image size set to the background
value -1, since MRI background is black), additive Gaussian noise (|N(0, 0.1)| std).

pivot="black" (an option for MRI; not a default) makes brightness and contrast gains about black
instead: brightness adds b * (x + 1) / 2 (b ~ N(0, 0.2), so white moves by b and the background
not at all), contrast scales x + 1 by the lognormal factor. With ADA's pivot (the image mean),
brightness and contrast move the -1 background too, and once p passes ~0.8 they can leak (the
cpu networks, whose p runs near 1 for a while, drew some samples on grey backgrounds). About
black they are weaker: in the one cpu run with it, D overfitted, p sat at 1 from 14 to 40 kimg
and the samples were lopsided blobs at 40 kimg where the run with ADA's pivot drew brains.

AdaController adjusts p from the discriminator's overfitting heuristic r_t = E[sign(D(real))]:
above the target (0.6) the discriminator is overfitting and p grows, below it p shrinks, fast
enough that p can go from 0 to 1 in 500k images.
"""
import numpy as np

from .autograd import Tensor, where


class AugmentPipe:
    def __init__(self, xflip=1.0, translate=1.0, brightness=1.0, contrast=1.0, cutout=1.0, noise=0.0,
                 translate_max=0.125, brightness_std=0.2, contrast_std=0.5, cutout_size=0.5, noise_std=0.1,
                 pivot="mean"):
        if pivot not in ("mean", "black"):
            raise ValueError(f"AugmentPipe: pivot must be 'mean' or 'black', got {pivot!r}")
        self.pivot = pivot
        self.strengths = dict(xflip=xflip, translate=translate, brightness=brightness, contrast=contrast,
                              cutout=cutout, noise=noise)
        self.translate_max, self.brightness_std, self.contrast_std = translate_max, brightness_std, contrast_std
        self.cutout_size, self.noise_std = cutout_size, noise_std
        self.p = 0.0

    def _chosen(self, name, N, rng):
        """Per-sample boolean: apply transformation `name`? (draws even when p == 0, so the
        random stream does not depend on p — resumed runs stay exact)."""
        return rng.random(N) < self.p * self.strengths[name]

    def __call__(self, images, rng):
        N, C, H, W = images.shape
        xp = images.xp
        dtype = images.dtype
        x = images

        # xflip: when chosen, a fair coin decides (as ADA), so p=1 still keeps half unflipped
        flip = self._chosen("xflip", N, rng) & (rng.random(N) < 0.5)
        if flip.any():
            x = where(xp.asarray(flip.reshape(N, 1, 1, 1)), x[:, :, :, ::-1], x)

        # integer translation with reflect padding, as one gather
        chosen = self._chosen("translate", N, rng)
        shift = np.round((rng.random((N, 2)) * 2 - 1) * self.translate_max * np.array([W, H])).astype(np.int64)
        shift[~chosen] = 0
        if shift.any():
            cols = _reflect(np.arange(W)[None, :] - shift[:, 0:1], W)   # [N, W]
            rows = _reflect(np.arange(H)[None, :] - shift[:, 1:2], H)   # [N, H]
            n = np.arange(N)[:, None, None]
            gathered = x[xp.asarray(n), :, xp.asarray(rows[:, :, None]), xp.asarray(cols[:, None, :])]  # [N,H,W,C]
            x = gathered.transpose(0, 3, 1, 2)

        # brightness
        chosen = self._chosen("brightness", N, rng)
        offset = rng.standard_normal(N) * self.brightness_std * chosen
        if chosen.any():
            offset = Tensor(xp.asarray(offset.reshape(N, 1, 1, 1).astype(dtype)))
            # pivot "black": the offset scales with (x + 1) / 2, so the background stays at -1
            x = x + offset if self.pivot == "mean" else x + (x + 1.0) * (offset * 0.5)

        # contrast around each image's mean (pivot "mean") or around black
        chosen = self._chosen("contrast", N, rng)
        factor = np.where(chosen, np.exp2(rng.standard_normal(N) * self.contrast_std), 1.0)
        if chosen.any():
            mean = x.mean(axis=(1, 2, 3), keepdims=True) if self.pivot == "mean" else -1.0
            x = (x - mean) * Tensor(xp.asarray(factor.reshape(N, 1, 1, 1).astype(dtype))) + mean

        # cutout: a square of cutout_size * image size, centre uniform, filled with -1
        chosen = self._chosen("cutout", N, rng)
        centre = rng.random((N, 2))
        if chosen.any():
            ys = (np.arange(H) + 0.5) / H
            xs = (np.arange(W) + 0.5) / W
            inside_y = np.abs(ys[None, :] - centre[:, 1:2]) < self.cutout_size / 2   # [N, H]
            inside_x = np.abs(xs[None, :] - centre[:, 0:1]) < self.cutout_size / 2   # [N, W]
            hole = inside_y[:, :, None] & inside_x[:, None, :] & chosen[:, None, None]
            keep = xp.asarray((~hole)[:, None].astype(dtype))
            x = x * Tensor(keep) + Tensor(xp.asarray((hole[:, None] * -1.0).astype(dtype)))

        # additive noise
        chosen = self._chosen("noise", N, rng)
        sigma = np.abs(rng.standard_normal(N)) * self.noise_std * chosen
        noise = rng.standard_normal((N, C, H, W)) if chosen.any() else None
        if noise is not None:
            x = x + Tensor(xp.asarray((noise * sigma[:, None, None, None]).astype(dtype)))
        return x


def _reflect(index, size):
    """Reflect indices into [0, size) (…2 1 0 1 2… at the border, as reflect padding)."""
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    index = np.mod(index, period)
    return np.where(index >= size, period - index, index)


class AdaController:
    def __init__(self, pipe, batch_size, target=0.6, interval=4, kimg=500):
        self.pipe, self.batch_size, self.target = pipe, batch_size, target
        self.interval, self.kimg = interval, kimg
        self.signs = []
        self.rt = 0.0
        self.steps = 0

    def accumulate(self, real_logits):
        self.signs.append(np.sign(np.asarray(real_logits, dtype=np.float64)).mean())

    def step(self, cur_nimg=None):
        """Call once per D step; every `interval` steps p moves by one increment."""
        self.steps += 1
        if self.steps % self.interval or not self.signs:
            return
        self.rt = float(np.mean(self.signs))
        self.signs = []
        adjust = np.sign(self.rt - self.target) * self.batch_size * self.interval / (self.kimg * 1000)
        self.pipe.p = float(np.clip(self.pipe.p + adjust, 0.0, 1.0))

    def state_dict(self):
        return {"p": self.pipe.p, "rt": self.rt, "steps": self.steps, "signs": list(map(float, self.signs))}

    def load_state_dict(self, state):
        self.pipe.p = float(state["p"])
        self.rt = float(state["rt"])
        self.steps = int(state["steps"])
        self.signs = list(state["signs"])
