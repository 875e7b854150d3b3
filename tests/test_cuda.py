"""nanostyle/cuda.py: every CUDA kernel, every float/double instantiation, compiled by NVRTC for
sm_80 and sm_90, each family's kernels and launchers named after their op family, and the
device choice's error without a GPU. Runs on machines without a GPU (CI): a kernel that does
not compile fails here."""
import re

import pytest

from nanostyle import backend

nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc",
                            reason="CuPy/NVRTC not importable; install the dev extra: pip install -e '.[dev]'")

from nanostyle import cuda  # noqa: E402


@pytest.fixture(scope="module")
def compiled():
    cache = {}

    def get(family, arch):
        if (family, arch) not in cache:
            cache[(family, arch)] = cuda.compile_with_nvrtc(family, arch)
        return cache[(family, arch)]
    return get


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("family", sorted(cuda.KERNELS))
def test_family_compiles_with_every_instantiation(compiled, family, arch):
    ptx, lowered = compiled(family, arch)
    text = ptx.decode() if isinstance(ptx, bytes) else ptx
    target = arch.replace("sm_", "sm_")
    assert re.search(rf"\.target\s+{target}", text), f"PTX not for {arch}"
    assert sorted(lowered) == sorted(cuda.name_expressions(family))
    for expression, symbol in lowered.items():
        assert re.search(rf"\.entry\s+{re.escape(symbol)}\s*\(", text), f"{expression} missing from the PTX"


def test_every_kernel_file_is_registered_under_its_op_family():
    """kernels/<family>.cu for each family of cuda.KERNELS, and its launchers in ops/<family>.py."""
    import os
    files = {f[:-3] for f in os.listdir(cuda.KERNEL_DIR) if f.endswith(".cu")}
    assert files == set(cuda.KERNELS)
    ops_dir = os.path.join(os.path.dirname(cuda.KERNEL_DIR), "ops")
    for family in cuda.KERNELS:
        with open(os.path.join(ops_dir, f"{family}.py")) as handle:
            assert f'cuda.launch("{family}"' in handle.read(), f"ops/{family}.py launches no {family} kernel"


def test_forcing_cuda_without_a_gpu_names_the_reason(monkeypatch):
    if backend.gpu_available():
        pytest.skip("a GPU answers here")
    monkeypatch.setenv("NANOSTYLE_DEVICE", "cuda")
    with pytest.raises(backend.DeviceUnavailable, match="NANOSTYLE_DEVICE=cuda but .*(no CUDA device|not importable)"):
        backend.default_device()
    monkeypatch.setenv("NANOSTYLE_DEVICE", "cpu")
    assert backend.default_device() == "cpu"
