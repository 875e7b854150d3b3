import os
import sys

# Tests import `helpers` from this folder and the package from the checkout.
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))

import pytest  # noqa: E402

import nanostyle as ns  # noqa: E402


@pytest.fixture(params=["ref", "fast"])
def impl(request):
    """Run a test on an op's reference and on its fast CPU path (conv2d's window GEMMs where they
    apply; upfirdn2d's banded passes, which the tests' small images take)."""
    with ns.ops.use_impl(request.param):
        yield request.param
