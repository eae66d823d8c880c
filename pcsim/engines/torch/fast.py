"""The torch engine's fast path as a function of tensors: one discrete PC training cycle.

It is :class:`~pcsim.engines.torch.dynamics.Dynamics` -- the one step function -- run by
the inference wavefront (:func:`pcsim.model.schedule.inference_wavefront`) with dense
links, nothing counting and nothing watching: the products of exactly-zero errors and
the predictions of unmoved values are skipped, and every tensor it returns is what the
dense schedule computes. :meth:`~pcsim.engines.torch.compiled.FastPath.descent` is the
same run on an engine's own maps, and what ``torch.compile`` fuses into one graph.
"""

from __future__ import annotations

from pcsim.engines.torch.dynamics import Dynamics, free_energy
from pcsim.engines.torch.maps import frozen_maps
from pcsim.model.network import Layer, Network
from pcsim.model.schedule import inference_wavefront

__all__ = ["free_energy", "pc_cycle"]


def pc_cycle(maps, activations, prec, clamped, prec_0, dt, tau_x, n_steps, x0, target):
    """Run one PC cycle on a batch and return the local gradients and the energies.

    Parameters
    ----------
    maps : list
        ``maps[l]`` is projection ``l`` (``maps[0]`` unused).
    activations, prec : list
        Per layer ``l = 0..L``.
    clamped : tuple of bool
        Clamping pattern, per layer.
    prec_0 : float
        Prior precision of a free ``x_0``.
    dt, tau_x : float
        Euler step and value-neuron time constant (``eta_x = dt / tau_x``).
    n_steps : int
        Inference steps ``T``.
    x0, target : tensor
        Bottom layer (input, or initial latent) and clamped top layer (or None).

    Returns
    -------
    grads : dict
        ``-dE/dtheta`` batch means by store name (``W_l``, ``b_l``).
    energy_initial, energy_final : tensor
        Batch-mean free energy after the feedforward start and after inference.
    """
    projections = tuple(m.projection for m in maps[1:])
    shapes = [projections[0].pre_shape] + [p.post_shape for p in projections]
    layers = tuple(Layer(l, shape, activations[l], prec[l]) for l, shape in enumerate(shapes))
    network = Network(layers, projections, prec_0=prec_0)
    dyn = Dynamics(network, frozen_maps(maps, clamped), dt, tau_x)
    s = dyn.init_state(x0, target, tuple(clamped), zeros=False)
    e0 = dyn.energy(s).mean()
    dyn.run(s, inference_wavefront(clamped, n_steps))
    return dyn.local_gradients(s), e0, dyn.energy(s).mean()
