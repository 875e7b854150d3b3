"""The diversity floor: a one-sided mode-seeking term against mode collapse.

In the spirit of MSGAN (Mao, Lee, Tseng, Ma, Yang, "Mode Seeking Generative Adversarial Networks
for Diverse Image Synthesis", CVPR 2019), made one-sided. The generator's batch is paired (row i
with row i + N/2); with both images clamped to the data range [-1, 1] first,

  d    = mean over pairs of RMS(x_i - x_j)                     (space "pixels")
         or of RMS over the image gradients of x_i - x_j       (space "gradients")
  term = weight * max(0, 1 - d / d_real)

added to G's loss, where d_real is the same mean distance over pairs of training images. The term
is zero while the samples differ from each other as much as the data's images do; it pushes only
when they become more alike. Distance bought with values outside the data range counts for
nothing (the clamp has no gradient there), and in the gradient space a change of brightness or
background level buys none either.

Conditional runs pair images of the same class (within each class of the batch, its first half
with its second half) and give each class its own target, the d_real of that class's training
images: d / d_real becomes the mean over pairs of d_pair / d_real(class of the pair).

Two switches decide, step by step, whether the floor may push at all:
- the schedule: only in the first `until_kimg` kimg (0 = the whole run);
- the gate (`gate_kimg` > 0): only while a running mean (that half-life) of d / d_real over
  recent batches is below 1, so that one batch whose 8 pairs happen to lie close does not fire it.
Why these defaults, and the runs behind them: docs/experiments.md, "The diversity floor".
"""
import dataclasses

import numpy as np

from . import backend
from .autograd import Tensor
from .data import to_float
from .metrics import image_gradients, mean_pair_distance
from .ops import bias_act

SPACES = ("pixels", "gradients")


@dataclasses.dataclass
class DiversityConfig:
    """The floor's settings (TrainConfig.diversity). weight 0 leaves StyleGAN2's loss as it is."""
    weight: float = None        # None: the preset's (train.TrainConfig.preset)
    until_kimg: float = None    # push only in the first this-many kimg; 0 = the whole run
    gate_kimg: float = 0.0      # > 0: push only while the running mean of d / d_real is below 1
    space: str = "pixels"       # "pixels" or "gradients"

    def validate(self):
        if self.weight < 0:
            raise ValueError(f"--diversity {self.weight:g}: the diversity floor's weight must be >= 0 "
                             "(0 turns it off)")
        if self.until_kimg < 0:
            raise ValueError(f"--diversity-until {self.until_kimg:g}: must be >= 0 kimg (0: the floor "
                             "pushes for the whole run)")
        if self.gate_kimg < 0:
            raise ValueError(f"--diversity-gate {self.gate_kimg:g}: must be >= 0 kimg (0: no gate)")
        if self.space not in SPACES:
            raise ValueError(f"--diversity-space {self.space!r}: use 'pixels' or 'gradients'")
        return self


def pair_distance(images, space="pixels"):
    """Mean RMS distance between rows i and i + N/2 of `images` [N, C, H, W] (a Tensor), in
    `space`; the floor's d. Differentiable."""
    half = images.shape[0] // 2
    return _pair_rms(images[:half] - images[half:2 * half], space).mean()


def same_class_pairs(labels):
    """(first, second) row indices pairing images of one class: within each class, in row order,
    its first half with its second half (an odd one out stays unpaired)."""
    first, second = [], []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        half = len(rows) // 2
        first.append(rows[:half])
        second.append(rows[half:2 * half])
    return (np.concatenate(first).astype(np.int64), np.concatenate(second).astype(np.int64)) if first \
        else (np.zeros(0, np.int64), np.zeros(0, np.int64))


def _pair_rms(diff, space):
    """RMS of each pair's difference [P, C, H, W] in `space`: [P]."""
    if space == "pixels":
        return (diff.square().mean(axis=(1, 2, 3)) + 1e-8).sqrt()
    # RMS over metrics.image_gradients' features: neighbour differences of the pair's difference
    dx, dy = diff[:, :, :, 1:] - diff[:, :, :, :-1], diff[:, :, 1:, :] - diff[:, :, :-1, :]
    count = dx[0].size + dy[0].size
    return ((dx.square().sum(axis=(1, 2, 3)) + dy.square().sum(axis=(1, 2, 3))) * (1.0 / count)
            + 1e-8).sqrt()


def data_pair_distance(images, space="pixels", max_images=512, seed=0):
    """d_real: the mean pair distance of training images (uint8 or float, [N, C, H, W]) in
    `space`, over a random subset of at most `max_images` (only those are converted to float)."""
    if len(images) > max_images:
        images = images[np.sort(np.random.default_rng(seed).choice(len(images), max_images, replace=False))]
    images = to_float(images) if np.asarray(images).dtype == np.uint8 else np.asarray(images)
    return mean_pair_distance(image_gradients(images) if space == "gradients" else images)


class DiversityFloor:
    """The floor of the module docstring: its settings, its target d_real, its schedule and gate.
    `target` is one number, or for a conditional run (`class_names` given) one per class.

    The loss calls `term(images, c)`; the training loop calls `observe(stats, next_nimg)` once
    after every G step, which updates the gate and decides whether the next step may push."""

    def __init__(self, config, target, batch, class_names=None):
        config.validate()
        targets = np.atleast_1d(np.asarray(target, dtype=np.float64)) if target is not None else np.zeros(0)
        if not (targets.size and np.all(targets > 0)):
            raise ValueError(f"the diversity floor needs a positive target (the mean distance between pairs "
                             f"of training images), got {target!r}")
        if class_names is not None and len(targets) != len(class_names):
            raise ValueError(f"the diversity floor needs one target per class ({len(class_names)}), got {len(targets)}")
        self.class_names = list(class_names) if class_names is not None else None
        self.targets = targets if class_names is not None else None
        self.config, self.batch = config, int(batch)
        self.target = float(targets.mean()) if class_names is not None else float(target)
        self.mean = None             # the gate's running mean of d / d_real (None: no batch yet, or no gate)
        self.open = True             # may the floor push in the next G step?
        self.schedule(0)

    @classmethod
    def from_data(cls, config, images, batch, labels=None, class_names=None):
        """The floor with its target(s) from training images; per class when `class_names` (and
        the images' `labels`) are given."""
        if class_names is None:
            return cls(config, data_pair_distance(images, config.space), batch)
        targets = []
        for label, name in enumerate(class_names):
            rows = np.flatnonzero(np.asarray(labels) == label)
            if len(rows) < 2:
                raise ValueError(f"the diversity floor needs at least 2 training images of class {name!r}, "
                                 f"found {len(rows)}; add images, or pass --diversity 0")
            if len(rows) > 512:   # only the subset becomes float, whatever the size of the class
                rows = np.sort(np.random.default_rng(label).choice(rows, 512, replace=False))
            targets.append(data_pair_distance(images[rows], config.space))
        return cls(config, targets, batch, class_names)

    @property
    def end_nimg(self):
        """The image count from which the floor stays off; 0 when it never ends."""
        return int(round((self.config.until_kimg or 0) * 1000))

    def schedule(self, cur_nimg):
        """Open the floor for a step at `cur_nimg` when the gate and the schedule allow it."""
        end = self.end_nimg
        self.open = (self.mean is None or self.mean < 1.0) and not (end and cur_nimg >= end)

    def term(self, images, c=None):
        """(term or None, stats) for generated images [N, ...] (a Tensor) of one-hot classes `c`
        (a conditional run's): the weighted floor, or None while it may not push or the samples
        are as varied as the data."""
        if self.targets is not None:
            return self._class_term(images, c)
        if images.shape[0] < 2:
            return None, {}
        images = bias_act(images, act="linear", clamp=1.0)      # the data range: [-1, 1]
        distance = pair_distance(images, self.config.space)
        ratio = float(distance.numpy()) / self.target
        stats = {"pair_distance": ratio}
        if ratio >= 1.0 or not self.open:
            return None, dict(stats, loss_diversity=0.0)
        term = (1.0 - distance * (1.0 / self.target)) * self.config.weight
        return term, dict(stats, loss_diversity=float(term.numpy()))

    def _class_term(self, images, c):
        if c is None:
            raise ValueError("the per-class diversity floor needs the labels c of the generated images")
        labels = backend.to_numpy(c.data).argmax(axis=1)
        first, second = same_class_pairs(labels)
        if not len(first):
            return None, {}
        images = bias_act(images, act="linear", clamp=1.0)      # the data range: [-1, 1]
        distances = _pair_rms(images[first] - images[second], self.config.space)
        scale = Tensor(images.xp.asarray(1.0 / self.targets[labels[first]], dtype=images.dtype))
        ratio_tensor = (distances * scale).mean()
        ratio = float(ratio_tensor.numpy())
        stats = {"pair_distance": ratio}
        if ratio >= 1.0 or not self.open:
            return None, dict(stats, loss_diversity=0.0)
        term = (1.0 - ratio_tensor) * self.config.weight
        return term, dict(stats, loss_diversity=float(term.numpy()))

    def observe(self, stats, next_nimg):
        """After a G step (its stats, averaged over the batch's parts): update the gate's running
        mean from this batch's d / d_real, and open or close the floor for the step at `next_nimg`.
        Returns a message when the schedule has just closed the floor, else None."""
        ratio = stats.get("pair_distance")
        if self.config.gate_kimg and ratio is not None:
            beta = 0.5 ** (self.batch / (self.config.gate_kimg * 1000))
            self.mean = ratio if self.mean is None else beta * self.mean + (1 - beta) * ratio
            stats["pair_distance_mean"] = self.mean
        self.schedule(next_nimg)
        end = self.end_nimg
        if end and next_nimg - self.batch < end <= next_nimg:
            return (f"diversity floor: off from {next_nimg / 1000:.3f} kimg (--diversity-until "
                    f"{self.config.until_kimg:g}); the collapse guard still watches")
        return None

    def describe(self):
        """The plan line's words for the floor."""
        c = self.config
        target = f"target {self.target:.3f}" if self.targets is None else "targets " + ", ".join(
            f"{name} {t:.3f}" for name, t in zip(self.class_names, self.targets))
        return (f"diversity floor {c.weight:g} ({target}"
                + (f", gated by a {c.gate_kimg:g}-kimg running mean" if c.gate_kimg else "")
                + (f", until {c.until_kimg:g} kimg" if c.until_kimg else "")
                + (", on image gradients" if c.space == "gradients" else "") + ")")

    def state_dict(self):
        return {"mean": self.mean}

    def load_state_dict(self, state, cur_nimg):
        self.mean = state.get("mean")
        self.schedule(cur_nimg)
