"""The training loop: TrainConfig and train(). The only place where data, augmentation,
networks, losses, autograd and the optimisers are wired together.

One iteration (StyleGAN2-ADA's phases, batch B):
  Gmain  G.requires_grad, D frozen: softplus(-D(aug(G(z)))) [+ diversity floor] -> Adam(G); w_avg tracked
  Dmain  G frozen: softplus(D(aug(G(z)))) + softplus(-D(aug(x))) -> Adam(D); ADA statistics
  Dreg   every r1_interval iterations: R1 * r1_interval -> the same Adam(D)
  G_ema  lerp towards G (half-life ema_kimg, ramped up)
Lazy regularisation scales both optimisers' lr and betas by c = interval / (interval + 1) with
ADA's intervals (D 16, G 4; G's regulariser, path length, is off by default). The diversity floor
(losses.py) is on only with the cpu networks, which collapsed to one slice without it. On the CPU each
phase computes its batch in parts at once, one per core, and sums their gradients (`_phase`).

A run folder holds ckpt-<kimg>.npz and latest.npz (everything needed to continue bit-exactly:
weights, optimiser moments, RNG and data-order state, counters, ADA state, the config),
fakes-<kimg>.png grids from fixed seeds, loss.png, metrics.jsonl (+ metrics.png), training.gif
and log.txt. Every random draw comes from generators saved in the checkpoint, and snapshots use
their own fixed seeds, so an interrupted-and-resumed run equals an uninterrupted one.
"""
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
from .autograd import Tensor, grad, no_grad
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import DataError, load_default_dataset, load_image_folder, to_float
from .losses import StyleGAN2Loss
from .metrics import image_gradients, mean_pair_distance
from .networks import Discriminator, Generator, network_kwargs
from .nn import copy_module
from .optim import Adam, ema_beta, ema_update, lazy_regularization, sanitize_gradients
from . import viz


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is left as it was."""


@dataclasses.dataclass
class TrainConfig:
    data: str = None                 # image folder; None = the shipped MNI152 slices
    res: int = 64
    classes: str = None
    cfg: str = "auto"                # auto | bench64 | cpu | tiny (tests); "auto" picks cpu on a CPU
    kimg: float = None               # thousands of real images to show D; None = preset
    minutes: float = None            # wall-clock budget of the training loop; None = preset, 0 = none
    batch: int = None
    seed: int = 0
    out: str = None
    gamma: float = None              # R1 weight; None = preset
    r1_interval: int = 16
    G_reg_interval: int = 4
    style_mixing_prob: float = None
    pl_weight: float = None          # path-length regularisation; None = 2 on a GPU, 0 on the CPU
    diversity_weight: float = None   # diversity floor against mode collapse (losses.py); None = preset
    diversity_gate_kimg: float = 0.0 # > 0: the floor pushes only while the running mean (this
                                     # half-life, in kimg) of the samples' pair distance is below the
                                     # data's; 0 = each batch judged alone (README: one run with 1.0)
    diversity_kimg: float = None     # the floor pushes only in the first this-many kimg; None = preset
                                     # (40 with the cpu networks), 0 = the whole run
    diversity_space: str = "pixels"  # the floor's distance: "pixels" or "gradients" (losses.py)
    aug: str = "ada"                 # ada | noaug
    ada_target: float = 0.6
    ada_kimg: float = None           # p can go 0 -> 1 in this many kimg (10; 500 with bench64)
    ada_pivot: str = "mean"          # brightness/contrast about the image "mean" (ADA) or "black"
                                     # (MRI: the background stays -1; weaker, see augment.py)
    ema_kimg: float = None
    ema_rampup: float = 0.05
    lr_G: float = None               # Adam's learning rates before lazy regularisation's scaling;
    lr_D: float = None               # None = 0.004 with the cpu networks, StyleGAN2's 0.0025 otherwise
    snap_kimg: float = None
    metrics_kimg: float = None       # 0 = no metrics during training
    num_fixed_seeds: int = 32
    mirror: bool = True              # x-flip reals: axial brain slices are near left-right symmetric
    crop_border: int = 0
    device: str = None
    net: str = None                  # the network config actually used (filled by preset)
    split: int = None                # minibatch parts computed at once on threads (CPU); None = one
                                     # per core when the batch splits into whole mbstd groups

    def preset(self, log=print):
        """Fill the unset options for the device and say what was chosen."""
        device = self.device or backend.default_device()
        self.device = device
        if self.cfg not in ("auto", "bench64", "cpu", "tiny"):
            raise ValueError(f"unknown --cfg {self.cfg!r}; choose auto, bench64 or cpu")
        net = self.cfg
        if self.cfg == "auto" and device == "cpu":
            net = "cpu"
            log("no GPU answers: using the 'cpu' network config (narrow widths for a 2-core hour); "
                "pass --cfg auto to force the full-width networks")
        self.net = net
        cpu_like = net in ("cpu", "tiny")
        lr = 0.004 if net == "cpu" else 0.0025   # see lr_G in the defaults below
        defaults = dict(
            batch=16 if net != "tiny" else 4,
            # R1 weight: 0.1 at res <= 64 (StyleGAN2-ADA's heuristic 0.0002 res^2 / batch gives 0.05 at
            # 64 and batch 16; 0.1 beat 1.0 at 4 and 8 kimg in a paired CPU run, see the README)
            gamma=0.1 if self.res <= 64 else (2.0 if self.res <= 128 else 10.0),
            style_mixing_prob=0.0 if net in ("bench64", "tiny") else 0.9,
            pl_weight=0.0 if cpu_like or net == "bench64" else 2.0,
            # the cpu networks collapsed to one mid-brain slice from ~10 kimg in every run without it
            # (README, "The diversity floor"), and so did the full-width ('auto') networks on a GPU, by
            # 12-20 kimg with ADA at 500 or 10 kimg; with it they stayed varied (README, "GPU").
            # bench64, the speed yardstick, keeps StyleGAN2's loss as it is
            diversity_weight=4.0 if net in ("cpu", "auto") else 0.0,
            # ...and only while it is needed: the collapses came at 12-40 kimg; with the floor off from
            # 40 kimg the same run ended 56 kimg at tolerant precision 0.62 instead of 0.38, recall
            # 0.73 instead of 0.85, still more varied than the data (README, "The diversity floor")
            diversity_kimg=40.0 if net in ("cpu", "auto") else 0.0,
            # StyleGAN2-ADA's 500 kimg suits its long runs on thousands of images; on the 123 default
            # slices D overfits within a few kimg, and p had reached only 0.02 when the GPU run collapsed
            ada_kimg=500.0 if net == "bench64" else 10.0,
            ema_kimg=(2.0 if cpu_like else 10.0),
            # the cpu networks at 0.004 reached at 16 kimg the SWD that 0.0025 reached at 24-28 in a
            # paired run, and at 56 kimg had higher tolerant precision / recall (0.38 / 0.85 against
            # 0.24 / 0.80) but a worse SWD (58.9 against 39.6) (README, "Learning rate")
            lr_G=lr,
            lr_D=lr,
            snap_kimg=(2.0 if cpu_like else 50.0) if net != "tiny" else 0.016,
            metrics_kimg=0.0 if net == "tiny" else None,
            # the CPU default is an hour, not an image count: it stops (with a final snapshot and
            # metrics) at 55 minutes: 58-67 kimg on the 2-core Xeon of 2026-11-26 (its speed
            # varied), 83-84 on a 2-core Zen 5 EPYC (the quality targets met in two runs of three;
            # README), fewer on slower machines; 100 kimg ends it sooner only on a faster one.
            # Precision rises to the end.
            kimg=(100.0 if net == "cpu" else 0.032 if net == "tiny" else 5000.0),
            minutes=55.0 if net == "cpu" else 0.0,
        )
        for key, value in defaults.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.metrics_kimg is None:
            self.metrics_kimg = self.snap_kimg * (2 if cpu_like else 1)
        if not (self.lr_G > 0 and self.lr_D > 0):
            raise ValueError(f"--lr: learning rates must be > 0, got G {self.lr_G:g} and D {self.lr_D:g}")
        if self.diversity_gate_kimg < 0:
            raise ValueError(f"diversity_gate_kimg {self.diversity_gate_kimg:g} must be >= 0 (0: no gate)")
        if self.diversity_kimg < 0:
            raise ValueError(f"--diversity-until {self.diversity_kimg:g}: must be >= 0 kimg (0: the floor "
                             "pushes for the whole run)")
        if self.diversity_weight < 0:
            raise ValueError(f"--diversity {self.diversity_weight:g}: the diversity floor's weight must be >= 0 "
                             "(0 turns it off)")
        if self.diversity_space not in ("pixels", "gradients"):
            raise ValueError(f"--diversity-space {self.diversity_space!r}: use 'pixels' or 'gradients'")
        if self.batch < 2 or self.batch % min(4, self.batch):
            raise ValueError(f"--batch {self.batch}: use an even batch that is a multiple of 4 (or 2), "
                             "the discriminator's minibatch-stddev group")
        return self


# ---- helpers ---------------------------------------------------------------------------------

def build_networks(net, res, img_channels=1, seed=0, dtype=np.float32, kwargs=None):
    """(G, D) of config `net` at `res`; `kwargs` = (G_kwargs, D_kwargs) overrides the config's (a
    checkpoint's own, so a run resumes with the networks it was built with)."""
    G_kwargs, D_kwargs = kwargs if kwargs is not None else network_kwargs(net, res)
    G = Generator(img_resolution=res, img_channels=img_channels, seed=seed, dtype=dtype, **G_kwargs)
    D = Discriminator(img_resolution=res, img_channels=img_channels, seed=seed + 1, dtype=dtype, **D_kwargs)
    return G, D


def default_split(batch, D, device):
    """How many parts of each batch the training phases compute at once: one per core on the CPU
    where the batch divides into whole minibatch-stddev groups of D (parallel.batch_parts), 1 on
    a GPU."""
    return parallel.batch_parts(batch, D.epilogue.mbstd_group_size) if device == "cpu" else 1


def generate(G, seeds=None, z=None, truncation_psi=1.0, noise_mode="const", batch=16):
    """Images [N, C, R, R] (NumPy floats in [-1, 1]) for integer seeds (z drawn from
    default_rng(seed)) or given latents, with no graph. G's raw output is clipped to the data
    range, as every picture of it is (PNG) and as the reference's metrics see it (uint8): the
    metrics judge what a user gets."""
    if z is None:
        z = np.stack([np.random.default_rng(int(s)).standard_normal(G.z_dim) for s in seeds]).astype(np.float32)
    xp = G.mapping.w_avg.xp
    out = []
    with no_grad():
        for start in range(0, len(z), batch):
            chunk = Tensor(xp.asarray(z[start:start + batch], dtype=G.mapping.w_avg.dtype))
            rng = np.random.default_rng(12345 + start)
            out.append(backend.to_numpy(G(chunk, truncation_psi=truncation_psi, noise_mode=noise_mode, rng=rng).data))
    return np.clip(np.concatenate(out), -1.0, 1.0)


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


def _rng_state(rng):
    return rng.bit_generator.state


def _set_rng_state(rng, state):
    rng.bit_generator.state = state


def _all_finite(module):
    return all(bool(np.isfinite(backend.to_numpy(p.data)).all()) for p in module.parameters())


# ---- the run ---------------------------------------------------------------------------------

def _diversity_target(reals, config):
    """The data's mean pair distance, in the floor's space (None when the floor is off)."""
    if not config.diversity_weight:
        return None
    return mean_pair_distance(image_gradients(reals) if config.diversity_space == "gradients" else reals)


class Run:
    """State of one training run (networks, optimisers, RNGs, counters) and its folder."""

    def __init__(self, config, log, network=None, diversity_target=None):
        self.config, self.log = config, log
        dtype = np.float32
        # {"G": kwargs, "D": kwargs}, as the checkpoint stores it: a resumed run's own, else the preset's
        self.network = network or dict(zip(("G", "D"), network_kwargs(config.net, config.res)))
        self.G, self.D = build_networks(config.net, config.res, seed=config.seed, dtype=dtype,
                                        kwargs=(self.network["G"], self.network["D"]))
        self.G_ema = copy_module(self.G)
        if config.split is None:       # saved in the checkpoint's config: a resumed run splits alike
            config.split = default_split(config.batch, self.D, config.device)
        if config.split < 1 or config.batch % config.split:
            raise ValueError(f"split {config.split}: the batch ({config.batch}) must divide into that many parts")
        self.parts = config.split
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
        self.loss = StyleGAN2Loss(self.G, self.D, self.pipe, r1_gamma=config.gamma,
                                  style_mixing_prob=config.style_mixing_prob, pl_weight=config.pl_weight or 0.0,
                                  diversity_weight=config.diversity_weight or 0.0, diversity_target=diversity_target,
                                  diversity_space=config.diversity_space)
        self.rng = np.random.default_rng([config.seed, 1])
        self.data_rng = np.random.default_rng([config.seed, 2])
        self.cur_nimg = 0
        self.iteration = 0
        self.bad_gradients = 0
        self.diversity_mean = None    # running mean of the floor's pair-distance ratio (the gate)
        self.records = []
        self.order = None

    # ---- checkpoint ----
    def state(self):
        arrays = {}
        for prefix, module in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            arrays.update({f"{prefix}/{k}": v for k, v in module.state_dict().items()})
        for prefix, opt in (("opt_G", self.opt_G), ("opt_D", self.opt_D)):
            arrays.update({f"{prefix}/{k}": v for k, v in opt.state_dict().items()})
        arrays["data/order"] = self.order.order.astype(np.int64)
        meta = dict(config=dataclasses.asdict(self.config), cur_nimg=self.cur_nimg, iteration=self.iteration,
                    rng=_rng_state(self.rng), data_rng=_rng_state(self.data_rng),
                    data_position=self.order.position, data_size=self.order.n,
                    ada=self.ada.state_dict() if self.ada else None, bad_gradients=self.bad_gradients,
                    pl_mean=self.loss.pl_mean, diversity_mean=self.diversity_mean,
                    records=self.records[-2000:], network=self.network)
        return arrays, meta

    def restore(self, arrays, meta, path):
        try:
            for prefix, module in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
                module.load_state_dict({k[len(prefix) + 1:]: v for k, v in arrays.items() if k.startswith(prefix + "/")})
            for prefix, opt in (("opt_G", self.opt_G), ("opt_D", self.opt_D)):
                opt.load_state_dict({k[len(prefix) + 1:]: v for k, v in arrays.items() if k.startswith(prefix + "/")})
            if meta["data_size"] != self.order.n:
                raise ValueError(f"the checkpoint was trained on {meta['data_size']} images, the data now has "
                                 f"{self.order.n}; resume with the same --data")
            self.order.order = arrays["data/order"]
            self.order.position = meta["data_position"]
            _set_rng_state(self.rng, meta["rng"])
            _set_rng_state(self.data_rng, meta["data_rng"])
            self.cur_nimg, self.iteration = meta["cur_nimg"], meta["iteration"]
            self.bad_gradients = meta.get("bad_gradients", 0)
            self.loss.pl_mean = meta.get("pl_mean", 0.0)
            self.diversity_mean = meta.get("diversity_mean")   # the gate: opened from it each iteration
            self.records = meta.get("records", [])
            if self.ada is not None and meta.get("ada"):
                self.ada.load_state_dict(meta["ada"])
        except (KeyError, ValueError) as error:
            raise CheckpointError(f"{path!r} does not fit this run's configuration: {error}") from None


def _resolve_resume(path):
    if os.path.isdir(path):
        latest = os.path.join(path, "latest.npz")
        if not os.path.exists(latest):
            raise CheckpointError(f"run folder {path!r} has no latest.npz to resume from")
        return os.path.abspath(path), latest
    return os.path.dirname(os.path.abspath(path)), path


def train(config=None, resume=None, log_to_stdout=True, **overrides):
    """Train (or resume) a run; returns the run folder. See the module docstring."""
    config = config or TrainConfig()
    for key, value in overrides.items():
        setattr(config, key, value)
    messages = []

    def log(message):
        messages.append(message)
        if log_to_stdout:
            print(message, flush=True)

    checkpoint = None
    if resume:
        run_dir, ckpt_path = _resolve_resume(resume)
        arrays, meta = load_checkpoint(ckpt_path)
        saved = TrainConfig(**{k: v for k, v in meta["config"].items() if k in TrainConfig.__dataclass_fields__})
        if config.kimg is not None:
            saved.kimg = config.kimg
        if config.minutes is not None:
            saved.minutes = config.minutes
        if config.device is not None:
            saved.device = config.device
        config = saved
        config.out = run_dir
        checkpoint = (arrays, meta, ckpt_path)
        log(f"resuming {ckpt_path} at {meta['cur_nimg'] / 1000:.3f} kimg, continuing to {config.kimg} kimg")
    else:
        config.preset(log)
        if config.out is None:
            config.out = os.path.join("runs", time.strftime("%Y%m%d-%H%M%S") + f"-res{config.res}")
        run_dir = config.out
        os.makedirs(run_dir, exist_ok=True)
    dataset = load_dataset(config, log)
    if dataset.resolution != config.res:
        raise DataError(f"dataset resolution {dataset.resolution} does not match --res {config.res}")
    reals_all = to_float(dataset.images)

    # a checkpoint names the networks it holds: resume with those, even if the config's preset has
    # changed since (e.g. the cpu networks lost their noise inputs on 2026-11-25)
    network = checkpoint[1].get("network") if checkpoint else None
    run = Run(config, log, network if isinstance(network, dict) and {"G", "D"} <= network.keys() else None,
              diversity_target=_diversity_target(reals_all, config))
    run.order = _DataOrder(len(dataset), run.data_rng)
    if checkpoint:
        run.restore(*checkpoint)
    log_file = open(os.path.join(run_dir, "log.txt"), "a")
    for message in messages:
        log_file.write(message + "\n")
    log_file.write("config: " + json.dumps(dataclasses.asdict(config), indent=1) + "\n")
    log_file.flush()

    def log_line(message):
        log_file.write(message + "\n")
        log_file.flush()

    G_n, D_n = run.G.num_parameters(), run.D.num_parameters()
    budget = f" or {config.minutes:g} minutes, whichever comes first," if config.minutes else ""
    plan = (f"plan: {config.kimg} kimg{budget} at batch {config.batch}, network '{config.net}' (G {G_n:,} / D {D_n:,} "
            f"parameters), lr {config.lr_G:g} / {config.lr_D:g} (G / D), R1 gamma {config.gamma} every {config.r1_interval}, "
            f"augmentation {config.aug}"
            + (f" (colour about {run.pipe.pivot})" if run.pipe is not None else "") + ", "
            + (f"diversity floor {config.diversity_weight:g} (target {run.loss.diversity_target:.3f}"
               + (f", gated by a {config.diversity_gate_kimg:g}-kimg running mean" if config.diversity_gate_kimg else "")
               + (f", until {config.diversity_kimg:g} kimg" if config.diversity_kimg else "")
               + (", on image gradients" if config.diversity_space == "gradients" else "")
               + "), " if run.loss.diversity_weight > 0 else "") +
            f"device {config.device}" + (f" ({run.parts} parts of each batch at once on threads)" if run.parts > 1 else "")
            + f"; snapshots every {config.snap_kimg} kimg into {run_dir}")
    log(plan)
    log_line(plan)
    advice = blas.kernel_advice() if config.device == "cpu" else None
    if advice:
        log(advice)
        log_line(advice)

    xp = backend.xp_for_device(config.device)
    fixed_z = np.random.default_rng(2 ** 31 - 1).standard_normal((config.num_fixed_seeds, run.G.z_dim)).astype(np.float32)
    total_nimg = int(round(config.kimg * 1000))
    snap_nimg = max(int(round(config.snap_kimg * 1000)), 1)
    metrics_nimg = int(round((config.metrics_kimg or 0) * 1000))
    next_snap = (run.cur_nimg // snap_nimg + 1) * snap_nimg
    next_metrics = (run.cur_nimg // metrics_nimg + 1) * metrics_nimg if metrics_nimg else None
    progress = _progress_bar(total_nimg, run.cur_nimg)
    start_time, start_nimg = time.time(), run.cur_nimg
    budget_s = (config.minutes or 0) * 60
    floor_end = _floor_end_nimg(config)
    reserve_s = 30.0                  # time kept for the final snapshot: the longest metric pass so far
    stats = {}
    try:
        while run.cur_nimg < total_nimg:
            stats = _training_iteration(run, reals_all, xp)
            run.cur_nimg += config.batch
            run.iteration += 1
            elapsed = time.time() - start_time
            speed = (run.cur_nimg - start_nimg) / max(elapsed, 1e-9)
            record = dict(kimg=run.cur_nimg / 1000, **{k: v for k, v in stats.items() if not isinstance(v, np.ndarray)},
                          ada_p=run.pipe.p if run.pipe else 0.0, img_per_s=speed)
            run.records.append(record)
            minutes_left = (budget_s - elapsed) / 60 if budget_s else None
            progress.update(config.batch, record, minutes_left)
            if floor_end and run.loss.diversity_weight > 0 and run.cur_nimg - config.batch < floor_end <= run.cur_nimg:
                message = (f"diversity floor: off from {run.cur_nimg / 1000:.3f} kimg (--diversity-until "
                           f"{config.diversity_kimg:g}); the collapse guard still watches")
                log_line(message)
                progress.write(message)
            done = run.cur_nimg >= total_nimg
            if budget_s and not done and elapsed + reserve_s >= budget_s:
                message = (f"time budget: {config.minutes:g} minutes reached at {run.cur_nimg / 1000:.3f} kimg "
                           f"(of {config.kimg}); taking the final snapshot (--minutes 0 trains to --kimg)")
                log_line(message)
                progress.write(message)
                done = True
            if run.cur_nimg >= next_snap or done:
                snap_start = time.time()
                with_metrics = bool(metrics_nimg) and (run.cur_nimg >= next_metrics or done)
                record = _snapshot(run, fixed_z, run_dir, log_line, reals_all, with_metrics, progress.write)
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
        log_file.close()
    log(f"done: {run.cur_nimg / 1000:.3f} kimg in {time.time() - start_time:.0f} s; run folder {run_dir}")
    return run_dir


def _training_iteration(run, reals_all, xp):
    config, rng = run.config, run.rng
    B = config.batch
    index = run.order.next(B)
    reals = reals_all[index]
    flip = rng.random(B) < 0.5
    if config.mirror:
        reals = np.where(flip[:, None, None, None], reals[:, :, :, ::-1], reals)
    real = Tensor(xp.asarray(np.ascontiguousarray(reals)))
    stats = {}

    # Gmain
    _open_diversity_gate(run)        # from the gate's mean and the floor's end (diversity_kimg), before use
    run.G.requires_grad_(True)
    run.D.requires_grad_(False)
    z = Tensor(xp.asarray(rng.standard_normal((B, run.G.z_dim)).astype(np.float32)))
    stats.update(_phase(run, run.opt_G, run.G, "generator loss",
                        lambda rows, r, first: run.loss.generator_loss(z[rows], r, update_emas=first)))
    _update_diversity_gate(run, stats)

    # Greg (path length), every G_reg_interval iterations when enabled (never split: pl_mean is shared)
    if config.pl_weight and run.iteration % config.G_reg_interval == 0:
        stats.update(_phase(run, run.opt_G, run.G, "path-length penalty",
                            lambda rows, r, first: run.loss.pl_loss(z, r, gain=config.G_reg_interval), parts=1))

    # Dmain
    run.G.requires_grad_(False)
    run.D.requires_grad_(True)
    z = Tensor(xp.asarray(rng.standard_normal((B, run.G.z_dim)).astype(np.float32)))
    s = _phase(run, run.opt_D, run.D, "discriminator loss",
               lambda rows, r, first: run.loss.discriminator_loss(real[rows], z[rows], r))
    real_logits = s.pop("real_logits")
    if run.ada is not None:
        run.ada.accumulate(real_logits)
        run.ada.step()
    stats.update(s)

    # Dreg (lazy R1)
    if config.gamma > 0 and run.iteration % config.r1_interval == 0:
        stats.update(_phase(run, run.opt_D, run.D, "R1 penalty",
                            lambda rows, r, first: run.loss.r1_loss(real[rows], r, gain=config.r1_interval)))

    # G_ema
    ema_update(run.G_ema, run.G, ema_beta(B, run.cur_nimg, config.ema_kimg, config.ema_rampup))
    run.G.requires_grad_(True)
    stats["bad_gradients"] = run.bad_gradients
    return stats


def _update_diversity_gate(run, stats):
    """The diversity floor's gate: a running mean (half-life diversity_gate_kimg) of this batch's
    pair-distance ratio; the floor may push in the next steps only while it is below 1. One batch
    holds 8 pairs, whose mean distance wanders by about 12 % from step to step, so judged alone it
    fired on noise while the samples were well spread."""
    gate_kimg = run.config.diversity_gate_kimg
    ratio = stats.get("pair_distance")
    if not gate_kimg or ratio is None:
        return
    beta = 0.5 ** (run.config.batch / (gate_kimg * 1000))
    run.diversity_mean = ratio if run.diversity_mean is None else beta * run.diversity_mean + (1 - beta) * ratio
    _open_diversity_gate(run)
    stats["pair_distance_mean"] = run.diversity_mean


def _open_diversity_gate(run):
    """loss.diversity_on follows run.diversity_mean: open while it is unset (no gate, or no batch
    yet) or below 1, and only in the first diversity_kimg kimg (0 or unset, as in checkpoints from
    before the option: the whole run)."""
    end = _floor_end_nimg(run.config)
    run.loss.diversity_on = ((run.diversity_mean is None or run.diversity_mean < 1.0)
                             and not (end and run.cur_nimg >= end))


def _floor_end_nimg(config):
    """The image count from which the diversity floor stays off; 0 when it never ends."""
    return int(round((config.diversity_kimg or 0) * 1000))


def _phase(run, optimizer, module, what, loss_of, parts=None):
    """One optimiser step on a loss: stop if it is not finite, backward, sanitise, step.

    `loss_of(rows, rng, first)` -> (loss, stats) for the minibatch rows `rows`. With one part
    (GPU, one thread, or a batch that does not split) that is the whole batch with the run's
    generator. With several (run.parts, the CPU's cores) each part's loss and gradient run on a
    thread of their own (parallel.split_batch), each with a generator seeded from the run's; the
    gradients are summed and each part's loss weighted 1 / parts, which is the gradient of the
    whole batch's mean loss. Only part 0 updates running averages (w_avg), as rank 0 does on
    several GPUs. Stats are averaged over the parts, arrays (real logits) concatenated."""
    parts = run.parts if parts is None else parts
    optimizer.zero_grad()
    if parts <= 1:
        loss, stats = loss_of(slice(None), run.rng, True)
        _check_finite(float(loss.numpy()), what, run)
        loss.backward()
    else:
        B = run.config.batch
        seeds = run.rng.integers(2 ** 63, size=parts)
        params = [p for p in module.parameters() if p.requires_grad]

        def part(i):
            rows = slice(i * B // parts, (i + 1) * B // parts)
            loss, stats = loss_of(rows, np.random.default_rng(seeds[i]), i == 0)
            return float(loss.numpy()), stats, grad(loss * (1.0 / parts), params)

        results = parallel.split_batch(part, parts)
        _check_finite(np.mean([value for value, _, _ in results]), what, run)
        for k, p in enumerate(params):
            grads = [g[k].data for _, _, g in results if g[k] is not None]
            p.grad = Tensor(functools.reduce(np.add, grads)) if grads else None
        stats = {key: (np.concatenate([s[key] for _, s, _ in results]) if isinstance(value, np.ndarray)
                       else float(np.mean([s[key] for _, s, _ in results])))
                 for key, value in results[0][1].items()}
    run.bad_gradients += sanitize_gradients(module.parameters())
    optimizer.step()
    return stats


def _check_finite(value, what, run):
    if not math.isfinite(value):
        raise TrainingDiverged(
            f"the {what} became {value} at {run.cur_nimg / 1000:.3f} kimg (iteration {run.iteration}); "
            f"training stopped and latest.npz in {run.config.out} still holds the last good snapshot. "
            f"Resume from it with a lower learning rate or a larger --gamma")


def _snapshot(run, fixed_z, run_dir, log_line, reals_all, with_metrics, say=print):
    """Fakes grid, metrics (with_metrics), checkpoints and plots; returns the metrics record."""
    kimg = run.cur_nimg / 1000
    tag = f"{kimg:08.3f}"  # fixed width, so file names sort in training order
    images = generate(run.G_ema, z=fixed_z)
    grid_path = os.path.join(run_dir, f"fakes-{tag}.png")
    viz.save_image_grid(images, grid_path)
    if not (_all_finite(run.G) and _all_finite(run.D)):
        raise TrainingDiverged(f"non-finite weights at {kimg:.3f} kimg; latest.npz was not overwritten")
    record = dict(kimg=kimg, **{k: v for k, v in run.records[-1].items() if k != "kimg"}) if run.records else {"kimg": kimg}
    if with_metrics:
        record.update(_quick_metrics(run.G_ema, reals_all, log_line))
        _guard_collapse(record, log_line, say)
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as handle:
        handle.write(json.dumps(record) + "\n")
    arrays, meta = run.state()
    save_checkpoint(os.path.join(run_dir, f"ckpt-{tag}.npz"), arrays, meta)
    save_checkpoint(os.path.join(run_dir, "latest.npz"), arrays, meta)
    viz.plot_losses(run.records, os.path.join(run_dir, "loss.png"))
    metric_records = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    shown = ("swd_avg", "diversity_ratio", "precision_tolerant", "recall_tolerant", "precision", "recall")
    metric_keys = [k for k in shown if any(k in r for r in metric_records)]
    if metric_keys:
        viz.plot_metrics(metric_records, os.path.join(run_dir, "metrics.png"), keys=metric_keys)
    viz.make_gif(sorted(glob.glob(os.path.join(run_dir, "fakes-*.png"))), os.path.join(run_dir, "training.gif"))
    log_line(f"snapshot {kimg:.3f} kimg: " + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                                         for k, v in record.items()}))
    return record


def _quick_metrics(G_ema, reals_all, log_line):
    try:
        from . import metrics
    except ImportError:
        return {}
    num = min(len(reals_all), 256)
    fakes = generate(G_ema, seeds=range(10_000, 10_000 + num), noise_mode="random")
    results = metrics.evaluate(reals_all[:num], fakes, seed=0)
    return {k: float(v) for k, v in results.items()}


COLLAPSE_RATIO = 0.5   # generated diversity below this share of the real diversity: warn


def _guard_collapse(record, log_line, say):
    """Say so, on a line of its own and in log.txt, when the samples are much less varied than
    the data; the progress line keeps saying it until the next metrics (Bar.update)."""
    ratio = record.get("diversity_ratio")
    if ratio is not None and ratio < COLLAPSE_RATIO:
        message = (f"warning: possible mode collapse at {record['kimg']:.3f} kimg: generated diversity is "
                   f"{ratio:.2f} of the real diversity (below {COLLAPSE_RATIO})")
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
