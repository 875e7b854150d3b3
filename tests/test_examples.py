"""The example command lines: each one's --help stands alone (no GPU, data or CuPy; every option
says its default), sample.py writes exactly G.sample's pixels, and project.py writes its files,
or one clear line and exit code 2 for a bad target."""
import importlib
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import nanostyle as ns

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
sys.path.insert(0, EXAMPLES)
SCRIPTS = ("train_oasis", "sample", "evaluate", "project", "plot_latents")


def _cli(script, *args, cwd, env=None):
    env = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    return subprocess.run([sys.executable, os.path.join(EXAMPLES, script + ".py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_needs_no_gpu_data_or_cupy(script, tmp_path):
    blocked = tmp_path / "blocked" / "cupy"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('CuPy blocked by the test')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "blocked"), ROOT]), NANOSTYLE_DEVICE="cpu")
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, script + ".py"), "--help"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:") and "Traceback" not in result.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_option_has_help_that_names_its_default(script):
    parser = importlib.import_module(script)._parser()
    for action in parser._actions:
        if action.dest == "help":
            continue
        text = action.help or ""
        assert text, f"{script}.py {action.option_strings[0]} has no help line"
        assert action.required or "default" in text, f"{script}.py {action.option_strings[0]}: no default in {text!r}"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("examples") / "run"
    ns.train(ns.TrainConfig(res=16, cfg="tiny", kimg=0.008, out=str(out), seed=2, device="cpu"), log_to_stdout=False)
    return str(out / "latest.npz")


def test_sample_py_writes_the_pixels_of_g_sample(checkpoint, tmp_path):
    result = _cli("sample", "--ckpt", checkpoint, "--seeds", "3,5", "--out", str(tmp_path / "s"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = ns.load(checkpoint, device="cpu").sample(seeds=[3, 5])
    for seed, image in zip((3, 5), expected):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "s" / f"seed{seed:04d}.png")), image[0])


def test_project_py_writes_every_file(checkpoint, tmp_path):
    G = ns.load(checkpoint, device="cpu")
    Image.fromarray(G.sample(seeds=[1])[0, 0]).convert("RGB").save(tmp_path / "slice.png")
    result = _cli("project", "--ckpt", checkpoint, "--target", str(tmp_path / "slice.png"), "--out",
                  str(tmp_path / "p"), "--steps", "20", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "mode-RGB" in result.stdout and "PSNR" in result.stdout
    assert Image.open(tmp_path / "p" / "projected.png").mode == "L"
    assert Image.open(tmp_path / "p" / "projected.png").size == (16, 16)
    assert Image.open(tmp_path / "p" / "residual.png").mode == "RGB"
    assert np.load(tmp_path / "p" / "w.npy").shape == (G.num_ws, G.w_dim)
    gif = Image.open(tmp_path / "p" / "optimisation.gif")
    assert gif.n_frames >= 2
    assert (tmp_path / "p" / "comparison.png").exists() and (tmp_path / "p" / "noise.npz").exists()


@pytest.mark.parametrize("setup, message", [
    (lambda d: Image.fromarray(np.zeros((32, 32), np.uint8)).save(d / "t.png"), "--resize"),
    (lambda d: (d / "t.png").write_bytes(b"\x89PNG but cut short"), "cannot be read as an image"),
    (lambda d: None, "does not exist"),
])
def test_project_py_bad_target_is_one_clear_line(checkpoint, tmp_path, setup, message):
    setup(tmp_path)
    result = _cli("project", "--ckpt", checkpoint, "--target", str(tmp_path / "t.png"), "--out", str(tmp_path / "p"),
                  "--steps", "5", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error:") and message in result.stderr
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("script", ["train_oasis", "sample"])
def test_device_cuda_without_a_gpu_is_one_clear_line(script, checkpoint, tmp_path):
    if ns.backend.gpu_available():
        pytest.skip("a GPU answers here")
    args = ["--res", "16", "--out", str(tmp_path / "run")] if script == "train_oasis" else \
        ["--ckpt", checkpoint, "--out", str(tmp_path / "s")]
    result = _cli(script, *args, "--device", "cuda", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error:") and "cuda" in result.stderr and "cpu" in result.stderr
    assert not (tmp_path / "run").exists()
