"""Recipe training keeps its prepared images on disk: the cache is memory-mapped, not read."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from tiny_recipes import tiny_recipe

from cp2_engine.recipes import _data, load_bundled_recipe

RECIPE = tiny_recipe()


def _mapped_ranges(path) -> list[tuple[int, int]]:
    ranges = []
    with open("/proc/self/maps") as fh:
        for line in fh:
            if line.rstrip().endswith(str(path)):
                lo, hi = line.split()[0].split("-")
                ranges.append((int(lo, 16), int(hi, 16)))
    return ranges


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_prepared_images_are_memory_mapped_from_the_cache(tmp_path):
    (tmp_path / "tiny.toml").write_text(RECIPE)
    recipe = load_bundled_recipe(tmp_path / "tiny.toml")
    plain = _data.prepare_data(recipe, tmp_path)  # no cache: in RAM
    cache = tmp_path / "data.pt"
    for attempt in ("built", "loaded"):  # the first call builds the cache, the second reads it
        items = _data.prepare_data(recipe, tmp_path, cache=cache)
        ranges = _mapped_ranges(cache.resolve())
        assert ranges, attempt
        for it, ref in zip(items, plain, strict=True):
            assert it.source == ref.source
            for name in ("x", "labels", "flows"):
                arr = getattr(it, name)
                assert arr.dtype == getattr(ref, name).dtype
                assert np.array_equal(arr, getattr(ref, name))
                addr = arr.ctypes.data
                assert any(lo <= addr < hi for lo, hi in ranges), (attempt, name)
