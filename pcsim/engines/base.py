"""Engine and hook protocols, and the engine registry (imported lazily).

Engines own generic machinery only (the integrator, the sum over a projection,
clamping, calling hooks); every law comes from :mod:`pcsim.model.equations`.
Engines never import monitors: monitors implement :class:`StepHook`.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

__all__ = ["StepHook", "OpRecorder", "EventSink", "ENGINES", "get_engine_class"]


@runtime_checkable
class StepHook(Protocol):
    """Observer called by an engine after every Euler step; it must not change state."""

    def on_step(self, engine: Any, state: Any, step: int) -> None: ...


@runtime_checkable
class OpRecorder(Protocol):
    """Receives op counts from an engine (SPEC 4); ``pcsim.monitors.OpCounter`` is one.

    ``phase`` is ``"inference"`` or ``"learning"``; ``step`` 0 is the feedforward start;
    ``target`` names a projection (``W_l``, ``W_l^T``), a one-to-one link or a population.
    """

    def add(self, phase: str, step: int, target: str, kind: str, value) -> None: ...


class EventSink(Protocol):
    """Receives every batch of events an engine sends in event mode (for traces).

    ``mask`` (batch, n) marks the senders of ``population`` at ``step``; ``payload`` holds
    what they sent; ``target`` names the projection or link the events enter.
    """

    def __call__(self, population: str, target: str, step: int, mask, payload) -> None: ...


#: Engine name -> "module:Class", imported only when asked for (``--backend torch``
#: needs no brian2).
ENGINES = {
    "torch": "pcsim.engines.torch.engine:TorchEngine",
    "brian2": "pcsim.engines.brian2.trainer:Brian2Trainer",
}


def get_engine_class(name: str):
    """Import and return the engine class registered as ``name``.

    Raises
    ------
    KeyError
        Listing the valid names.
    """
    try:
        target = ENGINES[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; valid: {sorted(ENGINES)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)
