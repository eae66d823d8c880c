"""Convolutional projection maps of the torch engine (SPEC 1): ``conv2d`` and
``conv_transpose2d`` over one kernel-map base, and the pooling that follows an
activation (average, max). Registered in :data:`pcsim.engines.torch.maps.MAPS`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pcsim.engines.torch.maps import ProjectionMap, draw, register_map

__all__ = ["AvgPool", "MaxPool", "POOLS", "Conv2dMap", "ConvTranspose2dMap"]


class AvgPool:
    """Average pooling over ``size x size`` windows (stride ``size``); its adjoint spreads
    each error uniformly over its window, divided by the window's size (rows and
    columns that the floor of the pooling drops get none)."""

    def __init__(self, size: int, in_shape: tuple):
        self.size, self.in_hw = size, tuple(in_shape[1:])

    def forward(self, z):
        return F.avg_pool2d(z, self.size), None

    def adjoint(self, eps, route=None):
        k = self.size
        up = eps.repeat_interleave(k, 2).repeat_interleave(k, 3) / (k * k)
        return _pad_to(up, self.in_hw)


class MaxPool:
    """Max pooling over ``size x size`` windows; its adjoint routes each error to the
    position that won the max in the current evaluation (``route``)."""

    def __init__(self, size: int, in_shape: tuple):
        self.size, self.in_hw = size, tuple(in_shape[1:])

    def forward(self, z):
        return F.max_pool2d(z, self.size, return_indices=True)

    def adjoint(self, eps, route):
        return F.max_unpool2d(eps, route, self.size, output_size=self.in_hw)


def _pad_to(x, hw):
    """Zero-pad the last two axes of ``x`` up to ``hw``."""
    dh, dw = hw[0] - x.shape[-2], hw[1] - x.shape[-1]
    return x if dh == dw == 0 else F.pad(x, (0, dw, 0, dh))


POOLS = {"avg": AvgPool, "max": MaxPool}


class _KernelMap(ProjectionMap):
    """What a convolution and its transpose share: a kernel ``W``, a bias per output
    channel, and the two linear operators ``_fwd`` (the forward map without bias) and
    ``_adj`` (its adjoint) from which the adjoint, the weight gradient
    (``aten.convolution_backward``, no autograd), fan-out, fan-in and reach follow."""

    transposed = False

    def __init__(self, projection, tensors: dict):
        super().__init__(projection, tensors)
        self.weight, self.bias = tensors["W"], tensors["b"]
        self.stride, self.padding = projection.stride, projection.padding

    @classmethod
    def init_tensors(cls, projection, init, generator) -> dict:
        fan_in, fan_out = projection.fans
        w = draw(init, projection.tensors["W"], fan_in, fan_out, generator)
        c_out = projection.tensors["b"][0]
        b = torch.zeros(c_out, dtype=torch.float64)
        if init == "uniform_fan_in":  # torch.nn.Conv2d's default, as for dense
            b = (torch.rand(c_out, generator=generator, dtype=torch.float64)
                 * 2 - 1) * (1.0 / math.sqrt(fan_in))
        return {"W": w, "b": b}

    def forward(self, x):
        return self.with_bias(self._fwd(x, self.weight))

    def linear(self, x):
        return self._fwd(x, self.weight)

    def with_bias(self, u):
        return u + self.bias.view(-1, 1, 1)

    def adjoint(self, g):
        return self._adj(g, self.weight)

    def _weight_grad(self, g, x_pre):
        _, dw, _ = torch.ops.aten.convolution_backward(
            g, x_pre, self.weight, None, (self.stride,) * 2, (self.padding,) * 2, (1, 1),
            self.transposed, self._backward_out_pad, 1, (False, True, False))
        return dw

    def local_grads(self, g, x_pre) -> dict:
        """``-dE/dW``: the batch mean of the correlation of ``g`` with ``x_pre`` over each
        tap; ``-dE/db``: of ``g`` summed over positions."""
        return {"W": self._weight_grad(g, x_pre) / g.shape[0], "b": g.sum((2, 3)).mean(0)}

    def active_pairs(self, pre_mask, post_mask):
        """(tap, position, channel pair, sample) terms of the weight-gradient correlation
        with a nonzero pre and post factor (event-mode learning)."""
        return self._weight_grad(post_mask.to(self.weight.dtype),
                                 pre_mask.to(self.weight.dtype)).sum()

    def sparse_index(self, events, adjoint=False, crossover=1.0):
        """The channels that sent in any sample and position (the sparse axis is the
        channel: a sending channel's slice of the kernel is applied, the rest skipped)."""
        index = events.channels()
        return index, index.numel(), events.mask.shape[1]

    def apply_sparse(self, payload, index, adjoint=False):
        """The convolution (or its adjoint) of the sending channels with their slice of
        the kernel alone."""
        if index.numel() == 0:  # (torch's convolution of no channels is not zeros)
            shape = self.projection.pre_shape if adjoint else self.projection.out_shape
            return payload.new_zeros(payload.shape[0], *shape)
        w = self.weight.index_select(self._in_dim if not adjoint else 1 - self._in_dim, index)
        p = payload.index_select(1, index)
        return self._adj(p, w) if adjoint else self._fwd(p, w)

    def _nz(self):
        return (self.weight != 0).to(self.weight.dtype)

    def _ones(self, shape):
        return torch.ones(1, *shape, dtype=self.weight.dtype, device=self.weight.device)

    def fan_out(self):
        """Nonzero kernel entries each input neuron reaches inside the output (fewer at
        the borders and between strides), flat ``(n_pre,)``."""
        return self._adj(self._ones(self.projection.out_shape), self._nz()).flatten()

    def fan_in(self):
        """Nonzero kernel entries inside the input that an adjoint event of each output
        neuron reads, flat."""
        return self._fwd(self._ones(self.projection.pre_shape), self._nz()).flatten()

    def reached(self, mask, adjoint: bool = False):
        m = mask.to(self.weight.dtype)
        return (self._adj(m, self._nz()) if adjoint else self._fwd(m, self._nz())) > 0


@register_map
class Conv2dMap(_KernelMap):
    """A convolution: kernel ``W`` ``(C_out, C_in, k, k)``; the adjoint is the transposed
    convolution."""

    kind = "conv2d"
    _backward_out_pad = (0, 0)
    _in_dim = 1  # the kernel's axis of the forward map's input channels

    def __init__(self, projection, tensors: dict):
        super().__init__(projection, tensors)
        _, h, w = projection.pre_shape
        _, ho, wo = projection.out_shape
        k = projection.kernel
        # output_padding makes the transpose land exactly on (H, W) when stride > 1
        self._out_pad = tuple(n - ((o - 1) * self.stride - 2 * self.padding + k)
                              for n, o in ((h, ho), (w, wo)))
        if projection.pool:
            self.pool = POOLS[projection.pool](projection.pool_size, projection.out_shape)

    def _fwd(self, x, weight):
        return F.conv2d(x, weight, None, self.stride, self.padding)

    def _adj(self, g, weight):
        return F.conv_transpose2d(g, weight, None, self.stride, self.padding, self._out_pad)


@register_map
class ConvTranspose2dMap(_KernelMap):
    """A transposed convolution (a decoder's upsampling): kernel ``W`` ``(C_in, C_out, k,
    k)``; the adjoint is the convolution of the same geometry."""

    kind = "conv_transpose2d"
    transposed = True
    _in_dim = 0

    def __init__(self, projection, tensors: dict):
        super().__init__(projection, tensors)
        self._backward_out_pad = (projection.output_padding,) * 2

    def _fwd(self, x, weight):
        return F.conv_transpose2d(x, weight, None, self.stride, self.padding,
                                  self._backward_out_pad)

    def _adj(self, g, weight):
        return F.conv2d(g, weight, None, self.stride, self.padding)
