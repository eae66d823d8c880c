"""The ``network`` section: layers with their shapes, projections, activations and
(learned) precisions, checked to chain."""

from __future__ import annotations

import math
from typing import Annotated, Literal, Optional

from pydantic import BeforeValidator, Field, model_validator

from pcsim.config.base import Seconds
from pcsim.config.base import Section as _Section

__all__ = ["ACTIVATIONS", "ProjectionConfig", "PrecisionConfig", "LayerConfig", "NetworkConfig"]

#: Activation names accepted in ``network.layers[*].activation``; defined in
#: :mod:`pcsim.model.activations` (checked against it by tests).
ACTIVATIONS = ("identity", "tanh", "relu", "sigmoid", "leaky_relu", "gelu")


def _projection(value):
    """``projection: dense`` is short for ``projection: {kind: dense}``."""
    return {"kind": value} if isinstance(value, str) else value


class ProjectionConfig(_Section):
    """The map predicting a layer from the one below: ``dense``, ``conv2d`` with its
    kernel geometry and an optional pooling after the activation (SPEC 1), or
    ``conv_transpose2d`` (a decoder's upsampling: the adjoint of a convolution)."""

    kind: Literal["dense", "conv2d", "conv_transpose2d"] = "dense"
    kernel: int = Field(3, gt=0, description="conv2d: square kernel size k")
    stride: int = Field(1, gt=0, description="conv2d: stride")
    padding: int = Field(0, ge=0, description="conv2d: zero padding on each side")
    pool: Literal["none", "avg", "max"] = Field(
        "none", description="conv2d: pooling P after the activation, mu = P(f(a))")
    pool_size: int = Field(2, gt=0, description="conv2d: pooling window and stride")
    output_padding: int = Field(0, ge=0, description="conv_transpose2d: extra rows and "
                                "columns on one side of the output (below the stride)")

    @model_validator(mode="after")
    def _dense_has_no_geometry(self):
        if self.kind == "dense":
            odd = [k for k, v in (("kernel", 3), ("stride", 1), ("padding", 0),
                                  ("pool", "none"), ("pool_size", 2), ("output_padding", 0))
                   if getattr(self, k) != v]
            if odd:
                raise ValueError(f"a dense projection has no {', '.join(odd)} "
                                 "(use kind: conv2d)")
        if self.kind == "conv2d" and self.output_padding:
            raise ValueError("output_padding belongs to conv_transpose2d, not conv2d")
        if self.kind == "conv_transpose2d" and self.pool != "none":
            raise ValueError(f"a conv_transpose2d projection has no pooling (got pool "
                             f"{self.pool!r})")
        return self


class PrecisionConfig(_Section):
    """A layer's learned precision (SPEC 2.4): variances ``sigma2 = exp(s)`` held as their
    logarithm ``s`` (why: :mod:`pcsim.model.precision`), with a floor and a guard.

    ``precision: {kind: log_variance, per: neuron, sigma2_min: 1e-3}``; ``precision:
    log_variance`` is short for ``{kind: log_variance}``. The layer's ``prec`` gives the
    starting precision unless ``init`` (a variance) is set.
    """

    kind: Literal["log_variance"] = Field(
        "log_variance", description="parameterisation: log_variance (s = ln sigma2, "
        "prec = exp(-s))")
    per: Literal["layer", "neuron", "channel"] = Field(
        "layer", description="one variance per layer, per neuron, or per channel of a "
        "(C, H, W) layer")
    sigma2_min: float = Field(1e-4, gt=0, description="floor of every variance")
    init: Optional[float] = Field(None, gt=0, description="starting variance; default "
                                  "1 / prec of the layer")
    tau_prec: Optional[Seconds] = Field(
        None, gt=0, description="null: learned by the discrete cycle's learning step (the "
        "optimizer, like the weights); a time (e.g. 200 ms): learned continuously, "
        "tau_prec ds/dt = 0.5 (<(x - mu)^2> exp(-s) - 1), at every Euler step")
    max_floor_share: float = Field(
        0.5, gt=0, le=1, description="guard: stop the run when more than this share of the "
        "layer's variances sit at sigma2_min (1: only non-finite precisions stop it)")

    @model_validator(mode="after")
    def _finite(self):
        if not math.isfinite(self.sigma2_min):
            raise ValueError("precision.sigma2_min must be finite")
        if self.tau_prec is not None and not math.isfinite(self.tau_prec):
            raise ValueError("precision.tau_prec must be finite (null: learned by the "
                             "learning step)")
        if self.init is not None and not (math.isfinite(self.init)
                                          and self.init >= self.sigma2_min):
            raise ValueError(f"precision.init {self.init} (the starting variance) must be "
                             f"finite and >= precision.sigma2_min {self.sigma2_min}")
        return self


def _precision(value):
    """``precision: log_variance`` is short for ``precision: {kind: log_variance}``."""
    return {"kind": value} if isinstance(value, str) else value


class LayerConfig(_Section):
    """One layer ``l``: value neurons of a ``shape`` (``size: n`` is the flat ``(n,)``), as
    many error neurons for l >= 1, and the projection that predicts it from layer l-1."""

    size: Optional[int] = Field(None, gt=0, description="number of value neurons n_l (a flat layer)")
    shape: Optional[tuple[Annotated[int, Field(gt=0)], ...]] = Field(
        None, min_length=1, description="the layer's tensor shape: (n,) or (C, H, W); "
        "give size or shape")
    projection: Annotated[ProjectionConfig, BeforeValidator(_projection)] = Field(
        default_factory=ProjectionConfig,
        description="the map predicting this layer from the one below (l >= 1): dense, or "
        "{kind: conv2d, kernel, stride, padding, pool, pool_size}")
    activation: Literal[ACTIVATIONS] = Field(
        "identity", description="f_l, applied to a_l = W_l x_{l-1} + b_l (unused for l = 0)")
    prec: float = Field(1.0, gt=0, description="precision prec_l = 1/sigma_l^2 (SPEC 1); "
                        "with a learned precision, its starting value")
    precision: Annotated[Optional[PrecisionConfig], BeforeValidator(_precision)] = Field(
        None, description="learned precision (SPEC 2.4): {kind: log_variance, per: "
        "layer|neuron|channel, sigma2_min, init, tau_prec, max_floor_share}; null: prec "
        "stays fixed")

    @model_validator(mode="after")
    def _size_or_shape(self):
        if self.size is None and self.shape is None:
            raise ValueError("give size (a flat layer of n neurons) or shape ((n,) or "
                             "(C, H, W))")
        if self.size is None:
            object.__setattr__(self, "size", math.prod(self.shape))
        elif self.shape is None:
            object.__setattr__(self, "shape", (self.size,))
        elif math.prod(self.shape) != self.size:
            raise ValueError(f"size {self.size} does not match shape {self.shape}")
        if self.precision is not None:
            if self.precision.per == "channel" and len(self.shape) != 3:
                raise ValueError(f"precision.per 'channel' needs a (C, H, W) layer; this "
                                 f"layer has shape {self.shape} (use per: layer or neuron)")
            init = 1.0 / self.prec if self.precision.init is None else self.precision.init
            if init < self.precision.sigma2_min:
                raise ValueError(f"precision: the starting variance 1 / prec = {init:g} is "
                                 f"below precision.sigma2_min {self.precision.sigma2_min:g} "
                                 "(lower sigma2_min, or set precision.init)")
        return self


class NetworkConfig(_Section):
    """The chain of layers ``l = 0..L`` (SPEC section 1)."""

    mode: Literal["supervised", "generative"] = "supervised"
    layers: list[LayerConfig] = Field(min_length=2)
    init: Literal["xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal",
                  "uniform_fan_in"] = (
        "xavier_uniform")
    prec_0: float = Field(1.0, gt=0, description="prior precision of a free x_0 (generative)")

    @model_validator(mode="after")
    def _no_precision_on_layer_0(self):
        if self.layers[0].precision is not None:
            raise ValueError("layers.0.precision: layer 0 has no error neurons to weight "
                             "(its prior, in generative mode, is prec_0); learn the "
                             "precision of layers 1..L")
        return self
