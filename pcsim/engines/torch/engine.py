"""Clock-driven torch engine: forward-Euler integration of the PC dynamics (SPEC 2).

The engine holds the synapses (``maps``) and the configuration; one batch's dynamics is
a :class:`~pcsim.engines.torch.dynamics.Dynamics`, whose single step function runs the
stepped path, the fast path (the inference wavefront, when nothing observes the steps),
the compiled path, trace recording and diagnosis alike.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence

import torch

from pcsim.engines.base import BatchResult, capabilities
from pcsim.engines.torch.compiled import FastPath
from pcsim.engines.torch.device import resolve_device
from pcsim.engines.torch.dynamics import Dynamics, PCState
from pcsim.engines.torch.readouts import ReadOuts
from pcsim.engines.torch.maps import as_layer, build_maps
from pcsim.engines.torch.params import ParamStore, StoreOwner
from pcsim.engines.torch.precisions import (build_precisions, check_precisions,
                                            project_precisions)
from pcsim.model.schedule import dense_schedule

__all__ = ["PCState", "TorchEngine", "resolve_device"]


class TorchEngine(ReadOuts, StoreOwner):
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
    params : ParamStore, optional
        Start from these tensors instead of a fresh draw.
    events : pcsim.config.schema.EventsConfig, optional
        Event-driven (sigma-delta) transmission when ``events.enabled``; else dense.
    compile : bool, default False
        Hand the fast path to ``torch.compile``: one fused graph per cycle, holding the
        update of an SGD, Adam or AdamW optimizer too
        (:class:`~pcsim.engines.torch.optim.GraphUpdate`). The first batch runs eagerly
        and creates the optimizer's state; the second pays the compile.

    Attributes
    ----------
    params : ParamStore
        Every learned tensor by name (``W_l``, ``b_l``, learned precisions).
    recorder : OpRecorder or None
        Receives op counts (SPEC 4) when set; None costs nothing.
    event_sink : EventSink or None
        Receives every batch of events (event mode).
    grad_reducer : callable or None
        Applied to the descent directions before the optimizer (data-parallel).
    """

    name = "torch"
    capabilities = capabilities("torch", "pc")

    def __init__(self, network, dynamics, *, device="cpu", dtype=torch.float32, seed=0,
                 init="xavier_uniform", weight_decay=0.0, params=None, events=None,
                 compile=False):
        self.network = network
        self.device = torch.device(device)
        self.dtype = dtype
        self.weight_decay = float(weight_decay)
        self.dt = float(dynamics.dt)
        self.tau_x = float(dynamics.tau_x)
        self.tau_eps = float(dynamics.tau_eps)
        self.tau_w = float(dynamics.tau_w)
        self.n_steps = int(dynamics.steps)
        self.stop_tol = dynamics.stop_tol
        self.plastic = math.isfinite(self.tau_w)
        self.L = network.n_layers
        self.activations = [layer.activation for layer in network.layers]
        self._check_timescales()
        if params is None:
            params = ParamStore.initial(network, init, seed, self.device, dtype)
        self.params = params
        self.maps = build_maps(network, params)
        self.precisions = build_precisions(network, params)
        # tensors of continuously learned precisions: their own ODE, no optimizer
        self._continuous_names = [name for p in self.precisions
                                  if p is not None and p.continuous
                                  for name in params.names_of("layer", p.layer.index)]
        self.learning_steps = 0  # learning steps taken (the guard names the step)
        self.events = events if events is not None and events.enabled else None
        self.recorder = None
        self.event_sink = None
        self._carried = None  # event mode with events.carry: the last batch's links
        self.grad_reducer = None
        self.compile = bool(compile)
        self._fast = FastPath(self)

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

    def parameters(self) -> list[torch.Tensor]:
        """The tensors an optimizer steps, in store order: every one but those of the
        continuously learned precisions (``tau_prec`` set), which follow their own ODE."""
        return [t for name, t in self.params.items() if name not in self._continuous_names]

    # ------------------------------------------------------------------ one batch
    def _dynamics(self, maps=None, observed=True) -> Dynamics:
        """The dynamics of one batch through ``maps`` (default: the engine's); with
        ``observed=False`` no recorder or event sink sees it."""
        return Dynamics(self.network, self.maps if maps is None else maps, self.dt,
                        self.tau_x, self.tau_eps, self.tau_w, self.weight_decay, self.events,
                        self.recorder if observed else None,
                        self.event_sink if observed else None, self.precisions)

    @property
    def prec(self) -> list:
        """Every layer's current precision: its fixed number, or the learned value."""
        return self._dynamics(observed=False).prec

    def _as_tensor(self, value, layer=None):
        """``value`` on the engine's device and dtype; with ``layer``, each sample in
        that layer's shape (a flat image becomes ``(C, H, W)`` and back)."""
        t = torch.as_tensor(value, device=self.device, dtype=self.dtype)
        if layer is None:
            return t
        return as_layer(t, self.network.layers[layer])

    def _inputs(self, x0, target):
        """``(x0, target)`` as tensors; a missing ``x0`` (generative) starts at zero."""
        target = None if target is None else self._as_tensor(target, self.L)
        if x0 is None:
            if target is None:
                raise ValueError("give x0 or target")
            return torch.zeros(target.shape[0], *self.network.layers[0].shape,
                               device=self.device, dtype=self.dtype), target
        return self._as_tensor(x0, 0), target

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
        x0, target = self._inputs(x0, target)
        carry = self.events is not None and self.events.carry
        s = self._dynamics().init_state(x0, target, clamped,
                                        carry=self._carried if carry else None,
                                        weights_version=self.learning_steps)
        if carry:
            self._carried = s.links
        return s

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
        self._dynamics().refresh(s, [layer + 1] if x is not None and layer < self.L else [])

    def _dense_schedule(self, clamped, n_steps):
        return dense_schedule(clamped, n_steps, self.plastic)

    @torch.no_grad()
    def step(self, s: PCState) -> None:
        """Advance ``s`` by one forward-Euler step of SPEC 2.1-2.2 (all from the old state)."""
        self._dynamics().step(s, self._dense_schedule(s.clamped, 1)[0])

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
        return self._dynamics().run(s, self._dense_schedule(s.clamped, n_steps), hooks,
                                    stop_tol, engine=self)

    @torch.no_grad()
    def layer_energies(self, s: PCState) -> list:
        """``E_l`` per sample for every layer (``E_0`` is the prior of a free ``x_0``, else
        zeros); ``energy`` is their sum."""
        return self._dynamics().layer_energies(s)

    @torch.no_grad()
    def energy(self, s: PCState) -> torch.Tensor:
        """Return the free energy ``E`` per sample, shape ``(batch,)`` (SPEC 1)."""
        return self._dynamics().energy(s)

    @torch.no_grad()
    def local_gradients(self, s: PCState) -> dict:
        """Return ``-dE/dtheta`` for every learned tensor by store name (``W_l``, ``b_l``,
        ...), batch means, from local quantities only: the gated error after the
        synapse, the value before it."""
        return self._dynamics().local_gradients(s)

    # ------------------------------------------------------------------ training
    def fast_path_applies(self, hooks: Sequence = ()) -> bool:
        """True when nothing observes the steps (no events, op recorder, hooks or
        convergence check) and the cycle is the discrete update of SPEC 2.3: then the
        step function runs the inference wavefront, with ``W^T`` held row-major."""
        return (self.events is None and self.recorder is None and not hooks
                and self.tau_eps == 0 and not self.plastic and not self.stop_tol
                and not self._continuous_names)

    @torch.no_grad()
    def apply_gradients(self, grads: dict, optimizer) -> None:
        """Feed ``-grads`` (= dE/dtheta, by store name) to a torch optimizer and step it
        (after the ``grad_reducer``, when data-parallel)."""
        self._descend({k: -g for k, g in grads.items()}, optimizer)

    def _descend(self, descent: dict, optimizer) -> None:
        """Step ``optimizer`` on ``descent`` = ``dE/dtheta`` by store name."""
        if self.grad_reducer is not None:  # a mean over ranks commutes with the sign
            descent = self.grad_reducer(descent)
        for name, t in self.params.items():
            if name not in self._continuous_names:
                t.grad = descent[name]
        optimizer.step()
        self._project_precisions()

    def _project_precisions(self) -> None:
        """Put every learned precision back above its floor after an update."""
        project_precisions(self.precisions)

    def check_precisions(self, when: str) -> None:
        """The guard of SPEC 2.4 (:func:`~pcsim.engines.torch.params.check_precisions`):
        FloatingPointError naming the layer, ``when`` and the likely cause."""
        check_precisions(self.precisions, when, self.dt / self.tau_x)

    @torch.no_grad()
    def train_batch(self, x0, target, optimizer=None, hooks: Sequence = ()) -> BatchResult:
        """One PC cycle: clamp, feedforward start, ``T`` inference steps, one learning step.

        The step function runs the wavefront when :meth:`fast_path_applies` (optionally
        compiled with the optimizer's update, :class:`~pcsim.engines.torch.compiled.FastPath`),
        else the dense schedule through the links (events, op counts, hooks, leaky
        errors, continuous plasticity).
        """
        descent = None
        learned = any(p is not None for p in self.precisions)
        step = self.learning_steps + 1
        if learned:  # the values inference will use (the fused graph also learns with them)
            self.check_precisions(f"before learning step {step}")
        if self.fast_path_applies(hooks):
            x0, target = self._inputs(x0, target)
            descent, e0, e1 = self._fast.run(x0, target, optimizer)
            s, steps = None, self.n_steps
        else:
            s = self.init_state(x0, target, phase="train")
            e0 = self.energy(s).mean()
            self.infer(s, hooks=hooks)
            e1 = self.energy(s).mean()
            steps = s.step
            if self._continuous_names or (learned and self.plastic):  # they moved in inference
                self.check_precisions(f"after inference, before learning step {step}")
        if not bool(torch.isfinite(e1)):  # guard before the learning step touches a weight
            raise FloatingPointError(self.diagnose(x0, target))
        if optimizer is not None:
            if s is not None:
                self.apply_gradients(self.local_gradients(s), optimizer)
            elif descent is not None:
                self._descend(descent, optimizer)
            else:  # (the fused graph has applied its update)
                self._project_precisions()
            self._learned(step, learned)
        return BatchResult(e0, e1, steps)

    @torch.no_grad()
    def learn(self, s: PCState, optimizer) -> None:
        """One learning step from a relaxed state ``s`` (what :meth:`train_batch` does
        after inference; online mode calls it per sample)."""
        self.apply_gradients(self.local_gradients(s), optimizer)
        self._learned(self.learning_steps + 1, any(p is not None for p in self.precisions))

    def _learned(self, step: int, learned: bool) -> None:
        self.learning_steps = step
        if learned:  # no checkpoint may hold what this step made of them
            self.check_precisions(f"after learning step {step}")
