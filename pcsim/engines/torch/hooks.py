"""Step hooks of the torch engine's own read-outs: trace frames and diagnosis."""

from __future__ import annotations

import torch

__all__ = ["Frames", "FirstNonFinite"]


class Frames:
    """A hook handing every ``every``-th state to ``on_frame`` (trace recording)."""

    def __init__(self, dynamics, every, on_frame):
        self.dynamics, self.every, self.on_frame = dynamics, every, on_frame

    def on_step(self, engine, s, k):
        if (k + 1) % self.every == 0:
            self.on_frame((k + 1) // self.every, s.x, s.eps, self.dynamics.layer_energies(s))


class FirstNonFinite:
    """A hook noting the first population that stops being finite (diagnosis)."""

    def __init__(self):
        self.found = None

    def on_step(self, engine, s, k):
        self.check(s, k + 1)

    def check(self, s, step):
        for l in range(len(s.x)):
            for name, value in ((f"value_l{l}", s.x[l]), (f"error_l{l}", s.eps[l])):
                if self.found is None and value is not None and not bool(
                        torch.isfinite(value).all()):
                    self.found = f"non-finite {name} (layer {l}) at inference step {step}"
