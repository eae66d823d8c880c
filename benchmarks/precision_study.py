"""Fixed against learned precision (SPEC 2.4), several seeds, side by side in one run.

    python benchmarks/precision_study.py --data-root $PCSIM_DATA --out results/precision

Each study trains a shipped config twice per seed with ``pcsim run``: as shipped (every
precision fixed) and with a learned log-variance on every layer above the input (per
neuron for dense layers, per channel for convolutional ones). The learned variant's
floor is ``sigma2_min = dt / tau_x``: then ``prec * dt / tau_x <= 1``, so a value
neuron's Euler step on its own error cannot overshoot (at ``dt / (2 tau_x)``, the bound
of stability, it would oscillate undamped); ``max_floor_share`` is 1, so the floor
clips and the run goes on, and the metrics say how much of each layer sits there. Runs are 1 thread each, pinned to their own core (``--parallel`` at once), and the
two variants of one seed run at the same time so that machine noise falls on both.

Reported per study and variant: test accuracy after epoch 2 and at the end (mean and
spread over seeds), how many runs stopped (exit code 1: guard or non-finite), the
smallest variance reached per layer and the largest share at the floor, and the training
wall time per epoch (learned / fixed is the overhead). An autoencoder run with a learned
per-pixel output variance adds its uncertainty map (``--autoencoder``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_speed import cpu_model  # noqa: E402

#: name -> (config, overrides, layers above the input: "dense" or "conv")
STUDIES = {
    "mnist": ("networks/mnist_pc.yaml", [], ["dense"] * 3),
    "fashion_mnist": ("networks/mnist_pc.yaml",
                      ["data.dataset=fashion_mnist"], ["dense"] * 3),
    "cifar10": ("networks/cifar10_pc.yaml", ["data.limit_train=10000", "data.limit_test=2000"],
                ["conv"] * 3 + ["dense"]),
}


def learned_overrides(kinds, floor: float) -> list:
    out = []
    for l, kind in enumerate(kinds, start=1):
        per = "channel" if kind == "conv" else "neuron"
        out.append(f"network.layers.{l}.precision={{per: {per}, sigma2_min: {floor:g}, "
                   "max_floor_share: 1.0}")
    return out


def run_one(job: dict, args, core: int) -> dict:
    cmd = ["taskset", "-c", str(core), sys.executable, "-m", "pcsim", "run",
           str(REPO / job["config"]), "--data-root", args.data_root, "--out", args.runs,
           "--epochs", str(job["epochs"]), "--no-progress",
           "--set", f"run.name={job['name']}", "--set", "run.threads=1",
           "--set", "run.device=cpu", "--set", f"learning.seed={job['seed']}"]
    for o in job["overrides"]:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    metrics_path = Path(args.runs) / job["name"] / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else []
    return {**job, "rc": proc.returncode, "metrics": metrics,
            "stderr_tail": proc.stderr[-2000:] if proc.returncode else ""}


def summarize(results: list) -> dict:
    out = {}
    for r in results:
        key = (r["study"], r["variant"])
        out.setdefault(key, []).append(r)
    table = {}
    for (study, variant), runs in out.items():
        done = [r for r in runs if r["metrics"]]
        acc2 = [r["metrics"][1]["test_accuracy"] for r in done if len(r["metrics"]) >= 2]
        final = [r["metrics"][-1]["test_accuracy"] for r in done if r["rc"] == 0]
        times = [m["train_wall_time_s"] for r in done for m in r["metrics"]]
        var_min, floor = {}, {}
        for r in done:
            for m in r["metrics"]:
                for k, v in m.items():
                    if k.startswith("variance_min_l"):
                        var_min[k[-2:]] = min(var_min.get(k[-2:], v), v)
                    if k.startswith("variance_floor_share_l"):
                        floor[k[-2:]] = max(floor.get(k[-2:], v), v)
        table[f"{study}/{variant}"] = {
            "seeds": len(runs), "stopped": sum(r["rc"] != 0 for r in runs),
            "acc_epoch2": acc2, "acc_final": final,
            "train_s_per_epoch": statistics.median(times) if times else None,
            "variance_min": var_min, "floor_share_max": floor,
        }
    return table


def _ms(values) -> str:
    if not values:
        return "-"
    mean = 100 * statistics.mean(values)
    spread = 100 * (max(values) - min(values)) / 2
    return f"{mean:.2f} ± {spread:.2f}"


def write_readme(path: Path, table: dict, meta: dict, epochs: dict, autoencoder) -> None:
    lines = ["# Fixed against learned precision", "",
             f"Command: `{meta['command']}`", "",
             f"Machine: {meta['cpu']}, {meta['cores']} cores, 1 thread per run; "
             f"date {meta['date']}; {meta['minutes']:.1f} min.", "",
             "Learned: a log-variance per neuron (dense) or per channel (conv) on every layer "
             "above the input, floor `sigma2_min = dt / tau_x` = 0.1 (a value neuron's Euler "
             "step on its own error cannot overshoot), `max_floor_share = 1` (the floor "
             "clips, the run goes on). Fixed: "
             "the config as shipped. Accuracy: mean ± half the range over seeds.", "",
             "| study | variant | seeds | stopped | test acc. after epoch 2 (%) | "
             "test acc. at the end (%) | train s/epoch | overhead | smallest variance per "
             "layer | largest share at the floor |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, row in table.items():
        study, variant = key.split("/")
        base = table.get(f"{study}/fixed", {}).get("train_s_per_epoch")
        over = (f"{row['train_s_per_epoch'] / base:.3f}x" if base and row["train_s_per_epoch"]
                else "-")
        var = ", ".join(f"{k}: {v:.3g}" for k, v in sorted(row["variance_min"].items())) or "-"
        fl = ", ".join(f"{k}: {v:.0%}" for k, v in sorted(row["floor_share_max"].items())) or "-"
        lines.append(f"| {study} ({epochs[study]} epochs) | {variant} | {row['seeds']} | "
                     f"{row['stopped']} | {_ms(row['acc_epoch2'])} | {_ms(row['acc_final'])} | "
                     f"{row['train_s_per_epoch']:.1f} | {over} | {var} | {fl} |")
    if autoencoder:
        lines += ["", "## Uncertainty map", "",
                  f"`{autoencoder['command']}`: test MSE {autoencoder['test_mse']:.5f}; the "
                  f"learned per-pixel variance ranges from {autoencoder['var_min']:.3g} to "
                  f"{autoencoder['var_max']:.3g}.", "", "![uncertainty](uncertainty.png)"]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("PCSIM_DATA"))
    ap.add_argument("--out", default="results/precision")
    ap.add_argument("--runs", default=os.path.join(tempfile.gettempdir(), "pcsim_precision"))
    ap.add_argument("--studies", nargs="+", default=list(STUDIES))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", nargs="+", default=["mnist=5", "fashion_mnist=5", "cifar10=4"],
                    help="study=epochs")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--autoencoder", action="store_true")
    args = ap.parse_args(argv)
    if not args.data_root:
        ap.error("give --data-root or set PCSIM_DATA")
    epochs = {k: int(v) for k, v in (e.split("=") for e in args.epochs)}
    start = dt.datetime.now()
    jobs = []
    for study in args.studies:
        config, over, kinds = STUDIES[study]
        floor = 0.1  # dt / tau_x of both shipped configs (dt 1 ms, tau_x 10 ms)
        for seed in range(args.seeds):
            for variant in ("fixed", "learned"):
                extra = learned_overrides(kinds, floor) if variant == "learned" else []
                jobs.append({"study": study, "variant": variant, "seed": seed,
                             "config": config, "epochs": epochs[study],
                             "overrides": over + extra, "name": f"{study}_{variant}_s{seed}"})
    results = []
    with ThreadPoolExecutor(args.parallel) as pool:
        futures = [pool.submit(run_one, job, args, i % args.parallel) for i, job in enumerate(jobs)]
        for f in futures:
            r = f.result()
            results.append(r)
            last = r["metrics"][-1]["test_accuracy"] if r["metrics"] else float("nan")
            print(f"{r['name']}: rc {r['rc']}, {len(r['metrics'])} epochs, last {last:.4f}",
                  flush=True)
    autoencoder = None
    if args.autoencoder:
        name = "autoencoder_learned"
        cmd_over = ["network.layers.2.precision={per: neuron, sigma2_min: 1e-3}",
                    "data.limit_train=20000"]
        r = run_one({"study": "autoencoder", "variant": "learned", "seed": 0, "name": name,
                     "config": "networks/mnist_pc_autoencoder.yaml", "epochs": 3,
                     "overrides": cmd_over}, args, 0)
        if r["rc"] == 0:
            m = r["metrics"][-1]
            Path(args.out).mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(args.runs) / name / "uncertainty.png", Path(args.out) / "uncertainty.png")
            autoencoder = {"command": "pcsim run networks/mnist_pc_autoencoder.yaml --epochs 3 "
                           + " ".join(f"--set '{o}'" for o in cmd_over),
                           "test_mse": m["test_mse"], "var_min": m["variance_min_l2"],
                           "var_max": m["variance_max_l2"]}
    table = summarize(results)
    meta = {"command": "python benchmarks/precision_study.py " + " ".join(
                a if a != args.data_root else "$PCSIM_DATA" for a in (argv or sys.argv[1:])),
            "cpu": cpu_model(), "cores": os.cpu_count(),
            "date": start.strftime("%Y-%m-%d"),
            "minutes": (dt.datetime.now() - start).total_seconds() / 60}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps({"meta": meta, "table": table, "runs": [
        {k: v for k, v in r.items()} for r in results]}, indent=1))
    write_readme(out / "README.md", table, meta, epochs, autoencoder)
    print((out / "README.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
