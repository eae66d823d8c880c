"""Train configs for a few epochs on one GPU: s/epoch, test accuracy, peak GPU memory.

    python benchmarks/gpu_epochs.py networks/cifar10_pc_vgg5.yaml networks/cifar10_bp_vgg5.yaml \\
        --epochs 2 --data-root $PCSIM_DATA --out results/gpu

Part of ``benchmarks/gpu_check.sh``. Each config runs in this process in turn with
``run.device: cuda``, ``learning.epochs`` set to ``--epochs`` (the schedule's horizon
with it: a warmup longer than half the run is cut to half, stated in the table), and op
counting off (counting is a separate measurement). The peak is ``torch.cuda.max_memory_allocated`` over the run
(reset before each config). Without CUDA it stops with exit 2 and says so: no figure is
ever written for a GPU that was not there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("configs", nargs="+")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", default="results/gpu")
    ap.add_argument("--runs", default=str(Path(tempfile.gettempdir()) / "pcsim_gpu_runs"))
    args = ap.parse_args(argv)

    import torch
    if not torch.cuda.is_available():
        print("gpu_epochs: no CUDA device here; nothing measured, nothing written",
              file=sys.stderr)
        return 2
    from pcsim.config import load_config
    from pcsim.experiment import run_experiment

    card = torch.cuda.get_device_name(0)
    rows = []
    for path in args.configs:
        config = load_config(path)
        horizon = config.learning.epochs
        warmup = min(config.learning.warmup_epochs, args.epochs // 2)
        config = load_config(path, {"run.device": "cuda", "run.count_ops": False,
                                    "run.progress": False, "run.out": args.runs,
                                    "run.name": Path(path).stem + "_gpu",
                                    "learning.epochs": args.epochs,
                                    "learning.warmup_epochs": warmup,
                                    "traces.enabled": False})
        torch.cuda.reset_peak_memory_stats()
        result = run_experiment(config, source=path, data_root=args.data_root)
        rows.append({"config": path, "rule": config.learning.rule, "horizon_epochs": horizon,
                     "warmup_epochs": warmup,
                     "epochs": len(result.metrics),
                     "s_per_epoch": [m["train_wall_time_s"] for m in result.metrics],
                     "test_accuracy": [m["test_accuracy"] for m in result.metrics],
                     "peak_gpu_memory_GiB": torch.cuda.max_memory_allocated() / 2 ** 30})
        print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"card": card, "torch": torch.__version__, "command": " ".join(sys.argv),
              "date": dt.date.today().isoformat(), "runs": rows}
    (out / "epochs.json").write_text(json.dumps(record, indent=1))
    lines = [f"{card}, torch {torch.__version__}, {record['date']}", "",
             "| config | rule | epochs (warmup) | s/epoch (first, last) | test accuracy | peak GPU memory |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['rule']} | {r['epochs']} ({r['warmup_epochs']}) of {r['horizon_epochs']} | "
                     f"{r['s_per_epoch'][0]:.1f}, {r['s_per_epoch'][-1]:.1f} | "
                     f"{100 * r['test_accuracy'][-1]:.2f}% | {r['peak_gpu_memory_GiB']:.2f} GiB |")
    (out / "epochs.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
