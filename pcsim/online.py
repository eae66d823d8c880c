"""Online mode: a stream of samples, one at a time, each relaxed until it converges -- as
a neuromorphic chip would run the network.

For each sample of the stream (batch 1, in order): the network first predicts it (the
feedforward read-out, before the label is known: a prequential accuracy), then relaxes
with the label clamped (the training phase; generative: the image clamped, the latent
inferred) until a step lowers the free energy by less than ``stop_tol`` of its value or
``max_steps`` are done -- the steps taken are the sample's *latency* -- and, with
``learn``, takes one learning step. Every op is counted; in event mode the sigma-delta
state may carry over from one sample to the next (``events.carry``), so a sample sends
only what changed.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from pcsim.data import load_dataset, resolve_data_root
from pcsim.engines.torch.engine import TorchEngine
from pcsim.experiment import load_run
from pcsim.monitors import OpCounter
from pcsim.runio import write_json

__all__ = ["OnlineConfig", "stream", "run_online", "describe"]


@dataclass(frozen=True)
class OnlineConfig:
    """What an online stream runs: ``samples`` from the start of ``split``, relaxed to
    ``stop_tol`` within ``max_steps``; ``learn``: one learning step per sample at ``lr``
    (SGD)."""

    samples: int = 1000
    split: str = "test"
    stop_tol: float = 1e-4
    max_steps: int = 200
    learn: bool = False
    lr: float = 1e-3

    def check(self, n_available: int) -> None:
        if self.samples < 1:
            raise ValueError(f"online samples = {self.samples}: expected at least 1")
        if self.samples > n_available:
            raise ValueError(f"online samples = {self.samples}: the {self.split} split has "
                             f"only {n_available}")
        if not (self.stop_tol > 0 and math.isfinite(self.stop_tol)):
            raise ValueError(f"online stop_tol = {self.stop_tol}: expected a number > 0")
        if self.max_steps < 1:
            raise ValueError(f"online max_steps = {self.max_steps}: expected at least 1")


def _percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@torch.no_grad()
def stream(trainer, data, config, online: OnlineConfig) -> dict:
    """Run the stream on a torch PC ``trainer``; return its metrics (JSON-ready)."""
    xs, ys = (data.test_x, data.test_y) if online.split == "test" else (data.train_x,
                                                                        data.train_y)
    online.check(xs.shape[0])
    generative = config.network.mode == "generative"
    optimizer = torch.optim.SGD(trainer.parameters(), lr=online.lr) if online.learn else None
    counter = OpCounter()
    counter.mode = "event" if trainer.events is not None else "dense"
    latency, wall, correct, sq = [], [], 0, 0.0
    trainer.recorder = counter
    try:
        for i in range(online.samples):
            x = xs[i:i + 1]
            start = time.perf_counter()
            if generative:
                s = trainer.init_state(None, x, phase="train")
            else:
                correct += int(trainer.predict(x).argmax(1).item() == int(ys[i]))
                s = trainer.init_state(x, data.one_hot(ys[i:i + 1], trainer.dtype))
            trainer.infer(s, n_steps=online.max_steps, stop_tol=online.stop_tol)
            if not bool(torch.isfinite(trainer.energy(s)).all()):
                raise FloatingPointError(f"online sample {i}: the free energy is not finite "
                                         "(lower dynamics.dt or the online lr)")
            if generative:
                sq += float(((trainer.predict(s.x[0]).reshape(1, -1) - x) ** 2).mean())
            if optimizer is not None:
                trainer.learn(s, optimizer)
            wall.append(time.perf_counter() - start)
            latency.append(s.step)
            counter.add_samples(1)
    finally:
        trainer.recorder = None
    counts = counter.result()
    n = online.samples
    out = {"online_samples": n, "online_split": online.split, "online_learn": online.learn,
           "online_stop_tol": online.stop_tol, "online_max_steps": online.max_steps,
           "online_latency_steps_mean": statistics.fmean(latency),
           "online_latency_steps_p50": _percentile(latency, 0.5),
           "online_latency_steps_p95": _percentile(latency, 0.95),
           "online_latency_steps_max": max(latency),
           "online_converged_share": sum(k < online.max_steps for k in latency) / n,
           "online_ms_per_sample": 1e3 * statistics.fmean(wall),
           "online_execution": counts.mode,
           "online_ops_per_sample": counts.summary()}
    if generative:
        out["online_mse"] = sq / n
    else:
        out["online_accuracy"] = correct / n
    return out


def describe(result: dict) -> str:
    """One line: accuracy (or MSE), latency and synaptic ops per sample."""
    ops = result["online_ops_per_sample"]
    syn = sum(v for phase in ops.values() for k, v in phase.items()
              if k in ("syn_ops_mac", "syn_ops_ac"))
    head = (f"prequential accuracy {100 * result['online_accuracy']:.2f}%"
            if "online_accuracy" in result else f"reconstruction MSE {result['online_mse']:.4g}")
    return (f"{result['online_samples']} samples one at a time ({result['online_execution']} "
            f"execution): {head}; latency {result['online_latency_steps_mean']:.1f} steps "
            f"(median {result['online_latency_steps_p50']}, 95% {result['online_latency_steps_p95']}, "
            f"converged {100 * result['online_converged_share']:.1f}%); "
            f"{syn:,.0f} synaptic ops and {result['online_ms_per_sample']:.2f} ms per sample")


def run_online(run_dir, online: OnlineConfig, theta: Optional[float] = None,
               execution: Optional[str] = None, carry: bool = False,
               device: Optional[str] = None, data_root: Optional[str] = None):
    """Stream a run folder's trained network (``pcsim online``); ``theta``,
    ``execution`` or ``carry`` turn event mode on with those settings. Returns the
    metrics and the ``online.json`` written into the run folder (None for a bare
    checkpoint file)."""
    config, trainer, checkpoint = load_run(run_dir, device)
    if not isinstance(trainer, TorchEngine):
        raise ValueError(f"{run_dir}: online mode needs a PC run on the torch backend "
                         "(learning.rule: pc, run.backend: torch)")
    events = config.events
    update = {k: v for k, v in (("theta", theta), ("execution", execution)) if v is not None}
    if carry:
        update["carry"] = True
    if update:  # validated as the events section of a file would be
        events = type(events).model_validate({**events.model_dump(), "enabled": True, **update})
        trainer = TorchEngine(trainer.network, config.dynamics, device=trainer.device,
                              dtype=trainer.dtype, params=trainer.params, events=events)
    root = resolve_data_root(config.data.root, data_root)
    data = load_dataset(config.data.dataset, root, download=config.data.download,
                        normalize=config.data.normalize).to(trainer.device, trainer.dtype)
    result = stream(trainer, data, config, online)
    result["events"] = events.model_dump() if events.enabled else None
    result["epoch"] = checkpoint["epoch"]
    out = Path(run_dir) / "online.json" if Path(run_dir).is_dir() else None
    if out is not None:
        write_json(out, result)
    return result, out
