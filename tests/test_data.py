"""Data loading: every input kind, bad input, the cache, held-out splits, the default data."""
import os
import sys

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


# --- one bad file never ends a run (issue 30) -------------------------------------------------


def _bomb_png(path, side=30000):
    """A side x side 1-bit PNG of zeros: 900 Mpx that compress to about 110 KB."""
    import struct
    import zlib

    def chunk(tag, payload):
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))
    rows = (b"\x00" * (1 + (side + 7) // 8)) * 1000
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(rows) for _ in range(side // 1000)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _good_images(root, count, size=24, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(count):
        _png(str(root / f"good{i:02d}.png"), rng.integers(0, 255, (size, size), dtype=np.uint8))


def test_bad_files_are_named_skipped_and_summarised_in_one_line(tmp_path, capsys):
    root = tmp_path / "slices"
    _good_images(root, 4)
    _bomb_png(str(root / "bomb.png"))
    assert os.path.getsize(root / "bomb.png") < 200_000
    (root / "truncated.png").write_bytes((root / "good00.png").read_bytes()[:80])
    (root / "notes.png").write_text("this is not an image")
    _png(str(root / "tiny.png"), np.full((1, 1), 200, np.uint8))
    ds = data.load_data(str(root), 16, cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 5 and ds.num_upscaled == 1           # 4 good + the 1x1, used with a warning
    reasons = {os.path.basename(f): r for f, r in ds.skipped}
    assert sorted(reasons) == ["bomb.png", "notes.png", "truncated.png"]
    assert "NANOSTYLE_MAX_PIXELS" in reasons["bomb.png"] and "900,000,000 pixels, above the limit" in reasons["bomb.png"]
    lines = capsys.readouterr().err.strip().splitlines()
    summary = [line for line in lines if "skipped" in line]
    assert len(summary) == 1 and "skipped 3 of 8 image files" in summary[0]
    assert all(name in summary[0] for name in reasons)
    upscaled = [line for line in lines if "upscaled" in line]
    assert len(upscaled) == 1 and "1 of 5 images are smaller than 16x16" in upscaled[0] and "tiny.png, 1x1" in upscaled[0]
    # from the cache: the same dataset and the same two lines
    again = data.load_data(str(root), 16, cache_dir=str(tmp_path / "cache"))
    assert again.skipped == ds.skipped and again.num_upscaled == 1 and np.array_equal(again.images, ds.images)
    err = capsys.readouterr().err
    assert "skipped 3 of 8" in err and "tiny.png, 1x1" in err


def test_many_bad_files_give_one_line_naming_the_first_few(tmp_path, capsys):
    root = tmp_path / "slices"
    _good_images(root, 2)
    for i in range(7):
        (root / f"bad{i}.png").write_bytes(b"garbage")
    ds = data.load_data(str(root), 8, cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 2 and len(ds.skipped) == 7
    summary = [line for line in capsys.readouterr().err.splitlines() if "bad" in line]
    assert len(summary) == 1 and "bad0.png" in summary[0] and "bad3.png" not in summary[0] and "and 4 more" in summary[0]


def test_pixel_limit_is_checked_from_the_header_and_can_be_raised(tmp_path, monkeypatch):
    root = tmp_path / "slices"
    _good_images(root, 3, size=24)
    _png(str(root / "large.png"), np.zeros((40, 40), np.uint8))
    monkeypatch.setenv("NANOSTYLE_MAX_PIXELS", "1000")
    ds = data.load_data(str(root), 16, cache_dir=str(tmp_path / "cache"))
    assert [os.path.basename(f) for f, _ in ds.skipped] == ["large.png"]
    assert "40x40 = 1,600 pixels, above the limit of 1,000" in ds.skipped[0][1]
    assert len(data.load_data(str(root), 16, cache_dir=str(tmp_path / "cache"), max_pixels=2000)) == 4
    monkeypatch.setenv("NANOSTYLE_MAX_PIXELS", "lots")
    with pytest.raises(data.DataError, match="NANOSTYLE_MAX_PIXELS='lots' is not a whole number"):
        data.load_data(str(root), 16, cache_dir=str(tmp_path / "cache"))


def test_all_files_bad_is_an_error_naming_the_first(tmp_path):
    root = tmp_path / "slices"
    root.mkdir()
    (root / "a.png").write_bytes(b"garbage")
    _bomb_png(str(root / "b.png"))
    with pytest.raises(data.DataError, match=r"none of the 2 image files.*first: .*a\.png: UnidentifiedImageError"):
        data.load_data(str(root), 16, cache_dir=str(tmp_path / "cache"))
    assert not os.listdir(tmp_path / "cache")               # nothing half-made is left behind


def test_too_few_images_for_a_minibatch_std_group(tmp_path):
    root = tmp_path / "one"
    _good_images(root, 1)
    (root / "broken.png").write_bytes(b"garbage")
    ds = data.load_data(str(root), 16, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(data.DataError, match=r"holds 1 image \(1 file was skipped.*at least 4 images: datasets need "
                                             r"at least as many images as one minibatch-stddev group of the "
                                             r"discriminator"):
        data.check_minibatch_std_group(ds, 4)
    data.check_minibatch_std_group(data.load_default_dataset(32), 4)
    with pytest.raises(data.DataError, match="at least 2 images: the diversity metrics compare pairs"):
        data.check_minibatch_std_group(ds, 1)


def test_hidden_files_and_folders_are_left_out(tmp_path, capsys):
    root = tmp_path / "slices"
    _good_images(root, 3)
    (root / "._good00.png").write_bytes(b"\x00\x05\x16\x07AppleDouble resource fork")
    _png(str(root / ".thumbnails" / "t.png"), np.zeros((8, 8), np.uint8))
    ds = data.load_data(str(root), 16, cache_dir=str(tmp_path / "cache"))
    assert [os.path.basename(f) for f in ds.files] == ["good00.png", "good01.png", "good02.png"]
    assert ds.skipped == [] and "left out 1 hidden files" in capsys.readouterr().err


def test_threads_give_the_same_dataset_as_one_thread(tmp_path):
    root = tmp_path / "slices"
    rng = np.random.default_rng(3)
    for i in range(40):
        shape = (int(rng.integers(10, 40)), int(rng.integers(10, 40)))
        _png(str(root / f"s{i:02d}.png"), rng.integers(0, 255, shape, dtype=np.uint8))
    for i in (5, 17, 33):
        (root / f"s{i:02d}.png").write_bytes(b"broken")
    one = data.load_data(str(root), 16, cache_dir=str(tmp_path / "c1"), workers=1)
    four = data.load_data(str(root), 16, cache_dir=str(tmp_path / "c4"), workers=4)
    assert len(one) == 37 and np.array_equal(one.images, four.images)
    assert one.files == four.files and one.skipped == four.skipped


def test_cache_is_a_memmap_rebuilt_when_broken(tmp_path, capsys):
    root = tmp_path / "slices"
    _good_images(root, 6)
    cache = tmp_path / "cache"
    first = data.load_data(str(root), 16, cache_dir=str(cache))
    assert isinstance(first.images, np.memmap) and first.images.dtype == np.uint8
    assert first.images.shape == (6, 1, 16, 16) and not first.images.flags.writeable
    batch = first.batch(np.array([4, 1]))
    assert batch.dtype == np.float32 and np.array_equal(batch, data.to_float(first.images[[4, 1]]))
    expected = np.array(first.images)      # a copy: the damage below is done in place, under the map
    (npy,) = [p for p in os.listdir(cache) if p.endswith(".npy")]
    (meta,) = [p for p in os.listdir(cache) if p.endswith(".json")]
    (cache / npy).write_bytes((cache / npy).read_bytes()[:500])           # truncated
    second = data.load_data(str(root), 16, cache_dir=str(cache))
    assert "ignoring unreadable cache" in capsys.readouterr().err and np.array_equal(second.images, expected)
    (cache / meta).write_text("{not json")
    third = data.load_data(str(root), 16, cache_dir=str(cache))
    assert "ignoring unreadable cache" in capsys.readouterr().err and np.array_equal(third.images, expected)
    _png(str(root / "good00.png"), np.full((24, 24), 9, np.uint8))           # a changed file: rebuilt
    os.utime(root / "good00.png", ns=(1, 1))
    fourth = data.load_data(str(root), 16, cache_dir=str(cache))
    assert np.all(fourth.images[0] == 9) and np.array_equal(fourth.images[1:], expected[1:])
    assert sorted(os.listdir(cache)) == sorted([npy, meta])                  # replaced, not piled up


def test_a_cache_build_killed_midway_is_removed_later_and_one_in_progress_is_not(tmp_path, capsys):
    """A process killed while it builds a cache leaves its temporary file; a later load removes it
    once nothing has written to it for STALE_TEMPORARY_S, and leaves a recent one (a build that
    another process may still be running) alone."""
    import signal
    import subprocess
    import time
    root, cache = tmp_path / "slices", tmp_path / "cache"
    _good_images(root, 40)
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); import nanostyle.data as d\n"
        "decode = d._ImageDecoder.__call__\n"
        "d._ImageDecoder.__call__ = lambda self, path: (time.sleep(0.1), decode(self, path))[1]\n"
        "d.load_data(sys.argv[2], 16, cache_dir=sys.argv[3], workers=1)"),
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), str(root), str(cache)])
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (cache.is_dir() and any(n.endswith(".tmp") for n in os.listdir(cache))):
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    (left,) = [n for n in os.listdir(cache) if n.endswith(".tmp")]      # the killed build's file
    old = time.time() - data.STALE_TEMPORARY_S - 60
    os.utime(cache / left, (old, old))
    in_progress = cache / "slices-other-16-0123456789abcdef.npy.k2j4h6.tmp"
    in_progress.write_bytes(b"still being written")
    loaded = data.load_data(str(root), 16, cache_dir=str(cache))
    assert len(loaded.images) == 40
    assert f"removed 1 unfinished cache file left by a killed run in {cache}: {left}" in capsys.readouterr().err
    assert not (cache / left).exists() and in_progress.exists()


def test_classes_from_every_subfolder(tmp_path):
    root = tmp_path / "labelled"
    for name, count in (("NC", 2), ("AD", 3)):
        _good_images(root / name, count)
    ds = data.load_data(str(root), 16, classes="*", cache_dir=str(tmp_path / "cache"))
    assert ds.class_names == ["AD", "NC"] and ds.labels.tolist() == [0, 0, 0, 1, 1]
    assert all(os.sep + ds.class_names[label] + os.sep in f for f, label in zip(ds.files, ds.labels))
    ds = data.load_data(str(root), 16, classes="NC,AD", cache_dir=str(tmp_path / "cache"))
    assert ds.class_names == ["NC", "AD"] and ds.labels.tolist() == [0, 0, 1, 1, 1]
    _png(str(root / "loose.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(data.DataError, match=r"1 files lie directly in .*loose\.png"):
        data.load_data(str(root), 16, classes="*", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(data.DataError, match="has no subfolders"):
        data.load_data(str(root / "AD"), 16, classes="*")


def test_an_unwritable_cache_folder_loads_in_memory(tmp_path, capsys):
    root = tmp_path / "slices"
    _good_images(root, 3)
    (tmp_path / "not_a_folder").write_text("x")
    ds = data.load_data(str(root), 16, cache_dir=str(tmp_path / "not_a_folder"))
    assert len(ds) == 3 and not isinstance(ds.images, np.memmap)
    assert "could not write the cache" in capsys.readouterr().err


# --- volumes (issue 27) -------------------------------------------------------------------------

try:
    import nibabel
except ImportError:
    nibabel = None
needs_nibabel = pytest.mark.skipif(nibabel is None, reason='nibabel is missing: pip install "nanostyle[nifti]"')


def _phantom(shape=(20, 24, 14), seed=0):
    """A uint8 brain-like volume [R, A, S]: an ellipsoid of tissue (with a bright core, so its
    99.5th percentile is 255) in a zero background; the top and bottom slices hold no brain."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = grids[0] ** 2 / 0.8 + grids[1] ** 2 / 0.9 + (grids[2] / 0.8) ** 2
    volume = np.where(radius < 1, rng.integers(40, 200, shape), 0).astype(np.uint8)
    volume[radius < 0.15] = 255
    volume[:, :6, 3] = 0                                     # an asymmetric notch: shows any flip
    return volume


def _save_nifti(path, volume, affine=None):
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4) if affine is None else affine), str(path))


def _axial_pngs(root, volume):
    """Every axial slice as the documented view: rows anterior -> posterior, columns left -> right."""
    root.mkdir(parents=True)
    for k in range(volume.shape[2]):
        _png(str(root / f"slice_{k:03d}.png"), np.ascontiguousarray(volume[:, :, k].T[::-1]))


@needs_nibabel
def test_volume_loads_into_the_same_slices_as_its_png_export(tmp_path):
    volume = _phantom()
    _save_nifti(tmp_path / "brain.nii.gz", volume)
    _axial_pngs(tmp_path / "pngs", volume)
    from_volume = data.load_data(str(tmp_path / "brain.nii.gz"), 16, cache_dir=str(tmp_path / "cache"))
    kept = [int(f.rsplit(" ", 1)[1][:-1]) for f in from_volume.files]
    brain = [k for k in range(volume.shape[2]) if np.mean(volume[:, :, k] > 25.5) >= 0.1]
    assert kept == brain and 0 < len(kept) < volume.shape[2]   # the empty ends are left out
    from_pngs = data.load_data(str(tmp_path / "pngs"), 16, cache_dir=str(tmp_path / "cache"))
    assert np.array_equal(from_volume.images, from_pngs.images[kept])
    assert all(f.endswith(f"brain.nii.gz[axial {k}]") for f, k in zip(from_volume.files, kept))


@needs_nibabel
def test_las_and_ras_volumes_give_the_same_slices(tmp_path):
    volume = _phantom()
    _save_nifti(tmp_path / "ras.nii", volume)
    las = np.diag([-1.0, 1, 1, 1])
    las[0, 3] = volume.shape[0] - 1                          # the same voxels in space, x stored flipped
    _save_nifti(tmp_path / "las.nii", volume[::-1], las)
    _save_nifti(tmp_path / "mislabelled.nii", volume[::-1])  # flipped data that claims to be RAS
    assert nibabel.aff2axcodes(nibabel.load(str(tmp_path / "las.nii")).affine) == ("L", "A", "S")
    for axis in ("axial", "coronal", "sagittal"):
        load = lambda name: data.load_data(str(tmp_path / name), 16, axis=axis, cache_dir=str(tmp_path / "c")).images
        assert np.array_equal(load("ras.nii"), load("las.nii")), axis
        assert not np.array_equal(load("ras.nii"), load("mislabelled.nii")), axis
    with pytest.raises(data.DataError, match="axis must be one of axial, coronal, sagittal"):
        data.load_data(str(tmp_path / "ras.nii"), 16, axis="transverse")


@needs_nibabel
def test_intensities_are_scaled_by_percentiles_not_the_maximum(tmp_path):
    volume = _phantom().astype(np.float32) * 3.0 + 100.0    # another scanner's units
    volume[0, 0, 0] = 1e6                                   # one hot voxel
    _save_nifti(tmp_path / "hot.nii.gz", volume)
    _save_nifti(tmp_path / "plain.nii.gz", _phantom())
    hot = data.load_data(str(tmp_path / "hot.nii.gz"), 16, cache_dir=str(tmp_path / "c"))
    plain = data.load_data(str(tmp_path / "plain.nii.gz"), 16, cache_dir=str(tmp_path / "c"))
    assert [f.split("[")[1] for f in hot.files] == [f.split("[")[1] for f in plain.files]
    assert np.abs(hot.images.astype(int) - plain.images.astype(int)).max() <= 1


@needs_nibabel
def test_analyze_pairs_count_once_and_oasis1_trailing_axis_is_dropped(tmp_path):
    root = tmp_path / "volumes"
    root.mkdir()
    volume = _phantom()
    nibabel.save(nibabel.AnalyzeImage(volume[..., None], np.eye(4)), str(root / "OAS1_0001_MR1.img"))
    _save_nifti(root / "second.nii.gz", _phantom(seed=1))
    assert sorted(os.listdir(root)) == ["OAS1_0001_MR1.hdr", "OAS1_0001_MR1.img", "second.nii.gz"]
    ds = data.load_data(str(root), 16, cache_dir=str(tmp_path / "cache"))
    sources = sorted({f.split("[")[0] for f in ds.files})
    assert [os.path.basename(s) for s in sources] == ["OAS1_0001_MR1.img", "second.nii.gz"] and not ds.skipped
    assert len(np.unique(data.slice_groups(ds))) == 2          # held-out splits keep a volume together
    single = data.load_data(str(root / "OAS1_0001_MR1.hdr"), 16, cache_dir=str(tmp_path / "cache"))
    assert single.files[0].split("[")[0].endswith(".img") and len(single) > 0


@needs_nibabel
def test_bad_volumes_are_errors_alone_and_skipped_in_a_folder(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    _save_nifti(bad / "series.nii.gz", np.ones((8, 8, 8, 3), np.float32))
    _save_nifti(bad / "zeros.nii.gz", np.zeros((8, 8, 8), np.float32))
    nan = _phantom().astype(np.float32)
    nan[2, 2, 2] = np.nan
    _save_nifti(bad / "nan.nii.gz", nan)
    (bad / "empty.nii").write_bytes(b"")
    nibabel.save(nibabel.AnalyzeImage(_phantom(), np.eye(4)), str(bad / "orphan.img"))
    os.remove(bad / "orphan.hdr")
    expected = {"series.nii.gz": "4-D .*a series of 3 volumes", "zeros.nii.gz": "every voxel is 0",
                "nan.nii.gz": "1 non-finite voxels", "empty.nii": "empty.nii",
                "orphan.img": "Analyze image without its header"}
    for name, reason in expected.items():
        with pytest.raises(data.DataError, match=f"volume .*{name}' cannot be used: .*{reason}"):
            data.load_data(str(bad / name), 16, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(data.DataError, match=r"none of the 5 volume files.*first: .*empty\.nii"):
        data.load_data(str(bad), 16, cache_dir=str(tmp_path / "cache"))
    _save_nifti(bad / "good.nii.gz", _phantom())
    capsys.readouterr()
    ds = data.load_data(str(bad), 16, cache_dir=str(tmp_path / "cache"))
    assert len(ds) > 0 and sorted(os.path.basename(f) for f, _ in ds.skipped) == sorted(expected)
    assert "skipped 5 of 6 volume files" in capsys.readouterr().err


@needs_nibabel
def test_volume_folders_with_classes_and_no_mixing(tmp_path, monkeypatch):
    root = tmp_path / "labelled"
    for name, seeds in (("AD", (0, 1)), ("NC", (2,))):
        (root / name).mkdir(parents=True)
        for seed in seeds:
            _save_nifti(root / name / f"sub{seed}.nii.gz", _phantom(seed=seed))
    ds = data.load_data(str(root), 16, classes="AD,NC", cache_dir=str(tmp_path / "cache"))
    per_volume = len(ds) // 3
    assert ds.class_names == ["AD", "NC"] and ds.labels.tolist() == [0] * 2 * per_volume + [1] * per_volume
    assert data.load_data(str(root), 16, classes="*", cache_dir=str(tmp_path / "cache")).class_names == ["AD", "NC"]
    calls = []
    real = data.volumes.brain_slices
    monkeypatch.setattr(data.volumes, "brain_slices", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = data.load_data(str(root), 16, classes="AD,NC", cache_dir=str(tmp_path / "cache"))
    assert calls == [] and np.array_equal(again.images, ds.images)         # from the cache
    _png(str(root / "NC" / "slice.png"), np.zeros((16, 16), np.uint8))
    with pytest.raises(data.DataError, match="holds both images .* and volumes"):
        data.load_data(str(root), 16, classes="AD,NC", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(data.DataError, match="--classes needs a folder"):
        data.load_data(str(root / "AD" / "sub0.nii.gz"), 16, classes="AD")


def test_volumes_without_nibabel_say_how_to_install_it(tmp_path, monkeypatch):
    (tmp_path / "brain.nii.gz").write_bytes(b"not read: nibabel is asked for first")
    monkeypatch.setitem(sys.modules, "nibabel", None)
    with pytest.raises(data.DataError) as info:
        data.load_data(str(tmp_path / "brain.nii.gz"), 16, cache_dir=str(tmp_path / "cache"))
    assert str(info.value) == 'reading NIfTI/Analyze volumes needs nibabel: pip install "nanostyle[nifti]"'
