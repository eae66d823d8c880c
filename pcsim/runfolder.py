"""The run folder (SPEC section 5): its file names, creation, run record, checkpoints
and the resume cursor. Owns no math and knows no backend."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from pcsim import __version__
from pcsim.runio import atomic_path, write_json, write_text

__all__ = ["CHECKPOINT", "OP_COUNTS", "ENERGY_REPORT", "METRICS", "CONFIG", "RUN_INFO",
           "ResumeCursor", "make_run_dir", "check_resumable", "save_checkpoint",
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
    def from_dict(cls, record: dict) -> "ResumeCursor":
        keys = cls.__dataclass_fields__
        return cls(**{k: v for k, v in record.items() if k in keys})


def machine_info(device: torch.device) -> dict:
    """Describe where a run executes (for run.json and results tables)."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def make_run_dir(config, source: Optional[str], out: Optional[str]) -> Path:
    """Create a new, empty run folder under ``out`` (or ``run.out``)."""
    stem = Path(source).stem if source else "run"
    name = config.run.name or f"{stem}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(out or config.run.out) / name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"run folder {run_dir} exists and is not empty; choose another "
                              "run.name or --out")
    run_dir.mkdir(parents=True, exist_ok=True)
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
                if section == "data" and key in ("root", "download"):
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
                    cursor: ResumeCursor, metrics: Optional[list] = None) -> None:
    """Atomically write the trainer's state, optimizer and schedule state, the resolved
    config, the completed ``epoch``, the resume cursor and the metrics so far.

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
               "pcsim_version": __version__}
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
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    ckpt = read_checkpoint(path)
    check_resumable(config, ckpt["config"], path)
    if ckpt.get("progress") is None:
        raise ValueError(f"{path}: written by a pcsim without resume information; start a "
                         "new run")
    return ckpt


def write_run_info(run_dir: Path, info: dict) -> None:
    write_json(run_dir / RUN_INFO, info)
