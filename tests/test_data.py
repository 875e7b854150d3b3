"""Data loading: every input kind, bad input, the cache, held-out splits, the default data."""
import os

import numpy as np
import pytest
from PIL import Image

import nanostyle.data as data


def _png(path, array, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


@pytest.fixture
def mixed_folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "slices"
    _png(str(root / "gray.png"), rng.integers(0, 255, (40, 40), dtype=np.uint8))
    _png(str(root / "sub" / "rgb.png"), rng.integers(0, 255, (30, 50, 3), dtype=np.uint8))
    _png(str(root / "rgba.png"), rng.integers(0, 255, (32, 32, 4), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 65535, (32, 32)).astype(np.uint16)).save(str(root / "deep16.png"))
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(str(root / "photo.jpg"))
    (root / "corrupt.png").write_bytes(rng.integers(0, 255, 300, dtype=np.uint8).tobytes())
    good = root / "gray.png"
    (root / "truncated.png").write_bytes(good.read_bytes()[:60])
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_with_every_kind_of_image(mixed_folder, tmp_path, capsys):
    ds = data.load_image_folder(str(mixed_folder), 16, cache_dir=str(tmp_path / "cache"))
    assert ds.images.shape == (5, 1, 16, 16) and ds.images.dtype == np.uint8
    assert sorted(os.path.basename(f) for f, _ in ds.skipped) == ["corrupt.png", "truncated.png"]
    err = capsys.readouterr().err
    assert "corrupt.png" in err and "truncated.png" in err
    deep = ds.images[[i for i, f in enumerate(ds.files) if f.endswith("deep16.png")][0]]
    assert deep.max() > 200 and deep.min() < 60  # scaled by its range, not clipped to white


def test_cache_is_used_and_invalidated(mixed_folder, tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    first = data.load_image_folder(str(mixed_folder), 16, cache_dir=cache)
    calls = []
    real_open = Image.open
    monkeypatch.setattr(data.Image, "open", lambda *a, **k: calls.append(a) or real_open(*a, **k))
    second = data.load_image_folder(str(mixed_folder), 16, cache_dir=cache)
    assert calls == [] and np.array_equal(first.images, second.images)
    _png(str(mixed_folder / "gray.png"), np.full((40, 40), 7, np.uint8))
    os.utime(mixed_folder / "gray.png", ns=(1, 1))
    third = data.load_image_folder(str(mixed_folder), 16, cache_dir=cache)
    assert len(calls) > 0 and not np.array_equal(first.images, third.images)


def test_oasis_layout_skips_segmentation_masks_and_classes(tmp_path):
    rng = np.random.default_rng(1)
    for split in ("train", "validate"):
        for i in range(3):
            _png(str(tmp_path / f"keras_png_slices_{split}" / f"case_00{i}_slice_0.nii.png"),
                 rng.integers(0, 255, (64, 64), dtype=np.uint8))
            _png(str(tmp_path / f"keras_png_slices_seg_{split}" / f"seg_00{i}_slice_0.nii.png"),
                 rng.integers(0, 4, (64, 64), dtype=np.uint8))
    ds = data.load_image_folder(str(tmp_path), 32, cache_dir=str(tmp_path / ".cache"))
    assert len(ds) == 6 and not any("keras_png_slices_seg" in f for f in ds.files)
    ds = data.load_image_folder(str(tmp_path), 32, classes="keras_png_slices_validate,keras_png_slices_train",
                                cache_dir=str(tmp_path / ".cache"))
    assert sorted(ds.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    with pytest.raises(data.DataError, match="AD.*not found.*keras_png_slices_train"):
        data.load_image_folder(str(tmp_path), 32, classes="AD,NC")


def test_bad_folders(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_image_folder(str(tmp_path / "nope"), 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DataError, match="no images.*no files at all"):
        data.load_image_folder(str(tmp_path / "empty"), 16)
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    with pytest.raises(data.DataError, match="found 1 .txt"):
        data.load_image_folder(str(tmp_path / "texts"), 16)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"garbage")
    with pytest.raises(data.DataError, match="none of the 1 image files"):
        data.load_image_folder(str(tmp_path / "bad"), 16, cache_dir=str(tmp_path / "c"))


def test_heldout_split_holds_out_whole_subjects_or_runs_of_neighbouring_slices():
    def dataset(files):
        return data.SliceDataset(np.zeros((len(files), 1, 8, 8), np.uint8), np.zeros(len(files), np.int64), files=files)

    # OASIS names: one group per subject, whatever the file order
    oasis = dataset([f"/d/case_{s:03d}_slice_{k}.nii.png" for k in range(6) for s in (7, 3, 11, 5, 9)])
    groups = data.slice_groups(oasis)
    assert len(np.unique(groups)) == 5
    for seed in range(4):
        train, held = data.heldout_split(groups, fraction=0.3, seed=seed)
        assert sorted(np.concatenate([train, held]).tolist()) == list(range(30))
        subjects = lambda idx: {oasis.files[i].split("_slice")[0] for i in idx}
        assert len(held) >= 9 and not subjects(held) & subjects(train)   # no subject on both sides
    # no subject names (the default data): runs of neighbouring slices go out together
    default = data.load_default_dataset(32)
    groups = data.slice_groups(default, block=8)
    assert np.array_equal(groups, np.arange(len(default)) // 8)
    train, held = data.heldout_split(groups, fraction=0.2, seed=1)
    assert len(held) >= 0.2 * len(default) and len(train) > 0
    nearest = np.abs(held[:, None] - train[None, :]).min(axis=1)
    assert nearest.max() >= 4          # the middle of a held-out run is 4 slices from any kept one
    # few slices: smaller runs, still at least 5 groups; one group cannot be split
    assert len(np.unique(data.slice_groups(dataset([f"x{i}.png" for i in range(10)])))) == 5
    with pytest.raises(ValueError, match="at least 2 groups"):
        data.heldout_split(np.zeros(4, np.int64))


@pytest.mark.parametrize("res", [32, 64])
def test_default_dataset(res):
    ds = data.load_default_dataset(res)
    assert ds.images.shape[1:] == (1, res, res) and len(ds) > 100
    assert ds.images.min() == 0 and ds.images.max() > 200
    with pytest.raises(data.DataError, match="larger"):
        data.load_default_dataset(256)
    f = data.to_float(ds.images)
    assert f.dtype == np.float32 and f.min() >= -1 and f.max() <= 1
    assert np.array_equal(data.to_uint8(f), ds.images)
