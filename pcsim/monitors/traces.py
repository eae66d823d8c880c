"""Trace recording: run chosen samples through a trainer's ``trace`` and stream values,
errors, per-layer energies and events into an HDF5 trace file (:mod:`.hdf5`).

The trainer contract (:class:`pcsim.engines.base.Trainer`-side)::

    trainer.trace(x0, target, every, on_frame, event_sink=None) -> None

runs the inference of a training cycle (input and target clamped, feedforward start,
``T`` steps, no learning) and calls ``on_frame(frame, xs, eps, energies)`` at step 0 and
after every ``every``-th step; ``event_sink(population, target, step, mask, payload)``
receives the events sent in event mode. Populations, ``dt``, ``T`` and the execution
mode come from the config, never from trainer attributes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from pcsim import __version__
from pcsim.data import batch_pair
from pcsim.monitors.counters import KINDS, OpCounter
from pcsim.monitors.hdf5 import TraceWriter

__all__ = ["traced_populations", "spike_populations", "TraceRecorder", "record_traces",
           "traces_hold_epoch"]


def traced_populations(config, sizes, variances=None) -> dict:
    """Population name -> size for the populations ``config.traces`` selects, for a
    network of layer ``sizes`` (``n_0..n_L``). ``variances`` (layer -> how many learned
    variances it holds, SPEC 2.4) adds a ``variance_l<l>`` report for each learned layer
    the selection's ``layers`` include (its error neurons' variances over time)."""
    chosen = config.traces.populations
    layers = config.traces.layers
    out = {}
    for kind in ("value", "error"):
        for l, size in enumerate(sizes):
            name = f"{kind}_l{l}"
            if kind == "error" and l == 0:
                continue
            if (kind in chosen or name in chosen) and (layers is None or l in layers):
                out[name] = size
    if not out:
        raise ValueError(f"traces: populations {chosen} and layers {layers} select nothing")
    for l, n in (variances or {}).items():
        if layers is None or l in layers:
            out[f"variance_l{l}"] = n
    return out


def spike_populations(config, n_layers: int, populations) -> list:
    """The recorded populations that send events (event mode only): ``value_l0..L-1``
    and ``error_l1..L``, where ``n_layers`` is ``L + 1``."""
    if not config.events.enabled:
        return []
    L = n_layers - 1
    senders = [f"value_l{l}" for l in range(L)] + [f"error_l{l}" for l in range(1, L + 1)]
    return [p for p in senders if p in populations]


class TraceRecorder:
    """The buffers of one batch of ``batch`` recorded samples: frames, energies, events.

    :meth:`on_frame` and :meth:`sink` are handed to ``trainer.trace``; :meth:`events`
    gives the events in the layout :meth:`TraceWriter.add_trials` reads.
    """

    def __init__(self, populations: dict, spike_pops, batch: int, n_frames: int,
                 n_layers: int, variance_of=None):
        self.populations = dict(populations)
        self.variance_of = variance_of  # layer -> its learned variances now (a tensor)
        self.frames = {p: np.empty((batch, n_frames, n), np.float32)
                       for p, n in self.populations.items()}
        self.energy = np.empty((batch, n_frames, n_layers))
        self._events = {p: [] for p in spike_pops}

    def on_frame(self, frame: int, xs, eps, energies) -> None:
        for p in self.populations:
            kind, l = p.split("_l")
            if kind == "variance":  # shared by the samples: the same row for each
                var = self.variance_of(int(l)).detach().float().reshape(1, -1).cpu().numpy()
                self.frames[p][:, frame] = var
                continue
            state = xs[int(l)] if kind == "value" else eps[int(l)]
            self.frames[p][:, frame] = state.float().reshape(state.shape[0], -1).cpu().numpy()
        self.energy[:, frame] = torch.stack(list(energies), 1).cpu().numpy()

    def sink(self, population, target_name, step, mask, payload) -> None:
        if population in self._events:
            # a (C, H, W) population's node id is the C-order flat index of (c, h, w)
            mask, payload = mask.flatten(1), payload.flatten(1)
            b, node = mask.nonzero(as_tuple=True)
            channel = 1 if target_name.startswith("eps") else 0
            self._events[population].append((b.cpu().numpy(), np.full(len(b), step),
                                             node.cpu().numpy(), payload[mask].cpu().numpy(),
                                             np.full(len(b), channel)))

    def events(self) -> dict:
        """Population -> (trial, step, node, value, channel) arrays."""
        return {p: tuple(np.concatenate([e[i] for e in ev]) if ev else np.zeros(0)
                         for i in range(5)) for p, ev in self._events.items()}


def _indices(config, n_avail: int) -> list:
    tc = config.traces
    indices = list(range(tc.samples)) if isinstance(tc.samples, int) else list(tc.samples)
    bad = [i for i in indices if i >= n_avail]
    if bad or len(indices) > n_avail:
        raise ValueError(f"traces.samples: indices {bad[:5] or len(indices)} are out of range for "
                         f"the {tc.split} split of {n_avail} samples")
    return indices


@torch.no_grad()
def record_traces(trainer, data, config, path: Path, epoch: int, append: bool = False) -> Path:
    """Run the chosen samples through inference and stream their traces to ``path``.

    Each sample: input and label clamped, feedforward start, ``T`` Euler steps, the
    weights of ``epoch`` (no learning). Values, errors, per-layer energy at every
    ``traces.every``-th step, and every event sent (event mode), batch by batch; a layer
    with learned precision also reports its variances (``variance_l<l>``; they move
    during inference only with a ``tau_prec``).
    """
    tc = config.traces
    xs, ys = (data.test_x, data.test_y) if tc.split == "test" else (data.train_x, data.train_y)
    indices = _indices(config, xs.shape[0])
    sizes = trainer.network.sizes
    learned = {p.layer.index: p for p in trainer.precisions if p is not None}
    pops = traced_populations(config, sizes, {l: p.variance().numel() for l, p in learned.items()})
    spikes = spike_populations(config, len(sizes), pops)
    attrs = {"config": yaml.safe_dump(config.model_dump(), sort_keys=False),
             "pcsim_version": __version__, "split": tc.split,
             "mode": "event" if config.events.enabled else "dense"}
    writer = TraceWriter(path, pops, dt=config.dynamics.dt, every=tc.every,
                         n_steps=config.dynamics.steps, n_layers=len(sizes),
                         spike_populations=spikes, attrs=attrs, append=append,
                         shapes={p: (tuple(learned[int(p.split("_l")[1])].variance().shape)
                                     or (1,)) if p.startswith("variance")
                                 else trainer.network.layers[int(p.split("_l")[1])].shape
                                 for p in pops})
    # a trial's op counts: in event mode they depend on its own events, so each trial
    # runs alone; dense counts are the same for every row, the batch's divided by B
    per_trial = config.events.enabled
    size = 1 if per_trial else tc.batch_size
    with writer:
        for start in range(0, len(indices), size):
            chunk = indices[start:start + size]
            idx = torch.tensor(chunk, device=xs.device)
            labels = ys[idx]
            x0, target = batch_pair(config, data, xs[idx], labels, trainer.dtype)
            rec = TraceRecorder(pops, spikes, len(chunk), writer.n_frames, len(sizes),
                                variance_of=lambda l: learned[l].variance())
            counter, outer = OpCounter(), trainer.recorder
            counter.mode = "event" if config.events.enabled else "dense"
            trainer.recorder = counter
            try:
                trainer.trace(x0, target, tc.every, rec.on_frame,
                              event_sink=rec.sink if spikes else None)
            finally:
                trainer.recorder = outer
            if outer is not None:  # a caller counting the recording gets its counts too
                outer.merge(counter)
            writer.add_trials(np.array(chunk), labels.cpu().numpy(), epoch, rec.frames,
                              rec.energy, rec.events(),
                              ops_per_step(counter.result(), len(chunk), config.dynamics.steps))
    return path


def ops_per_step(counts, rows: int, n_steps: int) -> np.ndarray:
    """``(rows, n_steps + 1, len(KINDS))`` int64: each row's inference op counts per
    step, from the counts of ``rows`` rows that did the same work (one row, or dense
    execution, whose counts are per row alike)."""
    table = np.zeros((n_steps + 1, len(KINDS)), dtype=np.int64)
    column = {kind: k for k, kind in enumerate(KINDS)}
    for (phase, step, _target, kind), value in counts.cells.items():
        if phase == "inference" and 0 <= step <= n_steps and kind in column:
            table[step, column[kind]] += int(value)
    if table.any() and (table % rows).any():
        raise ValueError(f"op counts of {rows} rows are not the same per row")
    return np.repeat((table // rows)[None], rows, axis=0)


def traces_hold_epoch(path: Path, epoch: int) -> bool:
    """Whether the trace file at ``path`` is complete and holds trials of ``epoch`` (a
    missing or unreadable file holds none)."""
    if not Path(path).exists():
        return False
    try:
        import h5py
        with h5py.File(path, "r") as f:
            trials = f["pcsim/trials"]
            return bool(len(trials)) and bool((trials["epoch"][:] == epoch).any())
    except (OSError, KeyError, ValueError):
        return False
