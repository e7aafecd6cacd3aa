"""Large images on zarr + dask.distributed: no seams, unique ids, resume, retries, bad input."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from cp2_engine.inference import ClassicSegmenter
from cp2_engine.large import BlockGrid, segment_large
from cp2_engine.large._blocks import owned_cells
from cp2_engine.synthetic import touching_cells

DIAM = 20
SEGMENTER = ClassicSegmenter(threshold=0.25)


@pytest.fixture(scope="module")
def big_sample():
    return touching_cells((4096, 4096), diameter=DIAM, seed=11, irregularity=0.1)


@pytest.fixture(scope="module")
def single_pass(big_sample):
    return SEGMENTER.segment(big_sample.image, diameter=DIAM).masks


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    from cp2_engine.large import local_cluster

    cluster = local_cluster(n_workers=2)
    with Client(cluster) as c:
        yield c
    cluster.close()


def _ap50(true, pred):
    from cp2_engine.metrics import average_precision

    return float(average_precision(true, pred, thresholds=(0.5,)).ap[0, 0])


def _majority_sides(truth, labels, axis, b, cell):
    """Most common label of ``cell``'s pixels in the 3 rows/columns before and after ``b``."""
    sides = []
    for idx in (np.arange(b - 3, b), np.arange(b, b + 3)):
        lab, tru = np.take(labels, idx, axis=axis), np.take(truth, idx, axis=axis)
        sides.append(np.bincount(lab[tru == cell]).argmax())
    return sides


def _assert_no_cell_split(truth, labels, single, grid):
    """A true cell that crosses a block border has one label on both sides, unless the
    single-pass segmentation splits it there too (then the split is the model's, not a seam)."""
    for axis in (0, 1):
        for k in range(1, grid.n_blocks[axis]):
            b = k * grid.blocksize
            before = np.take(truth, b - 1, axis=axis)
            after = np.take(truth, b, axis=axis)
            crossing = np.intersect1d(before[before > 0], after[after > 0])
            for cell in crossing:
                left_major, right_major = _majority_sides(truth, labels, axis, b, cell)
                if left_major == 0 and right_major == 0:
                    continue  # not detected at all: a miss, not a split
                ref_left, ref_right = _majority_sides(truth, single, axis, b, cell)
                if ref_left != ref_right:
                    continue  # the model itself splits this cell here
                assert left_major == right_major, f"cell {cell} split at {axis=} {b=}"


@pytest.mark.slow
def test_blockwise_matches_single_pass_without_seams(big_sample, single_pass, client, tmp_path):
    zpath = tmp_path / "image.zarr"
    zarr.create_array(str(zpath), data=big_sample.image, chunks=(700, 700))  # not a multiple
    out = tmp_path / "labels.zarr"
    res = segment_large(
        str(zpath), model=SEGMENTER, diameter=DIAM, out=out, blocksize=1024, cluster=client
    )
    labels = zarr.open_array(str(out), mode="r")
    assert labels.chunks == (1024, 1024)
    labels = labels[:]
    assert res.n_blocks == 16 and res.n_cells == labels.max()
    ids = np.unique(labels)
    np.testing.assert_array_equal(ids, np.arange(labels.max() + 1))  # unique, consecutive
    assert _ap50(single_pass, labels) >= 0.99
    grid = BlockGrid(labels.shape, 1024, 2 * DIAM)
    _assert_no_cell_split(big_sample.labels, labels, single_pass, grid)
    assert not Path(str(out) + ".cp2parts").exists()


def test_in_memory_array_on_a_new_local_cluster(tmp_path):
    sample = touching_cells((512, 512), diameter=DIAM, seed=2, irregularity=0.1)
    out = tmp_path / "labels.zarr"
    res = segment_large(sample.image, model=SEGMENTER, diameter=DIAM, out=out, blocksize=200)
    labels = zarr.open_array(str(out), mode="r")[:]
    single = SEGMENTER.segment(sample.image, diameter=DIAM).masks
    assert res.n_blocks == 9
    assert _ap50(single, labels) >= 0.99


class _DieOnceSegmenter:
    """Kills the worker process that runs the first block (once per run), then behaves."""

    def __init__(self, flag_dir):
        self.flag = Path(flag_dir) / "killed_once"

    def segment(self, image, **kwargs):
        if not self.flag.exists():
            self.flag.write_text("x")
            os._exit(1)
        return SEGMENTER.segment(image, **kwargs)


def test_killed_worker_is_retried_and_result_unchanged(client, tmp_path):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    sample = touching_cells((384, 384), diameter=DIAM, seed=4, irregularity=0.1)
    ref = tmp_path / "ref.zarr"
    segment_large(
        sample.image, model=SEGMENTER, diameter=DIAM, out=ref, blocksize=192, cluster=client
    )
    out = tmp_path / "labels.zarr"
    dying = _DieOnceSegmenter(tmp_path)
    segment_large(sample.image, model=dying, diameter=DIAM, out=out, blocksize=192, cluster=client)
    assert (tmp_path / "killed_once").exists()  # a worker really died mid-run
    np.testing.assert_array_equal(zarr.open_array(str(ref))[:], zarr.open_array(str(out))[:])


def test_rerun_after_crash_skips_finished_blocks(tmp_path, client):
    from cp2_engine.large import iter_segment_large

    sample = touching_cells((400, 400), diameter=DIAM, seed=5, irregularity=0.1)
    out = tmp_path / "labels.zarr"
    kwargs = {"model": SEGMENTER, "diameter": DIAM, "out": out, "blocksize": 200}
    kwargs["cluster"] = client
    gen = iter_segment_large(sample.image, **kwargs)
    first = next(gen)  # one block finished, then the run "crashes"
    gen.close()
    assert Path(str(out) + ".cp2parts").exists()
    events = list(iter_segment_large(sample.image, **kwargs))
    skipped = [e for e in events if getattr(e, "skipped", False)]
    assert first.index in [e.index for e in skipped]  # others may have finished before close
    single = SEGMENTER.segment(sample.image, diameter=DIAM).masks
    assert _ap50(single, zarr.open_array(str(out))[:]) >= 0.99


class _ConfigSegmenter:
    """Finds no cells when the config passed to it asks for huge cells (min_size)."""

    def segment(self, image, *, diameter, channels, config=None):
        seg = SEGMENTER.segment(image, diameter=diameter, channels=channels)
        if config is not None and config.min_size > 10**6:
            seg.masks[:] = 0
        return seg


def test_config_reaches_the_segmenter_and_other_settings_start_over(tmp_path, client):
    # segment_large took a free-form segment_kwargs dict; settings are now a SegmentConfig,
    # part of the resume fingerprint, and passed to a custom segmenter only when given
    import cloudpickle

    from cp2_engine.inference import SegmentConfig
    from cp2_engine.large import iter_segment_large

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    sample = touching_cells((400, 400), diameter=DIAM, seed=5, irregularity=0.1)
    out = tmp_path / "labels.zarr"
    kwargs = {"model": _ConfigSegmenter(), "diameter": DIAM, "out": out, "blocksize": 200}
    kwargs["cluster"] = client
    gen = iter_segment_large(sample.image, **kwargs)
    next(gen)  # one block finished, then the run "crashes"
    gen.close()
    huge = SegmentConfig(min_size=10**7)
    with pytest.raises(FileExistsError):  # other settings: not a resume of that run
        segment_large(sample.image, config=huge, **kwargs)
    events = list(iter_segment_large(sample.image, config=huge, overwrite=True, **kwargs))
    assert not any(getattr(e, "skipped", False) for e in events)
    assert zarr.open_array(str(out))[:].max() == 0
    with pytest.raises(TypeError, match="SegmentConfig"):
        segment_large(sample.image, config={"min_size": 3}, overwrite=True, **kwargs)


def test_block_tasks_read_their_crop_without_submitting_dask_tasks(tmp_path, client):
    # block tasks used to read their crop with dask's compute(), which went back to the
    # scheduler from inside the task: a 1-thread worker then started a second block while the
    # first waited (two crops in memory, one worker idle at the end: 0.46x per core)
    from distributed import get_task_stream

    sample = touching_cells((256, 256), diameter=DIAM, seed=6, irregularity=0.1)
    zpath = tmp_path / "image.zarr"
    zarr.create_array(str(zpath), data=sample.image, chunks=(100, 100))
    with get_task_stream(client) as stream:
        segment_large(
            str(zpath),
            model=SEGMENTER,
            diameter=DIAM,
            out=tmp_path / "l.zarr",
            blocksize=128,
            cluster=client,
        )
    keys = [str(task["key"]) for task in stream.data]
    assert sum(k.startswith("cp2-block-") for k in keys) == 4
    assert all(k.startswith(("cp2-block-", "_pair_duplicates", "_write_chunk")) for k in keys)


def test_owned_cells_keeps_cells_by_centroid():
    masks = np.zeros((20, 20), np.int32)
    masks[0:6, 8:14] = 3  # centroid (2.5, 10.5): inside core rows 0..9 cols 10..19
    masks[12:18, 2:6] = 7  # centroid row 14.5: outside
    owned, n = owned_cells(masks, (slice(0, 20), slice(0, 20)), (slice(0, 10), slice(10, 20)))
    assert n == 1 and set(np.unique(owned)) == {0, 1}
    assert (owned == 1).sum() == 36


def test_missing_input_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        segment_large(
            str(tmp_path / "nope.zarr"), model=SEGMENTER, diameter=DIAM, out=tmp_path / "o.zarr"
        )


@pytest.mark.parametrize(
    ("blocksize", "overlap", "match"),
    [
        (256, 10, "overlap must be >= 2 x diameter"),
        (100, 150, "must not exceed blocksize"),
        (32, None, "blocksize must be >= 64"),
    ],
)
def test_chunking_that_does_not_fit_is_refused(tmp_path, blocksize, overlap, match):
    img = np.zeros((300, 300), np.float32)
    with pytest.raises(ValueError, match=match):
        segment_large(
            img,
            model=SEGMENTER,
            diameter=DIAM,
            out=tmp_path / "o.zarr",
            blocksize=blocksize,
            overlap=overlap,
        )


def test_unreachable_scheduler_fails_within_timeout(tmp_path):
    img = np.zeros((300, 300), np.float32)
    t0 = time.perf_counter()
    with pytest.raises(ConnectionError, match="could not reach the dask scheduler"):
        segment_large(
            img,
            model=SEGMENTER,
            diameter=DIAM,
            out=tmp_path / "o.zarr",
            blocksize=128,
            cluster="tcp://127.0.0.1:9",
            timeout=2,
        )
    assert time.perf_counter() - t0 < 30


def test_existing_output_is_refused_unless_overwrite(tmp_path, client):
    img = touching_cells((256, 256), diameter=DIAM, seed=1).image
    out = tmp_path / "o.zarr"
    zarr.save_array(str(out), np.ones((4, 4), np.uint8))
    with pytest.raises(FileExistsError, match="overwrite"):
        segment_large(img, model=SEGMENTER, diameter=DIAM, out=out, blocksize=128, cluster=client)
    assert zarr.open_array(str(out))[:].sum() == 16  # untouched
    res = segment_large(
        img, model=SEGMENTER, diameter=DIAM, out=out, blocksize=128, cluster=client, overwrite=True
    )
    assert res.n_cells > 0


def test_network_model_is_shipped_to_workers_as_a_file(tmp_path, client):
    from cp2_engine.inference import Model

    model = Model.random(seed=0)
    img = touching_cells((256, 256), diameter=30, seed=3).image
    out = tmp_path / "labels.zarr"
    res = segment_large(img, model=model, diameter=30, out=out, blocksize=128, cluster=client)
    labels = zarr.open_array(str(out), mode="r")
    assert labels.shape == (256, 256) and labels.dtype == np.uint32
    assert res.n_cells == int(labels[:].max())
    assert not Path(str(out) + ".cp2parts").exists()


def test_a_cell_seen_by_two_blocks_is_kept_once():
    from cp2_engine.large._assemble import duplicate_cells

    a = np.zeros((20, 20), np.uint32)
    b = np.zeros((20, 20), np.uint32)
    a[2:10, 2:10] = 1  # the same cell, predicted slightly differently by two blocks
    b[3:11, 2:10] = 1
    a[12:18, 2:8] = 2  # two distinct neighbours sharing one column of pixels
    b[12:18, 7:13] = 2
    assert duplicate_cells(a, b, [64, 36], [64, 36]).tolist() == [1]
    _, n = owned_cells(
        a.astype(int), (slice(0, 20), slice(0, 20)), (slice(0, 10), slice(7, 20)), margin=2
    )
    assert n == 1  # the first cell's centroid (5.5, 5.5) is within 2 px of the core


def test_cli_segments_a_zarr_into_a_zarr(tmp_path):
    from cp2_engine.cli import main
    from cp2_engine.inference import Model
    from cp2_engine.network import save_model

    weights = tmp_path / "random_model"
    save_model(Model.random(seed=0).net, weights)
    img = touching_cells((256, 256), diameter=30, seed=3).image
    zarr.create_array(str(tmp_path / "img.zarr"), data=img, chunks=(100, 100))
    out = tmp_path / "labels.zarr"
    args = ["segment", str(tmp_path / "img.zarr"), "--out", str(out), "--model", str(weights)]
    args += ["--diameter", "30", "--blocksize", "128", "--workers", "1"]
    assert main(args) == 0
    assert zarr.open_array(str(out), mode="r").shape == (256, 256)
    assert main(args) == 2  # the output exists now: refused without --overwrite
    assert main([*args[:-4], "--blocksize", "128"]) == 2  # no --diameter: a clear error


def _threads_after_pinning():
    import numba
    import torch

    from cp2_engine.large._blocks import _pin_threads_to_worker
    from cp2_engine.postprocess import masks_to_flows
    from cp2_engine.synthetic import touching_cells

    _pin_threads_to_worker()
    masks_to_flows(touching_cells((96, 96), diameter=20, seed=0).labels)  # a numba kernel
    return torch.get_num_threads(), numba.get_num_threads()


def test_block_workers_use_one_thread_each():
    # two 1-thread workers used to run numba (and then torch) with one thread per core each,
    # oversubscribing the cores; and a worker with n threads runs n blocks at once, each of which
    # set torch (process-wide) to n threads: n x n threads. Each block task now runs one thread.
    from distributed import Client, LocalCluster

    for n_workers, threads in ((1, 1), (1, 2)):
        with (
            LocalCluster(
                n_workers=n_workers,
                threads_per_worker=threads,
                processes=True,
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            assert client.submit(_threads_after_pinning, pure=False).result() == (1, 1)


@pytest.fixture(scope="module")
def nuclei_sample():
    sample = touching_cells((1024, 1024), diameter=24, seed=12, irregularity=0.1)
    return sample, (sample.image * 60000).astype(np.uint16)


@pytest.mark.parametrize("diameter", [17, 24])  # no rescaling, and rescaling by 17/24
def test_network_blocks_match_one_pass_and_run_each_tile_once(
    nuclei_sample, client, diameter, tmp_path
):
    # blocks used to tile their own crops: more tiles than one pass (2304 vs 1936 at 8192^2,
    # blocksize 2048) and per-crop normalisation. Now they share one pass's tiles.
    from cp2_engine.inference import Model
    from cp2_engine.large import NetworkLayout, TilesDone, iter_segment_large
    from cp2_engine.util import drain

    sample, image = nuclei_sample
    model = Model.load("cp2_nuclei", device="cpu")
    single = model.segment(image, diameter=diameter).masks
    out = tmp_path / "labels.zarr"
    gen = iter_segment_large(
        image, model=model, diameter=diameter, out=out, blocksize=256, cluster=client
    )
    events = []
    result = drain(gen, on_event=events.append)
    labels = zarr.open_array(str(out), mode="r")[:]
    tiles = [e for e in events if isinstance(e, TilesDone)]
    layout = NetworkLayout.build(image.shape, blocksize=256, rescale=17 / diameter)
    assert sum(e.n_tiles for e in tiles) == layout.grid.n_tiles  # each tile exactly once
    assert result.n_cells == labels.max() > 100
    assert _ap50(single, labels) >= 0.99
    _assert_no_cell_split(
        sample.labels, labels, single, BlockGrid(labels.shape, 256, 2 * diameter)
    )


def test_network_path_survives_a_killed_worker(client, tmp_path):
    import contextlib

    from distributed.comm.core import CommClosedError

    from cp2_engine.inference import Model
    from cp2_engine.large import iter_segment_large
    from cp2_engine.util import drain

    model = Model.load("cp2_nuclei", device="cpu")
    sample = touching_cells((512, 512), diameter=17, seed=7, irregularity=0.1)
    image = (sample.image * 60000).astype(np.uint16)
    kwargs = {"model": model, "diameter": 17, "blocksize": 128, "cluster": client}
    segment_large(image, out=tmp_path / "ref.zarr", **kwargs)
    gen = iter_segment_large(image, out=tmp_path / "labels.zarr", **kwargs)
    next(gen)  # one network task finished, others running: kill a worker under them
    victim = sorted(client.scheduler_info()["workers"])[0]
    with contextlib.suppress(CommClosedError, OSError):
        client.run(os._exit, 1, workers=[victim])
    drain(gen)
    ref = zarr.open_array(str(tmp_path / "ref.zarr"))[:]
    assert ref.max() > 50
    np.testing.assert_array_equal(ref, zarr.open_array(str(tmp_path / "labels.zarr"))[:])


def _page_faults_of_a_forward_pass():
    import resource

    import torch

    from cp2_engine.inference import accumulate_tiles
    from cp2_engine.large._blocks import _pin_threads_to_worker
    from cp2_engine.network import CPnet, get_runner
    from cp2_engine.util import tune_allocator

    _pin_threads_to_worker()
    tune_allocator()
    net = CPnet().eval()  # the runner holds it weakly: keep it alive here
    runner = get_runner(net, precision="fp32", backend="torch")
    image = torch.rand(2, 224, 224 * 8)
    tiles = [(0, k, 0, 224 * k) for k in range(8)]
    faults = []
    for _ in range(2):  # the first pass allocates the buffers, the second should reuse them
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        accumulate_tiles(runner, image, tiles, tile=(224, 224), batch_size=8)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return faults


def test_local_cluster_workers_reuse_network_buffers():
    # dask runs tasks in worker threads, where glibc's per-thread malloc arenas mapped and
    # unmapped the network's large buffers at every pass (~130,000 page faults per 8 tiles,
    # 7-13% slower than one process); cp2's LocalCluster starts workers with one arena
    from distributed import Client

    from cp2_engine.large import local_cluster

    with local_cluster(n_workers=1) as cluster, Client(cluster) as client:
        first, second = client.submit(_page_faults_of_a_forward_pass, pure=False).result()
        profiling = client.run(_worker_profiler_enabled)
    assert second < 80_000, (first, second)  # 0-40k with one arena, ~130k without
    # the statistical profiler sampled the busy thread every 10 ms (4.2% of a core when idle)
    assert not any(profiling.values())


def _worker_profiler_enabled():
    import dask

    return dask.config.get("distributed.worker.profile.enabled")


def test_new_settings_discard_old_parts_while_a_cancelled_block_writes(tmp_path, monkeypatch):
    # a block task of a cancelled run kept writing into its run folder while a restart with
    # other settings deleted the parts: rmtree failed with "Directory not empty"
    import shutil

    from cp2_engine.large._segment import _prepare_parts, _run_dir

    grid = BlockGrid(shape=(64, 64), blocksize=32, overlap=8)
    parts = tmp_path / "labels.zarr.parts"
    _prepare_parts(parts, grid, {"settings": "old"})
    stale_run = _run_dir(parts, {"settings": "old"})
    real_unlink, wrote = os.unlink, []

    def unlink_while_a_stale_block_writes(path, *args, **kwargs):
        if not wrote and str(path) == "zarr.json":  # rmtree has listed a block's folder
            wrote.append(True)  # and the cancelled task writes one more chunk into it
            for block in stale_run.glob("block_*"):
                chunk = block / "c" / "9" / "9"
                chunk.parent.mkdir(parents=True, exist_ok=True)
                chunk.write_bytes(b"stale")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink_while_a_stale_block_writes)
    _prepare_parts(parts, grid, {"settings": "new"})
    monkeypatch.undo()
    assert wrote
    new_run = _run_dir(parts, {"settings": "new"})
    blocks = [f"block_{i}_{j}" for i, j in grid.indices()]
    assert sorted(p.name for p in new_run.iterdir()) == blocks
    assert json.loads((parts / "run.json").read_text()) == {"settings": "new"}
    assert not [p for p in tmp_path.iterdir() if p.name != parts.name]  # no debris left beside
    shutil.rmtree(parts)
