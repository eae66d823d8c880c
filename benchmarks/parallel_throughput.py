"""Training throughput with 1 and 2 data-parallel CPU processes, in one run.

    PCSIM_DATA=... python benchmarks/parallel_throughput.py [--epochs 2]

Runs networks/mnist_pc.yaml on 12,000 MNIST images (784-512-512-10, T = 20, batch 64):
one process with 2 torch threads, and two gloo processes (torchrun) with 1 thread each,
alternating, and prints the median training samples/s of each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(out: Path, name: str, nproc: int, threads: int, epochs: int) -> list[float]:
    cmd = [sys.executable, "-m", "pcsim", "run", str(REPO / "networks" / "mnist_pc.yaml"),
           "--out", str(out), "--set", f"run.name={name}", "--set", "data.limit_train=12000",
           "--set", "data.limit_test=1000", "--set", "run.device=cpu", "--set",
           f"run.threads={threads}", "--set", "run.count_ops=false", "--epochs", str(epochs),
           "--no-progress"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    subprocess.run(cmd, check=True, capture_output=True)
    metrics = json.loads((out / name / "metrics.json").read_text())
    return [m["train_samples_per_s"] for m in metrics]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    rates = {"1 process x 2 threads": [], "2 processes x 1 thread": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            rates["1 process x 2 threads"] += run(Path(tmp), f"one{r}", 1, 2, args.epochs)
            rates["2 processes x 1 thread"] += run(Path(tmp), f"two{r}", 2, 1, args.epochs)
    base = statistics.median(rates["1 process x 2 threads"])
    print("| setup | train samples/s (median) | vs 1 process |\n|---|---:|---:|")
    for name, values in rates.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.0f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
