"""Root pytest configuration: applies to the tests and to the doctests under src/.

The suite runs the network on the exact path (torch, float32) unless a test asks for another
backend or precision, so results do not depend on the CPU's bfloat16 support or on OpenVINO
being installed; tests of the default (fast) path set them explicitly. Runtime caches go to a
temporary folder, never to the user's ``~/.cache``.

Docstring examples make their folders with ``tempfile.mkdtemp()`` (what a reader would type);
under pytest each doctest gets its own temporary root (``tempfile.tempdir``) that is deleted
after it, so the doctests leave nothing behind.
"""

import atexit
import os
import shutil
import tempfile

import pytest
from _pytest.doctest import DoctestItem

os.environ.setdefault("CP2_BACKEND", "torch")
os.environ.setdefault("CP2_PRECISION", "fp32")
if "CP2_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="cp2-test-cache-")
    os.environ["CP2_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)


@pytest.fixture(autouse=True)
def _doctest_temp_root(request):
    """Give each doctest a private temporary root and delete it afterwards."""
    if not isinstance(request.node, DoctestItem):
        yield
        return
    saved = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="cp2-doctest-") as root:
        tempfile.tempdir = root
        try:
            yield
        finally:
            tempfile.tempdir = saved
