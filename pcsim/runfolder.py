"""The run folder (SPEC section 5): its file names, creation, run record, checkpoints
and the resume cursor. Owns no math and knows no backend."""

from __future__ import annotations

import datetime as _dt
import contextlib
import json
import os
import platform
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from pcsim import __version__
from pcsim.energy import available_profiles
from pcsim.energy.report import build_energy_report
from pcsim.runio import atomic_path, finite_number, write_json, write_text

__all__ = ["CHECKPOINT", "OP_COUNTS", "ENERGY_REPORT", "METRICS", "CONFIG", "RUN_INFO",
           "ResumeCursor", "RunFolderError", "check_out", "make_run_dir", "lock_run_dir",
           "remove_stale_temporaries", "is_run_folder", "time_per_sample", "write_energy_report", "check_resumable", "save_checkpoint",
           "read_checkpoint", "load_resume_checkpoint", "write_config", "start_run_info",
           "machine_info", "now", "write_run_info"]

CHECKPOINT = "checkpoint.pt"
OP_COUNTS = "op_counts.json"
ENERGY_REPORT = "energy_report.json"
METRICS = "metrics.json"
CONFIG = "config.yaml"
RUN_INFO = "run.json"

#: sections whose change makes a checkpoint meaningless for resuming
_RESUME_SECTIONS = ("network", "dynamics", "learning", "data", "events", "hw_profiles")
#: keys of those sections a resume may change: where the data lives, and the epoch count
#: (a longer run, its schedule re-planned; see ``_Run._new_horizon``); ``run`` is free
_RESUME_FREE = {("data", "root"), ("data", "download"), ("learning", "epochs")}


def now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


@dataclass(frozen=True)
class ResumeCursor:
    """Where training stands: the next ``batch`` of ``epoch``, the data order's generator
    state at the start of that epoch, and the epoch's partial sums so far (energies
    times samples, inference steps times samples, train time, op-counter state)."""

    epoch: int = 1
    batch: int = 0
    gen_state: Any = None
    e0: float = 0.0
    e1: float = 0.0
    steps: int = 0
    train_time: float = 0.0
    counter: Optional[dict] = None

    @property
    def mid_epoch(self) -> bool:
        return self.batch > 0

    def to_dict(self) -> dict:
        """The checkpoint's ``progress`` record (plain keys, read by older tools too)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict, path="checkpoint") -> "ResumeCursor":
        """The cursor of a checkpoint's ``progress`` record, each field checked (a
        :class:`CheckpointError` naming ``path`` and the field otherwise)."""
        if not isinstance(record, dict):
            raise CheckpointError(f"{path}: damaged checkpoint: progress: expected a dict, "
                                  f"found {_short(record)}")
        kinds = {"epoch": (int, 1), "batch": (int, 0), "e0": (float, None),
                 "e1": (float, None), "steps": (int, 0), "train_time": (float, 0.0)}
        for key, (kind, low) in kinds.items():
            value = record.get(key, getattr(cls, key))
            if (not finite_number(value) or (kind is int and not isinstance(value, int))
                    or (low is not None and value < low)):
                raise CheckpointError(f"{path}: damaged checkpoint: progress.{key}: expected "
                                      f"{'an integer' if kind is int else 'a finite number'}"
                                      f"{f' >= {low}' if low is not None else ''}, found "
                                      f"{_short(value)}")
        state = record.get("gen_state")
        if not (isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and state.ndim == 1):
            raise CheckpointError(f"{path}: damaged checkpoint: progress.gen_state: expected the "
                                  f"data order generator's state (a uint8 tensor), found "
                                  f"{_short(state)}")
        if record.get("counter") is not None and not isinstance(record["counter"], dict):
            raise CheckpointError(f"{path}: damaged checkpoint: progress.counter: expected a "
                                  f"dict or None, found {_short(record['counter'])}")
        keys = cls.__dataclass_fields__
        return cls(**{k: v for k, v in record.items() if k in keys})


#: what every metrics record holds and the plots draw (with test_accuracy or test_mse)
_PLOTTED = ("train_energy_initial", "train_energy_final", "test_energy")


class CheckpointError(ValueError):
    """A checkpoint that loads but does not hold what pcsim writes; names file and key."""


def _short(value) -> str:
    """What was found, briefly: a tensor's dtype and shape, else a clipped repr."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def check_checkpoint(ckpt, path, resume: bool = False) -> None:
    """Refuse a checkpoint whose structure is not what :func:`save_checkpoint` writes:
    the config, the parameters by name and the epoch; for ``resume`` also the progress,
    optimizer and schedule states, the metrics and the counted epoch's op counts. One
    :class:`CheckpointError` names the file and the first key that is wrong."""
    def bad(key, expected, found):
        raise CheckpointError(f"{path}: damaged checkpoint: {key}: expected {expected}, found "
                              f"{_short(found)}")

    if not isinstance(ckpt, dict):
        bad("the top level", "a dict of config, params, epoch, ...", ckpt)
    need = ("config", "params", "epoch") + (("progress",) if resume else ())
    missing = [key for key in need if key not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a pcsim checkpoint (missing {missing})")
    if not isinstance(ckpt["config"], dict):
        bad("config", "the resolved config as a dict", ckpt["config"])
    params = ckpt["params"]
    if not isinstance(params, dict):
        bad("params", "a dict with the tensors by name", params)
    tensors = params.get("tensors") if "tensors" in params else None
    if tensors is not None or "W" not in params:
        if not isinstance(tensors, dict) or not tensors:
            bad("params.tensors", "the parameter tensors by name", tensors)
        for name, t in tensors.items():
            if not isinstance(name, str) or not isinstance(t, torch.Tensor) \
                    or not t.is_floating_point():
                bad(f"params.tensors[{name!r}]", "a floating-point tensor", t)
    else:  # the early {"W": [...], "b": [...]} form
        for key in ("W", "b"):
            value = params.get(key)
            if not isinstance(value, list) or not all(isinstance(t, torch.Tensor) for t in value):
                bad(f"params.{key}", "a list of tensors", value)
    epoch = ckpt["epoch"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        bad("epoch", "the completed epochs, an integer >= 0", epoch)
    if not resume:
        return
    ResumeCursor.from_dict(ckpt["progress"], path)
    for key in ("optimizer", "scheduler", "final_counts"):
        if ckpt.get(key) is not None and not isinstance(ckpt[key], dict):
            bad(key, "a dict or None", ckpt[key])
    optimizer = ckpt.get("optimizer")
    if optimizer is not None and not (isinstance(optimizer.get("state"), dict)
                                      and isinstance(optimizer.get("param_groups"), list)):
        bad("optimizer", "torch's optimizer state (state, param_groups)", optimizer)
    metrics = ckpt.get("metrics") or []
    done = ckpt["progress"].get("epoch", 1) - 1
    if not isinstance(metrics, list) or len(metrics) != done:
        bad("metrics", f"a list of the {done} completed epochs' records", metrics)
    for k, record in enumerate(metrics):
        if not isinstance(record, dict) or record.get("epoch") != k + 1:
            bad(f"metrics[{k}]", f"the record of epoch {k + 1}", record)
        odd = _not_plain(record)
        if odd:
            bad(f"metrics[{k}].{odd[0]}", "a finite number, text or a record of them", odd[1])
        target = "test_accuracy" if "test_accuracy" in record else "test_mse"
        for key in (*_PLOTTED, target):
            if not finite_number(record.get(key)):
                bad(f"metrics[{k}].{key}", "a finite number", record.get(key))
    counts = ckpt.get("final_counts")
    if counts is not None and not (isinstance(counts.get("counts"), dict)
                                   and isinstance(counts.get("steps"), (int, float))):
        bad("final_counts", "the counted epoch's op counts and mean steps", counts)


def _not_plain(value, where=""):
    """The first ``(key path, value)`` in a JSON-like record that is not a finite number,
    text, None or a list or dict of them; None when all are."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return (f"{where}{key!r}", key)
            found = _not_plain(item, f"{where}{key}.")
            if found:
                return found
        return None
    if isinstance(value, list):
        for k, item in enumerate(value):
            found = _not_plain(item, f"{where}{k}.")
            if found:
                return found
        return None
    if value is None or isinstance(value, (str, bool)) or finite_number(value):
        return None
    return (where.rstrip(".") or "value", value)


def check_optimizer_state(optimizer) -> None:
    """After ``optimizer.load_state_dict``, which takes any values: every state tensor
    of a parameter has its shape (``step`` a scalar), so that a damaged checkpoint is
    named (run it under :func:`restoring`) and not found by a shape error in the first
    learning step."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                scalar = key == "step"
                if not isinstance(value, torch.Tensor) or not value.is_floating_point() or (
                        value.shape != (() if scalar else p.shape)):
                    raise ValueError(f"optimizer state {key!r} of a parameter of shape "
                                     f"{tuple(p.shape)} is {value!r:.60}")


@contextlib.contextmanager
def restoring(path, what: str):
    """Turn a failure to restore ``what`` from a checkpoint that passed
    :func:`check_checkpoint` (a state dict that torch or pcsim cannot apply) into one
    :class:`CheckpointError` naming the file."""
    try:
        yield
    except CheckpointError:
        raise
    except (KeyError, TypeError, AttributeError, IndexError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: damaged checkpoint: its {what} cannot be restored "
                              f"({type(exc).__name__}: {str(exc)[:200]})") from None


def machine_info(device: torch.device) -> dict:
    """Describe where a run executes (for run.json and results tables)."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


class RunFolderError(ValueError):
    """A run folder that cannot be made where ``--out`` / ``run.out`` points."""


#: What an atomic write leaves behind when the process is killed mid-write: a dot, the
#: target's stem, mkstemp's 8 random characters, the target's suffix.
_STALE = re.compile(r"^\..+\.[a-z0-9_]{8}(\.pt|\.json|\.yaml|\.png|\.h5\.tmp)$")


def lock_run_dir(run_dir: Path):
    """Hold an exclusive lock on ``run_dir`` for this process's lifetime (released by
    the kernel however the process ends, SIGKILL included); RunFolderError when another
    pcsim process holds it. Returns the open lock file (keep a reference)."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform: no protection, no failure
        return None
    handle = open(run_dir / ".pcsim.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise RunFolderError(f"{run_dir}: the run folder is in use by another pcsim process "
                             "(a run or resume still running); wait for it to end, or stop "
                             "it first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def remove_stale_temporaries(run_dir: Path) -> list:
    """Delete the temporary files that killed atomic writes left in ``run_dir`` (only
    while holding its lock: no writer can be using them); return their names."""
    gone = []
    for path in run_dir.iterdir():
        if path.is_file() and _STALE.match(path.name):
            path.unlink(missing_ok=True)
            gone.append(path.name)
    return gone


def is_run_folder(run_dir: Path) -> bool:
    """Whether ``run_dir`` was written by ``pcsim run`` (its config or run record)."""
    return (run_dir / CONFIG).exists() or (run_dir / RUN_INFO).exists() or (
        run_dir / CHECKPOINT).exists()


def check_out(config, out: Optional[str]) -> None:
    """Before any work: ``--out`` / ``run.out`` must be a folder, or creatable in a
    writable one (RunFolderError naming it)."""
    import tempfile
    root = Path(out or config.run.out)
    where = "--out" if out else "run.out"
    if root.exists() and not root.is_dir():
        raise RunFolderError(f"{root}: {where} must be a folder to hold run folders; this is "
                             "a file")
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:  # a real write (permission bits do not bind root; read-only mounts do)
        if not probe.is_dir():
            raise NotADirectoryError(f"{probe} is a file")
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise RunFolderError(f"{root}: {where} cannot hold run folders ({probe} is not a "
                             f"writable folder: {exc.strerror or exc}); give a writable "
                             "folder with --out or run.out") from None


def make_run_dir(config, source: Optional[str], out: Optional[str]) -> Path:
    """Create a new, empty run folder under ``out`` (or ``run.out``)."""
    stem = Path(source).stem if source else "run"
    name = config.run.name or f"{stem}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    check_out(config, out)
    root = Path(out or config.run.out)
    run_dir = root / name
    where = "--out" if out else "run.out"
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise FileExistsError(f"run folder {run_dir} exists and is not empty; choose another "
                              "run.name or --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".pcsim-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RunFolderError(f"{root}: cannot create the run folder {name!r} under {where} "
                             f"({reason}); give a writable folder with --out or run.out") from None
    return run_dir


def write_config(run_dir: Path, config) -> None:
    """Write the resolved config (``config.yaml``)."""
    write_text(run_dir / CONFIG, yaml.safe_dump(config.model_dump(), sort_keys=False))


def start_run_info(run_dir: Path, source, device, resumed: bool) -> dict:
    """The ``run.json`` record of a new run, or the resumed run's with this start added."""
    started = now()
    if resumed and (run_dir / RUN_INFO).exists():
        info = json.loads((run_dir / RUN_INFO).read_text())
        info.setdefault("resumed", []).append(started)
        return info
    return {"pcsim_version": __version__, "source": source, "started": started,
            "machine": machine_info(device)}


def check_resumable(config, saved: dict, path: Path) -> None:
    """Refuse to resume ``saved`` (a checkpoint's config) under a changed ``config``."""
    current = config.model_dump()
    changed = []
    for section in _RESUME_SECTIONS:
        a, b = current.get(section), saved.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if (section, key) in _RESUME_FREE:
                    continue
                if a.get(key) != b.get(key):
                    changed.append(f"{section}.{key}: checkpoint {b.get(key)!r}, now {a.get(key)!r}")
        elif a != b:
            changed.append(f"{section}: checkpoint {b!r}, now {a!r}")
    if changed:
        raise ValueError(f"{path}: cannot resume, the config changed in ways that make the "
                         "checkpoint meaningless:\n  " + "\n  ".join(changed))


def _tensors(value):
    """Every tensor in a nested state (dicts, lists, tuples)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def save_checkpoint(path: Path, trainer, optimizer, scheduler, config, epoch: int,
                    cursor: ResumeCursor, metrics: Optional[list] = None,
                    extra: Optional[dict] = None) -> None:
    """Atomically write the trainer's state, optimizer and schedule state, the resolved
    config, the completed ``epoch``, the resume cursor, the metrics so far and ``extra``
    (plain data the run needs to finish, e.g. the counted epoch's op counts).

    Raises
    ------
    FloatingPointError
        If any tensor of the trainer's state is not finite (the last good file is kept).
    """
    state = trainer.state_dict()
    for tensor in _tensors(state):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise FloatingPointError(f"non-finite weights after epoch {epoch}; the last good "
                                     f"checkpoint in {path.parent} is kept")
    payload = {"params": state, "optimizer": optimizer.state_dict() if optimizer else None,
               "scheduler": scheduler.state_dict() if scheduler else None,
               "config": config.model_dump(), "epoch": epoch,
               "progress": cursor.to_dict(), "metrics": metrics,
               "pcsim_version": __version__, **(extra or {})}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: Path) -> dict:
    """Load a checkpoint file (on the CPU), or raise ValueError naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated or foreign files fail in many ways
        raise ValueError(f"{path}: not a readable pcsim checkpoint ({type(exc).__name__}: "
                         f"{str(exc)[:200]})") from None


def load_resume_checkpoint(run_dir: Path, config) -> Optional[dict]:
    """The checkpoint of ``run_dir`` to resume under ``config``, or None if there is none
    yet; refuses a changed config and a checkpoint without resume information."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder to resume")
    if not is_run_folder(run_dir):
        raise RunFolderError(f"{run_dir}: not a pcsim run folder (no config.yaml, run.json or "
                             "checkpoint.pt); --resume takes a folder that `pcsim run` made")
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    ckpt = read_checkpoint(path)
    check_checkpoint(ckpt, path, resume=True)
    from pcsim.config import config_from_dict
    config_from_dict(ckpt["config"], str(path))  # a damaged config is named, not compared
    check_resumable(config, ckpt["config"], path)
    if ckpt.get("progress") is None:
        raise ValueError(f"{path}: written by a pcsim without resume information; start a "
                         "new run")
    return ckpt


def write_run_info(run_dir: Path, info: dict) -> None:
    write_json(run_dir / RUN_INFO, info)


def time_per_sample(config, inference_steps: Optional[float] = None) -> dict:
    """Simulated time of one sample's work, per counted work (SPEC 4: the steps its
    inference ran times ``dt``), for the static power of a profile.

    Training: ``inference_steps`` (the counted epoch's measured mean, fewer than ``T``
    after convergence stops; ``T`` when not given) times ``dt``; 0 for backprop. Test: a
    generative read-out infers for ``T`` steps; a supervised one is the feedforward pass,
    one step per layer (``L dt``)."""
    dyn = config.dynamics
    steps = dyn.steps if inference_steps is None else inference_steps
    pc = config.learning.rule == "pc"
    test_steps = dyn.steps if config.network.mode == "generative" else len(config.network.layers) - 1
    return {"train": steps * dyn.dt if pc else 0.0, "test": test_steps * dyn.dt if pc else 0.0}


def write_energy_report(run_dir: Path, counts: dict, config,
                        profiles_folder=None, inference_steps: Optional[float] = None) -> dict:
    """Write op_counts.json, energy_report.json and energy_report.png for ``counts``;
    static power is charged per sample for :func:`time_per_sample`."""
    from pcsim.plots import plot_energy_report
    write_json(run_dir / OP_COUNTS, {work: c.to_json() for work, c in counts.items()})
    names = config.hw_profiles or available_profiles(profiles_folder)
    report = build_energy_report(counts, names, profiles_folder,
                                 time_per_sample(config, inference_steps))
    write_json(run_dir / ENERGY_REPORT, report)
    plot_energy_report(report, run_dir / "energy_report.png")
    return report
