"""Checkpoints: round trip, atomic writes, and files that are not what they claim: each is refused
without unpickling, with a message that names what it is; write_atomic's temporaries are found by
name."""
import json
import os
import pickle

import numpy as np
import pytest

from nanostyle.checkpoint import (CheckpointError, FORMAT_NAME, load_checkpoint, read_meta, save_checkpoint,
                                  temporary_files, write_atomic)


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



def _marked(path, **arrays):
    """An .npz that carries nanostyle's markers and metadata, with `arrays` beside them."""
    np.savez(path, __format__=np.asarray(FORMAT_NAME), __version__=np.asarray(1),
             __meta__=np.frombuffer(json.dumps({"cur_nimg": 4}).encode(), np.uint8), **arrays)
    return str(path)


class _Exploit:
    def __reduce__(self):                  # would run code if it were ever unpickled
        return (os.system, ("touch PWNED",))


def test_each_bad_file_is_named_for_what_it_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = str(tmp_path / "good.npz")
    save_checkpoint(good, {"x": np.zeros(3, np.float32)}, {"cur_nimg": 8})
    (tmp_path / "run").mkdir()
    save_checkpoint(str(tmp_path / "run" / "latest.npz"), {"x": np.zeros(1)}, {})
    (tmp_path / "empty_run").mkdir()
    pickled_array = _marked(tmp_path / "pickled_array.npz", x=np.array([_Exploit()], dtype=object))
    pickled_meta = str(tmp_path / "pickled_meta.npz")
    np.savez(pickled_meta, __format__=np.asarray(FORMAT_NAME), __version__=np.asarray(1),
             __meta__=np.array([_Exploit()], dtype=object))
    (tmp_path / "whole.pkl").write_bytes(pickle.dumps({"G": _Exploit()}))
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "text.npz").write_bytes(b"hello world")
    (tmp_path / "truncated.npz").write_bytes(open(good, "rb").read()[:300])
    not_object = str(tmp_path / "list_meta.npz")
    np.savez(not_object, __format__=np.asarray(FORMAT_NAME), __version__=np.asarray(1),
             __meta__=np.frombuffer(b"[1, 2]", np.uint8))
    cases = [
        (pickled_array, "holds pickled Python objects \\(array 'x'\\), which nanostyle never loads"),
        (pickled_meta, "holds pickled Python objects \\(array '__meta__'\\)"),
        (str(tmp_path / "whole.pkl"), "is a Python pickle, which nanostyle never loads"),
        (str(tmp_path / "single.npy"), "single NumPy array \\(.npy\\)"),
        (str(tmp_path / "run"), "is a folder, not a checkpoint file; pass a file such as '.*latest.npz'$"),
        (str(tmp_path / "empty_run"), "is a folder, .*\\(this folder holds no latest.npz\\)"),
        (str(tmp_path / "empty.npz"), "is empty \\(0 bytes"),
        (str(tmp_path / "text.npz"), "not an .npz archive \\(truncated or corrupt\\)"),
        (str(tmp_path / "truncated.npz"), "truncated or corrupt"),
        (not_object, "truncated or corrupt .*not a JSON object"),
    ]
    for path, message in cases:
        with pytest.raises(CheckpointError, match=message) as info:
            load_checkpoint(path)
        assert os.path.basename(path) in str(info.value)
        assert "pickle" in message or "pickle" not in str(info.value)    # pickles named as such, only they
    assert not os.path.exists("PWNED")
    assert read_meta(good) == {"cur_nimg": 8} and read_meta(pickled_array) == {"cur_nimg": 4}


def test_temporary_files_are_write_atomic_s_own(tmp_path):
    def killed(handle):
        handle.write(b"half")
        raise KeyboardInterrupt           # the write is interrupted: its temporary is removed
    with pytest.raises(KeyboardInterrupt):
        write_atomic(str(tmp_path / "latest.npz"), killed)
    assert os.listdir(tmp_path) == []
    # what a process killed by SIGKILL mid-write leaves (nothing could remove it) is found by name
    for name in ("latest.npz.k2a_9xq1.tmp", "fakes-0000.016.png.abcdefgh.tmp", "notes.tmp", "latest.npz"):
        (tmp_path / name).write_bytes(b"x")
    assert temporary_files(str(tmp_path)) == [
        (str(tmp_path / "fakes-0000.016.png.abcdefgh.tmp"), "fakes-0000.016.png"),
        (str(tmp_path / "latest.npz.k2a_9xq1.tmp"), "latest.npz")]
