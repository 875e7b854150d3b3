"""Training: TrainConfig, train(), and the per-phase optimiser step. The only place where data,
augmentation, networks, losses, autograd and the optimisers are wired together.

One iteration (StyleGAN2-ADA's phases, batch B):
  Gmain  G trains, D frozen: softplus(-D(aug(G(z)))) [+ diversity floor] -> Adam(G); w_avg tracked
  Greg   every G_reg_interval iterations, when pl_weight > 0: path-length penalty -> Adam(G)
  Dmain  G frozen: softplus(D(aug(G(z)))) + softplus(-D(aug(x))) -> Adam(D); ADA's statistic
  Dreg   every r1_interval iterations: R1 * r1_interval -> the same Adam(D)
  G_ema  lerp towards G (half-life ema_kimg, ramped up)
Lazy regularisation scales both optimisers' lr and betas by c = interval / (interval + 1).
Each phase is one `phase_step`: on the CPU it computes the batch in parts at once, one per core;
under mpiexec each process computes its rows and the gradients are summed across them (distributed.py).

train() opens a run (new, or resumed from its checkpoint), states its plan, then loops. A run
folder holds ckpt-<kimg>.npz and latest.npz (everything needed to continue bit-exactly: weights,
optimiser moments, RNG and data-order state, counters, ADA and floor state, the config),
fakes-<kimg>.png grids from fixed seeds, loss.png, metrics.jsonl (+ metrics.png), training.gif
and log.txt. Every random draw comes from generators saved in the checkpoint, and snapshots use
their own fixed seeds, so an interrupted-and-resumed run equals an uninterrupted one.
"""
import copy
import dataclasses
import functools
import glob
import hashlib
import json
import math
import numbers
import os
import re
import signal
import sys
import time

import numpy as np

from . import backend, blas, distributed, parallel
from .augment import AdaController, AugmentPipe
from .autograd import Tensor, grad
from .checkpoint import CheckpointError, load_checkpoint, read_meta, remove_temporaries, save_checkpoint
from .data import DataError, check_minibatch_std_group, load_data, load_default_dataset, to_float
from .diversity import DiversityConfig, DiversityFloor
from .losses import StyleGAN2Loss
from .networks import CONFIGS, Discriminator, Generator, network_kwargs
from .nn import copy_module
from .optim import Adam, ema_beta, ema_update, lazy_regularization, sanitize_gradients
from . import viz


class TrainingDiverged(RuntimeError):
    """A loss or the weights became NaN or infinite; the last good checkpoint is left as it was."""


class TrainingStopped(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training (train() and _StopSignals say how); the message says
    which checkpoint is left. A KeyboardInterrupt, so code that catches Ctrl-C catches it too;
    `exit_code` is the shell's for the signal (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, message="", signum=signal.SIGINT, abrupt=False, in_loop=False, wrote=False, age_s=None):
        super().__init__(message)
        self.signum, self.abrupt, self.in_loop, self.wrote, self.age_s = signum, abrupt, in_loop, wrote, age_s

    @property
    def exit_code(self):
        return 128 + int(self.signum)


@dataclasses.dataclass
class TrainConfig:
    """A run's settings. None means "the preset's" (`preset()` fills them for the device)."""
    data: str = None                 # image folder, volume or folder of volumes; None = the MNI152 slices
    res: int = 64
    classes: str = None              # "AD,NC": those subfolders as classes; "*": every subfolder
    axis: str = "axial"              # volumes: the slicing axis (axial, coronal or sagittal)
    cond: bool = False               # G and D conditional on the class labels (--classes)
    cfg: str = None                  # network config (networks.CONFIGS); None = cpu on a CPU, auto on a GPU
    kimg: float = None               # thousands of real images to show D
    minutes: float = None            # wall-clock budget of the training loop; 0 = none
    batch: int = None
    seed: int = 0
    out: str = None
    gamma: float = None              # R1 weight
    r1_interval: int = 16
    G_reg_interval: int = 4
    style_mixing_prob: float = None
    pl_weight: float = None          # path-length regularisation; 0 = off
    diversity: DiversityConfig = dataclasses.field(default_factory=DiversityConfig)
    aug: str = "ada"                 # ada | noaug
    ada_target: float = 0.6
    ada_kimg: float = None           # p can go 0 -> 1 in this many kimg
    ada_pivot: str = "mean"          # brightness/contrast about the image "mean" (ADA) or "black" (augment.py)
    ema_kimg: float = None
    ema_rampup: float = 0.05
    lr_G: float = None               # Adam's learning rates before lazy regularisation's scaling
    lr_D: float = None
    snap_kimg: float = None
    keep: int = None                 # ckpt-*.npz kept besides latest.npz: the newest this many (KEEP)
    metrics_kimg: float = None       # 0 = no metrics during training
    num_fixed_seeds: int = 32
    mirror: bool = True              # x-flip reals: axial brain slices are near left-right symmetric
    crop_border: int = 0
    device: str = None
    parts: int = None                # minibatch parts computed at once on threads; None = one per core
                                     # on the CPU when the batch splits into whole mbstd groups

    @classmethod
    def from_dict(cls, saved):
        """The config a checkpoint holds (dataclasses.asdict of one), including those written before
        the diversity settings were nested and before `net` and `split` took their present names."""
        saved = dict(saved)
        diversity = dict(saved.pop("diversity", None) or {})
        for old, new in (("diversity_weight", "weight"), ("diversity_kimg", "until_kimg"),
                         ("diversity_gate_kimg", "gate_kimg"), ("diversity_space", "space")):
            if old in saved:
                diversity[new] = saved.pop(old)
        if "net" in saved:                # the resolved network config: now `cfg` itself
            saved["cfg"] = saved.pop("net")
        if "split" in saved:
            saved["parts"] = saved.pop("split")
        fields = {f.name for f in dataclasses.fields(cls)}
        config = cls(**{k: v for k, v in saved.items() if k in fields})
        config.diversity = DiversityConfig(**{k: v for k, v in diversity.items()
                                              if k in {f.name for f in dataclasses.fields(DiversityConfig)}})
        return config

    def preset(self, log=print):
        """Fill the unset options for the device and network config, say what was chosen, and
        check the ranges. The reasons for the defaults: docs/experiments.md, sections named below."""
        _check_rules(self, _RULES[:1])        # --res, which the defaults below depend on
        device = self.device or backend.default_device()
        self.device = device
        if self.cfg is None:
            self.cfg = "cpu" if device == "cpu" else "auto"
            if device == "cpu":
                log("no GPU answers: using the 'cpu' network config (narrow widths for a 2-core hour); "
                    "pass --cfg auto for the full-width networks")
        cpu_like = self.cfg in ("cpu", "tiny")
        floor = self.cfg in ("cpu", "auto")    # both collapsed on the default data without it ("GPU",
                                               # "The diversity floor, and the collapse it replaced")
        ada_auto = self.cfg == "auto" and self.res >= 128   # StyleGAN2-ADA's 'auto' spec on one GPU
        defaults = dict(
            batch=(min(4096 // self.res, 32) if ada_auto else 16) if self.cfg != "tiny" else 4,
            style_mixing_prob=0.0 if self.cfg in ("bench64", "tiny") else 0.9,
            pl_weight=0.0 if cpu_like or self.cfg == "bench64" else 2.0,
            # ADA's 500 kimg suits thousands of images; D overfits the 123 default slices in a few kimg ("GPU")
            ada_kimg=500.0 if self.cfg == "bench64" else 10.0,
            # "Learning rate: 0.004 against StyleGAN2's 0.0025"
            lr_G=0.004 if self.cfg == "cpu" else 0.0025,
            lr_D=0.004 if self.cfg == "cpu" else 0.0025,
            snap_kimg=(2.0 if cpu_like else 50.0) if self.cfg != "tiny" else 0.016,
            metrics_kimg=0.0 if self.cfg == "tiny" else None,
            # the CPU default is an hour, not an image count ("The CPU run: where quality stands")
            kimg=100.0 if self.cfg == "cpu" else 0.032 if self.cfg == "tiny" else 5000.0,
            minutes=55.0 if self.cfg == "cpu" else 0.0,
        )
        for key, value in defaults.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.gamma is None:   # R1 weight: 0.1 at res <= 64 ("The diversity floor, and the collapse it
                                 # replaced"); above, StyleGAN2-ADA's heuristic 0.0002 res^2 / batch
            self.gamma = 0.1 if self.res <= 64 else 0.0002 * self.res ** 2 / max(self.batch, 1)
        if self.ema_kimg is None:
            self.ema_kimg = 2.0 if cpu_like else (max(self.batch, 1) * 10 / 32 if ada_auto else 10.0)
        if self.metrics_kimg is None:
            self.metrics_kimg = self.snap_kimg * (2 if cpu_like else 1)
        if self.diversity.weight is None:
            self.diversity.weight = 4.0 if floor else 0.0
        if self.diversity.until_kimg is None:       # only while collapse threatens ("Ending the floor ...")
            self.diversity.until_kimg = 40.0 if floor else 0.0
        if self.keep is None:
            self.keep = KEEP
        return self.validate()

    def validate(self):
        """Check every option's type and range before any work is done; the messages name the
        command line's flags (train_oasis.py), or the field where there is none."""
        _check_rules(self, _RULES)
        if self.cfg not in CONFIGS:
            raise ValueError(f"unknown --cfg {self.cfg!r}; choose one of {', '.join(CONFIGS)}")
        if self.cfg == "bench64" and self.res != 64:
            raise ValueError(f"--cfg bench64 is the speed yardstick at --res 64 only, got --res {self.res}")
        for field, flag, choices in (("aug", "--aug", ("ada", "noaug")), ("ada_pivot", "--aug-pivot", ("mean", "black")),
                                     ("device", "--device", ("cpu", "cuda"))):
            if getattr(self, field) not in choices:
                raise ValueError(f"{flag} {getattr(self, field)!r}: choose one of {', '.join(choices)}")
        if not all(_is_number(lr) and math.isfinite(lr) and lr > 0 for lr in (self.lr_G, self.lr_D)):
            raise ValueError(f"--lr: learning rates must be > 0, got G {_shown(self.lr_G)} and D {_shown(self.lr_D)}")
        if self.batch % min(4, self.batch):
            raise ValueError(f"--batch {self.batch}: use an even batch that is a multiple of 4 (or 2), "
                             "the discriminator's minibatch-stddev group")
        self.diversity.validate()
        return self


KEEP = 5   # default --keep: room to step back a few snapshots past a divergence or a collapse that
           # the fakes-*.png grids show, with the disk a run uses bounded (the plan line says how much)

# (field, flag, type, test, rule) for TrainConfig.validate; NaN and infinity fail every rule
_RULES = (
    ("res", "--res", int, lambda v: 4 <= v <= 1024 and not v & (v - 1), "a power of two from 4 to 1024"),
    ("kimg", "--kimg", float, lambda v: v > 0, "> 0 (thousands of real images shown to D)"),
    ("minutes", "--minutes", float, lambda v: v >= 0, ">= 0 (0: no time budget)"),
    ("batch", "--batch", int, lambda v: v >= 2, ">= 2"),
    ("seed", "--seed", int, lambda v: v >= 0, ">= 0"),
    ("gamma", "--gamma", float, lambda v: v >= 0, ">= 0 (0: no R1 penalty)"),
    ("snap_kimg", "--snap", float, lambda v: v > 0, "> 0 kimg"),
    ("metrics_kimg", "--metrics", float, lambda v: v >= 0, ">= 0 kimg (0: no metrics during training)"),
    ("keep", "--keep", int, lambda v: v >= 0, ">= 0 (0: latest.npz only)"),
    ("crop_border", "crop_border", int, lambda v: v >= 0, ">= 0 pixels"),
    ("r1_interval", "r1_interval", int, lambda v: v >= 1, ">= 1"),
    ("G_reg_interval", "G_reg_interval", int, lambda v: v >= 1, ">= 1"),
    ("style_mixing_prob", "style_mixing_prob", float, lambda v: 0 <= v <= 1, "from 0 to 1"),
    ("pl_weight", "pl_weight", float, lambda v: v >= 0, ">= 0 (0: off)"),
    ("ada_target", "ada_target", float, lambda v: 0 < v < 1, "between 0 and 1"),
    ("ada_kimg", "ada_kimg", float, lambda v: v > 0, "> 0 kimg"),
    ("ema_kimg", "ema_kimg", float, lambda v: v >= 0, ">= 0 kimg (0: G_ema follows G)"),
    ("ema_rampup", "ema_rampup", float, lambda v: v >= 0, ">= 0 (or None: no ramp-up)"),
    ("num_fixed_seeds", "num_fixed_seeds", int, lambda v: v >= 1, ">= 1"),
    ("parts", "parts", int, lambda v: v >= 1, ">= 1 (or None: one per core)"),
)
_OPTIONAL = ("ema_rampup", "parts")    # None is a setting of its own


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _shown(value):
    return f"{value:g}" if _is_number(value) else repr(value)


def _check_rules(config, rules):
    for field, flag, kind, ok, rule in rules:
        value = getattr(config, field)
        if value is None and field in _OPTIONAL:
            continue
        if not (isinstance(value, numbers.Integral) if kind is int else _is_number(value)) or isinstance(value, bool):
            raise ValueError(f"{flag} {value!r}: must be a {'whole ' if kind is int else ''}number {rule}")
        if not ((kind is int or math.isfinite(value)) and ok(value)):
            raise ValueError(f"{flag} {_shown(value)}: must be {rule}")


# ---- the per-phase step ------------------------------------------------------------------------

class NonFiniteLoss(TrainingDiverged):
    """A phase's loss was NaN or infinite (nothing was stepped)."""


def phase_step(module, optimizer, loss_of, batch, rng, parts=1, name="loss", comm=None):
    """One optimiser step of `module` on a loss: forward, backward, sanitise, Adam.

    `loss_of(rows, rng, first)` -> (loss Tensor, stats dict) computes the loss of the minibatch
    rows `rows` (a slice of range(batch)) with randomness from `rng`; `first` marks the one part
    that updates running averages (w_avg). With parts = 1 that is the whole batch with `rng`
    itself. With parts > 1 the rows are computed in that many parts at once, each on a thread
    (parallel.split_batch) with a generator seeded from `rng`, each part's loss weighted
    1 / parts and the gradients summed: the gradient of the whole batch's mean loss.

    With a communicator `comm` of N > 1 processes (distributed.py) the batch is cut into N * parts
    parts, seeds are drawn for all of them (every rank's `rng` advances alike), and rank r computes
    parts r * parts to (r + 1) * parts - 1. The gradients, with the module's buffers as rank 0 left
    them (part 0 updates w_avg), are summed across the ranks in one flat buffer, and the parts'
    losses and stats are gathered: every rank gets what one process computes with the batch in
    N * parts parts, and raises NonFiniteLoss with the others.

    Returns (stats, bad): the parts' stats averaged (arrays concatenated in row order) and the
    number of non-finite gradient entries zeroed. Raises NonFiniteLoss, before any step, when
    the loss is not finite."""
    comm = comm or distributed.Single()
    optimizer.zero_grad()
    if parts * comm.size <= 1:
        loss, stats = loss_of(slice(None), rng, True)
        _check_finite(float(loss.numpy()), name)
        loss.backward()
    else:
        total, first = parts * comm.size, comm.rank * parts
        seeds = rng.integers(2 ** 63, size=total)
        params = [p for p in module.parameters() if p.requires_grad]

        def part(i):
            i += first
            rows = slice(i * batch // total, (i + 1) * batch // total)
            loss, stats = loss_of(rows, np.random.default_rng(seeds[i]), i == 0)
            return float(loss.numpy()), stats, grad(loss * (1.0 / total), params)

        results = parallel.split_batch(part, parts)
        losses = [(value, stats) for value, stats, _ in results]
        if comm.size > 1:
            losses = _gather_parts(comm, losses)
        _check_finite(np.mean([value for value, _ in losses]), name)
        for k, p in enumerate(params):
            grads = [g[k].data for _, _, g in results if g[k] is not None]
            p.grad = Tensor(functools.reduce(np.add, grads)) if grads else None
        if comm.size > 1:
            _allreduce_gradients(comm, params, [b for _, b in module.named_buffers()])
        stats = {key: (np.concatenate([s[key] for _, s in losses]) if isinstance(value, np.ndarray)
                       else float(np.mean([s[key] for _, s in losses])))
                 for key, value in losses[0][1].items()}
    bad = sanitize_gradients(module.parameters())
    optimizer.step()
    return stats, bad


def _check_finite(value, name):
    if not math.isfinite(value):
        raise NonFiniteLoss(f"the {name} became {value}")


def _gather_parts(comm, losses):
    """Every rank's (loss, stats) of its parts, for all parts in order (rank by rank), from this
    rank's `losses`: one float64 allgather of a row per part. Array stats hold the same number of
    entries in every part."""
    like = losses[0][1]
    keys = list(like)
    mine = np.array([np.concatenate([[value]] + [np.ravel(stats[key]) for key in keys]) for value, stats in losses])
    gathered = []
    for row in comm.allgather(mine).reshape(-1, mine.shape[1]):
        stats, at = {}, 1
        for key in keys:
            size = np.size(like[key])
            stats[key] = (row[at:at + size].astype(like[key].dtype).reshape(like[key].shape)
                          if isinstance(like[key], np.ndarray) else float(row[at]))
            at += size
        gathered.append((float(row[0]), stats))
    return gathered


def _allreduce_gradients(comm, params, buffers):
    """Sum the ranks' gradients of `params`, and take `buffers` from rank 0 (the others add
    zeros), in one all-reduce of one flat buffer; the gradients become views of it."""
    xp, dtype = params[0].xp, params[0].dtype
    tensors = [p.grad.data if p.grad is not None else None for p in params]
    tensors += [b.data if comm.rank == 0 else None for b in buffers]
    shapes = [p.shape for p in params] + [b.shape for b in buffers]
    if any(t is not None and t.dtype != dtype for t in tensors):
        raise ValueError(f"all-reduce: the parameters and buffers must share one dtype ({dtype})")
    flat = xp.zeros(sum(math.prod(shape) for shape in shapes), dtype=dtype)
    views, at = [], 0
    for tensor, shape in zip(tensors, shapes):
        size = math.prod(shape)
        if tensor is not None:
            flat[at:at + size] = tensor.reshape(-1)
        views.append(flat[at:at + size].reshape(shape))
        at += size
    comm.allreduce_sum(flat)
    for p, view in zip(params, views):
        if p.grad is not None:
            p.grad = Tensor(view)
    for b, view in zip(buffers, views[len(params):]):
        b.data = view.copy()


# ---- the run -----------------------------------------------------------------------------------

def build_networks(cfg, res, img_channels=1, seed=0, dtype=np.float32, kwargs=None):
    """(G, D) of network config `cfg` at `res`; `kwargs` = (G_kwargs, D_kwargs) overrides the
    config's (a checkpoint's own, so a run resumes with the networks it was built with)."""
    G_kwargs, D_kwargs = kwargs if kwargs is not None else network_kwargs(cfg, res)
    G = Generator(img_resolution=res, img_channels=img_channels, seed=seed, dtype=dtype, **G_kwargs)
    D = Discriminator(img_resolution=res, img_channels=img_channels, seed=seed + 1, dtype=dtype, **D_kwargs)
    return G, D


def saved_network_kwargs(meta, config):
    """{"G": kwargs, "D": kwargs}: the networks a checkpoint's run was built with (so it resumes
    and loads with them even if the presets have changed since); for a new run, and checkpoints
    from before they were saved, those of config.cfg at config.res."""
    network = meta.get("network")
    if isinstance(network, dict) and {"G", "D"} <= network.keys():
        return network
    return dict(zip(("G", "D"), network_kwargs(config.cfg, config.res)))


def default_parts(batch, D, device):
    """How many parts of each batch a phase computes at once: one per core on the CPU where the
    batch divides into whole minibatch-stddev groups of D (parallel.batch_parts), 1 on a GPU."""
    return parallel.batch_parts(batch, D.epilogue.mbstd_group_size) if device == "cpu" else 1


def load_dataset(config, log=print):
    if config.data is None:
        dataset = load_default_dataset(config.res)
        log(f"data: the default MNI152 2009a axial slices ({len(dataset)} images, {config.res}x{config.res}); "
            "pass --data DIR to train on your own slices (e.g. OASIS keras_png_slices_train)")
    else:
        # a conditional run without --classes takes every subfolder as a class
        classes = config.classes or ("*" if config.cond else None)
        dataset = load_data(config.data, config.res, classes=classes, crop_border=config.crop_border,
                            axis=config.axis)
        log(f"data: {len(dataset)} images from {config.data} at {config.res}x{config.res}"
            + (f", {len(dataset.skipped)} unreadable files skipped" if dataset.skipped else ""))
    if dataset.resolution != config.res:
        raise DataError(f"dataset resolution {dataset.resolution} does not match --res {config.res}")
    if len(dataset) < config.batch:
        log(f"note: only {len(dataset)} images for a batch of {config.batch}; images repeat within batches")
    return dataset


class _DataOrder:
    """Shuffled epochs drawn from their own generator; state = (permutation, position, rng)."""

    def __init__(self, n, rng):
        self.n, self.rng = n, rng
        self.order = rng.permutation(n)
        self.position = 0

    def next(self, batch):
        out = []
        while len(out) < batch:
            if self.position >= self.n:
                self.order = self.rng.permutation(self.n)
                self.position = 0
            take = min(batch - len(out), self.n - self.position)
            out.extend(self.order[self.position:self.position + take].tolist())
            self.position += take
        return np.asarray(out)


class Run:
    """One training run: its config, data, networks, optimisers, augmentation, loss, random
    generators, counters and folder. Built whole from a preset config and a dataset, and from a
    checkpoint `(arrays, meta, path)` when it continues one (its networks and state). With a
    communicator `comm` of N processes, config.parts counts the parts of each batch over all of
    them; this process computes `parts` = config.parts / N of them."""

    def __init__(self, config, dataset, checkpoint=None, comm=None):
        self.config, self.dataset, self.dir = config, dataset, config.out
        self.comm, self.notes = comm or distributed.Single(), []
        arrays, meta, path = checkpoint if checkpoint else (None, {}, None)
        network = saved_network_kwargs(meta, config)
        self.class_names = _class_names(config, dataset)      # [] for an unconditional run
        if self.class_names and "c_dim" not in network["G"]:
            network = {key: dict(kwargs, c_dim=len(self.class_names)) for key, kwargs in network.items()}
        self.network = network
        self.G, self.D = build_networks(config.cfg, config.res, seed=config.seed,
                                        kwargs=(network["G"], network["D"]))
        self.G_ema = copy_module(self.G)
        check_minibatch_std_group(dataset, min(self.D.epilogue.mbstd_group_size or config.batch, config.batch))
        ranks, group = self.comm.size, self.D.epilogue.mbstd_group_size
        if ranks > 1 and config.batch % (ranks * group):
            raise ValueError(f"--batch {config.batch} does not split among {ranks} processes in whole minibatch-stddev "
                             f"groups of {group}: use a batch that is a multiple of {ranks * group}, or a number of "
                             f"processes that divides {config.batch // group}")
        if config.parts is not None and config.parts % ranks:
            # a checkpoint's parts that these processes cannot share: split anew (other random draws)
            self.notes.append(f"note: the checkpoint computes each batch in {config.parts} parts, which {ranks} "
                              f"processes cannot share; continuing with {ranks} x "
                              f"{default_parts(config.batch // ranks, self.D, config.device)} parts (the same training, "
                              "other random draws from here on)")
            config.parts = None
        if config.parts is None:       # saved in the checkpoint's config: a resumed run splits alike
            config.parts = ranks * default_parts(config.batch // ranks, self.D, config.device)
        if config.parts < 1 or config.batch % config.parts:
            raise ValueError(f"parts {config.parts}: the batch ({config.batch}) must divide into that many parts")
        self.parts = config.parts // ranks
        if config.device != "cpu":
            for module in (self.G, self.D, self.G_ema):
                module.to(config.device)
        lr_G, betas_G = lazy_regularization(config.lr_G, (0.0, 0.99), config.G_reg_interval)
        lr_D, betas_D = lazy_regularization(config.lr_D, (0.0, 0.99), config.r1_interval)
        self.opt_G = Adam(self.G.parameters(), lr=lr_G, betas=betas_G)
        self.opt_D = Adam(self.D.parameters(), lr=lr_D, betas=betas_D)
        self.pipe = AugmentPipe(pivot=config.ada_pivot) if config.aug == "ada" else None
        self.ada = AdaController(self.pipe, config.batch, target=config.ada_target, kimg=config.ada_kimg) \
            if self.pipe is not None else None
        self.floor = DiversityFloor.from_data(config.diversity, dataset.images, config.batch, dataset.labels,
                                              self.class_names or None) \
            if config.diversity.weight > 0 else None
        self.loss = StyleGAN2Loss(self.G, self.D, self.pipe, r1_gamma=config.gamma,
                                  style_mixing_prob=config.style_mixing_prob, pl_weight=config.pl_weight,
                                  diversity_floor=self.floor)
        self.rng = np.random.default_rng([config.seed, 1])
        self.data_rng = np.random.default_rng([config.seed, 2])
        self.order = _DataOrder(len(dataset), self.data_rng)
        self.cur_nimg = self.iteration = self.bad_gradients = 0
        self.records = []
        if checkpoint:
            self._restore(arrays, meta, path)

    def labels(self, indices):
        """One-hot labels (a Tensor on the run's device) of the training images `indices`; None
        for an unconditional run."""
        if not self.class_names:
            return None
        one_hot = np.eye(len(self.class_names), dtype=np.float32)[self.dataset.labels[indices]]
        return Tensor(backend.xp_for_device(self.config.device).asarray(one_hot))

    def fake_labels(self, count):
        """Labels for `count` generated images, drawn from the data's label distribution (the labels
        of training images picked at random with the run's generator, as StyleGAN2-ADA does); None,
        drawing nothing, for an unconditional run."""
        if not self.class_names:
            return None
        return self.labels(self.rng.integers(len(self.dataset), size=count))

    def state(self):
        """(arrays, meta) of a checkpoint that continues this run exactly."""
        arrays = {}
        for prefix, module in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            arrays.update({f"{prefix}/{k}": v for k, v in module.state_dict().items()})
        for prefix, opt in (("opt_G", self.opt_G), ("opt_D", self.opt_D)):
            arrays.update({f"{prefix}/{k}": v for k, v in opt.state_dict().items()})
        arrays["data/order"] = self.order.order.astype(np.int64)
        meta = dict(config=dataclasses.asdict(self.config), cur_nimg=self.cur_nimg, iteration=self.iteration,
                    rng=self.rng.bit_generator.state, data_rng=self.data_rng.bit_generator.state,
                    data_position=self.order.position, data_size=self.order.n,
                    ada=self.ada.state_dict() if self.ada else None, bad_gradients=self.bad_gradients,
                    pl_mean=self.loss.pl_mean, diversity=self.floor.state_dict() if self.floor else None,
                    records=self.records[-2000:], network=self.network)
        if self.class_names:
            meta["class_names"] = list(self.class_names)
        return arrays, meta

    def _restore(self, arrays, meta, path):
        try:
            for prefix, module in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
                module.load_state_dict({k[len(prefix) + 1:]: v for k, v in arrays.items() if k.startswith(prefix + "/")})
            for prefix, opt in (("opt_G", self.opt_G), ("opt_D", self.opt_D)):
                opt.load_state_dict({k[len(prefix) + 1:]: v for k, v in arrays.items() if k.startswith(prefix + "/")})
            if meta["data_size"] != self.order.n:
                raise ValueError(f"the checkpoint was trained on {meta['data_size']} images, the data now has "
                                 f"{self.order.n}; resume with the same --data")
            if meta.get("class_names", []) != self.class_names:
                raise ValueError(f"the checkpoint's classes are {meta.get('class_names', [])}, the data's are "
                                 f"{self.class_names}; resume with the same --data and --classes")
            self.order.order = arrays["data/order"]
            self.order.position = meta["data_position"]
            self.rng.bit_generator.state = meta["rng"]
            self.data_rng.bit_generator.state = meta["data_rng"]
            self.cur_nimg, self.iteration = meta["cur_nimg"], meta["iteration"]
            self.bad_gradients = meta.get("bad_gradients", 0)
            self.loss.pl_mean = meta.get("pl_mean", 0.0)
            self.records = meta.get("records", [])
            if self.ada is not None and meta.get("ada"):
                self.ada.load_state_dict(meta["ada"])
            if self.floor is not None:   # older checkpoints kept the gate's mean at the top level
                self.floor.load_state_dict(meta.get("diversity") or {"mean": meta.get("diversity_mean")},
                                           self.cur_nimg)
        except (KeyError, ValueError) as error:
            raise CheckpointError(f"{path!r} does not fit this run's configuration: {error}") from None


def _class_names(config, dataset):
    """The classes a conditional run (--cond) learns: the dataset's, checked; [] without --cond."""
    if not config.cond:
        return []
    names = list(dataset.class_names)
    if len(names) < 2:
        raise DataError(f"--cond trains on class labels, but the data has {len(names) or 'no'} class"
                        f"{'' if len(names) == 1 else 'es'}: pass --data FOLDER whose subfolders hold the classes "
                        "(two or more; --classes A,B picks some of them, e.g. --classes AD,NC)")
    counts = np.bincount(dataset.labels, minlength=len(names))
    if counts.min() == 0:
        empty = [n for n, k in zip(names, counts) if k == 0]
        raise DataError(f"--cond: class folder(s) {empty} hold no readable images; add images or leave them "
                        "out of --classes")
    return names


# ---- train(): open the run, state the plan, loop -------------------------------------------------

class _Log:
    """Messages to the terminal and to the run's log.txt (those said before the folder exists are
    written once it does)."""

    def __init__(self, to_stdout, to_file=True):
        self.to_stdout, self.to_file, self.file, self.pending = to_stdout, to_file, None, []

    def __call__(self, message):
        if self.to_stdout:
            print(message, flush=True)
        self.line(message)

    def line(self, message):
        """log.txt only."""
        if not self.to_file:
            return
        if self.file is None:
            self.pending.append(message)
        else:
            self.file.write(message + "\n")
            self.file.flush()

    def open(self, folder):
        self.file = open(os.path.join(folder, "log.txt"), "a")
        for message in self.pending:
            self.line(message)
        self.pending = []

    def close(self):
        if self.file is not None:
            self.file.close()


CHECKPOINT_NAME = re.compile(r"^ckpt-(\d+\.\d+)\.npz$")    # ckpt-<kimg>.npz, as _snapshot names them


def _nimg(meta):
    value = meta.get("cur_nimg")
    return value if isinstance(value, int) else -1


def _checkpoints(folder):
    """The checkpoints of a run folder, newest first by the cur_nimg their metadata holds (latest.npz
    first among equals): ([(path, meta)], [(path, CheckpointError)] of those that do not read)."""
    names = sorted(name for name in os.listdir(folder) if CHECKPOINT_NAME.match(name))
    readable, unreadable = [], []
    for name in ["latest.npz"] * os.path.isfile(os.path.join(folder, "latest.npz")) + names:
        path = os.path.join(folder, name)
        try:
            readable.append((path, read_meta(path)))
        except CheckpointError as error:
            unreadable.append((path, error))
    readable.sort(key=lambda item: -_nimg(item[1]))            # stable: latest.npz first among equals
    return readable, unreadable


def checkpoint_to_resume(resume, log):
    """(run folder, path, arrays, meta): `resume` itself when it is a file, or the newest checkpoint
    of the run folder `resume` that loads (latest.npz, or a newer ckpt-*.npz where a run was killed
    between the two writes), saying which and why."""
    if not os.path.isdir(resume):
        arrays, meta = load_checkpoint(resume)
        folder = os.path.dirname(os.path.abspath(resume))
        newer = [(path, m) for path, m in _checkpoints(folder)[0] if _nimg(m) > _nimg(meta)]
        if newer:
            raise CheckpointError(
                f"{resume!r} is at {_nimg(meta) / 1000:.3f} kimg, but its folder holds a newer checkpoint, "
                f"{newer[0][0]} ({_nimg(newer[0][1]) / 1000:.3f} kimg): continuing here would mix two histories "
                f"in one run folder. Continue the newest with --resume {folder}, or copy {resume} into a new "
                "folder and resume from the copy")
        return folder, resume, arrays, meta
    folder = os.path.abspath(resume)
    readable, unreadable = _checkpoints(folder)
    for path, _ in readable:
        try:
            arrays, meta = load_checkpoint(path)
        except CheckpointError as error:
            unreadable.append((path, error))
            continue
        for _, error in unreadable:
            log(f"skipped: {error}")
        if os.path.basename(path) != "latest.npz":
            latest = [m for p, m in readable if os.path.basename(p) == "latest.npz"]
            log(f"resuming from {os.path.basename(path)}, the newest checkpoint in {folder} that loads"
                + (f" (latest.npz holds {_nimg(latest[0]) / 1000:.3f} kimg: the run was stopped between writing "
                   "the two)" if latest and _nimg(latest[0]) < _nimg(meta) else ""))
        return folder, path, arrays, meta
    if not unreadable:
        raise CheckpointError(f"run folder {resume!r} has no checkpoint to resume from (no latest.npz or "
                              "ckpt-*.npz)")
    raise CheckpointError(f"no checkpoint in {resume!r} loads: " + "; ".join(str(e) for _, e in unreadable))


# the run's files that checkpoint.write_atomic writes (so a killed write may leave a temporary of)
_ATOMIC_ARTEFACTS = ("latest.npz", "ckpt-*.npz", "fakes-*.png", "loss.png", "metrics.png", "training.gif")


def _remove_temporaries(folder, log):
    """Remove the temporary files a write killed in this run folder left (write_atomic's own)."""
    stale = remove_temporaries(folder, _ATOMIC_ARTEFACTS)
    if stale:
        log(f"removed {len(stale)} temporary file{'s' * (len(stale) > 1)} left by a write that was killed: "
            + ", ".join(stale))


RESUME_OVERRIDES = ("kimg", "minutes", "device", "keep", "lr_G", "lr_D", "gamma")   # what a resumed run
                                                                                     # takes from the caller


def open_run(config, resume=None, log=print, comm=None):
    """A Run: new from `config` (preset here), or continued from `resume` (a run folder or a
    checkpoint), taking only RESUME_OVERRIDES from `config`; its folder created (and cleared of
    temporaries a killed write left), its data loaded. Options are checked before anything else.
    With several processes (`comm`) each opens it alike; rank 0 names, creates and clears the folder."""
    comm = comm or distributed.Single()
    checkpoint = None
    if resume:
        run_dir, path, arrays, meta = checkpoint_to_resume(resume, log)
        try:
            saved = TrainConfig.from_dict(meta["config"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CheckpointError(f"{path!r} holds no usable run config ({type(error).__name__}: {error}); "
                                  "resume from a checkpoint written by nanostyle's training") from None
        changed = []
        for key in RESUME_OVERRIDES:
            if getattr(config, key) is not None:
                if key in ("lr_G", "lr_D", "gamma") and getattr(config, key) != getattr(saved, key):
                    changed.append(f"{key} {getattr(saved, key):g} -> {getattr(config, key):g}")
                setattr(saved, key, getattr(config, key))
        if saved.keep is None:                        # a checkpoint from before --keep
            saved.keep = KEEP
        config, checkpoint = saved.validate(), (arrays, meta, path)
        config.out = run_dir
        if _nimg(meta) >= round(config.kimg * 1000):
            raise ValueError(f"--kimg {config.kimg:g}: the run is already at {_nimg(meta) / 1000:.3f} kimg; "
                             "pass a larger --kimg to continue it")
        log(f"resuming {path} at {meta['cur_nimg'] / 1000:.3f} kimg, continuing to {config.kimg} kimg")
        if changed:
            log("resume changes the checkpoint's settings: " + ", ".join(changed))
    else:
        config.preset(log)
        backend.xp_for_device(config.device)              # no GPU for --device cuda: say so before any folder
        if config.out is None:
            config.out = os.path.join("runs", time.strftime("%Y%m%d-%H%M%S") + f"-res{config.res}")
        config.out = comm.broadcast_json(config.out)      # rank 0's clock names it
        if os.path.isdir(config.out):
            readable, unreadable = _checkpoints(config.out)
            if readable or unreadable:
                raise ValueError(f"--out {config.out!r} already holds a run's checkpoints "
                                 f"({(readable or unreadable)[0][0]}); continue it with --resume {config.out}, "
                                 "or pick another --out")
        if comm.rank == 0:
            os.makedirs(config.out, exist_ok=True)
    if comm.rank == 0:
        _remove_temporaries(config.out, log)
    return Run(config, load_dataset(config, log), checkpoint, comm)


def plan(run, speed=None):
    """The plan line: what the run will do, with what; and, given the `speed` measure_speed found,
    how long --kimg takes at that rate and where a time budget ends the run."""
    c = run.config
    budget = f" or {c.minutes:g} minutes, whichever comes first," if c.minutes else ""
    classes = ""
    if run.class_names:
        counts = np.bincount(run.dataset.labels, minlength=len(run.class_names))
        classes = ", conditional on " + ", ".join(f"{n} ({k} images)" for n, k in zip(run.class_names, counts))
    return (f"plan: {c.kimg} kimg{budget} at batch {c.batch}, network '{c.cfg}' (G {run.G.num_parameters():,} / "
            f"D {run.D.num_parameters():,} parameters){classes}, lr {c.lr_G:g} / {c.lr_D:g} (G / D), "
            f"R1 gamma {c.gamma:.4g} "
            f"every {c.r1_interval}, augmentation {c.aug}"
            + (f" (colour about {run.pipe.pivot})" if run.pipe is not None else "") + ", "
            + (run.floor.describe() + ", " if run.floor else "")
            + f"device {c.device}" + _sharing(run)
            + f"; snapshots every {c.snap_kimg} kimg into {run.dir}" + _disk_use(run) + (_pace(run, speed) if speed else ""))


def _pace(run, speed):
    """The plan's words on time: the measured rate, how long the rest of --kimg takes at it, and
    where the time budget ends the run when that comes first."""
    c = run.config
    left = max(c.kimg * 1000 - run.cur_nimg, 0)
    text = (f"; measured {speed:.1f} img/s (training iterations timed on a copy of the run; snapshots come on "
            f"top): {'the remaining ' if run.cur_nimg else ''}{left / 1000:g} kimg take about "
            f"{_duration(left / speed)}")
    if c.minutes and left / speed > c.minutes * 60:
        text += (f", so the {c.minutes:g}-minute budget ends the run near "
                 f"{(run.cur_nimg + speed * c.minutes * 60) / 1000:.0f} kimg")
    return text


def _duration(seconds):
    minutes = seconds / 60
    if minutes < 1:
        return f"{seconds:.0f} s"
    if minutes < 60:
        return f"{minutes:.0f} min"
    return f"{int(minutes // 60)} h {int(minutes % 60):02d} min"


MEASURE_MIN_ITERATIONS = 50   # shorter runs start at once: timing them would take a share of the run


def measure_speed(run, repeats=2):
    """Training img/s of `run`, timed on a deep copy of it (networks, optimisers, augmentation,
    floor, generators and counters; the dataset and the communicator shared), so the run itself
    draws no random number and changes no state; under several processes every rank times alike.
    One warm-up iteration with every phase (on a GPU it compiles the kernels), then an iteration
    of each kind the lazy-regularisation intervals give (`repeats` of the most common), weighted
    by how often each comes. None if the copy's loss diverges."""
    trial = copy.deepcopy(run, {id(run.dataset): run.dataset, id(run.comm): run.comm})
    kinds = _iteration_kinds(run.config)
    most_common = max(kinds, key=kinds.get)
    try:
        trial.iteration = 0
        _training_iteration(trial)
        _synchronize(run.config.device)
        seconds = 0.0
        for counter, share in kinds.items():
            count = repeats if counter == most_common else 1
            trial.iteration = counter
            start = time.perf_counter()
            for _ in range(count):
                _training_iteration(trial)
            _synchronize(run.config.device)
            seconds += share * (time.perf_counter() - start) / count
    except NonFiniteLoss:
        return None
    return run.config.batch / seconds


def _iteration_kinds(config):
    """{an iteration counter: the share of iterations that run the same phases}, over one cycle of
    the R1 and path-length intervals."""
    cycle = math.lcm(config.r1_interval, config.G_reg_interval)
    kinds = {}
    for i in range(cycle):
        kind = (bool(config.gamma > 0 and i % config.r1_interval == 0),
                bool(config.pl_weight and i % config.G_reg_interval == 0))
        counter, count = kinds.get(kind, (i, 0))
        kinds[kind] = (counter, count + 1)
    return {counter: count / cycle for counter, count in kinds.values()}


def _synchronize(device):
    if device != "cpu":
        import cupy
        cupy.cuda.Device().synchronize()


def checkpoint_bytes(run):
    """About the size of one checkpoint of `run`: np.savez stores the arrays uncompressed (weights of
    G, D and G_ema, both optimisers' moments, the data order), each with its zip and .npy headers,
    and the metadata, whose loss records grow up to the 2000 Run.state keeps."""
    arrays, meta = run.state()
    size = sum(array.nbytes + 2 * len(name) + 256 for name, array in arrays.items())
    record_bytes = 400            # one record's JSON: a dozen named floats
    return size + len(json.dumps(dict(meta, records=[]))) + 2000 * record_bytes


def _disk_use(run):
    one, keep = checkpoint_bytes(run), run.config.keep
    kept = f"the newest {keep} ckpt-*.npz and latest.npz" if keep else "latest.npz only"
    return f" (checkpoints of about {_size(one)}; {kept} are kept (--keep): up to {_size(one * (keep + 1))})"


def _size(num_bytes):
    return f"{num_bytes / 1e9:.1f} GB" if num_bytes >= 1e9 else f"{num_bytes / 1e6:.3g} MB"


def _sharing(run):
    """The plan's words for how each batch is shared out among processes and threads."""
    threads = f"{run.parts} parts of each batch at once on threads"
    if run.comm.size == 1:
        return f" ({threads})" if run.parts > 1 else ""
    return (f", {run.comm.describe()}, each computing {run.config.batch // run.comm.size} rows of each batch"
            + (f" ({threads})" if run.parts > 1 else ""))


def train(config=None, resume=None, log_to_stdout=True, comm=None, **overrides):
    """Train a new run from `config` (a TrainConfig; keyword `overrides` set its fields), or
    continue the run `resume` (its folder or a checkpoint). Returns the run folder. With a
    communicator `comm` (distributed.init) every process calls this alike; rank 0 alone writes.

    SIGINT (Ctrl-C) and SIGTERM (what `kill` and job schedulers send) stop it at the end of the
    current iteration, with a final snapshot unless the last one is under FINAL_SNAPSHOT_S of
    training old, and raise TrainingStopped, whose message names the checkpoint to resume from.
    Under several processes rank 0's signals decide for all."""
    config = config or TrainConfig()
    for key, value in overrides.items():
        setattr(config, key, value)
    comm = comm or distributed.Single()
    log = _Log(log_to_stdout and comm.rank == 0, to_file=comm.rank == 0)
    run = None
    try:
        with _StopSignals() as stop:
            try:
                run = open_run(config, resume, log, comm)
                if comm.rank == 0:
                    log.open(run.dir)
                log.line("config: " + json.dumps(dataclasses.asdict(run.config), indent=1))
                left = int(round(run.config.kimg * 1000)) - run.cur_nimg
                speed = None
                if left >= MEASURE_MIN_ITERATIONS * run.config.batch:
                    log("timing a few training iterations on a copy of the run, for the plan...")
                    speed = measure_speed(run)
                log(plan(run, speed))
                for note in run.notes:
                    log(note)
                if comm.size > 1:
                    log.line("processes: " + distributed.processes(comm))
                _check_ranks_agree(run, "at the start")
                advice = blas.kernel_advice() if run.config.device == "cpu" else None
                if advice:
                    log(advice)
                stop.deferring = True
                _loop(run, log, stop)
            except TrainingStopped as stopped:
                stop.stopping = True            # further signals wait for the message
                folder = run.dir if run is not None else _folder_of(resume) if resume else config.out
                stopped.args = (_stop_message(stopped, run, folder),)
                log.line(str(stopped))
                raise
    finally:
        log.close()
    return run.dir


FINAL_SNAPSHOT_S = 60.0    # a stopped run writes a final snapshot when its last is older than this


class _StopSignals:
    """SIGINT and SIGTERM handlers for the span of train(). While the loop runs (`deferring`), the
    first signal is noted and the loop stops at the end of the iteration; before the loop, and on
    a second signal, TrainingStopped is raised at once: every write is atomic, so whatever it
    interrupts leaves the files as they were (and at most a temporary that the next start removes)."""

    def __init__(self):
        self.signum, self.deferring, self.stopping, self.previous = None, False, False, {}

    def __enter__(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[signum] = signal.signal(signum, self._handle)
            except ValueError:          # not the main thread: signals stay as they are
                break
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def _handle(self, signum, frame):
        if self.stopping:
            return
        if self.deferring and self.signum is None:
            self.signum = signum
            return
        self.stopping = True                    # one abrupt stop; the message is written next
        raise TrainingStopped(signum=signum, abrupt=True, in_loop=self.deferring)


def _folder_of(resume):
    return resume if os.path.isdir(resume) else os.path.dirname(os.path.abspath(resume))


def _stop_message(stopped, run, folder):
    """What stopped the run, when, what was written, and how to continue: from the files there."""
    name = signal.Signals(stopped.signum).name
    if not stopped.in_loop:
        said = f"stopped by {name} before training began"
    elif stopped.abrupt:
        said = f"stopped at once by a second signal ({name}) after {run.cur_nimg / 1000:.3f} kimg"
    else:
        said = (f"stopped by {name} at the end of iteration {run.iteration} ({run.cur_nimg / 1000:.3f} kimg): "
                + ("a final snapshot was written" if stopped.wrote else
                   f"the last snapshot is {stopped.age_s:.0f} s of training old, so no final one was written"))
    newest = _checkpoints(folder)[0] if folder and os.path.isdir(folder) else []
    if not newest:
        return f"{said}; no checkpoint was written, so there is nothing to resume: start the run again"
    path, meta = newest[0]
    return (f"{said}; the newest checkpoint is {path} ({_nimg(meta) / 1000:.3f} kimg). "
            f"Continue with --resume {folder}")


def _fingerprint(run):
    """A checksum of everything an iteration depends on: weights, optimiser moments, RNG and data
    order, counters (not the records, whose img/s is each rank's own), and a sample of the data."""
    arrays, meta = run.state()
    meta.pop("records")
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode("utf-8"))
    for key in sorted(arrays):
        digest.update(key.encode("utf-8"))
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    images = run.dataset.images
    digest.update(np.ascontiguousarray(images[::max(1, len(images) // 64)]).tobytes())
    return int.from_bytes(digest.digest()[:7], "little")


def _check_ranks_agree(run, when):
    """Raise on every rank when some rank's run differs from rank 0's (an all-reduce of checksums);
    nothing to check for one process."""
    if run.comm.size == 1:
        return
    sums = run.comm.allgather(np.array(_fingerprint(run), dtype=np.int64))
    differ = [rank for rank, value in enumerate(sums) if value != sums[0]]
    if differ:
        raise ValueError(f"{', '.join(f'rank {r}' for r in differ)} {'holds' if len(differ) == 1 else 'hold'} other "
                         f"weights or state than rank 0 {when}: every process must build the same run (the same "
                         "nanostyle, data, --seed and checkpoint on every machine)")


def _loop(run, log, stop=None):
    """Iterations until --kimg, the time budget or a signal (`stop`, a _StopSignals), with
    snapshots (and metrics) on the way."""
    config = run.config
    fixed_z = np.random.default_rng(2 ** 31 - 1).standard_normal((config.num_fixed_seeds, run.G.z_dim)).astype(np.float32)
    total_nimg = int(round(config.kimg * 1000))
    snap_nimg = max(int(round(config.snap_kimg * 1000)), 1)
    metrics_nimg = int(round((config.metrics_kimg or 0) * 1000))
    next_snap = (run.cur_nimg // snap_nimg + 1) * snap_nimg
    next_metrics = (run.cur_nimg // metrics_nimg + 1) * metrics_nimg if metrics_nimg else None
    progress = _progress_bar(total_nimg, run.cur_nimg, show=run.comm.rank == 0)
    start_time, start_nimg = time.time(), run.cur_nimg
    last_snapshot = start_time if run.cur_nimg else None    # a resumed run's checkpoint is its last
    budget_s = (config.minutes or 0) * 60
    reserve_s = 30.0                  # time kept for the final snapshot: the longest metric pass so far

    def say(message):
        log.line(message)
        progress.write(message)

    try:
        while run.cur_nimg < total_nimg:
            try:
                stats, notes = _training_iteration(run)
            except NonFiniteLoss as error:
                raise _diverged(run, str(error)) from None
            run.cur_nimg += config.batch
            run.iteration += 1
            elapsed = time.time() - start_time
            speed = (run.cur_nimg - start_nimg) / max(elapsed, 1e-9)
            record = dict(kimg=run.cur_nimg / 1000, **{k: v for k, v in stats.items() if not isinstance(v, np.ndarray)},
                          ada_p=run.pipe.p if run.pipe else 0.0, img_per_s=speed)
            run.records.append(record)
            progress.update(config.batch, record, (budget_s - elapsed) / 60 if budget_s else None)
            for message in notes:
                say(message)
            signum = stop.signum if stop is not None else None
            age = None if last_snapshot is None else time.time() - last_snapshot
            write_final = age is None or age > FINAL_SNAPSHOT_S
            done = run.cur_nimg >= total_nimg
            if budget_s and not done and signum is None and elapsed + reserve_s >= budget_s:
                say(f"time budget: {config.minutes:g} minutes reached at {run.cur_nimg / 1000:.3f} kimg "
                    f"(of {config.kimg}); taking the final snapshot (--minutes 0 trains to --kimg)")
                done = True
            # rank 0's clock and the signals it got decide for every rank
            done, signum, write_final = (int(v) for v in run.comm.broadcast(
                np.array([done, signum or 0, write_final], dtype=np.int64)))
            signum = signum or None
            if signum is not None:
                if write_final:
                    _snapshot(run, fixed_z, log, False, progress.write)
                raise TrainingStopped(signum=signum, in_loop=True, wrote=bool(write_final), age_s=age)
            if run.cur_nimg >= next_snap or done:
                snap_start = time.time()
                with_metrics = bool(metrics_nimg) and (run.cur_nimg >= next_metrics or done)
                record = _snapshot(run, fixed_z, log, with_metrics, progress.write)
                last_snapshot = time.time()
                if with_metrics:
                    progress.diversity = record.get("diversity_ratio", progress.diversity)
                    reserve_s = max(reserve_s, 1.2 * (time.time() - snap_start))
                if metrics_nimg and run.cur_nimg >= next_metrics:
                    next_metrics = (run.cur_nimg // metrics_nimg + 1) * metrics_nimg
                next_snap = (run.cur_nimg // snap_nimg + 1) * snap_nimg
                run.comm.barrier()       # the others wait for rank 0's writing without spinning
            if done:
                break
    finally:
        progress.close()
    log(f"done: {run.cur_nimg / 1000:.3f} kimg in {time.time() - start_time:.0f} s; run folder {run.dir}")


def _training_iteration(run):
    """One iteration of the module docstring's phases; returns (stats, messages to show)."""
    config, rng = run.config, run.rng
    B, xp = config.batch, backend.xp_for_device(config.device)
    notes = []
    # every process draws the whole batch and reads only its own rows of the images
    indices = run.order.next(B)
    mine = slice(B * run.comm.rank // run.comm.size, B * (run.comm.rank + 1) // run.comm.size)
    reals = run.dataset.batch(indices[mine])
    flip = (rng.random(B) < 0.5)[mine]
    if config.mirror:
        reals = np.where(flip[:, None, None, None], reals[:, :, :, ::-1], reals)
    real = Tensor(xp.asarray(np.ascontiguousarray(reals)))
    real_c = run.labels(indices[mine])      # labels are None in an unconditional run
    stats = {}

    def step(module, optimizer, name, loss_of, parts=run.parts, comm=run.comm):
        s, bad = phase_step(module, optimizer, loss_of, B, rng, parts=parts, name=name, comm=comm)
        run.bad_gradients += bad
        return s

    # Gmain (with the diversity floor, when on: it then decides whether the next step may push)
    run.G.requires_grad_(True)
    run.D.requires_grad_(False)
    z = Tensor(xp.asarray(rng.standard_normal((B, run.G.z_dim)).astype(np.float32)))
    c = run.fake_labels(B)
    stats.update(step(run.G, run.opt_G, "generator loss",
                      lambda rows, r, first: run.loss.generator_loss(z[rows], r, update_emas=first, c=_rows(c, rows))))
    if run.floor:
        notes += filter(None, [run.floor.observe(stats, run.cur_nimg + B)])

    # Greg (path length), every G_reg_interval iterations when enabled (never split: pl_mean is
    # shared; every process computes the same whole step)
    if config.pl_weight and run.iteration % config.G_reg_interval == 0:
        stats.update(step(run.G, run.opt_G, "path-length penalty",
                          lambda rows, r, first: run.loss.pl_loss(z, r, gain=config.G_reg_interval, c=c), parts=1,
                          comm=None))

    # Dmain
    run.G.requires_grad_(False)
    run.D.requires_grad_(True)
    z = Tensor(xp.asarray(rng.standard_normal((B, run.G.z_dim)).astype(np.float32)))
    c = run.fake_labels(B)
    s = step(run.D, run.opt_D, "discriminator loss",
             lambda rows, r, first: run.loss.discriminator_loss(real[_shift(rows, mine)], z[rows], r,
                                                                real_c=_rows(real_c, _shift(rows, mine)),
                                                                gen_c=_rows(c, rows)))
    real_logits = s.pop("real_logits")
    if run.ada is not None:
        run.ada.accumulate(real_logits)
        run.ada.step()
    stats.update(s)

    # Dreg (lazy R1)
    if config.gamma > 0 and run.iteration % config.r1_interval == 0:
        stats.update(step(run.D, run.opt_D, "R1 penalty",
                          lambda rows, r, first: run.loss.r1_loss(real[_shift(rows, mine)], r, gain=config.r1_interval,
                                                                  c=_rows(real_c, _shift(rows, mine)))))

    # G_ema
    ema_update(run.G_ema, run.G, ema_beta(B, run.cur_nimg, config.ema_kimg, config.ema_rampup))
    run.G.requires_grad_(True)
    stats["bad_gradients"] = run.bad_gradients
    return stats, notes


def _shift(rows, mine):
    """The batch's rows `rows` (within `mine`) as rows of an array that holds only `mine`."""
    return slice((rows.start or 0) - mine.start, None if rows.stop is None else rows.stop - mine.start)


def _rows(labels, rows):
    return None if labels is None else labels[rows]


# ---- snapshots ---------------------------------------------------------------------------------

def _diverged(run, problem):
    """TrainingDiverged saying where, which checkpoint is left (its folder's newest: every
    snapshot's weights were checked finite) and advice that works."""
    lower = f"--lr {min(run.config.lr_G, run.config.lr_D) / 2:g}"
    newest = _checkpoints(run.dir)[0]
    if newest:
        path, meta = newest[0]
        left = (f"the newest checkpoint, {path} ({_nimg(meta) / 1000:.3f} kimg), is from before it. Continue from "
                f"it with a lower learning rate: --resume {run.dir} {lower} (or a larger --gamma)")
    else:
        left = (f"no checkpoint was written before it (the first snapshot comes at {run.config.snap_kimg:g} kimg), "
                f"so start the run again with a lower learning rate: {lower} (or a larger --gamma)")
    return TrainingDiverged(f"{problem} at {run.cur_nimg / 1000:.3f} kimg (iteration {run.iteration}); training "
                            f"stopped: {left}")


def _prune_checkpoints(folder, keep):
    """Remove all but the newest `keep` ckpt-*.npz of a run folder (by the kimg in their names)."""
    snapshots = sorted((float(match.group(1)), name) for name in os.listdir(folder)
                       if (match := CHECKPOINT_NAME.match(name)))
    for _, name in snapshots[:max(len(snapshots) - keep, 0)]:
        os.remove(os.path.join(folder, name))


def _all_finite(module):
    return all(bool(np.isfinite(backend.to_numpy(p.data)).all()) for p in module.parameters())


def _snapshot(run, fixed_z, log, with_metrics, say=print):
    """Fakes grid, metrics (with_metrics), checkpoints and plots; returns the metrics record.
    Every rank checks the weights; rank 0 alone writes."""
    kimg = run.cur_nimg / 1000
    tag = f"{kimg:08.3f}"  # fixed width, so file names sort in training order
    if not (_all_finite(run.G) and _all_finite(run.D)):
        raise _diverged(run, "the weights became non-finite")
    _check_ranks_agree(run, f"at {kimg:.3f} kimg")
    if run.comm.rank != 0:
        return {}
    columns = math.ceil(math.sqrt(len(fixed_z)))
    # a conditional run's grid: the classes row after row
    fixed_c = (np.arange(len(fixed_z)) // columns) % len(run.class_names) if run.class_names else None
    viz.save_image_grid(run.G_ema.generate(z=fixed_z, c=fixed_c), os.path.join(run.dir, f"fakes-{tag}.png"), columns)
    record = dict(kimg=kimg, **{k: v for k, v in run.records[-1].items() if k != "kimg"}) if run.records else {"kimg": kimg}
    if with_metrics:
        record.update(_class_metrics(run) if run.class_names else _quick_metrics(run.G_ema, run.dataset.images))
        _guard_collapse(record, log.line, say, run.class_names)
    with open(os.path.join(run.dir, "metrics.jsonl"), "a") as handle:
        handle.write(json.dumps(record) + "\n")
    arrays, meta = run.state()
    if run.config.keep:
        save_checkpoint(os.path.join(run.dir, f"ckpt-{tag}.npz"), arrays, meta)
    save_checkpoint(os.path.join(run.dir, "latest.npz"), arrays, meta)
    _prune_checkpoints(run.dir, run.config.keep)
    viz.plot_losses(run.records, os.path.join(run.dir, "loss.png"))
    metric_records = [json.loads(line) for line in open(os.path.join(run.dir, "metrics.jsonl"))]
    shown = ("swd_avg", "diversity_ratio", "precision_tolerant", "recall_tolerant", "precision", "recall")
    metric_keys = [k for k in shown if any(k in r for r in metric_records)]
    if metric_keys:
        viz.plot_metrics(metric_records, os.path.join(run.dir, "metrics.png"), keys=metric_keys)
    viz.make_gif(sorted(glob.glob(os.path.join(run.dir, "fakes-*.png"))), os.path.join(run.dir, "training.gif"))
    log.line(f"snapshot {kimg:.3f} kimg: " + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                                        for k, v in record.items()}))
    return record


def _quick_metrics(G_ema, images, c=None, num=256):
    """metrics.evaluate of up to `num` samples (of class `c`, for a conditional G) against as many
    training images (all of them, or a fixed random subset of a larger set, so that a folder sorted
    by subject is not judged by its first few subjects)."""
    from . import metrics
    num = min(len(images), num)
    chosen = np.sort(np.random.default_rng(0).choice(len(images), num, replace=False)) if num < len(images) \
        else np.arange(num)
    fakes = G_ema.generate(seeds=range(10_000, 10_000 + num), c=c, noise_mode="random")
    results = metrics.evaluate(to_float(images[chosen]), fakes, seed=0)
    return {k: float(v) for k, v in results.items()}


def _class_metrics(run):
    """_quick_metrics per class, each class's samples against that class's training images (up
    to 256 / classes of each, at least 64), as "<class>/<metric>". The plain keys hold the mean
    over the classes, except diversity_ratio: the lowest class's, which the progress line shows."""
    per_class = {}
    num = max(64, 256 // len(run.class_names))
    for label, name in enumerate(run.class_names):
        rows = np.flatnonzero(run.dataset.labels == label)[:num]
        per_class[name] = _quick_metrics(run.G_ema, run.dataset.images[rows], c=label, num=num)
    record = {f"{name}/{key}": value for name, results in per_class.items() for key, value in results.items()}
    for key in set.intersection(*(set(results) for results in per_class.values())):
        values = [results[key] for results in per_class.values()]
        record[key] = float(min(values) if key == "diversity_ratio" else np.mean(values))
    return record


COLLAPSE_RATIO = 0.5   # generated diversity below this share of the real diversity: warn


def _guard_collapse(record, log_line, say, class_names=()):
    """Say so, on a line of its own and in log.txt, when the samples (of any class, in a conditional
    run) are much less varied than the data (of that class); the progress line keeps saying it
    until the next metrics (Bar.update)."""
    for name in class_names or [None]:
        ratio = record.get("diversity_ratio" if name is None else f"{name}/diversity_ratio")
        if ratio is not None and ratio < COLLAPSE_RATIO:
            of = "" if name is None else f" of class {name}"
            message = (f"warning: possible mode collapse{of} at {record['kimg']:.3f} kimg: generated diversity{of} "
                       f"is {ratio:.2f} of the real diversity{of} (below {COLLAPSE_RATIO})")
            say(message)
            log_line(message)
            record["collapse_warning"] = True


def _diversity_note(ratio):
    """The progress line's diversity field: the ratio, and a plain warning when it is low."""
    if ratio is None:
        return None
    return f"{ratio:.2f} LOW: possible collapse" if ratio < COLLAPSE_RATIO else f"{ratio:.2f}"


def _progress_bar(total, initial, show=True):
    from tqdm import tqdm

    class Bar:
        diversity = None                 # the latest generated/real diversity ratio, once measured

        def __init__(self):
            # no tqdm ETA (it counts to --kimg): update() shows the end that comes first
            self.bar = tqdm(total=total, initial=initial, unit="img", unit_scale=True, dynamic_ncols=True,
                            file=sys.stderr, mininterval=1.0, smoothing=0.1, disable=not show,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]")

        def update(self, n, record, minutes_left=None):
            post = dict(kimg=f"{record['kimg']:.2f}")
            rate = record.get("img_per_s") or 0.0
            if self.bar.n + n > self.bar.total:      # the last batch passes --kimg: the bar ends full
                self.bar.total = self.bar.n + n
            to_kimg = (self.bar.total - self.bar.n - n) / rate if rate > 0 else math.inf
            if minutes_left is not None and minutes_left * 60 < to_kimg:
                post["ends"] = f"in {tqdm.format_interval(max(minutes_left * 60, 0))} (--minutes)"
            else:
                post["ends"] = f"in {tqdm.format_interval(to_kimg)} (--kimg)" if rate > 0 else "in ?"
            for key in ("loss_G", "loss_D", "r1_penalty"):
                if key in record:
                    post[key.replace("loss_", "")] = f"{record[key]:.3f}"
            post["p"] = f"{record['ada_p']:.2f}"
            if self.diversity is not None:
                post["diversity"] = _diversity_note(self.diversity)
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(n)

        def write(self, message):
            if show:
                self.bar.write(message, file=sys.stderr)

        def close(self):
            self.bar.close()

    return Bar()
