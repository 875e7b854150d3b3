"""Checkpoints: round trip, atomic writes, bad files."""
import os

import numpy as np
import pytest

from nanostyle.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_checkpoint_round_trip_and_bad_files(tmp_path, monkeypatch):
    path = str(tmp_path / "c.npz")
    arrays = {"G/w": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32), "n": np.arange(5)}
    meta = {"config": {"res": 64}, "rng": {"state": 2 ** 100}}
    save_checkpoint(path, arrays, meta)
    loaded, loaded_meta = load_checkpoint(path)
    assert loaded_meta == meta and all(np.array_equal(loaded[k], arrays[k]) for k in arrays)

    def broken_savez(handle, **kw):
        handle.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError):
        save_checkpoint(path, {"x": np.zeros(2)}, {})
    monkeypatch.undo()
    assert load_checkpoint(path)[1] == meta and os.listdir(tmp_path) == ["c.npz"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600

    truncated = tmp_path / "t.npz"
    truncated.write_bytes(open(path, "rb").read()[:200])
    foreign = tmp_path / "f.npz"
    np.savez(foreign, a=np.zeros(3))
    garbage = tmp_path / "g.npz"
    garbage.write_bytes(b"hello world")
    newer = tmp_path / "v.npz"
    np.savez(newer, __format__=np.asarray("nanostyle-checkpoint"), __version__=np.asarray(99),
             __meta__=np.frombuffer(b"{}", np.uint8))
    for bad, match in ((truncated, "truncated or corrupt"), (foreign, "foreign"), (garbage, "truncated or corrupt"),
                       (newer, "incompatible"), (tmp_path / "missing.npz", "does not exist")):
        with pytest.raises(CheckpointError, match=match) as info:
            load_checkpoint(str(bad))
        assert os.path.basename(str(bad)) in str(info.value)
    with pytest.raises(TypeError):
        save_checkpoint(path, {"x": [1, 2]}, {})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(path, {"file": np.zeros(1)}, {})
