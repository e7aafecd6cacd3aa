"""The CPnet residual U-net with a style vector (Cellpose 2/3 architecture, weight compatible).

The module tree is laid out so that ``state_dict()`` keys and shapes follow the Cellpose
weight-file grammar exactly (313 entries for the standard net), so a file written by either
project loads into the other with ``strict=True``.

Layout, for ``nbase = (nchan, 32, 64, 128, 256)``:

* encoder ``downsample.down.res_down_{n}``: four residual blocks, max-pooled by 2 between them;
* style: global average pool of the bottleneck, divided by its L2 norm;
* decoder ``upsample.up.res_up_{k}``: residual blocks whose last three convolutions add a
  per-channel bias ``Linear(256 -> C)(style)`` to their input, the encoder feature of the same
  scale being added (not concatenated) before the first of them;
* head ``output``: BatchNorm -> ReLU -> 1x1 convolution to ``nout`` channels.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_NBASE", "CPnet"]

DEFAULT_NBASE = (2, 32, 64, 128, 256)
"""Channel widths of the standard net: input channels, then the four encoder widths."""

_BN_EPS = 1e-5


def _batchconv(cin: int, cout: int, sz: int, momentum: float) -> nn.Sequential:
    """Pre-activation convolution: BatchNorm -> ReLU -> Conv (keys ``.0`` and ``.2``)."""
    return nn.Sequential(
        nn.BatchNorm2d(cin, eps=_BN_EPS, momentum=momentum),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, sz, padding=sz // 2),
    )


def _batchconv0(cin: int, cout: int, momentum: float) -> nn.Sequential:
    """Projection shortcut: BatchNorm -> 1x1 Conv, no ReLU (keys ``.0`` and ``.1``)."""
    return nn.Sequential(
        nn.BatchNorm2d(cin, eps=_BN_EPS, momentum=momentum),
        nn.Conv2d(cin, cout, 1),
    )


class _ResDown(nn.Module):
    """Encoder block: two residual pairs of pre-activation convolutions."""

    def __init__(self, cin: int, cout: int, sz: int, momentum: float):
        super().__init__()
        self.conv = nn.Sequential(
            OrderedDict(
                (f"conv_{t}", _batchconv(cin if t == 0 else cout, cout, sz, momentum))
                for t in range(4)
            )
        )
        self.proj = _batchconv0(cin, cout, momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        x = self.proj(x) + c.conv_1(c.conv_0(x))
        return x + c.conv_3(c.conv_2(x))


class _Encoder(nn.Module):
    def __init__(self, nbase: Sequence[int], sz: int, momentum: float):
        super().__init__()
        self.down = nn.Sequential(
            OrderedDict(
                (f"res_down_{n}", _ResDown(nbase[n], nbase[n + 1], sz, momentum))
                for n in range(len(nbase) - 1)
            )
        )
        self.maxpool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for n, block in enumerate(self.down):
            x = block(x if n == 0 else self.maxpool(x))
            features.append(x)
        return features


class _BatchConvStyle(nn.Module):
    """Pre-activation convolution whose input first gets ``Linear(style)`` added per channel."""

    def __init__(self, cin: int, cout: int, style_channels: int, sz: int, momentum: float):
        super().__init__()
        self.conv = _batchconv(cin, cout, sz, momentum)
        self.full = nn.Linear(style_channels, cin)

    def forward(
        self, style: torch.Tensor, x: torch.Tensor, skip: torch.Tensor | None = None
    ) -> torch.Tensor:
        if skip is not None:
            x = x + skip
        bias = self.full(style).to(x.dtype)
        return self.conv(x + bias[:, :, None, None])


class _ResUp(nn.Module):
    """Decoder block: conv_0, then three style-biased convolutions in two residual pairs."""

    def __init__(self, cin: int, cout: int, style_channels: int, sz: int, momentum: float):
        super().__init__()
        layers = [("conv_0", _batchconv(cin, cout, sz, momentum))]
        layers += [
            (f"conv_{t}", _BatchConvStyle(cout, cout, style_channels, sz, momentum))
            for t in (1, 2, 3)
        ]
        self.conv = nn.Sequential(OrderedDict(layers))
        self.proj = _batchconv0(cin, cout, momentum)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        c = self.conv
        x = self.proj(x) + c.conv_1(style, c.conv_0(x), skip)
        return x + c.conv_3(style, c.conv_2(style, x))


class _Decoder(nn.Module):
    def __init__(self, nbase: Sequence[int], sz: int, momentum: float):
        super().__init__()
        widths = [*nbase[1:], nbase[-1]]
        style_channels = nbase[-1]
        self.up = nn.Sequential(
            OrderedDict(
                (
                    f"res_up_{k}",
                    _ResUp(widths[k + 1], widths[k], style_channels, sz, momentum),
                )
                for k in range(len(widths) - 1)
            )
        )
        self.upsampling = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, style: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        blocks = list(self.up)
        x = blocks[-1](features[-1], features[-1], style)
        for k in range(len(blocks) - 2, -1, -1):
            x = blocks[k](self.upsampling(x), features[k], style)
        return x


class CPnet(nn.Module):
    """Residual U-net with a global style vector, weight-compatible with Cellpose 2/3.

    Parameters
    ----------
    nbase : sequence of int, default (2, 32, 64, 128, 256)
        Input channels followed by the encoder widths. The decoder mirrors them; the style
        vector has ``nbase[-1]`` entries.
    nout : int, default 3
        Output channels: (5·dY, 5·dX, cell-probability logit) for the standard net.
    sz : int, default 3
        Kernel size of the main convolutions (odd).
    diam_mean : float, default 30.0
        Object diameter (pixels) the training images were rescaled to. Stored, with
        ``diam_labels``, as a non-trainable parameter of shape [1] so it travels in the
        ``state_dict``.
    bn_momentum : float, default 0.05
        BatchNorm running-statistics momentum (Cellpose 3 value; only matters when training).

    Examples
    --------
    >>> import torch
    >>> net = CPnet().eval()
    >>> y, style = net(torch.zeros(1, 2, 64, 64))
    >>> tuple(y.shape), tuple(style.shape)
    ((1, 3, 64, 64), (1, 256))
    >>> len(net.state_dict())
    313
    """

    def __init__(
        self,
        nbase: Sequence[int] = DEFAULT_NBASE,
        nout: int = 3,
        sz: int = 3,
        *,
        diam_mean: float = 30.0,
        bn_momentum: float = 0.05,
    ):
        super().__init__()
        nbase = tuple(int(n) for n in nbase)
        if len(nbase) < 2 or min(nbase) < 1:
            raise ValueError(f"nbase must hold at least 2 positive widths, got {nbase}")
        if nout < 1 or sz < 1 or sz % 2 == 0:
            raise ValueError(f"expected nout >= 1 and an odd kernel size sz, got {nout}, {sz}")
        self.nbase, self.nout, self.sz = nbase, int(nout), int(sz)
        self.diam_mean = nn.Parameter(torch.full((1,), float(diam_mean)), requires_grad=False)
        self.diam_labels = nn.Parameter(torch.full((1,), float(diam_mean)), requires_grad=False)
        self.downsample = _Encoder(nbase, sz, bn_momentum)
        self.upsample = _Decoder(nbase, sz, bn_momentum)
        self.output = _batchconv(nbase[1], nout, 1, bn_momentum)

    @property
    def nchan(self) -> int:
        """Number of input channels (``nbase[0]``)."""
        return self.nbase[0]

    @staticmethod
    def make_style(bottleneck: torch.Tensor) -> torch.Tensor:
        """Global-average-pool ``(B, C, h, w)`` features and L2-normalise to ``(B, C)``."""
        pooled = bottleneck.float().mean(dim=(-2, -1))
        return F.normalize(pooled, p=2.0, dim=1, eps=1e-12)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the net on ``x`` of shape (B, nchan, H, W), H and W multiples of 8.

        Returns
        -------
        y : torch.Tensor
            (B, nout, H, W) raw output.
        style : torch.Tensor
            (B, nbase[-1]) unit-length style vectors (float32).
        """
        if x.ndim != 4 or x.shape[1] != self.nchan:
            raise ValueError(
                f"expected input of shape (B, {self.nchan}, H, W), got {tuple(x.shape)}"
            )
        features = self.downsample(x)
        style = self.make_style(features[-1])
        y = self.upsample(style, features)
        return self.output(y), style
