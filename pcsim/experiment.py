"""Orchestration: build, train, evaluate, write the run folder. Owns no math."""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import yaml

from pcsim import __version__
from pcsim.config import ExperimentConfig, config_from_dict
from pcsim.data import Dataset, iterate_batches, load_dataset, resolve_data_root
from pcsim.engines.base import get_engine_class
from pcsim.engines.torch.engine import resolve_device
from pcsim.engines.torch.optim import make_optimizer, make_scheduler
from pcsim.energy import available_profiles
from pcsim.energy.report import build_energy_report
from pcsim.model import Network, bp_train_cost, feedforward_cost, pc_train_cost
from pcsim.monitors import OpCounter
from pcsim.monitors.hdf5 import TraceWriter
from pcsim.parallel import from_env
from pcsim.runio import atomic_path, write_json, write_text

__all__ = ["RunResult", "run_experiment", "evaluate", "build_trainer", "load_run",
           "machine_info"]

CHECKPOINT = "checkpoint.pt"
OP_COUNTS = "op_counts.json"
ENERGY_REPORT = "energy_report.json"
METRICS = "metrics.json"
CONFIG = "config.yaml"
RUN_INFO = "run.json"


@dataclass
class RunResult:
    """What a run leaves: its folder and one metrics record per epoch."""

    run_dir: Path
    metrics: list = field(default_factory=list)

    @property
    def final_accuracy(self) -> float:
        return self.metrics[-1].get("test_accuracy", float("nan")) if self.metrics else float("nan")


def machine_info(device: torch.device) -> dict:
    """Describe where a run executes (for run.json and results tables)."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def build_trainer(config: ExperimentConfig, network: Network, device: torch.device):
    """Return the PC engine (``learning.rule: pc``) or the BP baseline (``bp``)."""
    if config.learning.rule == "bp":
        from pcsim.engines.torch.backprop import BackpropTrainer
        return BackpropTrainer.from_config(config, network, device)
    return get_engine_class(config.run.backend).from_config(config, network, device)


def _train_cost(config: ExperimentConfig, network: Network):
    if config.learning.rule == "bp":
        return bp_train_cost(network)
    return pc_train_cost(network, config.dynamics.steps, config.dynamics.tau_w)


def batch_pair(config: ExperimentConfig, data: Dataset, images, labels, dtype):
    """Return ``(x0, target)`` for a batch: the image and the one-hot label
    (classification), the image twice (a BP autoencoder), or no ``x_0`` and the image
    (generative PC: the latent ``x_0`` is inferred)."""
    if config.data.target == "label":
        return images, data.one_hot(labels, dtype)
    return (None if config.network.mode == "generative" else images), images


@torch.no_grad()
def evaluate(trainer, data: Dataset, batch_size: int = 1000, recorder=None,
             target: str = "label") -> dict:
    """Test-set metrics of the trained network.

    ``target="label"``: the feedforward read-out's accuracy and mean output energy.
    ``target="image"``: the reconstruction's mean squared error per pixel (``test_mse``)
    and its energy ``0.5 prec_L ||x - x_hat||^2`` per sample; a PC decoder encodes by
    inference and decodes feedforward from the inferred latent.

    With a ``recorder``, the engine counts the ops of the read-out (in event mode: the
    events of the sigma-delta feedforward pass)."""
    correct, energy, sq, n = 0, 0.0, 0.0, data.test_x.shape[0]
    top = trainer.network.layers[-1]
    trainer.recorder = recorder
    if recorder is not None:
        recorder.add_samples(n)
    for idx in iterate_batches(n, batch_size, shuffle=False):
        x = data.test_x[idx]
        if target == "image":
            y, ref = trainer.reconstruct(x), x
        else:
            y, ref = trainer.predict(x), data.one_hot(data.test_y[idx], x.dtype)
            correct += int((y.argmax(1) == data.test_y[idx]).sum())
        err = ((ref - y) ** 2).sum(1)
        energy += float((0.5 * top.prec * err).sum())
        sq += float(err.sum())
    trainer.recorder = None
    if target == "image":
        return {"test_mse": sq / (n * top.size), "test_energy": energy / n}
    return {"test_accuracy": correct / n, "test_energy": energy / n}


def describe(record: dict) -> str:
    """One line for a metrics record: accuracy, or reconstruction MSE."""
    if "test_accuracy" in record:
        return f"test accuracy {100 * record['test_accuracy']:.2f}%"
    return f"test reconstruction MSE {record['test_mse']:.5f}"


def traced_populations(config: ExperimentConfig, network: Network) -> dict:
    """Population name -> size for the populations ``config.traces`` selects."""
    chosen = config.traces.populations
    layers = config.traces.layers
    out = {}
    for kind in ("value", "error"):
        for l, size in enumerate(network.sizes):
            name = f"{kind}_l{l}"
            if kind == "error" and l == 0:
                continue
            if (kind in chosen or name in chosen) and (layers is None or l in layers):
                out[name] = size
    if not out:
        raise ValueError(f"traces: populations {chosen} and layers {layers} select nothing")
    return out


@torch.no_grad()
def record_traces(engine, data: Dataset, config: ExperimentConfig, path: Path, epoch: int,
                  append: bool = False) -> Path:
    """Run the chosen samples through inference and stream their traces to ``path``.

    Each sample: input and label clamped, feedforward start, ``T`` Euler steps, the
    weights of ``epoch`` (no learning). Values, errors, per-layer energy at every
    ``traces.every``-th step, and every event sent (event mode), batch by batch.
    """
    import numpy as np

    tc = config.traces
    xs, ys = (data.test_x, data.test_y) if tc.split == "test" else (data.train_x, data.train_y)
    n_avail = xs.shape[0]
    indices = list(range(tc.samples)) if isinstance(tc.samples, int) else list(tc.samples)
    bad = [i for i in indices if i >= n_avail]
    if bad or len(indices) > n_avail:
        raise ValueError(f"traces.samples: indices {bad[:5] or len(indices)} are out of range for "
                         f"the {tc.split} split of {n_avail} samples")
    pops = traced_populations(config, engine.network)
    event_mode = getattr(engine, "events", None) is not None
    spike_pops = ([f"value_l{l}" for l in range(engine.L)] +
                  [f"error_l{l}" for l in range(1, engine.L + 1)]) if event_mode else []
    spike_pops = [p for p in spike_pops if p in pops]
    T, every = engine.n_steps, tc.every
    attrs = {"config": yaml.safe_dump(config.model_dump(), sort_keys=False),
             "pcsim_version": __version__, "split": tc.split,
             "mode": "event" if event_mode else "dense"}
    writer = TraceWriter(path, pops, dt=engine.dt, every=every, n_steps=T,
                         n_layers=engine.L + 1, spike_populations=spike_pops, attrs=attrs,
                         append=append)
    with writer:
        for start in range(0, len(indices), tc.batch_size):
            chunk = indices[start:start + tc.batch_size]
            idx = torch.tensor(chunk, device=xs.device)
            labels = ys[idx]
            x0, target = batch_pair(config, data, xs[idx], labels, engine.dtype)
            B = len(chunk)
            frames = {p: np.empty((B, writer.n_frames, n), np.float32) for p, n in pops.items()}
            energy = np.empty((B, writer.n_frames, engine.L + 1))
            events = {p: [] for p in spike_pops}

            def sink(population, target_name, step, mask, payload):
                if population in events:
                    b, node = mask.nonzero(as_tuple=True)
                    channel = 1 if target_name.startswith("eps") else 0
                    events[population].append((b.cpu().numpy(), np.full(len(b), step),
                                               node.cpu().numpy(), payload[mask].cpu().numpy(),
                                               np.full(len(b), channel)))

            def capture(s, frame):
                for p in pops:
                    kind, l = p.split("_l")
                    state = s.x[int(l)] if kind == "value" else s.eps[int(l)]
                    frames[p][:, frame] = state.float().cpu().numpy()
                energy[:, frame] = torch.stack(engine.layer_energies(s), 1).cpu().numpy()

            if engine.name == "brian2":  # brian2 records the run itself
                engine.engine.params = engine._numpy_params()
                traj = engine.engine.run(x0.cpu().numpy(), target.cpu().numpy(), record=True)
                for frame in range(writer.n_frames):
                    k = frame * every
                    for p in pops:
                        kind, l = p.split("_l")
                        frames[p][:, frame] = (traj.x if kind == "value" else traj.eps)[int(l)][k]
                    energy[:, frame] = np.stack(engine.layer_energies(
                        [x[k] for x in traj.x]), 1)
            else:
                engine.event_sink = sink if spike_pops else None
                try:
                    s = engine.init_state(x0, target, phase="train")
                    capture(s, 0)
                    for k in range(1, T + 1):
                        engine.step(s)
                        if k % every == 0:
                            capture(s, k // every)
                finally:
                    engine.event_sink = None
            merged = {p: tuple(np.concatenate([e[i] for e in ev]) if ev else np.zeros(0)
                               for i in range(5)) for p, ev in events.items()}
            writer.add_trials(np.array(chunk), labels.cpu().numpy(), epoch, frames, energy, merged)
    return path


def _new_counter(config: ExperimentConfig) -> OpCounter:
    counter = OpCounter()
    counter.mode = "event" if config.events.enabled else "dense"
    return counter


def write_energy_report(run_dir: Path, counts: dict, config: ExperimentConfig,
                        profiles_folder=None) -> dict:
    """Write op_counts.json, energy_report.json and energy_report.png for ``counts``."""
    from pcsim.plots import plot_energy_report
    write_json(run_dir / OP_COUNTS, {work: c.to_json() for work, c in counts.items()})
    names = config.hw_profiles or available_profiles(profiles_folder)
    steps_time = config.dynamics.steps * config.dynamics.dt if config.learning.rule == "pc" else 0.0
    report = build_energy_report(counts, names, profiles_folder, {"train": steps_time})
    write_json(run_dir / ENERGY_REPORT, report)
    plot_energy_report(report, run_dir / "energy_report.png")
    return report


def _save_checkpoint(path: Path, trainer, optimizer, scheduler, config, epoch: int,
                     progress: Optional[dict] = None, metrics: Optional[list] = None) -> None:
    state = trainer.state_dict()
    for tensor in state["W"] + state["b"]:
        if not torch.isfinite(tensor).all():
            raise FloatingPointError(f"non-finite weights after epoch {epoch}; the last good "
                                     f"checkpoint in {path.parent} is kept")
    payload = {"params": state, "optimizer": optimizer.state_dict() if optimizer else None,
               "scheduler": scheduler.state_dict() if scheduler else None,
               "config": config.model_dump(), "epoch": epoch,
               "progress": progress, "metrics": metrics,
               "pcsim_version": __version__}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _make_run_dir(config: ExperimentConfig, source: Optional[str], out: Optional[str]) -> Path:
    stem = Path(source).stem if source else "run"
    name = config.run.name or f"{stem}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(out or config.run.out) / name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"run folder {run_dir} exists and is not empty; choose another "
                              "run.name or --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


#: sections whose change makes a checkpoint meaningless for resuming
_RESUME_SECTIONS = ("network", "dynamics", "learning", "data", "events", "hw_profiles")


def _check_resumable(config: ExperimentConfig, saved: dict, path: Path) -> None:
    """Refuse to resume ``saved`` (a checkpoint's config) under a changed ``config``."""
    now = config.model_dump()
    changed = []
    for section in _RESUME_SECTIONS:
        a, b = now.get(section), saved.get(section)
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


def run_experiment(config: ExperimentConfig, *, source: Optional[str] = None,
                   data_root: Optional[str] = None, out: Optional[str] = None,
                   progress: Optional[bool] = None,
                   resume: Optional[str | Path] = None) -> RunResult:
    """Train and evaluate ``config``; write the run folder (SPEC section 5).

    Parameters
    ----------
    config : ExperimentConfig
    source : str, optional
        The YAML file it came from (names the run folder).
    data_root : str, optional
        Overrides ``data.root`` (the ``--data-root`` flag).
    out : str, optional
        Overrides ``run.out``.
    progress : bool, optional
        Overrides ``run.progress``.
    resume : path, optional
        A run folder to continue from its last checkpoint (epoch end or every
        ``run.checkpoint_every`` batches): weights, optimizer and schedule state, data
        order and position, partial sums and counts, metrics. Without a checkpoint there
        yet, the run starts from the beginning in that folder.

    Returns
    -------
    RunResult
    """
    threads_before = torch.get_num_threads()
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    try:
        return _run_experiment(config, source=source, data_root=data_root, out=out,
                               progress=progress, resume=resume)
    finally:
        torch.set_num_threads(threads_before)  # a library call leaves the process as it was


def _run_experiment(config, *, source, data_root, out, progress, resume) -> RunResult:
    from tqdm.auto import tqdm

    torch.manual_seed(config.learning.seed)
    device = resolve_device("cpu" if config.run.backend == "brian2" else config.run.device)
    par, device = from_env(device, config.run.dist_timeout)
    if par.active and config.run.backend == "brian2":
        raise ValueError("data-parallel runs use the torch backend (run.backend: torch)")
    dtype = getattr(torch, config.run.dtype)
    network = Network.from_config(config.network)
    if config.data.target == "image":
        if network.sizes[-1] != 784 or (network.mode != "generative" and network.sizes[0] != 784):
            raise ValueError(f"{source or 'config'}: network.layers: reconstructing "
                             f"{config.data.dataset} needs 784 top neurons (and 784 input "
                             f"neurons unless generative), got {network.sizes}")
    elif network.sizes[0] != 784 or network.sizes[-1] != 10:
        raise ValueError(f"{source or 'config'}: network.layers: {config.data.dataset} needs "
                         f"784 input and 10 output neurons, got {network.sizes}")
    root = resolve_data_root(config.data.root, data_root)
    data = load_dataset(config.data.dataset, root, download=config.data.download,
                        normalize=config.data.normalize, limit_train=config.data.limit_train,
                        limit_test=config.data.limit_test).to(device, dtype)
    trainer = build_trainer(config, network, device)
    optimizer = make_optimizer(config.learning, trainer.parameters())
    scheduler = make_scheduler(config.learning, optimizer)
    train_cost, test_cost = _train_cost(config, network), feedforward_cost(network)

    ckpt = None
    if resume is not None:
        run_dir = Path(resume)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"{run_dir}: no such run folder to resume")
        if (run_dir / CHECKPOINT).exists():
            try:
                ckpt = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint gets one message
                raise ValueError(f"{run_dir / CHECKPOINT}: not a readable pcsim checkpoint "
                                 f"({type(exc).__name__}: {exc})") from None
            _check_resumable(config, ckpt["config"], run_dir / CHECKPOINT)
            if ckpt.get("progress") is None:
                raise ValueError(f"{run_dir / CHECKPOINT}: written by a pcsim without resume "
                                 "information; start a new run")
            trainer.load_state_dict(ckpt["params"])
            if optimizer is not None and ckpt["optimizer"] is not None:
                optimizer.load_state_dict(ckpt["optimizer"])
            if scheduler is not None and ckpt["scheduler"] is not None:
                scheduler.load_state_dict(ckpt["scheduler"])
    else:
        run_dir = _make_run_dir(config, source, out) if par.is_main else None
        run_dir = Path(par.broadcast(str(run_dir) if run_dir else None))
    resolved = config.model_dump()
    resolved["data"]["root"] = str(root)
    if par.is_main:
        write_text(run_dir / CONFIG, yaml.safe_dump(resolved, sort_keys=False))
    now = _dt.datetime.now().isoformat(timespec="seconds")
    info = {"pcsim_version": __version__, "source": source, "started": now,
            "machine": machine_info(device)}
    if resume is not None and (run_dir / RUN_INFO).exists():
        import json
        info = json.loads((run_dir / RUN_INFO).read_text())
        info.setdefault("resumed", []).append(now)
    info["processes"] = par.world
    if par.is_main:
        write_json(run_dir / RUN_INFO, info)

    n_train = data.train_x.shape[0]
    batch_size = config.learning.batch_size
    n_batches = math.ceil(n_train / batch_size)
    last = n_train - (n_batches - 1) * batch_size
    if par.active and min(batch_size, last) < par.world:
        raise ValueError(f"learning.batch_size: {par.world} processes need at least "
                         f"{par.world} samples in every batch (the last has {last})")
    show = config.run.progress if progress is None else progress
    generator = torch.Generator().manual_seed(config.learning.seed)
    result = RunResult(run_dir)
    saved = ckpt["progress"] if ckpt is not None else {"epoch": 1, "batch": 0}
    if ckpt is not None:
        generator.set_state(ckpt["progress"]["gen_state"])
        result.metrics = list(ckpt["metrics"] or [])
    every = config.run.checkpoint_every
    if ckpt is None and par.is_main:  # the start is a checkpoint too: a run that dies at once resumes
        _save_checkpoint(run_dir / CHECKPOINT, trainer, optimizer, scheduler, config, 0,
                         metrics=[], progress={"epoch": 1, "batch": 0,
                                               "gen_state": generator.get_state()})
    bar = tqdm(total=config.learning.epochs * n_batches, disable=not show or not par.is_main,
               unit="batch",
               dynamic_ncols=True, desc=Path(source).stem if source else "run",
               initial=(saved["epoch"] - 1) * n_batches + saved["batch"])
    counts = {}
    try:
        for epoch in range(saved["epoch"], config.learning.epochs + 1):
            counting = (config.run.count_ops and epoch == config.learning.epochs
                        and getattr(trainer, "supports_counting", True))
            train_counter = _new_counter(config) if counting else None
            trainer.recorder = train_counter
            epoch_gen_state = generator.get_state()  # replays this epoch's data order
            mid = epoch == saved["epoch"] and saved["batch"] > 0
            skip = saved["batch"] if mid else 0
            e0_sum = torch.tensor(saved["e0"] if mid else 0.0, device=device, dtype=torch.float64)
            e1_sum = torch.tensor(saved["e1"] if mid else 0.0, device=device, dtype=torch.float64)
            steps_sum = saved.get("steps", 0) if mid else 0  # inference steps x samples
            time_before = saved["train_time"] if mid else 0.0
            if mid and train_counter is not None and saved.get("counter"):
                train_counter.load(saved["counter"])
            start = time.perf_counter()
            for k, idx in enumerate(iterate_batches(n_train, batch_size, generator)):
                if k < skip:
                    continue
                n_global, idx = len(idx), par.shard(idx)
                if par.active:
                    trainer.grad_reducer = (lambda grads, n=len(idx), m=n_global:
                                            par.reduce_grads(grads, n, m))
                idx = idx.to(device)
                x0, target = batch_pair(config, data, data.train_x[idx], data.train_y[idx], dtype)
                try:
                    out_b = trainer.train_batch(x0, target, optimizer)
                except FloatingPointError as exc:
                    raise FloatingPointError(
                        f"epoch {epoch}, batch {k}: {exc}; the run stopped and the last good "
                        f"checkpoint in {run_dir} is kept") from None
                if train_counter is not None:
                    train_counter.add_samples(len(idx))
                e0_sum += out_b["energy_initial"] * len(idx)
                e1_sum += out_b["energy_final"] * len(idx)
                steps_sum += out_b.get("steps", 0) * len(idx)
                bar.update(1)
                if k % 100 == 0:
                    e1 = float(out_b["energy_final"])
                    if not math.isfinite(e1):
                        raise FloatingPointError(
                            f"free energy is {e1} at epoch {epoch}, batch {k}: the run "
                            f"diverged (lower learning.lr or dynamics.dt); the last good "
                            f"checkpoint and metrics in {run_dir} are kept")
                    bar.set_postfix(epoch=epoch, E=f"{e1:.4g}")
                if every and (k + 1) % every == 0 and k + 1 < n_batches and par.active:
                    e0_all, e1_all = par.sum(e0_sum), par.sum(e1_sum)
                    counter_all = _merge_counters(par, train_counter)
                else:
                    e0_all, e1_all, counter_all = e0_sum, e1_sum, train_counter
                if every and (k + 1) % every == 0 and k + 1 < n_batches and par.is_main:
                    _save_checkpoint(run_dir / CHECKPOINT, trainer, optimizer, scheduler, config,
                                     epoch - 1, metrics=result.metrics, progress={
                                         "epoch": epoch, "batch": k + 1,
                                         "gen_state": epoch_gen_state, "e0": float(e0_all),
                                         "e1": float(e1_all), "steps": steps_sum,
                                         "train_time": time_before + time.perf_counter() - start,
                                         "counter": counter_all.state()
                                         if counter_all is not None else None})
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_time = time_before + time.perf_counter() - start
            e0_sum, e1_sum = par.sum(e0_sum), par.sum(e1_sum)
            if par.active and train_counter is not None:
                train_counter = _merge_counters(par, train_counter)
            lr = optimizer.param_groups[0]["lr"] if optimizer else 0.0
            if scheduler is not None:
                scheduler.step()
            start = time.perf_counter()
            trainer.recorder = None
            test_counter = _new_counter(config) if counting else None
            test = evaluate(trainer, data, recorder=test_counter, target=config.data.target)
            eval_time = time.perf_counter() - start
            record = {
                "epoch": epoch,
                "train_energy_initial": float(e0_sum) / n_train,
                "train_energy_final": float(e1_sum) / n_train,
                "inference_steps_mean": sum(par.gather(steps_sum)) / n_train,
                **test,
                "train_wall_time_s": train_time,
                "eval_wall_time_s": eval_time,
                "train_samples_per_s": n_train / train_time,
                "lr": lr,
                "dense_macs_per_train_sample": train_cost.macs,
                "dense_flops_per_train_sample": train_cost.flops,
                "dense_flops_per_test_sample": test_cost.flops,
            }
            if not all(math.isfinite(v) for v in record.values() if isinstance(v, float)):
                raise FloatingPointError(f"non-finite metrics at epoch {epoch}: {record}; the "
                                         f"last good checkpoint in {run_dir} is kept")
            if counting:
                counts = {"train": train_counter.result(), "test": test_counter.result()}
                record["ops_per_train_sample"] = counts["train"].summary()
                record["ops_per_test_sample"] = counts["test"].summary()
            result.metrics.append(record)
            if par.is_main:
                _save_checkpoint(run_dir / CHECKPOINT, trainer, optimizer, scheduler, config,
                                 epoch, metrics=result.metrics,
                                 progress={"epoch": epoch + 1, "batch": 0,
                                           "gen_state": generator.get_state()})
                write_json(run_dir / METRICS, result.metrics)
                from pcsim.plots import plot_metrics, plot_reconstructions
                plot_metrics(result.metrics, run_dir, title=Path(source).stem if source else "")
                if config.data.target == "image":
                    shown = data.test_x[:10]
                    plot_reconstructions(shown, trainer.reconstruct(shown),
                                         run_dir / "reconstructions.png")
            tc = config.traces
            if par.is_main and tc.enabled and epoch in (tc.epochs or [config.learning.epochs]):
                trace_path = run_dir / tc.file
                record_traces(trainer, data, config, trace_path, epoch,
                              append=trace_path.exists())
            bar.write(f"epoch {epoch}: {describe(test)}, "
                      f"E {record['train_energy_final']:.4g}, {train_time:.1f} s")
    finally:
        bar.close()
        par.close()
    if counts and par.is_main:
        write_energy_report(run_dir, counts, config)
    info["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    if par.is_main:
        write_json(run_dir / RUN_INFO, info)
    return result


def _merge_counters(par, counter):
    """Sum every rank's counts (SPEC 4 counts are extensive)."""
    if counter is None:
        return None
    merged = _new_counter_like(counter)
    for state in par.gather(counter.state()):
        other = OpCounter()
        other.load(state)
        merged.n_samples += other.n_samples
        for key, value in other._counts.items():
            merged._counts[key] += value
    return merged


def _new_counter_like(counter):
    out = OpCounter()
    out.mode = counter.mode
    return out


def load_run(run_dir: str | Path, device: Optional[str] = None):
    """Load a run folder's config and checkpoint; return ``(config, trainer, checkpoint)``."""
    run_dir = Path(run_dir)
    ckpt_path = run_dir / CHECKPOINT if run_dir.is_dir() else run_dir
    if not ckpt_path.exists():
        raise FileNotFoundError(f"{ckpt_path}: no checkpoint (expected a run folder written "
                                "by `pcsim run`, or its checkpoint.pt)")
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated or foreign files fail in many ways
        raise ValueError(f"{ckpt_path}: not a readable pcsim checkpoint ({type(exc).__name__}: "
                         f"{str(exc)[:200]})") from None
    missing = [k for k in ("config", "params", "epoch") if not isinstance(checkpoint, dict)
               or k not in checkpoint]
    if missing:
        raise ValueError(f"{ckpt_path}: not a pcsim checkpoint (missing {missing})")
    config = config_from_dict(checkpoint["config"], str(ckpt_path))
    if device:
        config = config.model_copy(update={"run": config.run.model_copy(update={"device": device})})
    network = Network.from_config(config.network)
    trainer = build_trainer(config, network, resolve_device(config.run.device))
    trainer.load_state_dict(checkpoint["params"])
    return config, trainer, checkpoint
