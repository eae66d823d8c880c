"""The network: what is simulated, with no backend, no ``dt`` and no device."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, Optional

from pcsim.model.activations import Activation, get_activation
from pcsim.model.precision import precision_class
from pcsim.model.projections import Dense, projection_class

__all__ = ["Projection", "Layer", "Network"]

#: the dense descriptor, under the name the engines and tests have always used
Projection = Dense


@dataclass(frozen=True)
class Layer:
    """Layer ``l``: a tensor of value neurons of ``shape`` (``(n,)``, or ``(C, H, W)``),
    and as many error neurons when ``l >= 1``.

    ``prec`` is the layer's precision ``1 / sigma_l^2``: fixed, or the starting value of
    a learned precision when ``precision`` names one (a descriptor whose ``kind`` an
    engine implements, SPEC 2.4; None keeps ``prec`` fixed).
    """

    index: int
    shape: tuple
    activation: Activation
    prec: float
    precision: Optional[Any] = None

    def __post_init__(self):
        if isinstance(self.shape, int):  # Layer(l, n, ...) is a flat layer of n neurons
            object.__setattr__(self, "shape", (self.shape,))

    @cached_property
    def size(self) -> int:
        """``n_l``, the number of value neurons (every sum over the layer runs over them)."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class Network:
    """A chain of layers ``0..L`` joined by projections ``1..L`` (SPEC section 1).

    Parameters
    ----------
    layers : tuple of Layer
    projections : tuple of Projection
        ``projections[l - 1]`` predicts layer ``l``.
    mode : {"supervised", "generative"}
        Which layers are clamped during training: supervised clamps ``x_0`` (input) and
        ``x_L`` (target); generative clamps ``x_L`` (data) and leaves ``x_0`` free under a
        Gaussian prior of precision ``prec_0``.
    prec_0 : float
        Prior precision on a free ``x_0``.
    """

    layers: tuple[Layer, ...]
    projections: tuple[Projection, ...]
    mode: Literal["supervised", "generative"] = "supervised"
    prec_0: float = 1.0

    @classmethod
    def from_config(cls, config) -> "Network":
        """Build from a :class:`pcsim.config.schema.NetworkConfig`."""
        layers = tuple(Layer(l, spec.shape, get_activation(spec.activation), spec.prec,
                             _precision(spec))
                       for l, spec in enumerate(config.layers))
        projections = tuple(
            projection_class(spec.projection.kind).from_spec(
                l, layers[l - 1].shape, layers[l].shape, spec.projection)
            for l, spec in enumerate(config.layers) if l >= 1)
        return cls(layers, projections, config.mode, config.prec_0)

    @cached_property
    def learned_precision(self) -> bool:
        """Whether any layer learns its precision (SPEC 2.4)."""
        return any(layer.precision is not None for layer in self.layers)

    @cached_property
    def n_layers(self) -> int:
        """``L``, the index of the top layer."""
        return len(self.layers) - 1

    @cached_property
    def sizes(self) -> tuple[int, ...]:
        return tuple(layer.size for layer in self.layers)

    @cached_property
    def shapes(self) -> tuple[tuple, ...]:
        return tuple(layer.shape for layer in self.layers)

    def clamped(self, phase: Literal["train", "test"] = "train") -> tuple[bool, ...]:
        """Which layers are clamped in ``phase`` (test: only the input, or only the data)."""
        L = self.n_layers
        if self.mode == "supervised":
            return tuple(l == 0 or (phase == "train" and l == L) for l in range(L + 1))
        return tuple(l == L for l in range(L + 1))


def _precision(spec):
    """The learned-precision descriptor of a layer config, or None (a fixed ``prec``)."""
    p = spec.precision
    if p is None:
        return None
    init = 1.0 / spec.prec if p.init is None else p.init
    return precision_class(p.kind)(per=p.per, sigma2_min=p.sigma2_min, init=init,
                                   tau_prec=p.tau_prec, max_floor_share=p.max_floor_share)
