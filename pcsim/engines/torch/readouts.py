"""What a torch PC engine reads out besides training: traces of a cycle's inference, the
diagnosis of a non-finite one, and the feedforward and generative read-outs. A mixin of
:class:`~pcsim.engines.torch.engine.TorchEngine`, written on its public state and its
one step function (:class:`~pcsim.engines.torch.dynamics.Dynamics`)."""

from __future__ import annotations

import torch

from pcsim.engines.torch.hooks import FirstNonFinite, Frames
from pcsim.model import equations as eq

__all__ = ["ReadOuts"]


class ReadOuts:
    """Trace, diagnose, encode, reconstruct, predict (see :class:`TorchEngine`)."""

    @torch.no_grad()
    def trace(self, x0, target, every: int, on_frame, event_sink=None) -> None:
        """Run a training cycle's inference (no learning) and hand ``on_frame(frame, x,
        eps, layer_energies)`` the start and every ``every``-th step; events go to
        ``event_sink``. What moves during inference (weights at a finite ``tau_w``,
        variances at a ``tau_prec``) is put back afterwards: recording leaves the
        trained network as it was."""
        self.event_sink = event_sink
        kept = ({name: t.clone() for name, t in self.params.items()}
                if self.plastic or self._continuous_names else {})
        try:
            x0, target = self._inputs(x0, target)
            dyn = self._dynamics()
            clamped = self.network.clamped("train")
            s = dyn.init_state(x0, target, clamped)
            on_frame(0, s.x, s.eps, dyn.layer_energies(s))
            dyn.run(s, self._dense_schedule(clamped, self.n_steps),
                    [Frames(dyn, every, on_frame)], engine=self)
        finally:
            self.event_sink = None
            for name, t in kept.items():
                self.params[name].copy_(t)

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
        watch = FirstNonFinite()
        x0, target = self._inputs(x0, target)
        dyn = self._dynamics(observed=False)
        clamped = self.network.clamped("train")
        s = dyn.init_state(x0, target, clamped)
        watch.check(s, 0)
        dyn.run(s, self._dense_schedule(clamped, self.n_steps), [watch], engine=self)
        if watch.found:
            return f"{watch.found}: {cause}"
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
        x = self._as_tensor(x0, 0)
        for l in range(1, self.L + 1):
            x, _ = eq.prediction(self.activations[l].f(self.maps[l].forward(x), torch),
                                 self.maps[l].pool)
        return x
