"""The named parameter store of a torch trainer, and learned per-layer precisions.

Every learned tensor has one name: ``W_l``, ``b_l`` (the tensors projection ``l``'s map
kind declares), and per layer the tensors of a learned precision (``log_sigma2_l``, ...).
The store draws them from one seed, hands each map and each precision its own, lists
them for an optimizer (projections in order, then layers), writes and reads the
checkpoint form with a finiteness guard; :func:`flatten_named` makes one flat view of
gradients by name for a single all-reduce.

A new learned per-layer parameter is a :class:`LearnedPrecision` subclass registered
with :func:`register_precision` under the ``kind`` of the layer's precision descriptor:
its tensors, the precision they give, and their local gradients. The built-in kind is
:class:`LogVarianceTorch` (``log_variance``; the parameterisation and its rule are
explained in :mod:`pcsim.model.precision`).
"""

from __future__ import annotations

from typing import Iterator, Optional

import math

import torch

from pcsim.engines.torch.maps import map_class
from pcsim.model import equations as eq

__all__ = ["PRECISIONS", "register_precision", "LearnedPrecision", "LogVarianceTorch",
           "precision_metrics",
           "ParamStore",
           "build_precisions", "project_precisions", "check_precisions", "StoreOwner", "store_name",
           "flatten_named", "unflatten_named"]

#: learned-precision kind -> class
PRECISIONS: dict[str, type] = {}


def register_precision(cls):
    """Register a learned-precision class under its ``kind`` (a class decorator)."""
    PRECISIONS[cls.kind] = cls
    return cls


class LearnedPrecision:
    """A layer's precision as a function of learned tensors (SPEC 2.4).

    ``value()`` broadcasts over the layer's neurons (a scalar, one per neuron, or one per
    channel); ``local_grads(x, mu)`` is ``-dE/dtheta`` per tensor (up to a positive
    constant per tensor), batch means, from the layer's own values and predictions
    only. ``tau`` is its continuous-time constant: None, it learns as the discrete
    cycle's learning step (the optimizer) and, with a finite ``tau_w``, continuously at
    ``tau_w``; a time, it learns continuously at every Euler step, and no optimizer sees
    it. ``project()`` puts the tensors back into their allowed range after an update
    (a floor); ``problem()`` says what is wrong with the current values (the guard), or
    None.
    """

    kind = None
    tau: Optional[float] = None

    def __init__(self, layer, tensors: dict):
        self.layer, self.tensors = layer, tensors

    @property
    def continuous(self) -> bool:
        """True when it learns by its own ODE (``tau`` set) and not by the learning step."""
        return self.tau is not None

    @property
    def n_values(self) -> int:
        """How many learned numbers it holds (``prec_updates`` per update, SPEC 4)."""
        return sum(t.numel() for t in self.tensors.values())

    def project(self) -> None:  # override: clip to the allowed range, in place
        pass

    def variance(self):
        """``sigma2 = 1 / prec``, in the shape of ``value()``."""
        return self.value().reciprocal()

    def at_floor(self):
        """Which variances sit at their floor (bool, the shape of ``variance()``)."""
        return torch.zeros_like(self.variance(), dtype=torch.bool)

    def summary(self) -> dict:
        """The smallest and largest variance and the share at the floor, as floats (what
        a run's metrics record per epoch and layer)."""
        var = self.variance().detach()
        return {"min": float(var.min()), "max": float(var.max()),
                "floor_share": float(self.at_floor().to(torch.float64).mean())}

    def problem(self) -> Optional[str]:
        """What stops the run, or None: here, a precision that is not finite and > 0."""
        prec = self.value()
        bad = int((~(torch.isfinite(prec) & (prec > 0))).sum())
        if bad:
            return (f"{bad} of {prec.numel()} precisions are not finite and positive: the "
                    "learned precision diverged; likely cause: learning.lr (or the "
                    "precision's tau_prec) too large for it")
        return None

    @classmethod
    def init_tensors(cls, layer) -> dict:  # override: float64 tensors by name
        raise NotImplementedError

    def value(self):  # override
        raise NotImplementedError

    def local_grads(self, x, mu) -> dict:  # override
        raise NotImplementedError


@register_precision
class LogVarianceTorch(LearnedPrecision):
    """``log_variance`` (:class:`pcsim.model.precision.LogVariance`): ``s = ln sigma2``
    per layer, neuron or channel; ``prec = exp(-s)``; floor ``s >= ln sigma2_min``.

    ``local_grads`` is :func:`pcsim.model.equations.log_variance_rate` of the batch's
    squared errors, averaged over the neurons sharing each variance: ``-dE/ds`` divided
    by their number ``m`` (a constant per tensor; see the module docstring of
    :mod:`pcsim.model.precision`).
    """

    kind = "log_variance"

    def __init__(self, layer, tensors: dict):
        super().__init__(layer, tensors)
        self.spec = layer.precision
        self.tau = self.spec.tau_prec
        self.floor = self.spec.log_floor

    @classmethod
    def init_tensors(cls, layer) -> dict:
        spec = layer.precision
        shape = spec.param_shape(layer.shape)
        return {"log_sigma2": torch.full(shape, math.log(spec.init), dtype=torch.float64)}

    def value(self):
        return self.tensors["log_sigma2"].neg().exp()

    def variance(self):
        """``sigma2 = exp(s)``, in the shape of ``s``."""
        return self.tensors["log_sigma2"].exp()

    def mean_sq_error(self, x, mu):
        """``<(x - mu)^2>`` over the batch and the neurons sharing each variance, in the
        shape of ``s``."""
        sq = ((x - mu) ** 2).mean(0)  # (batch, *shape) -> shape
        if self.spec.per == "layer":
            return sq.mean()
        if self.spec.per == "channel":
            return sq.mean(dim=(1, 2), keepdim=True)  # (C, H, W) -> (C, 1, 1)
        return sq

    def local_grads(self, x, mu) -> dict:
        s = self.tensors["log_sigma2"]
        return {"log_sigma2": eq.log_variance_rate(self.mean_sq_error(x, mu), s)}

    def project(self) -> None:
        self.tensors["log_sigma2"].clamp_(min=self.floor)

    def at_floor(self):
        """Which variances sit at ``sigma2_min`` (bool, the shape of ``s``)."""
        s = self.tensors["log_sigma2"]
        slack = 4 * torch.finfo(s.dtype).eps * max(1.0, abs(self.floor))
        return s <= self.floor + slack

    def problem(self) -> Optional[str]:
        s = self.tensors["log_sigma2"]
        prec = self.value()
        bad = int((~(torch.isfinite(s) & torch.isfinite(prec) & (prec > 0))).sum())
        if bad:
            return (f"{bad} of its {s.numel()} variance(s) are not finite (or their precision "
                    "is 0): the learned precision diverged; likely cause: learning.lr (or "
                    "tau_prec) too large for the variances, or non-finite activity")
        share = float(self.at_floor().to(s.dtype).mean())
        if share > self.spec.max_floor_share:
            return (f"{share:.0%} of its {s.numel()} variance(s) sit at the floor "
                    f"sigma2_min = {self.spec.sigma2_min:g} (more than max_floor_share = "
                    f"{self.spec.max_floor_share:g}): the precision is collapsing; likely "
                    "cause: a learning rate too large for the variances (each step "
                    "overshoots), or prediction errors that vanish in this layer; lower "
                    "learning.lr (or raise tau_prec), or raise sigma2_min")
        return None


def store_name(local: str, index: int) -> str:
    """The store's name of tensor ``local`` of projection or layer ``index`` (``W_2``)."""
    return f"{local}_{index}"



class ParamStore:
    """Named learned tensors of ``network``, in optimizer order.

    Parameters
    ----------
    network : pcsim.model.Network
    tensors : dict of str -> tensor
        Every tensor the network's projections and learned precisions declare.
    """

    def __init__(self, network, tensors: dict):
        self.network = network
        self._tensors = dict(tensors)
        self._owners = {}  # name -> ("projection" | "layer", index, local name)
        for p in network.projections:
            for local in self._local_names_of_projection(p):
                self._owners[store_name(local, p.index)] = ("projection", p.index, local)
        for layer in network.layers:
            for local in self._local_names_of_layer(layer):
                self._owners[store_name(local, layer.index)] = ("layer", layer.index, local)
        if list(self._owners) != list(self._tensors):
            raise ValueError(f"the tensors {list(self._tensors)} are not the network's "
                             f"{list(self._owners)}")

    @staticmethod
    def _local_names_of_projection(p):
        return list(p.tensors)

    @staticmethod
    def _local_names_of_layer(layer):
        if layer.precision is None:
            return []
        return list(PRECISIONS[layer.precision.kind].init_tensors(layer))

    @classmethod
    def initial(cls, network, init: str, seed: int, device, dtype) -> "ParamStore":
        """Draw every tensor from an explicit seed: on the CPU in float64, then cast, so
        CPU and CUDA runs, and float32 and float64 runs, start from the same weights."""
        generator = torch.Generator().manual_seed(seed)
        tensors = {}
        for p in network.projections:
            for local, t in map_class(p.kind).init_tensors(p, init, generator).items():
                tensors[store_name(local, p.index)] = t
        for layer in network.layers:
            if layer.precision is not None:
                kind = _precision_class(layer)
                for local, t in kind.init_tensors(layer).items():
                    tensors[store_name(local, layer.index)] = t
        return cls(network, {k: t.to(device=device, dtype=dtype) for k, t in tensors.items()})

    # ------------------------------------------------------------------ access
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def __contains__(self, name) -> bool:
        return name in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def items(self):
        return self._tensors.items()

    def parameters(self) -> list[torch.Tensor]:
        """Every tensor, projections in order (``W_1, b_1, ..., W_L, b_L``), then layers."""
        return list(self._tensors.values())

    def _owned(self, kind, index) -> dict:
        return {local: self._tensors[name] for name, (k, i, local) in self._owners.items()
                if k == kind and i == index}

    def projection(self, l: int) -> dict:
        """Projection ``l``'s tensors by their local names (``{"W": ..., "b": ...}``)."""
        return self._owned("projection", l)

    def layer(self, l: int) -> dict:
        """Layer ``l``'s learned tensors by their local names."""
        return self._owned("layer", l)

    def names_of(self, kind: str, index: int) -> list[str]:
        """Store names of what projection (``kind="projection"``) or layer ``index`` owns."""
        return [name for name, (k, i, _) in self._owners.items() if k == kind and i == index]

    def clone(self) -> "ParamStore":
        return ParamStore(self.network, {k: t.clone() for k, t in self._tensors.items()})

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """CPU copies by name, and the layers' fixed precisions (for the record)."""
        return {"tensors": {k: t.detach().cpu().clone() for k, t in self._tensors.items()},
                "prec": [layer.prec for layer in self.network.layers]}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Copy a checkpoint's tensors in place, refusing other names or shapes."""
        tensors = state["tensors"] if "tensors" in state else _legacy(state)
        if list(tensors) != list(self._tensors):
            raise ValueError(f"the checkpoint holds {list(tensors)}, the network "
                             f"{list(self._tensors)}")
        for name, new in tensors.items():
            t = self._tensors[name]
            if t.shape != new.shape:
                raise ValueError(f"checkpoint tensor {name} has shape {tuple(new.shape)}, "
                                 f"the network's {tuple(t.shape)}")
            t.copy_(new)

def flatten_named(tensors: dict) -> torch.Tensor:
    """One flat tensor of ``tensors`` (by name, in their order): one all-reduce, not one
    per tensor."""
    return torch.cat([t.reshape(-1) for t in tensors.values()])


def unflatten_named(flat: torch.Tensor, like: dict) -> dict:
    """The inverse of :func:`flatten_named`: views of ``flat`` by the names and shapes of
    ``like``."""
    out, offset = {}, 0
    for name, t in like.items():
        out[name] = flat[offset:offset + t.numel()].view_as(t)
        offset += t.numel()
    return out


def _legacy(state: dict) -> dict:
    """A checkpoint of the ``{"W": [...], "b": [...]}`` form, by name."""
    out = {}
    for l, (w, b) in enumerate(zip(state["W"], state["b"]), start=1):
        out[f"W_{l}"], out[f"b_{l}"] = w, b
    return out


def _precision_class(layer):
    kind = layer.precision.kind
    if kind not in PRECISIONS:
        raise KeyError(f"layer {layer.index}: the torch engine has no learned precision "
                       f"{kind!r}; valid: {sorted(PRECISIONS)}")
    return PRECISIONS[kind]


def project_precisions(precisions) -> None:
    """Put every learned precision of ``precisions`` (per layer, None: fixed) back above
    its floor after an update."""
    for p in precisions:
        if p is not None:
            p.project()


def check_precisions(precisions, when: str, eta_x: Optional[float] = None) -> None:
    """The guard of SPEC 2.4: raise FloatingPointError naming the layer, the step and the
    likely cause when a learned precision is not finite, or too much of a layer sits at
    its floor.

    Parameters
    ----------
    precisions : list
        Per layer, None (fixed) or a :class:`LearnedPrecision`.
    when : str
        Where in the run (``"before learning step 12"``), for the message.
    eta_x : float, optional
        ``dt / tau_x``: when a layer's floor allows ``prec * eta_x > 2`` (an Euler step of
        its value neurons that overshoots), the message says so.
    """
    for p in precisions:
        if p is None:
            continue
        found = p.problem()
        if found is None:
            continue
        floor = getattr(getattr(p.layer, "precision", None), "sigma2_min", None)
        if eta_x and floor is not None and floor < eta_x / 2:
            found += (f"; note that sigma2_min = {floor:g} is below dt / (2 tau_x) = "
                      f"{eta_x / 2:g}: at such variances prec * dt / tau_x > 2 and the Euler "
                      "step of inference overshoots, so activity can diverge before the "
                      "floor is reached (raise sigma2_min to at least that)")
        raise FloatingPointError(f"learned precision of layer {p.layer.index}, {when}: {found}")


def precision_metrics(precisions) -> dict:
    """Per learned layer ``l``: ``variance_min_l<l>``, ``variance_max_l<l>`` and
    ``variance_floor_share_l<l>`` (a run's metrics record them every epoch)."""
    return {f"variance_{key}_l{p.layer.index}": value
            for p in precisions if p is not None for key, value in p.summary().items()}


def build_precisions(network, store: ParamStore) -> list:
    """Per layer: None (its fixed ``prec``), or its learned precision over the store."""
    return [None if layer.precision is None
            else _precision_class(layer)(layer, store.layer(layer.index))
            for layer in network.layers]


class StoreOwner:
    """A trainer whose learned tensors are ``self.params`` (a :class:`ParamStore`)."""

    def parameters(self) -> list[torch.Tensor]:
        return self.params.parameters()

    def state_dict(self) -> dict:
        return self.params.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.params.load_state_dict(state)
