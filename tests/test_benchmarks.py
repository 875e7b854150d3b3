"""The benchmark scripts: kernels.py reports every op, forward and backward; reference_torch.py says how to get torch; conv_ceiling.py counts each convolution pass and its GEMM; the shell scripts parse."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS = {"linear", "bias_act", "conv2d", "upfirdn2d", "modulated_conv2d", "noise_injection", "minibatch_std",
       "softplus", "scatter_add", "adam_step"}


def test_kernel_benchmark_quick_json(tmp_path):
    out = tmp_path / "rows.json"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "kernels.py"), "--quick",
                             "--backend", "numpy", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = json.load(open(out))
    assert {r["op"] for r in rows} >= OPS
    for row in rows:
        assert {"op", "pass", "backend", "impl", "shape", "median_ms", "pct_of_peak"} <= set(row)
        assert ("gflops" in row) != ("gbps" in row)
        if not row["op"].startswith("ceiling"):
            assert row["median_ms"] > 0 and row["pct_of_peak"] > 0
    passes = {(r["op"], r["pass"], r["impl"]) for r in rows}
    for impl in ("fast", "ref"):
        for op in OPS - {"adam_step"}:
            assert (op, "forward", impl) in passes and (op, "backward", impl) in passes
        assert ("adam_step", "step", impl) in passes


def test_reference_without_torch_says_how_to_get_it(tmp_path):
    # nanostyle does not depend on PyTorch; the reference timing needs it and must say so plainly
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('no torch here')\n")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "reference_torch.py"), "--iters", "1"],
                            capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert result.returncode == 2
    assert "needs PyTorch" in result.stderr and "pip install torch" in result.stderr


def test_benchmark_shell_scripts_parse():
    """The shell benchmarks need a second checkout, torch, MPI or a GPU to run; here bash only
    parses them, so a broken edit fails in CI rather than on the next machine."""
    for name in ("ab.sh", "vs_reference.sh", "gpu_check.sh", "mpi_gpu_check.sh", "_step.sh",
                 "processes_vs_threads.sh"):
        result = subprocess.run(["bash", "-n", os.path.join(ROOT, "benchmarks", name)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"{name}: {result.stderr}"


def _load_benchmark(name):
    """benchmarks/<name>.py as a module (the folder is not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_conv_ceiling_counts_each_pass_and_its_gemm():
    """conv_ceiling.py's accounting: one key per pass with the pass's multiply count, ceiling GEMMs
    of that very count (when the pass fits in one column block), and conv2d restored afterwards."""
    import numpy as np
    import nanostyle as ns
    cc = _load_benchmark("conv_ceiling")
    conv = cc.conv
    before = dict(conv.IMPLEMENTATIONS)
    rng = np.random.default_rng(3)
    x = ns.Tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32), requires_grad=True)
    w = ns.Tensor(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), requires_grad=True)
    with cc.PassTimer() as timer:
        timer.on = True
        ns.ops.conv2d(x, w, padding=1).sum().backward()
        timer.on = False
        ns.ops.conv2d(x, w, padding=1)                  # not counted
    assert conv.IMPLEMENTATIONS == before
    flops = 2 * 2 * 4 * 8 * 8 * 3 * 9
    assert dict(timer.flops) == {(p, 2, 3, 4, 9, 1, 8, 8): flops for p in ("forward", "input", "weight")}
    assert all(s > 0 for s in timer.seconds.values())
    for key in timer.flops:
        for transposed in (False, True):
            for per_tap, gemms in ((False, 1), (True, 9)):
                a, b = cc.gemm_operands(key, transposed, per_tap)
                assert a.shape[1] == b.shape[0] and gemms * 2 * a.shape[0] * a.shape[1] * b.shape[1] == flops
    if cc.blas.available(np.float32):                  # the ceiling calls OpenBLAS directly
        assert cc.ceiling_gflops(("forward", 2, 3, 4, 9, 1, 8, 8), threads=2, min_seconds=0.001, rounds=1) > 0


def test_data_load_benchmark_builds_loads_and_caches(tmp_path):
    out = tmp_path / "load.json"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "data_load.py"), "--num", "40",
                             "--size", "32", "--res", "16", "--json", str(out)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.load(open(out))
    assert report["first"]["images"] == report["cached"]["images"] == 40
    assert report["cached"]["memmap"] and report["cached"]["batch_shape"] == [32, 1, 16, 16]


def test_fast_paths_switches_every_path_and_judges_by_the_whole_step():
    """fast_paths.py: every named fast path has its switch, the 'on' runs carry none, and the
    verdict keeps a path only where it saves 5 % of a step (figures made up here: the real ones
    take minutes and live in RESULTS.md)."""
    from nanostyle.ops._impl import FAST_PATHS
    fp = _load_benchmark("fast_paths")
    assert set(FAST_PATHS) <= set(fp.PATHS)
    for path in fp.PATHS:
        on, off = fp.environment(path, True), fp.environment(path, False)
        assert not set(fp._SETTINGS) & set(on)
        assert set(off.items()) - set(on.items()) == set(fp.PATHS[path].items())

    def step(seconds):
        return dict(lazy_iter_s=seconds, img_per_s=16 / seconds, cpu_s=10 * seconds, g_forward_s=seconds / 8)
    runs = {"pays": {"bench64": [(step(1.0), step(1.2))] * 3, "cpu64": [(step(1.0), step(1.0))] * 3},
            "does_not": {"bench64": [(step(1.0), step(1.04)), (step(1.0), step(0.9)), (step(1.0), step(1.03))],
                         "cpu64": [(step(0.5), step(0.51))] * 3}}
    rows = {row["path"]: row for row in fp.summarise(runs)}
    assert rows["pays"]["verdict"] == "keep" and rows["does_not"]["verdict"] == "delete"
    assert abs(rows["pays"]["bench64"]["median"] - 1 / 1.2) < 1e-12
    assert abs(rows["does_not"]["cpu64"]["median"] - 0.51 / 0.5) < 1e-12      # img/s on/off
    assert abs(rows["pays"]["bench64"]["cpu_median"] - 1 / 1.2) < 1e-12
    assert abs(rows["pays"]["bench64"]["g_forward_median"] - 1 / 1.2) < 1e-12
    assert "| pays |" in fp.format_table(list(rows.values()))
