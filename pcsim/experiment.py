"""Orchestration: build, train, evaluate, write the run folder. Owns no math and talks
to a trainer only through :class:`pcsim.engines.base.Trainer`."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from pcsim import __version__
from pcsim.config import ExperimentConfig, config_from_dict
from pcsim.data import batch_pair, dataset_info, load_dataset, resolve_data_root
from pcsim.engines.torch.device import default_threads, resolve_device
from pcsim.engines.torch.optim import make_optimizer, make_scheduler
from pcsim.engines.torch.precisions import precision_metrics
from pcsim.evaluation import describe, evaluate
from pcsim.model import Network, bp_train_cost, feedforward_cost, pc_train_cost
from pcsim.monitors import OpCounts
from pcsim.monitors.traces import record_traces, traced_populations, traces_hold_epoch
from pcsim.parallel import from_env
from pcsim.runfolder import (CHECKPOINT, CONFIG, ENERGY_REPORT, METRICS, OP_COUNTS, RUN_INFO,
                             ResumeCursor, check_checkpoint, check_optimizer_state, check_out,
                             check_resumable, load_resume_checkpoint, lock_run_dir,
                             machine_info, make_run_dir, now, read_checkpoint,
                             remove_stale_temporaries, restoring, save_checkpoint,
                             start_run_info, time_per_sample, write_config, write_energy_report,
                             write_run_info)
from pcsim.runio import write_json
from pcsim.training import (TrainLoop, build_trainer, check_memory, check_trainer,
                            counting_enabled,
                            new_counter, run_device_name)

__all__ = ["RunResult", "run_experiment", "evaluate", "describe", "build_trainer", "load_run",
           "machine_info", "record_traces", "time_per_sample", "traced_populations", "batch_pair",
           "write_energy_report", "CHECKPOINT", "CONFIG", "ENERGY_REPORT", "METRICS",
           "OP_COUNTS", "RUN_INFO"]

_check_resumable = check_resumable  # the name of earlier releases


@dataclass
class RunResult:
    """What a run leaves: its folder and one metrics record per epoch."""

    run_dir: Path
    metrics: list = field(default_factory=list)

    @property
    def final_accuracy(self) -> float:
        return self.metrics[-1].get("test_accuracy", float("nan")) if self.metrics else float("nan")


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
    threads_why = "run.threads"
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    elif resolve_device(run_device_name(config)).type == "cpu":
        n, threads_why = default_threads()
        threads_why += "; run.threads unset"
        torch.set_num_threads(n)
    try:
        return _Run(config, source, data_root, out, progress, resume, threads_why).run()
    finally:
        torch.set_num_threads(threads_before)  # a library call leaves the process as it was


def _check_shapes(config: ExperimentConfig, network: Network, source) -> None:
    """The network's input and top layers must fit the data set's image and classes."""
    info = dataset_info(config.data.dataset)
    n_px, n_cls, sizes = info.n_features, info.n_classes, network.sizes
    if config.data.target == "image":
        if sizes[-1] != n_px or (network.mode != "generative" and sizes[0] != n_px):
            raise ValueError(f"{source or 'config'}: network.layers: reconstructing "
                             f"{config.data.dataset} needs {n_px} top neurons (and {n_px} "
                             f"input neurons unless generative), got {sizes}")
    elif sizes[0] != n_px or sizes[-1] != n_cls:
        raise ValueError(f"{source or 'config'}: network.layers: {config.data.dataset} needs "
                         f"{n_px} input and {n_cls} output neurons, got {sizes}")


def _train_cost(config: ExperimentConfig, network: Network):
    if config.learning.rule == "bp":
        return bp_train_cost(network)
    return pc_train_cost(network, config.dynamics.steps, config.dynamics.tau_w)


class _Run:
    """One call of :func:`run_experiment`: set up, loop over epochs, finish."""

    def __init__(self, config, source, data_root, out, progress, resume,
                 threads_why="run.threads"):
        self.source, self.out, self.resume = source, out, resume
        self.threads_why = threads_why
        self.show = config.run.progress if progress is None else progress
        par, self.device = from_env(resolve_device(run_device_name(config)),
                                    config.run.dist_timeout)
        self.par = par
        check_trainer(config, data_parallel=par.active)
        if resume is None and par.is_main:
            check_out(config, out)
        self.dtype = getattr(torch, config.run.dtype)
        self.network = Network.from_config(config.network)
        _check_shapes(config, self.network, source)
        check_memory(config, self.network, self.device, source)
        root = resolve_data_root(config.data.root, data_root)
        # config.yaml, checkpoints and traces all carry the resolved data root
        self.config = config = config.model_copy(update={
            "data": config.data.model_copy(update={"root": str(root)})})
        self.data = load_dataset(config.data.dataset, root, download=config.data.download,
                                 normalize=config.data.normalize,
                                 limit_train=config.data.limit_train,
                                 limit_test=config.data.limit_test).to(self.device, self.dtype)
        self.trainer = build_trainer(config, self.network, self.device)
        self.optimizer = make_optimizer(config.learning, self.trainer.parameters())
        self.scheduler = make_scheduler(config.learning, self.optimizer)
        self.costs = _train_cost(config, self.network), feedforward_cost(self.network)
        self.generator = torch.Generator().manual_seed(config.learning.seed)
        self.result = None
        self.final_counts = None  # the counted epoch's op counts (JSON) and mean steps

    # ------------------------------------------------------------------ setup
    def _open_folder(self) -> ResumeCursor:
        """Create or reopen the run folder; restore a checkpoint; return the cursor."""
        par, ckpt = self.par, None
        if self.resume is not None:
            self.run_dir = Path(self.resume)
            ckpt = load_resume_checkpoint(self.run_dir, self.config)
            if par.is_main:
                self._lock = lock_run_dir(self.run_dir)
                remove_stale_temporaries(self.run_dir)
        else:
            run_dir = make_run_dir(self.config, self.source, self.out) if par.is_main else None
            self.run_dir = Path(par.broadcast(str(run_dir) if run_dir else None))
            if par.is_main:
                self._lock = lock_run_dir(self.run_dir)
        self.result = RunResult(self.run_dir)
        if par.is_main:
            write_config(self.run_dir, self.config)
        self.info = start_run_info(self.run_dir, self.source, self.device,
                                   resumed=self.resume is not None)
        self.info["processes"] = par.world
        if par.is_main:
            write_run_info(self.run_dir, self.info)
        if ckpt is None:
            cursor = ResumeCursor(1, 0, self.generator.get_state())
            if par.is_main:  # the start is a checkpoint too: a run that dies at once resumes
                self._save(0, cursor)
            return cursor
        path = self.run_dir / CHECKPOINT
        with restoring(path, "parameters"):
            self.trainer.load_state_dict(ckpt["params"])
        if self.optimizer is not None and ckpt.get("optimizer") is not None:
            with restoring(path, "optimizer state"):
                self.optimizer.load_state_dict(ckpt["optimizer"])
                check_optimizer_state(self.optimizer)
        cursor = ResumeCursor.from_dict(ckpt["progress"], path)
        saved_epochs = ckpt["config"]["learning"]["epochs"]
        if saved_epochs != self.config.learning.epochs:
            self._new_horizon(saved_epochs, cursor)
        elif self.scheduler is not None and ckpt.get("scheduler") is not None:
            with restoring(path, "learning-rate schedule"):
                self.scheduler.load_state_dict(ckpt["scheduler"])
        with restoring(path, "data order (progress.gen_state)"):
            self.generator.set_state(cursor.gen_state)
        self.result.metrics = list(ckpt.get("metrics") or [])
        self.final_counts = ckpt.get("final_counts")
        return cursor

    def _new_horizon(self, saved_epochs: int, cursor: ResumeCursor) -> None:
        """Resume under another ``learning.epochs`` (``pcsim resume RUN --epochs N``): at
        least the completed epochs; the run is no longer complete; a schedule is rebuilt
        for the new horizon and advanced past the completed epochs, which moves the
        learning rate of the epochs still to come (said on the console)."""
        done, epochs = cursor.epoch - 1, self.config.learning.epochs
        if epochs < max(done, 1):
            raise ValueError(f"{self.run_dir}: learning.epochs = {epochs}, but {done} epochs "
                             f"are already done; resume with --epochs {done} or more")
        self.info["completed"] = False
        if self.par.is_main:
            write_run_info(self.run_dir, self.info)
        say = f"learning.epochs {saved_epochs} -> {epochs}"
        if self.scheduler is not None:
            before = [g["lr"] for g in self.optimizer.param_groups]
            for group in self.optimizer.param_groups:
                group["lr"] = group.get("initial_lr", group["lr"])
            self.scheduler = make_scheduler(self.config.learning, self.optimizer)
            with warnings.catch_warnings():  # replaying the epochs done, not skipping a step
                warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
                for _ in range(done):
                    self.scheduler.step()
            after = self.optimizer.param_groups[0]["lr"]
            say += (f": the {self.config.learning.lr_schedule} schedule now ends at epoch "
                    f"{epochs}; epoch {cursor.epoch} learns at lr {after:.4g} "
                    f"(it was to use {before[0]:.4g})")
        if self.par.is_main:
            print(f"pcsim resume: {say}", flush=True)

    @property
    def title(self) -> str:
        """The run's name on its bar and plots: the config it was started from (a resumed
        run keeps it: its run.json says where it came from, not the folder's config.yaml)."""
        source = self.info.get("source") or self.source
        return Path(source).stem if source else ""

    def _check_batches(self) -> None:
        n_train, par = self.data.train_x.shape[0], self.par
        batch_size = self.config.learning.batch_size
        last = n_train - (math.ceil(n_train / batch_size) - 1) * batch_size
        if par.active and min(batch_size, last) < par.world:
            raise ValueError(f"learning.batch_size: {par.world} processes need at least "
                             f"{par.world} samples in every batch (the last has {last})")

    def _save(self, epoch: int, cursor: ResumeCursor) -> None:
        save_checkpoint(self.run_dir / CHECKPOINT, self.trainer, self.optimizer, self.scheduler,
                        self.config, epoch, cursor, metrics=self.result.metrics,
                        extra={"final_counts": self.final_counts})

    # ------------------------------------------------------------------ run
    def run(self) -> RunResult:
        self._check_batches()
        self._lock = None
        try:
            return self._run()
        finally:
            if self._lock is not None:  # the folder is free for a resume
                self._lock.close()

    def _run(self) -> RunResult:
        from tqdm.auto import tqdm

        cursor = self._open_folder()
        config, par = self.config, self.par
        if par.is_main:
            print(self._banner(cursor), flush=True)
        n_batches = math.ceil(self.data.train_x.shape[0] / config.learning.batch_size)
        bar = tqdm(total=config.learning.epochs * n_batches, disable=not self.show or not par.is_main,
                   unit="batch", dynamic_ncols=True,
                   desc=self.title or "run",
                   initial=(cursor.epoch - 1) * n_batches + cursor.batch)
        loop = TrainLoop(config, self.trainer, self.optimizer, self.data, par, self.device,
                         self.dtype, self.run_dir, bar, self._save)
        try:
            for epoch in range(cursor.epoch, config.learning.epochs + 1):
                self._epoch(loop, epoch, cursor)
        finally:
            bar.close()
            par.close()
        if par.is_main:
            self._complete()
        return self.result

    def _banner(self, cursor) -> str:
        """What the run is about to do, before its first batch: folder, device, threads,
        data, parameters, and what it writes."""
        config = self.config
        n_params = sum(t.numel() for t in self.trainer.parameters())
        start = ("starts" if cursor.epoch == 1 and cursor.batch == 0 else
                 f"resumes at epoch {cursor.epoch}, batch {cursor.batch}")
        writes = "metrics.json, checkpoint.pt, plots"
        if counting_enabled(config):
            writes += ", op_counts.json, energy_report.json (last epoch)"
        if config.traces.enabled:
            writes += f", {config.traces.file}"
        return (f"pcsim {__version__}: {self.run_dir} {start}\n"
                f"  device {self.device}, {torch.get_num_threads()} thread(s) "
                f"({self.threads_why})"
                f"{', torch.compile (the first batches compile)' if config.run.compile else ''}"
                f", {self.par.world} process(es)\n"
                f"  data {config.data.dataset} from {config.data.root}: "
                f"{self.data.train_x.shape[0]:,} train, {self.data.test_x.shape[0]:,} test\n"
                f"  {n_params:,} parameters, {config.learning.epochs} epochs of "
                f"{config.learning.batch_size}; writes {writes}")

    def _complete(self) -> None:
        """The run's explicit last step, redone by ``resume`` until ``run.json`` says
        ``completed``: metrics.json and the plots from the checkpoint's records, the last
        epoch's traces when they are missing, op counts and the energy report from the
        counts the last checkpoint holds, then run.json. A run killed anywhere after its
        last checkpoint is finished by ``pcsim resume``."""
        from pcsim.plots import plot_metrics
        config, run_dir = self.config, self.run_dir
        if not self.result.metrics:
            return
        write_json(run_dir / METRICS, self.result.metrics)
        plot_metrics(self.result.metrics, run_dir,
                     title=self.title)
        last = self.result.metrics[-1]["epoch"]
        tc = config.traces
        if tc.enabled and last in (tc.epochs or [config.learning.epochs]):
            path = run_dir / tc.file
            if not traces_hold_epoch(path, last):
                record_traces(self.trainer, self.data, config, path, last,
                              append=path.exists())
        if self.final_counts is not None:
            where = f"{run_dir / CHECKPOINT}: final_counts"
            counts = {work: OpCounts.from_json(c, f"{where}.{work}")
                      for work, c in self.final_counts["counts"].items()}
            write_energy_report(run_dir, counts, config,
                                inference_steps=self.final_counts["steps"])
        self.info["finished"] = now()
        self.info["completed"] = True
        write_run_info(run_dir, self.info)

    def _epoch(self, loop: TrainLoop, epoch: int, cursor: ResumeCursor):
        """Train, evaluate and record one epoch; return ``(counts, mean steps)`` when it
        counted ops, else None."""
        config = self.config
        counting = counting_enabled(config) and epoch == config.learning.epochs
        totals = loop.epoch(epoch, self.generator, cursor,
                            new_counter(config) if counting else None)
        lr = self.optimizer.param_groups[0]["lr"] if self.optimizer else 0.0
        if self.scheduler is not None:
            self.scheduler.step()
        start = time.perf_counter()
        test_counter = new_counter(config) if counting else None
        from tqdm.auto import tqdm

        n_test = self.data.test_x.shape[0]
        with tqdm(total=n_test, desc="test", unit="sample", leave=False, dynamic_ncols=True,
                  disable=not self.show or not self.par.is_main) as bar:
            test = evaluate(self.trainer, self.data, recorder=test_counter,
                            target=config.data.target, progress=bar.update)
        record = self._record(epoch, totals, test, lr, time.perf_counter() - start)
        counts = None
        if counting:  # kept in the epoch's checkpoint: the completion step prices them
            counts = {"train": totals.counter.result(), "test": test_counter.result()}
            record["ops_per_train_sample"] = counts["train"].summary()
            record["ops_per_test_sample"] = counts["test"].summary()
            self.final_counts = {"counts": {w: c.to_json() for w, c in counts.items()},
                                 "steps": record["inference_steps_mean"]}
        self.result.metrics.append(record)
        if self.par.is_main:
            self._write_epoch(epoch)
        if self.par.is_main:  # one line per epoch, not one per process
            loop.bar.write(f"epoch {epoch}: {describe(test)}, "
                           f"E {record['train_energy_final']:.4g}, {totals.train_time:.1f} s")
        return (counts, record["inference_steps_mean"]) if counting else None

    def _record(self, epoch, totals, test, lr, eval_time) -> dict:
        n_train = self.data.train_x.shape[0]
        train_cost, test_cost = self.costs
        record = {
            "epoch": epoch,
            "train_energy_initial": totals.e0 / n_train,
            "train_energy_final": totals.e1 / n_train,
            "inference_steps_mean": totals.steps / n_train,
            **test,
            "train_wall_time_s": totals.train_time,
            "eval_wall_time_s": eval_time,
            "train_samples_per_s": n_train / totals.train_time,
            "lr": lr,
            "dense_macs_per_train_sample": train_cost.macs,
            "dense_flops_per_train_sample": train_cost.flops,
            "dense_flops_per_test_sample": test_cost.flops,
            **precision_metrics(self.trainer.precisions),  # learned variances (SPEC 2.4)
        }
        if not all(math.isfinite(v) for v in record.values() if isinstance(v, float)):
            raise FloatingPointError(f"non-finite metrics at epoch {epoch}: {record}; the "
                                     f"last good checkpoint in {self.run_dir} is kept")
        return record

    def _write_epoch(self, epoch: int) -> None:
        """Main process: checkpoint, metrics, plots and traces after ``epoch``."""
        from pcsim.plots import plot_metrics, plot_reconstructions, plot_uncertainty
        config, run_dir = self.config, self.run_dir
        self._save(epoch, ResumeCursor(epoch + 1, 0, self.generator.get_state()))
        write_json(run_dir / METRICS, self.result.metrics)
        plot_metrics(self.result.metrics, run_dir,
                     title=self.title)
        if config.data.target == "image":
            shown = self.data.test_x[:10]
            plot_reconstructions(shown, self.trainer.reconstruct(shown),
                                 run_dir / "reconstructions.png",
                                 image_shape=self.data.image_shape)
            top = self.trainer.precisions[-1]
            if top is not None and top.variance().numel() > 1:  # per pixel or channel
                plot_uncertainty(top.per_neuron(top.variance()),
                                 run_dir / "uncertainty.png", image_shape=self.data.image_shape,
                                 mean_image=self.data.test_x[:1000].mean(0))
        tc = config.traces
        if tc.enabled and epoch in (tc.epochs or [config.learning.epochs]):
            trace_path = run_dir / tc.file
            record_traces(self.trainer, self.data, config, trace_path, epoch,
                          append=trace_path.exists())


def load_run(run_dir: str | Path, device: Optional[str] = None):
    """Load a run folder's config and checkpoint; return ``(config, trainer, checkpoint)``."""
    run_dir = Path(run_dir)
    ckpt_path = run_dir / CHECKPOINT if run_dir.is_dir() else run_dir
    if not ckpt_path.exists():
        raise FileNotFoundError(f"{ckpt_path}: no checkpoint (expected a run folder written "
                                "by `pcsim run`, or its checkpoint.pt)")
    checkpoint = read_checkpoint(ckpt_path)
    check_checkpoint(checkpoint, ckpt_path)
    config = config_from_dict(checkpoint["config"], str(ckpt_path))
    if device:
        config = config.model_copy(update={"run": config.run.model_copy(update={"device": device})})
    network = Network.from_config(config.network)
    trainer = build_trainer(config, network, resolve_device(run_device_name(config)))
    with restoring(ckpt_path, "parameters"):
        trainer.load_state_dict(checkpoint["params"])
    return config, trainer, checkpoint
