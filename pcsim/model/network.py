"""The network: what is simulated, with no backend, no ``dt`` and no device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pcsim.model.activations import Activation, get_activation

__all__ = ["Projection", "Layer", "Network"]


@dataclass(frozen=True)
class Layer:
    """Layer ``l``: ``size`` value neurons (and error neurons when ``l >= 1``)."""

    index: int
    size: int
    activation: Activation
    prec: float


@dataclass(frozen=True)
class Projection:
    """Projection ``l``: predicts layer ``post = l`` from layer ``pre = l - 1``.

    ``kind`` names the linear map: ``"dense"`` (a matrix ``n_post x n_pre``). A
    convolutional kind adds its kernel geometry here; engines provide the forward map,
    the adjoint and the weight-gradient map for each kind.
    """

    index: int
    n_pre: int
    n_post: int
    kind: Literal["dense"] = "dense"

    @property
    def n_synapses(self) -> int:
        """Number of plastic weights (dense: ``n_post * n_pre``)."""
        return self.n_post * self.n_pre

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one forward (or adjoint) map per sample."""
        return self.n_post * self.n_pre


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
        layers = tuple(Layer(l, spec.size, get_activation(spec.activation), spec.prec)
                       for l, spec in enumerate(config.layers))
        projections = tuple(Projection(l, layers[l - 1].size, layers[l].size)
                            for l in range(1, len(layers)))
        return cls(layers, projections, config.mode, config.prec_0)

    @property
    def n_layers(self) -> int:
        """``L``, the index of the top layer."""
        return len(self.layers) - 1

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(layer.size for layer in self.layers)

    def clamped(self, phase: Literal["train", "test"] = "train") -> tuple[bool, ...]:
        """Which layers are clamped in ``phase`` (test: only the input, or only the data)."""
        L = self.n_layers
        if self.mode == "supervised":
            return tuple(l == 0 or (phase == "train" and l == L) for l in range(L + 1))
        return tuple(l == L for l in range(L + 1))
