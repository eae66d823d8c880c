"""Event-driven execution of a trained PC network against the sigma-delta threshold.

    python benchmarks/theta_sweep.py runs/mnist_pc --out results/event_sweep

For the checkpoint of a `pcsim run`, evaluates the full test set with the feedforward
read-out executed through sigma-delta units, and runs training batches (learning
rate 0, so the weights stay those of the checkpoint) to count the ops of a training
sample, at every threshold and payload, beside dense execution. Writes sweep.json,
ops_vs_theta.png and a Markdown table (stdout and README.md in --out).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import torch

from pcsim.config.schema import EventsConfig
from pcsim.data import iterate_batches, load_dataset, resolve_data_root
from pcsim.energy import available_profiles
from pcsim.energy.report import build_energy_report
from pcsim.engines.torch.engine import TorchEngine
from pcsim.experiment import evaluate, load_run
from pcsim.monitors import OpCounter

SYN = ("syn_ops_mac", "syn_ops_ac")


def _syn(summary: dict, phase: str) -> float:
    return sum(summary.get(phase, {}).get(k, 0.0) for k in SYN)


def measure(config, base, data, events, train_batches, profiles):
    """Return one sweep row for ``events`` (None = dense)."""
    engine = TorchEngine(base.network, config.dynamics, device=base.device, dtype=base.dtype,
                         params=base.params.clone(), events=events)
    mode = "dense" if events is None else events.payload
    test_counter = OpCounter()
    test_counter.mode = "dense" if events is None else "event"
    start = time.perf_counter()
    test = evaluate(engine, data, recorder=test_counter)
    train_counter = OpCounter()
    train_counter.mode = test_counter.mode
    engine.recorder = train_counter
    optimizer = torch.optim.SGD(engine.parameters(), lr=0.0)  # count the learning step only
    generator = torch.Generator().manual_seed(0)
    batch = config.learning.batch_size
    for k, idx in enumerate(iterate_batches(data.train_x.shape[0], batch, generator)):
        if k == train_batches:
            break
        target = data.one_hot(data.train_y[idx], engine.dtype)
        engine.train_batch(data.train_x[idx], target, optimizer)
        train_counter.add_samples(len(idx))
    engine.recorder = None
    counts = {"train": train_counter.result(), "test": test_counter.result()}
    report = build_energy_report(counts, profiles,
                                 time_per_sample={"train": config.dynamics.steps * config.dynamics.dt})
    ops = {w: c.summary() for w, c in counts.items()}
    return {
        "mode": mode, "theta": None if events is None else events.theta,
        "test_accuracy": test["test_accuracy"],
        "test_syn_ops": _syn(ops["test"], "inference"),
        "test_syn_events": ops["test"]["inference"]["syn_events"],
        "train_syn_ops": _syn(ops["train"], "inference"),
        "train_syn_events": ops["train"]["inference"]["syn_events"],
        "train_weight_grad_ops": ops["train"]["learning"]["weight_grad_ops"],
        "train_active_fraction": (ops["train"]["inference"]["neuron_updates_active"]
                                  / ops["train"]["inference"]["neuron_updates"]),
        "energy": {stem: {"train": e["train"]["inference"]["energy_per_sample_J"]
                          + e["train"]["learning"]["energy_per_sample_J"],
                          "test": e["test"]["inference"]["energy_per_sample_J"],
                          "lower_bound": bool(e["train"]["inference"]["missing"]
                                              or e["train"]["learning"]["missing"]
                                              or e["test"]["inference"]["missing"])}
                   for stem, e in report["profiles"].items()},
        "ops": ops, "wall_s": time.perf_counter() - start,
    }


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dense = rows[0]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, marker in (("graded", "o"), ("integer", "s")):
        sel = [r for r in rows if r["mode"] == mode and r["theta"]]
        if not sel:
            continue
        th = [r["theta"] for r in sel]
        ax1.plot(th, [r["test_syn_ops"] / dense["test_syn_ops"] for r in sel], marker + "-",
                 label=f"{mode}: per inference")
        ax1.plot(th, [r["train_syn_ops"] / dense["train_syn_ops"] for r in sel], marker + "--",
                 label=f"{mode}: per training sample")
        ax2.plot(th, [100 * r["test_accuracy"] for r in sel], marker + "-", label=mode)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("theta")
    ax1.set_ylabel("synaptic ops / dense")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.axhline(100 * dense["test_accuracy"], color="k", lw=1, label="dense")
    ax2.axhline(100 * dense["test_accuracy"] - 0.2, color="k", lw=1, ls=":",
                label="dense - 0.2 points")
    ax2.set_xscale("log")
    ax2.set_xlabel("theta")
    ax2.set_ylabel("test accuracy (%)")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(rows, profiles) -> str:
    dense = rows[0]
    lines = ["| payload | theta | test acc. | syn ops / inference | vs dense | events / inference "
             "| syn ops / train sample | vs dense | weight-gradient MACs / train sample | active neuron updates |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {'-' if r['theta'] is None else r['theta']:} | "
            f"{100 * r['test_accuracy']:.2f}% | {r['test_syn_ops']:,.0f} | "
            f"{r['test_syn_ops'] / dense['test_syn_ops']:.3f} | {r['test_syn_events']:,.0f} | "
            f"{r['train_syn_ops']:,.0f} | {r['train_syn_ops'] / dense['train_syn_ops']:.3f} | "
            f"{r['train_weight_grad_ops']:,.0f} | {100 * r['train_active_fraction']:.1f}% |")
    lines += ["", "Energy per sample (training sample: inference + learning; test: one read-out); "
              "`*` = lower bound, the profile has no figure for a counted kind:", "",
              "| payload | theta | " + " | ".join(f"{p} train | {p} test" for p in profiles) + " |",
              "|---|---:|" + "---:|" * (2 * len(profiles))]
    for r in rows:
        cells = []
        for p in profiles:
            e = r["energy"][p]
            star = "*" if e["lower_bound"] else ""
            cells += [f"{e['train'] * 1e6:.3g} uJ{star}", f"{e['test'] * 1e6:.3g} uJ{star}"]
        lines.append(f"| {r['mode']} | {'-' if r['theta'] is None else r['theta']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--thetas", type=float, nargs="+",
                        default=[0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3])
    parser.add_argument("--integer-thetas", type=float, nargs="*", default=[0.01, 0.03, 0.1])
    parser.add_argument("--train-batches", type=int, default=20)
    parser.add_argument("--data-root")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    config, base, _ = load_run(args.run_dir, "cpu")
    root = resolve_data_root(config.data.root, args.data_root)
    data = load_dataset(config.data.dataset, root, normalize=config.data.normalize,
                        download=config.data.download).to(base.device, base.dtype)
    profiles = available_profiles()
    settings = [None] + [EventsConfig(enabled=True, theta=t) for t in args.thetas] + [
        EventsConfig(enabled=True, theta=t, payload="integer") for t in args.integer_thetas]
    rows = [measure(config, base, data, ev, args.train_batches, profiles) for ev in settings]
    dense = rows[0]
    ok = [r for r in rows[1:] if r["test_accuracy"] >= dense["test_accuracy"] - 0.002]
    best = min(ok, key=lambda r: r["test_syn_ops"]) if ok else None
    text = table(rows, profiles)
    if best:
        text += (f"\n\nLargest reduction within 0.2 points of dense accuracy: {best['mode']} "
                 f"payload, theta = {best['theta']}: {dense['test_syn_ops'] / best['test_syn_ops']:.2f}x "
                 f"fewer synaptic ops per inference ({100 * best['test_accuracy']:.2f}% vs "
                 f"{100 * dense['test_accuracy']:.2f}%), and {dense['train_syn_ops'] / best['train_syn_ops']:.2f}x "
                 "fewer per training sample.")
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        meta = {"date": dt.date.today().isoformat(), "run": str(args.run_dir),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
                "train_batches": args.train_batches, "batch_size": config.learning.batch_size}
        (args.out / "sweep.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        plot(rows, args.out / "ops_vs_theta.png")
        (args.out / "table.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
