"""Wall time of event-driven execution against the sigma-delta threshold, and so against
event density: the same events applied densely, sparsely, and by the automatic choice.

    python benchmarks/event_speed.py --data-root DIR --out results/event_speed

For the MNIST MLP of ``networks/mnist_pc.yaml`` and a small MNIST conv net (both first
trained briefly on MNIST, so that errors and values move as in a real run), at batch 1
and batch 64, on 1 and 2 threads (pinned to cores 0 / 0-1), and for each threshold
``theta``: the time per inference (the training-phase relaxation: feedforward start and
``T`` steps with the label clamped) and per training sample (inference and the learning
step, Adam), for

- ``dense engine``: no events (the reference: what a run without event mode costs);
- ``events, dense``: event mode, every tick's events applied by the dense product;
- ``events, sparse``: the senders' columns (a kernel's channels) alone;
- ``events, auto``: sparse when at most ``--crossover`` of a link's senders sent.

Contenders are interleaved (round ``r`` times each once, the order rotating), and the
median over rounds is reported. A separate counting pass gives the event density -- the
share of a matrix link's senders that send per inference step -- and the synaptic ops.
Writes ``event_speed.json``, ``time_vs_density.png`` and ``table.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_speed import cpu_model  # noqa: E402

from pcsim.config import config_from_dict  # noqa: E402
from pcsim.config.schema import EventsConfig  # noqa: E402
from pcsim.data import iterate_batches, load_dataset, resolve_data_root  # noqa: E402
from pcsim.engines.torch.engine import TorchEngine  # noqa: E402
from pcsim.model import Network  # noqa: E402
from pcsim.monitors import OpCounter  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONTENDERS = ("dense engine", "events, dense", "events, sparse", "events, auto")

MLP = {"layers": [{"size": 784}, {"size": 512, "activation": "tanh"},
                  {"size": 512, "activation": "tanh"},
                  {"size": 10, "activation": "identity", "prec": 1.0}]}
CONV = {"layers": [
    {"shape": [1, 28, 28]},
    {"shape": [16, 14, 14], "activation": "tanh",
     "projection": {"kind": "conv2d", "kernel": 3, "padding": 1, "pool": "avg"}},
    {"shape": [32, 7, 7], "activation": "tanh",
     "projection": {"kind": "conv2d", "kernel": 3, "padding": 1, "pool": "avg"}},
    {"size": 10, "activation": "identity", "prec": 1.0}]}
NETS = {"mlp": MLP, "conv": CONV}


def _config(net: dict, steps: int):
    return config_from_dict({
        "network": {"mode": "supervised", **net, "init": "xavier_uniform"},
        "dynamics": {"tau_x": "10 ms", "dt": "1 ms", "n_steps": steps},
        "learning": {"optimizer": "adam", "lr": 1e-3, "batch_size": 64},
        "run": {"device": "cpu"}})


def pretrain(config, data, batches: int) -> TorchEngine:
    """A briefly trained engine (dense fast path), so that densities are a real run's."""
    network = Network.from_config(config.network)
    eng = TorchEngine.from_config(config, network, device="cpu")
    opt = torch.optim.Adam(eng.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for k, idx in enumerate(iterate_batches(data.train_x.shape[0], 64, gen)):
        if k == batches:
            break
        eng.train_batch(data.train_x[idx], data.one_hot(data.train_y[idx], eng.dtype), opt)
    return eng


def engine(base, config, events=None):
    return TorchEngine(base.network, config.dynamics, dtype=base.dtype,
                       params=base.params.clone(), events=events)


def density(base, config, events, x, y) -> dict:
    """Share of a matrix link's senders sending per inference step, and syn ops per
    sample of one inference, from a counting pass."""
    eng = engine(base, config, events)
    eng.recorder = OpCounter()
    s = eng.init_state(x, y)
    eng.infer(s)
    counts = eng.recorder.result()
    sent = total = 0
    for p in base.network.projections:
        for target, senders in ((f"W_{p.index}", p.n_pre),
                                (f"W_{p.index}^T", math.prod(p.out_shape))):
            total += senders * x.shape[0] * s.step
            sent += sum(v for (_, step, t, kind), v in counts.cells.items()
                        if kind == "syn_events" and t == target and step >= 1)
    syn = sum(counts.total(k) for k in ("syn_ops_mac", "syn_ops_ac")) / x.shape[0]
    return {"density": sent / total if total else 0.0, "syn_ops_per_sample": syn}


def _time(fn, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def measure(base, config, theta, batch, x, y, rounds, crossover, budget) -> dict:
    """Per contender, median seconds per inference and per training sample."""
    engines = {"dense engine": engine(base, config)}
    for ex in ("dense", "sparse", "auto"):
        engines[f"events, {ex}"] = engine(base, config, EventsConfig(
            enabled=True, theta=theta, execution=ex, crossover=crossover))
    opts = {k: torch.optim.Adam(e.parameters(), lr=0.0) for k, e in engines.items()}

    def infer(e):
        e.infer(e.init_state(x, y))

    def train(k):
        engines[k].train_batch(x, y, opts[k])

    for k, e in engines.items():  # warm-up; and the repetitions that fill ~budget s
        infer(e)
        train(k)
    one = _time(lambda: infer(engines["events, dense"]), 1)
    reps = max(1, int(budget / max(one, 1e-4)))
    times = {k: {"inference": [], "training": []} for k in engines}
    order = list(engines)
    for r in range(rounds):
        for k in order[r % len(order):] + order[:r % len(order)]:
            e = engines[k]
            times[k]["inference"].append(_time(lambda: infer(e), reps) / batch)
            times[k]["training"].append(_time(lambda: train(k), reps) / batch)
    return {k: {phase: statistics.median(v) for phase, v in t.items()} for k, t in times.items()}


def run(args) -> dict:
    root = resolve_data_root(None, args.data_root)
    data = load_dataset("mnist", root)
    rows = []
    for net_name in args.nets:
        config = _config(NETS[net_name], args.steps)
        torch.set_num_threads(2)
        base = pretrain(config, data, args.pretrain)
        for threads in args.threads:
            torch.set_num_threads(threads)
            if hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, set(range(threads)))
            for batch in args.batches:
                idx = torch.arange(1000, 1000 + batch)
                x = data.test_x[idx]
                y = data.one_hot(data.test_y[idx], base.dtype)
                for theta in args.thetas:
                    d = density(base, config, EventsConfig(enabled=True, theta=theta), x, y)
                    t = measure(base, config, theta, batch, x, y, args.rounds,
                                args.crossover, args.budget)
                    row = {"net": net_name, "threads": threads, "batch": batch,
                           "theta": theta, **d, "seconds": t}
                    rows.append(row)
                    print(f"{net_name} {threads}t B{batch} theta {theta:g}: density "
                          f"{d['density']:.3f}; inference ms/sample " + ", ".join(
                              f"{k} {v['inference'] * 1e3:.3f}" for k, v in t.items()),
                          flush=True)
    return {"date": dt.date.today().isoformat(), "machine": cpu_model(),
            "torch": torch.__version__, "python": platform.python_version(),
            "command": " ".join(["python", "benchmarks/event_speed.py"] + sys.argv[1:]),
            "crossover": args.crossover, "steps": args.steps, "rows": rows}


def table(result) -> str:
    lines = ["| net | threads | batch | theta | density | syn ops / sample | inference "
             "µs/sample: dense engine | events dense | events sparse | events auto | "
             "sparse / dense speed-up | auto / dense slow-down | training µs/sample: "
             "events dense | events sparse | events auto |",
             "|" + "---|" * 15]
    for r in result["rows"]:
        s = r["seconds"]
        inf = {k: s[k]["inference"] * 1e6 for k in CONTENDERS}
        tr = {k: s[k]["training"] * 1e6 for k in CONTENDERS}
        lines.append(
            f"| {r['net']} | {r['threads']} | {r['batch']} | {r['theta']:g} | "
            f"{r['density']:.3f} | {r['syn_ops_per_sample']:,.0f} | "
            f"{inf['dense engine']:,.0f} | {inf['events, dense']:,.0f} | "
            f"{inf['events, sparse']:,.0f} | {inf['events, auto']:,.0f} | "
            f"{inf['events, dense'] / inf['events, sparse']:.2f}x | "
            f"{inf['events, auto'] / inf['events, dense']:.2f} | "
            f"{tr['events, dense']:,.0f} | {tr['events, sparse']:,.0f} | "
            f"{tr['events, auto']:,.0f} |")
    return "\n".join(lines)


def plot(result, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = sorted({(r["net"], r["batch"], r["threads"]) for r in result["rows"]})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for (net, batch, threads) in groups:
        rows = sorted((r for r in result["rows"] if (r["net"], r["batch"], r["threads"])
                       == (net, batch, threads)), key=lambda r: r["density"])
        dens = [max(r["density"], 1e-4) for r in rows]
        t = [r["seconds"] for r in rows]
        line, = axes[0].plot(dens, [s["events, dense"]["inference"] / s["events, auto"]["inference"]
                                    for s in t], marker="o",
                             label=f"{net}, batch {batch}, {threads} thr")
        axes[0].plot(dens, [s["events, dense"]["inference"] / s["events, sparse"]["inference"]
                            for s in t], ls=":", lw=1, color=line.get_color())
        axes[1].plot(dens, [r["syn_ops_per_sample"] for r in rows], marker="o",
                     color=line.get_color(), label=f"{net}, batch {batch}")
    axes[0].axhline(1.0, color="grey", lw=0.8)
    for ax in axes:  # auto goes sparse left of this line (per link and step)
        ax.axvline(result["crossover"], color="grey", ls="--", lw=0.8)
    axes[0].set(xscale="log", xlabel="event density (events per sender per step)",
                ylabel="dense / event-driven time per inference",
                title=f"auto (solid; crossover {result['crossover']:g}) and always sparse "
                      "(dotted)")
    axes[0].title.set_fontsize(9)
    axes[1].set(xscale="log", yscale="log", xlabel="event density",
                ylabel="synaptic ops per sample (one inference)", title="ops follow density")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{result['machine']}, {result['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None, help="else $PCSIM_DATA")
    ap.add_argument("--out", default="results/event_speed")
    ap.add_argument("--nets", nargs="+", default=["mlp", "conv"], choices=sorted(NETS))
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    ap.add_argument("--thetas", nargs="+", type=float, default=[0.0, 0.003, 0.01, 0.03, 0.1])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--pretrain", type=int, default=300, help="training batches of 64 first")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--budget", type=float, default=0.2, help="seconds per timed window")
    ap.add_argument("--crossover", type=float, default=EventsConfig().crossover)
    args = ap.parse_args(argv)
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "event_speed.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "time_vs_density.png")
    md = table(result)
    (out / "table.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
