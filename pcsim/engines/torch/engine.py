"""Clock-driven torch engine: forward-Euler integration of the PC dynamics (SPEC 2).

The engine holds the synapses (``maps``) and integrates a batch of value and error
populations. It owns the machinery (Euler steps, sums over projections, clamping,
hooks); the right-hand sides come from :mod:`pcsim.model.equations`. No autograd is
used: gradients are the local quantities of SPEC 2.2-2.3.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import torch

from pcsim.engines.torch.maps import build_maps, init_parameters
from pcsim.model import equations as eq

__all__ = ["PCState", "TorchEngine", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """Map ``"auto"`` to CUDA when present, else CPU; refuse CUDA when absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but torch sees no CUDA device; "
                           "use --device cpu (or auto)")
    return torch.device(name)


@dataclass
class PCState:
    """Activity of one batch: lists indexed by layer ``l = 0..L``.

    ``a``, ``mu``, ``f_prime_a`` and ``g`` hold ``None`` at ``l = 0``; ``eps[0]`` is the prior
    error ``prec_0 x_0`` when ``x_0`` is free, else ``None``. Between steps every field is
    consistent with ``x`` (and with the ``eps`` state when ``tau_eps > 0``).
    """

    x: list
    clamped: tuple
    a: list = field(default_factory=list)
    mu: list = field(default_factory=list)
    f_prime_a: list = field(default_factory=list)
    eps: list = field(default_factory=list)
    g: list = field(default_factory=list)
    t: float = 0.0


class TorchEngine:
    """Integrate value and error populations of a :class:`~pcsim.model.Network` in torch.

    Parameters
    ----------
    network : pcsim.model.Network
    dynamics : pcsim.config.schema.DynamicsConfig
        ``tau_x``, ``tau_eps``, ``tau_w``, ``dt`` (s) and the number of steps per batch.
    device : str or torch.device, default "cpu"
    dtype : torch.dtype, default torch.float32
    seed : int, default 0
        Seed of the weight initialisation.
    init : str, default "xavier_uniform"
    weight_decay : float, default 0
        ``lambda`` of SPEC 2.2 for continuous plasticity (finite ``tau_w``).
    params : list of [W, b], optional
        Start from these tensors instead of a fresh draw.
    """

    name = "torch"

    def __init__(self, network, dynamics, *, device="cpu", dtype=torch.float32, seed=0,
                 init="xavier_uniform", weight_decay=0.0, params=None):
        self.network = network
        self.dynamics = dynamics
        self.device = torch.device(device)
        self.dtype = dtype
        self.weight_decay = float(weight_decay)
        self.dt = float(dynamics.dt)
        self.tau_x = float(dynamics.tau_x)
        self.tau_eps = float(dynamics.tau_eps)
        self.tau_w = float(dynamics.tau_w)
        self.n_steps = int(dynamics.steps)
        self.plastic = math.isfinite(self.tau_w)
        self.L = network.n_layers
        self.prec = [layer.prec for layer in network.layers]
        self.activations = [layer.activation for layer in network.layers]
        self._check_timescales()
        if params is None:
            params = init_parameters(network, init, seed, self.device, dtype)
        self.params = params
        self.maps = build_maps(network, params)

    @classmethod
    def from_config(cls, config, network=None, device=None):
        """Build from an :class:`~pcsim.config.schema.ExperimentConfig`."""
        from pcsim.model import Network
        network = network or Network.from_config(config.network)
        return cls(network, config.dynamics,
                   device=device or resolve_device(config.run.device),
                   dtype=getattr(torch, config.run.dtype), seed=config.learning.seed,
                   init=config.network.init,
                   weight_decay=config.learning.weight_decay)

    def _check_timescales(self):
        taus = [self.tau_x] + [t for t in (self.tau_eps, self.tau_w) if 0 < t < math.inf]
        if self.dt > min(taus) / 10 * (1 + 1e-9):
            warnings.warn(f"dt = {self.dt:g} s is more than a tenth of the shortest time "
                          f"constant ({min(taus):g} s); Euler steps may be inaccurate",
                          stacklevel=3)
        if self.plastic and self.tau_w < 10 * self.tau_x:
            warnings.warn(f"tau_w = {self.tau_w:g} s is not much slower than tau_x = "
                          f"{self.tau_x:g} s; weights and activity will not separate "
                          "into two timescales", stacklevel=3)

    # ------------------------------------------------------------------ parameters
    def parameters(self) -> list[torch.Tensor]:
        """All plastic tensors, ``[W_1, b_1, ..., W_L, b_L]``."""
        return [t for pair in self.params for t in pair]

    def state_dict(self) -> dict:
        return {"W": [w.detach().cpu() for w, _ in self.params],
                "b": [b.detach().cpu() for _, b in self.params],
                "prec": list(self.prec)}

    def load_state_dict(self, state: dict) -> None:
        for (w, b), w_new, b_new in zip(self.params, state["W"], state["b"]):
            if w.shape != w_new.shape or b.shape != b_new.shape:
                raise ValueError(f"checkpoint weights {tuple(w_new.shape)} do not fit the "
                                 f"network's {tuple(w.shape)}")
            w.copy_(w_new)
            b.copy_(b_new)

    # ------------------------------------------------------------------ state
    def _as_tensor(self, value):
        return torch.as_tensor(value, device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def init_state(self, x0=None, target=None, phase: str = "train",
                   clamped: Optional[Sequence[bool]] = None) -> PCState:
        """Clamp and initialise free layers by the feedforward pass ``x_l = mu_l``.

        Parameters
        ----------
        x0 : tensor (batch, n_0)
            Input (supervised) or the initial latent (generative; zeros if None).
        target : tensor (batch, n_L), optional
            Clamped top layer (the label, or the data in generative mode).
        phase : {"train", "test"}
            Selects the clamping pattern of the network's mode.
        clamped : sequence of bool, optional
            Overrides the pattern.
        """
        clamped = tuple(clamped) if clamped is not None else self.network.clamped(phase)
        if len(clamped) != self.L + 1:
            raise ValueError(f"clamped has {len(clamped)} entries for {self.L + 1} layers")
        if x0 is None:
            if target is None:
                raise ValueError("give x0 or target")
            x0 = torch.zeros(target.shape[0], self.network.layers[0].size)
        L = self.L
        s = PCState(x=[None] * (L + 1), clamped=clamped, a=[None] * (L + 1),
                    mu=[None] * (L + 1), f_prime_a=[None] * (L + 1), eps=[None] * (L + 1),
                    g=[None] * (L + 1))
        s.x[0] = self._as_tensor(x0)
        for l in range(1, L + 1):  # 1. feedforward pass
            s.a[l] = self.maps[l].forward(s.x[l - 1])
            s.mu[l] = self.activations[l].f(s.a[l], torch)
            s.x[l] = s.mu[l]
        if clamped[L]:
            if target is None:
                raise ValueError("the top layer is clamped: give a target")
            s.x[L] = self._as_tensor(target)
        for l in range(1, L + 1):  # 2. error neurons start at their fixed point
            s.f_prime_a[l] = self._f_prime(l, s.a[l])
            s.eps[l] = eq.error_fixed_point(s.x[l], s.mu[l], self.prec[l])
            s.g[l] = self._gate(l, s)
        self._prior_error(s)
        return s

    def _f_prime(self, l, a):
        act = self.activations[l]
        return None if act.is_identity else act.f_prime(a, torch)

    def _gate(self, l, s):
        fp = s.f_prime_a[l]
        return s.eps[l] if fp is None else eq.gated_error(s.eps[l], fp)

    def _prior_error(self, s):
        if not s.clamped[0]:
            s.eps[0] = eq.error_fixed_point(s.x[0], 0.0, self.network.prec_0)

    def _refresh(self, s: PCState, changed: Iterable[int]) -> None:
        """Recompute what depends on ``x``: ``a_l`` for the projections in ``changed``,
        then ``mu``, ``f'(a)``, instantaneous ``eps`` and ``g`` for every layer."""
        changed = set(changed)
        for l in range(1, self.L + 1):
            if l in changed:
                s.a[l] = self.maps[l].forward(s.x[l - 1])
                s.mu[l] = self.activations[l].f(s.a[l], torch)
                s.f_prime_a[l] = self._f_prime(l, s.a[l])
            if self.tau_eps == 0:
                s.eps[l] = eq.error_fixed_point(s.x[l], s.mu[l], self.prec[l])
            s.g[l] = self._gate(l, s)
        self._prior_error(s)

    @torch.no_grad()
    def assign(self, s: PCState, layer: int, x=None, eps=None) -> None:
        """Set ``x_layer`` (and/or the error state ``eps_layer``) and make ``s`` consistent.

        For experiments and tests that start away from the feedforward state.
        """
        if x is not None:
            s.x[layer] = self._as_tensor(x).clone()
        if eps is not None:
            if self.tau_eps == 0:
                raise ValueError("eps is not a state when tau_eps = 0")
            s.eps[layer] = self._as_tensor(eps).clone()
        self._refresh(s, [layer + 1] if x is not None and layer < self.L else [])

    # ------------------------------------------------------------------ dynamics
    @torch.no_grad()
    def step(self, s: PCState) -> None:
        """Advance ``s`` by one forward-Euler step of SPEC 2.1-2.2 (all from the old state)."""
        dt, L = self.dt, self.L
        new_x = list(s.x)
        for l in range(L + 1):  # 1. value neurons
            if s.clamped[l]:
                continue
            feedback = self.maps[l + 1].adjoint(s.g[l + 1]) if l < L else 0.0
            new_x[l] = s.x[l] + dt * eq.value_rhs(s.eps[l], feedback, self.tau_x)
        if self.tau_eps > 0:  # 2. leaky error neurons
            for l in range(1, L + 1):
                s.eps[l] = s.eps[l] + dt * eq.error_rhs(s.eps[l], s.x[l], s.mu[l],
                                                        self.prec[l], self.tau_eps)
        if self.plastic:  # 3. synapses, from the old g and x
            for l in range(1, L + 1):
                m = self.maps[l]
                m.weight.add_(dt * eq.weight_rhs(m.weight_grad(s.g[l], s.x[l - 1]), m.weight,
                                                 self.weight_decay, self.tau_w))
                m.bias.add_(dt * eq.bias_rhs(m.bias_grad(s.g[l]), self.tau_w))
        s.x = new_x
        s.t += dt
        self._refresh(s, [l for l in range(1, L + 1) if self.plastic or not s.clamped[l - 1]])

    @torch.no_grad()
    def infer(self, s: PCState, n_steps: Optional[int] = None, hooks: Sequence = ()) -> PCState:
        """Run ``n_steps`` Euler steps (default: the configured number), calling hooks."""
        n_steps = self.n_steps if n_steps is None else n_steps
        for k in range(n_steps):
            self.step(s)
            for hook in hooks:
                hook.on_step(self, s, k)
        return s

    @torch.no_grad()
    def energy(self, s: PCState) -> torch.Tensor:
        """Return the free energy ``E`` per sample, shape ``(batch,)`` (SPEC 1)."""
        total = 0.0
        for l in range(1, self.L + 1):
            total = total + eq.layer_energy(s.x[l], s.mu[l], self.prec[l], s.x[l].shape[1])
        if not s.clamped[0]:
            total = total + eq.prior_energy(s.x[0], self.network.prec_0)
        return total

    @torch.no_grad()
    def local_gradients(self, s: PCState) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Return ``(-dE/dW_l, -dE/db_l)`` for every projection, batch means, from local
        quantities only: the gated error after the synapse, the value before it."""
        return [(self.maps[l].weight_grad(s.g[l], s.x[l - 1]), self.maps[l].bias_grad(s.g[l]))
                for l in range(1, self.L + 1)]

    @torch.no_grad()
    def apply_gradients(self, grads, optimizer) -> None:
        """Feed ``-grads`` (= dE/dW) to a torch optimizer and step it."""
        for (w, b), (dw, db) in zip(self.params, grads):
            w.grad = -dw
            b.grad = -db
        optimizer.step()

    @torch.no_grad()
    def predict(self, x0) -> torch.Tensor:
        """Feedforward read-out ``x_L`` (the energy minimum with only ``x_0`` clamped)."""
        x = self._as_tensor(x0)
        for l in range(1, self.L + 1):
            x = self.activations[l].f(self.maps[l].forward(x), torch)
        return x

    @torch.no_grad()
    def train_batch(self, x0, target, optimizer=None, hooks: Sequence = ()) -> dict:
        """One PC cycle: clamp, feedforward init, ``T`` inference steps, one learning step.

        Returns
        -------
        dict
            ``energy_initial`` and ``energy_final`` (batch means, 0-d tensors; not
            synchronised, so the caller decides when to read them).
        """
        s = self.init_state(x0, target, phase="train")
        e0 = self.energy(s).mean()
        self.infer(s, hooks=hooks)
        e1 = self.energy(s).mean()
        if optimizer is not None:
            self.apply_gradients(self.local_gradients(s), optimizer)
        return {"energy_initial": e0, "energy_final": e1}
