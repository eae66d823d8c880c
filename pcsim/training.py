"""Building a trainer from a config and running the training epochs (sharded over
data-parallel processes, guarded, checkpointed, counted). Talks to a trainer only
through :class:`pcsim.engines.base.Trainer`; what a trainer can do comes from
:func:`pcsim.engines.base.capabilities`."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from pcsim.augment import augment_train_batch
from pcsim.data import batch_pair, iterate_batches
from pcsim.engines.base import TRAINERS, capabilities, refusals, trainer_class
from pcsim.monitors import OpCounter
from pcsim.runfolder import ResumeCursor

__all__ = ["build_trainer", "check_trainer", "check_memory", "run_device_name", "counting_enabled",
           "new_counter", "merge_counters", "EpochTotals", "TrainLoop"]

def check_trainer(config, data_parallel: bool = False) -> None:
    """Raise ValueError if no registered trainer can run what ``config`` asks."""
    backend, rule = config.run.backend, config.learning.rule
    if (backend, rule) not in TRAINERS:
        rules = sorted({r for b, r in TRAINERS if b == backend})
        backends = sorted({b for b, r in TRAINERS if r == rule})
        raise ValueError(f"run.backend {backend!r} trains with learning.rule "
                         f"{' or '.join(map(repr, rules)) or 'none'}; learning.rule {rule!r} "
                         f"runs on the {' or '.join(backends) or 'no'} backend")
    problems = refusals(backend, rule, events=config.events.enabled,
                        traces=config.traces.enabled,
                        generative=config.network.mode == "generative",
                        device=config.run.device, dtype=config.run.dtype,
                        plastic=math.isfinite(config.dynamics.tau_w),
                        batch_size=config.learning.batch_size, data_parallel=data_parallel,
                        projections=[layer.projection.kind for layer in config.network.layers[1:]],
                        learned_precision=any(layer.precision is not None
                                              for layer in config.network.layers),
                        continuous_precision=any(  # its own tau_prec, or tau_w's
                            layer.precision is not None and (
                                layer.precision.tau_prec is not None
                                or math.isfinite(config.dynamics.tau_w))
                            for layer in config.network.layers))
    if problems:
        raise ValueError("; ".join(problems))


#: Tensors of one layer a training batch holds at once (x, a, mu, f'(a), eps, g, the
#: new x and a temporary): the state-memory estimate's factor.
STATE_COPIES = 8


def _available_bytes(device) -> Optional[int]:
    """Free memory of ``device``: CUDA's free bytes, else the machine's physical memory
    (None where neither is known)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        import os
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config, network, device, source=None) -> None:
    """Refuse, before anything is allocated, a network whose parameters (with gradients
    and two optimizer moments) and one batch's activity cannot fit ``device``: name the
    largest layer and projection and the bytes."""
    size = torch.empty((), dtype=getattr(torch, config.run.dtype)).element_size()
    params = {f"projection W_{p.index}": sum(math.prod(s) for s in p.tensors.values())
              for p in network.projections}
    states = {f"layer {l.index} ({l.size:,} neurons)": l.size for l in network.layers}
    need = size * (4 * sum(params.values())
                   + STATE_COPIES * config.learning.batch_size * sum(states.values()))
    have = _available_bytes(device)
    if have is None or need <= have:
        return
    big_p = max(params, key=params.get) if params else "-"
    big_s = max(states, key=states.get)
    raise MemoryError(
        f"{source or 'config'}: network.layers: this network needs about {need / 2**30:,.1f} "
        f"GiB on {device} (parameters with gradients and optimizer state, and one batch of "
        f"{config.learning.batch_size} at {config.run.dtype}), more than the "
        f"{have / 2**30:,.1f} GiB there; the largest parts are {big_p} "
        f"({params.get(big_p, 0) * size / 2**30:,.1f} GiB of weights) and {big_s}: make "
        "the layers smaller, or lower learning.batch_size")


def run_device_name(config) -> str:
    """``run.device``, with ``auto`` narrowed to the CPU for a trainer without CUDA."""
    cap = capabilities(config.run.backend, config.learning.rule)
    if config.run.device == "auto" and "cuda" not in cap.devices:
        return "cpu"
    return config.run.device


def build_trainer(config, network, device):
    """Check the config against the registered trainer's capabilities, then build it."""
    check_trainer(config)
    cls = trainer_class(config.run.backend, config.learning.rule)
    return cls.from_config(config, network, device)


def counting_enabled(config) -> bool:
    """Whether the last epoch counts ops (``run.count_ops`` and a counting trainer)."""
    return config.run.count_ops and capabilities(config.run.backend,
                                                 config.learning.rule).counting


def new_counter(config) -> OpCounter:
    counter = OpCounter()
    counter.mode = "event" if config.events.enabled else "dense"
    return counter


def merge_counters(par, counter: Optional[OpCounter]) -> Optional[OpCounter]:
    """Sum every rank's counts (SPEC 4 counts are extensive over samples); the learning
    step's per-step counts are the replicas' one step, taken once."""
    if counter is None or not par.active:
        return counter
    merged = OpCounter()
    merged.mode = counter.mode
    for rank, state in enumerate(par.gather(counter.state())):
        other = OpCounter()
        other.load(state)
        merged.merge(other, replica=rank > 0)
    return merged


@dataclass
class EpochTotals:
    """One epoch's sums over every sample and process."""

    e0: float
    e1: float
    steps: int
    train_time: float
    counter: Optional[OpCounter]


@dataclass
class TrainLoop:
    """Everything one training epoch needs; :meth:`epoch` runs one.

    ``save`` is called as ``save(epoch_done, cursor)`` at every ``run.checkpoint_every``
    batches (main process only); ``bar`` is a tqdm-like progress bar.
    """

    config: Any
    trainer: Any
    optimizer: Any
    data: Any
    par: Any
    device: torch.device
    dtype: Any
    run_dir: Path
    bar: Any
    save: Callable

    @property
    def n_batches(self) -> int:
        return math.ceil(self.data.train_x.shape[0] / self.config.learning.batch_size)

    def _batch(self, epoch: int, k: int, idx) -> tuple:
        n_global, idx = len(idx), self.par.shard(idx)
        if self.par.active:
            self.trainer.grad_reducer = (lambda grads, n=len(idx), m=n_global:
                                         self.par.reduce_grads(grads, n, m))
        idx = idx.to(self.device)
        images = augment_train_batch(self.config, self.data, self.data.train_x[idx], epoch, k,
                                     n_global, self.par.shard)  # identity unless data.augment
        x0, target = batch_pair(self.config, self.data, images, self.data.train_y[idx],
                                self.dtype)
        try:
            out = self.trainer.train_batch(x0, target, self.optimizer)
        except FloatingPointError as exc:
            raise FloatingPointError(
                f"epoch {epoch}, batch {k}: {exc}; the run stopped and the last good "
                f"checkpoint in {self.run_dir} is kept") from None
        return out, len(idx)

    def _guard(self, epoch: int, k: int, out) -> None:
        e1 = float(out.energy_final)
        if not math.isfinite(e1):
            raise FloatingPointError(
                f"free energy is {e1} at epoch {epoch}, batch {k}: the run diverged (lower "
                f"learning.lr or dynamics.dt); the last good checkpoint and metrics in "
                f"{self.run_dir} are kept")
        self.bar.set_postfix(epoch=epoch, E=f"{e1:.4g}")

    def epoch(self, epoch: int, generator: torch.Generator, cursor: ResumeCursor,
              counter: Optional[OpCounter]) -> EpochTotals:
        """Train ``epoch`` from ``cursor`` (its batch, partial sums) on; return the sums."""
        config, par = self.config, self.par
        self.trainer.recorder = counter
        epoch_gen_state = generator.get_state()  # replays this epoch's data order
        mid = cursor.epoch == epoch and cursor.mid_epoch
        c = cursor if mid else ResumeCursor(epoch)
        e0 = torch.tensor(c.e0, device=self.device, dtype=torch.float64)
        e1 = torch.tensor(c.e1, device=self.device, dtype=torch.float64)
        steps = c.steps  # inference steps x samples
        if mid and counter is not None and c.counter:
            counter.load(c.counter)
        every, n_batches = config.run.checkpoint_every, self.n_batches
        start = time.perf_counter()
        for k, idx in enumerate(iterate_batches(self.data.train_x.shape[0],
                                                config.learning.batch_size, generator)):
            if k < c.batch:
                continue
            out, n = self._batch(epoch, k, idx)
            if counter is not None:
                counter.add_samples(n)
            e0 += out.energy_initial * n
            e1 += out.energy_final * n
            steps += out.steps * n
            self.bar.update(1)
            if k % 100 == 0:
                self._guard(epoch, k, out)
            if every and (k + 1) % every == 0 and k + 1 < n_batches:
                e0_all, e1_all = par.sum(e0), par.sum(e1)
                counter_all = merge_counters(par, counter)
                if par.is_main:
                    self.save(epoch - 1, ResumeCursor(
                        epoch, k + 1, epoch_gen_state, float(e0_all), float(e1_all), steps,
                        c.train_time + time.perf_counter() - start,
                        counter_all.state() if counter_all is not None else None))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        train_time = c.train_time + time.perf_counter() - start
        self.trainer.recorder = None
        return EpochTotals(float(par.sum(e0)), float(par.sum(e1)), sum(par.gather(steps)),
                           train_time, merge_counters(par, counter))
