"""cProfile of one event-mode inference at a given batch and threshold, to see where an
event step's time goes (the sender's sigma-delta, the receivers' products, Python).

    taskset -c 0 python benchmarks/profile_events.py --data-root DIR --batch 1 --theta 0.03

The MNIST MLP of ``benchmarks/event_speed.py``, trained briefly (``--pretrain`` batches)
so that densities are a real run's; one thread. Prints the dense engine's and the event
engine's time per inference, then the event inference's profile by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from event_speed import MLP, _config, engine, pretrain  # noqa: E402

from pcsim.config.schema import EventsConfig  # noqa: E402
from pcsim.data import load_dataset, resolve_data_root  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--theta", type=float, default=0.03)
    ap.add_argument("--execution", choices=["auto", "sparse", "dense"], default="auto")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--pretrain", type=int, default=100)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = load_dataset("mnist", resolve_data_root(None, args.data_root))
    config = _config(MLP, args.steps)
    base = pretrain(config, data, args.pretrain)
    idx = torch.arange(1000, 1000 + args.batch)
    x, y = data.test_x[idx], data.one_hot(data.test_y[idx], base.dtype)
    dense = engine(base, config)
    events = engine(base, config, EventsConfig(enabled=True, theta=args.theta,
                                               execution=args.execution))

    def infer(e):
        e.infer(e.init_state(x, y))

    for e in (dense, events):
        infer(e)
    for name, e in (("dense engine", dense), (f"events, {args.execution}", events)):
        start = time.perf_counter()
        for _ in range(args.reps):
            infer(e)
        print(f"{name}: {(time.perf_counter() - start) / args.reps * 1e6:,.0f} µs per "
              f"inference of batch {args.batch}, T = {args.steps}")
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(args.reps):
        infer(events)
    profile.disable()
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text).sort_stats("tottime")
    stats.print_stats(args.top)
    print(text.getvalue())
    print(f"Python calls per inference: {stats.total_calls / args.reps:.0f}; per step: "
          f"{stats.total_calls / args.reps / args.steps:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
