"""Op accounting (SPEC 4) of the torch trainers: what one transmission, one tick of the
neurons, or one learning step reports to the recorder. The kinds are
:class:`pcsim.model.ops.Op`; nothing here runs unless a recorder is attached."""

from __future__ import annotations

import torch

from pcsim.model.ops import Op

__all__ = ["itemsize", "count_dense", "count_one_to_one", "count_events", "count_resync", "count_neurons",
           "count_updates", "count_backward", "count_learning", "count_prec_updates"]

INFERENCE, LEARNING = "inference", "learning"


def itemsize(dtype) -> int:
    """Bytes per value of ``dtype`` (the memory model's unit)."""
    return torch.empty((), dtype=dtype).element_size()


def _add(rec, phase, step, target, op: Op, value) -> None:
    rec.add(phase, step, target, op.value, value)


def count_dense(rec, step, target, rows, macs, n_senders, size, phase=INFERENCE,
                reach=None) -> None:
    """A dense map evaluation: every sender transmits; ``dense_macs`` are the products
    executed, ``syn_ops`` the nonzero weights reached (SPEC 4: ``reach`` per sample, the
    map's summed fan-out; None: every weight is nonzero)."""
    n = rows * macs
    ops = n if reach is None else rows * reach
    _add(rec, phase, step, target, Op.DENSE_MACS, n)
    _add(rec, phase, step, target, Op.SYN_EVENTS, rows * n_senders)
    _add(rec, phase, step, target, Op.SYN_OPS_MAC, ops)
    _add(rec, phase, step, target, Op.MEM_READ_BYTES, ops * size)


def count_one_to_one(rec, step, target, rows, n) -> None:
    """A dense one-to-one link: one value per neuron per tick, no weight."""
    _add(rec, INFERENCE, step, target, Op.SYN_EVENTS, rows * n)
    _add(rec, INFERENCE, step, target, Op.SYN_OPS_MAC, rows * n)


def count_events(rec, step, target, mask, fan_out, integer, size) -> None:
    """Events of one transmission: ``syn_ops`` adds each event's fan-out (nonzero weights
    reached; ``fan_out`` None for a one-to-one link, which reads no weight)."""
    n_events = mask.sum()
    ops = n_events if fan_out is None else (mask.to(fan_out.dtype) @ fan_out).sum()
    _add(rec, INFERENCE, step, target, Op.SYN_EVENTS, n_events)
    _add(rec, INFERENCE, step, target, Op.SYN_OPS_AC if integer else Op.SYN_OPS_MAC, ops)
    if fan_out is not None:
        _add(rec, INFERENCE, step, target, Op.MEM_READ_BYTES, ops * size)


def count_resync(rec, step, target, mask, fan_out, integer, size) -> None:
    """A receiver's accumulated input recomputed after a weight change (event mode with
    plasticity): each nonzero sent value reaches its fan-out once more (learning phase)."""
    ops = (mask.to(fan_out.dtype) @ fan_out).sum()
    _add(rec, LEARNING, step, target, Op.SYN_OPS_AC if integer else Op.SYN_OPS_MAC, ops)
    _add(rec, LEARNING, step, target, Op.MEM_READ_BYTES, ops * size)


def count_neurons(rec, step, network, clamped, rows, active, size, initial=False) -> None:
    """Neuron updates of one tick: every free value neuron and every error neuron (at the
    feedforward start: every value and error neuron of layers >= 1). ``active`` maps
    population names to (batch, n) masks of this tick in event mode (None: dense)."""
    for l, layer in enumerate(network.layers):
        n = layer.size * rows
        moved = (l >= 1) if initial else not clamped[l]
        for name, updated in ((f"value_l{l}", moved), (f"error_l{l}", l >= 1)):
            if not updated:
                continue
            _add(rec, INFERENCE, step, name, Op.NEURON_UPDATES, n)
            _add(rec, INFERENCE, step, name, Op.NEURON_UPDATES_ACTIVE,
                 n if active is None else (active[name].sum() if name in active else 0))
            _add(rec, INFERENCE, step, name, Op.MEM_WRITE_BYTES, n * size)
    if active is not None:
        active.clear()


def count_updates(rec, step, population, n) -> None:
    """``n`` neuron updates of a population, all active (a dense forward pass)."""
    _add(rec, INFERENCE, step, population, Op.NEURON_UPDATES, n)
    _add(rec, INFERENCE, step, population, Op.NEURON_UPDATES_ACTIVE, n)


def count_backward(rec, target, n, ops=None) -> None:
    """Backprop's adjoint product through ``target`` (``n`` MACs executed, ``ops`` of
    them through nonzero weights; learning phase)."""
    _add(rec, LEARNING, 0, target, Op.DENSE_MACS, n)
    _add(rec, LEARNING, 0, target, Op.SYN_OPS_MAC, n if ops is None else ops)


def count_learning(rec, target, grad_ops, n_params, size, dense_macs=None) -> None:
    """One learning step of a projection (SPEC 4): ``grad_ops`` MACs accumulating the
    local gradient over the batch's samples (``weight_grad_ops``), then one write of each
    of its ``n_params`` plastic parameters (``weight_writes``: per step, not per sample),
    each read and written once. ``dense_macs``: the products a dense weight-gradient
    map executes, when it is dense."""
    if dense_macs is not None:
        _add(rec, LEARNING, 0, target, Op.DENSE_MACS, dense_macs)
    _add(rec, LEARNING, 0, target, Op.WEIGHT_GRAD_OPS, grad_ops)
    _add(rec, LEARNING, 0, target, Op.WEIGHT_WRITES, n_params)
    _add(rec, LEARNING, 0, target, Op.MEM_READ_BYTES, n_params * size)
    _add(rec, LEARNING, 0, target, Op.MEM_WRITE_BYTES, n_params * size)


def count_prec_updates(rec, target, step, n_values, size) -> None:
    """One update of a learned precision's ``n_values`` numbers (SPEC 4: ``prec_updates``
    per variance per learning step, not per sample; a continuously learned one at every
    Euler ``step``), each read and written once."""
    _add(rec, LEARNING, step, target, Op.PREC_UPDATES, n_values)
    _add(rec, LEARNING, step, target, Op.MEM_READ_BYTES, n_values * size)
    _add(rec, LEARNING, step, target, Op.MEM_WRITE_BYTES, n_values * size)
