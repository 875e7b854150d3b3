"""The default MNI152 slices written out in the OASIS layout (keras_png_slices_train/
case_XXX_slice_Y.nii.png, 256x256 grayscale, plus a seg folder) load back as the same images,
train, and evaluate: the path a user with the real OASIS folders takes."""
import os

import numpy as np
from PIL import Image

import nanostyle as ns
from nanostyle import metrics
from nanostyle.data import load_default_dataset, load_image_folder, to_float
from nanostyle.train import TrainConfig, train


def _write_oasis_layout(root, slices):
    train_dir = root / "keras_png_slices_train"
    seg_dir = root / "keras_png_slices_seg_train"
    train_dir.mkdir(parents=True)
    seg_dir.mkdir()
    for i, s in enumerate(slices):
        big = Image.fromarray(s).resize((256, 256), Image.LANCZOS)
        big.save(train_dir / f"case_{i // 10:03d}_slice_{i % 10}.nii.png")
        Image.fromarray((s > 128).astype(np.uint8) * 3).save(seg_dir / f"seg_{i // 10:03d}_slice_{i % 10}.nii.png")


def test_oasis_layout_from_the_default_volume_loads_trains_and_evaluates(tmp_path):
    default = load_default_dataset(128)
    _write_oasis_layout(tmp_path / "oasis", default.images[::4, 0])
    loaded = load_image_folder(str(tmp_path / "oasis"), 32, cache_dir=str(tmp_path / "cache"))
    expected = load_default_dataset(32).images[::4]
    assert loaded.images.shape == expected.shape
    # same slices (the 128 -> 256 -> 32 round trip differs from 128 -> 32 by resampling only)
    assert np.abs(loaded.images.astype(int) - expected.astype(int)).mean() < 6
    run = train(TrainConfig(data=str(tmp_path / "oasis"), res=32, cfg="tiny", kimg=0.016, out=str(tmp_path / "run")),
                log_to_stdout=False)
    G = ns.load(os.path.join(run, "latest.npz"), device="cpu")
    fakes = G.generate(seeds=range(16))
    results = metrics.evaluate(to_float(loaded.images), fakes)
    assert all(np.isfinite(v) for v in results.values())
