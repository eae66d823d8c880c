"""Training throughput of two pcsim commits side by side, in one run.

    python benchmarks/compare_speed.py --ref 25e60ac --new HEAD --out results/speed_ab

Each commit is checked out (``git worktree``, detached, clean) into a temporary folder,
and every measurement is one harness -- this checkout's ``benchmarks/throughput.py``
worker, the same code for both sides -- run with ``PYTHONPATH`` set to the commit's
checkout: the worker first proves which pcsim it imported (``pcsim.__file__`` must lie
in that checkout, else the run stops). Each worker times ``--repeats`` windows after its
warm-up and reports the median and the best window; on a shared machine noise only ever
slows a window down, so the best window is the steadier estimate of a commit's speed. Measurements are
pinned to cores (``taskset``: core 0 for 1 thread, cores 0-1 for 2; ``--cores`` moves
the 1-thread setting elsewhere) and interleaved ABBA: in round ``r`` the order of the two
commits is reversed from round ``r - 1``, for every case, thread setting and kind, so
drift of a noisy machine falls on both alike. The table reports per contender the median
samples/s over rounds (of each worker's best window) and the ratio new / ref of those
medians, with each round's ratio (the pair measured back to back) beside it, and the
same ratio of the workers' median windows, and the ratio of each side's best window over
all rounds (the least disturbed measurement of each).
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

REPO = Path(__file__).resolve().parents[1]
KINDS = {"pc compiled": ("pc", True), "pc eager": ("pc", False), "bp": ("bp", False),
         "bp compiled": ("bp", True)}

PROBE = ("import os, runpy, sys; tree = os.environ['PCSIM_AB_TREE']; import pcsim; "
         "assert os.path.realpath(pcsim.__file__).startswith(os.path.realpath(tree) + os.sep), "
         "f'imported {pcsim.__file__}, not the checkout {tree}'; "
         "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def _git(*args, cwd=REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def checkout(rev: str, root: Path) -> tuple[str, Path]:
    """A clean detached worktree of ``rev`` under ``root``; returns (full sha, path)."""
    sha = _git("rev-parse", "--verify", rev + "^{commit}")
    path = root / sha[:12]
    if not path.exists():
        _git("worktree", "add", "--detach", str(path), sha)
    return sha, path


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def measure(tree: Path, kind: str, compile: bool, case: str, threads: int, cores: str,
            args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "record.json"
        cmd = [sys.executable, "-c", PROBE, str(REPO / "benchmarks" / "throughput.py"),
               "--worker", kind, "--kind", kind, "--case", case, "--threads", str(threads),
               "--device", "cpu", "--repeats", str(args.repeats), "--warmup", str(args.warmup),
               "--json", str(out)]
        if args.measure:
            cmd += ["--measure", str(args.measure)]
        if args.data_root:
            cmd += ["--data-root", args.data_root]
        if compile:
            cmd.append("--compile")
        env = dict(os.environ, PYTHONPATH=str(tree), PCSIM_AB_TREE=str(tree),
                   OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        if sys.platform.startswith("linux"):
            cmd = ["taskset", "-c", cores] + cmd
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True,
                              timeout=args.timeout)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"{tree.name} {kind} {case} {threads}t failed:\n"
                               f"{(proc.stderr or proc.stdout)[-1500:]}")
        return json.loads(out.read_text())


def table(records: list[dict], ref: str, new: str) -> str:
    lines = ["| case | threads | kind | ref samples/s | new samples/s | new / ref | "
             "per-round ratios | new / ref of median windows | new / ref of the best window "
             "of all rounds |", "|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["case"], r["threads"], r["kind"]) for r in records},
                  key=lambda k: (k[0], k[1], list(KINDS).index(k[2])))
    for case, threads, kind in keys:
        rows = [r for r in records if (r["case"], r["threads"], r["kind"]) == (case, threads, kind)]
        by = {side: {r["round"]: r.get("best_samples_per_s", r["samples_per_s"])
                     for r in rows if r["side"] == side} for side in ("ref", "new")}
        mid = {side: statistics.median(r["samples_per_s"] for r in rows if r["side"] == side)
               for side in ("ref", "new")}
        med = {side: statistics.median(v.values()) for side, v in by.items()}
        per_round = [by["new"][k] / by["ref"][k] for k in sorted(by["ref"]) if k in by["new"]]
        top = {side: max(v.values()) for side, v in by.items()}
        lines.append(f"| {case} | {threads} | {kind} | {med['ref']:,.0f} | {med['new']:,.0f} | "
                     f"{med['new'] / med['ref']:.3f} | "
                     f"{', '.join(f'{x:.3f}' for x in per_round)} | "
                     f"{mid['new'] / mid['ref']:.3f} | {top['new'] / top['ref']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", default="25e60ac", help="the commit to compare against")
    ap.add_argument("--new", default="HEAD", help="the commit under test")
    ap.add_argument("--cases", nargs="+", default=["pcx_T5", "pcx_T20", "wide"])
    ap.add_argument("--kinds", nargs="+", default=["pc compiled", "pc eager"],
                    choices=sorted(KINDS))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cores", default="0", help="the core(s) of the 1-thread setting")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--measure", type=int, default=None, help="batches per timed window")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5, help="timed windows per worker")
    ap.add_argument("--timeout", type=int, default=1200)
    ap.add_argument("--data-root", default=os.environ.get("PCSIM_DATA"))
    ap.add_argument("--worktrees", default=os.path.join(tempfile.gettempdir(), "pcsim_ab"))
    ap.add_argument("--out", default="results/speed_ab")
    ap.add_argument("--retable", help="print the table of a finished run's speed_ab.json")
    args = ap.parse_args(argv)
    if args.retable:
        print(retable(args.retable))
        return 0

    root = Path(args.worktrees)
    root.mkdir(parents=True, exist_ok=True)
    trees = {"ref": checkout(args.ref, root), "new": checkout(args.new, root)}
    records = []
    started = dt.datetime.now().astimezone()
    for r in range(args.rounds):
        order = ("ref", "new") if r % 2 == 0 else ("new", "ref")
        for threads in args.threads:
            cores = args.cores if threads == 1 else ",".join(str(c) for c in range(threads))
            for case in args.cases:
                for kind_name in args.kinds:
                    kind, compile = KINDS[kind_name]
                    for side in order:
                        rec = measure(trees[side][1], kind, compile, case, threads, cores, args)
                        rec.update(side=side, round=r, kind=kind_name, case=case,
                                   threads=threads, sha=trees[side][0])
                        records.append(rec)
                        print(f"round {r} {side} {case} {threads}t {kind_name}: best "
                              f"{rec['best_samples_per_s']:,.0f}, median "
                              f"{rec['samples_per_s']:,.0f} samples/s", flush=True)
    text = table(records, *(trees[s][0] for s in ("ref", "new")))
    write_outputs(args, argv, trees, records, started, text)
    print(text)
    return 0


def write_outputs(args, argv, trees, records, started, text) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python benchmarks/compare_speed.py " + " ".join(argv or sys.argv[1:]),
            "ref": trees["ref"][0], "new": trees["new"][0], "cpu": cpu_model(),
            "started": started.isoformat(timespec="seconds"),
            "finished": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "records": records}
    (out / "speed_ab.json").write_text(json.dumps(meta, indent=1))
    (out / "table.md").write_text(
        f"ref {trees['ref'][0][:12]} vs new {trees['new'][0][:12]}; {meta['cpu']}; "
        f"{meta['started']}\n\n{text}\n")


def retable(path) -> str:
    """The table of a finished run's ``speed_ab.json`` (``--retable``)."""
    meta = json.loads(Path(path).read_text())
    return table(meta["records"], meta["ref"], meta["new"])


if __name__ == "__main__":
    sys.exit(main())
