"""Stand-alone CPnet for BioImage.IO packages: torch only, no cp2 import.

This file is copied into every exported package as ``cpnet.py`` and named by its
``pytorch_state_dict`` weights entry (``architecture.callable: CPnet``), so that tools such as
``bioimageio.core`` can build the network without cp2. It builds the same module tree as
``cp2_engine.network.CPnet`` (so the same ``state_dict`` loads with ``strict=True``) and computes
the same function; ``forward`` returns only the network output ``(B, 3, H, W)`` =
(5·dY, 5·dX, cell-probability logit), the tensor the package describes.

cp2 itself never imports this file from a package: it reads the weights with
``torch.load(weights_only=True)`` into its own CPnet.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CPnet"]

_EPS = 1e-5


def _conv(cin: int, cout: int, sz: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(cin, eps=_EPS),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, sz, padding=sz // 2),
    )


def _proj(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(cin, eps=_EPS), nn.Conv2d(cin, cout, 1))


class _Down(nn.Module):
    def __init__(self, cin: int, cout: int, sz: int):
        super().__init__()
        self.conv = nn.Sequential(
            OrderedDict((f"conv_{t}", _conv(cin if t == 0 else cout, cout, sz)) for t in range(4))
        )
        self.proj = _proj(cin, cout)

    def forward(self, x):
        c = self.conv
        x = self.proj(x) + c.conv_1(c.conv_0(x))
        return x + c.conv_3(c.conv_2(x))


class _Encoder(nn.Module):
    def __init__(self, nbase, sz: int):
        super().__init__()
        self.down = nn.Sequential(
            OrderedDict(
                (f"res_down_{n}", _Down(nbase[n], nbase[n + 1], sz)) for n in range(len(nbase) - 1)
            )
        )
        self.maxpool = nn.MaxPool2d(2, 2)

    def forward(self, x):
        features = []
        for n, block in enumerate(self.down):
            x = block(x if n == 0 else self.maxpool(x))
            features.append(x)
        return features


class _StyleConv(nn.Module):
    def __init__(self, cin: int, cout: int, style_channels: int, sz: int):
        super().__init__()
        self.conv = _conv(cin, cout, sz)
        self.full = nn.Linear(style_channels, cin)

    def forward(self, style, x, skip: torch.Tensor | None = None):
        if skip is not None:
            x = x + skip
        return self.conv(x + self.full(style)[:, :, None, None])


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int, style_channels: int, sz: int):
        super().__init__()
        layers = [("conv_0", _conv(cin, cout, sz))]
        layers += [(f"conv_{t}", _StyleConv(cout, cout, style_channels, sz)) for t in (1, 2, 3)]
        self.conv = nn.Sequential(OrderedDict(layers))
        self.proj = _proj(cin, cout)

    def forward(self, x, skip, style):
        c = self.conv
        x = self.proj(x) + c.conv_1(style, c.conv_0(x), skip)
        return x + c.conv_3(style, c.conv_2(style, x))


class _Decoder(nn.Module):
    def __init__(self, nbase, sz: int):
        super().__init__()
        widths = [*nbase[1:], nbase[-1]]
        self.up = nn.Sequential(
            OrderedDict(
                (f"res_up_{k}", _Up(widths[k + 1], widths[k], nbase[-1], sz))
                for k in range(len(widths) - 1)
            )
        )
        self.upsampling = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, style, features):
        blocks = list(self.up)
        x = blocks[-1](features[-1], features[-1], style)
        for k in range(len(blocks) - 2, -1, -1):
            x = blocks[k](self.upsampling(x), features[k], style)
        return x


class CPnet(nn.Module):
    """The Cellpose 2/3 residual U-net with a style vector (the network of cp2 models).

    Parameters
    ----------
    nbase : list of int
        Input channels, then the encoder widths (e.g. ``[2, 32, 64, 128, 256]``).
    nout : int
        Output channels (3: 5·dY, 5·dX, cell-probability logit).
    sz : int
        Convolution kernel size.
    diam_mean : float
        Object diameter (pixels) the model was trained at; stored in the state dict.

    Examples
    --------
    >>> net = CPnet([2, 8, 16], 3, 3).eval()
    >>> tuple(net(torch.zeros(1, 2, 16, 16)).shape)
    (1, 3, 16, 16)
    """

    def __init__(self, nbase=(2, 32, 64, 128, 256), nout: int = 3, sz: int = 3, diam_mean=30.0):
        super().__init__()
        nbase = [int(n) for n in nbase]
        self.nbase = nbase
        self.diam_mean = nn.Parameter(torch.full((1,), float(diam_mean)), requires_grad=False)
        self.diam_labels = nn.Parameter(torch.full((1,), float(diam_mean)), requires_grad=False)
        self.downsample = _Encoder(nbase, sz)
        self.upsample = _Decoder(nbase, sz)
        self.output = _conv(nbase[1], nout, 1)

    def forward_with_style(self, x):
        """``(output, style)``: the output and the unit-length style vector ``(B, nbase[-1])``."""
        features = self.downsample(x)
        style = F.normalize(features[-1].mean(dim=(-2, -1)), p=2.0, dim=1, eps=1e-12)
        return self.output(self.upsample(style, features)), style

    def forward(self, x):
        """``(B, nbase[0], H, W)`` (H, W multiples of ``2 ** (len(nbase) - 2)``) ->
        ``(B, nout, H, W)``."""
        return self.forward_with_style(x)[0]
