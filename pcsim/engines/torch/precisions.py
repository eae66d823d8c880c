"""Learned per-layer precisions of the torch trainers (SPEC 2.4): the classes that pair
with a layer's precision descriptor (:mod:`pcsim.model.precision`), the floor, the guard
and the per-epoch summary.

A new learned per-layer parameter is a :class:`LearnedPrecision` subclass registered
with :func:`register_precision` under the ``kind`` of the layer's precision descriptor:
its tensors, the precision they give, and their local gradients. The built-in kind is
:class:`LogVarianceTorch` (``log_variance``; the parameterisation and its rule are
explained in :mod:`pcsim.model.precision`).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from pcsim.model import equations as eq

__all__ = ["PRECISIONS", "register_precision", "LearnedPrecision", "LogVarianceTorch",
           "precision_class", "precision_metrics", "build_precisions", "project_precisions",
           "check_precisions"]

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

    def per_neuron(self, t):
        """``t`` (the shape of ``value()``: a scalar, per neuron or per channel) as one
        value per neuron of the layer, flat in its C-order (the data's layout)."""
        return t.expand(self.layer.shape).reshape(-1)

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


def precision_class(layer):
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


def build_precisions(network, store) -> list:
    """Per layer: None (its fixed ``prec``), or its learned precision over the store."""
    return [None if layer.precision is None
            else precision_class(layer)(layer, store.layer(layer.index))
            for layer in network.layers]
