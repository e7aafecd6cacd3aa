"""The settings of a zoo build (:class:`ZooBuildConfig`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["ZooBuildConfig"]


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class ZooBuildConfig:
    """How :func:`~cp2_engine.zoo.iter_build_zoo` clusters the styles and trains the models.

    Every field except ``train_generalist`` and ``device`` is recorded in the zoo folder's
    ``build.json``, and a build resumes only with the same values.

    Parameters
    ----------
    n_neighbors : int
        Neighbours of each style in the kNN graph (paper: 100; nuclei 50). Default 100.
    resolution : float
        Leiden resolution, larger gives more clusters (paper: 0.45; nuclei 0.25). Default 0.45.
    epochs : int
        Training epochs of each specialist and of the generalist. Default 100.
    from_scratch : bool
        Start specialists and generalist from random weights instead of the base model (they
        then train at learning rate 0.2, the paper's value from scratch). Default False.
    seed : int
        Seed of the clustering and the training. Default 0.
    channels : (int, int)
        Cellpose channels ``(chan, chan2)`` of the images. Default ``(0, 0)``.
    min_cluster_size : int
        Smallest cluster kept as its own specialist; smaller ones are merged into the nearest.
        Default 2.
    train_generalist : bool
        Also train the comparison generalist (on images sampled equally across clusters).
        Default True.
    train_overrides : mapping of str to object, optional
        Extra :class:`~cp2_engine.training.TrainConfig` fields, for example
        ``{"mode": "offline"}``; stored read-only. Default none.
    device : str
        Device of a base model given by name or path ("auto" = CUDA or MPS when present).
        Default "auto".

    Raises
    ------
    ValueError
        If ``n_neighbors``, ``epochs`` or ``min_cluster_size`` is not a positive integer, the
        resolution is not positive or ``channels`` is not two integers >= 0.
    TypeError
        If ``train_overrides`` is not a mapping.

    Examples
    --------
    >>> ZooBuildConfig().n_neighbors, ZooBuildConfig(n_neighbors=50, resolution=0.25).resolution
    (100, 0.25)
    >>> dict(ZooBuildConfig(train_overrides={"bsize": 128}).train_overrides)
    {'bsize': 128}
    >>> ZooBuildConfig(epochs=0)
    Traceback (most recent call last):
    ...
    ValueError: epochs must be a positive integer, got 0
    """

    n_neighbors: int = 100
    resolution: float = 0.45
    epochs: int = 100
    from_scratch: bool = False
    seed: int = 0
    channels: tuple[int, int] = (0, 0)
    min_cluster_size: int = 2
    train_generalist: bool = True
    train_overrides: Mapping[str, object] | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("n_neighbors", "epochs", "min_cluster_size"):
            _positive_int(name, getattr(self, name))
        if not float(self.resolution) > 0:
            raise ValueError(f"resolution must be positive, got {self.resolution!r}")
        channels = tuple(int(c) for c in self.channels)
        if len(channels) != 2 or min(channels) < 0:
            raise ValueError(f"channels must be two integers >= 0, got {self.channels!r}")
        overrides = {} if self.train_overrides is None else self.train_overrides
        if not isinstance(overrides, Mapping):
            raise TypeError(
                "train_overrides must be a mapping of TrainConfig fields, got "
                f"{type(overrides).__name__}"
            )
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "train_overrides", MappingProxyType(dict(overrides)))
