"""Shared measurement code for the external (JAX) reference runners, pcx_mlp.py and fabricpc_mlp.py.

Each runner keeps its library-specific parts (model, training and evaluation steps, config
description) and hands them to these helpers as callables:

* ``configure_threads(threads)``: XLA flags for ``--threads 1``; call it before jax is imported;
* ``train_epochs(...)``: the epoch loop (reshuffle, timed training, test accuracy after each epoch);
* ``make_evaluator(...)``: test accuracy over all test images in zero-padded batches;
* ``stage_indices(...)`` + ``throughput(...)`` / ``timed_windows(...)``: pre-staged batches,
  warmup, timed windows with wall-clock and process-CPU rates;
* ``build_result(...)`` (with ``environment(jax)``) and ``emit(result, json_path)``: the result JSON.

numpy and jax only (jax is passed in, never imported here, so the XLA flags can be set first).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from importlib.metadata import version as pkg_version
from pathlib import Path

import numpy as np


def add_measure_args(p):
    """The training / timing options both runners share (after their model options)."""
    p.add_argument("--T", type=int, default=5, help="inference steps per batch")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=0, help="train this many epochs on the full set and report test accuracy")
    p.add_argument("--measure-batches", type=int, default=200, help="batches per timed window")
    p.add_argument("--warmup-batches", type=int, default=5, help="untimed batches after the first (compiling) call")
    p.add_argument("--repeats", type=int, default=3, help="timed windows; samples_per_s is their median")


def add_run_args(p):
    """Seed, data, threads and output options both runners share (last in the option list)."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=None, help="folder holding FashionMNIST/raw (default: $PCSIM_DATA)")
    p.add_argument("--threads", type=int, default=None, help="1: single-threaded XLA flags; pin cores with taskset")
    p.add_argument("--json", default=None, help="write the result JSON here (it is printed as well)")


def configure_threads(threads):
    """``--threads 1``: single-threaded XLA (appended to XLA_FLAGS); CPU platform unless set."""
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def make_evaluator(eval_batch, x_te, y_te, batch_size):
    """Accuracy over all test images in batches of ``batch_size``; the last batch is zero-padded
    (label -1, never a hit). ``eval_batch(start, x, y)`` gets numpy slices, returns per-sample hits."""
    B = batch_size
    n_te = x_te.shape[0]
    n_pad = -n_te % B
    x_ev = np.concatenate([x_te, np.zeros((n_pad, x_te.shape[1]), x_te.dtype)])
    y_ev = np.concatenate([y_te, np.full((n_pad,), -1, y_te.dtype)])

    def evaluate():
        hits = [np.asarray(eval_batch(s, x_ev[s:s + B], y_ev[s:s + B])) for s in range(0, x_ev.shape[0], B)]
        return float(np.concatenate(hits)[:n_te].sum()) / n_te

    return evaluate


def train_epochs(train_batch, sync, evaluate, *, rng, order, n_train, n_batches, batch_size, epochs,
                 on_epoch=None):
    """Train ``epochs`` epochs, batch 0 of epoch 1 already done (the timed compiling call).

    ``order`` is the epoch-1 permutation; later epochs draw a new one from ``rng``.
    ``on_epoch(e)`` (optional) runs before each epoch's timing starts; ``train_batch(e, b, idx)``
    trains on the samples ``idx``; ``sync()`` waits for the device; ``evaluate()`` returns the
    test accuracy. Returns the result fields of the training run.
    """
    B = batch_size
    accs, train_wall, eval_wall, train_cpu = [], 0.0, 0.0, 0.0
    for e in range(epochs):
        if e > 0:
            order = rng.permutation(n_train)
        if on_epoch is not None:
            on_epoch(e)
        c0 = time.process_time()
        t0 = time.perf_counter()
        for b in range(1 if e == 0 else 0, n_batches):  # epoch 1, batch 0 was the compiling step
            train_batch(e, b, order[b * B:(b + 1) * B])
        sync()
        train_wall += time.perf_counter() - t0
        train_cpu += time.process_time() - c0
        t0 = time.perf_counter()
        accs.append(evaluate())
        eval_wall += time.perf_counter() - t0
        print(f"epoch {e + 1}/{epochs}: test accuracy {accs[-1]:.4f}", file=sys.stderr, flush=True)
    n_timed = (epochs * n_batches - 1) * B
    return dict(train_wall_s=train_wall, train_cpu_s=train_cpu, train_samples_per_s=n_timed / train_wall,
                eval_wall_s=eval_wall, test_accuracy=accs[-1], test_accuracy_best=max(accs),
                test_accuracy_per_epoch=accs)


def stage_indices(rng, n_train, n_batches, measure_batches, warmup_batches, batch_size):
    """Sample indices of the batches to pre-stage for the throughput run, shape (n_stage, batch_size)."""
    n_stage = min(n_batches, max(measure_batches, warmup_batches + 1))
    return rng.permutation(n_train)[: n_stage * batch_size].reshape(n_stage, batch_size)


def timed_windows(run_batch, n_batches, repeats, batch_size, sync):
    """``repeats`` windows of ``run_batch(i)`` for i < n_batches; samples per wall and per CPU second."""
    rates, cpu_rates = [], []
    for _ in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        for i in range(n_batches):
            run_batch(i)
        sync()
        rates.append(n_batches * batch_size / (time.perf_counter() - t0))
        cpu_rates.append(n_batches * batch_size / (time.process_time() - c0))
    return rates, cpu_rates


def throughput(step, staged, *, warmup_batches, measure_batches, repeats, batch_size, sync):
    """Warm up, then timed windows, cycling ``step(i)`` over the ``staged`` pre-staged batches."""
    n_stage = len(staged)
    for i in range(warmup_batches):
        step(i % n_stage)
    sync()
    return timed_windows(lambda i: step(i % n_stage), measure_batches, repeats, batch_size, sync)


def environment(jax) -> dict:
    """Versions, device, CPU, core affinity and XLA flags of this run."""
    return {
        "jax_version": jax.__version__,
        "jaxlib_version": pkg_version("jaxlib"),
        "device": str(jax.devices()[0]),
        "cpu": platform.processor() or platform.machine(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def build_result(library, version, config, compile_s, rates, cpu_rates, extra, jax) -> dict:
    result = {
        "library": library,
        "version": version,
        "config": config,
        "compile_s": compile_s,
        "samples_per_s": float(np.median(rates)),
        "samples_per_s_windows": rates,
        # samples per second of this process's CPU time (all its threads): with one thread and a
        # core shared with other work this is close to the uncontended rate
        "samples_per_cpu_s": float(np.median(cpu_rates)),
        "train_wall_s": None,
        "train_samples_per_s": None,
        "test_accuracy": None,
        **environment(jax),
    }
    result.update(extra)
    return result


def emit(result, json_path=None):
    """Print the result JSON; also write it to ``json_path`` when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if json_path:
        Path(json_path).write_text(text + "\n")
