"""The torch engine's fast path: one discrete PC cycle on the inference wavefront, eager
or handed to ``torch.compile``, optionally with the optimizer's update in the same graph.

It runs the engine's one step function (:class:`~pcsim.engines.torch.dynamics.Dynamics`)
over frozen maps with nothing observing; what it adds is only the plumbing of
compilation: which function is compiled, when the optimizer's rule can join the graph
(:class:`~pcsim.engines.torch.optim.GraphUpdate`), and the first batch that runs eagerly
to create the optimizer's state.
"""

from __future__ import annotations

from typing import Optional

import torch

from pcsim.engines.torch.maps import frozen_maps
from pcsim.engines.torch.optim import GraphUpdate
from pcsim.model.schedule import inference_wavefront

__all__ = ["FastPath"]


class FastPath:
    """The fast cycle of ``engine`` (a :class:`~pcsim.engines.torch.engine.TorchEngine`)."""

    def __init__(self, engine):
        self.engine = engine
        self._cycle = None  # the cycle alone, compiled on first use
        self._update = None  # the optimizer's rule compiled with the cycle
        self._train_step = None
        self._kept = None  # the eager cycle's (key, dynamics, schedule)

    def descent(self, x0, target):
        """The cycle: ``dE/dtheta`` by store name (what an optimizer descends: the negated
        local gradients) and the two batch-mean energies."""
        eng = self.engine
        clamped = eng.network.clamped("train")
        if torch.compiler.is_compiling():
            # traced: everything is built here, from constants, and nothing is read from
            # a store of Python objects (a stored list of rows would make torch.compile
            # guard every entry at every call)
            dyn = eng._dynamics(frozen_maps(eng.maps, clamped), observed=False)
            schedule = inference_wavefront(clamped, eng.n_steps)
        else:
            dyn, schedule = self._eager(clamped)
        s = dyn.init_state(x0, target, clamped, zeros=False)
        e0 = dyn.energy(s).mean()
        dyn.run(s, schedule)
        return {k: -g for k, g in dyn.local_gradients(s).items()}, e0, dyn.energy(s).mean()

    def _eager(self, clamped):
        """The eager cycle's dynamics and schedule, built once and kept while the engine's
        maps and constants stay what they were: each cycle only refreshes the frozen
        maps' copies of ``W^T`` and re-reads the precisions (Python work per cycle is
        what an eager 128-wide network pays for)."""
        eng = self.engine
        key = (tuple(eng.maps), clamped, eng.n_steps, eng.dt, eng.tau_x, eng.tau_eps,
               eng.tau_w, eng.weight_decay, tuple(eng.precisions))
        if self._kept is None or self._kept[0] != key:
            dyn = eng._dynamics(frozen_maps(eng.maps, clamped), observed=False)
            self._kept = (key, dyn, inference_wavefront(clamped, eng.n_steps))
        else:
            dyn = self._kept[1]
            frozen_maps(eng.maps, clamped, into=dyn.maps)
            dyn._read_precisions()
        return self._kept[1], self._kept[2]

    def _descent_and_update(self, x0, target, kind, groups, index, state, coef, hyper):
        """The cycle and the optimizer's update as one function, applied only when the
        final energy is finite."""
        descent, e0, e1 = self.descent(x0, target)
        GraphUpdate.apply_groups(kind, groups, index, list(descent.values()), state, coef,
                                 hyper, ok=torch.isfinite(e1))
        return e0, e1

    def run(self, x0, target, optimizer=None):
        """One cycle; returns ``(descent or None, e0, e1)``. ``descent`` is None when the
        compiled graph has applied the optimizer's update itself."""
        update = self._fused_update(optimizer)
        if update is not None:  # the graph applies the update only if e1 is finite
            coef, hyper, state = update.inputs()
            e0, e1 = self._train_step(x0, target, update.kind, update.params, update.index,
                                      state, coef, hyper)
            return None, e0, e1
        if self.engine.compile and optimizer is not None and self._fusable(optimizer):
            # the optimizer's first step, which creates its state: the compiled graph
            # that follows holds the update too, so the cycle alone is not compiled
            return self.descent(x0, target)
        if self._cycle is None:
            self._cycle = (torch.compile(self.descent, dynamic=False) if self.engine.compile
                           else self.descent)
        return self._cycle(x0, target)

    def _fusable(self, optimizer) -> bool:
        """True when the optimizer's update can join the compiled cycle: a rule
        :class:`GraphUpdate` supports, and no data-parallel reducer between the two."""
        return self.engine.grad_reducer is None and GraphUpdate.supports(optimizer)

    def _fused_update(self, optimizer) -> Optional[GraphUpdate]:
        """The optimizer's rule to compile into the cycle's graph, or None (eager
        engine, no optimizer, a rule it cannot take, or no optimizer state yet)."""
        if not self.engine.compile or optimizer is None or not self._fusable(optimizer):
            return None
        if self._update is None or self._update.optimizer is not optimizer:
            if not GraphUpdate.ready(optimizer):
                return None
            self._update = GraphUpdate(optimizer, self.engine.parameters())
            if self._train_step is None:
                self._train_step = torch.compile(self._descent_and_update, dynamic=False)
        return self._update
