"""Projection descriptors: the geometry of each projection kind, as pure data.

A descriptor says what projection ``l`` connects (the shapes of layers ``l - 1`` and
``l``), which tensors it learns, and how much one evaluation costs, in exact integers.
It holds no weights and imports no backend: each engine pairs a descriptor with a map of
its own kind (forward, adjoint, weight gradient; :mod:`pcsim.engines.torch.maps`).

A new projection kind is one class here, registered under its name with
:func:`register`, and one map class in each engine that runs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

__all__ = ["PROJECTIONS", "register", "projection_class", "Dense"]

#: kind name -> descriptor class
PROJECTIONS: dict[str, type] = {}


def register(cls):
    """Register a descriptor class under its ``kind`` (a class decorator)."""
    PROJECTIONS[cls.kind] = cls
    return cls


def projection_class(kind: str) -> type:
    """The descriptor class of ``kind``, or a clear error listing the known kinds."""
    if kind not in PROJECTIONS:
        raise KeyError(f"unknown projection kind {kind!r}; valid: {sorted(PROJECTIONS)}")
    return PROJECTIONS[kind]


@register
@dataclass(frozen=True)
class Dense:
    """A dense projection ``l``: every neuron of layer ``l - 1`` reaches every neuron of
    layer ``l`` through ``W_l`` (``n_post x n_pre``), plus a bias ``b_l``.

    A ``(C, H, W)`` pre layer is read flat (a flatten before a dense projection is a
    reshape, not a layer, SPEC 1).
    """

    kind: ClassVar[str] = "dense"

    index: int
    pre_shape: tuple
    post_shape: tuple

    @property
    def n_pre(self) -> int:
        return math.prod(self.pre_shape)

    @property
    def n_post(self) -> int:
        return math.prod(self.post_shape)

    @property
    def out_shape(self) -> tuple:
        """Shape of the pre-activation ``a_l`` per sample (before any pooling)."""
        return tuple(self.post_shape)

    @property
    def tensors(self) -> dict:
        """The learned tensors by name, with their shapes (weights first)."""
        return {"W": (self.n_post, self.n_pre), "b": (self.n_post,)}

    @property
    def fans(self) -> tuple[int, int]:
        """``(fan_in, fan_out)`` of one weight, for the initialisers."""
        return self.n_pre, self.n_post

    @property
    def n_synapses(self) -> int:
        """Plastic weights (dense: ``n_post * n_pre``)."""
        return self.n_post * self.n_pre

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one forward (or adjoint) map per sample."""
        return self.n_post * self.n_pre
