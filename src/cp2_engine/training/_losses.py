"""The Cellpose training loss: flow regression plus cell-probability classification.

The network predicts ``(B, 3, H, W)`` = (5·dY, 5·dX, cellprob logit). The target is
``(B, 3, H, W)`` = (cell probability, dY, dX) with unit flows, as produced by
:func:`cp2_engine.training.random_rotate_and_resize`. The loss is

    L = MSE(pred[:, :2], 5 * target[:, 1:]) / 2 + BCEWithLogits(pred[:, 2], target[:, 0] > 0.5)

with ``mean`` reduction for both terms.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

FLOW_SCALE = 5.0


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    for name, t in (("pred", pred), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 4 or t.shape[1] != 3:
            raise ValueError(
                f"{name} must be Bx3xHxW ({'5dY,5dX,logit' if name == 'pred' else 'prob,dY,dX'}),"
                f" got shape {tuple(t.shape)}"
            )
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    if pred.device != target.device:
        raise ValueError(f"pred is on {pred.device} but target is on {target.device}")


def flow_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cellpose loss between network output and flow/probability targets.

    Parameters
    ----------
    pred : torch.Tensor
        ``(B, 3, H, W)`` network output: (5·dY, 5·dX, cellprob logit).
    target : torch.Tensor
        ``(B, 3, H, W)``: (cell probability or labels, unit dY, unit dX).

    Returns
    -------
    torch.Tensor
        Scalar loss (float32, even when ``pred`` is half precision).

    Examples
    --------
    >>> import torch
    >>> target = torch.zeros(1, 3, 8, 8)
    >>> pred = torch.zeros(1, 3, 8, 8)
    >>> round(float(flow_loss(pred, target)), 4)  # only the BCE term: log(2)
    0.6931
    """
    _check(pred, target)
    pred = pred.float()
    target = target.float()
    mse = F.mse_loss(pred[:, :2], FLOW_SCALE * target[:, 1:]) / 2
    bce = F.binary_cross_entropy_with_logits(pred[:, 2], (target[:, 0] > 0.5).float())
    return mse + bce


class FlowLoss(nn.Module):
    """Module wrapper of :func:`flow_loss`.

    Examples
    --------
    >>> import torch
    >>> FlowLoss()(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)).shape
    torch.Size([])
    """

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return :func:`flow_loss` of ``pred`` and ``target``."""
        return flow_loss(pred, target)
