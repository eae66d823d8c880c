"""Cost of op counting on dense PC training, side by side in one run.

    python benchmarks/counting_overhead.py [--base-rev 73023c3]

Times train_batch of the MNIST network (784-512-512-10, T = 20, batch 64, float32,
random data) with counting off (recorder None) and on, interleaved, and, with
--base-rev, the same engine at a git revision from before counting existed (in a
subprocess on a temporary worktree), so "off" is compared with "never there".
Prints median milliseconds per batch and the ratios.
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

SNIPPET = r"""
import json, sys, time, torch
from pcsim.config.schema import DynamicsConfig, NetworkConfig, LearningConfig
from pcsim.model import Network
from pcsim.engines.torch.engine import TorchEngine
from pcsim.engines.torch.optim import make_optimizer
torch.set_num_threads(int(sys.argv[2]))
net = Network.from_config(NetworkConfig(layers=[{"size": 784}, {"size": 512, "activation": "tanh"},
    {"size": 512, "activation": "tanh"}, {"size": 10}]))
eng = TorchEngine(net, DynamicsConfig(n_steps=20))
opt = make_optimizer(LearningConfig(), eng.parameters())
g = torch.Generator().manual_seed(0)
x, y = torch.randn(64, 784, generator=g), torch.randn(64, 10, generator=g)
counter = None
if sys.argv[3] == "on":
    from pcsim.monitors import OpCounter
    counter = OpCounter()
eng.recorder = counter
for _ in range(5):
    eng.train_batch(x, y, opt)
times = []
for _ in range(int(sys.argv[1])):
    t = time.perf_counter(); eng.train_batch(x, y, opt); times.append(time.perf_counter() - t)
print(json.dumps(times))
"""


def run(pythonpath: Path, batches: int, threads: int, mode: str) -> list[float]:
    out = subprocess.run([sys.executable, "-c", SNIPPET, str(batches), str(threads), mode],
                         capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(pythonpath), "PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--base-rev", help="a revision without counting, for the 'never there' column")
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    results = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = None
        if args.base_rev:
            base = Path(tmp) / "base"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base),
                            args.base_rev], check=True, capture_output=True)
            results["base"] = []
        try:
            for _ in range(args.rounds):  # interleave, since the machine is noisy
                if base is not None:
                    results["base"] += run(base, args.batches, args.threads, "off")
                results["off"] += run(REPO, args.batches, args.threads, "off")
                results["on"] += run(REPO, args.batches, args.threads, "on")
        finally:
            if base is not None:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)],
                               check=False, capture_output=True)
    med = {k: 1e3 * statistics.median(v) for k, v in results.items()}
    print(f"median ms per train_batch ({args.rounds} x {args.batches} batches, {args.threads} threads):")
    for k, v in med.items():
        print(f"  {k:5s} {v:8.2f} ms")
    if "base" in med:
        print(f"counting off / no counting code: {med['off'] / med['base']:.3f}")
    print(f"counting on / off: {med['on'] / med['off']:.3f}")


if __name__ == "__main__":
    main()
