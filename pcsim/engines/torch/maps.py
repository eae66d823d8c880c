"""Projection maps for the torch engine, one class per projection kind, in a registry.

A map pairs a projection descriptor (:mod:`pcsim.model.projections`) with its learned
tensors (held in the :class:`~pcsim.engines.torch.params.ParamStore`) and gives what the
dynamics and the op counters need of it: the forward map ``a = W x + b``, its adjoint
``W^T g``, the local gradients of its tensors, and the fan-out of its synapses. A new
projection kind is one class, registered with :func:`register_map` under the
descriptor's ``kind``; nothing else in the engine names a kind. Dense maps live here,
convolutions and pooling in :mod:`pcsim.engines.torch.conv` (registered when the
package is imported).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["MAPS", "register_map", "map_class", "ProjectionMap", "DenseMap", "as_layer",
           "draw", "build_maps", "frozen_maps"]

#: projection kind -> map class
MAPS: dict[str, type] = {}


def register_map(cls):
    """Register a map class under its ``kind`` (a class decorator)."""
    MAPS[cls.kind] = cls
    return cls


def map_class(kind: str) -> type:
    if kind not in MAPS:
        raise KeyError(f"the torch engine has no map for projection kind {kind!r}; "
                       f"valid: {sorted(MAPS)}")
    return MAPS[kind]


def draw(init: str, shape, fan_in: int, fan_out: int, generator) -> torch.Tensor:
    """A float64 tensor of ``shape`` from the initialiser ``init`` with the given fans."""
    if init == "xavier_uniform":
        bound = math.sqrt(6.0 / (fan_in + fan_out))
    elif init == "kaiming_uniform":
        bound = math.sqrt(6.0 / fan_in)
    elif init == "uniform_fan_in":  # torch.nn.Linear's and equinox.nn.Linear's default
        bound = 1.0 / math.sqrt(fan_in)
    elif init == "xavier_normal":
        return torch.randn(shape, generator=generator, dtype=torch.float64) * math.sqrt(
            2.0 / (fan_in + fan_out))
    elif init == "kaiming_normal":
        return torch.randn(shape, generator=generator, dtype=torch.float64) * math.sqrt(
            2.0 / fan_in)
    else:
        raise KeyError(f"unknown init {init!r}; valid: xavier_uniform, xavier_normal, "
                       "kaiming_uniform, kaiming_normal, uniform_fan_in")
    return (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound


class ProjectionMap:
    """What every map kind provides; a kind overrides the methods marked so.

    ``tensors`` maps the descriptor's tensor names (``W``, ``b``, ...) to the store's
    tensors; they are plain leaf tensors (no autograd in the PC loop) that optimizers
    update in place, so every map method sees the update.
    """

    kind = None
    #: tensors that the weight decay ``lambda`` of continuous plasticity applies to
    decayed = ("W",)
    #: the pooling ``P`` after the activation (``forward``/``adjoint``), None: identity
    pool = None

    def __init__(self, projection, tensors: dict):
        self.projection = projection
        self.tensors = tensors

    @classmethod
    def init_tensors(cls, projection, init: str, generator) -> dict:
        """Fresh float64 tensors (override): weights by ``init``, biases zero."""
        raise NotImplementedError

    def forward(self, x):  # override: a = W x + b, x of shape (B, *pre_shape)
        raise NotImplementedError

    def linear(self, x):  # override: W x without the bias (what events add to receivers)
        raise NotImplementedError

    def with_bias(self, u):  # override: u + b
        raise NotImplementedError

    def adjoint(self, g):  # override: W^T g, g of shape (B, *post_shape)
        raise NotImplementedError

    def local_grads(self, g, x_pre) -> dict:  # override: -dE/dtheta per tensor, batch means
        raise NotImplementedError

    def fan_out(self):  # override: nonzero weights leaving each pre neuron, (n_pre,)
        raise NotImplementedError

    def fan_in(self):  # override: nonzero weights an adjoint event of each post neuron reads
        raise NotImplementedError

    def reached(self, mask, adjoint: bool = False):  # override: receivers an event reaches
        raise NotImplementedError

    def active_pairs(self, pre_mask, post_mask):  # override: nonzero-factor gradient terms
        raise NotImplementedError

    def frozen(self, into=None) -> "ProjectionMap":
        """This map for one cycle of fixed weights (a kind may precompute there; given
        ``into``, an earlier frozen copy of this map, it refreshes that one in place)."""
        return self

    def kept_frozen(self) -> "ProjectionMap":
        """A frozen copy of this map kept across cycles and refreshed only when its
        tensors have changed since (their version counters moved; override with
        :meth:`frozen`)."""
        return self

    def sparse_index(self, events, adjoint: bool = False, crossover: float = 1.0):
        """How one tick's :class:`~pcsim.engines.torch.events.Events` can be applied
        alone: ``(index, count, n)``, what :meth:`apply_sparse` takes (the kind's own
        description of where the events are, from the indices the sender computed), the
        units of work the events make and the units of the dense product (their ratio is
        the density the automatic choice compares with ``crossover``; a kind with several
        sparse strategies picks by it), or None when the kind has no sparse path (its
        events are applied by the dense product). ``adjoint``: the events of the post
        side."""
        return None

    def apply_sparse(self, payload, index, adjoint: bool = False):
        """``W payload`` (or ``W^T payload``) from the events at ``index`` alone
        (override with :meth:`sparse_index`)."""
        raise NotImplementedError

    def post_mask(self, mask):
        """A mask over ``a_l``'s positions as one over layer ``l``'s neurons (through the
        pooling: a neuron is marked when any position of its window is)."""
        if self.pool is None:
            return mask
        return F.max_pool2d(mask.to(torch.float32), self.pool.size) > 0


@register_map
class DenseMap(ProjectionMap):
    """A dense projection: ``W`` of shape ``(n_post, n_pre)`` and bias ``b``; a shaped pre
    layer is read flat."""

    kind = "dense"

    def __init__(self, projection, tensors: dict, weight_t: torch.Tensor | None = None):
        super().__init__(projection, tensors)
        self.weight, self.bias = tensors["W"], tensors["b"]
        self._weight_t = weight_t  # a row-major copy of W^T, only in a frozen map
        self._kept, self._kept_version = None, None  # kept_frozen's copy and W's version
        self._pre_shape = tuple(projection.pre_shape)
        self._flat = len(self._pre_shape) == 1

    @classmethod
    def init_tensors(cls, projection, init, generator) -> dict:
        fan_in, fan_out = projection.fans
        w = draw(init, (projection.n_post, projection.n_pre), fan_in, fan_out, generator)
        b = torch.zeros(projection.n_post, dtype=torch.float64)
        if init == "uniform_fan_in":  # biases too, from the same bound
            b = (torch.rand(projection.n_post, generator=generator, dtype=torch.float64)
                 * 2 - 1) * (1.0 / math.sqrt(fan_in))
        return {"W": w, "b": b}

    @property
    def weight_t(self) -> torch.Tensor:
        """``W^T``: a transposed view, or the frozen map's row-major copy."""
        return self.weight.t() if self._weight_t is None else self._weight_t

    def _in(self, x):
        return x if self._flat else x.reshape(x.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``a = W x + b`` for a batch ``x`` of shape ``(batch, *pre_shape)``."""
        return torch.addmm(self.bias, self._in(x), self.weight_t)  # (B, n_pre) @ (n_pre, n_post)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return self._in(x) @ self.weight_t

    def with_bias(self, u):
        return u + self.bias

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        """Return ``W^T g`` for a batch ``g`` of shape ``(batch, n_post)``."""
        out = g @ self.weight  # (B, n_post) @ (n_post, n_pre)
        return out if self._flat else out.reshape(g.shape[0], *self._pre_shape)

    def local_grads(self, g, x_pre) -> dict:
        """``-dE/dW``: the batch mean of the outer product ``g x_pre^T``; ``-dE/db``: of ``g``."""
        return {"W": self.weight_grad(g, x_pre), "b": g.mean(0)}

    def weight_grad(self, g: torch.Tensor, x_pre: torch.Tensor) -> torch.Tensor:
        return (g.t() @ self._in(x_pre)) / g.shape[0]  # (n_post, B) @ (B, n_pre)

    def fan_out(self) -> torch.Tensor:
        return (self.weight != 0).sum(0).to(self.weight.dtype)

    def fan_in(self) -> torch.Tensor:
        return (self.weight != 0).sum(1).to(self.weight.dtype)

    def active_pairs(self, pre_mask, post_mask):
        """Synapse-sample pairs with a nonzero pre and post factor (event-mode learning)."""
        return (self._in(pre_mask).sum(1) * post_mask.sum(1)).sum()

    def sparse_index(self, events, adjoint=False, crossover=1.0):
        """The senders that sent in any sample, whose columns are gathered (a small
        ``(B, k) @ (k, n)`` product), while they are at most ``crossover`` of the layer;
        past that, in a batch, the events themselves sample by sample (the payload as a
        sparse matrix, ``index`` None), which costs about twice as much per event as a
        gathered column, so its density counts double. A batch's events are counted
        first (one reduction): when even their lower bound on the senders is past the
        crossover, the dense product is chosen without looking further."""
        rows, n = events.rows, events.mask[0].numel()
        if rows > 1:
            count = events.count()
            if count > crossover * rows * n:  # >= count / rows senders: too many either way
                return None, 2 * count, rows * n
        index = events.senders()
        if rows == 1 or index.numel() <= crossover * n:
            return index, index.numel(), n
        return None, 2 * count, rows * n

    def apply_sparse(self, payload, index, adjoint=False):
        """The events times the senders' columns of ``W`` (rows of ``W^T``, row-major in
        a frozen map): for one sample a ``(1, k) @ (k, n)`` product of the ``k``
        senders, for a batch the sparse payload times the dense matrix."""
        w = self.weight if adjoint else self.weight_t
        p = self._in(payload)
        if index is not None:
            out = p.index_select(1, index) @ w.index_select(0, index)
        else:
            out = torch.sparse.mm(p.to_sparse(), w)
        return out if not adjoint or self._flat else out.reshape(p.shape[0], *self._pre_shape)

    def reached(self, mask: torch.Tensor, adjoint: bool = False) -> torch.Tensor:
        nz = (self.weight != 0).to(self.weight.dtype)
        hits = self._in(mask).to(nz.dtype) @ (nz if adjoint else nz.t())
        return hits > 0

    def frozen(self, into=None) -> "DenseMap":
        """This map for a stretch in which ``W`` does not change (one PC cycle).

        It also holds ``W^T`` row-major, so that the forward product, like the adjoint,
        is a plain ``(B, n_pre) @ (n_pre, n_post)`` GEMM: at 128-wide sizes the BLAS is
        about 20% slower when it reads ``W`` through a transposed view
        (``benchmarks/kernel_times.py``; at 1024 wide it makes no difference). One
        transposing copy per cycle buys that for every inference step. The copy does not
        see later updates of ``W``: use a frozen map for one cycle only.
        """
        if into is not None:  # the eager fast path keeps its frozen maps across cycles
            into._weight_t.copy_(self.weight.t())
            return into
        return DenseMap(self.projection, self.tensors, self.weight.t().contiguous())


    def kept_frozen(self) -> "DenseMap":
        """The frozen copy event mode's sparse path reads, kept while ``W`` is unchanged:
        an optimizer's step or a load moves the tensor's version counter, and only then
        is ``W^T`` copied again (at batch 1 a copy per sample would cost more than the
        inference it serves)."""
        version = self.weight._version
        if self._kept is None:
            self._kept = self.frozen()
        elif self._kept_version != version:
            self.frozen(into=self._kept)
        self._kept_version = version
        return self._kept


def as_layer(t: torch.Tensor, layer) -> torch.Tensor:
    """A batch ``t`` with each sample in ``layer``'s shape (a reshape; a clear error when
    the sizes differ)."""
    if tuple(t.shape[1:]) == layer.shape:
        return t
    if t[0].numel() != layer.size:
        raise ValueError(f"layer {layer.index} has shape {layer.shape} ({layer.size} "
                         f"neurons); got samples of shape {tuple(t.shape[1:])}")
    return t.reshape(t.shape[0], *layer.shape)


def build_maps(network, store) -> list:
    """``maps[l]`` for projection ``l`` over the store's tensors (``maps[0]`` is None)."""
    return [None] + [map_class(p.kind)(p, store.projection(p.index))
                     for p in network.projections]


def frozen_maps(maps, clamped, into=None) -> list:
    """``maps`` for one cycle of fixed weights: a map that runs every step (its input is
    free) is :meth:`~ProjectionMap.frozen`; a clamped input's product runs once anyway,
    so its map stays as it is. ``into``: an earlier result for the same maps, refreshed
    in place (and returned)."""
    if into is not None:
        for l in range(1, len(maps)):
            if not clamped[l - 1]:
                maps[l].frozen(into[l])
        return into
    return [None] + [m if clamped[l - 1] else m.frozen() for l, m in enumerate(maps) if l]
