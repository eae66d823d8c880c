"""Training speed with the default thread policy against fixed thread counts, on a quiet
machine and with one core kept busy by another process (issue 20's contended setting).

    python benchmarks/thread_policy.py --out results/thread_policy

For each case of ``throughput.py`` (compiled PC, AdamW): a fresh worker process per
measurement, pinned to all cores the benchmark may use, with 1 thread, with every core
as a thread (torch's default), and with pcsim's default (``run.threads`` unset:
:func:`pcsim.engines.torch.device.default_threads`, the cores less those busy at the
start). "loaded" starts a spinning process with a deadline on the last core first, the
same for every contender; the settings are interleaved, ``--rounds`` times, medians
reported. Records ``lscpu``'s model name.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_speed import cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

WORKER = r'''
import json, runpy, sys, time
import torch
from pcsim.engines.torch.device import default_threads
setting, case, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
cores = len(__import__("os").sched_getaffinity(0))
threads = {"1 thread": 1, "all cores": cores}.get(setting) or default_threads()[0]
torch.set_num_threads(threads)
trainer, opt, x, y = runpy.run_path(sys.argv[4])["synthetic_case"]("pc", case, True)
B = x.shape[0]
n, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    trainer.train_batch(x, y, opt)
    n += 1
print(json.dumps({"threads": threads, "samples_per_s": n * B / (time.perf_counter() - start)}))
'''

SPIN = "import time, sys\nd = time.time() + float(sys.argv[1])\nwhile time.time() < d: pass\n"
SETTINGS = ("1 thread", "all cores", "pcsim default")


def measure(setting, case, seconds, cores, load) -> dict:
    spinner = None
    if load:  # busy before the worker starts, as a job already running would be
        spinner = subprocess.Popen(["taskset", "-c", str(cores[-1]), sys.executable, "-c",
                                    SPIN, str(seconds + 60)])
        time.sleep(0.5)
    try:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        env.pop("OMP_NUM_THREADS", None)
        out = subprocess.run(["taskset", "-c", ",".join(map(str, cores)), sys.executable, "-c",
                              WORKER, setting, case, str(seconds),
                              str(REPO / "benchmarks" / "throughput.py")],
                             env=env, capture_output=True, text=True, timeout=600)
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="+", default=["pcx_T5", "pcx_T20"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--out", default="results/thread_policy")
    args = ap.parse_args(argv)
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("needs at least 2 cores")
    started = dt.datetime.now().astimezone()
    samples = {}
    for r in range(args.rounds):
        for case in args.cases:
            for load in (False, True):
                order = SETTINGS[r % 3:] + SETTINGS[:r % 3]
                for setting in order:
                    rec = measure(setting, case, args.seconds, cores, load)
                    samples.setdefault((case, load, setting), []).append(rec)
                    print(f"round {r + 1} {case} {'loaded' if load else 'quiet '} {setting:13s} "
                          f"{rec['threads']} thread(s): {rec['samples_per_s']:,.0f} samples/s",
                          flush=True)
    rows = []
    for (case, load, setting), recs in samples.items():
        rows.append({"case": case, "loaded": load, "setting": setting,
                     "threads": [r["threads"] for r in recs],
                     "samples_per_s": statistics.median(r["samples_per_s"] for r in recs)})
    quiet1 = {r["case"]: r["samples_per_s"] for r in rows
              if not r["loaded"] and r["setting"] == "1 thread"}
    lines = [f"`python benchmarks/thread_policy.py {' '.join(argv or sys.argv[1:])}` on "
             f"{started.date()}, {cpu_model()}, {len(cores)} cores; medians of "
             f"{args.rounds} interleaved rounds, a fresh process each.", "",
             "| case | machine | setting | threads chosen | samples/s | x quiet 1 thread |",
             "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["case"], r["loaded"], SETTINGS.index(r["setting"]))):
        lines.append(f"| {r['case']} | {'one core busy' if r['loaded'] else 'quiet'} | "
                     f"{r['setting']} | {', '.join(map(str, r['threads']))} | "
                     f"{r['samples_per_s']:,.0f} | {r['samples_per_s'] / quiet1[r['case']]:.2f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "thread_policy.json").write_text(json.dumps(
        {"command": "python benchmarks/thread_policy.py " + " ".join(argv or sys.argv[1:]),
         "cpu": cpu_model(), "cores": len(cores), "started": started.isoformat(timespec="seconds"),
         "rows": rows}, indent=1))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
