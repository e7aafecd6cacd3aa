"""``load_segmenter``: one entry point from a model key to a loaded segmenter."""

from __future__ import annotations

import os
from pathlib import Path

from cp2_engine.export import is_bioimageio_package, load_bioimageio
from cp2_engine.inference import Model, Segmenter
from cp2_engine.zoo import ZooModel

__all__ = ["ZOO_PREFIX", "is_zoo_key", "load_segmenter", "zoo_key"]

#: Prefix of a model key that names a zoo folder.
ZOO_PREFIX = "zoo:"


def is_zoo_key(key: str | os.PathLike) -> bool:
    """Whether ``key`` names a model zoo (``zoo:<folder>``).

    Examples
    --------
    >>> is_zoo_key("zoo:/data/myzoo"), is_zoo_key("cp2_nuclei")
    (True, False)
    """
    return str(key).startswith(ZOO_PREFIX)


def zoo_key(path: str | os.PathLike) -> str | None:
    """The model key of a zoo folder (or its ``zoo.json``); None when ``path`` is no zoo.

    Examples
    --------
    >>> zoo_key("/nowhere/model.pth") is None
    True
    """
    path = Path(path)
    if path.name == "zoo.json" and path.is_file():
        return ZOO_PREFIX + str(path.parent)
    if path.is_dir() and (path / "zoo.json").is_file():
        return ZOO_PREFIX + str(path)
    return None


def load_segmenter(key: str | os.PathLike, *, device: str = "auto") -> Segmenter:
    """Load the segmenter ``key`` names: a bundled or registered model name, a weights file,
    a BioImage.IO package ``.zip`` holding a CPnet (its code is never run), or
    ``zoo:<folder>`` (a :class:`~cp2_engine.zoo.ZooModel`). No downloads.

    Parameters
    ----------
    key : str or path
        Model name, path, or zoo key.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ...

    Returns
    -------
    Segmenter

    Raises
    ------
    FileNotFoundError
        Nothing matches the key (the message lists where cp2 looked).
    ValueError
        The file is no cp2/Cellpose model, the package holds no CPnet (the message says what
        it holds), or the folder is no complete zoo.

    Examples
    --------
    >>> seg = load_segmenter("cp2_nuclei", device="cpu")
    >>> isinstance(seg, Segmenter), seg.name
    (True, 'cp2_nuclei')
    """
    if is_zoo_key(key):
        return ZooModel.load(str(key)[len(ZOO_PREFIX) :], device=device)
    if is_bioimageio_package(key):
        return load_bioimageio(key, device=device)
    return Model.load(key, device=device)
