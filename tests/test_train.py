"""The training loop and the command lines: a short run leaves every artefact, resume is
bit-exact, NaN stops cleanly, bad input gives one clear line and exit code 2."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import dataclasses

import nanostyle.diversity as diversity_module
from nanostyle import blas
from nanostyle.checkpoint import load_checkpoint
from nanostyle.data import load_default_dataset
from nanostyle.diversity import DiversityConfig
from nanostyle.networks import network_kwargs
from nanostyle.train import TrainConfig, TrainingDiverged, phase_step, train

train_module = sys.modules["nanostyle.train"]   # `import nanostyle.train as m` binds ns.train, the function

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(out, **kw):
    settings = dict(res=16, cfg="tiny", kimg=0.032, out=str(out), seed=1)
    settings.update(kw)
    return TrainConfig(**settings)


def test_short_run_leaves_every_artefact(tmp_path):
    run = train(tiny_config(tmp_path / "run", metrics_kimg=0.032), log_to_stdout=False)
    names = os.listdir(run)
    for expected in ("latest.npz", "loss.png", "metrics.jsonl", "training.gif", "log.txt"):
        assert expected in names
    assert any(n.startswith("fakes-") for n in names) and any(n.startswith("ckpt-") for n in names)
    records = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert all(np.isfinite(r["loss_G"]) and np.isfinite(r["loss_D"]) for r in records)
    assert "swd_avg" in records[-1] and "diversity_ratio" in records[-1]
    arrays, meta = load_checkpoint(os.path.join(run, "latest.npz"))
    assert meta["cur_nimg"] >= 32 and "G_ema/mapping.w_avg" in arrays


def test_time_budget_ends_the_run_with_a_final_snapshot(tmp_path):
    # a budget shorter than the reserve kept for the final snapshot: one iteration, then the end
    run = train(tiny_config(tmp_path / "run", kimg=10, minutes=1e-4, metrics_kimg=0.032), log_to_stdout=False)
    arrays, meta = load_checkpoint(os.path.join(run, "latest.npz"))
    assert meta["cur_nimg"] == 4                      # one batch of 4, not 10 kimg
    assert "time budget: 0.0001 minutes reached at 0.004 kimg" in open(os.path.join(run, "log.txt")).read()
    records = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert "swd_avg" in records[-1]                   # the final snapshot has its metrics


@pytest.mark.parametrize("ratio, shown", [(0.3, "diversity=0.30 LOW: possible collapse"), (0.93, "diversity=0.93")])
def test_collapse_guard_says_so_in_the_log_and_on_the_progress_line(tmp_path, monkeypatch, capsys, ratio, shown):
    # the metrics pass reports samples as varied as `ratio` times the data's diversity
    monkeypatch.setattr(train_module, "_quick_metrics",
                        lambda G_ema, images: {"diversity_ratio": ratio, "swd_avg": 100.0})
    run = train(tiny_config(tmp_path / "run", kimg=0.064, snap_kimg=0.032, metrics_kimg=0.032),
                log_to_stdout=False)
    err = capsys.readouterr().err
    log = open(os.path.join(run, "log.txt")).read()
    records = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert shown in err                                   # the progress line after a snapshot
    warning = f"warning: possible mode collapse at 0.032 kimg: generated diversity is {ratio:.2f} of the real"
    collapsed = ratio < 0.5
    assert (warning in log, warning in err) == (collapsed, collapsed)
    assert [r.get("collapse_warning", False) for r in records] == [collapsed, collapsed]
    assert ("LOW" in err) == collapsed


def test_cpu_preset_fits_the_hour():
    config = TrainConfig(device="cpu").preset(log=lambda message: None)
    assert config.cfg == "cpu" and (config.kimg, config.minutes) == (100.0, 55.0)
    assert config.diversity == DiversityConfig(weight=4.0, until_kimg=40.0, gate_kimg=0.0, space="pixels")
    assert config.ada_pivot == "mean"
    bench = TrainConfig(cfg="bench64", device="cpu").preset(log=lambda message: None)
    assert bench.minutes == 0.0 and bench.diversity.weight == 0.0 and bench.diversity.until_kimg == 0.0
    assert (config.lr_G, config.lr_D, bench.lr_G, bench.lr_D) == (0.004, 0.004, 0.0025, 0.0025)
    assert (config.ada_kimg, bench.ada_kimg) == (10.0, 500.0)
    # the full-width networks a GPU picks collapsed without the floor too (docs/experiments.md, "GPU")
    full = TrainConfig(device="cuda").preset(log=lambda message: None)
    assert (full.cfg, full.diversity.weight, full.diversity.until_kimg, full.ada_kimg, full.lr_G) == \
        ("auto", 4.0, 40.0, 10.0, 0.0025)
    assert TrainConfig(cfg="auto", device="cpu").preset(log=lambda message: None).cfg == "auto"   # asked for
    assert TrainConfig(device="cpu", lr_G=0.001).preset(log=lambda message: None).lr_G == 0.001
    with pytest.raises(ValueError, match="learning rates must be > 0, got G 0 and D 0.004"):
        TrainConfig(device="cpu", lr_G=0.0).preset(log=lambda message: None)
    with pytest.raises(ValueError, match="--diversity -1: .* must be >= 0"):
        TrainConfig(device="cpu", diversity=DiversityConfig(weight=-1.0)).preset(log=lambda message: None)
    with pytest.raises(ValueError, match="unknown --cfg 'wide'"):
        TrainConfig(cfg="wide", device="cpu").preset(log=lambda message: None)


def test_configs_of_older_checkpoints_read_as_today_s():
    """Before the floor's settings were nested, `net` held the resolved network config and
    `split` the parts: such checkpoints resume with the same settings."""
    old = dict(dataclasses.asdict(TrainConfig(res=32)), cfg="auto", net="cpu", split=2, diversity_weight=4.0,
               diversity_kimg=40.0, diversity_gate_kimg=0.5, diversity_space="gradients")
    del old["diversity"], old["parts"]
    config = TrainConfig.from_dict(old)
    assert (config.cfg, config.parts, config.res) == ("cpu", 2, 32)
    assert config.diversity == DiversityConfig(weight=4.0, until_kimg=40.0, gate_kimg=0.5, space="gradients")
    today = TrainConfig(cfg="cpu", device="cpu").preset(log=lambda message: None)
    assert TrainConfig.from_dict(dataclasses.asdict(today)) == today


def test_without_the_floor_the_step_is_plain_stylegan2(tmp_path):
    run = train(tiny_config(tmp_path / "run", diversity=DiversityConfig(weight=0.0)), log_to_stdout=False)
    arrays, meta = load_checkpoint(os.path.join(run, "latest.npz"))
    assert meta["diversity"] is None
    assert not any(k in r for r in meta["records"] for k in ("loss_diversity", "pair_distance"))
    assert "diversity floor" not in open(os.path.join(run, "log.txt")).read()


@pytest.mark.parametrize("parts", [1, 2])
def test_resume_is_bit_exact(tmp_path, monkeypatch, parts):
    # path-length regularisation on, so its running mean must be restored too, and the diversity
    # floor, whose target is recomputed from the data (raised here so that the floor is at work on
    # the tiny run); parts 2 runs the halves of each batch on two threads, which must be as
    # reproducible as one
    real_target = diversity_module.mean_pair_distance
    monkeypatch.setattr(diversity_module, "mean_pair_distance", lambda images: 10 * real_target(images))
    # the floor closes at 0.048 kimg, after the resume: the closing must follow cur_nimg, not the session
    options = dict(pl_weight=2.0, diversity=DiversityConfig(weight=2.0, gate_kimg=0.004, until_kimg=0.048),
                   parts=parts, ada_pivot="black")
    straight = train(tiny_config(tmp_path / "a", kimg=0.064, **options), log_to_stdout=False)
    half = train(tiny_config(tmp_path / "b", kimg=0.032, **options), log_to_stdout=False)
    train(TrainConfig(kimg=0.064), resume=half, log_to_stdout=False)
    a, meta_a = load_checkpoint(os.path.join(straight, "latest.npz"))
    b, meta_b = load_checkpoint(os.path.join(half, "latest.npz"))
    assert meta_a["cur_nimg"] == meta_b["cur_nimg"]
    assert sorted(a) == sorted(b)
    different = [k for k in a if not np.array_equal(a[k], b[k])]
    assert different == []
    assert meta_b["config"]["parts"] == parts
    assert any(r.get("loss_diversity", 0) > 0 for r in meta_b["records"])     # the floor was at work
    assert all(r["loss_diversity"] == 0 and "pair_distance" in r                  # ...and stopped, measuring on
               for r in meta_b["records"] if r["kimg"] > 0.048)
    assert any(r["kimg"] > 0.048 for r in meta_b["records"])
    assert meta_b["diversity"] == meta_a["diversity"] and meta_a["diversity"]["mean"] is not None   # its gate too
    assert "diversity floor: off from 0.048 kimg" in open(os.path.join(half, "log.txt")).read()


class _NoStep:
    """An optimiser that keeps the gradients and leaves the weights alone."""

    def __init__(self, params):
        self.params = params

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        pass


def test_phase_step_in_parts_gives_the_whole_batch_gradient(monkeypatch):
    # a loss that treats every image on its own (mbstd group 1), so halves must add up exactly
    from nanostyle.autograd import Tensor
    from nanostyle.ops import softplus
    from test_networks import tiny
    monkeypatch.setattr(train_module.parallel, "THREADS", 2)
    _, D = tiny(16)
    D.epilogue.mbstd_group_size = 1
    real = Tensor(np.random.default_rng(3).uniform(-1, 1, (8, 1, 16, 16)).astype(np.float32))
    seen = []

    def loss_of(rows, rng, first):
        seen.append((rows, first))
        logits = D(real[rows])
        return softplus(-logits).mean(), {"score": float(logits.numpy().mean()), "logits": logits.numpy().ravel()}

    optimizer = _NoStep(D.parameters())
    rng = np.random.default_rng(0)
    whole, bad = phase_step(D, optimizer, loss_of, 8, rng, parts=1)
    expected = [p.grad.numpy().copy() for p in D.parameters()]
    halves, _ = phase_step(D, optimizer, loss_of, 8, rng, parts=2)
    for p, g in zip(D.parameters(), expected):
        np.testing.assert_allclose(p.grad.numpy(), g, rtol=2e-5, atol=1e-7)
    assert bad == 0 and sorted((r.start or 0, first) for r, first in seen[1:]) == [(0, True), (4, False)]
    assert halves["score"] == pytest.approx(whole["score"], rel=1e-5)
    np.testing.assert_allclose(halves["logits"], whole["logits"], rtol=1e-5)

    def nan_loss(rows, rng, first):
        loss, stats = loss_of(rows, rng, first)
        return loss * float("nan"), stats

    before = [p.data.copy() for p in D.parameters()]
    for parts in (1, 2):
        with pytest.raises(TrainingDiverged, match="the test loss became nan"):
            phase_step(D, optimizer, nan_loss, 8, rng, parts=parts, name="test loss")
    assert all(np.array_equal(p.data, b) for p, b in zip(D.parameters(), before))


def test_parts_follow_the_cores_and_the_mbstd_groups(monkeypatch):
    monkeypatch.setattr(train_module.parallel, "THREADS", 2)
    assert train_module.parallel.batch_parts(16, 4) == 2
    assert train_module.parallel.batch_parts(12, 4) == 1       # halves of 6 would break the groups of 4
    monkeypatch.setattr(train_module.parallel, "THREADS", 8)
    assert train_module.parallel.batch_parts(16, 4) == 4       # parts of one group each
    assert train_module.parallel.batch_parts(32, 4) == 8
    monkeypatch.setattr(train_module.parallel, "THREADS", 1)
    assert train_module.parallel.batch_parts(16, 4) == 1
    config = tiny_config("unused", batch=4, parts=3).preset(log=lambda m: None)
    with pytest.raises(ValueError, match="must divide"):
        train_module.Run(config, load_default_dataset(16))


def test_resume_builds_the_networks_the_checkpoint_holds(tmp_path, monkeypatch):
    # a run started with noise inputs resumes with them after the preset has dropped them
    run = train(tiny_config(tmp_path / "r"), log_to_stdout=False)
    preset = train_module.network_kwargs

    def without_noise(cfg, res):
        G_kwargs, D_kwargs = preset(cfg, res)
        return dict(G_kwargs, use_noise=False), D_kwargs

    monkeypatch.setattr(train_module, "network_kwargs", without_noise)
    train(TrainConfig(kimg=0.064), resume=run, log_to_stdout=False)
    arrays, meta = load_checkpoint(os.path.join(run, "latest.npz"))
    assert meta["cur_nimg"] == 64 and meta["network"]["G"].get("use_noise", True) is True
    assert any(k.endswith("noise_strength") for k in arrays if k.startswith("G/"))
    fresh = train(tiny_config(tmp_path / "fresh"), log_to_stdout=False)   # a new run takes the new preset
    arrays, meta = load_checkpoint(os.path.join(fresh, "latest.npz"))
    assert meta["network"]["G"]["use_noise"] is False and not any("noise" in k for k in arrays)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    run = train(tiny_config(tmp_path / "r"), log_to_stdout=False)
    good = open(os.path.join(run, "latest.npz"), "rb").read()
    original = train_module.StyleGAN2Loss.discriminator_loss

    def poisoned(self, real, z, rng):
        loss, stats = original(self, real, z, rng)
        return loss * float("nan"), stats
    monkeypatch.setattr(train_module.StyleGAN2Loss, "discriminator_loss", poisoned)
    with pytest.raises(TrainingDiverged, match="discriminator loss became nan"):
        train(TrainConfig(kimg=0.064), resume=run, log_to_stdout=False)
    assert open(os.path.join(run, "latest.npz"), "rb").read() == good


def _cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_examples_run_the_library_of_their_own_checkout(tmp_path):
    """An example in a second checkout (a worktree, an older commit) imports that checkout's
    nanostyle, not the one pip installed (here: this checkout, in CI and on the dev machine)."""
    checkout = tmp_path / "checkout"
    shutil.copytree(os.path.join(ROOT, "nanostyle"), checkout / "nanostyle",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (checkout / "examples").mkdir()
    shutil.copy(os.path.join(ROOT, "examples", "_common.py"), checkout / "examples")
    probe = "import sys; sys.path.insert(0, sys.argv[1]); import _common, nanostyle; print(nanostyle.__file__)"
    result = subprocess.run([sys.executable, "-c", probe, str(checkout / "examples")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert os.path.realpath(result.stdout.strip()).startswith(os.path.realpath(checkout)), result.stdout


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("oasis") / "keras_png_slices_train"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(str(root / f"case_{i:03d}_slice_0.nii.png"))
    return root


def test_cli_train_sample_evaluate(tmp_path, image_folder):
    out = tmp_path / "run"
    result = _cli(os.path.join(ROOT, "examples", "train_oasis.py"), "--data", str(image_folder), "--res", "16",
                  "--kimg", "0.016", "--batch", "4", "--out", str(out), "--snap", "0.016", "--metrics", "0",
                  "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "plan:" in result.stdout and (out / "latest.npz").exists()
    # the note on OpenBLAS held to kernels without AVX-512 comes exactly where it applies
    assert ("unset OPENBLAS_CORETYPE" in result.stdout) == (blas.kernel_advice() is not None)
    result = _cli(os.path.join(ROOT, "examples", "sample.py"), "--ckpt", str(out / "latest.npz"), "--seeds", "0-7",
                  "--out", str(tmp_path / "samples"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    pngs = sorted(os.listdir(tmp_path / "samples"))
    assert len(pngs) == 8 and Image.open(tmp_path / "samples" / pngs[0]).size == (16, 16)
    result = _cli(os.path.join(ROOT, "examples", "evaluate.py"), "--ckpt", str(out / "latest.npz"), "--num", "16",
                  "--json", str(tmp_path / "m.json"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "precision" in json.load(open(tmp_path / "m.json"))


@pytest.mark.parametrize("args, message", [
    (["--data", "MISSING_DIR", "--res", "16"], "does not exist"),
    (["--res", "48"], "power of two"),
    (["--res", "256"], "larger"),
    (["--resume", "NOT_A_RUN.npz"], "does not exist"),
    (["--resume", "NOT_A_RUN.npz", "--lr", "0.001", "--seed", "0"], "--lr, --seed would be ignored"),
])
def test_cli_bad_input_is_one_clear_line(tmp_path, args, message):
    result = _cli(os.path.join(ROOT, "examples", "train_oasis.py"), *args, "--kimg", "0.004", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and f"error:" in result.stderr and message in result.stderr


def test_cli_sample_rejects_a_foreign_checkpoint(tmp_path):
    np.savez(tmp_path / "foreign.npz", a=np.zeros(2))
    result = _cli(os.path.join(ROOT, "examples", "sample.py"), "--ckpt", str(tmp_path / "foreign.npz"), cwd=tmp_path)
    assert result.returncode == 2 and "foreign" in result.stderr and "Traceback" not in result.stderr


def test_generate_clips_to_the_data_range_as_the_pictures_do():
    from nanostyle.networks import Generator

    class Loud(Generator):            # G with its output scaled far past [-1, 1]
        def forward(self, z, **kwargs):
            return super().forward(z, **kwargs) * 50.0

    kwargs = network_kwargs("tiny", 16)[0]
    G, loud = Generator(img_resolution=16, **kwargs), Loud(img_resolution=16, **kwargs)
    raw = G.generate(seeds=range(3)) * 50.0
    clipped = loud.generate(seeds=range(3))
    assert np.abs(raw).max() > 1 and clipped.min() >= -1 and clipped.max() <= 1
    np.testing.assert_allclose(clipped, np.clip(raw, -1, 1), atol=1e-5)
