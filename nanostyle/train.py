"""Training: TrainConfig, train(), and the per-phase optimiser step. The only place where data,
augmentation, networks, losses, autograd and the optimisers are wired together.

One iteration (StyleGAN2-ADA's phases, batch B):
  Gmain  G trains, D frozen: softplus(-D(aug(G(z)))) [+ diversity floor] -> Adam(G); w_avg tracked
  Greg   every G_reg_interval iterations, when pl_weight > 0: path-length penalty -> Adam(G)
  Dmain  G frozen: softplus(D(aug(G(z)))) + softplus(-D(aug(x))) -> Adam(D); ADA's statistic
  Dreg   every r1_interval iterations: R1 * r1_interval -> the same Adam(D)
  G_ema  lerp towards G (half-life ema_kimg, ramped up)
Lazy regularisation scales both optimisers' lr and betas by c = interval / (interval + 1).
Each phase is one `phase_step`: on the CPU it computes the batch in parts at once, one per core.

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
import json
import math
import os
import sys
import time

import numpy as np

from . import backend, blas, parallel
from .augment import AdaController, AugmentPipe
from .autograd import Tensor, grad
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import DataError, load_default_dataset, load_image_folder, to_float
from .diversity import DiversityConfig, DiversityFloor
from .losses import StyleGAN2Loss
from .networks import CONFIGS, Discriminator, Generator, network_kwargs
from .nn import copy_module
from .optim import Adam, ema_beta, ema_update, lazy_regularization, sanitize_gradients
from . import viz


class TrainingDiverged(RuntimeError):
    """A loss or the weights became NaN or infinite; the last good checkpoint is left as it was."""


@dataclasses.dataclass
class TrainConfig:
    """A run's settings. None means "the preset's" (`preset()` fills them for the device)."""
    data: str = None                 # image folder; None = the shipped MNI152 slices
    res: int = 64
    classes: str = None
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
        device = self.device or backend.default_device()
        self.device = device
        if self.cfg is None:
            self.cfg = "cpu" if device == "cpu" else "auto"
            if device == "cpu":
                log("no GPU answers: using the 'cpu' network config (narrow widths for a 2-core hour); "
                    "pass --cfg auto for the full-width networks")
        if self.cfg not in CONFIGS:
            raise ValueError(f"unknown --cfg {self.cfg!r}; choose one of {', '.join(CONFIGS)}")
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
        self.diversity.validate()
        if not (self.lr_G > 0 and self.lr_D > 0):
            raise ValueError(f"--lr: learning rates must be > 0, got G {self.lr_G:g} and D {self.lr_D:g}")
        if self.batch < 2 or self.batch % min(4, self.batch):
            raise ValueError(f"--batch {self.batch}: use an even batch that is a multiple of 4 (or 2), "
                             "the discriminator's minibatch-stddev group")
        return self


# ---- the per-phase step ------------------------------------------------------------------------

class NonFiniteLoss(TrainingDiverged):
    """A phase's loss was NaN or infinite (nothing was stepped)."""


def phase_step(module, optimizer, loss_of, batch, rng, parts=1, name="loss"):
    """One optimiser step of `module` on a loss: forward, backward, sanitise, Adam.

    `loss_of(rows, rng, first)` -> (loss Tensor, stats dict) computes the loss of the minibatch
    rows `rows` (a slice of range(batch)) with randomness from `rng`; `first` marks the one part
    that updates running averages (w_avg). With parts = 1 that is the whole batch with `rng`
    itself. With parts > 1 the rows are computed in that many parts at once, each on a thread
    (parallel.split_batch) with a generator seeded from `rng`, each part's loss weighted
    1 / parts and the gradients summed: the gradient of the whole batch's mean loss.

    Returns (stats, bad): the parts' stats averaged (arrays concatenated in row order) and the
    number of non-finite gradient entries zeroed. Raises NonFiniteLoss, before any step, when
    the loss is not finite."""
    optimizer.zero_grad()
    if parts <= 1:
        loss, stats = loss_of(slice(None), rng, True)
        _check_finite(float(loss.numpy()), name)
        loss.backward()
    else:
        seeds = rng.integers(2 ** 63, size=parts)
        params = [p for p in module.parameters() if p.requires_grad]

        def part(i):
            rows = slice(i * batch // parts, (i + 1) * batch // parts)
            loss, stats = loss_of(rows, np.random.default_rng(seeds[i]), i == 0)
            return float(loss.numpy()), stats, grad(loss * (1.0 / parts), params)

        results = parallel.split_batch(part, parts)
        _check_finite(np.mean([value for value, _, _ in results]), name)
        for k, p in enumerate(params):
            grads = [g[k].data for _, _, g in results if g[k] is not None]
            p.grad = Tensor(functools.reduce(np.add, grads)) if grads else None
        stats = {key: (np.concatenate([s[key] for _, s, _ in results]) if isinstance(value, np.ndarray)
                       else float(np.mean([s[key] for _, s, _ in results])))
                 for key, value in results[0][1].items()}
    bad = sanitize_gradients(module.parameters())
    optimizer.step()
    return stats, bad


def _check_finite(value, name):
    if not math.isfinite(value):
        raise NonFiniteLoss(f"the {name} became {value}")


# ---- the run -----------------------------------------------------------------------------------

def build_networks(cfg, res, img_channels=1, seed=0, dtype=np.float32, kwargs=None):
    """(G, D) of network config `cfg` at `res`; `kwargs` = (G_kwargs, D_kwargs) overrides the
    config's (a checkpoint's own, so a run resumes with the networks it was built with)."""
    G_kwargs, D_kwargs = kwargs if kwargs is not None else network_kwargs(cfg, res)
    G = Generator(img_resolution=res, img_channels=img_channels, seed=seed, dtype=dtype, **G_kwargs)
    D = Discriminator(img_resolution=res, img_channels=img_channels, seed=seed + 1, dtype=dtype, **D_kwargs)
    return G, D


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
        dataset = load_image_folder(config.data, config.res, classes=config.classes,
                                    crop_border=config.crop_border)
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
    checkpoint `(arrays, meta, path)` when it continues one (its networks and state)."""

    def __init__(self, config, dataset, checkpoint=None):
        self.config, self.dataset, self.dir = config, dataset, config.out
        arrays, meta, path = checkpoint if checkpoint else (None, {}, None)
        # {"G": kwargs, "D": kwargs}: a resumed run's own networks, even if the preset has changed since
        network = meta.get("network")
        if not (isinstance(network, dict) and {"G", "D"} <= network.keys()):
            network = dict(zip(("G", "D"), network_kwargs(config.cfg, config.res)))
        self.class_names = _class_names(config, dataset)      # [] for an unconditional run
        if self.class_names and "c_dim" not in network["G"]:
            network = {key: dict(kwargs, c_dim=len(self.class_names)) for key, kwargs in network.items()}
        self.network = network
        self.G, self.D = build_networks(config.cfg, config.res, seed=config.seed,
                                        kwargs=(network["G"], network["D"]))
        self.G_ema = copy_module(self.G)
        if config.parts is None:       # saved in the checkpoint's config: a resumed run splits alike
            config.parts = default_parts(config.batch, self.D, config.device)
        if config.parts < 1 or config.batch % config.parts:
            raise ValueError(f"parts {config.parts}: the batch ({config.batch}) must divide into that many parts")
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
                        f"{'' if len(names) == 1 else 'es'}: pass --data FOLDER --classes A,B with two or more "
                        "of its subfolders (e.g. --classes AD,NC)")
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

    def __init__(self, to_stdout):
        self.to_stdout, self.file, self.pending = to_stdout, None, []

    def __call__(self, message):
        if self.to_stdout:
            print(message, flush=True)
        self.line(message)

    def line(self, message):
        """log.txt only."""
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


def _resolve_resume(path):
    if os.path.isdir(path):
        latest = os.path.join(path, "latest.npz")
        if not os.path.exists(latest):
            raise CheckpointError(f"run folder {path!r} has no latest.npz to resume from")
        return os.path.abspath(path), latest
    return os.path.dirname(os.path.abspath(path)), path


RESUME_OVERRIDES = ("kimg", "minutes", "device")     # what a resumed run takes from the caller


def open_run(config, resume=None, log=print):
    """A Run: new from `config` (preset here), or continued from `resume` (a run folder or a
    checkpoint), taking only RESUME_OVERRIDES from `config`; its folder created, its data loaded."""
    checkpoint = None
    if resume:
        run_dir, path = _resolve_resume(resume)
        arrays, meta = load_checkpoint(path)
        saved = TrainConfig.from_dict(meta["config"])
        for key in RESUME_OVERRIDES:
            if getattr(config, key) is not None:
                setattr(saved, key, getattr(config, key))
        config, checkpoint = saved, (arrays, meta, path)
        config.out = run_dir
        log(f"resuming {path} at {meta['cur_nimg'] / 1000:.3f} kimg, continuing to {config.kimg} kimg")
    else:
        config.preset(log)
        if config.out is None:
            config.out = os.path.join("runs", time.strftime("%Y%m%d-%H%M%S") + f"-res{config.res}")
        os.makedirs(config.out, exist_ok=True)
    return Run(config, load_dataset(config, log), checkpoint)


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
            + f"device {c.device}" + (f" ({c.parts} parts of each batch at once on threads)" if c.parts > 1 else "")
            + f"; snapshots every {c.snap_kimg} kimg into {run.dir}" + (_pace(run, speed) if speed else ""))


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
    floor, generators and counters; the dataset shared), so the run itself draws no random number
    and changes no state. One warm-up iteration with every phase (on a GPU it compiles the
    kernels), then an iteration of each kind the lazy-regularisation intervals give (`repeats`
    of the most common), weighted by how often each comes. None if the copy's loss diverges."""
    trial = copy.deepcopy(run, {id(run.dataset): run.dataset})
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


def train(config=None, resume=None, log_to_stdout=True, **overrides):
    """Train a new run from `config` (a TrainConfig; keyword `overrides` set its fields), or
    continue the run `resume` (its folder or a checkpoint). Returns the run folder."""
    config = config or TrainConfig()
    for key, value in overrides.items():
        setattr(config, key, value)
    log = _Log(log_to_stdout)
    try:
        run = open_run(config, resume, log)
        log.open(run.dir)
        log.line("config: " + json.dumps(dataclasses.asdict(run.config), indent=1))
        left = int(round(run.config.kimg * 1000)) - run.cur_nimg
        speed = None
        if left >= MEASURE_MIN_ITERATIONS * run.config.batch:
            log("timing a few training iterations on a copy of the run, for the plan...")
            speed = measure_speed(run)
        log(plan(run, speed))
        advice = blas.kernel_advice() if run.config.device == "cpu" else None
        if advice:
            log(advice)
        _loop(run, log)
    finally:
        log.close()
    return run.dir


def _loop(run, log):
    """Iterations until --kimg or the time budget, with snapshots (and metrics) on the way."""
    config = run.config
    fixed_z = np.random.default_rng(2 ** 31 - 1).standard_normal((config.num_fixed_seeds, run.G.z_dim)).astype(np.float32)
    total_nimg = int(round(config.kimg * 1000))
    snap_nimg = max(int(round(config.snap_kimg * 1000)), 1)
    metrics_nimg = int(round((config.metrics_kimg or 0) * 1000))
    next_snap = (run.cur_nimg // snap_nimg + 1) * snap_nimg
    next_metrics = (run.cur_nimg // metrics_nimg + 1) * metrics_nimg if metrics_nimg else None
    progress = _progress_bar(total_nimg, run.cur_nimg)
    start_time, start_nimg = time.time(), run.cur_nimg
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
                raise TrainingDiverged(
                    f"{error} at {run.cur_nimg / 1000:.3f} kimg (iteration {run.iteration}); training stopped "
                    f"and latest.npz in {run.dir} still holds the last good snapshot. Resume from it with a "
                    "lower learning rate or a larger --gamma") from None
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
            done = run.cur_nimg >= total_nimg
            if budget_s and not done and elapsed + reserve_s >= budget_s:
                say(f"time budget: {config.minutes:g} minutes reached at {run.cur_nimg / 1000:.3f} kimg "
                    f"(of {config.kimg}); taking the final snapshot (--minutes 0 trains to --kimg)")
                done = True
            if run.cur_nimg >= next_snap or done:
                snap_start = time.time()
                with_metrics = bool(metrics_nimg) and (run.cur_nimg >= next_metrics or done)
                record = _snapshot(run, fixed_z, log, with_metrics, progress.write)
                if with_metrics:
                    progress.diversity = record.get("diversity_ratio", progress.diversity)
                    reserve_s = max(reserve_s, 1.2 * (time.time() - snap_start))
                if metrics_nimg and run.cur_nimg >= next_metrics:
                    next_metrics = (run.cur_nimg // metrics_nimg + 1) * metrics_nimg
                next_snap = (run.cur_nimg // snap_nimg + 1) * snap_nimg
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
    indices = run.order.next(B)
    reals = to_float(run.dataset.images[indices])
    flip = rng.random(B) < 0.5
    if config.mirror:
        reals = np.where(flip[:, None, None, None], reals[:, :, :, ::-1], reals)
    real = Tensor(xp.asarray(np.ascontiguousarray(reals)))
    real_c = run.labels(indices)            # labels are None in an unconditional run
    stats = {}

    def step(module, optimizer, name, loss_of, parts=config.parts):
        s, bad = phase_step(module, optimizer, loss_of, B, rng, parts=parts, name=name)
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

    # Greg (path length), every G_reg_interval iterations when enabled (never split: pl_mean is shared)
    if config.pl_weight and run.iteration % config.G_reg_interval == 0:
        stats.update(step(run.G, run.opt_G, "path-length penalty",
                          lambda rows, r, first: run.loss.pl_loss(z, r, gain=config.G_reg_interval, c=c), parts=1))

    # Dmain
    run.G.requires_grad_(False)
    run.D.requires_grad_(True)
    z = Tensor(xp.asarray(rng.standard_normal((B, run.G.z_dim)).astype(np.float32)))
    c = run.fake_labels(B)
    s = step(run.D, run.opt_D, "discriminator loss",
             lambda rows, r, first: run.loss.discriminator_loss(real[rows], z[rows], r, real_c=_rows(real_c, rows),
                                                                gen_c=_rows(c, rows)))
    real_logits = s.pop("real_logits")
    if run.ada is not None:
        run.ada.accumulate(real_logits)
        run.ada.step()
    stats.update(s)

    # Dreg (lazy R1)
    if config.gamma > 0 and run.iteration % config.r1_interval == 0:
        stats.update(step(run.D, run.opt_D, "R1 penalty",
                          lambda rows, r, first: run.loss.r1_loss(real[rows], r, gain=config.r1_interval,
                                                                  c=_rows(real_c, rows))))

    # G_ema
    ema_update(run.G_ema, run.G, ema_beta(B, run.cur_nimg, config.ema_kimg, config.ema_rampup))
    run.G.requires_grad_(True)
    stats["bad_gradients"] = run.bad_gradients
    return stats, notes


def _rows(labels, rows):
    return None if labels is None else labels[rows]


# ---- snapshots ---------------------------------------------------------------------------------

def _all_finite(module):
    return all(bool(np.isfinite(backend.to_numpy(p.data)).all()) for p in module.parameters())


def _snapshot(run, fixed_z, log, with_metrics, say=print):
    """Fakes grid, metrics (with_metrics), checkpoints and plots; returns the metrics record."""
    kimg = run.cur_nimg / 1000
    tag = f"{kimg:08.3f}"  # fixed width, so file names sort in training order
    columns = math.ceil(math.sqrt(len(fixed_z)))
    # a conditional run's grid: the classes row after row
    fixed_c = (np.arange(len(fixed_z)) // columns) % len(run.class_names) if run.class_names else None
    viz.save_image_grid(run.G_ema.generate(z=fixed_z, c=fixed_c), os.path.join(run.dir, f"fakes-{tag}.png"), columns)
    if not (_all_finite(run.G) and _all_finite(run.D)):
        raise TrainingDiverged(f"non-finite weights at {kimg:.3f} kimg; latest.npz was not overwritten")
    record = dict(kimg=kimg, **{k: v for k, v in run.records[-1].items() if k != "kimg"}) if run.records else {"kimg": kimg}
    if with_metrics:
        record.update(_class_metrics(run) if run.class_names else _quick_metrics(run.G_ema, run.dataset.images))
        _guard_collapse(record, log.line, say, run.class_names)
    with open(os.path.join(run.dir, "metrics.jsonl"), "a") as handle:
        handle.write(json.dumps(record) + "\n")
    arrays, meta = run.state()
    save_checkpoint(os.path.join(run.dir, f"ckpt-{tag}.npz"), arrays, meta)
    save_checkpoint(os.path.join(run.dir, "latest.npz"), arrays, meta)
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
    training images (the first ones)."""
    from . import metrics
    num = min(len(images), num)
    fakes = G_ema.generate(seeds=range(10_000, 10_000 + num), c=c, noise_mode="random")
    results = metrics.evaluate(to_float(images[:num]), fakes, seed=0)
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


def _progress_bar(total, initial):
    from tqdm import tqdm

    class Bar:
        diversity = None                 # the latest generated/real diversity ratio, once measured

        def __init__(self):
            self.bar = tqdm(total=total, initial=initial, unit="img", unit_scale=True, dynamic_ncols=True,
                            file=sys.stderr, mininterval=1.0, smoothing=0.1)

        def update(self, n, record, minutes_left=None):
            post = dict(kimg=f"{record['kimg']:.2f}")
            if minutes_left is not None:
                post["budget"] = f"{max(minutes_left, 0):.0f} min left"
            for key in ("loss_G", "loss_D", "r1_penalty"):
                if key in record:
                    post[key.replace("loss_", "")] = f"{record[key]:.3f}"
            post["p"] = f"{record['ada_p']:.2f}"
            if self.diversity is not None:
                post["diversity"] = _diversity_note(self.diversity)
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(n)

        def write(self, message):
            self.bar.write(message, file=sys.stderr)

        def close(self):
            self.bar.close()

    return Bar()
