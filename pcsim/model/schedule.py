"""Which populations an Euler step updates: the schedule shared by the engines' one step
function and the analytic costs (:mod:`pcsim.model.costs`).

A schedule is a list of :class:`Row`, one per step ``k = 1..T``. The *dense* schedule
(:func:`dense_schedule`) updates everything the equations touch; the *wavefront*
schedule (:func:`inference_wavefront`) skips what is exactly zero after the feedforward
start. Both give the same states, so an engine runs the wavefront unless something
observes its steps (hooks, op counters, event transmission, leaky errors, plasticity).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Row", "errors_after_feedforward", "inference_wavefront", "dense_schedule"]


@dataclass(frozen=True)
class Row:
    """One step of a schedule, per layer ``l = 0..L``.

    ``in_error[l]``: ``eps_l`` may be nonzero at the start of the step (False: it is
    exactly zero, its products are skipped). ``moved[l]``: ``x_l`` changes in the step.
    ``predicted[l]``: ``mu_l`` is recomputed after the step (``l >= 1``: its pre layer
    moved, or the weights did).
    """

    in_error: list
    moved: list
    predicted: list

    def __iter__(self):  # ``for in_error, moved in schedule`` reads the first two
        return iter((self.in_error, self.moved))


def errors_after_feedforward(clamped) -> list[bool]:
    """Which errors can be nonzero right after the feedforward start ``x_l = mu_l``: a
    clamped top layer's, and a free ``x_0``'s prior error. Every other is exactly 0."""
    L = len(clamped) - 1
    return [l == 0 and not clamped[0] or l == L and bool(clamped[L]) for l in range(L + 1)]


def inference_wavefront(clamped, n_steps: int) -> list[Row]:
    """Which errors can be nonzero, and which value layers move, at each Euler step.

    After the feedforward start every hidden error is exactly zero (``x_l`` *is*
    ``mu_l``); only a clamped top layer, and a free ``x_0`` (its prior error, unless it
    starts at 0), can be in error. A value neuron moves only when its own error or the
    gated error above it is nonzero; a prediction, and so an error, changes only where a
    value moved. The nonzero errors therefore spread one layer per step from where they
    start -- a wavefront that depends only on the clamping pattern and the step index.

    Returns one :class:`Row` per step ``k = 1..n_steps`` (unpacks as ``(in_error,
    moved)``). The engines skip the products of exactly-zero errors and the predictions
    of unmoved values by this schedule.
    """
    L = len(clamped) - 1
    in_error = errors_after_feedforward(clamped)
    schedule = []
    for _ in range(n_steps):
        moved = [not clamped[l] and (in_error[l] or (l < L and in_error[l + 1]))
                 for l in range(L + 1)]
        predicted = [False] + [moved[l - 1] for l in range(1, L + 1)]
        schedule.append(Row(in_error, moved, predicted))
        in_error = [in_error[l] or moved[l] or (l > 0 and moved[l - 1]) for l in range(L + 1)]
    return schedule


def dense_schedule(clamped, n_steps: int, plastic: bool = False) -> list[Row]:
    """Every step updates every free value layer from every error, and recomputes every
    prediction whose input moved (all of them when the weights are plastic)."""
    L = len(clamped) - 1
    moved = [not c for c in clamped]
    predicted = [False] + [plastic or moved[l - 1] for l in range(1, L + 1)]
    return [Row([True] * (L + 1), moved, predicted)] * n_steps
