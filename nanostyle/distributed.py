"""Several processes: the communicator of data-parallel training (docs/design.md, section
"Several processes").

`mpiexec -n N python examples/train_oasis.py ...` starts N ranks. Each computes its share of
every global batch, and the gradients are summed across the ranks once per phase
(train.phase_step), so every rank takes the same optimiser step:

  g = sum over ranks r of g_r,    a ring all-reduce costing 2 (N - 1) / N * bytes / bandwidth

Backends (the precedent is ChainerMN's):
  none  one process; every call below is a no-op
  mpi   mpi4py: NumPy buffers directly; CuPy buffers staged through the host unless the MPI
        library says it is CUDA-aware (MPIX_Query_cuda_support, or NANOSTYLE_MPI_CUDA_AWARE=1)
  nccl  NCCL through CuPy for GPU buffers (its unique id sent over MPI), one GPU per rank chosen
        by the rank's index on its machine; MPI for host buffers, start-up and abort
`init()` picks none for one process; under mpiexec with N > 1, nccl when every rank has a GPU
of its own (and CuPy has NCCL), else mpi; `--dist none|mpi|nccl` overrides.

A wrong launch ends with one line on one rank, before any work (LaunchError). A failure of one
rank while training ends every rank: `fail_together` prints "rank R: <error>" and calls MPI's
abort, which mpiexec turns into the end of every process.
"""
import contextlib
import ctypes
import json
import os
import socket
import sys
import time
import traceback

import numpy as np

from . import backend

DISTS = ("none", "mpi", "nccl")
INSTALL = 'pip install "nanostyle[mpi]"'
ABORT_GRACE_S = 1.0     # how long an aborting rank waits for its last words to reach mpiexec
AGREE_S = 10.0          # how long a failing rank waits to learn whether every rank failed with it


class LaunchError(ValueError):
    """The processes were launched in a way training cannot use; the message says how to launch."""


def launched_size():
    """How many processes the launcher (mpiexec of MPICH or Open MPI, MVAPICH) says it started; 1
    when none did. Read from the environment, so that one process needs no MPI."""
    for key in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 1


def launched_rank():
    for key in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


class Single:
    """One process: rank 0 of 1, and every collective call returns its input."""

    name = "none"
    rank, size, local_rank, local_size = 0, 1, 0, 1

    def allreduce_sum(self, buffer):
        """Sum `buffer` (one contiguous NumPy or CuPy array) over the ranks, in place; returns it."""
        return buffer

    def broadcast(self, buffer, root=0):
        """Overwrite `buffer` on every rank with root's, in place; returns it."""
        return buffer

    def barrier(self):
        pass

    def abort(self, code=1):
        """End every process of the run now, with exit status `code`."""
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def describe(self):
        return "one process"

    # built on the calls above, so every backend has them
    def allgather(self, array):
        """[size, *array.shape]: every rank's `array` (the same shape and dtype on all ranks), by
        one sum all-reduce of a zero-filled buffer in which each rank writes its own row; adding
        zeros is exact, so the rows come back bit for bit."""
        out = backend.get_array_module(array).zeros((self.size,) + array.shape, dtype=array.dtype)
        out[self.rank] = array
        return self.allreduce_sum(out)

    def allgather_json(self, value):
        """[every rank's `value`] for JSON values (no pickle)."""
        data = np.frombuffer(json.dumps(value).encode("utf-8"), dtype=np.uint8)
        lengths = self.allgather(np.array(len(data), dtype=np.int64))
        padded = np.zeros(int(lengths.max()), dtype=np.uint8)
        padded[:len(data)] = data
        rows = self.allgather(padded)
        return [json.loads(bytes(row[:n]).decode("utf-8")) for row, n in zip(rows, lengths)]

    def broadcast_json(self, value, root=0):
        """Root's `value` (JSON) on every rank."""
        data = np.frombuffer(json.dumps(value).encode("utf-8"), dtype=np.uint8)
        length = self.broadcast(np.array([len(data)], dtype=np.int64), root)
        buffer = np.zeros(int(length[0]), dtype=np.uint8)
        if self.rank == root:
            buffer[:] = data
        return json.loads(bytes(self.broadcast(buffer, root)).decode("utf-8"))

    @contextlib.contextmanager
    def fail_together(self):
        """Run the block; when it raises on some rank, end them all. When every rank raises
        within AGREE_S seconds (a bad option, a diverged loss: the ranks fail in step), rank 0
        alone lets its error through and the others leave silently with the same status; a rank
        that fails alone prints "rank R: <error>" and aborts the run."""
        try:
            yield
        except BaseException as error:
            if self.size == 1 or (isinstance(error, SystemExit) and not error.code):
                raise
            if self._all_failed(AGREE_S):
                if self.rank != 0:
                    sys.stdout = sys.stderr = open(os.devnull, "w")
                raise
            if not isinstance(error, KeyboardInterrupt):
                traceback.print_exc()
            what = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            print(f"rank {self.rank}: {what}; ending all {self.size} processes", file=sys.stderr, flush=True)
            self.abort(1)

    def _all_failed(self, timeout):
        return True


class MpiCommunicator(Single):
    """The MPI backend (mpi4py), over MPI_COMM_WORLD."""

    name = "mpi"

    def __init__(self, MPI):
        self.MPI, self.world = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.world.Get_rank(), self.world.Get_size()
        local = self.world.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        self.failures = self.world.Dup()     # fail_together's own: never mixed with training's calls
        self.cuda_aware = _mpi_is_cuda_aware()

    def allreduce_sum(self, buffer):
        if backend.is_cuda_array(buffer) and not self.cuda_aware:
            host = backend.to_numpy(buffer)
            self.world.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
            buffer.set(host)
            return buffer
        _synchronize(buffer)
        self.world.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)
        return buffer

    def broadcast(self, buffer, root=0):
        if backend.is_cuda_array(buffer) and not self.cuda_aware:
            host = backend.to_numpy(buffer)
            self.world.Bcast(host, root=root)
            buffer.set(host)
            return buffer
        _synchronize(buffer)
        self.world.Bcast(buffer, root=root)
        return buffer

    def barrier(self):
        """MPI_Ibarrier, polled with short sleeps: a rank waiting here (for rank 0's snapshot)
        leaves its core to the others instead of spinning in MPI's progress loop."""
        _wait(self.world.Ibarrier(), None)

    def abort(self, code=1):
        sys.stdout.flush()
        sys.stderr.flush()
        # mpiexec forwards each rank's output through a pipe of its own, and tears every rank down
        # on MPI_Abort: give it a moment to pass on the message just written
        time.sleep(ABORT_GRACE_S)
        self.world.Abort(code)

    def describe(self):
        gpu = ", CuPy buffers " + ("directly (CUDA-aware MPI)" if self.cuda_aware else "through the host")
        return f"{self.size} processes over MPI" + (gpu if backend.gpu_available() else "")

    def _all_failed(self, timeout):
        return _wait(self.failures.Ibarrier(), timeout)


class NcclCommunicator(MpiCommunicator):
    """MPI as above for host buffers, NCCL (cupy.cuda.nccl) between the GPUs for CuPy buffers."""

    name = "nccl"

    def __init__(self, mpi):
        """Built on the MPI communicator `mpi` (init's)."""
        self.__dict__.update(mpi.__dict__)
        import cupy
        from cupy.cuda import nccl
        self.cupy, self.nccl = cupy, nccl
        cupy.cuda.Device(self.local_rank).use()
        uid = self.world.bcast(nccl.get_unique_id() if self.rank == 0 else None, root=0)
        self.gpus = nccl.NcclCommunicator(self.size, uid, self.rank)
        self.types = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}

    def _nccl_type(self, buffer):
        if buffer.dtype not in self.types or not buffer.flags.c_contiguous:
            raise ValueError(f"NCCL: buffers must be contiguous float32 or float64, got {buffer.dtype}")
        return self.types[buffer.dtype]

    def allreduce_sum(self, buffer):
        if not backend.is_cuda_array(buffer):
            return super().allreduce_sum(buffer)
        stream = self.cupy.cuda.get_current_stream().ptr
        self.gpus.allReduce(buffer.data.ptr, buffer.data.ptr, buffer.size, self._nccl_type(buffer),
                            self.nccl.NCCL_SUM, stream)
        return buffer

    def broadcast(self, buffer, root=0):
        if not backend.is_cuda_array(buffer):
            return super().broadcast(buffer, root)
        stream = self.cupy.cuda.get_current_stream().ptr
        self.gpus.bcast(buffer.data.ptr, buffer.size, self._nccl_type(buffer), root, stream)
        return buffer

    def describe(self):
        return f"{self.size} processes, NCCL between their GPUs"


def _synchronize(buffer):
    """MPI reads device memory outside CuPy's stream: let the stream's work finish first."""
    if backend.is_cuda_array(buffer):
        backend.cupy.cuda.get_current_stream().synchronize()


def _wait(request, timeout):
    """Poll an MPI request until it completes (True) or `timeout` seconds pass (False)."""
    end = None if timeout is None else time.monotonic() + timeout
    delay = 1e-4
    while not request.Test():
        if end is not None and time.monotonic() > end:
            return False
        time.sleep(delay)
        delay = min(2 * delay, 0.01)
    return True


def _mpi_is_cuda_aware():
    """MPICH's and Open MPI's MPIX_Query_cuda_support(), asked of the libmpi this process
    loaded; NANOSTYLE_MPI_CUDA_AWARE=1 or 0 decides instead."""
    forced = os.environ.get("NANOSTYLE_MPI_CUDA_AWARE", "").strip()
    if forced:
        return forced not in ("0", "no", "false")
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "libmpi" in line.rsplit("/", 1)[-1]})
    except OSError:
        return False
    for path in paths:
        try:
            query = getattr(ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY), "MPIX_Query_cuda_support", None)
        except OSError:
            continue
        if query is not None:
            query.restype = ctypes.c_int
            return bool(query())
    return False


def _gpus_here(device):
    """How many GPUs this process could use for `device` (None: the default device)."""
    wanted = device or os.environ.get("NANOSTYLE_DEVICE", "").strip().lower() or None
    if wanted == "cpu" or not backend.gpu_available():
        return 0
    return backend.cupy.cuda.runtime.getDeviceCount()


def _nccl_missing():
    """Why NCCL cannot be used through CuPy here, or '' when it can."""
    if not backend.cupy_available():
        return backend.gpu_unavailable_reason()
    try:
        from cupy.cuda import nccl
    except Exception as error:
        return f"CuPy's NCCL module does not import ({error})"
    if not getattr(nccl, "available", True) or not hasattr(nccl, "NcclCommunicator"):
        return "CuPy finds no NCCL library (pip install nvidia-nccl-cu13, or nvidia-nccl-cu12 with cupy-cuda12x)"
    return ""


def init(dist=None, device=None):
    """The communicator for this process: `dist` none | mpi | nccl, or None (auto: none for one
    process, nccl under mpiexec when every rank has a GPU of its own and NCCL is there, else mpi).
    `device` is the training's (cpu | cuda | None). Selects each rank's GPU. Raises LaunchError
    on one rank (SystemExit(2), silently, on the others) when the launch cannot work."""
    if dist not in (None, "auto") + DISTS:
        raise LaunchError(f"--dist {dist!r}: use one of {', '.join(DISTS)}")
    size = launched_size()
    if dist == "none" or (dist in (None, "auto") and size <= 1):
        if size > 1:
            _fail_alone(f"--dist none: mpiexec started {size} processes, which would each train alone into "
                        "the same run folder; launch one process without mpiexec, or drop --dist none")
        return Single()
    try:
        from mpi4py import MPI
    except ImportError:
        _fail_alone(f"{'--dist ' + dist if dist in DISTS else 'mpiexec'} needs mpi4py, which is not installed: "
                    f"{INSTALL}")
    probe = MpiCommunicator(MPI)
    gpus = _gpus_here(device)
    missing = _nccl_missing() if gpus else backend.gpu_unavailable_reason() or "--device cpu asks for none"
    ready = probe.allgather(np.array(gpus >= probe.local_size and not missing, dtype=np.int64))
    if dist in (None, "auto"):
        dist = "nccl" if ready.all() else "mpi"
    problem = None
    if dist == "nccl" and not ready[probe.rank]:
        if gpus >= probe.local_size:          # GPUs enough, NCCL missing
            problem = f"--dist nccl: {missing}; install it, or use --dist mpi"
        else:
            local = f"{probe.local_size} process" + ("es" if probe.local_size > 1 else "")
            problem = (f"--dist nccl needs one GPU per process: rank {probe.rank} sees {gpus} GPU(s) for the "
                       f"{local} on its machine" + (f" ({missing})" if not gpus else "")
                       + "; start at most as many processes per machine as it has GPUs, or use --dist mpi")
    _agree(probe, problem)
    if probe.size > 1:
        _abort_when_uncaught(probe)
    if dist == "nccl":
        return NcclCommunicator(probe)
    if gpus:                         # several ranks may share a GPU through the mpi backend
        backend.cupy.cuda.Device(probe.local_rank % gpus).use()
    return probe


def _abort_when_uncaught(comm):
    """An exception that nothing catches ends every rank (as `python -m mpi4py` does), where
    fail_together is not around: without it, the others would wait for this rank for ever."""
    previous = sys.excepthook

    def hook(kind, value, trace):
        previous(kind, value, trace)
        print(f"rank {comm.rank}: uncaught {kind.__name__}; ending all {comm.size} processes", file=sys.stderr)
        comm.abort(1)
    sys.excepthook = hook


def _fail_alone(message):
    """A launch error found before MPI is up: the launcher's rank 0 says it, the others leave."""
    if launched_rank() == 0:
        raise LaunchError(message)
    raise SystemExit(2)


def _agree(comm, problem):
    """Every rank learns whether any rank found `problem`; the first such message is raised on
    rank 0 (prefixed with the rank it came from), and the others leave with status 2."""
    problems = comm.allgather_json(problem)
    found = [(rank, p) for rank, p in enumerate(problems) if p]
    if not found:
        return
    if comm.rank != 0:
        raise SystemExit(2)
    rank, message = found[0]
    raise LaunchError(message if all(p == message for p in problems) else f"rank {rank}: {message}")


def processes(comm):
    """'rank 0 pid 123 on node1, rank 1 pid 124 on node1': what the launcher's messages about a
    process (its pid and host) mean in ranks."""
    where = comm.allgather_json([os.getpid(), socket.gethostname()])
    return ", ".join(f"rank {rank} pid {pid} on {host}" for rank, (pid, host) in enumerate(where))
