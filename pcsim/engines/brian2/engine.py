"""brian2 engine: the PC equations of :mod:`pcsim.model.equations`, integrated by brian2.

Layer ``l`` is one ``NeuronGroup`` of ``batch * n_l`` neurons: neuron ``i`` of sample ``k``
holds the value neuron ``x`` and the error neuron ``eps`` of that unit (the two
populations of SPEC 1 as two variables of one group, so that brian2's Euler step
updates both from the same old state; with two groups, one would read the other's
new state). Projection ``l`` is one ``Synapses`` object from layer ``l-1`` to layer ``l``
carrying both couplings as summed variables, ``u_post = w * x_pre`` (prediction) and
``I_fb_pre = w * g_post`` (feedback), so ``W`` and ``W^T`` are the same weights, and, for
a finite ``tau_w``, the plasticity ``WEIGHT_EQS`` as a clock-driven synaptic equation.
Samples of a batch are disjoint copies of the network (synapses connect equal
``sample``), so one ``run()`` integrates a whole batch.

Execution order within a time step, set explicitly (brian2 otherwise runs all summed
updaters in one slot in name order, so the feedback could use the previous step's
prediction): (1) ``u = W x`` for every projection, (2) ``I_fb = W^T g``, (3) recording,
(4) plasticity, (5) the neuron state updaters, all from the state at the step's start.
That is the torch engine's synchronous Euler step.

A layer with a learned precision (SPEC 2.4) holds ``prec`` as a per-neuron variable
instead of a shared constant, in the same equation strings (``ERROR_EQS``,
``ERROR_FIXED_EQS``); :attr:`Brian2Engine.prec` sets it before each run (the trainer's
learning step learns it, as it learns the weights).
"""

from __future__ import annotations

import math

import numpy as np

from pcsim.model import equations as eq

__all__ = ["Brian2Engine", "Brian2Trajectory"]

#: slots (``when="groups"``) of the objects of one time step, in execution order
ORDER = {"prediction": -50, "feedback": -40, "monitor": -30, "plasticity": -20, "neurons": 0}


class Brian2Trajectory:
    """States recorded at steps ``0..T``: ``x[l]``, ``eps[l]``, ``g[l]`` of shape
    ``(T + 1, batch, n_l)`` (float64), and the weights after the run."""

    def __init__(self, x, eps, g, weights, biases):
        self.x, self.eps, self.g, self.weights, self.biases = x, eps, g, weights, biases


class Brian2Engine:
    """Integrate a :class:`~pcsim.model.Network` with brian2.

    Parameters
    ----------
    network : pcsim.model.Network
    dynamics : pcsim.config.schema.DynamicsConfig
    params : list of (W, b) numpy arrays
        ``W_l`` of shape ``(n_l, n_{l-1})``.
    weight_decay : float
        ``lambda`` of SPEC 2.2 (finite ``tau_w``).
    target : {"numpy", "cython"}
        brian2 code generation target.

    Attributes
    ----------
    prec : list
        Per layer ``l >= 1`` with a learned precision, its current precision (a numpy
        array broadcasting over the layer's ``n_l`` neurons), set before a run; else None
        (the layer's fixed ``prec``).
    """

    name = "brian2"

    def __init__(self, network, dynamics, params, *, weight_decay=0.0, target="numpy"):
        self.network = network
        self.dynamics = dynamics
        self.params = [(np.array(w, dtype=float), np.array(b, dtype=float)) for w, b in params]
        self.weight_decay = float(weight_decay)
        self.target = target
        self.L = network.n_layers
        self.plastic = math.isfinite(dynamics.tau_w)
        self.prec = [None] * (self.L + 1)
        self._cache = {}

    def _learned(self, l: int) -> bool:
        return l >= 1 and self.network.layers[l].precision is not None

    def _prec(self, l: int):
        """Layer ``l``'s precision per neuron (learned), or its fixed number."""
        layer = self.network.layers[l]
        if not self._learned(l):
            return layer.prec
        if self.prec[l] is None:
            raise ValueError(f"brian2 engine: layer {l} learns its precision; set prec[{l}]")
        return np.broadcast_to(np.asarray(self.prec[l], float), (layer.size,))

    # ------------------------------------------------------------------ equations
    def _layer_eqs(self, l: int, free: bool) -> str:
        layer = self.network.layers[l]
        # a learned precision is a state of each error neuron, a fixed one shared
        prec = "prec : 1 (constant)" if self._learned(l) else "prec : 1 (shared, constant)"
        lines = ["sample : integer (constant)", "I_fb : 1", prec,
                 "tau_x : second (shared, constant)"]
        lines.append(eq.VALUE_EQS if free else "x : 1")
        if l == 0:
            if free:  # the Gaussian prior on a free x_0 acts as its error
                lines.append("eps = prec * x : 1")
            return "\n".join(lines)
        act = layer.activation
        if self.plastic:  # the bias learns with the synapses' timescale (SPEC 2.2)
            lines += [eq.BIAS_EQS, "tau_w : second (shared, constant)"]
        else:
            lines.append("b : 1")
        lines += ["u : 1", "a = u + b : 1",
                  f"mu = {act.brian2} : 1", f"g = ({act.brian2_prime}) * eps : 1"]
        if self.dynamics.tau_eps > 0:
            lines += [eq.ERROR_EQS, "tau_eps : second (shared, constant)"]
        else:
            lines.append(eq.ERROR_FIXED_EQS)
        return "\n".join(lines)

    def _synapse_eqs(self, pre_free: bool) -> str:
        lines = [(eq.WEIGHT_EQS + " (clock-driven)") if self.plastic else "w : 1",
                 "u_post = w * x_pre : 1 (summed)"]
        if self.plastic:  # tau_w is read from the post-synaptic group (it holds db/dt too)
            lines.append("lambda_w : 1 (shared, constant)")
        if pre_free:
            lines.append("I_fb_pre = w * g_post : 1 (summed)")
        return "\n".join(lines)

    # ------------------------------------------------------------------ running
    def _feedforward(self, x0, target, clamped):
        """The feedforward start in numpy (x_l = mu_l), with the clamped top layer."""
        xs = [np.asarray(x0, float)]
        for l in range(1, self.L + 1):
            w, b = self.params[l - 1]
            a = xs[-1] @ w.T + b
            xs.append(self.network.layers[l].activation.f(a, np))
        if clamped[self.L]:
            xs[self.L] = np.asarray(target, float)
        return xs

    def run(self, x0, target=None, n_steps=None, phase="train",
            record=True) -> Brian2Trajectory:
        """Clamp, start from the feedforward pass and integrate ``n_steps`` Euler steps;
        return the states at steps ``0..T`` (with ``record``; else only step ``T``) and
        the weights after the run.

        With a finite ``tau_w`` the weights move during the run (one sample: brian2's
        synapses of the batch copies would otherwise learn apart)."""
        import brian2 as b2

        clamped = self.network.clamped(phase)
        T = self.dynamics.steps if n_steps is None else n_steps
        x0 = np.asarray(x0, float)
        batch = x0.shape[0]
        if self.plastic and batch != 1:
            raise ValueError("brian2 engine: a finite tau_w needs one sample per run (the "
                             "batch copies of the synapses would learn apart)")
        xs = self._feedforward(x0, target, clamped)
        key = (batch, tuple(clamped))
        if record or key not in self._cache:
            built = self._build(batch, clamped, record)
            if not record:
                self._cache = {key: built}  # one network per batch size and clamping
        else:
            built = self._cache[key]
        net, groups, synapses, monitors, index = built
        self._load(groups, synapses, index, xs, batch)
        dt = self.dynamics.dt * b2.second
        updaters = [obj.state_updater for obj in groups + (synapses if self.plastic else [])]
        for u in updaters:
            u.active = True
        net.run(T * dt, namespace={})  # records steps 0..T-1
        for u in updaters:
            u.active = False  # one more step that only sums and records
        net.run(dt, namespace={})

        def traj(l, name):
            n = self.network.layers[l].size
            if record:  # (neurons, T + 1) -> (T + 1, batch, n)
                return np.asarray(getattr(monitors[l], name)).T.reshape(T + 1, batch, n)
            return np.asarray(getattr(groups[l], name)[:]).reshape(1, batch, n)

        x = [traj(l, "x") for l in range(self.L + 1)]
        eps = [None] + [traj(l, "eps") for l in range(1, self.L + 1)]
        g = [None] + [traj(l, "g") for l in range(1, self.L + 1)]
        weights, biases = [], []
        for l, (S, qp) in enumerate(zip(synapses, index), start=1):
            w = np.zeros_like(self.params[l - 1][0])
            w[qp] = np.asarray(S.w[:])
            weights.append(w)
            biases.append(np.asarray(groups[l].b[:]).reshape(batch, -1)[0].copy())
        return Brian2Trajectory(x, eps, g, weights, biases)

    def _build(self, batch, clamped, record):
        """Create the groups, synapses and monitors of ``batch`` disjoint copies."""
        import brian2 as b2

        b2.prefs.codegen.target = self.target
        dt = self.dynamics.dt * b2.second
        clock = b2.Clock(dt=dt)
        groups, synapses, monitors, index = [], [], [], []
        for l, layer in enumerate(self.network.layers):
            n = layer.size
            G = b2.NeuronGroup(batch * n, self._layer_eqs(l, not clamped[l]), method="euler",
                               clock=clock, name=f"layer_l{l}", order=ORDER["neurons"])
            G.sample = np.repeat(np.arange(batch), n)
            if not self._learned(l):  # (a learned one is set per run, in _load)
                G.prec = self.network.prec_0 if l == 0 else layer.prec
            G.tau_x = self.dynamics.tau_x * b2.second
            if l >= 1:
                if self.plastic:
                    G.tau_w = self.dynamics.tau_w * b2.second
                if self.dynamics.tau_eps > 0:
                    G.tau_eps = self.dynamics.tau_eps * b2.second
            groups.append(G)
        for l in range(1, self.L + 1):
            w, _ = self.params[l - 1]
            pre_free = not clamped[l - 1]
            S = b2.Synapses(groups[l - 1], groups[l], self._synapse_eqs(pre_free), clock=clock,
                            method="euler", name=f"W_{l}")
            # the batch copies are disjoint: connect each sample's block all-to-all
            n_pre, n_post = w.shape[1], w.shape[0]
            k, q, p = np.meshgrid(np.arange(batch), np.arange(n_post), np.arange(n_pre),
                                  indexing="ij")
            S.connect(i=(k * n_pre + p).ravel(), j=(k * n_post + q).ravel())
            # synapse (i, j) joins pre neuron i = k n_pre + p to post j = k n_post + q: weight w[q, p]
            index.append((np.asarray(S.j[:]) % n_post, np.asarray(S.i[:]) % n_pre))  # (q, p)
            if self.plastic:
                S.lambda_w = self.weight_decay
                S.state_updater.order = ORDER["plasticity"]
            S.summed_updaters["u_post"].order = ORDER["prediction"]
            if pre_free:
                S.summed_updaters["I_fb_pre"].order = ORDER["feedback"]
            synapses.append(S)
        for l, G in enumerate(groups if record else []):
            names = ["x"] + (["eps", "g"] if l >= 1 else [])
            monitors.append(b2.StateMonitor(G, names, record=True, when="groups",
                                            order=ORDER["monitor"], clock=clock))
        return b2.Network(*groups, *synapses, *monitors), groups, synapses, monitors, index

    def _load(self, groups, synapses, index, xs, batch):
        """Set a batch's start: values, biases, weights, and leaky errors at their fixed point."""
        for l, G in enumerate(groups):
            G.x = xs[l].ravel()
            if l >= 1:
                w, b = self.params[l - 1]
                G.b = np.tile(b, batch)
                prec = self._prec(l)
                if self._learned(l):
                    G.prec = np.tile(prec, batch)
                if self.dynamics.tau_eps > 0:
                    a = xs[l - 1] @ w.T + b
                    mu = self.network.layers[l].activation.f(a, np)
                    G.eps = eq.error_fixed_point(xs[l], mu, prec).ravel()
        for l, (S, qp) in enumerate(zip(synapses, index), start=1):
            S.w = self.params[l - 1][0][qp]
