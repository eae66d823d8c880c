"""Links: one object per transmitted signal of SPEC 3, dense or sigma-delta.

A PC network transmits three signals: value neurons ``x_{l-1}`` into projection ``W_l``
(its receivers hold ``a_l``), gated errors ``g_{l+1}`` back through ``W_{l+1}^T`` (value
neurons ``l`` hold the feedback), and errors ``eps_l`` one-to-one to ``x_l``. A
:class:`Link` sends one of them, accumulates what its receivers hold, hands events to
the event sink and reports its ops -- the one place where a new way of transmitting
signals is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from pcsim.engines.torch import accounting as acc
from pcsim.engines.torch.events import Events, SigmaDelta

__all__ = ["Wire", "Link", "Links", "build_links"]

FORWARD, ADJOINT, ONE_TO_ONE = "forward", "adjoint", "one_to_one"


@dataclass
class Wire:
    """What every link of a batch shares: where counts and events go, and the events'
    record of which populations were active this tick."""

    recorder: object = None
    sink: object = None
    size: int = 4  # bytes per value
    integer: bool = False  # integer payloads (AC ops)
    active: Optional[dict] = None  # population -> (batch, n) bool, event mode only
    static_weights: bool = True  # weights fixed for the batch (tau_w = inf): reach is cached
    execution: str = "auto"  # events applied "sparse", "dense", or by density ("auto")
    crossover: float = 0.0  # "auto": sparse when at most this share of senders sent
    min_macs: int = 0  # "auto": evaluations of fewer dense MACs always run dense
    applied: Optional[dict] = None  # "sparse"/"dense" -> evaluations so executed (event mode)


class Link:
    """One transmitted signal.

    Parameters
    ----------
    direction : {"forward", "adjoint", "one_to_one"}
    map : projection map or None
        ``forward``: ``a = W x + b``; ``adjoint``: ``W^T g``; ``one_to_one``: None.
    target, sender, receiver : str
        The link's name in counts and traces (``W_l``, ``W_l^T``, ``eps_l->x_l``) and the
        populations at its two ends.
    macs, n_senders : int
        Dense multiply-accumulates of one evaluation per sample, and senders per sample.
    coder : SigmaDelta or None
        None transmits densely; a sigma-delta unit sends events.
    """

    def __init__(self, wire: Wire, direction, map, target, sender, receiver, macs, n_senders,
                 coder: Optional[SigmaDelta] = None, held=None):
        self.wire, self.direction, self.map = wire, direction, map
        self.target, self.sender, self.receiver = target, sender, receiver
        self.macs, self.n_senders, self.coder = macs, n_senders, coder
        self.held = held  # what the receivers hold (event mode), without a bias
        self._reach = None  # nonzero weights one sample's dense evaluation reaches
        # the dense evaluation, chosen once (transmit runs at every step)
        self._dense = (map.forward if direction == FORWARD else
                       map.adjoint if direction == ADJOINT else None)

    @property
    def sent(self):
        """The signal as the receivers know it (event mode)."""
        return self.coder.sent

    def transmit(self, signal, step: int):
        """Send ``signal`` at ``step``; return what the receivers now hold."""
        if self.coder is None:
            if self.wire.recorder is not None:
                self._count_dense(signal.shape[0], step)
            return signal if self._dense is None else self._dense(signal)
        events = self.coder.send(signal)
        payload, mask = events.payload, events.mask
        delta = payload if self.direction == ONE_TO_ONE else self._apply(events)
        if delta is not None:
            self.held = self.held + delta
        if self.wire.sink is not None:
            self.wire.sink(self.sender, self.target, step, mask, payload)
        if self.wire.recorder is not None:
            self._count_events(mask, step)
        return self.map.with_bias(self.held) if self.direction == FORWARD else self.held

    def resync(self, step: int) -> None:
        """After a weight change (finite ``tau_w``): the receivers' accumulated input
        ``u = W s_sent`` is recomputed from what they were sent, so that the change
        reaches them (SPEC 3), and that work is counted (learning phase: ``syn_ops`` of
        every nonzero sent value's fan-out; no event is sent)."""
        if self.coder is None or self.direction == ONE_TO_ONE:
            return
        sent = self.coder.sent
        mask = sent != 0
        u = self._apply(Events(sent, mask))
        self.held = torch.zeros_like(self.held) if u is None else u
        if self.wire.recorder is not None:
            fan = self.map.fan_in() if self.direction == ADJOINT else self.map.fan_out()
            acc.count_resync(self.wire.recorder, step, self.target, mask.flatten(1), fan,
                             self.wire.integer, self.wire.size)

    def _apply(self, events):
        """What one tick's events add to the receivers' input (SPEC 3): the senders'
        columns of ``W`` alone (sparse), or the dense product of the mostly-zero payload,
        chosen per evaluation by the share of senders that sent (``auto``) against the
        wire's crossover (None: nothing was sent). Either gives the same numbers; the
        counts are the events'."""
        adjoint, wire = self.direction == ADJOINT, self.wire
        # (a product too small to be worth the look for its events: the look costs more)
        payload = events.payload
        small = wire.execution == "auto" and payload.shape[0] * self.macs < wire.min_macs
        if wire.execution != "dense" and not small:
            found = self.map.sparse_index(events, adjoint, wire.crossover)
            if found is not None:
                index, count, n = found
                if count == 0:  # no events: the receivers hold what they held
                    wire.applied["sparse"] += 1
                    return None
                if wire.execution == "sparse" or count <= wire.crossover * n:
                    wire.applied["sparse"] += 1
                    return self._sparse().apply_sparse(payload, index, adjoint)
        wire.applied["dense"] += 1
        return self.map.adjoint(payload) if adjoint else self.map.linear(payload)

    def _sparse(self):
        """The map whose rows the sparse path gathers: while the weights stand still, the
        map's kept frozen copy (``W^T`` row-major, so a sender's column is contiguous),
        else the live map."""
        return self.map.kept_frozen() if self.wire.static_weights else self.map

    def _count_dense(self, rows, step):
        """Every sender transmits; ``syn_ops`` counts the nonzero weights reached (SPEC 4),
        ``dense_macs`` every product executed."""
        rec = self.wire.recorder
        if self.direction == ONE_TO_ONE:
            acc.count_one_to_one(rec, step, self.target, rows, self.n_senders)
            return
        if self._reach is None or not self.wire.static_weights:
            fan = self.map.fan_out() if self.direction == FORWARD else self.map.fan_in()
            self._reach = fan.sum()
        acc.count_dense(rec, step, self.target, rows, self.macs, self.n_senders,
                        self.wire.size, reach=self._reach)

    def _count_events(self, mask, step):
        """``syn_ops`` adds each event's fan-out; sender and reached receivers are marked
        active this tick (as flat masks over their populations: an error population's
        gated errors live before its pooling, its neurons after)."""
        if self.direction == ONE_TO_ONE:
            fan, sent, reached = None, mask, mask
        elif self.direction == ADJOINT:
            fan, sent = self.map.fan_in(), self.map.post_mask(mask)
            reached = self.map.reached(mask, adjoint=True)
        else:
            fan, sent = self.map.fan_out(), mask
            reached = self.map.post_mask(self.map.reached(mask))
        active = self.wire.active
        for name, m in ((self.sender, sent), (self.receiver, reached)):
            m = m.flatten(1)
            active[name] = m | active[name] if name in active else m
        acc.count_events(self.wire.recorder, step, self.target, mask.flatten(1), fan,
                         self.wire.integer, self.wire.size)


@dataclass
class Links:
    """The links of one batch, indexed by layer: ``forward[l]`` carries ``x_{l-1}`` into
    ``W_l`` (l >= 1), ``feedback[l]`` carries ``g_{l+1}`` through ``W_{l+1}^T`` to ``x_l``
    (l < L), ``error[l]`` carries ``eps_l`` to ``x_l`` (l >= 1)."""

    wire: Wire
    forward: list
    feedback: list
    error: list
    event: bool = False
    weights_version: int = 0  # the learning steps its receivers' inputs are synced with

    def resync(self, step: int) -> None:
        """Recompute every matrix link's accumulated input after a weight change."""
        for link in self.forward[1:] + self.feedback[:-1]:
            link.resync(step)

    def fits(self, x0) -> bool:
        """True when these links can carry on with a batch like ``x0`` (same rows, dtype
        and device as the batch they last transmitted)."""
        held = self.forward[1].held
        return (held is not None and held.shape[0] == x0.shape[0] and held.dtype == x0.dtype
                and held.device == x0.device)

    # the sigma-delta units by the population that sends (SPEC 3 names)
    @property
    def value(self) -> list:
        """``value[l]`` sends ``x_l`` into ``W_{l+1}``."""
        return [link.coder for link in self.forward[1:]] + [None]

    @property
    def gate(self) -> list:
        """``gate[l]`` sends ``g_l`` into ``W_l^T``."""
        return [None] + [link.coder for link in self.feedback[:-1]]

    @property
    def active(self) -> dict:
        return self.wire.active


def build_links(network, maps, wire: Wire, batch: int, events=None, device=None,
                dtype=None) -> Links:
    """The links of one batch: dense, or sigma-delta when ``events`` (an
    :class:`~pcsim.config.schema.EventsConfig`) is given, each unit starting at zero."""
    L, sizes, shapes = network.n_layers, network.sizes, network.shapes

    def zeros(shape):
        return None if events is None else torch.zeros(batch, *shape, device=device,
                                                       dtype=dtype)

    def coder(population, shape):
        if events is None:
            return None
        sd = SigmaDelta(population, events.theta_for(population), events.payload == "integer")
        sd.reset(zeros(shape))
        return sd

    forward, feedback, error = [None] * (L + 1), [None] * (L + 1), [None] * (L + 1)
    for p in network.projections:
        l = p.index
        forward[l] = Link(wire, FORWARD, maps[l], f"W_{l}", f"value_l{l - 1}", f"error_l{l}",
                          p.macs, p.n_pre, coder(f"value_l{l - 1}", shapes[l - 1]),
                          zeros(p.out_shape))
        feedback[l - 1] = Link(wire, ADJOINT, maps[l], f"W_{l}^T", f"error_l{l}",
                               f"value_l{l - 1}", p.macs, math.prod(p.out_shape),
                               coder(f"error_l{l}", p.out_shape),
                               zeros(shapes[l - 1]))
        error[l] = Link(wire, ONE_TO_ONE, None, f"eps_{l}->x_{l}", f"error_l{l}", f"value_l{l}",
                        0, sizes[l], coder(f"error_l{l}", shapes[l]), zeros(shapes[l]))
    if events is not None:
        wire.integer = events.payload == "integer"
        wire.active = {}
        wire.execution, wire.crossover = events.execution, events.crossover
        wire.min_macs = events.sparse_min_macs
        wire.applied = {"sparse": 0, "dense": 0}
    return Links(wire, forward, feedback, error, event=events is not None)
