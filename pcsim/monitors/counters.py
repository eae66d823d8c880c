"""Op counting (SPEC section 4): an engine reports, a counter adds up, OpCounts reads out.

Kinds, per phase (``inference``, ``learning``), per target (a projection ``W_l``, its
adjoint ``W_l^T``, a one-to-one link ``eps_l->x_l``, or a population ``value_l<l>`` /
``error_l<l>``) and per step (0 = the feedforward start, k = the k-th Euler step; the
learning step is step 0 of ``learning``):

=========================  ==========================================================
``dense_macs``             ``n_post * n_pre`` per dense map evaluation per sample
``syn_events``             events sent (dense mode: every pre neuron, every evaluation)
``syn_ops_mac``            sum over events of the fan-out, graded payloads (MACs)
``syn_ops_ac``             the same for integer payloads (ACs)
``neuron_updates``         per neuron per step
``neuron_updates_active``  those that sent or received an event (dense mode: all)
``weight_grad_ops``        the accumulation of the local weight gradient: a MAC per
                           plastic synapse per sample (a convolution's kernel entry per
                           output position; event mode: only nonzero pre and post factors)
``weight_writes``          one write per plastic parameter (weight or bias) per learning
                           step, however many samples the step averages
``prec_updates``           per learned variance per learning step (SPEC 2.4; a
                           continuously learned one: per variance per Euler step)
``mem_read_bytes``         one weight read per synaptic op and per weight write
``mem_write_bytes``        one state write per neuron update, one per weight write
=========================  ==========================================================

The memory model is deliberately simple (weights and neuron states touched, at the
simulation dtype's size); bias additions are part of the neuron update.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

__all__ = ["KINDS", "OpCounter", "OpCounts"]

KINDS = ("dense_macs", "syn_events", "syn_ops_mac", "syn_ops_ac", "neuron_updates",
         "neuron_updates_active", "weight_grad_ops", "weight_writes", "prec_updates",
         "mem_read_bytes",
         "mem_write_bytes")


#: Kinds the learning step counts once per step, not per sample: a data-parallel
#: replica's are the same step's (in the learning phase, memory bytes are only these
#: parameters' reads and writes).
PER_STEP = ("weight_writes", "prec_updates", "mem_read_bytes", "mem_write_bytes")


class OpCounter:
    """Accumulate counts reported by an engine (the engine's ``recorder``).

    Values may be ints or 0-d tensors; tensors are summed lazily, so counting on a GPU
    does not synchronise at every step.
    """

    def __init__(self):
        self._counts = defaultdict(int)  # (phase, step, target, kind) -> int or tensor
        self.n_samples = 0
        self.mode = "dense"

    def add(self, phase: str, step: int, target: str, kind: str, value) -> None:
        """Add ``value`` to one cell."""
        self._counts[(phase, step, target, kind)] += value

    def add_samples(self, n: int) -> None:
        """Record that ``n`` more samples went through the counted work."""
        self.n_samples += n

    def state(self) -> dict:
        """Exact counts so far, for a checkpoint (plain lists and ints)."""
        return {"n_samples": self.n_samples,
                "cells": [[p, st, t, k, int(v)] for (p, st, t, k), v in self._counts.items()]}

    def load(self, state: dict) -> None:
        """Continue from :meth:`state` (a resumed run)."""
        self.n_samples = int(state["n_samples"])
        for p, st, t, k, v in state["cells"]:
            self._counts[(p, int(st), t, k)] = int(v)

    def merge(self, other: "OpCounter", replica: bool = False) -> None:
        """Add ``other``'s samples and counts to this counter (e.g. another rank's).

        ``replica``: ``other`` counted a replica of the same network on other samples
        (data-parallel), so the learning step's per-step work -- the parameters written
        and read once per step (:data:`PER_STEP`) -- is the same step, not more work,
        and is not added again."""
        self.n_samples += other.n_samples
        for key, value in other._counts.items():
            if not (replica and key[0] == "learning" and key[3] in PER_STEP):
                self._counts[key] += value

    def result(self) -> "OpCounts":
        """Freeze into exact Python integers."""
        cells = {key: int(value) for key, value in self._counts.items()}
        return OpCounts(cells, self.n_samples, self.mode)


@dataclass
class OpCounts:
    """Exact op counts of some work, and the number of samples it covered."""

    cells: dict = field(default_factory=dict)  # (phase, step, target, kind) -> int
    n_samples: int = 0
    mode: str = "dense"  # which execution produced them: "dense" or "event"

    def total(self, kind: str, phase: str | None = None, target: str | None = None) -> int:
        return sum(v for (p, _, t, k), v in self.cells.items()
                   if k == kind and (phase is None or p == phase) and (target is None or t == target))

    def per_sample(self, kind: str, phase: str | None = None) -> float:
        return self.total(kind, phase) / self.n_samples if self.n_samples else 0.0

    def by(self, level: str, kind: str, phase: str | None = None) -> dict:
        """Totals of ``kind`` grouped by ``"step"`` or ``"target"``."""
        index = {"step": 1, "target": 2}[level]
        out = defaultdict(int)
        for key, value in self.cells.items():
            if key[3] == kind and (phase is None or key[0] == phase):
                out[key[index]] += value
        return dict(sorted(out.items(), key=lambda kv: str(kv[0]).zfill(8)))

    def summary(self) -> dict:
        """Per-sample totals by phase and kind (JSON-ready)."""
        phases = sorted({p for p, _, _, _ in self.cells})
        return {phase: {kind: self.per_sample(kind, phase) for kind in KINDS
                        if any(k == kind and p == phase for p, _, _, k in self.cells)}
                for phase in phases}

    def to_json(self) -> dict:
        return {"mode": self.mode, "n_samples": self.n_samples,
                "per_sample": self.summary(),
                "cells": [[p, s, t, k, v] for (p, s, t, k), v in sorted(
                    self.cells.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3]))]}

    @classmethod
    def from_json(cls, data: dict, where: str = "op counts") -> "OpCounts":
        """The counts :meth:`to_json` wrote, each part checked: a ``ValueError`` naming
        ``where`` and what is wrong otherwise (a damaged ``op_counts.json``)."""
        def bad(what, found):
            text = repr(found)
            return ValueError(f"{where}: expected {what}, found {text[:80]}"
                              f"{'...' if len(text) > 80 else ''}")

        def count(v):
            return isinstance(v, int) and not isinstance(v, bool) and v >= 0

        if not isinstance(data, dict):
            raise bad("a record with cells, n_samples and mode", data)
        if not count(data.get("n_samples")):
            raise bad("n_samples, an integer >= 0", data.get("n_samples"))
        mode = data.get("mode", "dense")
        if mode not in ("dense", "event"):
            raise bad("mode 'dense' or 'event'", mode)
        if not isinstance(data.get("cells"), list):
            raise bad("cells, a list of [phase, step, target, kind, count]", data.get("cells"))
        cells = {}
        for cell in data["cells"]:
            if not (isinstance(cell, list) and len(cell) == 5 and count(cell[1])
                    and all(isinstance(v, str) for v in (cell[0], cell[2], cell[3]))
                    and count(cell[4])):
                raise bad("each cell as [phase, step >= 0, target, kind, count >= 0]", cell)
            p, s, t, k, v = cell
            cells[(p, s, t, k)] = cells.get((p, s, t, k), 0) + v
        return cls(cells, data["n_samples"], mode)
