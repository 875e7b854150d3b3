"""Shared by the example CLIs: import the `nanostyle` of the checkout they sit in, and turn the
library's input errors into one clear line and exit code 2 instead of a traceback."""
import functools
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# In a checkout, its own library comes first: otherwise an installed nanostyle (a release, or
# `pip install -e` of another checkout or worktree) would run in its place, silently. Copied
# elsewhere, the examples use the installed one.
if os.path.isfile(os.path.join(ROOT, "nanostyle", "__init__.py")):
    sys.path.insert(0, ROOT)
import nanostyle  # noqa: E402,F401  (before NumPy: under mpiexec it shares the cores, see nanostyle/__init__.py)


def add_model_options(parser, ckpt_help="checkpoint: a run's latest.npz or ckpt-<kimg>.npz, or the run folder "
                                        "(required)"):
    """--ckpt and --device, as every script that reads a trained model takes them."""
    parser.add_argument("--ckpt", required=True, metavar="FILE", help=ckpt_help)
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when a GPU answers, else cpu")


def load_model(args):
    """The G_ema of --ckpt on --device (nanostyle.load)."""
    return nanostyle.load(args.ckpt, device=args.device)


def friendly_errors(main):
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        from nanostyle.backend import DeviceUnavailable
        from nanostyle.checkpoint import CheckpointError
        from nanostyle.data import DataError
        from nanostyle.train import TrainingDiverged, TrainingStopped
        try:
            return main(*args, **kwargs)
        except (DataError, CheckpointError, DeviceUnavailable, TrainingDiverged, ValueError,
                FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except TrainingStopped as stopped:      # SIGINT or SIGTERM; the message names the run's path
            print(stopped, file=sys.stderr)
            sys.exit(stopped.exit_code)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
    return wrapper
