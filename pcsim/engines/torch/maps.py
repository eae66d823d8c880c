"""Projection maps for the torch engine: forward ``W x + b``, adjoint ``W^T g`` and the
local weight-gradient map, one class per projection kind.
"""

from __future__ import annotations

import math

import torch

__all__ = ["DenseMap", "PlasticParams", "init_parameters", "build_maps", "frozen_maps",
           "params_state", "load_params"]


class DenseMap:
    """A dense projection ``l``: ``W`` of shape ``(n_post, n_pre)`` and bias ``b``.

    The weight tensors are plain leaf tensors (no autograd); optimizers update them in
    place, and every map method sees the update.
    """

    kind = "dense"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor,
                 weight_t: torch.Tensor | None = None):
        self.weight = weight
        self.bias = bias
        self._weight_t = weight_t  # a row-major copy of W^T, only in a frozen map

    @property
    def weight_t(self) -> torch.Tensor:
        """``W^T``: a transposed view, or the frozen map's row-major copy."""
        return self.weight.t() if self._weight_t is None else self._weight_t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``a = W x + b`` for a batch ``x`` of shape ``(batch, n_pre)``."""
        return torch.addmm(self.bias, x, self.weight_t)  # (B, n_pre) @ (n_pre, n_post)

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        """Return ``W^T g`` for a batch ``g`` of shape ``(batch, n_post)``."""
        return g @ self.weight  # (B, n_post) @ (n_post, n_pre)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``W x`` without the bias (what one batch of events adds to receivers)."""
        return x @ self.weight_t  # (B, n_pre) @ (n_pre, n_post)

    def fan_out(self) -> torch.Tensor:
        """Nonzero weights leaving each pre neuron, shape ``(n_pre,)`` (float)."""
        return (self.weight != 0).sum(0).to(self.weight.dtype)

    def fan_in(self) -> torch.Tensor:
        """Nonzero weights reached by an adjoint event of each post neuron, ``(n_post,)``."""
        return (self.weight != 0).sum(1).to(self.weight.dtype)

    def reached(self, mask: torch.Tensor, adjoint: bool = False) -> torch.Tensor:
        """Which receivers at least one event of ``mask`` reaches (through a nonzero weight)."""
        nz = (self.weight != 0).to(self.weight.dtype)
        hits = mask.to(nz.dtype) @ (nz if adjoint else nz.t())
        return hits > 0

    def weight_grad(self, g: torch.Tensor, x_pre: torch.Tensor) -> torch.Tensor:
        """Return the batch mean of the local outer product ``g x_pre^T`` (= -dE/dW)."""
        return (g.t() @ x_pre) / g.shape[0]  # (n_post, B) @ (B, n_pre)

    def bias_grad(self, g: torch.Tensor) -> torch.Tensor:
        """Return the batch mean of ``g`` (= -dE/db)."""
        return g.mean(0)

    def parameters(self) -> list[torch.Tensor]:
        return [self.weight, self.bias]

    def frozen(self) -> "DenseMap":
        """This map for a stretch in which ``W`` does not change (one PC cycle).

        It also holds ``W^T`` row-major, so that the forward product, like the adjoint,
        is a plain ``(B, n_pre) @ (n_pre, n_post)`` GEMM: at 128-wide sizes the BLAS is
        about 20% slower when it reads ``W`` through a transposed view
        (``benchmarks/kernel_times.py``; at 1024 wide it makes no difference). One
        transposing copy per cycle buys that for every inference step. The copy does not
        see later updates of ``W``: use a frozen map for one cycle only.
        """
        return DenseMap(self.weight, self.bias, self.weight.t().contiguous())


def init_parameters(network, init: str, seed: int, device, dtype) -> list[list[torch.Tensor]]:
    """Draw ``[W_l, b_l]`` for every projection from an explicit seed.

    The draw happens on the CPU in float64 and is then cast, so CPU and CUDA runs, and
    float32 and float64 runs, start from the same weights.
    """
    generator = torch.Generator().manual_seed(seed)
    params = []
    for p in network.projections:
        fan_in, fan_out = p.n_pre, p.n_post
        if init == "xavier_uniform":
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            w = (torch.rand(fan_out, fan_in, generator=generator, dtype=torch.float64) * 2 - 1) * bound
        elif init == "xavier_normal":
            std = math.sqrt(2.0 / (fan_in + fan_out))
            w = torch.randn(fan_out, fan_in, generator=generator, dtype=torch.float64) * std
        elif init == "kaiming_uniform":
            bound = math.sqrt(6.0 / fan_in)
            w = (torch.rand(fan_out, fan_in, generator=generator, dtype=torch.float64) * 2 - 1) * bound
        elif init == "kaiming_normal":
            std = math.sqrt(2.0 / fan_in)
            w = torch.randn(fan_out, fan_in, generator=generator, dtype=torch.float64) * std
        elif init == "uniform_fan_in":  # torch.nn.Linear's and equinox.nn.Linear's default
            bound = 1.0 / math.sqrt(fan_in)
            w = (torch.rand(fan_out, fan_in, generator=generator, dtype=torch.float64) * 2 - 1) * bound
        else:
            raise KeyError(f"unknown init {init!r}; valid: xavier_uniform, xavier_normal, "
                           "kaiming_uniform, kaiming_normal, uniform_fan_in")
        b = torch.zeros(fan_out, dtype=torch.float64)
        if init == "uniform_fan_in":  # biases too, from the same bound
            b = (torch.rand(fan_out, generator=generator, dtype=torch.float64) * 2 - 1) * bound
        params.append([w.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype)])
    return params


def build_maps(network, params) -> list:
    """Return ``maps`` with ``maps[l]`` the projection predicting layer ``l`` (``maps[0]`` is None)."""
    maps = [None]
    for p, (w, b) in zip(network.projections, params):
        if p.kind != "dense":
            raise KeyError(f"unknown projection kind {p.kind!r}; valid: dense")
        maps.append(DenseMap(w, b))
    return maps


def frozen_maps(maps, clamped) -> list:
    """``maps`` for one cycle of fixed weights: a map that runs every step (its input is
    free) holds ``W^T`` row-major (:meth:`DenseMap.frozen`); a clamped input's product
    runs once anyway, so its map stays as it is."""
    return [None] + [m if clamped[l - 1] else m.frozen() for l, m in enumerate(maps) if l]


def params_state(params, network) -> dict:
    """The checkpoint form of ``[[W, b], ...]``: CPU copies and the precisions."""
    return {"W": [w.detach().cpu() for w, _ in params],
            "b": [b.detach().cpu() for _, b in params],
            "prec": [layer.prec for layer in network.layers]}


@torch.no_grad()
def load_params(params, state: dict) -> None:
    """Copy a checkpoint's weights into ``params`` in place, refusing other shapes."""
    if len(state["W"]) != len(params) or len(state["b"]) != len(params):
        raise ValueError(f"checkpoint has {len(state['W'])} projections, the network "
                         f"{len(params)}")
    for (w, b), w_new, b_new in zip(params, state["W"], state["b"]):
        if w.shape != w_new.shape or b.shape != b_new.shape:
            raise ValueError(f"checkpoint weights {tuple(w_new.shape)} do not fit the "
                             f"network's {tuple(w.shape)}")
        w.copy_(w_new)
        b.copy_(b_new)


class PlasticParams:
    """The plastic tensors of a trainer (``self.params``: ``[W_l, b_l]`` per projection of
    ``self.network``), flat for an optimizer and as a checkpoint dict."""

    def parameters(self) -> list[torch.Tensor]:
        """All plastic tensors, ``[W_1, b_1, ..., W_L, b_L]``."""
        return [t for pair in self.params for t in pair]

    def state_dict(self) -> dict:
        return params_state(self.params, self.network)

    def load_state_dict(self, state: dict) -> None:
        load_params(self.params, state)
