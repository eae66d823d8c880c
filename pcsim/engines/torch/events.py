"""Sigma-delta units: how a signal is transmitted in event mode (SPEC section 3).

A sender keeps ``sent``, the value its receivers hold. Each tick it compares its signal
with it; a change of at least ``theta`` is sent as an event (graded: the change itself;
integer: ``n = trunc(delta / theta)`` quanta of ``theta``) and ``sent`` moves by the
payload, so the unsent residue stays for later ticks and receivers never drift more
than ``theta`` from the sender (Lava's sigma-delta neuron with residue). A zero change
is never an event, so ``theta = 0`` sends every change and reproduces dense execution
to round-off.
"""

from __future__ import annotations

import torch

__all__ = ["SigmaDelta"]


class SigmaDelta:
    """The sigma-delta unit of one population's transmitted signal, batched.

    Parameters
    ----------
    population : str
        Population name (``value_l<l>`` or ``error_l<l>``), for counts and traces.
    theta : float
        Threshold, in the signal's units; 0 sends every nonzero change.
    integer : bool
        Send integer counts of ``theta`` (AC ops) instead of graded changes (MAC ops).
    """

    def __init__(self, population: str, theta: float, integer: bool = False):
        if integer and theta <= 0:
            raise ValueError(f"{population}: integer payloads need theta > 0")
        self.population = population
        self.theta = float(theta)
        self.integer = integer
        self.sent = None

    def reset(self, like: torch.Tensor) -> None:
        """Start a batch: receivers hold zero."""
        self.sent = torch.zeros_like(like)

    def send(self, signal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(payload, mask)`` for this tick and update ``sent``.

        ``payload`` is zero where no event is sent; ``mask`` marks the events.
        """
        delta = signal - self.sent
        if self.integer:
            count = torch.trunc(delta / self.theta)
            mask = count != 0
            payload = count * self.theta
        else:  # (|delta| >= theta > 0 excludes a zero change by itself)
            mask = delta.abs() >= self.theta if self.theta > 0 else delta != 0
            payload = torch.where(mask, delta, 0.0)
        self.sent = self.sent + payload
        return payload, mask
