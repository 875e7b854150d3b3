"""The README cannot rot: its Python example runs against a checkpoint trained here, and every
example command line it shows parses with that script's own options."""
import importlib
import os
import re
import shlex
import sys

import pytest

import nanostyle as ns

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()
sys.path.insert(0, os.path.join(ROOT, "examples"))


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_the_python_example_runs(tmp_path, monkeypatch):
    (code,) = _blocks("python")
    assert len(code.strip().splitlines()) <= 12 and "runs/RUN/latest.npz" in code
    run = ns.train(ns.TrainConfig(res=16, cfg="tiny", kimg=0.008, out=str(tmp_path / "run"), device="cpu"),
                   log_to_stdout=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NANOSTYLE_DEVICE", "cpu")
    code = code.replace("runs/RUN/latest.npz", os.path.join(run, "latest.npz"))
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert (tmp_path / "grid.png").exists()
    assert scope["images"].shape == (8, 1, 16, 16) and scope["result"].psnr > 0


def _command_lines():
    for block in _blocks(""):
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("python examples/"):
                yield line


@pytest.mark.parametrize("line", list(_command_lines()))
def test_every_example_command_parses(line):
    words = shlex.split(line)
    script = os.path.splitext(os.path.basename(words[1]))[0]
    module = importlib.import_module(script)
    module._parser().parse_args(words[2:])
