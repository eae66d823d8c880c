"""The PC dynamics of one batch in torch: the feedforward start and the one Euler step
function that every path runs (stepped, fast, compiled, traces, diagnosis).

A :class:`Dynamics` integrates a :class:`PCState` by a schedule of rows
(:mod:`pcsim.model.schedule`): the dense schedule when something observes the steps
(hooks, op counts, events, leaky errors, plasticity), the inference wavefront when
nothing does -- the same function, which skips only products that are exactly zero.
Signals travel through :mod:`~pcsim.engines.torch.links`; the right-hand sides come
from :mod:`pcsim.model.equations`. No autograd: gradients are the local quantities of
SPEC 2.2-2.3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from pcsim.engines.integrators import euler
from pcsim.engines.torch import accounting as acc
from pcsim.engines.torch.links import Links, Wire, build_links
from pcsim.engines.torch.params import store_name
from pcsim.model import equations as eq
from pcsim.model.schedule import errors_after_feedforward

__all__ = ["PCState", "Dynamics", "free_energy"]


def free_energy(x, mu, prec, clamped, prec_0):
    """Return ``E`` per sample (SPEC 1): every layer's energy, plus the prior of a free
    ``x_0``. Lists ``x``, ``mu``, ``prec`` indexed by layer ``l = 0..L``."""
    total = 0.0 if clamped[0] else eq.prior_energy(x[0], prec_0)
    for l in range(1, len(x)):
        total = total + eq.layer_energy(x[l], mu[l], prec[l], math.prod(x[l].shape[1:]))
    return total


@dataclass
class PCState:
    """Activity of one batch: lists indexed by layer ``l = 0..L``.

    ``a``, ``mu``, ``f_prime_a`` and ``g`` hold ``None`` at ``l = 0``; ``eps[0]`` is the prior
    error ``prec_0 x_0`` when ``x_0`` is free, else ``None``. An ``eps`` or ``g`` of ``None``
    at ``l >= 1`` is exactly zero (the wavefront has not reached it). Between steps every
    field is consistent with ``x`` (and with the ``eps`` state when ``tau_eps > 0``).
    ``links`` transmit the batch's signals; ``events`` is the same object in event mode
    (its sigma-delta units: ``events.value[l].sent``, ``events.gate[l].sent``), else None.
    """

    x: list
    clamped: tuple
    a: list = field(default_factory=list)
    mu: list = field(default_factory=list)
    f_prime_a: list = field(default_factory=list)
    eps: list = field(default_factory=list)
    g: list = field(default_factory=list)
    route: list = field(default_factory=list)
    t: float = 0.0
    step: int = 0
    links: Optional[Links] = None
    events: Optional[Links] = None


class Dynamics:
    """Integrate value and error populations of ``network`` through ``maps``.

    Parameters
    ----------
    network : pcsim.model.Network
    maps : list
        ``maps[l]`` is projection ``l`` (``maps[0]`` unused).
    dt, tau_x, tau_eps, tau_w : float
        Euler step and time constants (s); ``tau_eps = 0``: errors at their fixed point;
        ``tau_w = inf``: frozen weights.
    weight_decay : float
    events : EventsConfig or None
        Sigma-delta transmission of every signal when given.
    recorder, sink : optional
        Op recorder (SPEC 4) and event sink.
    precisions : list, optional
        Per layer, None (the layer's fixed ``prec``) or a learned precision
        (:class:`~pcsim.engines.torch.params.LearnedPrecision`).
    """

    def __init__(self, network, maps, dt, tau_x, tau_eps=0.0, tau_w=math.inf,
                 weight_decay=0.0, events=None, recorder=None, sink=None, precisions=None):
        self.network, self.maps = network, maps
        self.L = network.n_layers
        self.activations = [layer.activation for layer in network.layers]
        self.precisions = precisions or [None] * (self.L + 1)
        self._learned = [l for l, p in enumerate(self.precisions) if p is not None]
        self._read_precisions()
        self.dt, self.tau_x, self.tau_eps, self.tau_w = dt, tau_x, tau_eps, tau_w
        self.plastic = math.isfinite(tau_w)
        # precisions that the learning step updates, and those that learn at every step
        self._stepped = [l for l in self._learned if not self.precisions[l].continuous]
        self._continuous = [l for l in self._learned
                            if self.precisions[l].continuous or self.plastic]
        self.weight_decay = weight_decay
        self.events, self.recorder, self.sink = events, recorder, sink
        self._dense_links = {}  # dtype -> Links that carry no batch state

    # ------------------------------------------------------------------ start
    def init_state(self, x0, target, clamped, zeros: bool = True, carry=None,
                   weights_version: int = 0) -> PCState:
        """Clamp and start free layers at the feedforward pass ``x_l = mu_l``.

        ``zeros=False`` leaves the errors that are exactly zero after the start as
        ``None`` (the wavefront skips them); else they are zero tensors. ``carry``: the
        previous batch's links in event mode, whose receivers keep what they hold (only
        changes are sent); their inputs are recomputed first when the weights have
        changed since (``weights_version``, the engine's learning steps, differs).
        """
        L = self.L
        s = PCState(x=[None] * (L + 1), clamped=clamped, a=[None] * (L + 1),
                    mu=[None] * (L + 1), f_prime_a=[None] * (L + 1), eps=[None] * (L + 1),
                    g=[None] * (L + 1), route=[None] * (L + 1))
        s.x[0] = x0
        s.links = self._links(x0, carry, weights_version)
        s.events = s.links if s.links.event else None
        for l in range(1, L + 1):
            self._predict(s, l, s.links.forward[l].transmit(s.x[l - 1], 0))
            s.x[l] = s.mu[l]
        if clamped[L]:
            if target is None:
                raise ValueError("the top layer is clamped: give a target")
            s.x[L] = target
        for l, in_error in enumerate(errors_after_feedforward(clamped)):
            if in_error or (zeros and l > 0):
                self._error(s, l, fixed=True)  # leaky errors too start at the fixed point
        self._count_neurons(s, initial=True)
        return s

    def _links(self, x0, carry=None, weights_version: int = 0) -> Links:
        """The batch's links: sigma-delta units start afresh, or carry on from ``carry``;
        dense links that count nothing hold no state of a batch, so a Dynamics that runs
        many batches (the eager fast path) builds them once per dtype."""
        if carry is not None and self.events is not None and carry.fits(x0):
            carry.wire.recorder, carry.wire.sink, carry.wire.active = self.recorder, self.sink, {}
            if carry.weights_version != weights_version:
                carry.resync(0)
                carry.weights_version = weights_version
            return carry
        reusable = self.events is None and self.recorder is None
        if reusable and x0.dtype in self._dense_links:
            return self._dense_links[x0.dtype]
        wire = Wire(self.recorder, self.sink, acc.itemsize(x0.dtype),
                    static_weights=not self.plastic)
        links = build_links(self.network, self.maps, wire, x0.shape[0], self.events,
                            x0.device, x0.dtype)
        links.weights_version = weights_version
        if reusable:
            self._dense_links[x0.dtype] = links
        return links

    def _read_precisions(self):
        """``prec[l]``: the fixed number, or the learned precision's current value."""
        self.prec = [layer.prec if p is None else p.value()
                     for layer, p in zip(self.network.layers, self.precisions)]

    def _predict(self, s, l, a):
        """``a_l``, ``mu_l = P(f(a_l))`` and ``f'(a_l)`` (None for the identity)."""
        s.a[l] = a
        act, pool = self.activations[l], self.maps[l].pool
        if act.is_identity:
            f_a, s.f_prime_a[l] = a, None
        else:
            f_a, s.f_prime_a[l] = act.value_and_prime(a, torch)
        if pool is None:
            s.mu[l] = f_a
        else:
            s.mu[l], s.route[l] = eq.prediction(f_a, pool)

    def _error(self, s, l, fixed=False):
        """Error neurons of layer ``l`` at their fixed point (``tau_eps = 0``, or
        ``fixed``; else ``eps`` is a state of its own), and ``g``."""
        if l == 0:
            s.eps[0] = eq.error_fixed_point(s.x[0], 0.0, self.network.prec_0)
            return
        if fixed or self.tau_eps == 0:
            s.eps[l] = eq.error_fixed_point(s.x[l], s.mu[l], self.prec[l])
        self._gate(s, l)

    def _gate(self, s, l):
        pool, fp = self.maps[l].pool, s.f_prime_a[l]
        if pool is None:  # g = f'(a) * eps, written out for the common case
            s.g[l] = s.eps[l] if fp is None else eq.gated_error(s.eps[l], fp)
        else:
            s.g[l] = eq.pooled_gate(s.eps[l], fp, pool, s.route[l])

    # ------------------------------------------------------------------ the step
    def step(self, s: PCState, row) -> None:
        """Advance ``s`` by one forward-Euler step of SPEC 2.1-2.2, all from the old
        state, updating what ``row`` (a :class:`pcsim.model.schedule.Row`) names."""
        dt, L, links = self.dt, self.L, s.links
        s.step += 1
        k = s.step
        new_x = list(s.x)
        for l in range(L + 1):  # 1. value neurons
            if not row.moved[l]:
                continue
            feedback = (links.feedback[l].transmit(s.g[l + 1], k)
                        if l < L and row.in_error[l + 1] else 0.0)
            own = 0.0
            if row.in_error[l]:
                own = s.eps[0] if l == 0 else links.error[l].transmit(s.eps[l], k)
            new_x[l] = euler(s.x[l], dt, eq.value_rhs(own, feedback, self.tau_x))
        if self.tau_eps > 0:  # 2. leaky error neurons
            for l in range(1, L + 1):
                s.eps[l] = euler(s.eps[l], dt, eq.error_rhs(s.eps[l], s.x[l], s.mu[l],
                                                            self.prec[l], self.tau_eps))
        if self.plastic:  # 3. synapses, from the old g and x
            self._learn_continuously(s)
            if s.events is not None:  # the change must reach what receivers accumulated
                links.resync(k)
        if self._continuous:  # 3b. learned precisions, from the old x and mu (SPEC 2.4)
            self._learn_precisions(s)
        s.x = new_x
        s.t += dt
        for l in range(1, L + 1):  # 4. predictions whose input (or weights) moved
            if row.predicted[l]:
                self._predict(s, l, links.forward[l].transmit(s.x[l - 1], k))
        for l in range(L + 1):  # 5. errors where x, mu or prec changed
            if row.moved[l] or (l > 0 and (row.predicted[l] or self.tau_eps > 0
                                           or l in self._continuous)):
                self._error(s, l)
        self._count_neurons(s)

    def refresh(self, s: PCState, changed) -> None:
        """Recompute what depends on ``x`` after an outside change: ``a_l`` for the
        projections in ``changed``, then every error (``mu``, ``f'(a)``, ``eps``, ``g``)."""
        for l in range(1, self.L + 1):
            if l in changed:
                self._predict(s, l, s.links.forward[l].transmit(s.x[l - 1], s.step))
        for l in range(self.L + 1):
            if l > 0 or not s.clamped[0]:
                self._error(s, l)

    def run(self, s: PCState, schedule: Sequence, hooks: Sequence = (),
            stop_tol: Optional[float] = None, engine=None) -> PCState:
        """Step ``s`` through ``schedule``, calling ``hook.on_step(engine, s, k)`` after
        step ``k`` (0-based). With ``stop_tol``, stop once a step lowers the batch-mean
        energy by less than ``stop_tol`` times its value (one read-back per step)."""
        e_prev = float(self.energy(s).mean()) if stop_tol else None
        for k, row in enumerate(schedule):
            self.step(s, row)
            for hook in hooks:
                hook.on_step(engine, s, k)
            if stop_tol:
                e = float(self.energy(s).mean())
                if e_prev - e < stop_tol * abs(e_prev):
                    break
                e_prev = e
        return s

    # ------------------------------------------------------------------ read-outs
    def energy(self, s: PCState):
        """The free energy ``E`` per sample, shape ``(batch,)`` (SPEC 1)."""
        return free_energy(s.x, s.mu, self.prec, s.clamped, self.network.prec_0)

    def layer_energies(self, s: PCState) -> list:
        """``E_l`` per sample for every layer (``E_0``: the prior of a free ``x_0``, else
        zeros); their sum is :meth:`energy`."""
        rows = s.x[0].shape[0]
        out = [eq.prior_energy(s.x[0], self.network.prec_0) if not s.clamped[0]
               else torch.zeros(rows, device=s.x[0].device, dtype=s.x[0].dtype)]
        for l in range(1, self.L + 1):
            out.append(eq.layer_energy(s.x[l], s.mu[l], self.prec[l], self.network.layers[l].size))
        return out

    def local_gradients(self, s: PCState) -> dict:
        """``-dE/dtheta`` for every learned tensor by its store name (``W_l``, ``b_l``, a
        learned precision's tensors), batch means, from local quantities only: the gated
        error after the synapse and the value before it (as sent); a layer's own values
        and predictions for its precision."""
        grads = {}
        for l in range(1, self.L + 1):
            pre = s.x[l - 1] if s.events is None else s.links.forward[l].sent
            g = torch.zeros_like(s.a[l]) if s.g[l] is None else s.g[l]  # T below the depth
            for local, grad in self.maps[l].local_grads(g, pre).items():
                grads[store_name(local, l)] = grad
            if self.recorder is not None:
                self._count_learning(s, l, pre, g)
        for l in self._stepped:
            p = self.precisions[l]
            for local, grad in p.local_grads(s.x[l], s.mu[l]).items():
                grads[store_name(local, l)] = grad
            if self.recorder is not None:
                acc.count_prec_updates(self.recorder, f"prec_{l}", 0, p.n_values,
                                       s.links.wire.size)
        return grads

    def _learn_continuously(self, s: PCState) -> None:
        """One Euler step of SPEC 2.2 for every projection's tensors (weight decay on
        those its kind declares decayed), from the old state."""
        for l in range(1, self.L + 1):
            m = self.maps[l]
            for local, grad in m.local_grads(s.g[l], s.x[l - 1]).items():
                t = m.tensors[local]
                rhs = (eq.weight_rhs(grad, t, self.weight_decay, self.tau_w)
                       if local in m.decayed else eq.bias_rhs(grad, self.tau_w))
                t.copy_(euler(t, self.dt, rhs))

    def _learn_precisions(self, s: PCState) -> None:
        """One Euler step of SPEC 2.4 for every continuously learned precision (at its
        own ``tau``, else ``tau_w``), from the old state, then its floor; ``prec`` is
        read afresh for the errors of the new state."""
        for l in self._continuous:
            p = self.precisions[l]
            tau = self.tau_w if p.tau is None else p.tau
            for local, grad in p.local_grads(s.x[l], s.mu[l]).items():
                p.tensors[local].copy_(euler(p.tensors[local], self.dt, grad / tau))
            p.project()
            if self.recorder is not None:
                acc.count_prec_updates(self.recorder, f"prec_{l}", s.step, p.n_values,
                                       s.links.wire.size)
        self._read_precisions()

    # ------------------------------------------------------------------ counting
    def _count_neurons(self, s, initial=False):
        if self.recorder is not None:
            acc.count_neurons(self.recorder, s.step, self.network, s.clamped,
                              s.x[0].shape[0], s.links.active, s.links.wire.size, initial)

    def _count_learning(self, s, l, pre, g):
        """Gradient MACs of every synapse per sample (dense), or of those whose pre and
        post factors are both nonzero (event mode); one write per parameter."""
        p, rows = self.network.projections[l - 1], pre.shape[0]
        n_params = sum(t.numel() for t in self.maps[l].tensors.values())
        if s.events is None:
            n = rows * p.grad_macs
            acc.count_learning(self.recorder, f"W_{l}", n, n_params, s.links.wire.size,
                               dense_macs=n)
        else:
            n = self.maps[l].active_pairs(pre != 0, g != 0)
            acc.count_learning(self.recorder, f"W_{l}", n, n_params, s.links.wire.size)
