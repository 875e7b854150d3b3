"""The training loop and the command lines: a short run leaves every artefact, resume is
bit-exact, NaN stops cleanly, bad input gives one clear line and exit code 2."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import dataclasses

from helpers import NoStep
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

    optimizer = NoStep(D.parameters())
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
    (["--resume", "NOT_A_RUN.npz", "--lr", "0.001", "--batch", "8", "--seed", "0"], "--batch, --seed would be ignored"),
    (["--kimg", "-1"], "--kimg -1: must be > 0"),
    (["--res", "0"], "--res 0: must be a power of two from 4 to 1024"),
    (["--cond", "--res", "16"], "--cond trains on class labels"),
])
def test_cli_bad_input_is_one_clear_line(tmp_path, args, message):
    result = _cli(os.path.join(ROOT, "examples", "train_oasis.py"), "--kimg", "0.004", *args, cwd=tmp_path)
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


# ---- fail safe: options, messages, signals, crash leftovers, disk, progress ----------------------

@pytest.mark.parametrize("options, message", [
    (dict(kimg=-1), "--kimg -1: must be > 0"),
    (dict(kimg=float("nan")), "--kimg nan: must be > 0"),
    (dict(gamma=-1.0), "--gamma -1: must be >= 0"),
    (dict(res=0), "--res 0: must be a power of two from 4 to 1024"),
    (dict(res=48), "--res 48: must be a power of two"),
    (dict(res=2048), "--res 2048: must be a power of two from 4 to 1024"),
    (dict(batch=6), "--batch 6: use an even batch that is a multiple of 4"),
    (dict(batch=2.5), "--batch 2.5: must be a whole number"),
    (dict(batch=0), "--batch 0: must be >= 2"),
    (dict(minutes=-1.0), "--minutes -1: must be >= 0"),
    (dict(minutes=float("inf")), "--minutes inf: must be >= 0"),
    (dict(lr_G=-0.1, lr_D=-0.1), "--lr: learning rates must be > 0"),
    (dict(snap_kimg=0.0), "--snap 0: must be > 0"),
    (dict(metrics_kimg=-2.0), "--metrics -2: must be >= 0"),
    (dict(seed=-1), "--seed -1: must be >= 0"),
    (dict(keep=-1), "--keep -1: must be >= 0"),
    (dict(kimg="10"), "--kimg '10': must be a number"),
    (dict(diversity=DiversityConfig(until_kimg=-1.0)), "--diversity-until -1: must be >= 0"),
    (dict(diversity=DiversityConfig(gate_kimg=-1.0)), "--diversity-gate -1: must be >= 0"),
    (dict(aug="more"), "--aug 'more': choose one of ada, noaug"),
    (dict(cfg="bench64"), "--cfg bench64 is the speed yardstick at --res 64 only"),
    (dict(ema_kimg=-1.0), "ema_kimg -1: must be >= 0"),
])
def test_options_are_checked_before_any_work(tmp_path, options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("+", r"\+")):
        train(tiny_config(tmp_path / "run", **options), log_to_stdout=False)
    assert not (tmp_path / "run").exists()            # nothing was made


def test_options_are_checked_on_resume_too(tmp_path):
    run = train(tiny_config(tmp_path / "run", kimg=0.016), log_to_stdout=False)
    for options, message in ((dict(kimg=-1.0), "--kimg -1"), (dict(kimg=0.016), "already at 0.016 kimg"),
                             (dict(kimg=1.0, lr_G=0.0, lr_D=0.0), "--lr"), (dict(kimg=1.0, gamma=-1.0), "--gamma -1"),
                             (dict(kimg=1.0, keep=-2), "--keep -2")):
        with pytest.raises(ValueError, match=message):
            train(TrainConfig(**options), resume=run, log_to_stdout=False)
    assert load_checkpoint(os.path.join(run, "latest.npz"))[1]["cur_nimg"] == 16


def test_data_needs_one_minibatch_stddev_group(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    Image.fromarray(np.full((16, 16), 99, np.uint8)).save(str(folder / "only.png"))
    with pytest.raises(train_module.DataError, match="holds 1 image; training needs at least 2 images: datasets "
                       r"need at least as many images as one minibatch-stddev group of the discriminator \(2\)"):
        train(tiny_config(tmp_path / "run", data=str(folder)), log_to_stdout=False)
    # two images make one group of the tiny D: that trains
    Image.fromarray(np.full((16, 16), 9, np.uint8)).save(str(folder / "second.png"))
    train(tiny_config(tmp_path / "run2", data=str(folder), kimg=0.008), log_to_stdout=False)


def _poison_discriminator(monkeypatch):
    original = train_module.StyleGAN2Loss.discriminator_loss

    def poisoned(self, real, z, rng, **labels):
        loss, stats = original(self, real, z, rng, **labels)
        return loss * float("nan"), stats
    monkeypatch.setattr(train_module.StyleGAN2Loss, "discriminator_loss", poisoned)
    return original


def test_divergence_before_any_checkpoint_says_there_is_none(tmp_path, monkeypatch):
    _poison_discriminator(monkeypatch)
    with pytest.raises(TrainingDiverged) as info:
        train(tiny_config(tmp_path / "run"), log_to_stdout=False)
    message = str(info.value)
    assert "discriminator loss became nan at 0.000 kimg (iteration 0)" in message
    assert "no checkpoint was written before it" in message and "start the run again" in message
    assert "--lr 0.00125" in message and "latest.npz" not in message and "--resume" not in message
    assert not any(name.endswith(".npz") for name in os.listdir(tmp_path / "run"))


def test_divergence_names_the_checkpoint_and_its_advice_works(tmp_path, monkeypatch):
    run = train(tiny_config(tmp_path / "r"), log_to_stdout=False)
    good = open(os.path.join(run, "latest.npz"), "rb").read()
    original = _poison_discriminator(monkeypatch)
    with pytest.raises(TrainingDiverged) as info:
        train(TrainConfig(kimg=0.064), resume=run, log_to_stdout=False)
    message = str(info.value)
    assert message.startswith("the discriminator loss became nan at 0.032 kimg (iteration 8); training stopped")
    latest = os.path.join(os.path.abspath(run), "latest.npz")
    assert f"the newest checkpoint, {latest} (0.032 kimg), is from before it" in message
    assert f"--resume {os.path.abspath(run)} --lr 0.00125" in message
    assert open(os.path.join(run, "latest.npz"), "rb").read() == good
    # the advice as given: resume with the lower --lr (and a --gamma), which the run then uses and logs
    monkeypatch.setattr(train_module.StyleGAN2Loss, "discriminator_loss", original)
    train(TrainConfig(kimg=0.048, lr_G=0.00125, lr_D=0.00125, gamma=0.5), resume=run, log_to_stdout=False)
    arrays, meta = load_checkpoint(os.path.join(run, "latest.npz"))
    assert meta["cur_nimg"] == 48
    assert (meta["config"]["lr_G"], meta["config"]["lr_D"], meta["config"]["gamma"]) == (0.00125, 0.00125, 0.5)
    assert "resume changes the checkpoint's settings: lr_G 0.0025 -> 0.00125, lr_D 0.0025 -> 0.00125, " \
           "gamma 0.1 -> 0.5" in open(os.path.join(run, "log.txt")).read()


def test_keep_bounds_the_checkpoints_and_the_plan_says_the_disk(tmp_path):
    run = train(tiny_config(tmp_path / "r", kimg=0.016, snap_kimg=0.004, keep=2), log_to_stdout=False)
    assert sorted(n for n in os.listdir(run) if n.endswith(".npz")) == \
        ["ckpt-0000.012.npz", "ckpt-0000.016.npz", "latest.npz"]
    log = open(os.path.join(run, "log.txt")).read()
    size = float(log.split("checkpoints of about ")[1].split(" MB")[0]) * 1e6
    assert "the newest 2 ckpt-*.npz and latest.npz are kept (--keep): up to " in log
    actual = os.path.getsize(os.path.join(run, "latest.npz"))
    # the estimate counts the loss records at their cap of 2000 (here 8), so it is above the file
    records = len(load_checkpoint(os.path.join(run, "latest.npz"))[1]["records"])
    assert actual < size < actual + 2000 * 400 * 1.1 and records == 4
    only_latest = train(tiny_config(tmp_path / "k0", kimg=0.016, keep=0), log_to_stdout=False)
    assert sorted(n for n in os.listdir(only_latest) if n.endswith(".npz")) == ["latest.npz"]
    assert "latest.npz only are kept" in open(os.path.join(only_latest, "log.txt")).read()


def test_resume_picks_the_newest_checkpoint_that_loads(tmp_path):
    run = train(tiny_config(tmp_path / "r", snap_kimg=0.016), log_to_stdout=False)      # ckpt 16, 32
    folder = os.path.abspath(run)
    # a kill between the two writes: ckpt-0000.032 written, latest.npz still the older snapshot
    shutil.copy(os.path.join(run, "ckpt-0000.016.npz"), os.path.join(run, "latest.npz"))
    # ...and a newer snapshot that does not load
    with open(os.path.join(run, "ckpt-0000.048.npz"), "wb") as handle:
        handle.write(open(os.path.join(run, "ckpt-0000.032.npz"), "rb").read()[:5000])
    lines = []
    result = train_module.open_run(TrainConfig(kimg=0.064), resume=run, log=lines.append)
    assert result.cur_nimg == 32
    assert any(line.startswith("skipped: ") and "ckpt-0000.048.npz" in line and "truncated or corrupt" in line
               for line in lines)
    assert f"resuming from ckpt-0000.032.npz, the newest checkpoint in {folder} that loads (latest.npz holds " \
           "0.016 kimg: the run was stopped between writing the two)" in lines
    os.remove(os.path.join(run, "ckpt-0000.048.npz"))
    # an explicit older checkpoint would mix two histories in the folder: refused, with the way out
    with pytest.raises(train_module.CheckpointError, match="its folder holds a newer checkpoint, .*ckpt-0000.032.npz"):
        train(TrainConfig(kimg=0.064), resume=os.path.join(run, "latest.npz"), log_to_stdout=False)
    # a new run into a folder that holds a run: refused
    with pytest.raises(ValueError, match="already holds a run's checkpoints"):
        train(tiny_config(run), log_to_stdout=False)


def test_progress_shows_the_end_that_comes_first(capsys):
    bar = train_module._progress_bar(10_000, 0)
    record = dict(kimg=0.004, ada_p=0.0, img_per_s=4.0)
    bar.update(4, record, minutes_left=60.0)            # 9996 img at 4 img/s: 41 min, before the budget
    assert bar.bar.postfix.startswith("kimg=0.00, ends=in 41:39 (--kimg)")
    bar.update(4, record, minutes_left=2.0)             # the budget ends first
    assert bar.bar.postfix.startswith("kimg=0.00, ends=in 02:00 (--minutes)")
    bar.close()
    assert "<" not in capsys.readouterr().err               # no tqdm ETA counting to --kimg


def _start_training(tmp_path, out, *args):
    """examples/train_oasis.py on the tiny networks in a process of its own, long enough to be
    stopped; its stdout and stderr go to files in tmp_path."""
    command = [sys.executable, os.path.join(ROOT, "examples", "train_oasis.py"), "--res", "16", "--cfg", "tiny",
               "--kimg", "100", "--metrics", "0", "--device", "cpu", "--out", str(out), *args]
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=open(tmp_path / "stdout.txt", "w"),
                            stderr=open(tmp_path / "stderr.txt", "w"))


def _wait_for(condition, process, timeout=30):
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, "training ended before it could be stopped"
        assert time.time() < deadline, "training did not get there in time"
        time.sleep(0.05)


def _training_started(out):
    return lambda: os.path.exists(out / "log.txt") and "plan:" in open(out / "log.txt").read()


def _leftovers(out):
    return [name for name in os.listdir(out) if name.endswith(".tmp")]


def _named_checkpoint(message):
    """The checkpoint path a stop message names as the newest, loaded."""
    path = message.split("the newest checkpoint is ")[1].split(" (")[0]
    return path, load_checkpoint(path)


def test_sigterm_stops_with_a_final_snapshot_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    process = _start_training(tmp_path, out, "--snap", "1000")      # no snapshot before the signal
    _wait_for(_training_started(out), process)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 143
    err = open(tmp_path / "stderr.txt").read()
    assert "stopped by SIGTERM at the end of iteration" in err and "a final snapshot was written" in err
    assert f"Continue with --resume {out}" in err and "Traceback" not in err
    path, (arrays, meta) = _named_checkpoint(err)
    assert path == str(out / "latest.npz") and meta["cur_nimg"] >= 4 and _leftovers(out) == []
    assert "stopped by SIGTERM" in open(out / "log.txt").read()
    kimg = (meta["cur_nimg"] + 8) / 1000
    result = _cli(os.path.join(ROOT, "examples", "train_oasis.py"), "--resume", str(out), "--kimg", str(kimg), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(str(out / "latest.npz"))[1]["cur_nimg"] == meta["cur_nimg"] + 8


def test_sigint_after_a_recent_snapshot_keeps_it(tmp_path):
    out = tmp_path / "run"
    process = _start_training(tmp_path, out, "--snap", "0.008")
    _wait_for(lambda: os.path.exists(out / "latest.npz"), process)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 130
    err = open(tmp_path / "stderr.txt").read()
    assert "stopped by SIGINT at the end of iteration" in err and "s of training old, so no final one was written" in err
    assert f"Continue with --resume {out}" in err and "Traceback" not in err
    path, (arrays, meta) = _named_checkpoint(err)
    assert meta["cur_nimg"] >= 8 and _leftovers(out) == []


def test_a_second_signal_while_stopping_breaks_nothing(tmp_path):
    out = tmp_path / "run"
    process = _start_training(tmp_path, out, "--snap", "1000")
    _wait_for(_training_started(out), process)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.2)                                                    # in the iteration or the final snapshot
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 143
    err = open(tmp_path / "stderr.txt").read()
    assert "Traceback" not in err and _leftovers(out) == []
    if "nothing to resume" in err:
        assert not any(name.endswith(".npz") for name in os.listdir(out))
    else:
        _named_checkpoint(err)                                         # what it names loads
        assert f"Continue with --resume {out}" in err


def test_sigkill_leftovers_are_removed_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    process = _start_training(tmp_path, out, "--snap", "0.008")
    _wait_for(lambda: os.path.exists(out / "latest.npz"), process)
    process.kill()
    process.wait(timeout=30)
    # a process killed mid-write by SIGKILL: its temporary stays (write_atomic could not remove it)
    writer = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom nanostyle.checkpoint import write_atomic\n"
                               "write_atomic(sys.argv[1], lambda handle: (handle.write(b'x' * 4096), handle.flush(), "
                               "time.sleep(60)))", str(out / "latest.npz")], env=dict(os.environ, PYTHONPATH=ROOT))
    _wait_for(lambda: any(name.startswith("latest.npz.") for name in _leftovers(out)), writer)
    writer.kill()
    writer.wait(timeout=30)
    (out / "notes.tmp").write_text("the user's own")
    stale = [name for name in _leftovers(out) if name != "notes.tmp"]
    arrays, meta = load_checkpoint(str(out / "latest.npz"))               # the kill broke nothing
    result = _cli(os.path.join(ROOT, "examples", "train_oasis.py"), "--resume", str(out), "--kimg",
                  str((meta["cur_nimg"] + 8) / 1000), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "left by a write that was killed: " + ", ".join(stale) in result.stdout
    assert _leftovers(out) == ["notes.tmp"]
    assert load_checkpoint(str(out / "latest.npz"))[1]["cur_nimg"] == meta["cur_nimg"] + 8


def test_plot_latents_pca_and_cli(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    from plot_latents import pca
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 5)) * np.array([3.0, 2.0, 1.0, 0.5, 0.1]) + 7.0
    coordinates, share = pca(x)
    variance = np.array([9.0, 4.0, 1.0, 0.25, 0.01])
    np.testing.assert_allclose(share, variance[:2] / variance.sum(), rtol=0.05)
    np.testing.assert_allclose(coordinates.var(axis=0), variance[:2], rtol=0.1)
    result = _cli(os.path.join(ROOT, "examples", "plot_latents.py"), "--help", cwd=tmp_path)
    assert result.returncode == 0 and "--method {pca,umap,both}" in result.stdout
    run = train(tiny_config(tmp_path / "run"), log_to_stdout=False)
    result = _cli(os.path.join(ROOT, "examples", "plot_latents.py"), "--ckpt", os.path.join(run, "latest.npz"),
                  "--num", "32", "--out", str(tmp_path / "w.png"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "w.png").size[0] > 300 and "unconditional" in result.stdout


# ---- conditional runs (--cond) -------------------------------------------------------------------

def _two_class_folder(root, per_class=24, res=16, seed=0):
    """AD/ and NC/ subfolders of two visibly different patterns, both symmetric under x-flip: the
    top half bright (AD) or the bottom half bright (NC), the edge moved by up to a pixel, plus noise."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(("AD", "NC")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = np.full((res, res), 30.0)
            edge = res // 2 + int(rng.integers(-1, 2))
            if label == 0:
                image[:edge] = 220.0
            else:
                image[edge:] = 220.0
            image += rng.normal(0, 5, image.shape)
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(str(root / name / f"case_{i:03d}.png"))
    return root


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    """A tiny conditional run on the two-class folder: 500 images (a few hundred), lr 0.005."""
    root = _two_class_folder(tmp_path_factory.mktemp("labelled") / "slices")
    out = tmp_path_factory.mktemp("cond") / "run"
    run = train(tiny_config(out, data=str(root), classes="AD,NC", cond=True, kimg=0.5, snap_kimg=0.5,
                            metrics_kimg=0, lr_G=0.005, lr_D=0.005), log_to_stdout=False)
    return root, run


def test_a_conditional_run_samples_each_class(conditional_run):
    from nanostyle.data import load_image_folder, to_float
    import nanostyle as ns
    root, run = conditional_run
    G = ns.load(os.path.join(run, "latest.npz"))
    meta = load_checkpoint(os.path.join(run, "latest.npz"))[1]
    assert G.class_names == meta["class_names"] == ["AD", "NC"] and G.c_dim == 2 and meta["network"]["D"]["c_dim"] == 2
    assert "conditional on AD (24 images), NC (24 images)" in open(os.path.join(run, "log.txt")).read()
    dataset = load_image_folder(str(root), 16, classes="AD,NC", verbose=False)
    reals = to_float(dataset.images).reshape(len(dataset), -1)
    for label in (0, 1):
        fakes = G.generate(seeds=range(100), c=label).reshape(100, -1)
        nearest = ((fakes[:, None] - reals[None]) ** 2).sum(axis=2).argmin(axis=1)
        # a nearest-neighbour classifier on the reals puts the samples of each class in that class
        assert np.mean(dataset.labels[nearest] == label) >= 0.9, label


def test_conditional_cli_samples_evaluates_and_plots_per_class(tmp_path, conditional_run):
    _, run = conditional_run
    ckpt = os.path.join(run, "latest.npz")
    result = _cli(os.path.join(ROOT, "examples", "sample.py"), "--ckpt", ckpt, "--class", "NC", "--seeds", "0-3",
                  "--out", str(tmp_path / "nc"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(os.listdir(tmp_path / "nc")) == 4
    result = _cli(os.path.join(ROOT, "examples", "sample.py"), "--ckpt", ckpt, "--out", str(tmp_path / "all"),
                  cwd=tmp_path)
    assert result.returncode == 0 and "rows: AD, NC" in result.stdout, result.stderr
    grid = Image.open(tmp_path / "all" / "classes.png")
    assert grid.size == (8 * 18 + 2, 2 * 18 + 2)                     # 8 seeds by 2 classes of 16 px
    result = _cli(os.path.join(ROOT, "examples", "sample.py"), "--ckpt", ckpt, "--class", "MCI", cwd=tmp_path)
    assert result.returncode == 2 and "its classes are 0 (AD), 1 (NC)" in result.stderr
    result = _cli(os.path.join(ROOT, "examples", "evaluate.py"), "--ckpt", ckpt, "--num", "16",
                  "--json", str(tmp_path / "m.json"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = json.load(open(tmp_path / "m.json"))
    assert {"AD/swd_avg", "NC/swd_avg", "AD/diversity_ratio", "NC/num_real"} <= found.keys()
    assert found["NC/num_real"] == 24 and "class NC:" in result.stdout
    result = _cli(os.path.join(ROOT, "examples", "plot_latents.py"), "--ckpt", ckpt, "--num", "64",
                  "--out", str(tmp_path / "latents.png"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "latents.png").size[0] > 300 and "AD, NC" in result.stdout


def test_sampling_a_class_of_an_unconditional_checkpoint_fails_clearly(tmp_path):
    run = train(tiny_config(tmp_path / "plain"), log_to_stdout=False)
    result = _cli(os.path.join(ROOT, "examples", "sample.py"), "--ckpt", os.path.join(run, "latest.npz"),
                  "--class", "AD", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--class AD: this checkpoint's generator is unconditional (trained without --cond)" in result.stderr


def test_conditional_resume_is_bit_exact_with_the_per_class_floor(tmp_path, monkeypatch):
    real_target = diversity_module.mean_pair_distance
    monkeypatch.setattr(diversity_module, "mean_pair_distance", lambda images: 10 * real_target(images))
    root = _two_class_folder(tmp_path / "slices", per_class=6)
    options = dict(data=str(root), classes="AD,NC", cond=True, diversity=DiversityConfig(weight=2.0, until_kimg=0.0),
                   batch=8, pl_weight=2.0)
    straight = train(tiny_config(tmp_path / "a", kimg=0.064, **options), log_to_stdout=False)
    half = train(tiny_config(tmp_path / "b", kimg=0.032, **options), log_to_stdout=False)
    train(TrainConfig(kimg=0.064), resume=half, log_to_stdout=False)
    a, meta_a = load_checkpoint(os.path.join(straight, "latest.npz"))
    b, meta_b = load_checkpoint(os.path.join(half, "latest.npz"))
    assert meta_a["cur_nimg"] == meta_b["cur_nimg"] == 64 and sorted(a) == sorted(b)
    assert [k for k in a if not np.array_equal(a[k], b[k])] == []
    assert any(r.get("loss_diversity", 0) > 0 for r in meta_b["records"])           # the floor was at work
    assert "targets AD" in open(os.path.join(half, "log.txt")).read()


def test_the_collapse_guard_watches_each_class(tmp_path, monkeypatch):
    # class NC's samples are much less varied than its reals, class AD's are fine
    monkeypatch.setattr(train_module, "_quick_metrics",
                        lambda G_ema, images, c=None, num=256: {"diversity_ratio": 0.3 if c == 1 else 0.9,
                                                                "swd_avg": 10.0 * (c + 1)})
    root = _two_class_folder(tmp_path / "slices", per_class=4)
    run = train(tiny_config(tmp_path / "run", data=str(root), classes="AD,NC", cond=True, kimg=0.016,
                            metrics_kimg=0.016), log_to_stdout=False)
    record = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))][-1]
    assert (record["AD/diversity_ratio"], record["NC/diversity_ratio"], record["diversity_ratio"]) == (0.9, 0.3, 0.3)
    assert record["swd_avg"] == 15.0 and record["collapse_warning"] is True
    log = open(os.path.join(run, "log.txt")).read()
    assert "possible mode collapse of class NC at 0.016 kimg" in log and "of class AD" not in log


def test_cond_needs_labelled_data(tmp_path):
    with pytest.raises(train_module.DataError, match="--cond trains on class labels, but the data has no classes"):
        train(tiny_config(tmp_path / "run", cond=True), log_to_stdout=False)


# ---- 128 and 256 px ------------------------------------------------------------------------------

def test_presets_at_128_and_256_px_follow_stylegan2_ada():
    quiet = dict(log=lambda message: None)
    for res, batch, gamma, ema in ((128, 32, 0.1024, 10.0), (256, 16, 0.8192, 5.0)):
        auto = TrainConfig(res=res, device="cuda").preset(**quiet)
        assert (auto.cfg, auto.batch, auto.ema_kimg) == ("auto", batch, ema)
        assert auto.gamma == pytest.approx(gamma)                  # 0.0002 res^2 / batch
        cpu = TrainConfig(res=res, device="cpu").preset(**quiet)
        assert (cpu.cfg, cpu.batch, cpu.ema_kimg, cpu.minutes) == ("cpu", 16, 2.0, 55.0)
        assert cpu.gamma == pytest.approx(0.0002 * res ** 2 / 16)
        larger = TrainConfig(res=res, device="cpu", batch=32).preset(**quiet)
        assert larger.gamma == pytest.approx(0.0002 * res ** 2 / 32)
        assert network_kwargs("auto", res)[0]["mapping_layers"] == 2
    # 64 px stays as it was
    for device in ("cpu", "cuda"):
        config = TrainConfig(res=64, device=device).preset(**quiet)
        assert (config.batch, config.gamma) == (16, 0.1) and config.ema_kimg == (2.0 if device == "cpu" else 10.0)
    # the cpu widths halve per octave, as auto's do
    G, D = network_kwargs("cpu", 256)
    assert (G["channel_base"], G["channel_max"]) == (2048, 128) == (D["channel_base"], D["channel_max"])


# ---- the plan's measured speed -------------------------------------------------------------------

def test_measuring_the_speed_leaves_the_run_as_it_was(tmp_path, monkeypatch):
    config = tiny_config(tmp_path / "run", pl_weight=2.0).preset(log=lambda m: None)
    run = train_module.Run(config, load_default_dataset(16))
    before_arrays, before_meta = run.state()
    speed = train_module.measure_speed(run)
    after_arrays, after_meta = run.state()
    assert speed > 0 and after_meta == before_meta
    assert [k for k in before_arrays if not np.array_equal(before_arrays[k], after_arrays[k])] == []
    # iterations of each kind, weighted by how often they come: R1 every 16, path length every 4
    assert train_module._iteration_kinds(config) == {0: 1 / 16, 1: 12 / 16, 4: 3 / 16}
    # and a whole run timed first equals one that is not (the plan says what it measured)
    monkeypatch.setattr(train_module, "MEASURE_MIN_ITERATIONS", 0)
    timed = train(tiny_config(tmp_path / "timed", kimg=0.016), log_to_stdout=False)
    monkeypatch.setattr(train_module, "MEASURE_MIN_ITERATIONS", 10 ** 9)
    untimed = train(tiny_config(tmp_path / "untimed", kimg=0.016), log_to_stdout=False)
    a, meta_a = load_checkpoint(os.path.join(timed, "latest.npz"))
    b, meta_b = load_checkpoint(os.path.join(untimed, "latest.npz"))
    assert [k for k in a if not np.array_equal(a[k], b[k])] == [] and meta_a["rng"] == meta_b["rng"]
    assert "img/s (training iterations timed on a copy of the run" in open(os.path.join(timed, "log.txt")).read()
    assert "measured" not in open(os.path.join(untimed, "log.txt")).read()


def test_the_plan_says_how_long_kimg_takes_and_where_the_budget_ends_it(tmp_path):
    config = tiny_config(tmp_path / "run", kimg=100, minutes=30).preset(log=lambda m: None)
    run = train_module.Run(config, load_default_dataset(16))
    line = train_module.plan(run, speed=20.0)
    assert "measured 20.0 img/s" in line and "100 kimg take about 1 h 23 min" in line
    assert "the 30-minute budget ends the run near 36 kimg" in line
    run.config.minutes = 0
    assert "budget" not in train_module.plan(run, speed=20.0).split("measured")[1]
