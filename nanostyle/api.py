"""Trained models as a library: load a network from a checkpoint, and judge a generator with the
weight-free metrics against real slices.

    G = nanostyle.load("runs/RUN/latest.npz")     # G_ema, with G.config and G.class_names
    images = G.sample(seeds=range(8))             # uint8 [8, 1, R, R]
    results = nanostyle.evaluate(G, num=500)      # metrics.evaluate against the run's data
"""
import os

import numpy as np

from . import backend
from .checkpoint import CheckpointError, load_checkpoint
from .networks import Discriminator, Generator
from .train import TrainConfig, checkpoint_to_resume, saved_network_kwargs

NETWORKS = ("G_ema", "G", "D")


def load(path, device=None, which="G_ema"):
    """The network a training checkpoint holds, with its run's settings attached.

    path: a checkpoint written by training (a run folder's latest.npz or ckpt-<kimg>.npz), or the
        run folder itself (its newest checkpoint that loads, as --resume takes).
    device: "cpu" or "cuda"; None = the default device (CUDA when a GPU answers;
        NANOSTYLE_DEVICE=cpu|cuda overrides).
    which: "G_ema" (default: the generator's moving average, the one every picture and metric
        of a run shows), "G" (the raw generator) or "D" (the discriminator).

    Returns a Generator (or Discriminator) whose weights are the checkpoint's, with
        .config       the run's TrainConfig (res, data, cfg, ...),
        .class_names  list of str, the classes of a conditional generator ([] for an unconditional one),
        .kimg         float, thousands of real images shown when it was saved,
        .checkpoint   the file read.
    Raises CheckpointError (a ValueError) naming the file, the problem and the fix, for a missing,
    truncated, foreign or newer-format file, or one whose networks do not fit its metadata.
    """
    if which not in NETWORKS:
        raise ValueError(f"load: which must be one of {', '.join(NETWORKS)}, got {which!r}")
    device = device or backend.default_device()
    if device not in ("cpu", "cuda"):
        raise ValueError(f"load: device must be 'cpu' or 'cuda', got {device!r}")
    backend.xp_for_device(device)           # DeviceUnavailable when no GPU answers for "cuda"
    path = os.fspath(path)
    if os.path.isdir(path):
        _, path, arrays, meta = checkpoint_to_resume(path, log=lambda message: None)
    else:
        arrays, meta = load_checkpoint(path)
    try:
        config = TrainConfig.from_dict(meta["config"])
        kwargs = saved_network_kwargs(meta, config)
        if which == "D":
            network = Discriminator(img_resolution=config.res, img_channels=1, **kwargs["D"])
        else:
            network = Generator(img_resolution=config.res, img_channels=1, **kwargs["G"])
        prefix = which + "/"
        network.load_state_dict({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path!r} holds no usable {which}: {error}; pass a checkpoint written by "
                              "nanostyle's training (a run folder's latest.npz or ckpt-*.npz)") from None
    network.config = config
    network.class_names = list(meta.get("class_names") or [])   # training saves them with c_dim > 0
    if getattr(network, "c_dim", 0) and len(network.class_names) != network.c_dim:
        network.class_names = [str(i) for i in range(network.c_dim)]
    network.kimg = meta.get("cur_nimg", 0) / 1000
    network.checkpoint = path
    if device != "cpu":
        network.to(device)
    return network


def evaluate(G, data=None, num=500, truncation_psi=1.0, seed=0, heldout_fraction=0.2):
    """The weight-free metrics of `num` samples of G against real slices (what
    examples/evaluate.py prints): sliced Wasserstein distance, precision/recall (exact and
    tolerant), MS-SSIM diversity and memorisation. See nanostyle.metrics for each.

    G: a Generator (from `load`). data: the real slices: an image folder or volume(s) (path), a
        uint8 array [N, 1, R, R], or None for the data G was trained on (G.config.data, read as the
        run read it; the shipped MNI152 slices when that is None). num: generated images (seeds
        100000 on, random noise), per class for a conditional G.
    truncation_psi: as in Generator.sample. seed: the metrics' random draws and the held-out split.
    heldout_fraction: share of the real slices held out, in whole groups (OASIS subjects, else runs
        of neighbouring slices), for memorisation: samples are measured against the rest, as are
        the held-out slices; a ratio well below 1 flags copying.
    Returns a dict of floats (JSON-serialisable), plus kimg, num_fake and num_real. A conditional
    G (c_dim > 0) is judged class by class, each class's samples against that class's reals,
    under the keys "<class>/<metric>".
    """
    from .data import slice_groups
    if num < 4:
        raise ValueError(f"evaluate: num must be at least 4 (precision/recall use 3 neighbours), got {num}")
    dataset = _real_slices(G, data)
    groups = slice_groups(dataset)
    settings = dict(num=num, truncation_psi=truncation_psi, seed=seed, heldout_fraction=heldout_fraction)
    if getattr(G, "c_dim", 0):
        names = getattr(G, "class_names", None) or [str(i) for i in range(G.c_dim)]
        results = {}
        for label, name in enumerate(names):
            rows = dataset.labels == label
            found = _evaluate_set(G, dataset.images[rows], groups[rows], c=label, **settings)
            results.update({f"{name}/{key}": value for key, value in found.items()})
    else:
        results = _evaluate_set(G, dataset.images, groups, **settings)
    results.update(kimg=float(getattr(G, "kimg", 0.0)))
    return results


def _real_slices(G, data):
    """The SliceDataset `evaluate` judges G against (see there)."""
    from .data import SliceDataset, load_data, load_default_dataset
    res, config = G.img_resolution, getattr(G, "config", None)
    names = getattr(G, "class_names", None) if getattr(G, "c_dim", 0) else None
    if data is None and config is not None and config.data is not None:
        return load_data(config.data, res, classes=",".join(names) if names else config.classes,
                         crop_border=config.crop_border, axis=config.axis)
    if data is None:
        if names:
            raise ValueError("evaluate: a conditional generator needs labelled data: pass data=FOLDER whose "
                             "subfolders are its classes")
        return load_default_dataset(res)
    if isinstance(data, (str, os.PathLike)):
        return load_data(os.fspath(data), res, classes=",".join(names) if names else None)
    images = np.asarray(data)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (G.img_channels, res, res):
        raise ValueError(f"evaluate: data must be a folder or uint8 [N, {G.img_channels}, {res}, {res}], "
                         f"got {images.dtype} {images.shape}")
    if names:
        raise ValueError("evaluate: a conditional generator needs labelled data: pass data=FOLDER whose "
                         "subfolders are its classes, not an array")
    return SliceDataset(images, np.zeros(len(images), np.int64))


def _evaluate_set(G, images, groups, num, truncation_psi, seed, heldout_fraction, c=None):
    """The metrics of G's samples (of class c) against real `images` (uint8), whose slice `groups`
    decide the held-out split."""
    from . import metrics
    from .data import heldout_split, to_float
    reals = to_float(images)
    rest, held = heldout_split(groups, fraction=heldout_fraction, seed=seed)
    fakes = G.generate(seeds=range(100_000, 100_000 + num), c=c, truncation_psi=truncation_psi, noise_mode="random")
    results = metrics.evaluate(reals, fakes, train=reals[rest], heldout=reals[held], seed=seed)
    results.update(num_fake=len(fakes), num_real=len(reals))
    return results
