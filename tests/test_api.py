"""The public API: nanostyle.load (each network of a checkpoint, and one clear error for every
kind of bad file), Generator.sample, nanostyle.evaluate, the top-level exports and their
docstrings, and an import that needs neither a GPU nor CuPy."""
import inspect
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import nanostyle as ns
from nanostyle.checkpoint import load_checkpoint
from nanostyle.data import to_uint8

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXPORTS = ("load", "project", "evaluate", "train", "TrainConfig", "save_image_grid", "CheckpointError",
           "Generator", "Discriminator", "MappingNetwork", "SynthesisNetwork", "Projection")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    ns.train(ns.TrainConfig(res=16, cfg="tiny", kimg=0.008, out=str(out), seed=3, device="cpu"), log_to_stdout=False)
    return str(out / "latest.npz")


def test_load_gives_the_ema_generator_with_the_run_attached(checkpoint):
    arrays, meta = load_checkpoint(checkpoint)
    G = ns.load(checkpoint, device="cpu")
    assert isinstance(G, ns.Generator)
    assert G.config.res == 16 and G.config.cfg == "tiny" and G.class_names == []
    assert G.kimg == meta["cur_nimg"] / 1000 and G.checkpoint == checkpoint
    for name, value in G.state_dict().items():
        np.testing.assert_array_equal(value, arrays["G_ema/" + name])
    raw = ns.load(os.path.dirname(checkpoint), device="cpu", which="G")     # a run folder: its latest.npz
    for name, value in raw.state_dict().items():
        np.testing.assert_array_equal(value, arrays["G/" + name])
    D = ns.load(checkpoint, device="cpu", which="D")
    assert isinstance(D, ns.Discriminator)
    np.testing.assert_array_equal(D.state_dict()["blocks.0.fromrgb.weight"], arrays["D/blocks.0.fromrgb.weight"])


def test_a_run_folder_loads_its_newest_checkpoint_that_loads(checkpoint, tmp_path):
    """As --resume: a latest.npz cut short by a kill leaves the run's ckpt-*.npz to load."""
    import glob
    import shutil
    folder = tmp_path / "run"
    shutil.copytree(os.path.dirname(checkpoint), folder)
    (folder / "latest.npz").write_bytes((folder / "latest.npz").read_bytes()[:1000])
    (snapshot,) = glob.glob(str(folder / "ckpt-*.npz"))
    G = ns.load(str(folder), device="cpu")
    assert G.checkpoint == snapshot
    arrays, _ = load_checkpoint(snapshot)
    np.testing.assert_array_equal(G.state_dict()["mapping.w_avg"], arrays["G_ema/mapping.w_avg"])


def test_sample_gives_uint8_pictures_of_generate(checkpoint):
    G = ns.load(checkpoint, device="cpu")
    images = G.sample(seeds=range(5))
    assert images.dtype == np.uint8 and images.shape == (5, 1, 16, 16)
    np.testing.assert_array_equal(images, to_uint8(G.generate(seeds=range(5))))
    np.testing.assert_array_equal(images[2:3], G.sample(seeds=[2]))      # a seed's image does not depend on the batch
    z = np.random.default_rng(4).standard_normal((1, G.z_dim)).astype(np.float32)
    np.testing.assert_array_equal(G.sample(z=z), G.sample(seeds=[4]))


@pytest.mark.parametrize("kwargs, message", [
    ({}, "pass seeds"),
    ({"seeds": [1], "z": np.zeros((1, 16), np.float32)}, "one of the two"),
    ({"seeds": 8}, "range(8)"),
    ({"seeds": [1], "c": [0]}, "unconditional"),
])
def test_sample_refuses_unclear_requests(checkpoint, kwargs, message):
    G = ns.load(checkpoint, device="cpu")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        G.sample(**kwargs)


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_every_bad_checkpoint_is_one_checkpoint_error(checkpoint, tmp_path):
    raw = open(checkpoint, "rb").read()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(raw[:len(raw) // 2])
    foreign = _write_npz(tmp_path / "foreign.npz", weights=np.zeros(3))
    arrays, meta = load_checkpoint(checkpoint)
    newer = tmp_path / "newer.npz"
    with zipfile.ZipFile(checkpoint) as source, zipfile.ZipFile(newer, "w") as target:
        for item in source.namelist():
            data = source.read(item)
            if item == "__version__.npy":
                _write_npz(tmp_path / "v.npz", __version__=np.asarray(99))
                data = zipfile.ZipFile(tmp_path / "v.npz").read("__version__.npy")
            target.writestr(item, data)
    incomplete = tmp_path / "incomplete.npz"
    with zipfile.ZipFile(checkpoint) as source, zipfile.ZipFile(incomplete, "w") as target:
        for item in source.namelist():
            if item != "G_ema/mapping.w_avg.npy":
                target.writestr(item, source.read(item))
    cases = [(str(tmp_path / "missing.npz"), "missing.npz"), (str(truncated), "truncated|corrupt"),
             (foreign, "foreign|not a nanostyle checkpoint"), (str(newer), "99"), (str(incomplete), "mapping.w_avg")]
    for path, message in cases:
        with pytest.raises(ns.CheckpointError, match=message):
            ns.load(path, device="cpu")
    with pytest.raises(ValueError, match="which must be one of"):
        ns.load(checkpoint, which="G_raw")
    with pytest.raises(ValueError, match="device must be"):
        ns.load(checkpoint, device="tpu")


def test_evaluate_judges_samples_against_the_run_s_data_or_given_slices(checkpoint):
    G = ns.load(checkpoint, device="cpu")
    results = ns.evaluate(G, num=8)
    for key in ("swd_avg", "precision_tolerant", "recall", "diversity_ratio", "memorisation_ratio"):
        assert np.isfinite(results[key])
    assert results["num_real"] == 123 and results["num_fake"] == 8 and results["kimg"] == G.kimg
    reals = G.sample(seeds=range(200, 240))                      # any uint8 slices will do
    assert ns.evaluate(G, data=reals, num=8)["num_real"] == 40
    with pytest.raises(ValueError, match="uint8"):
        ns.evaluate(G, data=reals.astype(np.float32), num=8)


def test_public_names_are_exported_and_documented():
    for name in EXPORTS:
        obj = getattr(ns, name)
        assert inspect.getdoc(obj), f"nanostyle.{name} has no docstring"
    for cls, methods in ((ns.Generator, ("generate", "sample")), (ns.Projection, ("psnr",))):
        for method in methods:
            assert inspect.getdoc(getattr(cls, method)), f"{cls.__name__}.{method} has no docstring"
    assert callable(ns.train) and "TrainConfig" in inspect.getdoc(ns.train)
    import nanostyle.train  # noqa: F401  (importing the module keeps ns.train the function)
    assert inspect.isfunction(ns.train)


def test_import_needs_no_gpu_no_cupy_and_loads_no_plotting(tmp_path):
    blocked = tmp_path / "blocked" / "cupy"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('CuPy blocked by the test')\n")
    probe = ("import sys, nanostyle as ns; "
             "assert not ns.backend.cupy_available(); "
             f"missing = [n for n in {EXPORTS!r} if not hasattr(ns, n)]; assert not missing, missing; "
             "heavy = [m for m in ('matplotlib', 'tqdm', 'scipy') if m in sys.modules]; assert not heavy, heavy; "
             "print('ok')")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "blocked"), ROOT]))
    env.pop("NANOSTYLE_DEVICE", None)
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
