"""Depth sweep: predictive coding vs backprop on Fashion-MNIST MLPs of growing depth.

    taskset -c 1 python benchmarks/depth_sweep.py --out results/depth_sweep \\
        --depths 3 4 5 6 7 8 --seeds 0 1 --limit-train 20000 --epochs 3 --threads 1 \\
        --device cpu --remedy n_steps=5 --remedy steps_per_layer=1.6667

Tests the claim of arXiv 2508.08762 (and of Pinchetti et al. 2024, Qi et al. 2025) that
PC accuracy degrades on deep networks while BP does not. Depth ``L`` counts weight layers
(projections): ``L = 3`` is 784-128-128-10, ``L = 8`` is 784-128x7-10, i.e. ``L - 1``
hidden layers. The base config's layer list is ``[input, fixed..., repeated, output]``:
the layers between the input and the last hidden layer are kept as they are, and the last
hidden layer is repeated until the network has ``L`` weight layers. For the MLP base
(``[784, 128, 128, 10]``) that is ``L - 1`` hidden layers of 128; for a conv base such as
``networks/cifar10_depth.yaml`` (a stem that changes the shape, then a shape-keeping
conv layer) it is the stem and ``L - 1 - len(stem)`` copies of the shape-keeping layer:

    taskset -c 1 python benchmarks/depth_sweep.py --config networks/cifar10_depth.yaml \
        --out results/depth_sweep_cifar10 --depths 3 5 7 9 --seeds 0 \
        --remedy steps_per_layer=1.25 --remedy prec_out=1 Every row is one ``run_experiment`` call in this process on the base
config (``--config``, default ``networks/fmnist_depth.yaml``) with only the layer list,
``learning.rule``, ``learning.seed`` and, for a remedy, the dynamics or precisions
changed: PC and BP rows share every other setting (data, init, optimizer, lr, epochs).

A remedy (``--remedy``, repeatable) is one PC variant, written as comma-separated
``key=value`` pairs:

    steps_per_layer=K   T = K * L inference steps (errors need ~L steps to reach layer 1)
    n_steps=T           a fixed T
    eta_x=E             inference rate dt / tau_x (dt is set, tau_x kept)
    prec_out=P          output precision prec_L (weak nudging for P << 1)
    prec_hidden=P       precision of every hidden layer

Writes ``depth_sweep.json`` (meta + one row per run), ``table.md`` and
``accuracy_vs_depth.png`` into ``--out``; with ``--resume`` rows already in the JSON
with the same settings are kept instead of re-run. Run folders go to ``--runs``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

from pcsim.config import config_from_dict
from pcsim.experiment import run_experiment

REMEDY_KEYS = ("steps_per_layer", "n_steps", "eta_x", "prec_out", "prec_hidden")
GAP = 0.02  # "PC falls more than 2 points below BP"


def parse_remedy(spec: str) -> dict:
    """``"steps_per_layer=10,eta_x=0.2"`` -> ``{"steps_per_layer": 10.0, "eta_x": 0.2}``."""
    out = {}
    for part in spec.split(","):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in REMEDY_KEYS or not value:
            raise SystemExit(f"--remedy {spec!r}: expected key=value with key in {REMEDY_KEYS}")
        out[key] = float(value)
    return out


def build_config(base: dict, depth: int, rule: str, seed: int, remedy: dict, args) -> dict:
    """Return the config mapping of one row (``depth`` weight layers)."""
    cfg = json.loads(json.dumps(base))  # deep copy
    layers = cfg["network"]["layers"]
    inp, prefix, hidden, out = layers[0], layers[1:-2], layers[-2], layers[-1]
    repeats = depth - 1 - len(prefix)
    if repeats < 0:
        raise SystemExit(f"--depths: {depth} is below the base config's {len(prefix) + 1} "
                         f"fixed weight layers")
    cfg["network"]["layers"] = ([dict(inp)] + [dict(layer) for layer in prefix]
                                + [dict(hidden) for _ in range(repeats)] + [dict(out)])
    cfg["learning"]["rule"] = rule
    cfg["learning"]["seed"] = seed
    if args.epochs is not None:
        cfg["learning"]["epochs"] = args.epochs
    if args.limit_train is not None:
        cfg["data"]["limit_train"] = args.limit_train
    if args.limit_test is not None:
        cfg["data"]["limit_test"] = args.limit_test
    run = cfg.setdefault("run", {})
    run.update({"threads": args.threads, "progress": False, "count_ops": False,
                "out": str(args.runs)})
    if args.device:
        run["device"] = args.device
    run["name"] = f"L{depth}-{rule}-{label(remedy) if rule == 'pc' else 'bp'}-s{seed}".replace(
        "=", "").replace(",", "_")
    dyn = cfg.setdefault("dynamics", {})
    if rule == "pc":
        if "steps_per_layer" in remedy:
            dyn["n_steps"] = int(round(remedy["steps_per_layer"] * depth))
        if "n_steps" in remedy:
            dyn["n_steps"] = int(remedy["n_steps"])
        if "eta_x" in remedy:
            dyn["dt"] = remedy["eta_x"] * _seconds(dyn.get("tau_x", "10 ms"))
        if "prec_out" in remedy:
            cfg["network"]["layers"][-1]["prec"] = remedy["prec_out"]
        if "prec_hidden" in remedy:
            for layer in cfg["network"]["layers"][1:-1]:
                layer["prec"] = remedy["prec_hidden"]
    return cfg


def _seconds(value) -> float:
    from pcsim.units import parse_quantity
    return parse_quantity(value, "s")


def label(remedy: dict) -> str:
    if not remedy:
        return "none"
    return ",".join(f"{k}={v:g}" for k, v in remedy.items())


def variant(row) -> str:
    return "BP" if row["rule"] == "bp" else ("PC" if row["remedy"] == "none"
                                             else f"PC + {row['remedy']}")


def run_row(cfg_map: dict, source: str, depth: int, rule: str, seed: int, remedy: dict) -> dict:
    config = config_from_dict(cfg_map, source)
    start = time.perf_counter()
    result = run_experiment(config, source=source, progress=False)
    wall = time.perf_counter() - start
    m = result.metrics
    return {
        "depth": depth, "n_hidden_layers": depth - 1, "rule": rule,
        "remedy": label(remedy) if rule == "pc" else "-", "seed": seed,
        "n_steps": config.dynamics.steps if rule == "pc" else None,
        "eta_x": config.dynamics.eta_x if rule == "pc" else None,
        "precisions": [layer.prec for layer in config.network.layers[1:]],
        "test_accuracy": result.final_accuracy,
        "test_accuracy_per_epoch": [r["test_accuracy"] for r in m],
        "train_energy_final": m[-1]["train_energy_final"] if m else None,
        "train_s": sum(r["train_wall_time_s"] for r in m),
        "wall_s": wall,
        "run_dir": "<runs>/" + str(Path(result.run_dir).relative_to(Path(config.run.out).parent)),
    }


def summarize(rows):
    """``{variant: {depth: (mean, std, n)}}`` of the final test accuracy."""
    out = {}
    for r in rows:
        out.setdefault(variant(r), {}).setdefault(r["depth"], []).append(r["test_accuracy"])
    return {v: {d: (statistics.mean(a), statistics.stdev(a) if len(a) > 1 else 0.0, len(a))
                for d, a in sorted(by_d.items())} for v, by_d in out.items()}


def first_gap_depth(summary, pc_variant):
    """Smallest depth where mean PC accuracy < mean BP accuracy - 2 points (or None)."""
    bp, pc = summary.get("BP", {}), summary.get(pc_variant, {})
    for d in sorted(set(bp) & set(pc)):
        if pc[d][0] < bp[d][0] - GAP:
            return d
    return None


def table(rows, summary) -> str:
    variants = list(summary)  # order of first appearance: BP, PC, then the remedies
    depths = sorted({r["depth"] for r in rows})
    steps = {}
    for r in rows:
        if r["rule"] == "pc":
            steps.setdefault(variant(r), {})[r["depth"]] = r["n_steps"]
    gaps = [v for v in variants if v != "BP"] if "BP" in summary else []
    varying = {v for v, by_d in steps.items() if len(set(by_d.values())) > 1}
    lines = ["| depth L (weight layers) | hidden layers | " + " | ".join(variants)
             + "".join(f" | {v} - BP" for v in gaps) + " |",
             "|---:|---:|" + "---:|" * (len(variants) + len(gaps))]
    for d in depths:
        cells = []
        for v in variants:
            s = summary[v].get(d)
            t = steps.get(v, {}).get(d)
            cells.append("-" if s is None else f"{100 * s[0]:.2f} ± {100 * s[1]:.2f}"
                         + (f" (T={t})" if v in varying else ""))
        bp = summary.get("BP", {}).get(d)
        for v in gaps:
            s = summary[v].get(d)
            cells.append("-" if s is None or bp is None else f"{100 * (s[0] - bp[0]):+.2f}")
        lines.append(f"| {d} | {d - 1} | " + " | ".join(cells) + " |")
    n = sorted({s[2] for v in summary.values() for s in v.values()})
    lines += ["", f"Final test accuracy (%), mean ± sample std over {'/'.join(map(str, n))} seeds."]
    for v in variants:
        if v == "BP":
            continue
        d = first_gap_depth(summary, v)
        lines.append(f"- {v}: first depth with mean accuracy more than 2 points below BP: "
                     f"{'none for L = %d..%d' % (min(depths), max(depths)) if d is None else 'L = ' + str(d)}")
    return "\n".join(lines)


def plot(summary, rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = {}
    for r in rows:
        if r["rule"] == "pc":
            steps.setdefault(variant(r), set()).add(r["n_steps"])
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for k, (v, by_d) in enumerate(summary.items()):
        d = sorted(by_d)
        t = sorted(steps.get(v, ()))
        name = v if not t else f"{v} (T={t[0]})" if len(t) == 1 else f"{v} (T={t[0]}..{t[-1]})"
        ax.errorbar([x + 0.04 * (k - 1.5) for x in d], [100 * by_d[x][0] for x in d],
                    yerr=[100 * by_d[x][1] for x in d], marker="o" if v == "BP" else "s",
                    capsize=3, lw=2 if v in ("BP", "PC") else 1.2, label=name)
    ax.set_xlabel("depth L (weight layers)")
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    r0 = rows[0]["config"]
    ax.set_title(f"{describe(r0['network'], r0['data'])}\n"
                 f"{r0['data'].get('limit_train') or 'all'} training images, "
                 f"{r0['learning']['epochs']} epochs", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def describe(network: dict, data: dict) -> str:
    """``"fashion_mnist, hidden: 128 tanh"`` or ``"cifar10, hidden: conv2d 32x16x16 gelu"``:
    the data set and the repeated (last hidden) layer of a row's network."""
    layer = network["layers"][-2]
    kind = (layer.get("projection") or {}).get("kind", "dense")
    shape = layer.get("shape") or [layer.get("size")]
    return (f"{data.get('dataset')}, repeated layer: {kind} "
            f"{'x'.join(map(str, shape))} {layer.get('activation', 'tanh')}")


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, {platform.system()}, torch {torch.__version__}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="networks/fmnist_depth.yaml")
    p.add_argument("--out", type=Path, default=Path("results/depth_sweep"))
    p.add_argument("--runs", type=Path, default=Path("runs/depth_sweep"),
                   help="folder for the run folders (checkpoints; not results)")
    p.add_argument("--depths", type=int, nargs="+", default=[3, 4, 5, 6, 7, 8])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rules", nargs="+", default=["bp", "pc"], choices=["bp", "pc"])
    p.add_argument("--remedy", action="append", default=[],
                   help="a PC variant, e.g. steps_per_layer=10 or eta_x=0.5,prec_out=0.1 "
                        "(repeatable; base PC always runs when 'pc' is in --rules)")
    p.add_argument("--no-base-pc", action="store_true", help="run only the remedies for PC")
    p.add_argument("--limit-train", type=int, help="overrides data.limit_train")
    p.add_argument("--limit-test", type=int, help="overrides data.limit_test")
    p.add_argument("--epochs", type=int, help="overrides learning.epochs")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (run.threads)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: the config's run.device)")
    p.add_argument("--resume", action="store_true",
                   help="keep rows of an existing depth_sweep.json with the same settings")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    args.runs = args.runs / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = yaml.safe_load(Path(args.config).read_text())
    variants = []
    if "bp" in args.rules:
        variants.append(("bp", {}))
    if "pc" in args.rules:
        if not args.no_base_pc:
            variants.append(("pc", {}))
        variants += [("pc", parse_remedy(s)) for s in args.remedy]

    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "depth_sweep.json"
    old, old_meta = {}, None
    if args.resume and json_path.exists():
        previous = json.loads(json_path.read_text())
        old_meta = previous["meta"]
        for r in previous["rows"]:
            old[_key(r["remedy"], r["config"])] = r
    meta = {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
            "command": "python " + " ".join([sys.argv[0]] + sys.argv[1:]) if argv is None else
            "depth_sweep.main(" + repr(argv) + ")",
            "config": args.config, "threads": args.threads,
            "device": args.device or base.get("run", {}).get("device", "auto"),
            "depth_counts": "weight layers (projections); hidden layers = depth - 1"}
    if old_meta is not None:
        meta["resumed_from"] = old_meta.get("resumed_from", old_meta)  # the run that made the rows
    rows, start = [], time.perf_counter()
    # seed-major order so a cut-short sweep still has every depth and variant
    for seed in args.seeds:
        for depth in args.depths:
            for rule, remedy in variants:
                cfg = build_config(base, depth, rule, seed, remedy, args)
                key = _key(label(remedy) if rule == "pc" else "-", _settings(cfg))
                if key in old:
                    rows.append(old[key])
                    continue
                row = run_row(cfg, args.config, depth, rule, seed, remedy)
                row["config"] = _settings(cfg)
                rows.append(row)
                print(f"L={depth} {variant(row):<28} seed {seed}: "
                      f"{100 * row['test_accuracy']:.2f}%  ({row['wall_s']:.1f} s)", flush=True)
                meta["sweep_wall_s"] = time.perf_counter() - start
                _write_json(json_path, meta, rows)
    meta["sweep_wall_s"] = time.perf_counter() - start
    meta["rows_run_wall_s"] = sum(r["wall_s"] for r in rows)
    _write_json(json_path, meta, rows)
    summary = summarize(rows)
    text = table(rows, summary)
    (args.out / "table.md").write_text(text + "\n")
    plot(summary, rows, args.out / "accuracy_vs_depth.png")
    print(text)
    print(f"sweep wall time {meta['sweep_wall_s']:.0f} s; wrote {json_path}, "
          f"{args.out / 'table.md'}, {args.out / 'accuracy_vs_depth.png'}")


def _settings(cfg: dict) -> dict:
    """The keys that define a row's result (not where it is written)."""
    run = {k: v for k, v in cfg.get("run", {}).items() if k not in ("out", "name", "progress")}
    return {**{k: v for k, v in cfg.items() if k != "run"}, "run": run}


def _key(remedy_label: str, settings: dict) -> str:
    """Identity of a row: its variant label and settings (two variants may coincide at
    one depth, e.g. n_steps=5 and steps_per_layer=1.6667 at L = 3; each keeps its row)."""
    return json.dumps([remedy_label, settings], sort_keys=True)


def _write_json(path: Path, meta: dict, rows: list) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
