"""Optimizers that consume the local PC gradients (or autograd's, for the BP baseline)."""

from __future__ import annotations

import torch

__all__ = ["make_optimizer", "make_scheduler"]


def make_optimizer(learning, params):
    """Return the torch optimizer named by ``learning.optimizer`` over ``params``.

    ``learning.weight_decay`` is lambda of SPEC 2.2, added to the gradient for ``sgd`` and
    ``adam`` and decoupled for ``adamw``. ``"none"`` returns None (continuous plasticity
    only, finite ``tau_w``).
    """
    name = learning.optimizer
    if name == "none":
        return None
    params = list(params)
    # One fused kernel per step instead of a loop of small ones (several times faster
    # for the small tensors of an MLP); same update rule.
    fused = {"fused": True} if _fusable(params) else {}
    if name == "sgd":
        return torch.optim.SGD(params, lr=learning.lr, momentum=learning.momentum,
                               weight_decay=learning.weight_decay, **fused)
    if name == "adam":
        return torch.optim.Adam(params, lr=learning.lr, weight_decay=learning.weight_decay,
                                **fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=learning.lr, weight_decay=learning.weight_decay,
                                 **fused)
    raise KeyError(f"unknown optimizer {name!r}; valid: sgd, adam, adamw, none")


def _fusable(params) -> bool:
    """True when torch's fused optimizers take these tensors (floating, CPU or CUDA)."""
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                                for p in params)


def make_scheduler(learning, optimizer):
    """Return the per-epoch learning-rate schedule named by ``learning.lr_schedule``
    (None for ``constant`` or when there is no optimizer)."""
    if optimizer is None or learning.lr_schedule == "constant":
        return None
    if learning.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(learning.epochs, 1))
    raise KeyError(f"unknown lr_schedule {learning.lr_schedule!r}; valid: constant, cosine")
