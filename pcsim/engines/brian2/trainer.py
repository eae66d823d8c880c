"""Training with the brian2 engine: the PC cycle of SPEC 2.3 around :class:`Brian2Engine`.

brian2 integrates the inference (and, for a finite ``tau_w``, the plasticity); the
learning step feeds the local gradients of the final state to the same torch optimizer
the torch engine uses, so a brian2 run and a torch run of one config differ only by
their integrators. Learned precisions (SPEC 2.4) learn there too, by the same torch
class as the torch engine's, with the same floor and guard; their value enters brian2 as
each error neuron's ``prec`` (a continuous ``tau_prec`` is refused: capabilities).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pcsim.engines.base import BatchResult, capabilities
from pcsim.engines.brian2.engine import Brian2Engine
from pcsim.engines.torch.maps import build_maps
from pcsim.engines.torch.params import ParamStore, StoreOwner, store_name
from pcsim.engines.torch.precisions import (build_precisions, check_precisions,
                                            project_precisions)
from pcsim.model import equations as eq

__all__ = ["Brian2Trainer"]


class Brian2Trainer(StoreOwner):
    """Train and evaluate a network with brian2 (CPU, float64)."""

    name = "brian2"
    capabilities = capabilities("brian2", "pc")  # op counts come from the torch engine

    def __init__(self, network, dynamics, *, seed=0, init="xavier_uniform", weight_decay=0.0,
                 target="numpy"):
        self.network = network
        self.dynamics = dynamics
        self.device = torch.device("cpu")
        self.dtype = torch.float64
        self.L = network.n_layers
        self.dt = float(dynamics.dt)
        self.n_steps = int(dynamics.steps)
        if dynamics.stop_tol:
            raise ValueError("dynamics.stop_tol: the brian2 backend integrates all T steps "
                             "(convergence-based stopping runs on the torch backend)")
        cap = self.capabilities  # a network built without a config is checked here too
        continuous = [layer for layer in network.layers if layer.precision is not None
                      and (getattr(layer.precision, "tau_prec", None) is not None
                           or math.isfinite(dynamics.tau_w))]
        refused = [f"layer {p.index}: projection {p.kind!r}" for p in network.projections
                   if p.kind not in cap.projections] + [
            f"layer {layer.index}: a continuously learned precision (tau_prec, or a finite "
            "tau_w)" for layer in continuous if not cap.continuous_precision]
        if refused:
            raise ValueError(f"run.backend 'brian2' runs dense projections, with precisions "
                             f"fixed or learned by the learning step; {', '.join(refused)} "
                             "runs on the torch backend")
        self.params = ParamStore.initial(network, init, seed, self.device, self.dtype)
        self.maps = build_maps(network, self.params)  # the projections' weight-gradient maps
        self.precisions = build_precisions(network, self.params)
        self.learning_steps = 0
        self.engine = Brian2Engine(network, dynamics, self._numpy_params(),
                                   weight_decay=weight_decay, target=target)
        self.recorder = None
        self.grad_reducer = None

    @classmethod
    def from_config(cls, config, network=None, device=None):
        from pcsim.model import Network
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError("the brian2 backend runs on the CPU; use run.device: cpu")
        network = network or Network.from_config(config.network)
        return cls(network, config.dynamics, seed=config.learning.seed, init=config.network.init,
                   weight_decay=config.learning.weight_decay, target=config.run.brian2_target)

    def _numpy_params(self):
        """``[(W_l, b_l), ...]`` as numpy copies, the brian2 engine's synapse values."""
        return [tuple(self.params[store_name(name, l)].detach().numpy().copy() for name in "Wb")
                for l in range(1, self.L + 1)]

    def _numpy_prec(self) -> list:
        """Per layer, a learned precision's current value (numpy), or None (fixed)."""
        return [None if p is None else p.value().detach().numpy().copy()
                for p in self.precisions]

    def _load(self) -> None:
        """Hand brian2 the current weights and learned precisions."""
        self.engine.params = self._numpy_params()
        self.engine.prec = self._numpy_prec()

    def layer_energies(self, xs) -> list:
        """``E_l`` per sample of the value states ``xs`` (numpy) under the current weights
        and precisions; ``E_0`` is zero (x_0 is clamped in supervised mode, or carries
        its prior)."""
        out = [eq.prior_energy(xs[0], self.network.prec_0)
               if not self.network.clamped("train")[0] else np.zeros(len(xs[0]))]
        for l in range(1, self.L + 1):
            w, b = self.engine.params[l - 1]
            mu = self.network.layers[l].activation.f(xs[l - 1] @ w.T + b, np)
            prec = self.network.layers[l].prec if self.precisions[l] is None else \
                self.precisions[l].value().detach().numpy()
            out.append(eq.layer_energy(xs[l], mu, prec, w.shape[0]))
        return out

    def _energy(self, xs) -> float:
        """Batch-mean free energy of the states ``xs`` under the current weights."""
        return float(np.mean(sum(self.layer_energies(xs))))

    @torch.no_grad()
    def train_batch(self, x0, target, optimizer=None, hooks=()) -> BatchResult:
        """One PC cycle: brian2 integrates ``T`` steps from the feedforward start, then the
        local gradients of the final state go to ``optimizer``."""
        learned = any(p is not None for p in self.precisions)
        step = self.learning_steps + 1
        if learned:
            check_precisions(self.precisions, f"before learning step {step}",
                             self.dt / self.dynamics.tau_x)
        self._load()
        x0 = x0.detach().cpu().numpy()
        target = target.detach().cpu().numpy()
        clamped = self.network.clamped("train")
        e0 = self._energy(self.engine._feedforward(x0, target, clamped))
        traj = self.engine.run(x0, target, record=False)
        final = [x[-1] for x in traj.x]
        e1 = self._energy(final)
        if math.isfinite(self.dynamics.tau_w):
            for l, (w_new, b_new) in enumerate(zip(traj.weights, traj.biases), start=1):
                self.params[f"W_{l}"].copy_(torch.from_numpy(w_new))
                self.params[f"b_{l}"].copy_(torch.from_numpy(b_new))
        if optimizer is not None:
            grads = self.local_gradients(traj)
            for name, t in self.params.items():
                t.grad = -grads[name]
            optimizer.step()
            project_precisions(self.precisions)
            self.learning_steps = step
            if learned:
                check_precisions(self.precisions, f"after learning step {step}",
                                 self.dt / self.dynamics.tau_x)
        return BatchResult(torch.tensor(e0), torch.tensor(e1), self.n_steps)

    @torch.no_grad()
    def trace(self, x0, target, every: int, on_frame, event_sink=None) -> None:
        """Run a training cycle's inference in brian2 (no learning) and hand
        ``on_frame(frame, x, eps, layer_energies)`` the start and every ``every``-th step
        (torch tensors, as the torch engine does; brian2 sends no events)."""
        self._load()
        traj = self.engine.run(x0.detach().cpu().numpy(), target.detach().cpu().numpy(),
                               record=True)
        for frame in range(self.n_steps // every + 1):
            k = frame * every
            xs = [x[k] for x in traj.x]
            eps = [None if e is None else torch.from_numpy(e[k]) for e in traj.eps]
            energies = [torch.from_numpy(np.asarray(e)) for e in self.layer_energies(xs)]
            on_frame(frame, [torch.from_numpy(x) for x in xs], eps, energies)

    @torch.no_grad()
    def local_gradients(self, traj) -> dict:
        """``-dE/dtheta`` by store name from brian2's final state, through each
        projection's own map (the same one the torch engine uses, SPEC 2.3), and each
        learned precision's own rule from the layer's final values and predictions."""
        out = {}
        for l in range(1, self.L + 1):
            g = torch.from_numpy(traj.g[l][-1])  # (B, n_l)
            x_pre = torch.from_numpy(traj.x[l - 1][-1])  # (B, n_{l-1})
            for local, grad in self.maps[l].local_grads(g, x_pre).items():
                out[store_name(local, l)] = grad
        for l, p in enumerate(self.precisions):
            if p is None:
                continue
            x_pre = torch.from_numpy(traj.x[l - 1][-1])
            mu = self.network.layers[l].activation.f(self.maps[l].forward(x_pre), torch)
            for local, grad in p.local_grads(torch.from_numpy(traj.x[l][-1]), mu).items():
                out[store_name(local, l)] = grad
        return out

    @torch.no_grad()
    def predict(self, x0) -> torch.Tensor:
        """Feedforward read-out ``x_L = mu_L`` (the energy minimum with ``x_0`` clamped)."""
        self._load()
        xs = self.engine._feedforward(np.asarray(x0.detach().cpu()), None, self.network.clamped("test"))
        return torch.from_numpy(xs[-1])
