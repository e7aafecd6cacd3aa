"""Training that survives a crash: work files under a hidden name, resume, then move into place.

A job that trains a model whose file must only appear once it is complete (a HITL round, a zoo
specialist) trains with :func:`iter_train_resumable`: the model, its checkpoint, log and loss plot
are written to ``<folder>/.unfinished/<name>.partial*``; the same call after a crash (``kill -9``,
power loss) resumes from that checkpoint, and :func:`finish_unfinished` moves the finished weights
(and their ``.json`` sidecar) onto the final name with :func:`os.replace`. So a model file under
its final name is always complete, and an interrupted run is never started again from zero.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Generator, Sequence
from pathlib import Path

from cp2_engine.training._checkpoint import checkpoint_path
from cp2_engine.training._config import TrainConfig
from cp2_engine.training._events import TrainEvent, TrainResult
from cp2_engine.training._loop import iter_train
from cp2_engine.util import atomic_write_file

logger = logging.getLogger(__name__)

UNFINISHED = ".unfinished"
_SUFFIXES = ("", ".json", ".ckpt", "_log.jsonl", "_loss.png", ".inputs.json")


def unfinished_path(save_path: str | os.PathLike) -> Path:
    """Where the unfinished model of ``save_path`` is trained (``.unfinished/<name>.partial``).

    Examples
    --------
    >>> unfinished_path("models/round_001").as_posix()
    'models/.unfinished/round_001.partial'
    """
    save_path = Path(save_path)
    return save_path.parent / UNFINISHED / f"{save_path.name}.partial"


def iter_train_resumable(
    model_or_net,
    images: Sequence,
    labels: Sequence,
    *,
    config: TrainConfig,
    save_path: str | os.PathLike,
    fingerprint: str | None = None,
    restart: bool = False,
) -> Generator[TrainEvent, None, TrainResult]:
    """:func:`iter_train` into :func:`unfinished_path`, resuming its checkpoint when there is one.

    Parameters
    ----------
    model_or_net, images, labels, config
        As for :func:`iter_train`.
    save_path : path
        The final model file; nothing is written there (see :func:`finish_unfinished`).
    fingerprint : str, optional
        What the run depends on (data, settings); a checkpoint made with another fingerprint
        is not resumed: ValueError, unless ``restart``.
    restart : bool
        Discard an unfinished run and start from epoch 0.

    Returns
    -------
    TrainResult
        With ``model_path`` = the unfinished file; a finished checkpoint runs no epoch again.

    Examples
    --------
    >>> from cp2_engine.synthetic import touching_cells
    >>> import tempfile
    >>> s = touching_cells((64, 64), n_cells=8, diameter=16, seed=0)
    >>> cfg = TrainConfig(n_epochs=1, bsize=32, batch_size=2, min_images_per_epoch=2,
    ...                   device="cpu", warmup_epochs=0)
    >>> final = Path(tempfile.mkdtemp()) / "m"
    >>> gen = iter_train_resumable(None, [s.image], [s.labels], config=cfg, save_path=final)
    >>> next(gen).start_epoch
    0
    >>> gen.close()
    """
    work = unfinished_path(save_path)
    if restart:
        discard_unfinished(save_path)
    work.parent.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint_path(work)
    inputs = Path(f"{work}.inputs.json")
    resume = None
    if ckpt.is_file():
        stored = json.loads(inputs.read_text()) if inputs.is_file() else {}
        if fingerprint is not None and stored.get("fingerprint") != fingerprint:
            raise ValueError(
                f"an interrupted training of {Path(save_path).name} ({ckpt}) was started on "
                "other data or settings; pass restart=True (cp2: --restart) to discard it"
            )
        resume = ckpt
        logger.info("resuming the interrupted training of %s from %s", save_path, ckpt)
    else:
        text = json.dumps({"fingerprint": fingerprint}).encode("utf-8")
        atomic_write_file(inputs, lambda fh: fh.write(text))
    return (yield from iter_train(model_or_net, images, labels, config=config, save_path=work,
                                  resume_from=resume))  # fmt: skip


def finish_unfinished(save_path: str | os.PathLike, net, *, metadata: dict | None = None) -> Path:
    """Save ``net`` to the unfinished file, then move it (and its sidecar) onto ``save_path``.

    The checkpoint and log stay in ``.unfinished/`` until :func:`discard_unfinished`.

    Examples
    --------
    >>> import tempfile
    >>> from cp2_engine.network import CPnet
    >>> final = Path(tempfile.mkdtemp()) / "m"
    >>> finish_unfinished(final, CPnet(nbase=[2, 8, 8, 8, 8], nout=3, sz=3)).name
    'm'
    """
    from cp2_engine.network import save_model

    save_path = Path(save_path)
    work = unfinished_path(save_path)
    work.parent.mkdir(parents=True, exist_ok=True)
    save_model(net, work, metadata=metadata)
    os.replace(f"{work}.json", f"{save_path}.json")
    os.replace(work, save_path)
    return save_path


def discard_unfinished(save_path: str | os.PathLike) -> None:
    """Delete the unfinished files of ``save_path`` (and ``.unfinished/`` once it is empty).

    Examples
    --------
    >>> import tempfile
    >>> discard_unfinished(Path(tempfile.mkdtemp()) / "m")  # nothing there: no error
    """
    work = unfinished_path(save_path)
    for suffix in _SUFFIXES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{work}{suffix}")
    with contextlib.suppress(OSError):
        work.parent.rmdir()
