"""Cost per training sample: the brian2 engine against the torch engine, one run.

    python benchmarks/brian2_vs_torch.py [--targets numpy cython] [--batch 50]

The network of networks/mnist_brian2.yaml (784-64-10, T = 20, float64), random data.
Each backend does a warm-up batch first (network construction; cython compiles on its
first use and caches in the home folder), reported separately; then batches alternate
between the backends and the median seconds per sample are compared.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

import torch

from pcsim.config import load_config
from pcsim.engines.brian2.trainer import Brian2Trainer
from pcsim.engines.torch.engine import TorchEngine
from pcsim.engines.torch.optim import make_optimizer
from pcsim.model import Network

REPO = Path(__file__).resolve().parents[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--targets", nargs="+", default=["numpy", "cython"])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    logging.getLogger("brian2").setLevel(logging.ERROR)
    config = load_config(REPO / "networks" / "mnist_brian2.yaml")
    net = Network.from_config(config.network)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 784, generator=g, dtype=torch.float64)
    y = torch.randn(args.batch, 10, generator=g, dtype=torch.float64)
    trainers = {"torch float64": TorchEngine(net, config.dynamics, dtype=torch.float64),
                "torch float32": TorchEngine(net, config.dynamics, dtype=torch.float32)}
    for target in args.targets:
        trainers[f"brian2 {target}"] = Brian2Trainer(net, config.dynamics, target=target)
    opts = {k: make_optimizer(config.learning, t.parameters()) for k, t in trainers.items()}
    times = {k: [] for k in trainers}
    for name, trainer in trainers.items():
        t = time.perf_counter()
        trainer.train_batch(x.to(trainer.dtype), y.to(trainer.dtype), opts[name])
        print(f"warm-up {name}: {time.perf_counter() - t:.2f} s")
    for _ in range(args.rounds):
        for name, trainer in trainers.items():
            reps = 50 if name.startswith("torch") else 1
            t = time.perf_counter()
            for _ in range(reps):
                trainer.train_batch(x.to(trainer.dtype), y.to(trainer.dtype), opts[name])
            times[name].append((time.perf_counter() - t) / reps / args.batch)
    ref = statistics.median(times["torch float64"])
    print(f"\nseconds per training sample (median of {args.rounds} rounds, batch {args.batch}, "
          f"T = {config.dynamics.steps}, {torch.get_num_threads()} torch threads):")
    print("| backend | s / sample | vs torch float64 |\n|---|---:|---:|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.3g} | {med / ref:.0f}x |")


if __name__ == "__main__":
    main()
