"""Fit a size model (ridge regression of log diameter on style vectors) for a trained net."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cp2_engine.training._augment import random_rotate_and_resize
from cp2_engine.training._config import TrainConfig
from cp2_engine.training._prepare import _prepare


def train_size_model(
    net,
    images: Sequence,
    labels: Sequence,
    *,
    model_path: str | os.PathLike | None = None,
    n_epochs: int = 10,
    bsize: int = 224,
    batch_size: int = 8,
    channels=(0, 0),
    seed: int = 0,
    l2: float = 1.0,
):
    """Fit a size model: ridge regression of log object diameter on the net's style vectors.

    Each epoch takes one random crop per image, scaled by ``U(0.5, 1.5)`` without diameter
    normalisation; the target is the image's median diameter times that scale.

    Parameters
    ----------
    net : CPnet
        The trained segmentation network (left in eval mode).
    images, labels : sequence of ndarray
        Training data (images without ROIs are ignored).
    model_path : str or path, optional
        When given, the size model is saved beside it as ``<model_path>_size.npy``.
    n_epochs, bsize, batch_size : int
        Passes over the data, crop size and crops per forward pass.
    channels : (int, int)
        Cellpose channels used to build the network input.
    seed : int
        Seed of the local RNG.
    l2 : float
        Ridge penalty.

    Returns
    -------
    SizeModel

    Examples
    --------
    >>> from cp2_engine.network import CPnet
    >>> from cp2_engine.synthetic import touching_cells
    >>> cells = [touching_cells((64, 64), n_cells=6, diameter=d, seed=d) for d in (12, 20)]
    >>> sm = train_size_model(CPnet(nbase=(2, 8, 16)), [c.image for c in cells],
    ...                       [c.labels for c in cells], n_epochs=2, bsize=32)
    >>> sm.diam_mean
    30.0
    """
    from cp2_engine.inference import fit_size_model

    cfg = TrainConfig(channels=channels, rescale=False, scale_range=1.0, bsize=bsize,
                      batch_size=batch_size, min_train_masks=1, seed=seed)  # fmt: skip
    data = _prepare(images, labels, cfg, min_masks=1, what="size model")
    device = next(net.parameters()).device
    net.eval()
    styles, diams = [], []
    with torch.no_grad():
        for epoch in range(n_epochs):
            rng = np.random.default_rng([seed, 7, epoch])
            for start in range(0, len(data.x), batch_size):
                idx = np.arange(start, min(start + batch_size, len(data.x)))
                b = random_rotate_and_resize(
                    [data.x[i] for i in idx], rng=rng, bsize=bsize, scale_range=1.0,
                    device=device,
                )  # fmt: skip
                styles.append(net(b.images)[1].float().cpu().numpy())
                diams.append(data.diameters[idx] * b.scale)
    size_model = fit_size_model(
        np.concatenate(styles), np.concatenate(diams), diam_mean=float(net.diam_mean.item()), l2=l2
    )
    if model_path is not None:
        size_model.save(Path(str(model_path) + "_size.npy"))
    return size_model
