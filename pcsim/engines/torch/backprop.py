"""The backprop baseline: the same network, weights and data pipeline, trained by
autograd on the output energy ``0.5 prec_L ||target - f_L(a_L)||^2`` (batch mean).

With ``compile`` (``run.compile``) it gets the compiled path the PC engine has, so that
PC/BP wall-time ratios compare equal engines: the loss is handed to ``torch.compile``
(AOTAutograd fuses the forward and the backward graphs) and the optimizer's update is
the PC engine's :class:`~pcsim.engines.torch.optim.GraphUpdate`, compiled once."""

from __future__ import annotations

import torch

from pcsim.engines.base import BatchResult, capabilities
from pcsim.engines.torch import accounting as acc
from pcsim.engines.torch.maps import as_layer, build_maps
from pcsim.engines.torch.optim import GraphUpdate
from pcsim.engines.torch.params import ParamStore, StoreOwner
from pcsim.model import equations as eq

__all__ = ["BackpropTrainer"]


class BackpropTrainer(StoreOwner):
    """Train a :class:`~pcsim.model.Network` by backprop (autograd is fine here).

    The parameters are drawn by the same :meth:`ParamStore.initial` as the PC engine's,
    so a PC run and a BP run with one seed start from identical weights.
    """

    name = "bp"
    capabilities = capabilities("torch", "bp")

    def __init__(self, network, *, device="cpu", dtype=torch.float32, seed=0,
                 init="xavier_uniform", params=None, compile=False):
        if network.learned_precision:  # a network built without a config is checked here
            raise ValueError("learning.rule 'bp' keeps every precision fixed "
                             "(network.layers.*.precision); learned precision trains with "
                             "learning.rule 'pc'")
        self.network = network
        self.device = torch.device(device)
        self.dtype = dtype
        self.L = network.n_layers
        self.params = params or ParamStore.initial(network, init, seed, self.device, dtype)
        for t in self.parameters():
            t.requires_grad_(True)
        self.maps = build_maps(network, self.params)
        self.precisions = [None] * (self.L + 1)  # every precision is the layer's fixed one
        self.recorder = None
        self.grad_reducer = None
        self.compile = compile
        self._compiled_loss = None
        self._update = None  # (GraphUpdate, its compiled apply) for one optimizer

    @classmethod
    def from_config(cls, config, network=None, device=None):
        from pcsim.engines.torch.device import resolve_device
        from pcsim.model import Network
        network = network or Network.from_config(config.network)
        return cls(network, device=device or resolve_device(config.run.device),
                   dtype=getattr(torch, config.run.dtype), seed=config.learning.seed,
                   init=config.network.init, compile=config.run.compile)

    def forward(self, x0):
        x = as_layer(torch.as_tensor(x0, device=self.device, dtype=self.dtype),
                     self.network.layers[0])
        for l in range(1, self.L + 1):
            x, _ = eq.prediction(
                self.network.layers[l].activation.f(self.maps[l].forward(x), torch),
                self.maps[l].pool)
        return x

    @torch.no_grad()
    def predict(self, x0):
        if self.recorder is not None:
            self._count_forward(len(x0))
        return self.forward(x0)

    @torch.no_grad()
    def reconstruct(self, x):
        """An autoencoder's reconstruction: the forward pass of ``x`` itself."""
        return self.predict(x)

    def _count_forward(self, rows):
        """Dense counts of a forward pass (SPEC 4), reported to the recorder."""
        rec, size = self.recorder, acc.itemsize(self.dtype)
        for p in self.network.projections:
            acc.count_dense(rec, 0, f"W_{p.index}", rows, p.macs, p.n_pre, size,
                            reach=self.maps[p.index].fan_out().sum())
            acc.count_updates(rec, 0, f"value_l{p.index}", rows * p.n_post)

    def _count_backward(self, rows):
        """Dense counts of backprop's backward pass and weight gradients."""
        rec, size = self.recorder, acc.itemsize(self.dtype)
        for p in self.network.projections:
            m = self.maps[p.index]
            if p.index >= 2:  # gradient w.r.t. the input of projection l (not needed for x_0)
                acc.count_backward(rec, f"W_{p.index}^T", rows * p.macs,
                                   rows * m.fan_in().sum())
            n = rows * p.grad_macs
            acc.count_learning(rec, f"W_{p.index}", n,
                               sum(t.numel() for t in m.tensors.values()), size, dense_macs=n)

    def loss(self, x0, target):
        top = self.network.layers[self.L]
        target = as_layer(torch.as_tensor(target, device=self.device, dtype=self.dtype), top)
        return eq.layer_energy(target, self.forward(x0), top.prec, top.size).mean()

    def train_batch(self, x0, target, optimizer=None, hooks=()) -> BatchResult:
        """One backprop step; returns the batch-mean output energy before the step."""
        loss = self._loss()(x0, target)
        if not bool(torch.isfinite(loss)):  # guard before the learning step touches a weight
            bad = [k for k, t in self.params.items() if not bool(torch.isfinite(t).all())]
            raise FloatingPointError(
                f"backprop loss is {float(loss)}; non-finite parameters: {bad or 'none'}; "
                f"non-finite inputs: {not bool(torch.isfinite(x0).all())}")
        if self.recorder is not None:
            self._count_forward(len(x0))
            self._count_backward(len(x0))
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_reducer is not None:  # data-parallel: average over all ranks
                grads = self.grad_reducer({k: t.grad for k, t in self.params.items()})
                for name, t in self.params.items():
                    t.grad = grads[name]
            bad = [k for k, t in self.params.items()
                   if t.grad is not None and not bool(torch.isfinite(t.grad).all())]
            if bad:
                raise FloatingPointError(f"backprop gradients of {bad} are not finite "
                                         f"(loss {float(loss)})")
            self._step(optimizer)
        loss = loss.detach()
        return BatchResult(loss, loss, 0)

    # ------------------------------------------------------------------ compiled path
    def _loss(self):
        """The loss function: compiled once with ``compile`` (forward and backward)."""
        if not self.compile:
            return self.loss
        if self._compiled_loss is None:
            self._compiled_loss = torch.compile(self.loss, dynamic=False)
        return self._compiled_loss

    def _step(self, optimizer) -> None:
        """The optimizer's step on the gradients in ``.grad``: ``optimizer.step()``, or
        with ``compile`` the compiled :class:`GraphUpdate` of its rule once its state
        exists (the first step, which creates it, is torch's own)."""
        if not self.compile or self.grad_reducer is not None:
            optimizer.step()
            return
        if self._update is None or self._update[0].optimizer is not optimizer:
            if not (GraphUpdate.supports(optimizer) and GraphUpdate.ready(optimizer)):
                optimizer.step()
                return
            self._update = (GraphUpdate(optimizer, self.parameters()),
                            torch.compile(GraphUpdate.apply_groups, dynamic=False))
        update, apply = self._update
        coef, hyper, state = update.inputs()
        grads = [t.grad for t in self.parameters()]
        with torch.no_grad():  # the parameters are leaves that require grad
            apply(update.kind, update.params, update.index, grads, state, coef, hyper,
                  torch.ones((), dtype=torch.bool, device=self.device))
