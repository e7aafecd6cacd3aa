"""Training data preparation: network input, checked labels and their flows, computed once."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from skimage.segmentation import relabel_sequential

from cp2_engine.training._config import TrainConfig

logger = logging.getLogger(__name__)

MIN_DIAMETER = 5.0


@dataclass(frozen=True)
class _Data:
    x: list
    labels: list
    flows: list
    diameters: np.ndarray
    n_skipped: int


def _network_input(image, channels, normalize: bool, index: int) -> np.ndarray:
    from cp2_engine.inference import convert_image

    arr = np.asarray(image)
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"images[{index}] contains NaN or infinite values")
    try:
        return convert_image(arr, channels=channels, normalize=normalize)
    except (ValueError, TypeError) as err:
        raise type(err)(f"images[{index}]: {err}") from err


def _check_labels(lab, shape, index: int) -> np.ndarray:
    lab = np.asarray(lab)
    if lab.ndim != 2 or not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == bool):
        raise ValueError(
            f"labels[{index}] must be a 2-D integer array, got {lab.dtype} {lab.shape}"
        )
    if lab.shape != shape:
        raise ValueError(f"labels[{index}] has shape {lab.shape} but its image is {shape}")
    if lab.min() < 0:
        raise ValueError(f"labels[{index}] has negative values; expected 0 = background, ids > 0")
    return relabel_sequential(lab.astype(np.int64))[0]


def _expand_stacks(images, labels, config: TrainConfig, *, min_masks: int, what: str):
    """Images and labels with every z-stack pair replaced by its 2-D planes (YX, ZY, ZX)."""
    from cp2_engine.training._stacks import is_stack_pair, stack_to_planes

    if not any(is_stack_pair(img, lab) for img, lab in zip(images, labels)):
        return images, labels
    out_images, out_labels = [], []
    for i, (img, lab) in enumerate(zip(images, labels)):
        if not is_stack_pair(img, lab):
            out_images.append(img)
            out_labels.append(lab)
            continue
        try:
            ims, labs = stack_to_planes(
                img, lab, anisotropy=config.anisotropy, min_masks=min_masks
            )
        except ValueError as err:
            raise ValueError(f"{what}: images[{i}] / labels[{i}]: {err}") from err
        logger.info("%s: z-stack %d %s -> %d training planes", what, i, np.shape(lab), len(ims))
        out_images += ims
        out_labels += labs
    return out_images, out_labels


def _prepare(images, labels, config: TrainConfig, *, min_masks: int, what: str) -> _Data:
    from cp2_engine.metrics import diameters
    from cp2_engine.postprocess import masks_to_flows

    if images is None or labels is None or len(images) == 0:
        raise ValueError(f"{what}: expected a non-empty list of images with labels")
    if len(images) != len(labels):
        raise ValueError(f"{what}: got {len(images)} images but {len(labels)} label images")
    images, labels = _expand_stacks(images, labels, config, min_masks=min_masks, what=what)
    xs, labs, flows, diams, skipped = [], [], [], [], 0
    for i, (img, lab) in enumerate(zip(images, labels)):
        x = _network_input(img, config.channels, config.normalize, i)
        lab = _check_labels(lab, x.shape[-2:], i)
        n_masks = int(lab.max())
        if n_masks < min_masks:
            skipped += 1
            continue
        xs.append(x)
        labs.append(lab)
        flows.append(np.asarray(masks_to_flows(lab), dtype=np.float32))
        diams.append(max(MIN_DIAMETER, diameters(lab)[0]))
    if skipped:
        logger.warning(
            "%s: skipped %d of %d images with < %d ROIs", what, skipped, len(images), min_masks
        )
    if not xs:
        raise ValueError(
            f"{what}: no image has at least {min_masks} ROIs (min_train_masks); "
            "annotate more cells or lower min_train_masks"
        )
    return _Data(xs, labs, flows, np.asarray(diams, dtype=np.float64), skipped)
