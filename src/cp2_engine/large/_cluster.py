"""dask.distributed clusters whose workers run cp2's block tasks at full speed."""

from __future__ import annotations

from cp2_engine.large._blocks import WORKER_ENVIRONMENT

QUIET_WORKER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
}


def local_cluster(*, n_workers: int = 2, **kwargs):
    """Start a dask ``LocalCluster`` whose workers run cp2's block tasks at full speed.

    Workers have one thread each and start with the environment :data:`WORKER_ENVIRONMENT`:
    ``MALLOC_ARENA_MAX=1``. Dask runs tasks in worker threads, and glibc gives every thread
    other than the main one its own malloc arena, whose heaps are at most 64 MB: the network's
    larger buffers are then mapped and unmapped at every forward pass and page-faulted in
    again (about 400,000 page faults and 7-13% of the time per 24 tiles). With one arena they
    are reused, as in a single process. Workers you start yourself need the same variable
    (``MALLOC_ARENA_MAX=1 dask worker ...``); block tasks log a warning when it is missing.

    The cluster also runs with :data:`QUIET_WORKER_CONFIG`: no statistical profiler (it samples
    the busy thread's stack every 10 ms), and the event-loop tick and system monitor every 1 s
    and 5 s instead of 20 ms and 0.5 s. An idle worker then uses 0.9% of a core instead of
    4.2%, which on a machine whose cores all run blocks is taken from the blocks.

    Parameters
    ----------
    n_workers : int
        Worker processes.
    **kwargs
        Other ``distributed.LocalCluster`` options (defaults: ``threads_per_worker=1``,
        ``processes=True``, ``dashboard_address=None``).

    Returns
    -------
    distributed.LocalCluster

    Examples
    --------
    >>> with local_cluster(n_workers=1) as cluster:  # doctest: +SKIP
    ...     segment_large("slide.zarr", model="cp2_nuclei", diameter=17,
    ...                   out="labels.zarr", cluster=cluster)
    """
    import dask
    from distributed import LocalCluster

    environ = dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {}
    options = {"threads_per_worker": 1, "processes": True, "dashboard_address": None, **kwargs}
    # read by each Nanny when it is created, and set before its worker process is spawned
    environ = {**environ, **WORKER_ENVIRONMENT}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ, **QUIET_WORKER_CONFIG}):
        return LocalCluster(n_workers=n_workers, **options)


def _connect(cluster, n_workers, timeout):
    """Return (client, owned) for ``cluster``: None (new LocalCluster), an address or a Client."""
    from distributed import Client

    if isinstance(cluster, Client):
        return cluster, False
    if cluster is None:
        return Client(local_cluster(n_workers=n_workers)), True
    if isinstance(cluster, str):
        try:
            return Client(cluster, timeout=timeout), True
        except (OSError, TimeoutError) as err:
            raise ConnectionError(
                f"could not reach the dask scheduler at {cluster!r} within {timeout} s: {err}"
            ) from err
    return Client(cluster), True
