"""Checkpoints: one .npz per snapshot, written atomically, read without pickle.

Layout: every array under its own name: a network's state_dict under "G/", "G_ema/" and "D/"
("G_ema/synthesis.blocks.3.conv1.weight", "G_ema/mapping.w_avg", "D/blocks.0.fromrgb.weight"),
the optimisers' moments under "opt_G/" and "opt_D/" ("opt_D/m.3"); the metadata (config,
network kwargs, counters, RNG states) as JSON text in the uint8 array "__meta__", plus
"__format__" = "nanostyle-checkpoint" and "__version__". `nanostyle.load` builds a network from
one. Writing goes to a temporary file in the same folder, flushed and fsynced, then renamed
over the target: a run killed mid-write leaves the previous checkpoint intact (and its temporary
file, which temporary_files() finds). Loading uses allow_pickle=False, so a file can never run
code.
"""
import fnmatch
import json
import os
import re
import tempfile
import time
import zipfile

import numpy as np

FORMAT_NAME = "nanostyle-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file, the problem and what to do."""


def save_checkpoint(path, arrays, meta):
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):
            raise TypeError(f"save_checkpoint: array {name!r} is a {type(value).__name__}; "
                            "convert it with backend.to_numpy first")
        if name.startswith("__") or name in ("file", "allow_pickle"):
            raise ValueError(f"save_checkpoint: array name {name!r} is reserved (names starting with '__', "
                             "and np.savez's own 'file' and 'allow_pickle')")
    payload = dict(arrays)
    payload["__meta__"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    payload["__format__"] = np.asarray(FORMAT_NAME)
    payload["__version__"] = np.asarray(FORMAT_VERSION)
    write_atomic(path, lambda handle: np.savez(handle, **payload))


def write_atomic(path, write):
    """Call write(handle) on a temporary file beside `path`, fsync it, then rename it over
    `path`: readers see the old file or the new one, never a half-written one. Returns what
    write returned."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        # mkstemp creates the file private (0600); give it the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            result = write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_folder(folder)  # make the rename itself survive a crash
        return result
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fsync_folder(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path):
    """-> (arrays: dict[str, np.ndarray], meta: dict)."""
    return _read(path, with_arrays=True)


def read_meta(path):
    """A checkpoint's metadata alone (its arrays are not read): cheap, to choose among checkpoints.
    Raises CheckpointError as load_checkpoint does, except for damage inside the arrays."""
    return _read(path, with_arrays=False)[1]


_ZIP, _NPY = (b"PK\x03\x04", b"PK\x05\x06"), b"\x93NUMPY"


def _read(path, with_arrays):
    if os.path.isdir(path):
        inside = [name for name in ("latest.npz",) if os.path.isfile(os.path.join(path, name))]
        raise CheckpointError(f"{path!r} is a folder, not a checkpoint file; pass a file such as "
                              f"{os.path.join(path, inside[0] if inside else 'latest.npz')!r}"
                              + ("" if inside else " (this folder holds no latest.npz)"))
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist; pass a ckpt-*.npz or latest.npz "
                              "from a run folder")
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as error:
        raise CheckpointError(f"{path!r} cannot be read ({error.strerror or error}); check that it is a "
                              "file you may read") from None
    if not head.startswith(_ZIP):
        raise CheckpointError(f"{path!r} is not a nanostyle checkpoint: {_what_it_is(head)}; pass a "
                              "ckpt-*.npz or latest.npz written by nanostyle's training")
    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as stored:
            names = list(stored.files)
            if "__format__" not in names or str(_array(stored, "__format__", path)) != FORMAT_NAME:
                raise CheckpointError(f"{path!r} is an .npz file but not a nanostyle checkpoint (foreign "
                                      "file: no '__format__' marker); pass a checkpoint written by "
                                      "nanostyle's training")
            version = int(_array(stored, "__version__", path))
            if version > FORMAT_VERSION or version < 1:
                raise CheckpointError(f"{path!r} has checkpoint format version {version}, this nanostyle "
                                      f"reads version {FORMAT_VERSION} (incompatible); use the nanostyle "
                                      "version that wrote it")
            meta = json.loads(bytes(_array(stored, "__meta__", path)).decode("utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("its metadata is not a JSON object")
            if with_arrays:
                arrays = {name: _array(stored, name, path) for name in names if not name.startswith("__")}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError, TypeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path!r} is truncated or corrupt ({type(error).__name__}: {error}); "
                              "re-copy it, or use an earlier ckpt-*.npz from the same run") from None
    return arrays, meta


def _array(stored, name, path):
    """stored[name], refusing pickled content by name (allow_pickle=False raises ValueError)."""
    try:
        return stored[name]
    except ValueError as error:
        if "pickle" not in str(error) and "Object arrays" not in str(error):
            raise
        raise CheckpointError(f"{path!r} holds pickled Python objects (array {name!r}), which nanostyle never "
                              "loads: unpickling can run any code. nanostyle writes plain arrays only, so this "
                              "file was made or altered elsewhere; use a checkpoint written by its training") from None


def _what_it_is(head):
    """A plain description of a file that is not a zip archive, from its first bytes."""
    if not head:
        return "it is empty (0 bytes: truncated or corrupt)"
    if head.startswith(_NPY):
        return "it is a single NumPy array (.npy), not an .npz archive"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "it is a Python pickle, which nanostyle never loads (unpickling can run any code)"
    return "it is not an .npz archive (truncated or corrupt)"


# write_atomic's temporary names: `<target>.<random>.tmp` (tempfile.mkstemp's prefix and suffix)
_TEMPORARY = re.compile(r"^(?P<target>.+)\.[A-Za-z0-9_]+\.tmp$")


def temporary_files(folder):
    """[(path, target name)] of the temporary files write_atomic makes in `folder`; any that exist
    while nothing writes there were left by a process killed mid-write."""
    found = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        match = _TEMPORARY.match(name)
        if match and os.path.isfile(os.path.join(folder, name)):
            found.append((os.path.join(folder, name), match.group("target")))
    return found


def remove_temporaries(folder, targets, min_age_s=0.0):
    """Remove the temporary files in `folder` whose target matches one of the glob patterns
    `targets` and that nothing has written to for `min_age_s` seconds (a write still going on
    elsewhere grows its file); returns the names removed."""
    removed, now = [], time.time()
    for path, target in temporary_files(folder):
        if any(fnmatch.fnmatchcase(target, pattern) for pattern in targets):
            try:
                if now - os.path.getmtime(path) >= min_age_s:
                    os.remove(path)
                    removed.append(os.path.basename(path))
            except OSError:            # gone meanwhile, or not ours to remove
                pass
    return removed
