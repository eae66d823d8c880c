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

from pcsim.engines.torch.events import SigmaDelta
from pcsim.engines.torch.fast import free_energy, pc_cycle
from pcsim.engines.torch.maps import PlasticParams, build_maps, init_parameters
from pcsim.engines.torch.optim import GraphUpdate
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
    step: int = 0
    events: Optional["EventState"] = None


@dataclass
class EventState:
    """Event-mode transmission state of one batch (SPEC 3), lists indexed by layer.

    ``value[l]`` sends ``x_l`` into ``W_{l+1}``; ``gate[l]`` sends ``g_l`` into ``W_l^T``;
    ``error[l]`` sends ``eps_l`` one-to-one to ``x_l``. Receivers hold ``u[l] = W_l
    value[l-1].sent`` (no bias), ``fb[l] = W_{l+1}^T gate[l+1].sent`` and ``eps_in[l] =
    error[l].sent``, each kept up to date by adding the payloads of the events.
    """

    value: list
    gate: list
    error: list
    u: list
    fb: list
    eps_in: list
    active: dict = field(default_factory=dict)  # population -> (batch, n) bool, this tick


class TorchEngine(PlasticParams):
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
    events : pcsim.config.schema.EventsConfig, optional
        Event-driven (sigma-delta) transmission when ``events.enabled``; else dense.
    compile : bool, default False
        Hand the fast path (:func:`~pcsim.engines.torch.fast.pc_cycle`) to
        ``torch.compile``: one fused graph per cycle, holding the update of an SGD, Adam
        or AdamW optimizer too (:class:`~pcsim.engines.torch.optim.GraphUpdate`). The
        first batch runs eagerly and creates the optimizer's state; the second pays the
        compile.

    Attributes
    ----------
    recorder : OpRecorder or None
        Receives op counts (SPEC 4) when set; None costs nothing.
    """

    name = "torch"

    def __init__(self, network, dynamics, *, device="cpu", dtype=torch.float32, seed=0,
                 init="xavier_uniform", weight_decay=0.0, params=None, events=None,
                 compile=False):
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
        self.stop_tol = getattr(dynamics, "stop_tol", None)
        self.plastic = math.isfinite(self.tau_w)
        self.L = network.n_layers
        self.prec = [layer.prec for layer in network.layers]
        self.activations = [layer.activation for layer in network.layers]
        self._check_timescales()
        if params is None:
            params = init_parameters(network, init, seed, self.device, dtype)
        self.params = params
        self.maps = build_maps(network, params)
        self.events = events if events is not None and events.enabled else None
        if self.events is not None and self.plastic:
            raise ValueError("event mode with a finite tau_w is not supported yet")
        self.recorder = None
        self.event_sink = None  # callable(population, target, step, mask, payload) or None
        self.grad_reducer = None  # callable(grads) -> grads, e.g. a data-parallel all-reduce
        self.compile = bool(compile)
        self._cycle = None  # the fast path, built on first use
        self._update = None  # the optimizer's rule compiled with the cycle (GraphUpdate)
        self._train_step = None

    @classmethod
    def from_config(cls, config, network=None, device=None):
        """Build from an :class:`~pcsim.config.schema.ExperimentConfig`."""
        from pcsim.model import Network
        network = network or Network.from_config(config.network)
        return cls(network, config.dynamics,
                   device=device or resolve_device(config.run.device),
                   dtype=getattr(torch, config.run.dtype), seed=config.learning.seed,
                   init=config.network.init,
                   weight_decay=config.learning.weight_decay, events=config.events,
                   compile=config.run.compile)

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
        if self.events is not None:
            s.events = self._new_event_state(s.x[0].shape[0])
        for l in range(1, L + 1):  # 1. feedforward pass
            s.a[l] = self._forward_input(s, l)
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
        self._count_neurons(s, initial=True)
        return s

    def _new_event_state(self, batch: int) -> "EventState":
        cfg, L = self.events, self.L
        integer = cfg.payload == "integer"
        sizes = self.network.sizes

        def zeros(n):
            return torch.zeros(batch, n, device=self.device, dtype=self.dtype)

        def unit(name, n):
            sd = SigmaDelta(name, cfg.theta_for(name), integer)
            sd.reset(zeros(n))
            return sd

        return EventState(
            value=[unit(f"value_l{l}", sizes[l]) for l in range(L)] + [None],
            gate=[None] + [unit(f"error_l{l}", sizes[l]) for l in range(1, L + 1)],
            error=[None] + [unit(f"error_l{l}", sizes[l]) for l in range(1, L + 1)],
            u=[None] + [zeros(sizes[l]) for l in range(1, L + 1)],
            fb=[zeros(sizes[l]) for l in range(L)] + [None],
            eps_in=[None] + [zeros(sizes[l]) for l in range(1, L + 1)],
        )

    # ------------------------------------------------------------------ transmission
    # The three signals of SPEC 3, each either computed densely or sent as events.
    # Counting (SPEC 4) happens here and only when a recorder is attached.
    def _forward_input(self, s: PCState, l: int) -> torch.Tensor:
        """Return ``a_l = W_l x_{l-1} + b_l`` as the receivers of projection ``l`` hold it."""
        m = self.maps[l]
        if s.events is None:
            if self.recorder is not None:
                p = self.network.projections[l - 1]
                self._count_dense(s, f"W_{l}", s.x[l - 1].shape[0], p.macs, p.n_pre)
            return m.forward(s.x[l - 1])
        payload, mask = s.events.value[l - 1].send(s.x[l - 1])
        s.events.u[l] = s.events.u[l] + m.linear(payload)
        if self.event_sink is not None:
            self.event_sink(f"value_l{l - 1}", f"W_{l}", s.step, mask, payload)
        if self.recorder is not None:
            self._count_events(s, f"W_{l}", mask, m.fan_out(), f"value_l{l - 1}",
                               f"error_l{l}", m.reached(mask))
        return s.events.u[l] + m.bias

    def _feedback(self, s: PCState, l: int) -> torch.Tensor:
        """Return ``W_{l+1}^T g_{l+1}``, the feedback input of value layer ``l``."""
        m = self.maps[l + 1]
        if s.events is None:
            if self.recorder is not None:
                p = self.network.projections[l]
                self._count_dense(s, f"W_{l + 1}^T", s.g[l + 1].shape[0], p.macs, p.n_post)
            return m.adjoint(s.g[l + 1])
        payload, mask = s.events.gate[l + 1].send(s.g[l + 1])
        s.events.fb[l] = s.events.fb[l] + m.adjoint(payload)
        if self.event_sink is not None:
            self.event_sink(f"error_l{l + 1}", f"W_{l + 1}^T", s.step, mask, payload)
        if self.recorder is not None:
            self._count_events(s, f"W_{l + 1}^T", mask, m.fan_in(), f"error_l{l + 1}",
                               f"value_l{l}", m.reached(mask, adjoint=True))
        return s.events.fb[l]

    def _error_input(self, s: PCState, l: int) -> torch.Tensor:
        """Return ``eps_l`` as value neuron ``l`` receives it (one-to-one)."""
        if l == 0 or s.events is None:
            if self.recorder is not None and l > 0:  # dense: one value per neuron per tick
                rows, n = s.eps[l].shape
                self.recorder.add("inference", s.step, f"eps_{l}->x_{l}", "syn_events", rows * n)
                self.recorder.add("inference", s.step, f"eps_{l}->x_{l}", "syn_ops_mac", rows * n)
            return s.eps[l]  # the prior error of a free x_0 is the neuron's own state
        payload, mask = s.events.error[l].send(s.eps[l])
        s.events.eps_in[l] = s.events.eps_in[l] + payload
        if self.event_sink is not None:
            self.event_sink(f"error_l{l}", f"eps_{l}->x_{l}", s.step, mask, payload)
        if self.recorder is not None:
            self._count_events(s, f"eps_{l}->x_{l}", mask, None, f"error_l{l}",
                               f"value_l{l}", mask)
        return s.events.eps_in[l]

    def _pre_value(self, s: PCState, l: int) -> torch.Tensor:
        """Return ``x_{l-1}`` as the synapses of projection ``l`` know it."""
        return s.x[l - 1] if s.events is None else s.events.value[l - 1].sent

    # ------------------------------------------------------------------ counting
    def _count_dense(self, s, target, rows, macs, n_senders):
        """A dense map evaluation: every sender transmits, reaching every receiver."""
        rec, phase = self.recorder, "inference"
        n = rows * macs
        rec.add(phase, s.step, target, "dense_macs", n)
        rec.add(phase, s.step, target, "syn_events", rows * n_senders)
        rec.add(phase, s.step, target, "syn_ops_mac", n)
        rec.add(phase, s.step, target, "mem_read_bytes", n * self._itemsize)

    def _count_events(self, s, target, mask, fan_out, sender, receiver, reached):
        """Events of one transmission: ``syn_ops`` adds each event's fan-out (nonzero
        weights reached); sender and reached receivers are marked active this tick."""
        rec, phase = self.recorder, "inference"
        n_events = mask.sum()
        ops = n_events if fan_out is None else (mask.to(self.dtype) @ fan_out).sum()
        for name, m in ((sender, mask), (receiver, reached)):
            s.events.active[name] = m | s.events.active[name] if name in s.events.active else m
        kind = "syn_ops_ac" if self.events.payload == "integer" else "syn_ops_mac"
        rec.add(phase, s.step, target, "syn_events", n_events)
        rec.add(phase, s.step, target, kind, ops)
        if fan_out is not None:  # one-to-one links carry no weight
            rec.add(phase, s.step, target, "mem_read_bytes", ops * self._itemsize)

    def _count_neurons(self, s, initial=False):
        """Neuron updates of one tick: every free value neuron and every error neuron
        (at the feedforward start: every value and error neuron of layers >= 1)."""
        if self.recorder is None:
            return
        rows = s.x[0].shape[0]
        active = s.events.active if s.events is not None else None
        for l in range(self.L + 1):
            n = self.network.sizes[l] * rows
            moved = (l >= 1) if initial else not s.clamped[l]
            for name, updated in ((f"value_l{l}", moved), (f"error_l{l}", l >= 1)):
                if not updated:
                    continue
                self.recorder.add("inference", s.step, name, "neuron_updates", n)
                self.recorder.add("inference", s.step, name, "neuron_updates_active",
                                  n if active is None else
                                  (active[name].sum() if name in active else 0))
                self.recorder.add("inference", s.step, name, "mem_write_bytes",
                                  n * self._itemsize)
        if active is not None:
            active.clear()

    @property
    def _itemsize(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

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
                s.a[l] = self._forward_input(s, l)
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
        s.step += 1
        new_x = list(s.x)
        for l in range(L + 1):  # 1. value neurons
            if s.clamped[l]:
                continue
            feedback = self._feedback(s, l) if l < L else 0.0
            new_x[l] = s.x[l] + dt * eq.value_rhs(self._error_input(s, l), feedback, self.tau_x)
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
        self._count_neurons(s)

    @torch.no_grad()
    def infer(self, s: PCState, n_steps: Optional[int] = None, hooks: Sequence = (),
              stop_tol: Optional[float] = None) -> PCState:
        """Run ``n_steps`` Euler steps (default: the configured number), calling hooks.

        With ``stop_tol`` (default: the configured ``dynamics.stop_tol``), stop early once
        a step lowers the batch-mean energy by less than ``stop_tol`` times its value
        (convergence-based stopping; ``s.step`` tells how many steps ran). Each check
        reads one number back from the device.
        """
        n_steps = self.n_steps if n_steps is None else n_steps
        stop_tol = self.stop_tol if stop_tol is None else stop_tol
        e_prev = float(self.energy(s).mean()) if stop_tol else None
        for k in range(n_steps):
            self.step(s)
            for hook in hooks:
                hook.on_step(self, s, k)
            if stop_tol:
                e = float(self.energy(s).mean())
                if e_prev - e < stop_tol * abs(e_prev):
                    break
                e_prev = e
        return s

    @torch.no_grad()
    def layer_energies(self, s: PCState) -> list:
        """Return ``E_l`` per sample for every layer (``E_0`` is the prior of a free
        ``x_0``, else zeros); ``energy`` is their sum."""
        rows = s.x[0].shape[0]
        out = [eq.prior_energy(s.x[0], self.network.prec_0) if not s.clamped[0]
               else torch.zeros(rows, device=self.device, dtype=self.dtype)]
        for l in range(1, self.L + 1):
            out.append(eq.layer_energy(s.x[l], s.mu[l], self.prec[l], s.x[l].shape[1]))
        return out

    @torch.no_grad()
    def energy(self, s: PCState) -> torch.Tensor:
        """Return the free energy ``E`` per sample, shape ``(batch,)`` (SPEC 1)."""
        return free_energy(s.x, s.mu, self.prec, s.clamped, self.network.prec_0)

    @torch.no_grad()
    def local_gradients(self, s: PCState) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Return ``(-dE/dW_l, -dE/db_l)`` for every projection, batch means, from local
        quantities only: the gated error after the synapse, the value before it."""
        grads = []
        for l in range(1, self.L + 1):
            pre = self._pre_value(s, l)
            grads.append((self.maps[l].weight_grad(s.g[l], pre), self.maps[l].bias_grad(s.g[l])))
            if self.recorder is not None:
                self._count_learning(s, l, pre)
        return grads

    def _count_learning(self, s, l, pre):
        """Weight updates of the learning step: every synapse per sample (dense), or those
        whose pre and post factors are both nonzero (event mode)."""
        rec, p, target = self.recorder, self.network.projections[l - 1], f"W_{l}"
        rows = pre.shape[0]
        if s.events is None:
            n = rows * p.n_synapses
            rec.add("learning", 0, target, "dense_macs", n)
        else:
            n = ((pre != 0).sum(1) * (s.g[l] != 0).sum(1)).sum()
        rec.add("learning", 0, target, "weight_updates", n)
        rec.add("learning", 0, target, "mem_read_bytes", n * self._itemsize)
        rec.add("learning", 0, target, "mem_write_bytes", n * self._itemsize)

    @torch.no_grad()
    def apply_gradients(self, grads, optimizer) -> None:
        """Feed ``-grads`` (= dE/dW) to a torch optimizer and step it (after the
        ``grad_reducer``, when data-parallel)."""
        self._descend([(-dw, -db) for dw, db in grads], optimizer)

    def _descend(self, descent, optimizer) -> None:
        """Step ``optimizer`` on ``descent`` = ``dE/dW, dE/db`` per projection."""
        if self.grad_reducer is not None:  # a mean over ranks commutes with the sign
            descent = self.grad_reducer(descent)
        for (w, b), (dw, db) in zip(self.params, descent):
            w.grad = dw
            b.grad = db
        optimizer.step()

    @torch.no_grad()
    def diagnose(self, x0, target) -> str:
        """Re-run a batch's inference step by step and name where it stops being finite
        (layer, population, step) with the likely cause."""
        eta = self.dt / self.tau_x
        if eta > 1:
            cause = (f"dt / tau_x = {eta:g} > 1: each Euler step overshoots the value "
                     "neurons' equilibrium; lower dynamics.dt or raise dynamics.tau_x")
        else:
            cause = ("the weights or activity diverged: lower learning.lr (or dynamics.dt), "
                     "or check the precisions")
        s = self.init_state(x0, target, phase="train")
        for step in range(self.n_steps + 1):
            if step:
                self.step(s)
            for l in range(self.L + 1):
                for name, value in ((f"value_l{l}", s.x[l]), (f"error_l{l}", s.eps[l])):
                    if value is not None and not bool(torch.isfinite(value).all()):
                        return (f"non-finite {name} (layer {l}) at inference step {step}: "
                                f"{cause}")
        return f"non-finite free energy after inference: {cause}"

    @torch.no_grad()
    def encode(self, data) -> torch.Tensor:
        """Generative mode: infer the latent ``x_0`` of ``data`` (clamped to the top layer)
        by ``T`` inference steps from ``x_0 = 0`` under the prior."""
        if self.network.mode != "generative":
            raise ValueError("encode needs a generative network (network.mode: generative)")
        s = self.init_state(None, data, phase="test")
        self.infer(s)
        return s.x[0]

    @torch.no_grad()
    def reconstruct(self, data) -> torch.Tensor:
        """Generative mode: encode ``data`` by inference, then decode the latent alone by
        the feedforward pass (what a receiver of ``x_0`` can rebuild)."""
        return self.predict(self.encode(data))

    @torch.no_grad()
    def predict(self, x0) -> torch.Tensor:
        """Feedforward read-out ``x_L`` (the energy minimum with only ``x_0`` clamped)."""
        if self.events is not None or self.recorder is not None:
            only_input = (True,) + (False,) * self.L
            return self.init_state(x0, clamped=only_input).x[self.L]
        x = self._as_tensor(x0)
        for l in range(1, self.L + 1):
            x = self.activations[l].f(self.maps[l].forward(x), torch)
        return x

    def fast_path_applies(self, hooks: Sequence = ()) -> bool:
        """True when a training cycle may run as :func:`pc_cycle`: dense transmission,
        nothing counting or watching the steps, and the discrete update of SPEC 2.3."""
        return (self.events is None and self.recorder is None and not hooks
                and self.tau_eps == 0 and not self.plastic and not self.stop_tol)

    def _cycle_descent(self, x0, target):
        """The fast cycle returning ``dE/dW`` and ``dE/db`` (what an optimizer descends:
        the negated local gradients) and the two energies."""
        grads, e0, e1 = pc_cycle(self.maps, self.activations, self.prec,
                                 self.network.clamped("train"), self.network.prec_0,
                                 self.dt, self.tau_x, self.n_steps, x0, target)
        return [(-dw, -db) for dw, db in grads], e0, e1

    def _cycle_and_update(self, x0, target, kind, params, state, coef, hyper):
        """The fast cycle and the optimizer's update (:class:`GraphUpdate`) as one
        function, applied only when the final energy is finite."""
        descent, e0, e1 = self._cycle_descent(x0, target)
        GraphUpdate.apply(kind, params, [t for pair in descent for t in pair], state, coef,
                          hyper, ok=torch.isfinite(e1))
        return e0, e1

    def _fast_cycle(self, x0, target, optimizer=None):
        """Return the descent directions and the two energies of one fast cycle."""
        if self.compile and optimizer is not None and self._fusable(optimizer):
            # the optimizer's first step, which creates its state: the compiled graph
            # that follows holds the update too, so the cycle alone is not compiled
            return self._cycle_descent(x0, target)
        if self._cycle is None:
            self._cycle = (torch.compile(self._cycle_descent, dynamic=False) if self.compile
                           else self._cycle_descent)
        return self._cycle(x0, target)

    def _fusable(self, optimizer) -> bool:
        """True when the optimizer's update can join the compiled cycle: a rule
        :class:`GraphUpdate` supports, and no data-parallel reducer between the two."""
        return self.grad_reducer is None and GraphUpdate.supports(optimizer)

    def _fused_update(self, optimizer) -> Optional[GraphUpdate]:
        """The optimizer's rule to compile into the cycle's graph, or None (eager
        engine, no optimizer, a rule it cannot take, or no optimizer state yet)."""
        if not self.compile or optimizer is None or not self._fusable(optimizer):
            return None
        if self._update is None or self._update.optimizer is not optimizer:
            if not GraphUpdate.ready(optimizer):
                return None
            self._update = GraphUpdate(optimizer)
            if self._train_step is None:
                self._train_step = torch.compile(self._cycle_and_update, dynamic=False)
        return self._update

    @torch.no_grad()
    def train_batch(self, x0, target, optimizer=None, hooks: Sequence = ()) -> dict:
        """One PC cycle: clamp, feedforward init, ``T`` inference steps, one learning step.

        Runs the fast path (:func:`pc_cycle`) when :meth:`fast_path_applies`, else steps a
        :class:`PCState` (events, op counts, hooks, leaky errors, continuous plasticity).

        Returns
        -------
        dict
            ``energy_initial`` and ``energy_final`` (batch means, 0-d tensors; not
            synchronised, so the caller decides when to read them) and ``steps``, the
            inference steps run (fewer than ``T`` after a convergence stop).
        """
        if self.fast_path_applies(hooks):
            target = None if target is None else self._as_tensor(target)
            x0 = (self._as_tensor(x0) if x0 is not None else
                  torch.zeros(target.shape[0], self.network.layers[0].size,
                              device=self.device, dtype=self.dtype))
            update = self._fused_update(optimizer)
            if update is not None:  # cycle and update in one graph, which applies the
                coef, hyper, state = update.inputs()  # update only if e1 is finite
                e0, e1 = self._train_step(x0, target, update.kind, update.params, state,
                                          coef, hyper)
                descent = None
            else:
                descent, e0, e1 = self._fast_cycle(x0, target, optimizer)
            s, steps = None, self.n_steps
        else:
            s = self.init_state(x0, target, phase="train")
            e0 = self.energy(s).mean()
            self.infer(s, hooks=hooks)
            e1 = self.energy(s).mean()
            steps = s.step
        if not bool(torch.isfinite(e1)):  # guard before the learning step touches a weight
            raise FloatingPointError(self.diagnose(x0, target))
        if optimizer is not None:
            if s is not None:
                self.apply_gradients(self.local_gradients(s), optimizer)
            elif descent is not None:  # (the fused graph has applied its update)
                self._descend(descent, optimizer)
        return {"energy_initial": e0, "energy_final": e1, "steps": steps}
