"""Several processes (nanostyle/distributed.py and train.py's hooks), through `mpiexec -n 2` on
this machine: the all-reduced gradient of every phase is the one-process gradient of the same
batch, a 2-process run ends with the weights of one process computing the batch in 2 parts,
stop-and-resume is bit-exact across process counts, a failing or killed rank ends the run, and
a wrong launch gets one line. This file is also the program those tests start under mpiexec
(`python tests/test_distributed.py PROGRAM ARGS`)."""
import copy
import hashlib
import json
import os
import signal
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import nanostyle  # noqa: E402,F401  (before NumPy's BLAS starts: it shares the cores among the ranks)
from nanostyle import backend, distributed  # noqa: E402
from helpers import NoStep  # noqa: E402

TRAIN = os.path.join(ROOT, "examples", "train_oasis.py")


MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


def _mpi_missing():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return f"mpi4py is not installed ({distributed.INSTALL})"
    if MPIEXEC is None:
        return "no mpiexec on PATH (the mpich wheel brings one: " + distributed.INSTALL + ")"
    return ""


needs_mpi = pytest.mark.skipif(bool(_mpi_missing()), reason=_mpi_missing() or "MPI present")


# each rank computes its rows with a single-threaded BLAS, as one process computes each of its parts
# on threads: OpenBLAS with several threads may sum in another order (benchmarks/RESULTS.md)
SINGLE_THREADED = dict(OPENBLAS_NUM_THREADS="1", NANOSTYLE_NUM_THREADS="1")


def _mpiexec(n, *args, env=None, timeout=300, cwd=None):
    return subprocess.run([MPIEXEC, "-n", str(n), sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=dict(os.environ, **SINGLE_THREADED, **(env or {})))


def _start_and_wait_for_a_snapshot(run, *args):
    """mpiexec -n 2 python ARGS in the background, once `run` holds its first latest.npz."""
    process = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ, **SINGLE_THREADED))
    deadline = time.monotonic() + 120
    while not (run / "latest.npz").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    if not (run / "latest.npz").exists():
        if process.poll() is None:
            process.kill()
        raise AssertionError(process.communicate(timeout=30))
    return process


def _this(program, *args):
    return (os.path.abspath(__file__), program, *[json.dumps(a) if not isinstance(a, str) else a for a in args])


def _checkpoint(path):
    from nanostyle.checkpoint import load_checkpoint
    return load_checkpoint(path)


def _same(a_path, b_path):
    a, meta_a = _checkpoint(a_path)
    b, meta_b = _checkpoint(b_path)
    assert meta_a["cur_nimg"] == meta_b["cur_nimg"] and sorted(a) == sorted(b)
    return [k for k in a if not np.array_equal(a[k], b[k])]


# ---- the communicator of one process --------------------------------------------------------

def test_one_process_calls_are_no_ops():
    comm = distributed.init(None)
    assert (comm.name, comm.rank, comm.size) == ("none", 0, 1)
    buffer = np.arange(5.0)
    assert comm.allreduce_sum(buffer) is buffer and np.array_equal(buffer, np.arange(5.0))
    assert comm.broadcast(buffer) is buffer
    np.testing.assert_array_equal(comm.allgather(np.array([3, 4])), [[3, 4]])
    assert comm.allgather_json({"a": [1, "x"]}) == [{"a": [1, "x"]}]
    assert comm.broadcast_json("runs/x") == "runs/x"
    comm.barrier()
    with pytest.raises(KeyError), comm.fail_together():       # one process: the error passes as it is
        raise KeyError("k")


# ---- programs run under mpiexec ----------------------------------------------------------------

def _relative(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def gradients_program():
    """Every phase in float64, through the communicator and in one process with the same batch;
    prints one JSON line per comparison on rank 0."""
    from nanostyle.augment import AugmentPipe
    from nanostyle.autograd import Tensor
    from nanostyle.diversity import DiversityConfig, DiversityFloor
    from nanostyle.losses import StyleGAN2Loss
    from nanostyle.train import build_networks, phase_step
    from nanostyle.networks import network_kwargs

    comm = distributed.init("mpi")
    results = []
    with comm.fail_together():
        B = 8
        data = np.random.default_rng(11)
        real = Tensor(data.uniform(-1, 1, (B, 1, 16, 16)))
        z = Tensor(data.standard_normal((B, 16)))
        G_kwargs, D_kwargs = network_kwargs("tiny", 16)
        setups = {   # the training loss (augmentation, style mixing, noise, the floor), against N x parts
            "training loss": (dict(G_kwargs), dict(D_kwargs), True),
            # nothing random and mbstd groups of 1: against the whole batch in one part
            "whole batch": (dict(G_kwargs, use_noise=False), dict(D_kwargs, mbstd_group_size=1), False)}
        for setup, (G_kw, D_kw, randomised) in setups.items():
            G, D = build_networks("tiny", 16, seed=3, dtype=np.float64, kwargs=(G_kw, D_kw))
            pipe, floor = None, None
            if randomised:
                pipe = AugmentPipe()
                pipe.p = 0.6
                floor = DiversityFloor(DiversityConfig(weight=2.0, until_kimg=0.0), target=10.0, batch=B)
            loss = StyleGAN2Loss(G, D, pipe, r1_gamma=1.0, style_mixing_prob=0.9 if randomised else 0.0,
                                 diversity_floor=floor)
            phases = {
                "G main": (G, lambda rows, r, first: loss.generator_loss(z[rows], r, update_emas=first)),
                "D main": (D, lambda rows, r, first: loss.discriminator_loss(real[rows], z[rows], r)),
                "D R1": (D, lambda rows, r, first: loss.r1_loss(real[rows], r, gain=16)),
            }
            for parts in ((1, 2) if randomised else (1,)):
                for phase, (module, loss_of) in phases.items():
                    G.requires_grad_(module is G)
                    D.requires_grad_(module is D)
                    params = [p for p in module.parameters() if p.requires_grad]
                    w_avg = G.mapping.w_avg.data.copy()
                    rng = np.random.default_rng(5)
                    reference_rng = copy.deepcopy(rng)
                    stats, _ = phase_step(module, NoStep(params), loss_of, B, rng, parts=parts, comm=comm)
                    got = [None if p.grad is None else p.grad.data.copy() for p in params]
                    got_w_avg = G.mapping.w_avg.data.copy()
                    G.mapping.w_avg.data = w_avg
                    one = comm.size * parts if randomised else 1
                    expected, _ = phase_step(module, NoStep(params), loss_of, B, reference_rng, parts=one)
                    assert [g is None for g in got] == [p.grad is None for p in params]
                    difference = max(_relative(g, p.grad.data) for g, p in zip(got, params) if g is not None)
                    stat_difference = max(_relative(np.asarray(stats[k], dtype=np.float64),
                                                    np.asarray(expected[k], dtype=np.float64)) for k in expected)
                    # every rank holds the same gradient, w_avg and generator state
                    digest = hashlib.sha256(b"".join(g.tobytes() for g in got if g is not None) + got_w_avg.tobytes()
                                            + json.dumps(rng.bit_generator.state).encode()).digest()
                    digests = comm.allgather(np.array(int.from_bytes(digest[:7], "little"), dtype=np.int64))
                    results.append(dict(setup=setup, parts=parts, phase=phase, gradient=difference,
                                        stats=stat_difference, keys=sorted(stats) == sorted(expected),
                                        # (w_avg follows part 0's rows: the whole batch's mean differs)
                                        w_avg=not randomised or bool(np.array_equal(got_w_avg, G.mapping.w_avg.data)),
                                        rng=not randomised or rng.bit_generator.state == reference_rng.bit_generator.state,
                                        ranks_agree=bool((digests == digests[0]).all())))
                    G.mapping.w_avg.data = w_avg
    if comm.rank == 0:
        for result in results:
            print(json.dumps(result), flush=True)


def train_program(settings):
    """train() under the communicator with TrainConfig `settings` (and "resume", "dist",
    "raise_floor_target", and "fail": {"rank", "iteration"} to raise on that rank there)."""
    from nanostyle.diversity import DiversityConfig
    from nanostyle.train import TrainConfig, train
    train_module = sys.modules["nanostyle.train"]     # `import nanostyle.train as m` would give ns.train

    settings = dict(settings)
    resume, dist, fail = settings.pop("resume", None), settings.pop("dist", None), settings.pop("fail", None)
    if settings.pop("raise_floor_target", False):      # so that the floor is at work on the tiny run
        import nanostyle.diversity as diversity_module
        target = diversity_module.mean_pair_distance
        diversity_module.mean_pair_distance = lambda images: 10 * target(images)
    if "diversity" in settings:
        settings["diversity"] = DiversityConfig(**settings["diversity"])
    if fail:
        iteration = train_module._training_iteration

        def failing(run):
            if run.comm.rank == fail["rank"] and run.iteration == fail["iteration"]:
                raise RuntimeError("injected failure")
            return iteration(run)
        train_module._training_iteration = failing
    comm = distributed.init(dist, settings.get("device"))
    with comm.fail_together():
        train(TrainConfig(**settings), resume=resume, comm=comm, log_to_stdout=False)


# ---- (a) gradients ------------------------------------------------------------------------------

@needs_mpi
def test_allreduced_gradients_are_the_one_process_gradients():
    result = _mpiexec(2, *_this("gradients"), timeout=240)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 9                              # 3 phases x (2 part counts + the whole batch)
    for line in lines:
        assert line["gradient"] <= 1e-12 and line["stats"] <= 1e-12, line
        assert line["keys"] and line["w_avg"] and line["rng"] and line["ranks_agree"], line


# ---- (b) a 2-process run is the one-process run in 2 parts ---------------------------------------

@needs_mpi
def test_two_processes_train_as_one_process_in_two_parts(tmp_path):
    """The Done-when command (cpu networks, res 32, 0.2 kimg, batch 8) against one process that
    computes each batch in 2 parts on threads: the same weights, bit for bit (two ranks sum
    their two gradients as the one process sums its two parts; see docs/scaling.md)."""
    args = ["--res", "32", "--kimg", "0.2", "--batch", "8", "--metrics", "0", "--device", "cpu"]
    one = subprocess.run([sys.executable, TRAIN, *args, "--out", str(tmp_path / "one")], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path,
                         env=dict(os.environ, NANOSTYLE_NUM_THREADS="2"))      # 2 parts even on one core
    assert one.returncode == 0, one.stderr
    two = _mpiexec(2, TRAIN, *args, "--out", str(tmp_path / "two"), cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    assert "2 processes over MPI, each computing 4 rows of each batch" in two.stdout
    assert two.stdout.count("plan:") == 1 and "rank 1 pid" in open(tmp_path / "two" / "log.txt").read()
    assert _same(tmp_path / "one" / "latest.npz", tmp_path / "two" / "latest.npz") == []
    _, meta = _checkpoint(tmp_path / "two" / "latest.npz")
    assert meta["config"]["parts"] == 2 and meta["cur_nimg"] == 200


# ---- (c) stop and resume ------------------------------------------------------------------------

@needs_mpi
def test_resume_is_bit_exact_under_two_processes_and_continues_in_one(tmp_path):
    # the floor at work (a raised target) and path length on: every state a resume must carry
    options = dict(res=16, cfg="tiny", seed=1, device="cpu", pl_weight=2.0, ada_pivot="black",
                   diversity=dict(weight=2.0, gate_kimg=0.004, until_kimg=0.048))
    straight = dict(options, kimg=0.064, out=str(tmp_path / "straight"))
    half = dict(options, kimg=0.032, out=str(tmp_path / "half"))
    resume = dict(kimg=0.064, device="cpu", raise_floor_target=True)
    for settings in (straight, half):
        result = _mpiexec(2, *_this("train", dict(settings, raise_floor_target=True)))
        assert result.returncode == 0, result.stderr
    shutil.copytree(tmp_path / "half", tmp_path / "half-one")
    result = _mpiexec(2, *_this("train", dict(resume, resume=str(tmp_path / "half"))))
    assert result.returncode == 0, result.stderr
    assert _same(tmp_path / "straight" / "latest.npz", tmp_path / "half" / "latest.npz") == []
    # one process continues the 2-process run: the same 2 parts (on threads), the same sums
    result = subprocess.run([sys.executable, *_this("train", dict(resume, resume=str(tmp_path / "half-one")))],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert _same(tmp_path / "straight" / "latest.npz", tmp_path / "half-one" / "latest.npz") == []
    _, meta = _checkpoint(tmp_path / "half-one" / "latest.npz")
    assert meta["config"]["parts"] == 2 and any(r.get("loss_diversity", 0) > 0 for r in meta["records"])


@needs_mpi
def test_a_checkpoint_whose_parts_the_processes_cannot_share_splits_anew(tmp_path):
    one = dict(res=16, cfg="tiny", seed=1, device="cpu", kimg=0.016, parts=1, out=str(tmp_path / "run"))
    result = subprocess.run([sys.executable, *_this("train", one)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    result = _mpiexec(2, *_this("train", {"kimg": 0.032, "device": "cpu", "resume": str(tmp_path / "run")}))
    assert result.returncode == 0, result.stderr
    log = open(tmp_path / "run" / "log.txt").read()
    assert "the checkpoint computes each batch in 1 parts, which 2 processes cannot share; continuing with 2 x 1" in log
    _, meta = _checkpoint(tmp_path / "run" / "latest.npz")
    assert meta["cur_nimg"] == 32 and meta["config"]["parts"] == 2


# ---- (d) faults ---------------------------------------------------------------------------------

@needs_mpi
def test_a_rank_that_raises_ends_every_rank(tmp_path):
    settings = dict(res=16, cfg="tiny", seed=1, device="cpu", kimg=10, snap_kimg=0.008, out=str(tmp_path / "run"),
                    fail={"rank": 1, "iteration": 3})
    start = time.monotonic()
    result = _mpiexec(2, *_this("train", settings), timeout=120)
    assert result.returncode != 0 and time.monotonic() - start < 60
    assert "rank 1: RuntimeError: injected failure; ending all 2 processes" in result.stderr
    arrays, meta = _checkpoint(tmp_path / "run" / "latest.npz")       # the last snapshot, whole
    assert meta["cur_nimg"] == 8


@needs_mpi
def test_killing_a_rank_ends_the_other_and_the_run_resumes(tmp_path):
    run = tmp_path / "run"
    settings = dict(res=16, cfg="tiny", seed=1, device="cpu", kimg=10, snap_kimg=0.008, out=str(run))
    process = _start_and_wait_for_a_snapshot(run, *_this("train", settings))
    try:
        # log.txt maps the ranks to the pids that mpiexec's messages name
        line = next(line for line in open(run / "log.txt") if line.startswith("processes: "))
        pid = int(line.split("rank 1 pid ")[1].split()[0])
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        out, err = process.communicate(timeout=60)
        assert time.monotonic() - killed < 30
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    assert f"PID {pid}" in out + err or "Killed" in out + err, out + err
    _, meta = _checkpoint(run / "latest.npz")
    result = _mpiexec(2, *_this("train", {"kimg": meta["cur_nimg"] / 1000 + 0.008, "device": "cpu", "resume": str(run)}))
    assert result.returncode == 0, result.stderr
    assert _checkpoint(run / "latest.npz")[1]["cur_nimg"] == meta["cur_nimg"] + 8


@needs_mpi
def test_sigterm_stops_every_rank_at_the_same_iteration(tmp_path):
    """mpiexec passes SIGTERM to every rank; they stop together, as rank 0 decides (train._loop),
    with one message and the exit status of a terminated run."""
    run = tmp_path / "run"
    process = _start_and_wait_for_a_snapshot(run, TRAIN, "--res", "16", "--cfg", "tiny", "--kimg", "10", "--snap",
                                             "0.008", "--out", str(run), "--device", "cpu")
    try:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, err
    assert err.count("stopped by SIGTERM at the end of iteration") == 1, err
    assert f"Continue with --resume {run}" in err
    assert _checkpoint(run / "latest.npz")[1]["cur_nimg"] >= 8 and not list(run.glob("*.tmp"))


def unguarded_program():
    comm = distributed.init("mpi")
    if comm.rank == 1:
        raise RuntimeError("uncaught on rank 1")
    comm.allreduce_sum(np.zeros(4))          # rank 0 waits here for a rank that is gone


@needs_mpi
def test_an_uncaught_error_outside_fail_together_ends_every_rank():
    start = time.monotonic()
    result = _mpiexec(2, *_this("unguarded"), timeout=60)
    assert result.returncode != 0 and time.monotonic() - start < 30
    assert "rank 1: uncaught RuntimeError; ending all 2 processes" in result.stderr


# ---- a wrong launch: one line, before any work ----------------------------------------------------

def _error_lines(result):
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


@needs_mpi
def test_a_batch_the_processes_cannot_share_is_one_line(tmp_path):
    result = _mpiexec(3, TRAIN, "--res", "16", "--batch", "8", "--kimg", "0.008", "--device", "cpu",
                      "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in _error_lines(result) if "error" in line.lower()]
    assert errors == ["error: --batch 8 does not split among 3 processes in whole minibatch-stddev groups of 4: use "
                      "a batch that is a multiple of 12, or a number of processes that divides 2"], result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run" / "latest.npz").exists()


@needs_mpi
def test_dist_none_under_mpiexec_is_one_line(tmp_path):
    result = _mpiexec(2, TRAIN, "--dist", "none", "--kimg", "0.008", "--device", "cpu", cwd=tmp_path)
    assert result.returncode == 2
    assert [line for line in _error_lines(result) if "error" in line.lower()] == [
        "error: --dist none: mpiexec started 2 processes, which would each train alone into the same run folder; "
        "launch one process without mpiexec, or drop --dist none"]


@needs_mpi
@pytest.mark.skipif(backend.gpu_available(), reason="checks the message of a machine without a GPU")
def test_dist_nccl_without_a_gpu_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, TRAIN, "--dist", "nccl", "--kimg", "0.008"], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in _error_lines(result) if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: --dist nccl needs one GPU per process: rank 0 sees 0 GPU(s)")
    assert "or use --dist mpi" in errors[0]


def test_mpiexec_without_mpi4py_is_one_line(tmp_path):
    # a launcher's environment (2 processes, this one rank 0) and an mpi4py that does not import
    stub = tmp_path / "stub" / "mpi4py"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('No module named mpi4py')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "stub"), ROOT]), PMI_SIZE="2", PMI_RANK="0")
    result = subprocess.run([sys.executable, TRAIN, "--kimg", "0.008"], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env=env)
    assert result.returncode == 2 and _error_lines(result) == [
        'error: mpiexec needs mpi4py, which is not installed: pip install "nanostyle[mpi]"']
    env["PMI_RANK"] = "1"                               # the other ranks leave without a word
    result = subprocess.run([sys.executable, TRAIN, "--kimg", "0.008"], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env=env)
    assert result.returncode == 2 and _error_lines(result) == []


# ---- GPUs -----------------------------------------------------------------------------------------

def _gpu_count():
    return backend.cupy.cuda.runtime.getDeviceCount() if backend.gpu_available() else 0


@pytest.mark.gpu
@needs_mpi
@pytest.mark.skipif(_gpu_count() < 2, reason=f"the nccl backend needs 2 GPUs; "
                    f"{backend.gpu_unavailable_reason() or f'{_gpu_count()} GPU(s) here'}")
def test_nccl_collectives_and_a_short_run(tmp_path):
    result = _mpiexec(2, *_this("nccl"), timeout=240)
    assert result.returncode == 0, result.stderr
    assert "nccl OK" in result.stdout
    settings = dict(res=16, cfg="tiny", seed=1, kimg=0.032, device="cuda", out=str(tmp_path / "run"), dist="nccl")
    result = _mpiexec(2, *_this("train", settings))
    assert result.returncode == 0, result.stderr
    assert "NCCL between their GPUs" in open(tmp_path / "run" / "log.txt").read()


def nccl_program():
    import cupy
    comm = distributed.init("nccl")
    with comm.fail_together():
        assert comm.name == "nccl" and cupy.cuda.Device().id == comm.local_rank
        for dtype in (np.float32, np.float64):
            buffer = cupy.arange(1000, dtype=dtype) * (comm.rank + 1)
            comm.allreduce_sum(buffer)
            assert bool((buffer == cupy.arange(1000, dtype=dtype) * sum(range(1, comm.size + 1))).all())
            buffer = cupy.full(7, comm.rank, dtype=dtype)
            comm.broadcast(buffer, root=comm.size - 1)
            assert bool((buffer == comm.size - 1).all())
        rows = comm.allgather(cupy.full(3, comm.rank, dtype=np.float32))
        assert rows.shape == (comm.size, 3) and bool((rows[:, 0] == cupy.arange(comm.size)).all())
    if comm.rank == 0:
        print("nccl OK", flush=True)


if __name__ == "__main__":
    program = sys.argv[1]
    if program == "gradients":
        gradients_program()
    elif program == "train":
        train_program(json.loads(sys.argv[2]))
    elif program == "nccl":
        nccl_program()
    elif program == "unguarded":
        unguarded_program()
    else:
        raise SystemExit(f"unknown program {program!r}")
