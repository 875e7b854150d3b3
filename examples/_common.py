"""Shared by the example CLIs: make `nanostyle` importable from a plain checkout, and turn the
library's input errors into one clear line and exit code 2 instead of a traceback."""
import functools
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:  # imported before NumPy: nanostyle sets OpenBLAS's thread spin (see nanostyle/__init__.py)
    import nanostyle  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, ROOT)
    import nanostyle  # noqa: F401


def friendly_errors(main):
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        from nanostyle.checkpoint import CheckpointError
        from nanostyle.data import DataError
        from nanostyle.train import TrainingDiverged
        try:
            return main(*args, **kwargs)
        except (DataError, CheckpointError, TrainingDiverged, ValueError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted: the last snapshot (latest.npz) is intact; continue with --resume RUN",
                  file=sys.stderr)
            sys.exit(130)
    return wrapper
