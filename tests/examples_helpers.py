"""Import the example CLIs' helpers (examples/ is not a package)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
from sample import load_generator  # noqa: E402,F401
