"""Tabulate run folders side by side (Markdown): accuracy, wall time per epoch, FLOPs.

    python benchmarks/compare_runs.py runs/mnist_pc runs/mnist_bp

The first run is the reference of the wall-time ratio column.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def summarize(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    info = json.loads((run_dir / "run.json").read_text())
    times = [m["train_wall_time_s"] for m in metrics]
    return {
        "run": run_dir.name,
        "epochs": len(metrics),
        "final": metrics[-1]["test_accuracy"],
        "best": max(m["test_accuracy"] for m in metrics),
        "epoch_s": statistics.median(times),
        "total_s": sum(times) + sum(m["eval_wall_time_s"] for m in metrics),
        "flops": metrics[-1]["dense_flops_per_train_sample"],
        "test_flops": metrics[-1]["dense_flops_per_test_sample"],
        "machine": info["machine"],
        "started": info.get("started"),
        "metrics": metrics,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    rows = [summarize(r) for r in args.runs]
    ref = rows[0]
    print("| run | epochs | final test acc. | best | median train s/epoch | "
          "ratio to first | train FLOPs/sample | test FLOPs/sample | total wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['run']} | {r['epochs']} | {100 * r['final']:.2f}% | {100 * r['best']:.2f}% | "
              f"{r['epoch_s']:.1f} | {r['epoch_s'] / ref['epoch_s']:.2f} | {r['flops']:,} | "
              f"{r['test_flops']:,} | {r['total_s']:.0f} |")
    print()
    print("Per epoch (test accuracy %, train wall s):")
    print()
    header = "| epoch | " + " | ".join(f"{r['run']} acc. | {r['run']} s" for r in rows) + " |"
    print(header)
    print("|---:" * (1 + 2 * len(rows)) + "|")
    for k in range(max(r["epochs"] for r in rows)):
        cells = []
        for r in rows:
            m = r["metrics"][k] if k < r["epochs"] else None
            cells += [f"{100 * m['test_accuracy']:.2f}", f"{m['train_wall_time_s']:.1f}"] if m else ["", ""]
        print(f"| {k + 1} | " + " | ".join(cells) + " |")
    print()
    for r in rows:
        m = r["machine"]
        print(f"- {r['run']}: started {r['started']}, {m['processor']}, {m['cpu_count']} CPUs, "
              f"{m['torch_threads']} torch threads, device {m['device']}, torch {m['torch']}, "
              f"Python {m['python']}")


if __name__ == "__main__":
    main()
