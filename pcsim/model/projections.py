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
from functools import cached_property
from typing import ClassVar, Optional

__all__ = ["PROJECTIONS", "register", "projection_class", "Dense", "Conv2d", "ConvTranspose2d",
           "conv_out", "conv_transpose_out", "ShapeError"]

#: kind name -> descriptor class
PROJECTIONS: dict[str, type] = {}


class ShapeError(ValueError):
    """A projection whose geometry does not fit the layers it joins."""


def register(cls):
    """Register a descriptor class under its ``kind`` (a class decorator)."""
    PROJECTIONS[cls.kind] = cls
    return cls


def projection_class(kind: str) -> type:
    """The descriptor class of ``kind``, or a clear error listing the known kinds."""
    if kind not in PROJECTIONS:
        raise KeyError(f"unknown projection kind {kind!r}; valid: {sorted(PROJECTIONS)}")
    return PROJECTIONS[kind]


class _Sizes:
    """Neuron counts of a projection's two layers (every kind has them)."""

    @cached_property
    def n_pre(self) -> int:
        return math.prod(self.pre_shape)

    @cached_property
    def n_post(self) -> int:
        return math.prod(self.post_shape)


class _KernelSizes(_Sizes):
    """What a convolution and its transpose share: a ``k x k`` kernel ``W`` whose
    entries are the plastic synapses, and its initialisers' fans."""

    @cached_property
    def fans(self) -> tuple[int, int]:
        k2 = self.kernel * self.kernel
        return self.pre_shape[0] * k2, self.post_shape[0] * k2

    @cached_property
    def n_synapses(self) -> int:
        """Plastic weights: the kernel's entries."""
        return math.prod(self.tensors["W"])


@register
@dataclass(frozen=True)
class Dense(_Sizes):
    """A dense projection ``l``: every neuron of layer ``l - 1`` reaches every neuron of
    layer ``l`` through ``W_l`` (``n_post x n_pre``), plus a bias ``b_l``.

    A ``(C, H, W)`` pre layer is read flat (a flatten before a dense projection is a
    reshape, not a layer, SPEC 1).
    """

    kind: ClassVar[str] = "dense"

    index: int
    pre_shape: tuple
    post_shape: tuple

    @cached_property
    def out_shape(self) -> tuple:
        """Shape of the pre-activation ``a_l`` per sample (before any pooling)."""
        return tuple(self.post_shape)

    @property
    def tensors(self) -> dict:
        """The learned tensors by name, with their shapes (weights first)."""
        return {"W": (self.n_post, self.n_pre), "b": (self.n_post,)}

    @cached_property
    def fans(self) -> tuple[int, int]:
        """``(fan_in, fan_out)`` of one weight, for the initialisers."""
        return self.n_pre, self.n_post

    @cached_property
    def n_synapses(self) -> int:
        """Plastic weights (dense: ``n_post * n_pre``)."""
        return self.n_post * self.n_pre

    @cached_property
    def macs(self) -> int:
        """Multiply-accumulates of one forward (or adjoint) map per sample."""
        return self.n_post * self.n_pre

    @cached_property
    def grad_macs(self) -> int:
        """Multiply-accumulates of the weight-gradient map per sample."""
        return self.n_post * self.n_pre

    @classmethod
    def from_spec(cls, index, pre_shape, post_shape, spec) -> "Dense":
        return cls(index, tuple(pre_shape), tuple(post_shape))


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def _taps(size: int, kernel: int, stride: int, padding: int) -> int:
    """Pairs (output position, kernel tap) along one axis that land inside the input:
    the multiply-accumulates per channel pair that a convolution really performs (taps
    on the zero padding are no synapses)."""
    out = conv_out(size, kernel, stride, padding)
    return sum(1 for o in range(out) for k in range(kernel)
               if 0 <= o * stride - padding + k < size)


@register
@dataclass(frozen=True)
class Conv2d(_KernelSizes):
    """A convolutional projection ``l`` from a ``(C_in, H, W)`` layer: kernel ``W_l`` of
    shape ``(C_out, C_in, k, k)``, one bias per output channel, then optionally pooling
    ``P_l`` (``"avg"`` or ``"max"``, window and stride ``pool_size``) after the
    activation (SPEC 1: ``mu = P(f(a))``). ``post_shape`` is the layer's shape after
    pooling; ``out_shape`` the shape of ``a_l``.
    """

    kind: ClassVar[str] = "conv2d"

    index: int
    pre_shape: tuple
    post_shape: tuple
    kernel: int = 3
    stride: int = 1
    padding: int = 0
    pool: Optional[str] = None
    pool_size: int = 2

    def __post_init__(self):
        where = f"network.layers[{self.index}]"
        if len(self.pre_shape) != 3:
            raise ShapeError(f"{where}: a conv2d projection needs a (C, H, W) layer below it, "
                             f"got layer {self.index - 1} of shape {tuple(self.pre_shape)}")
        _, h, w = self.pre_shape
        if self.kernel > min(h, w) + 2 * self.padding:
            raise ShapeError(f"{where}: kernel {self.kernel} does not fit layer "
                             f"{self.index - 1} of shape {tuple(self.pre_shape)} with padding "
                             f"{self.padding}")
        if self.pool not in (None, "avg", "max"):
            raise ShapeError(f"{where}: pool {self.pool!r}; valid: avg, max, or none")
        expect = self.pooled_shape(self.post_shape[0] if self.post_shape else 0)
        if tuple(self.post_shape) != expect:
            raise ShapeError(
                f"{where}: conv2d (kernel {self.kernel}, stride {self.stride}, padding "
                f"{self.padding}{', ' + self.pool + ' pool ' + str(self.pool_size) if self.pool else ''}) "
                f"maps layer {self.index - 1} of shape {tuple(self.pre_shape)} to "
                f"{expect}, but layer {self.index} has shape {tuple(self.post_shape)}")

    def pooled_shape(self, channels: int) -> tuple:
        """The layer shape this geometry gives for ``channels`` output channels."""
        _, h, w = self.pre_shape
        ho, wo = (conv_out(n, self.kernel, self.stride, self.padding) for n in (h, w))
        if self.pool:
            ho, wo = ho // self.pool_size, wo // self.pool_size
        return (channels, ho, wo)

    @cached_property
    def out_shape(self) -> tuple:
        _, h, w = self.pre_shape
        return (self.post_shape[0],) + tuple(
            conv_out(n, self.kernel, self.stride, self.padding) for n in (h, w))

    @property
    def tensors(self) -> dict:
        c_out, c_in = self.post_shape[0], self.pre_shape[0]
        return {"W": (c_out, c_in, self.kernel, self.kernel), "b": (c_out,)}

    @cached_property
    def macs(self) -> int:
        """MACs of one convolution (or its transpose) per sample: every in-bounds
        ``(output position, tap)`` pair times ``C_in * C_out``; also the sum of every
        input neuron's fan-out, so ``theta = 0`` events count the same."""
        _, h, w = self.pre_shape
        taps = (_taps(h, self.kernel, self.stride, self.padding)
                * _taps(w, self.kernel, self.stride, self.padding))
        return self.pre_shape[0] * self.post_shape[0] * taps

    @cached_property
    def grad_macs(self) -> int:
        """MACs of the weight-gradient correlation per sample (SPEC 4:
        ``C_out * C_in * k * k * H_out * W_out``)."""
        return self.n_synapses * math.prod(self.out_shape[1:])

    @classmethod
    def from_spec(cls, index, pre_shape, post_shape, spec) -> "Conv2d":
        return cls(index, tuple(pre_shape), tuple(post_shape), spec.kernel, spec.stride,
                   spec.padding, None if spec.pool == "none" else spec.pool, spec.pool_size)


def conv_transpose_out(size: int, kernel: int, stride: int, padding: int,
                       output_padding: int = 0) -> int:
    """Output length of a transposed convolution along one axis."""
    return (size - 1) * stride - 2 * padding + kernel + output_padding


@register
@dataclass(frozen=True)
class ConvTranspose2d(_KernelSizes):
    """A transposed-convolution projection ``l`` (a decoder's upsampling, as in PCX's
    generative benchmarks): kernel ``W_l`` of shape ``(C_in, C_out, k, k)`` (torch's
    layout), one bias per output channel, no pooling. Its forward map is the adjoint of
    the convolution with the same geometry from layer ``l`` down to ``l - 1``, and its
    adjoint that convolution; output size ``(H - 1) s - 2 p + k + output_padding``.
    """

    kind: ClassVar[str] = "conv_transpose2d"

    index: int
    pre_shape: tuple
    post_shape: tuple
    kernel: int = 3
    stride: int = 1
    padding: int = 0
    output_padding: int = 0

    def __post_init__(self):
        where = f"network.layers[{self.index}]"
        if len(self.pre_shape) != 3:
            raise ShapeError(f"{where}: a conv_transpose2d projection needs a (C, H, W) layer "
                             f"below it, got layer {self.index - 1} of shape "
                             f"{tuple(self.pre_shape)}")
        if self.output_padding >= max(self.stride, 1) or 2 * self.padding >= self.kernel + \
                (self.pre_shape[1] - 1) * self.stride + self.output_padding:
            raise ShapeError(f"{where}: output_padding {self.output_padding} must be below the "
                             f"stride {self.stride}, and padding {self.padding} leave an output")
        expect = (self.post_shape[0] if self.post_shape else 0,) + tuple(
            conv_transpose_out(n, self.kernel, self.stride, self.padding, self.output_padding)
            for n in self.pre_shape[1:])
        if tuple(self.post_shape) != expect:
            raise ShapeError(
                f"{where}: conv_transpose2d (kernel {self.kernel}, stride {self.stride}, "
                f"padding {self.padding}, output_padding {self.output_padding}) maps layer "
                f"{self.index - 1} of shape {tuple(self.pre_shape)} to {expect}, but layer "
                f"{self.index} has shape {tuple(self.post_shape)}")

    @cached_property
    def out_shape(self) -> tuple:
        return tuple(self.post_shape)

    @property
    def tensors(self) -> dict:
        c_in, c_out = self.pre_shape[0], self.post_shape[0]
        return {"W": (c_in, c_out, self.kernel, self.kernel), "b": (c_out,)}

    @cached_property
    def macs(self) -> int:
        """MACs per sample: every (input position, tap) pair that lands inside the output,
        times ``C_in * C_out``: the in-bounds taps of the convolution it is the adjoint of
        (also the sum of every input neuron's fan-out)."""
        _, ho, wo = self.post_shape
        return (self.pre_shape[0] * self.post_shape[0]
                * _taps(ho, self.kernel, self.stride, self.padding)
                * _taps(wo, self.kernel, self.stride, self.padding))

    @cached_property
    def grad_macs(self) -> int:
        """MACs of the weight-gradient correlation per sample: ``C_in * C_out * k * k``
        per input position (SPEC 4's conv count, for the convolution it is the adjoint
        of, whose output is this projection's input)."""
        return self.n_synapses * math.prod(self.pre_shape[1:])

    @classmethod
    def from_spec(cls, index, pre_shape, post_shape, spec) -> "ConvTranspose2d":
        if spec.pool != "none":
            raise ShapeError(f"network.layers[{index}]: a conv_transpose2d projection has no "
                             f"pooling (got pool {spec.pool!r})")
        return cls(index, tuple(pre_shape), tuple(post_shape), spec.kernel, spec.stride,
                   spec.padding, spec.output_padding)
