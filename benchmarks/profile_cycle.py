"""cProfile of pcsim's training step on one of ``throughput.py``'s cases, for comparing
two commits op for op.

    PYTHONPATH=<worktrees>/<commit> taskset -c 0 python benchmarks/profile_cycle.py pcx_T5

Run it once per commit's worktree (``pingpong_ab.py --worktrees DIR`` makes them, by
default under the system's temporary folder, ``pcsim_ab/<commit>``): it prints which pcsim it imported, the best of five timed windows
(µs per batch, unprofiled), then the profile of ``--batches`` batches sorted by own time
(GEMM calls, Inductor kernels and their call counts, the Python and guard work outside
the compiled graph) and the Python calls per batch.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import runpy
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("case", nargs="?", default="pcx_T5")
    ap.add_argument("--kind", choices=["pc", "bp"], default="pc")
    ap.add_argument("--eager", action="store_true", help="profile the eager step")
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    import torch

    import pcsim
    torch.set_num_threads(args.threads)
    trainer, opt, x, y = runpy.run_path(str(HERE / "throughput.py"))["synthetic_case"](
        args.kind, args.case, not args.eager, warmup=10)
    B = x.shape[0]
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(args.batches):
            trainer.train_batch(x, y, opt)
        best = min(best, (time.perf_counter() - start) / args.batches)
    print(f"pcsim from {Path(pcsim.__file__).parent}; {args.case}, {args.kind}, "
          f"{'eager' if args.eager else 'compiled'}, {args.threads} thread(s)")
    print(f"best of 5 windows: {best * 1e6:.0f} µs per batch of {B}")
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(args.batches):
        trainer.train_batch(x, y, opt)
    profile.disable()
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text).sort_stats("tottime")
    stats.print_stats(args.top)
    print(text.getvalue())
    print(f"Python calls per batch: {stats.total_calls / args.batches:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
