"""Root pytest configuration: applies to the tests and to the doctests under src/.

The suite runs the network on the exact path (torch, float32) unless a test asks for another
backend or precision, so results do not depend on the CPU's bfloat16 support or on OpenVINO
being installed; tests of the default (fast) path set them explicitly. Runtime caches go to a
temporary folder, never to the user's ``~/.cache``.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("CP2_BACKEND", "torch")
os.environ.setdefault("CP2_PRECISION", "fp32")
if "CP2_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="cp2-test-cache-")
    os.environ["CP2_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
