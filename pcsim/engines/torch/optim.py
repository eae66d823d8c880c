"""Optimizers that consume the local PC gradients (or autograd's, for the BP baseline)."""

from __future__ import annotations

import math

import torch

__all__ = ["GraphUpdate", "make_optimizer", "make_scheduler"]


def make_optimizer(learning, params):
    """Return the torch optimizer named by ``learning.optimizer`` over ``params``.

    ``learning.weight_decay`` is lambda of SPEC 2.2, added to the gradient for ``sgd`` and
    ``adam`` and decoupled for ``adamw``. ``"none"`` returns None (continuous plasticity
    only, finite ``tau_w``).
    """
    name = learning.optimizer
    if name == "none":
        return None
    params = list(params)
    # One fused kernel per step instead of a loop of small ones (several times faster
    # for the small tensors of an MLP); same update rule.
    fused = {"fused": True} if _fusable(params) else {}
    if name == "sgd":
        return torch.optim.SGD(params, lr=learning.lr, momentum=learning.momentum,
                               weight_decay=learning.weight_decay, **fused)
    if name == "adam":
        return torch.optim.Adam(params, lr=learning.lr, weight_decay=learning.weight_decay,
                                **fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=learning.lr, weight_decay=learning.weight_decay,
                                 **fused)
    raise KeyError(f"unknown optimizer {name!r}; valid: sgd, adam, adamw, none")


def _fusable(params) -> bool:
    """True when torch's fused optimizers take these tensors (floating, CPU or CUDA)."""
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                                for p in params)


def make_scheduler(learning, optimizer):
    """Return the per-epoch learning-rate schedule named by ``learning.lr_schedule``
    (None for ``constant`` or when there is no optimizer)."""
    if optimizer is None or learning.lr_schedule == "constant":
        return None
    if learning.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(learning.epochs, 1))
    if learning.lr_schedule == "warmup_cosine":
        warm = min(learning.warmup_epochs, max(learning.epochs - 1, 0))
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(learning.epochs - warm, 1))
        if warm == 0:
            return cosine
        # the first epoch runs at lr / (warm + 1), rising linearly to lr after warm epochs
        ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warm + 1),
                                                 total_iters=warm)
        return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], [warm])
    raise KeyError(f"unknown lr_schedule {learning.lr_schedule!r}; valid: constant, cosine, "
                   "warmup_cosine")


class GraphUpdate:
    """A torch optimizer's update, written to run in the same compiled graph as the PC
    cycle that makes the gradients.

    Supports SGD (momentum, dampening, Nesterov, weight decay) and Adam/AdamW (coupled or
    decoupled weight decay), with any number of parameter groups (each its own
    hyperparameters, e.g. a learning rate for precisions apart from the weights). It reads the hyperparameters from
    the optimizer's group and updates the optimizer's own state tensors (``exp_avg``,
    ``exp_avg_sq``, ``step``; ``momentum_buffer``). So checkpoints, ``load_state_dict``
    and learning-rate schedules see what ``optimizer.step()`` would leave. Tests hold it
    to ``optimizer.step()`` at float64 round-off.

    Why not call ``torch.optim.adam.adam`` in the graph: inductor inlines its scalar
    bias-correction chain (``1 - beta ** step``, a ``pow`` per vector of 16 elements) into
    every parameter's loop. That cost 457 µs per step for the 118k parameters of PCX's
    MLP. Here the per-step scalars (``lr``, ``lr / (1 - beta1^k)``,
    ``sqrt(1 - beta2^k)``) are computed on the host from the step count and passed in as
    one small tensor. The learning rate is data, not a constant of the graph, so a
    schedule does not recompile it. The other hyperparameters (betas, momentum, weight
    decay) are constants of the graph, so a schedule that changes them recompiles it.

    The update is all or nothing: new values are written only where ``ok`` (a 0-d bool,
    the finiteness of the free energy) is true. A cycle that diverged leaves the weights
    and the optimizer state as they were.
    """

    KINDS = {torch.optim.SGD: "sgd", torch.optim.Adam: "adam", torch.optim.AdamW: "adam"}

    def __init__(self, optimizer, order=None):
        if not self.ready(optimizer):
            raise ValueError(f"{type(optimizer).__name__} cannot run in the compiled graph "
                             "(or has no state yet)")
        self.optimizer = optimizer
        self.kind = self.KINDS[type(optimizer)]
        self.params = [list(g["params"]) for g in optimizer.param_groups]
        # position of every group's tensors among the gradients handed to apply (which
        # come in ``order``, the trainer's parameter order; default: the groups' own)
        order = [p for group in self.params for p in group] if order is None else list(order)
        where = {id(p): i for i, p in enumerate(order)}
        self.index = [[where[id(p)] for p in group] for group in self.params]

    @classmethod
    def supports(cls, optimizer) -> bool:
        """True for SGD, Adam and AdamW (any number of parameter groups) without AMSGrad."""
        if type(optimizer) not in cls.KINDS:
            return False
        return not any(g.get("amsgrad") or g.get("differentiable")
                       for g in optimizer.param_groups)

    @classmethod
    def ready(cls, optimizer) -> bool:
        """True when :meth:`supports` and the state exists for every parameter
        (torch.optim creates it in the first ``step()``; plain SGD has none)."""
        if not cls.supports(optimizer):
            return False
        for group in optimizer.param_groups:
            if type(optimizer) is torch.optim.SGD and group["momentum"] == 0:
                continue
            if not all(optimizer.state.get(p) for p in group["params"]):
                return False
        return True

    def inputs(self):
        """``(coef, hyper, state)`` for this step, one entry per parameter group, all read
        afresh (``load_state_dict`` replaces the groups and the state).

        ``coef`` is the per-step scalars as a tensor on the parameters' device. ``hyper``
        holds the other hyperparameters, which are Python constants of the graph.
        ``state`` is the state tensors.
        """
        out = [self._group_inputs(g, params)
               for g, params in zip(self.optimizer.param_groups, self.params)]
        return tuple(list(x) for x in zip(*out))

    def _group_inputs(self, g, params):
        st, p0 = self.optimizer.state, params[0]
        lr = float(g["lr"])
        if self.kind == "sgd":
            hyper = {k: g[k] for k in ("weight_decay", "momentum", "dampening", "nesterov",
                                       "maximize")}
            state = [[st[p]["momentum_buffer"] for p in params]] if g["momentum"] else []
            coef = [lr]
        else:
            beta1, beta2 = g["betas"]
            hyper = {"beta1": beta1, "beta2": beta2, "eps": g["eps"],
                     "weight_decay": g["weight_decay"], "maximize": g["maximize"],
                     "decoupled": g["decoupled_weight_decay"]}
            state = [[st[p][k] for p in params] for k in ("exp_avg", "exp_avg_sq", "step")]
            # torch.optim keeps one count per parameter; every parameter gets a gradient
            # at every step here, so they are equal
            k = float(st[p0]["step"]) + 1
            coef = [lr, lr / (1 - beta1 ** k), math.sqrt(1 - beta2 ** k)]
        return torch.tensor(coef, dtype=p0.dtype, device=p0.device), hyper, state

    @staticmethod
    def apply_groups(kind, groups, index, grads, state, coef, hyper, ok):
        """:meth:`apply` for every parameter group; ``grads`` in the trainer's order,
        ``index`` where each group's gradients sit in it."""
        for params, idx, st, c, h in zip(groups, index, state, coef, hyper):
            GraphUpdate.apply(kind, params, [grads[i] for i in idx], st, c, h, ok)

    @staticmethod
    def apply(kind, params, grads, state, coef, hyper, ok):
        """Update ``params`` and ``state`` in place by the rule of ``kind`` where ``ok``
        (torch.optim's single-tensor algorithms, in the same order of operations)."""
        def put(old, new):
            old.copy_(torch.where(ok, new, old))

        lr = coef[0]
        for i, (p, grad) in enumerate(zip(params, grads)):
            if hyper["maximize"]:
                grad = -grad
            wd = hyper["weight_decay"]
            if kind == "sgd":
                if wd:
                    grad = grad + wd * p
                if hyper["momentum"]:
                    buf = state[0][i]
                    new_buf = buf * hyper["momentum"] + (1 - hyper["dampening"]) * grad
                    put(buf, new_buf)
                    grad = grad + hyper["momentum"] * new_buf if hyper["nesterov"] else new_buf
                put(p, p - lr * grad)
                continue
            exp_avg, exp_avg_sq, step = (ts[i] for ts in state)
            p_new = p
            if wd and hyper["decoupled"]:
                p_new = p * (1 - lr * wd)
            elif wd:
                grad = grad + wd * p
            m = exp_avg.lerp(grad, 1 - hyper["beta1"])
            v = exp_avg_sq * hyper["beta2"] + (1 - hyper["beta2"]) * grad * grad
            denom = v.sqrt() / coef[2] + hyper["eps"]
            put(p, p_new - coef[1] * (m / denom))
            put(exp_avg, m)
            put(exp_avg_sq, v)
            put(step, step + 1)
