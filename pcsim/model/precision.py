"""Learned precision descriptors (SPEC 2.4): what a layer's learned variances are, as
pure data. The engines pair a descriptor with a class of their own kind
(:mod:`pcsim.engines.torch.params`, ``PRECISIONS``).

The built-in kind is ``log_variance``: each variance is held as ``s = ln sigma2`` and the
precision is ``prec = exp(-s)``. Why log-variance, of the three choices SPEC 2.4 allows:

1. **Positive by construction.** Any real ``s`` is a valid variance, so no update (an
   optimizer's, or an Euler step's) can make a precision negative or need an inverse
   of anything but a scalar exponential; ``sigma2_min`` is a plain bound on ``s``
   (``s >= ln sigma2_min``), applied after every update, and "at the floor" is exact.
2. **Bounded downward step.** The rate below is ``0.5 (<r^2> / sigma2 - 1) >= -0.5``,
   so one step of size ``eta`` lowers ``s`` by at most ``eta / 2``: a variance can only
   approach zero geometrically, never jump through it (a step in ``sigma2`` itself
   crosses zero whenever ``eta`` exceeds ``2 sigma2^3 / (sigma2 - <r^2>)``).
3. **Scale-free.** The rate depends on ``<r^2> / sigma2`` only, so one learning rate
   suits layers whose errors differ by orders of magnitude; softplus keeps ``sigma2``'s
   own scale near zero, and the closed-form running average has no gradient for an
   optimizer (the discrete cycle could not learn it "like a weight").

The rule. Variance ``j`` is shared by ``m_j`` neurons (``m = n_l`` per layer, 1 per
neuron, ``H * W`` per channel of a ``(C, H, W)`` layer). ``E`` keeps its
``-0.5 sum_i ln prec_i = +0.5 sum_i s_j`` term, so

    -dE/ds_j = 0.5 * sum_{i in j} ( prec_j (x_i - mu_i)^2 - 1 )          (batch mean)

and pcsim's local gradient, and its ODE, use that per neuron sharing the variance
(:func:`pcsim.model.equations.log_variance_rate`):

    tau_prec ds_j/dt = -(1/m_j) dE/ds_j = 0.5 * ( <(x - mu)^2>_j * exp(-s_j) - 1 )

with ``<.>_j`` the mean over the batch and the ``m_j`` neurons. Dividing by ``m_j`` is a
constant per tensor (SGD sees ``lr / m_j``; Adam is invariant to it), so one learning
rate fits every granularity and layer size. In ``sigma2 = e^s`` this ODE reads
``tau_prec dsigma2/dt = 0.5 (<(x - mu)^2> - sigma2)``: SPEC 2.4's flow times the
positive factor ``sigma2^2`` (a change of metric: the same fixed point, the running
second moment ``sigma2 = <(x - mu)^2>``, and the same direction everywhere), relaxing
linearly with time constant ``2 tau_prec`` -- Ofner et al. 2021's running average as a
gradient flow. It is local: error neuron ``i`` uses only its own variance, and the
variance only its own neurons' errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Optional

__all__ = ["PRECISION_KINDS", "GRANULARITIES", "LogVariance", "precision_class",
           "register_precision_kind"]

#: ``per``: one variance per layer, per neuron, or per channel of a (C, H, W) layer
GRANULARITIES = ("layer", "neuron", "channel")

#: kind name -> descriptor class
PRECISION_KINDS: dict[str, type] = {}


def register_precision_kind(cls):
    """Register a learned-precision descriptor under its ``kind`` (a class decorator)."""
    PRECISION_KINDS[cls.kind] = cls
    return cls


def precision_class(kind: str) -> type:
    """The descriptor class of ``kind``, or a clear error listing the known kinds."""
    if kind not in PRECISION_KINDS:
        raise KeyError(f"unknown precision kind {kind!r}; valid: {sorted(PRECISION_KINDS)}")
    return PRECISION_KINDS[kind]


@register_precision_kind
@dataclass(frozen=True)
class LogVariance:
    """A layer's learned variances, held as ``s = ln sigma2`` (module docstring).

    Parameters
    ----------
    per : {"layer", "neuron", "channel"}
        One variance per layer, per neuron, or per channel of a ``(C, H, W)`` layer.
    sigma2_min : float, default 1e-4
        The floor: every variance stays ``>= sigma2_min`` (``s`` is clipped after each
        update).
    init : float, default 1
        The starting variance (every ``sigma2 = init``).
    tau_prec : float or None, s
        None: the variances learn as the discrete cycle's learning step (the optimizer,
        like the weights; with a finite ``tau_w`` also continuously at ``tau_w``).
        A time: they learn continuously, ``tau_prec ds/dt = rate``, at every Euler step
        of the dynamics, and no optimizer sees them.
    max_floor_share : float in (0, 1], default 0.5
        The guard: more than this share of the layer's variances at the floor stops the
        run (1: only a non-finite precision stops it).
    """

    kind: ClassVar[str] = "log_variance"

    per: str = "layer"
    sigma2_min: float = 1e-4
    init: float = 1.0
    tau_prec: Optional[float] = None
    max_floor_share: float = 0.5

    def __post_init__(self):
        if self.per not in GRANULARITIES:
            raise ValueError(f"precision.per {self.per!r}: valid: {', '.join(GRANULARITIES)}")
        if not (self.sigma2_min > 0 and math.isfinite(self.sigma2_min)):
            raise ValueError(f"precision.sigma2_min must be finite and > 0, got {self.sigma2_min}")
        if not (math.isfinite(self.init) and self.init >= self.sigma2_min):
            raise ValueError(f"precision.init (the starting variance, {self.init}) must be "
                             f"finite and >= precision.sigma2_min ({self.sigma2_min})")
        if self.tau_prec is not None and not (0 < self.tau_prec < math.inf):
            raise ValueError(f"precision.tau_prec must be a finite time > 0, or null (learned "
                             f"by the learning step), got {self.tau_prec}")
        if not 0 < self.max_floor_share <= 1:
            raise ValueError(f"precision.max_floor_share must lie in (0, 1], got "
                             f"{self.max_floor_share}")

    @property
    def log_floor(self) -> float:
        """``ln sigma2_min``, the bound on ``s``."""
        return math.log(self.sigma2_min)

    def param_shape(self, layer_shape: tuple) -> tuple:
        """The shape of ``s`` for a layer of ``layer_shape``: ``()`` per layer, the layer's
        shape per neuron, ``(C, 1, 1)`` per channel (it broadcasts over the layer)."""
        if self.per == "layer":
            return ()
        if self.per == "neuron":
            return tuple(layer_shape)
        if len(layer_shape) != 3:
            raise ValueError(f"precision.per 'channel' needs a (C, H, W) layer; this layer "
                             f"has shape {tuple(layer_shape)} (use per: layer or neuron)")
        return (layer_shape[0], 1, 1)

    def shared_by(self, layer_shape: tuple) -> int:
        """``m``: how many neurons share each variance."""
        return math.prod(layer_shape) // math.prod(self.param_shape(layer_shape))
