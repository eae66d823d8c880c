"""Where a torch trainer computes: ``run.device`` resolved against what torch sees."""

from __future__ import annotations

import os
import time

import torch

__all__ = ["resolve_device", "default_threads", "busy_cores"]


def resolve_device(name: str) -> torch.device:
    """Map ``"auto"`` to CUDA when present, else CPU; refuse CUDA when absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but torch sees no CUDA device; "
                           "use --device cpu (or auto)")
    return torch.device(name)


def busy_cores(window_s: float = 0.1, stat_path: str = "/proc/stat") -> float | None:
    """How many cores other work keeps busy now: the non-idle share of all CPU time over
    ``window_s`` seconds (from ``/proc/stat``), times the number of cores; None where
    there is no ``/proc/stat``. Sampled while this process sleeps, so it is the others'."""
    def sample():
        with open(stat_path) as f:
            fields = [float(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
        return sum(fields[:8]), idle

    try:
        total0, idle0 = sample()
        time.sleep(window_s)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return 0.0
    return (os.cpu_count() or 1) * (1.0 - (idle1 - idle0) / (total1 - total0))


def default_threads(busy: float | None = None, cores: int | None = None) -> tuple[int, str]:
    """The CPU threads of a run that does not set ``run.threads``, and why.

    torch's default is one thread per core, and on a shared machine that collapses:
    OpenMP threads spin-wait for each other at every parallel region, so one busy core
    stalls all of them (measured on this project's 2-core machine: 2 threads ran 2.9x
    slower with one core busy, 1 thread lost 3%). So: the cores this process may use,
    less those other work keeps busy at the start (:func:`busy_cores`, rounded), at
    least 1 and at most torch's default. Load that arrives later is not seen; set
    ``run.threads`` (or ``--threads``) to choose."""
    usable = cores or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                       else os.cpu_count() or 1)
    busy = busy_cores() if busy is None else busy
    if busy is None:
        return min(torch.get_num_threads(), usable), f"{usable} core(s)"
    taken = min(usable - 1, int(busy + 0.5))
    n = max(1, min(torch.get_num_threads(), usable - taken))
    return n, f"{usable} core(s), {busy:.1f} busy at the start"
