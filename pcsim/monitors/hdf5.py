"""Streaming HDF5 trace writer in the SONATA layouts of SPEC section 5.

- events: ``/spikes/<population>/{timestamps (float64, ms), node_ids (uint64), values}``,
  group attribute ``sorting`` (HDF5 enum ``{none: 0, by_id: 1, by_time: 2}``), chunked and
  never compressed (libsonata cannot read compressed datasets); error populations also
  carry ``channel`` (0: the gated error ``g`` into ``W^T``, 1: ``eps`` one-to-one to ``x``);
- activity: ``/report/<population>/data`` (float32, time x neurons) with
  ``mapping/{node_ids, index_pointers, element_ids, time = [start, stop, dt]}`` (ms);
- ``/pcsim/trials`` (sample index, label, epoch, start, stop in ms): each recorded
  sample is a trial laid end to end on one time axis; ``/pcsim/energy`` (time x layer)
  the per-layer energy ``E_l(t)``; ``/pcsim/events_per_step`` (trial x step x population);
  ``/pcsim/ops_per_step`` (trial x step x op kind of SPEC 4, attribute ``kinds``);
- root attributes: the resolved config (YAML) and the pcsim version.

Trials are appended batch by batch, so memory holds one batch, not the recording. The
file is written under a temporary name and renamed when complete; appending to an
existing trace file copies it first, so a crash leaves the last complete file.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pcsim.monitors.counters import KINDS

__all__ = ["TraceError", "TraceWriteError", "TraceWriter", "SORTING", "check_trace",
           "summarize_trace"]

#: SONATA's spike sorting enum.
SORTING = {"none": 0, "by_id": 1, "by_time": 2}


class TraceError(RuntimeError):
    """A trace file that cannot be written or read; the message names the file."""


class TraceWriteError(TraceError):
    """Writing a trace failed while running (disk full, folder missing)."""


def _h5():
    import h5py
    return h5py


class TraceWriter:
    """Append recorded trials to one HDF5 trace file.

    Parameters
    ----------
    path : Path
        The final file name (written atomically).
    populations : dict
        Recorded population name -> number of neurons, in a fixed order.
    dt, every, n_steps : float (s), int, int
        Euler step, frame stride and steps per trial; a trial has
        ``n_steps // every + 1`` frames, ``every * dt`` apart, and lasts that many frames.
    n_layers : int
        ``L + 1`` energy columns.
    spike_populations : list of str
        Populations whose events are recorded (event mode), else empty.
    attrs : dict
        Root attributes (``config``, ``pcsim_version``, ...).
    append : bool
        Continue an existing file at ``path`` (same layout) instead of replacing it.
    shapes : dict, optional
        Population -> its layer's shape, e.g. ``(C, H, W)``; written as the attribute
        ``shape`` of the population's report and spikes groups (node id = the C-order
        flat index). Default: ``(n,)``.
    """

    def __init__(self, path, populations: dict, *, dt: float, every: int, n_steps: int,
                 n_layers: int, spike_populations=(), attrs=None, append=False, shapes=None):
        self.path = Path(path)
        self.populations = dict(populations)
        self.shapes = {p: tuple((shapes or {}).get(p, (n,))) for p, n in self.populations.items()}
        bad = {p: s for p, s in self.shapes.items() if math.prod(s) != self.populations[p]}
        if bad:
            raise ValueError(f"trace shapes {bad} do not hold the populations' sizes")
        self.spike_populations = list(spike_populations)
        self.dt_ms = dt * 1e3
        self.every = every
        self.n_steps = n_steps
        self.n_frames = n_steps // every + 1
        self.frame_ms = every * self.dt_ms
        self.trial_ms = self.n_frames * self.frame_ms
        self.n_layers = n_layers
        self._file = None
        self._tmp = None
        try:
            self._open(attrs or {}, append and self.path.exists())
        except OSError as exc:
            self.abort()
            raise TraceWriteError(self._why(exc)) from None

    # ------------------------------------------------------------------ opening
    def _why(self, exc) -> str:
        reason = exc.strerror or str(exc)
        if getattr(exc, "errno", None) == errno.ENOSPC:
            reason = "no space left on the device"
        return (f"{self.path}: cannot write the trace file ({reason}); choose a writable "
                "folder with free space (run.out / --out) or turn traces.enabled off; "
                "metrics and checkpoints are unaffected")

    def _open(self, attrs, append):
        h5py = _h5()
        if not self.path.parent.is_dir():
            raise FileNotFoundError(errno.ENOENT, "folder does not exist", str(self.path.parent))
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}.",
                                   suffix=".h5.tmp")
        os.close(fd)
        self._tmp = Path(tmp)
        if append:
            shutil.copyfile(self.path, self._tmp)
            self._file = h5py.File(self._tmp, "a")
            self.n_trials = int(self._file["pcsim/trials"].shape[0])
            return
        self._file = f = h5py.File(self._tmp, "w")
        self.n_trials = 0
        for key, value in attrs.items():
            f.attrs[key] = value
        f.attrs["dt_ms"] = self.dt_ms
        f.attrs["every"] = self.every
        f.attrs["n_steps"] = self.n_steps
        sorting_t = h5py.enum_dtype(SORTING, basetype="u1")
        f.create_group("spikes")  # present in dense mode too: libsonata's SpikeReader opens it
        for name in self.spike_populations:
            g = f.create_group(f"spikes/{name}")
            g.attrs.create("sorting", SORTING["by_time"], dtype=sorting_t)
            g.attrs["shape"] = np.array(self._shape(name), dtype=np.int64)
            ts = g.create_dataset("timestamps", (0,), maxshape=(None,), dtype="f8", chunks=(65536,))
            ts.attrs["units"] = "ms"
            g.create_dataset("node_ids", (0,), maxshape=(None,), dtype="u8", chunks=(65536,))
            g.create_dataset("values", (0,), maxshape=(None,), dtype="f4", chunks=(65536,))
            if name.startswith("error"):
                g.create_dataset("channel", (0,), maxshape=(None,), dtype="u1", chunks=(65536,))
        for name, n in self.populations.items():
            g = f.create_group(f"report/{name}")
            g.attrs["shape"] = np.array(self.shapes[name], dtype=np.int64)
            data = g.create_dataset("data", (0, n), maxshape=(None, n), dtype="f4",
                                    chunks=(max(1, min(self.n_frames, max(1, 262144 // n))), n))
            data.attrs["units"] = "1"
            m = g.create_group("mapping")
            ids = m.create_dataset("node_ids", data=np.arange(n, dtype=np.uint64))
            ids.attrs["sorted"] = True  # libsonata's marking: ids ascend
            m.create_dataset("index_pointers", data=np.arange(n + 1, dtype=np.uint64))
            m.create_dataset("element_ids", data=np.zeros(n, dtype=np.uint32))
            t = m.create_dataset("time", data=np.array([0.0, 0.0, self.frame_ms]))
            t.attrs["units"] = "ms"
        trial_t = np.dtype([("sample_index", "i8"), ("label", "i8"), ("epoch", "i8"),
                            ("start", "f8"), ("stop", "f8")])
        trials = f.create_dataset("pcsim/trials", (0,), maxshape=(None,), dtype=trial_t,
                                  chunks=(1024,))
        trials.attrs["units"] = "ms"
        energy = f.create_dataset("pcsim/energy", (0, self.n_layers), maxshape=(None, self.n_layers),
                                  dtype="f8", chunks=(max(1, self.n_frames), self.n_layers))
        energy.attrs["columns"] = [f"E_l{l}" for l in range(self.n_layers)]
        energy.attrs["units"] = "1"
        n_spk = max(1, len(self.spike_populations))
        eps = f.create_dataset("pcsim/events_per_step", (0, self.n_steps + 1, n_spk),
                               maxshape=(None, self.n_steps + 1, n_spk), dtype="i8",
                               chunks=(64, self.n_steps + 1, n_spk))
        eps.attrs["populations"] = self.spike_populations or ["-"]
        self._ops_dataset(f)

    def _ops_dataset(self, f):
        """``/pcsim/ops_per_step``: every op kind of SPEC 4 per trial and step (the
        inference phase, summed over targets); made on first use, also in a file of an
        older pcsim being appended to, whose earlier trials then read -1 (not recorded)."""
        if "pcsim/ops_per_step" in f:
            return f["pcsim/ops_per_step"]
        n = int(f["pcsim/trials"].shape[0]) if "pcsim/trials" in f else 0
        ops = f.create_dataset("pcsim/ops_per_step", (n, self.n_steps + 1, len(KINDS)),
                               maxshape=(None, self.n_steps + 1, len(KINDS)), dtype="i8",
                               chunks=(64, self.n_steps + 1, len(KINDS)), fillvalue=-1)
        ops.attrs["kinds"] = list(KINDS)
        ops.attrs["units"] = "ops per trial and step (inference), SPEC 4"
        return ops

    def _shape(self, name):
        if name in self.shapes:
            return self.shapes[name]
        return (self.populations[name],) if name in self.populations else (0,)

    # ------------------------------------------------------------------ writing
    @staticmethod
    def _append(ds, values):
        n = ds.shape[0]
        ds.resize(n + values.shape[0], axis=0)
        ds[n:] = values

    def add_trials(self, sample_index, labels, epoch, frames: dict, energy, events: dict,
                   ops=None) -> None:
        """Append a batch of ``B`` trials.

        Parameters
        ----------
        sample_index, labels : int arrays (B,)
        epoch : int
        frames : dict population -> float array (B, n_frames, n)
        energy : float array (B, n_frames, n_layers)
        events : dict population -> (trial b, step, node, value, channel) int/float arrays
        ops : int array (B, n_steps + 1, len(KINDS)), optional
            Each trial's op counts per step (-1 where not counted).
        """
        try:
            self._add(np.asarray(sample_index), np.asarray(labels), epoch, frames, energy, events,
                      ops)
        except OSError as exc:
            self.abort()
            raise TraceWriteError(self._why(exc)) from None

    def _add(self, sample_index, labels, epoch, frames, energy, events, ops):
        f, B = self._file, len(sample_index)
        if ops is None:
            ops = np.full((B, self.n_steps + 1, len(KINDS)), -1, dtype="i8")
        self._append(self._ops_dataset(f), np.asarray(ops, dtype="i8"))
        starts = (self.n_trials + np.arange(B)) * self.trial_ms
        trials = np.zeros(B, dtype=f["pcsim/trials"].dtype)
        trials["sample_index"], trials["label"], trials["epoch"] = sample_index, labels, epoch
        trials["start"], trials["stop"] = starts, starts + self.trial_ms
        self._append(f["pcsim/trials"], trials)
        for name in self.populations:
            block = frames[name]  # (B, n_frames, n)
            self._append(f[f"report/{name}/data"], block.reshape(B * self.n_frames, -1).astype("f4"))
        self._append(f["pcsim/energy"], energy.reshape(B * self.n_frames, -1))
        per_step = np.zeros((B, self.n_steps + 1, max(1, len(self.spike_populations))), "i8")
        for k, name in enumerate(self.spike_populations):
            b, step, node, value, channel = events.get(name, [np.zeros(0, "i8")] * 5)
            order = np.lexsort((node, step, b))  # by trial, then step: time order
            b, step, node = b[order], step[order], node[order]
            g = f[f"spikes/{name}"]
            self._append(g["timestamps"], starts[b] + step * self.dt_ms)
            self._append(g["node_ids"], node.astype("u8"))
            self._append(g["values"], np.asarray(value)[order].astype("f4"))
            if "channel" in g:
                self._append(g["channel"], np.asarray(channel)[order].astype("u1"))
            np.add.at(per_step[:, :, k], (b, step), 1)
        self._append(f["pcsim/events_per_step"], per_step)
        self.n_trials += B

    # ------------------------------------------------------------------ closing
    def close(self) -> Path:
        """Finish the time axes, flush, and rename onto the final path."""
        try:
            stop = self.n_trials * self.trial_ms
            for name in self.populations:
                self._file[f"report/{name}/mapping/time"][:] = [0.0, stop, self.frame_ms]
            self._file.attrs["n_trials"] = self.n_trials
            self._file.close()
            self._file = None
            os.chmod(self._tmp, 0o644)
            os.replace(self._tmp, self.path)
        except OSError as exc:
            self.abort()
            raise TraceWriteError(self._why(exc)) from None
        return self.path

    def abort(self) -> None:
        """Drop the temporary file; the final path keeps its previous content, if any."""
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # noqa: BLE001 - closing a broken file must not mask the error
                pass
            self._file = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def open_trace(path):
    """Open a trace file read-only, or raise TraceError naming it."""
    h5py = _h5()
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise TraceError(f"{path}: not a readable HDF5 trace file ({exc})") from None
    if "pcsim/trials" not in f:
        f.close()
        raise TraceError(f"{path}: no /pcsim/trials table; not a pcsim trace file")
    return f


#: the most a reader of a trace file loads at once: a declared size above it is refused
#: before reading (a crafted or damaged file may declare terabytes)
READ_LIMIT_BYTES = 1 << 30
#: header values beyond these are not a trace pcsim could have written
_MAX_STEPS, _MAX_TRIALS = 10 ** 7, 10 ** 8
_TRIAL_FIELDS = ("sample_index", "label", "epoch", "start", "stop")


def check_trace(f, path) -> dict:
    """Check that an open trace file has the layout of SPEC 5 that pcsim's readers use,
    with consistent sizes, before anything large is read; return its header: ``n_steps``,
    ``every``, ``dt_ms``, ``n_trials``, ``n_frames`` (frames per trial).

    Raises
    ------
    TraceError
        One line naming the file, the object and what was expected.
    """
    h5py = _h5()

    def bad(where, expected):
        return TraceError(f"{path}: {where}: expected {expected}; not a complete pcsim "
                          "trace file")

    def number(key, kind, low):
        value = f.attrs.get(key)
        if value is None:
            raise bad(f"root attribute {key!r}", f"{kind.__name__} >= {low} (it is missing)")
        value = np.asarray(value)
        if value.shape != () or value.dtype.kind not in "iuf" or not np.isfinite(value):
            raise bad(f"root attribute {key!r}", f"one finite number, found {value!r}")
        value = kind(value)
        if value < low or (kind is int and value != float(np.asarray(f.attrs[key]))):
            raise bad(f"root attribute {key!r}", f"{kind.__name__} >= {low}, found {value!r}")
        return value

    n_steps, every, dt_ms = number("n_steps", int, 0), number("every", int, 1), number(
        "dt_ms", float, 0.0)
    if n_steps > _MAX_STEPS or every > max(n_steps, 1):
        raise bad("root attributes n_steps, every",
                  f"at most {_MAX_STEPS} steps and a frame stride within them, found "
                  f"{n_steps} and {every}")
    n_frames = n_steps // every + 1
    trials = f["pcsim/trials"]
    names = trials.dtype.names or ()
    if (not isinstance(trials, h5py.Dataset) or trials.ndim != 1
            or not set(_TRIAL_FIELDS) <= set(names) or len(trials) > _MAX_TRIALS):
        raise bad("/pcsim/trials", f"a 1-D table with fields {list(_TRIAL_FIELDS)} and at "
                  f"most {_MAX_TRIALS} rows, found {trials!r}")
    n_trials = int(trials.shape[0])
    rows = n_trials * n_frames

    def dataset(where, ndim, kinds="iuf"):
        obj = f.get(where)
        if not isinstance(obj, h5py.Dataset) or obj.ndim != ndim or obj.dtype.kind not in kinds:
            raise bad(where, f"a {ndim}-D numeric dataset, found {obj!r}")
        return obj

    def readable(where, shape, itemsize):
        size = int(np.prod(shape, dtype=object)) * itemsize
        if size > READ_LIMIT_BYTES:
            raise bad(where, f"at most {READ_LIMIT_BYTES >> 20} MiB to read, it declares "
                      f"{size / 2 ** 30:.3g} GiB")

    readable("/pcsim/trials", trials.shape, trials.dtype.itemsize)
    energy = dataset("pcsim/energy", 2)
    if energy.shape[0] != rows:
        raise bad("/pcsim/energy", f"{rows} rows ({n_trials} trials x {n_frames} frames), "
                  f"found {energy.shape[0]}")
    readable("/pcsim/energy", (n_frames, energy.shape[1]), energy.dtype.itemsize)
    report = f.get("report", {})
    for name in report:
        data = dataset(f"report/{name}/data", 2)
        if data.shape[0] != rows:
            raise bad(f"/report/{name}/data", f"{rows} rows ({n_trials} trials x {n_frames} "
                      f"frames), found {data.shape[0]}")
        readable(f"/report/{name}/data", (n_frames, data.shape[1]), data.dtype.itemsize)
        shape = report[name].attrs.get("shape")
        if shape is not None:
            shape = np.asarray(shape)
            if (shape.ndim != 1 or shape.dtype.kind not in "iu" or (shape < 1).any()
                    or int(np.prod(shape, dtype=object)) != data.shape[1]):
                raise bad(f"/report/{name} attribute 'shape'",
                          f"positive integers whose product is the {data.shape[1]} columns, "
                          f"found {shape.tolist()}")
    for name in f.get("spikes", {}):
        ts = dataset(f"spikes/{name}/timestamps", 1, "f")
        ids = dataset(f"spikes/{name}/node_ids", 1, "iu")
        if ts.shape != ids.shape:
            raise bad(f"/spikes/{name}", f"as many node_ids as timestamps, found "
                      f"{ids.shape[0]} and {ts.shape[0]}")
        readable(f"/spikes/{name}", ts.shape, ts.dtype.itemsize + ids.dtype.itemsize)
    if "pcsim/ops_per_step" in f:  # absent in files of older pcsim versions
        ops = dataset("pcsim/ops_per_step", 3, "iu")
        kinds = ops.attrs.get("kinds")
        if ops.shape[:2] != (n_trials, n_steps + 1) or kinds is None or len(kinds) != ops.shape[2]:
            raise bad("/pcsim/ops_per_step", f"{n_trials} trials x {n_steps + 1} steps x one "
                      f"column per name in its 'kinds' attribute, found {ops.shape}")
        readable("/pcsim/ops_per_step", ops.shape, ops.dtype.itemsize)
    return {"n_steps": n_steps, "every": every, "dt_ms": dt_ms, "n_trials": n_trials,
            "n_frames": n_frames}


def summarize_trace(path) -> dict:
    """Populations, trials, steps and event counts of a trace file."""
    with open_trace(path) as f:
        head = check_trace(f, path)
        trials = f["pcsim/trials"][:]
        out = {"path": str(path), "pcsim_version": _text(f.attrs.get("pcsim_version", "?")),
               "mode": _text(f.attrs.get("mode", "?")), "split": _text(f.attrs.get("split", "?")),
               "n_trials": head["n_trials"], "n_steps": head["n_steps"],
               "dt_ms": head["dt_ms"], "every": head["every"],
               "epochs": sorted({int(e) for e in trials["epoch"]}),
               "reports": {name: tuple(int(v) for v in f[f"report/{name}/data"].shape)
                           for name in f.get("report", {})},
               "spikes": {name: int(f[f"spikes/{name}/node_ids"].shape[0])
                          for name in f.get("spikes", {})},
               "ops_per_trial": _ops_per_trial(f)}
    return out


def _ops_per_trial(f) -> dict:
    """Each op kind's mean count per recorded trial (inference, all steps), over the
    trials that were counted; empty for a file without ``/pcsim/ops_per_step``."""
    if "pcsim/ops_per_step" not in f:
        return {}
    ops = f["pcsim/ops_per_step"][:]
    kinds = [_text(k) for k in f["pcsim/ops_per_step"].attrs["kinds"]]
    counted = ops[(ops >= 0).all(axis=(1, 2))]
    if not len(counted):
        return {}
    totals = counted.sum(axis=1).mean(axis=0)
    return {kind: float(v) for kind, v in zip(kinds, totals) if v}


def _text(value) -> str:
    """An attribute as short text (bytes decoded, anything else printed, 80 characters)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)[:80]
