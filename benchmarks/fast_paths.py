"""What each CPU fast path pays in the whole training step: the step with it and without it.

    python benchmarks/fast_paths.py [--rounds 3] [--iters 3] [--paths a,b] [--json FILE]

For every fast path (nanostyle.ops._impl.FAST_PATHS), runs `benchmarks/train_step.py` with
`--config bench64` and `--config cpu64`, the path on and off, each measurement in a subprocess
of its own, on and off alternating (on first in even rounds, off first in odd ones) so that
drift in the machine's speed falls on both alike. A path is switched off by its documented setting,
NANOSTYLE_FAST_OFF=<path>.

Prints per path the medians and ranges over the rounds of bench64's lazy_iter_s on/off and the
cpu networks' img/s on/off, the time the path saves as a share of the step without it, and the
verdict: keep where it saves at least 5 % (KEEP_GAIN) of either step, else delete. Beside them,
the on/off ratio of the CPU seconds each whole run took (network build, warm-up and every
phase): less sensitive than seconds on the clock to other work on a shared machine, though it
does not see what a path changes in how well the cores are used. And g_forward_s on/off: G's
forward pass without gradients on the whole batch (sampling, metrics), which runs outside the
training step's threaded halves, for what a path does there.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from nanostyle.ops._impl import FAST_PATHS  # noqa: E402

KEEP_GAIN = 0.05
CONFIGS = ("bench64", "cpu64")

# path -> the environment that switches it off
PATHS = {name: {"NANOSTYLE_FAST_OFF": name} for name in FAST_PATHS}

_SETTINGS = ("NANOSTYLE_FAST_OFF", "NANOSTYLE_IMPL")


def environment(path, on):
    """The subprocess environment: this one without any of the switches, plus the path's
    switch when it is to be off."""
    env = {k: v for k, v in os.environ.items() if k not in _SETTINGS}
    if not on:
        env.update(PATHS[path])
    return env


def measure(config, iters, env):
    """One train_step.py run in its own process: its results (lazy_iter_s, img_per_s, ...)."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "step.json")
        command = [sys.executable, os.path.join(ROOT, "benchmarks", "train_step.py"), "--config", config,
                   "--iters", str(iters), "--json", out, "--device", "cpu"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
        with open(out) as handle:
            results = json.load(handle)
        results["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return results


def run(paths, rounds, iters, say=print):
    """{path: {config: [(on results, off results) per round]}}."""
    runs = {path: {config: [] for config in CONFIGS} for path in paths}
    for r in range(rounds):
        for path in paths:
            for config in CONFIGS:
                order = (True, False) if r % 2 == 0 else (False, True)
                pair = {on: measure(config, iters, environment(path, on)) for on in order}
                runs[path][config].append((pair[True], pair[False]))
                say(f"round {r + 1}/{rounds} {path:26} {config:8} lazy_iter_s on {pair[True]['lazy_iter_s']:.3f} "
                    f"off {pair[False]['lazy_iter_s']:.3f}; CPU s on {pair[True]['cpu_s']:.1f} "
                    f"off {pair[False]['cpu_s']:.1f}", flush=True)
    return runs


def summarise(runs):
    """Per path: on/off ratios per round (bench64 lazy_iter_s, cpu64 img/s), their medians,
    the median share of each step the path saves, and the verdict."""
    rows = []
    for path, by_config in runs.items():
        row = dict(path=path)
        gains = []
        for config, key in (("bench64", "lazy_iter_s"), ("cpu64", "img_per_s")):
            ratios = [on[key] / off[key] for on, off in by_config[config]]
            saved = [1 - on["lazy_iter_s"] / off["lazy_iter_s"] for on, off in by_config[config]]
            cpu = [on["cpu_s"] / off["cpu_s"] for on, off in by_config[config] if "cpu_s" in on]
            forward = [on["g_forward_s"] / off["g_forward_s"] for on, off in by_config[config]
                       if "g_forward_s" in on]
            row[config] = dict(key=key, ratios=ratios, median=statistics.median(ratios),
                               saved=saved, median_saved=statistics.median(saved),
                               cpu_ratios=cpu, cpu_median=statistics.median(cpu) if cpu else None,
                               g_forward_ratios=forward,
                               g_forward_median=statistics.median(forward) if forward else None)
            gains.append(row[config]["median_saved"])
        row["verdict"] = "keep" if max(gains) >= KEEP_GAIN else "delete"
        rows.append(row)
    return rows


def format_table(rows):
    lines = ["| path | bench64 lazy_iter_s on/off (range) | cpu64 img/s on/off (range) | step time saved "
             "bench64 / cpu64 | CPU s on/off bench64 / cpu64 | g_forward_s on/off bench64 / cpu64 | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        cells = [f"{row[c]['median']:.3f} ({min(row[c]['ratios']):.3f}-{max(row[c]['ratios']):.3f})"
                 for c in CONFIGS]
        saved = " / ".join(f"{100 * row[c]['median_saved']:+.1f} %" for c in CONFIGS)
        cpu = " / ".join("-" if row[c]["cpu_median"] is None else f"{row[c]['cpu_median']:.3f}" for c in CONFIGS)
        forward = " / ".join("-" if row[c]["g_forward_median"] is None else f"{row[c]['g_forward_median']:.3f}"
                             for c in CONFIGS)
        lines.append(f"| {row['path']} | {cells[0]} | {cells[1]} | {saved} | {cpu} | {forward} | {row['verdict']} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--iters", type=int, default=3, help="train_step.py --iters")
    p.add_argument("--paths", help=f"comma-separated subset of: {', '.join(PATHS)}")
    p.add_argument("--json", help="write every measurement and the table's figures here")
    args = p.parse_args(argv)
    paths = list(PATHS) if not args.paths else [n.strip() for n in args.paths.split(",") if n.strip()]
    unknown = [n for n in paths if n not in PATHS]
    if unknown:
        p.error(f"--paths: unknown {unknown}; known: {', '.join(PATHS)}")
    runs = run(paths, args.rounds, args.iters)
    rows = summarise(runs)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(dict(rounds=args.rounds, iters=args.iters, rows=rows, runs=runs), handle, indent=1)


if __name__ == "__main__":
    main()
