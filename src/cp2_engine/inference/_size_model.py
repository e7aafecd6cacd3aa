"""Size model: a linear map from a net's style vector to the log of the object diameter.

Files use the Cellpose ``size_*.npy`` format: ``np.save`` of a dict with ``A`` (weights),
``smean`` (mean training style), ``ymean`` (mean log-diameter offset) and ``diam_mean``.
The prediction for a style ``s`` is ``exp(A·(s - smean) + log(diam_mean) + ymean)``, floored
at 5 pixels.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["MIN_DIAMETER", "SizeModel", "fit_size_model"]

MIN_DIAMETER = 5.0
"""Smallest diameter (pixels) a size model predicts."""


@dataclass(frozen=True)
class SizeModel:
    """Linear style -> log-diameter regression (Cellpose-compatible).

    Parameters
    ----------
    A : numpy.ndarray
        (S,) regression weights, S = style length (256).
    smean : numpy.ndarray
        (S,) mean style of the training set.
    ymean : float
        Mean of ``log(diameter) - log(diam_mean)`` over the training set.
    diam_mean : float
        Diameter the segmentation net was trained at.

    Examples
    --------
    >>> import numpy as np
    >>> sm = SizeModel(A=np.zeros(256), smean=np.zeros(256), ymean=0.0, diam_mean=30.0)
    >>> round(sm.diameter_from_style(np.ones(256) / 16), 3)
    30.0
    """

    A: np.ndarray
    smean: np.ndarray
    ymean: float
    diam_mean: float

    def __post_init__(self):
        a = np.asarray(self.A, dtype=np.float64).reshape(-1)
        smean = np.asarray(self.smean, dtype=np.float64).reshape(-1)
        if a.shape != smean.shape:
            raise ValueError(
                f"A and smean must have the same length, got {a.shape}, {smean.shape}"
            )
        if not float(self.diam_mean) > 0:
            raise ValueError(f"diam_mean must be positive, got {self.diam_mean}")
        object.__setattr__(self, "A", a)
        object.__setattr__(self, "smean", smean)
        object.__setattr__(self, "ymean", float(np.asarray(self.ymean).reshape(-1)[0]))
        object.__setattr__(self, "diam_mean", float(np.asarray(self.diam_mean).reshape(-1)[0]))

    @classmethod
    def load(cls, path: str | os.PathLike) -> SizeModel:
        """Read a Cellpose/cp2 ``size_*.npy`` file.

        The file is a pickled dict; it is read with a restricted unpickler (containers,
        numbers and numpy arrays only), so a malicious file is refused instead of run.

        Examples
        --------
        >>> import tempfile, pathlib, numpy as np
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m_size.npy"
        >>> SizeModel(A=np.ones(4), smean=np.zeros(4), ymean=0.1, diam_mean=17).save(p)
        >>> SizeModel.load(p).diam_mean
        17.0
        """
        from cp2_engine.util import load_npy_restricted

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"size model file not found: {path}")
        data = load_npy_restricted(path, what="size-model .npy file")
        params = data.item() if data.dtype == object and data.shape == () else data
        keys = ("A", "smean", "ymean", "diam_mean")
        if not isinstance(params, dict) or any(k not in params for k in keys):
            raise ValueError(f"{path} must hold a dict with keys {keys}")
        return cls(**{k: params[k] for k in keys})

    def save(self, path: str | os.PathLike) -> None:
        """Write the model in the Cellpose ``size_*.npy`` format (atomically).

        Examples
        --------
        >>> import tempfile, pathlib, numpy as np
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m_size.npy"
        >>> SizeModel(A=np.ones(4), smean=np.zeros(4), ymean=0.0, diam_mean=30).save(p)
        >>> p.exists()
        True
        """
        path = Path(path)
        params = {
            "A": self.A,
            "smean": self.smean,
            "diam_mean": self.diam_mean,
            "ymean": self.ymean,
        }
        from cp2_engine.util import atomic_write_file

        atomic_write_file(path, lambda fh: np.save(fh, params, allow_pickle=True))

    def diameter_from_style(self, style: np.ndarray) -> float | np.ndarray:
        """Predict the object diameter from one style (S,) or a batch (N, S).

        Returns
        -------
        float or numpy.ndarray
            Diameter(s) in pixels, at least :data:`MIN_DIAMETER` (NaN styles give NaN).

        Examples
        --------
        >>> import numpy as np
        >>> sm = SizeModel(A=np.ones(2), smean=np.zeros(2), ymean=0.0, diam_mean=10.0)
        >>> round(sm.diameter_from_style(np.array([0.5, 0.5])), 4)
        27.1828
        """
        s = np.asarray(style, dtype=np.float64)
        if s.shape[-1] != self.A.shape[0] or s.ndim not in (1, 2):
            raise ValueError(
                f"expected a style of shape ({self.A.shape[0]},) or (N, {self.A.shape[0]}), "
                f"got {s.shape}"
            )
        logd = (s - self.smean) @ self.A + np.log(self.diam_mean) + self.ymean
        diam = np.fmax(np.exp(logd), MIN_DIAMETER)
        return float(diam) if s.ndim == 1 else diam


def fit_size_model(
    styles: np.ndarray, diameters: np.ndarray, *, diam_mean: float, l2: float = 1.0
) -> SizeModel:
    """Fit a :class:`SizeModel` by ridge regression of log-diameters on centred styles.

    Solves ``A = (Xᵀ X + l2·I)⁻¹ Xᵀ y`` with ``X = styles - smean`` and
    ``y = log(diameters) - log(diam_mean) - ymean``.

    Parameters
    ----------
    styles : numpy.ndarray
        (N, S) style vectors.
    diameters : numpy.ndarray
        (N,) true object diameters (pixels, > 0) of the images the styles came from.
    diam_mean : float
        Diameter the segmentation net was trained at.
    l2 : float, default 1.0
        Ridge penalty.

    Returns
    -------
    SizeModel

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> styles = rng.normal(size=(50, 8))
    >>> diams = 30 * np.exp(styles @ np.linspace(-0.2, 0.2, 8))
    >>> sm = fit_size_model(styles, diams, diam_mean=30.0, l2=1e-6)
    >>> bool(np.allclose(sm.diameter_from_style(styles), diams, rtol=1e-4))
    True
    """
    x = np.asarray(styles, dtype=np.float64)
    d = np.asarray(diameters, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or x.shape[0] != d.shape[0] or x.shape[0] < 2:
        raise ValueError(
            f"expected styles (N, S) and diameters (N,) with N >= 2, got {x.shape}, {d.shape}"
        )
    if not np.all(np.isfinite(d) & (d > 0)):
        raise ValueError("diameters must be finite and positive")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    y = np.log(d) - np.log(diam_mean)
    smean, ymean = x.mean(axis=0), y.mean()
    xc = x - smean
    gram = xc.T @ xc + l2 * np.eye(x.shape[1])
    a = np.linalg.lstsq(gram, xc.T @ (y - ymean), rcond=None)[0]
    logger.info("size model fit on %d styles, train corr %.3f", len(d), _corr(xc @ a, y - ymean))
    return SizeModel(A=a, smean=smean, ymean=ymean, diam_mean=diam_mean)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
