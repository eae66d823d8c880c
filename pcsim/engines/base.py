"""What every trainer promises, what each can do, and the one registry of trainers.

Engines own generic machinery only (the integrator, the sum over a projection,
clamping, calling hooks); every law comes from :mod:`pcsim.model.equations`.
Engines never import monitors: monitors implement :class:`StepHook`, :class:`OpRecorder`
and :class:`EventSink`.

The orchestration (:mod:`pcsim.experiment`) talks to a trainer only through
:class:`Trainer`; what a trainer cannot do it declares in :class:`Capabilities`, and
:func:`refusals` turns a config that asks for more into the messages a user reads.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

__all__ = ["StepHook", "OpRecorder", "EventSink", "BatchResult", "Capabilities", "Trainer",
           "TRAINERS", "ENGINES", "get_engine_class", "trainer_class", "capabilities",
           "refusals"]


@runtime_checkable
class StepHook(Protocol):
    """Observer called by an engine after every Euler step; it must not change state."""

    def on_step(self, engine: Any, state: Any, step: int) -> None: ...


@runtime_checkable
class OpRecorder(Protocol):
    """Receives op counts from an engine (SPEC 4); ``pcsim.monitors.OpCounter`` is one.

    ``phase`` is ``"inference"`` or ``"learning"``; ``step`` 0 is the feedforward start;
    ``target`` names a projection (``W_l``, ``W_l^T``), a one-to-one link or a population;
    ``kind`` is a :class:`pcsim.model.ops.Op`.
    """

    def add(self, phase: str, step: int, target: str, kind: str, value) -> None: ...


class EventSink(Protocol):
    """Receives every batch of events an engine sends in event mode (for traces).

    ``mask`` (batch, n) marks the senders of ``population`` at ``step``; ``payload`` holds
    what they sent; ``target`` names the projection or link the events enter.
    """

    def __call__(self, population: str, target: str, step: int, mask, payload) -> None: ...


@dataclass(frozen=True)
class BatchResult:
    """What one training batch returns.

    ``energy_initial`` and ``energy_final`` are batch means (0-d tensors, not synchronised:
    the caller decides when to read them); ``steps`` is the number of inference steps run
    (fewer than ``T`` after a convergence stop; 0 for backprop).
    """

    energy_initial: Any
    energy_final: Any
    steps: int = 0

    def __getitem__(self, key: str):  # the dict form of earlier releases
        return getattr(self, key)


@dataclass(frozen=True)
class Capabilities:
    """What a trainer can execute; the config asks, :func:`refusals` answers.

    ``counting``: reports op counts (SPEC 4) to a recorder. ``events``: event-driven
    transmission (SPEC 3). ``traces``: records value and error trajectories.
    ``generative``: trains a generative network (free ``x_0``). ``devices``, ``dtypes``:
    where and in what it computes. ``batched_plasticity``: continuous plasticity (finite
    ``tau_w``) with a batch larger than one. ``data_parallel``: applies a
    ``grad_reducer`` (torch.distributed runs). ``projections``: the projection kinds it
    runs (None: every kind its engine has a map for). ``learned_precision``: layers
    whose precision is learned (SPEC 2.4) by the learning step; ``continuous_precision``:
    also continuously, at a ``tau_prec``, inside the dynamics.
    """

    counting: bool = True
    events: bool = True
    traces: bool = True
    generative: bool = True
    devices: tuple = ("cpu", "cuda", "auto")
    dtypes: tuple = ("float32", "float64")
    batched_plasticity: bool = True
    data_parallel: bool = True
    projections: Optional[tuple] = None
    learned_precision: bool = True
    continuous_precision: bool = True


@runtime_checkable
class Trainer(Protocol):
    """The contract between a trainer and the orchestration.

    Attributes: ``network`` (:class:`pcsim.model.Network`), ``device``, ``dtype``,
    ``recorder`` (an :class:`OpRecorder` or None; counts only when the trainer's
    capabilities say ``counting``), ``grad_reducer`` (callable on the descent
    directions, e.g. a data-parallel all-reduce, or None), ``precisions`` (per layer
    ``l = 0..L``: None for the layer's fixed ``prec``, else its learned precision, with
    ``value()``, ``variance()``, ``summary()``; SPEC 2.4).
    """

    network: Any
    recorder: Optional[OpRecorder]
    grad_reducer: Any
    precisions: list

    @classmethod
    def from_config(cls, config, network=None, device=None) -> "Trainer": ...

    def train_batch(self, x0, target, optimizer=None,
                    hooks: Sequence[StepHook] = ()) -> BatchResult: ...

    def predict(self, x0): ...

    def reconstruct(self, data): ...

    def parameters(self) -> list: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


#: (backend, rule) -> ("module:Class", Capabilities). Classes are imported only when
#: asked for (``--backend torch`` needs no brian2); their capabilities are declared here
#: so that a config can be checked without importing a backend.
TRAINERS = {
    ("torch", "pc"): ("pcsim.engines.torch.engine:TorchEngine", Capabilities()),
    ("torch", "bp"): ("pcsim.engines.torch.backprop:BackpropTrainer",
                      Capabilities(events=False, traces=False, generative=False,
                                   learned_precision=False, continuous_precision=False)),
    ("brian2", "pc"): ("pcsim.engines.brian2.trainer:Brian2Trainer",
                       Capabilities(counting=False, events=False, generative=False,
                                    devices=("cpu", "auto"), dtypes=("float64",),
                                    batched_plasticity=False, data_parallel=False,
                                    projections=("dense",), continuous_precision=False)),
}

#: Engine name -> "module:Class" (the PC rule of each backend).
ENGINES = {backend: target for (backend, rule), (target, _) in TRAINERS.items() if rule == "pc"}


def _import(target: str):
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def trainer_class(backend: str, rule: str = "pc"):
    """Import and return the trainer registered for ``backend`` and ``rule``.

    Raises
    ------
    KeyError
        Naming the valid pairs.
    """
    try:
        target, _ = TRAINERS[(backend, rule)]
    except KeyError:
        valid = ", ".join(f"{b}/{r}" for b, r in TRAINERS)
        raise KeyError(f"no trainer for backend {backend!r} with rule {rule!r}; valid: "
                       f"{valid}") from None
    return _import(target)


def capabilities(backend: str, rule: str = "pc") -> Capabilities:
    """The declared capabilities of a registered trainer (no import of its backend)."""
    if (backend, rule) not in TRAINERS:
        trainer_class(backend, rule)  # raises with the valid pairs
    return TRAINERS[(backend, rule)][1]


def get_engine_class(name: str):
    """Import and return the PC engine registered as ``name``.

    Raises
    ------
    KeyError
        Listing the valid names.
    """
    if name not in ENGINES:
        raise KeyError(f"unknown backend {name!r}; valid: {sorted(ENGINES)}")
    return _import(ENGINES[name])


def refusals(backend: str, rule: str, *, events: bool, traces: bool, generative: bool,
             device: str, dtype: str, plastic: bool, batch_size: int,
             data_parallel: bool = False, projections: Sequence[str] = ("dense",),
             learned_precision: bool = False, continuous_precision: bool = False) -> list[str]:
    """What the trainer of ``backend``/``rule`` cannot do of what a config asks, as the
    messages a user reads (empty: it can do all of it)."""
    cap = capabilities(backend, rule)
    who = (f"run.backend {backend!r}" if rule == "pc" else f"learning.rule {rule!r}")
    out = []
    if events and not cap.events:
        out.append(f"run.backend {backend!r} does not execute events.enabled; event mode "
                   "runs on the torch backend" if rule == "pc" else
                   "events.enabled applies to the PC engine (learning.rule: pc)")
    if traces and not cap.traces:
        out.append("traces.enabled records PC dynamics (learning.rule: pc)")
    if generative and not cap.generative:
        out.append("network.mode 'generative' trains with learning.rule 'pc' on "
                   "run.backend 'torch'")
    if dtype not in cap.dtypes:
        out.append(f"{who} computes in {' or '.join(cap.dtypes)}: set run.dtype: "
                   f"{cap.dtypes[0]}")
    if not any(device == d or device.startswith(d + ":") for d in cap.devices):
        out.append(f"{who} runs on the CPU: set run.device: cpu")
    if plastic and batch_size != 1 and not cap.batched_plasticity:
        out.append(f"{who} with a finite tau_w needs learning.batch_size: 1 (batch copies "
                   "would learn apart)")
    if data_parallel and not cap.data_parallel:
        out.append(f"data-parallel runs use the torch backend; {who} runs in one process")
    unknown = [k for k in projections if cap.projections is not None and k not in cap.projections]
    if unknown:
        out.append(f"{who} runs {' and '.join(cap.projections)} projections, not "
                   f"{', '.join(sorted(set(unknown)))}; use run.backend: torch")
    if learned_precision and not cap.learned_precision:
        out.append(f"{who} keeps every precision fixed (network.layers.*.precision); learned "
                   "precision trains with learning.rule 'pc'" if rule != "pc" else
                   f"{who} keeps every precision fixed (network.layers.*.precision); learned "
                   "precision runs on the torch backend")
    elif continuous_precision and not cap.continuous_precision:
        out.append(f"{who} learns precisions only by the learning step: set "
                   "network.layers.*.precision.tau_prec: null (a continuous tau_prec runs "
                   "on the torch backend)")
    if continuous_precision and data_parallel:
        out.append("a precision with tau_prec learns inside each process's inference, and "
                   "the processes would drift apart: data-parallel runs learn it by the "
                   "learning step (precision.tau_prec: null), whose all-reduce carries it")
    return out
