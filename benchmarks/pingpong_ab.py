"""Training throughput of two pcsim commits, measured in alternating windows.

    python benchmarks/pingpong_ab.py --ref 25e60ac --new HEAD --out results/speed_ab

On a shared machine the speed of a core drifts by tens of percent within minutes, so
numbers taken minutes apart (one process per measurement, as ``compare_speed.py``
does) cannot resolve a 3% difference. Here both commits' workers are started once per
case and stay warm (compiled, optimizer state made), pinned to the same cores; the
parent then hands them timed windows in turn -- ref, new, new, ref, ... -- so that each
pair of windows is measured within about a second of each other. A worker waits on a
pipe while the other runs, so they never compete for the cores.

Each commit is a clean ``git worktree`` (as in ``compare_speed.py``); every worker runs
this checkout's harness (``benchmarks/throughput.py``'s ``_network``/``_trainer``) with
``PYTHONPATH`` set to the commit and first proves which pcsim it imported. Reported per
case: the median over pairs of the ratio new / ref of samples/s (with its interquartile
range), and each side's median samples/s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_speed import KINDS, checkout, cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

SERVE = r'''
import os, runpy, sys, time
tree = os.environ["PCSIM_AB_TREE"]
import pcsim
assert os.path.realpath(pcsim.__file__).startswith(os.path.realpath(tree) + os.sep), pcsim.__file__
import torch
threads, case, kind, comp = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "1"
torch.set_num_threads(threads)
trainer, opt, x, y = runpy.run_path(sys.argv[5])["synthetic_case"](kind, case, comp)
B = x.shape[0]
print("ready", flush=True)
for line in sys.stdin:
    k = int(line)
    start = time.perf_counter()
    for _ in range(k):
        trainer.train_batch(x, y, opt)
    print(k * B / (time.perf_counter() - start), flush=True)
'''


def start(tree: Path, case, kind, compile, threads, cores):
    env = dict(os.environ, PYTHONPATH=str(tree), PCSIM_AB_TREE=str(tree),
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-c", SERVE, str(threads), case, kind, "1" if compile else "0",
           str(REPO / "benchmarks" / "throughput.py")]
    if sys.platform.startswith("linux"):
        cmd = ["taskset", "-c", cores] + cmd
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc


def ready(proc, name):
    line = proc.stdout.readline()
    if line.strip() != "ready":
        raise RuntimeError(f"{name} worker failed:\n{proc.stderr.read()[-2000:]}")


def window(proc, k) -> float:
    proc.stdin.write(f"{k}\n")
    proc.stdin.flush()
    return float(proc.stdout.readline())


def measure_case(trees, case, kind_name, threads, cores, pairs, batches, starts=1) -> dict:
    """``pairs`` windows of each side, split over ``starts`` fresh pairs of workers.

    A worker's speed also depends on the process (where its buffers land: the same code
    in two processes differed by up to 5% here, steadily within each process), so a
    case is measured over several starts, the sides starting first in turn, and the
    ratio is the median over all pairs of windows. ``ratio_by_start`` keeps each
    start's median, which shows that spread."""
    kind, compile = KINDS[kind_name]
    rates = {"ref": [], "new": []}
    by_start = []
    per = max(1, pairs // starts)
    for run in range(starts):
        procs = {}
        first = ("ref", "new") if run % 2 == 0 else ("new", "ref")
        try:
            for side in first:  # one at a time: compiling does not overlap
                procs[side] = start(trees[side][1], case, kind, compile, threads, cores)
                ready(procs[side], side)
            mine = {"ref": [], "new": []}
            for p in range(per):
                order = ("ref", "new") if p % 2 == 0 else ("new", "ref")
                for side in order:
                    mine[side].append(window(procs[side], batches))
        finally:
            for proc in procs.values():
                proc.kill()
                proc.wait()
        by_start.append(statistics.median(n / r for n, r in zip(mine["new"], mine["ref"])))
        for side in rates:
            rates[side].extend(mine[side])
    ratios = sorted(n / r for n, r in zip(rates["new"], rates["ref"]))
    q = statistics.quantiles(ratios, n=4)
    return {"case": case, "kind": kind_name, "threads": threads, "rates": rates,
            "ratio_median": statistics.median(ratios), "ratio_q1": q[0], "ratio_q3": q[2],
            "ratio_by_start": by_start,
            "ref_median": statistics.median(rates["ref"]),
            "new_median": statistics.median(rates["new"])}


#: batches per timed window, about 0.5-1 s each on one core of this project's machines
BATCHES = {"pcx_T5": 150, "pcx_T20": 60, "wide": 2}


def table(rows) -> str:
    lines = ["| case | threads | kind | ref samples/s | new samples/s | new / ref (median of "
             "pairs) | interquartile range |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['threads']} | {r['kind']} | {r['ref_median']:,.0f} | "
                     f"{r['new_median']:,.0f} | {r['ratio_median']:.3f} | "
                     f"{r['ratio_q1']:.3f}-{r['ratio_q3']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", default="25e60ac")
    ap.add_argument("--new", default="HEAD")
    ap.add_argument("--cases", nargs="+", default=["pcx_T5", "pcx_T20", "wide"])
    ap.add_argument("--kinds", nargs="+", default=["pc compiled", "pc eager"],
                    choices=sorted(KINDS))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--starts", type=int, default=1,
                    help="fresh worker pairs per case, the pairs split over them (default 1)")
    ap.add_argument("--worktrees", default=os.path.join(tempfile.gettempdir(), "pcsim_ab"))
    ap.add_argument("--out", default="results/speed_ab")
    args = ap.parse_args(argv)
    root = Path(args.worktrees)
    root.mkdir(parents=True, exist_ok=True)
    trees = {"ref": checkout(args.ref, root), "new": checkout(args.new, root)}
    started = dt.datetime.now().astimezone()
    rows = []
    for threads in args.threads:
        cores = "0" if threads == 1 else ",".join(str(c) for c in range(threads))
        for case in args.cases:
            for kind_name in args.kinds:
                row = measure_case(trees, case, kind_name, threads, cores, args.pairs,
                                   BATCHES[case], args.starts)
                rows.append(row)
                print(f"{case} {threads}t {kind_name}: new/ref {row['ratio_median']:.3f} "
                      f"(IQR {row['ratio_q1']:.3f}-{row['ratio_q3']:.3f}); ref "
                      f"{row['ref_median']:,.0f}, new {row['new_median']:,.0f} samples/s; "
                      f"by start {', '.join(f'{v:.3f}' for v in row['ratio_by_start'])}",
                      flush=True)
    text = table(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python benchmarks/pingpong_ab.py " + " ".join(argv or sys.argv[1:]),
            "ref": trees["ref"][0], "new": trees["new"][0], "cpu": cpu_model(),
            "started": started.isoformat(timespec="seconds"),
            "finished": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "rows": rows}
    (out / "pingpong.json").write_text(json.dumps(meta, indent=1))
    (out / "pingpong.md").write_text(
        f"ref {trees['ref'][0][:12]} vs new {trees['new'][0][:12]}; {meta['cpu']}; "
        f"{meta['started']} to {meta['finished']}\n\n{text}\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
