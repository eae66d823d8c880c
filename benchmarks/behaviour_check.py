"""Behaviour-equality harness: record short reference runs, compare two recordings.

    # record with the code that PYTHONPATH selects (run from that checkout):
    git worktree add "$LANDED" <ref-commit>
    cd "$LANDED" && PYTHONPATH="$LANDED" python benchmarks/behaviour_check.py \\
        record "$REF_DIR" --data-root "$PCSIM_DATA"
    cd "$CHECKOUT" && PYTHONPATH="$CHECKOUT" python benchmarks/behaviour_check.py \\
        record "$NEW_DIR" --data-root "$PCSIM_DATA"
    python benchmarks/behaviour_check.py compare "$REF_DIR" "$NEW_DIR"

``record`` runs pcsim only through ``sys.executable -m pcsim`` subprocesses (with the
caller's environment, so PYTHONPATH decides which pcsim runs; the subprocesses' working
directory is the checkout that pcsim is imported from). Every run is float64, CPU, one
torch thread (and one BLAS thread), 2 epochs on an MNIST subset:

    pc              networks/mnist_pc.yaml              1000 train / 500 test images
    pc_events       networks/mnist_pc_events.yaml       1000 / 500
    pc_autoencoder  networks/mnist_pc_autoencoder.yaml  1000 / 500
    brian2          networks/mnist_brian2.yaml          200 / 200 (numpy target)
    pc_resumed      as pc, run.checkpoint_every=5, killed (SIGKILL, by the process itself)
                    just before its 8th checkpoint write, i.e. after the checkpoint at
                    epoch 2, batch 10 of 16 landed; then `pcsim resume` to the end

The kill point is deterministic: a bootstrap wraps ``torch.save`` and sends SIGKILL to
its own process on the N-th call, before anything of that call is written, then hands
over to ``runpy.run_module("pcsim")`` (the same as ``-m pcsim``). The checkpoint on disk
at the kill is recorded (epoch, batch) and compared too. record.json holds the code's
``git rev-parse HEAD`` (and ``git status --porcelain``), the CPU model (``lscpu``),
library versions, each command and its wall time.

``compare REF_DIR NEW_DIR`` loads both checkpoint.pt of every run (``weights_only=True``)
and compares every tensor and number of the params, optimizer and scheduler state, the
checkpoint's progress (data-order RNG state, position; not its train time), epoch and
metrics, and every value of metrics.json, op_counts.json and energy_report.json except
timing keys (names containing wall_time, samples_per_s, train_time, eval_time,
timestamp, started, finished, resumed). Op-count ``cells`` lists are compared as maps
from their key (phase/step/target/kind) to the count, so their order does not matter.
Leaves are matched by name; where the names of params, optimizer or scheduler state
differ (e.g. params stored as ``{"W": [...], "b": [...]}`` before and
``{"W_1": t, "b_1": t}`` after) they are matched by position if the shapes line up, else
by shape in order, and the table says so; in the JSON records and the checkpoint's
progress and metrics, names missing on one side are listed as rows that fail.
Exit status 0 when every item is bitwise equal or within ``--rtol`` (1e-12, elementwise
``|a - b| / max(|a|, |b|)``), saying which; 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

TORCH_SUBSET = ["data.limit_train=1000", "data.limit_test=500"]
BRIAN2_SUBSET = ["data.limit_train=200", "data.limit_test=200"]
COMMON = ["run.dtype=float64", "run.device=cpu", "run.threads=1", "learning.epochs=2"]

#: name -> (config, extra --set overrides, kill before this torch.save call or None)
RUNS = {
    "pc": ("networks/mnist_pc.yaml", TORCH_SUBSET, None),
    "pc_events": ("networks/mnist_pc_events.yaml", TORCH_SUBSET, None),
    "pc_autoencoder": ("networks/mnist_pc_autoencoder.yaml", TORCH_SUBSET, None),
    "brian2": ("networks/mnist_brian2.yaml", BRIAN2_SUBSET, None),
    # 16 batches/epoch, checkpoints: start, e1 b5/b10/b15, e1 end, e2 b5/b10 -> the 8th
    # save (e2 b15) is never written; the run resumes from epoch 2, batch 10
    "pc_resumed": ("networks/mnist_pc.yaml", TORCH_SUBSET + ["run.checkpoint_every=5"], 8),
}
RUN_FILES = ("metrics.json", "op_counts.json", "energy_report.json")
TIMING = re.compile(r"wall_time|samples_per_s|train_time|eval_time|timestamp|started|finished"
                    r"|resumed")
#: one BLAS/OpenMP thread in every subprocess. brian2's numpy target goes through numpy's
#: OpenBLAS, whose result depends on its thread count (each count is deterministic, but 2
#: threads vs 1 differ at round-off, up to 3e-11 elementwise-relative in Adam's exp_avg)
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

KILL_BOOTSTRAP = r"""
import os, runpy, signal, sys
import torch
_at, _n, _save = int(os.environ["BEHAVIOUR_CHECK_KILL_AT_SAVE"]), [0], torch.save
def save(*args, **kwargs):
    _n[0] += 1
    if _n[0] == _at:  # die like a SIGKILL, before this checkpoint is written
        sys.stdout.flush(); sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return _save(*args, **kwargs)
torch.save = save
sys.argv[0] = "pcsim"
runpy.run_module("pcsim", run_name="__main__", alter_sys=True)
"""

PROBE = r"""
import json, os, sys, platform
import numpy, torch, pcsim
info = {"pcsim_file": pcsim.__file__, "pcsim_version": getattr(pcsim, "__version__", None),
        "python": platform.python_version(), "torch": torch.__version__,
        "numpy": numpy.__version__, "executable": sys.executable}
try:
    import brian2
    info["brian2"] = brian2.__version__
except Exception as exc:
    info["brian2"] = f"unavailable: {exc}"
print(json.dumps(info))
"""


# --------------------------------------------------------------------------- record


def _sh(cmd, cwd=None) -> str:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"unavailable: {exc}"


def _cpu_model() -> str:
    for line in _sh(["lscpu"]).splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _env() -> dict:
    env = dict(os.environ)
    env.update(THREAD_ENV)
    return env


def _run(cmd, cwd, env, log: Path) -> tuple:
    t0 = time.perf_counter()
    with open(log, "ab") as fh:
        fh.write(("$ " + " ".join(cmd) + "\n").encode())
        fh.flush()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    return proc.returncode, time.perf_counter() - t0


def record(out_dir: Path, data_root: str | None) -> int:
    env = _env()
    if data_root:
        data_root = str(Path(data_root).resolve())
    elif not env.get("PCSIM_DATA"):
        print("record: give --data-root or set PCSIM_DATA", file=sys.stderr)
        return 2
    out_dir = out_dir.resolve()
    if out_dir.exists() and any(out_dir.iterdir()):
        print(f"record: {out_dir} exists and is not empty", file=sys.stderr)
        return 2
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    probe = json.loads(subprocess.run([sys.executable, "-c", PROBE], env=env, check=True,
                                      capture_output=True, text=True,
                                      cwd=os.getcwd()).stdout)
    code_dir = Path(probe["pcsim_file"]).resolve().parent.parent
    info = {
        "code_dir": str(code_dir),
        "git_head": _sh(["git", "rev-parse", "HEAD"], cwd=code_dir),
        "git_status": _sh(["git", "status", "--porcelain"], cwd=code_dir).splitlines(),
        "cpu_model": _cpu_model(),
        "versions": probe,
        "pythonpath": env.get("PYTHONPATH"),
        "thread_env": THREAD_ENV,
        "data_root": data_root or env.get("PCSIM_DATA"),
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "runs": {},
    }
    print(f"recording {code_dir} @ {info['git_head'][:12]}"
          f"{' (dirty)' if info['git_status'] else ''}, {info['cpu_model']} -> {out_dir}")
    failed = False
    t_all = time.perf_counter()
    for name, (config, extra, kill_at) in RUNS.items():
        cfg_path = code_dir / config
        sets = [*COMMON, *extra, f"run.name={name}"]
        args = ["run", config, *[t for s in sets for t in ("--set", s)],
                "--out", str(out_dir), "--no-progress"]
        if data_root:
            args += ["--data-root", data_root]
        log = out_dir / "logs" / f"{name}.log"
        entry = {"config": config,
                 "config_sha256": hashlib.sha256(cfg_path.read_bytes()).hexdigest(),
                 "overrides": sets}
        if kill_at is None:
            cmd = [sys.executable, "-m", "pcsim", *args]
            rc, wall = _run(cmd, code_dir, env, log)
            entry.update(cmd=cmd, returncode=rc, wall_s=round(wall, 2))
            ok = rc == 0
        else:
            cmd = [sys.executable, "-c", KILL_BOOTSTRAP, *args]
            rc, wall = _run(cmd, code_dir, {**env, "BEHAVIOUR_CHECK_KILL_AT_SAVE": str(kill_at)},
                            log)
            entry.update(interrupt_cmd=cmd, interrupt_env={"BEHAVIOUR_CHECK_KILL_AT_SAVE":
                                                           str(kill_at)},
                         interrupt_returncode=rc, interrupt_wall_s=round(wall, 2))
            ok = rc == -9
            if not ok:
                print(f"  {name}: the interrupted run exited {rc}, not by SIGKILL at "
                      f"checkpoint write {kill_at}", file=sys.stderr)
            else:
                entry["interrupted_at"] = _checkpoint_position(out_dir / name)
                cmd = [sys.executable, "-m", "pcsim", "resume", str(out_dir / name),
                       "--no-progress"] + (["--data-root", data_root] if data_root else [])
                rc, wall2 = _run(cmd, code_dir, env, log)
                entry.update(cmd=cmd, returncode=rc, resume_wall_s=round(wall2, 2),
                             wall_s=round(wall + wall2, 2))
                ok = rc == 0
        failed |= not ok
        info["runs"][name] = entry
        where = f", interrupted at {entry['interrupted_at']}" if "interrupted_at" in entry else ""
        print(f"  {name}: {'ok' if ok else 'FAILED (see ' + str(log) + ')'}, "
              f"{entry.get('wall_s', entry.get('interrupt_wall_s'))} s{where}")
    info["total_wall_s"] = round(time.perf_counter() - t_all, 2)
    if not failed:  # resuming must reproduce the uninterrupted run
        items = compare_run(out_dir / "pc", out_dir / "pc_resumed")
        verdict = _verdict(items, 1e-12)
        info["resumed_vs_uninterrupted"] = verdict
        print(f"  pc_resumed vs pc (uninterrupted): {verdict}")
        failed |= verdict == "different"
    (out_dir / "record.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"total {info['total_wall_s']} s; {out_dir / 'record.json'}")
    return 1 if failed else 0


def _checkpoint_position(run_dir: Path):
    import torch
    ckpt = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    prog = ckpt.get("progress") or {}
    return {"epoch_done": ckpt.get("epoch"), "epoch": prog.get("epoch"),
            "batch": prog.get("batch")}


# --------------------------------------------------------------------------- flatten


def _canon_cells(cells):
    """[[phase, step, target, kind, count], ...] -> {"phase/step/target/kind": count}."""
    if isinstance(cells, list) and all(isinstance(c, (list, tuple)) and len(c) >= 2
                                       for c in cells):
        return {"/".join(str(x) for x in c[:-1]): c[-1] for c in cells}
    return cells


def flatten(obj, prefix: str = "") -> list:
    """Ordered ``[(name, leaf)]``; drops timing keys; leaves are tensors, numbers, str, None."""
    out = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if TIMING.search(str(key)):
                continue
            if key == "cells":
                value = _canon_cells(value)
            out += flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            out += flatten(value, f"{prefix}.{i}" if prefix else str(i))
    else:
        out.append((prefix, obj))
    return out


def _shape(leaf):
    import torch
    if torch.is_tensor(leaf):
        return tuple(leaf.shape)
    if isinstance(leaf, (int, float)) and not isinstance(leaf, bool):
        return ()
    return type(leaf).__name__


def match(ref: list, new: list, fallback: bool = True) -> tuple:
    """Pair the leaves of two flattened structures: ``(pairs, missing, extra, method)``.

    By name; where the names differ and ``fallback``, by position (if the shapes line up)
    or by shape in order. Without ``fallback`` (JSON records), the common names are
    paired and the rest reported missing or extra."""
    rn, nn = [n for n, _ in ref], [n for n, _ in new]
    if (set(rn) == set(nn) or not fallback) and len(rn) == len(set(rn)):
        d = dict(new)
        return ([(n, n, v, d[n]) for n, v in ref if n in d], [n for n in rn if n not in d],
                [n for n in nn if n not in set(rn)], "by name")
    if len(ref) == len(new) and all(_shape(a) == _shape(b) for (_, a), (_, b) in zip(ref, new)):
        return ([(a, b, va, vb) for (a, va), (b, vb) in zip(ref, new)], [], [],
                "positional (names differ)")
    used, pairs, missing = set(), [], []
    for a, va in ref:
        for j, (b, vb) in enumerate(new):
            if j not in used and _shape(va) == _shape(vb):
                used.add(j)
                pairs.append((a, b, va, vb))
                break
        else:
            missing.append(a)
    extra = [b for j, (b, _) in enumerate(new) if j not in used]
    return pairs, missing, extra, "by shape in order (names differ)"


# --------------------------------------------------------------------------- compare


def compare_leaf(a, b) -> dict:
    """``{"bitwise", "abs", "rel", "scale", "note"}`` for two leaves."""
    import torch
    ta, tb = torch.is_tensor(a), torch.is_tensor(b)
    num = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
    if not (ta or num(a)) or not (tb or num(b)):  # str, bool, None, ...
        same = type(a) is type(b) and a == b
        return {"bitwise": same, "abs": 0.0 if same else math.inf,
                "rel": 0.0 if same else math.inf, "scale": 0.0,
                "note": "" if same else f"{a!r} != {b!r}"[:120]}
    note = ""
    if ta and tb:
        if a.shape != b.shape:
            return {"bitwise": False, "abs": math.inf, "rel": math.inf, "scale": 0.0,
                    "note": f"shape {tuple(a.shape)} vs {tuple(b.shape)}"}
        raw = (lambda t: t.detach().cpu().reshape(-1).contiguous().view(torch.uint8))
        bitwise = a.dtype == b.dtype and torch.equal(raw(a), raw(b))  # NaN payloads, -0.0
        if a.dtype != b.dtype:
            note = f"dtype {a.dtype} vs {b.dtype}"
    elif not ta and not tb:
        bitwise = type(a) is type(b) and (a == b or (isinstance(a, float) and math.isnan(a)
                                                     and math.isnan(b)))
        if isinstance(a, float) and isinstance(b, float) and a == b == 0.0:
            bitwise = math.copysign(1, a) == math.copysign(1, b)
        if type(a) is not type(b):
            note = f"{type(a).__name__} vs {type(b).__name__}"
    else:
        t = a if ta else b
        if t.numel() != 1:
            return {"bitwise": False, "abs": math.inf, "rel": math.inf, "scale": 0.0,
                    "note": f"tensor {tuple(t.shape)} vs number"}
        bitwise = False
        note = "tensor vs number"
    if bitwise:
        return {"bitwise": True, "abs": 0.0, "rel": 0.0, "scale": 0.0, "note": note}
    x = a.detach().cpu().to(torch.float64) if ta else torch.tensor(float(a), dtype=torch.float64)
    y = b.detach().cpu().to(torch.float64) if tb else torch.tensor(float(b), dtype=torch.float64)
    x, y = x.reshape(-1), y.reshape(-1)
    if x.numel() == 0:
        return {"bitwise": False, "abs": 0.0, "rel": 0.0, "scale": 0.0, "note": note}
    both_nan = torch.isnan(x) & torch.isnan(y)
    same_inf = torch.isinf(x) & (x == y)
    ok = both_nan | same_inf
    diff = torch.where(ok, torch.zeros_like(x), (x - y).abs())
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)
    den = torch.maximum(x.abs(), y.abs())
    rel = torch.where(diff == 0, torch.zeros_like(diff), diff / den)
    ref_max = float(torch.where(torch.isfinite(x), x.abs(), torch.zeros_like(x)).max())
    dmax = float(diff.max())
    return {"bitwise": False, "abs": dmax, "rel": float(rel.max()),
            "scale": dmax / ref_max if ref_max > 0 else (0.0 if dmax == 0 else math.inf),
            "note": note}


def _group(name: str, ref, new, per_leaf: bool, fallback: bool = False) -> list:
    """Rows comparing two structures: one per leaf, or one for the whole structure."""
    if ref is None and new is None:
        return [{"item": name, "bitwise": True, "abs": 0.0, "rel": 0.0, "scale": 0.0,
                 "note": "absent in both"}]
    if ref is None or new is None:
        return [{"item": name, "bitwise": False, "abs": math.inf, "rel": math.inf,
                 "scale": math.inf, "note": f"absent in {'ref' if ref is None else 'new'}"}]
    pairs, missing, extra, method = match(flatten(ref), flatten(new), fallback)
    rows, details = [], []
    for a, b, va, vb in pairs:
        r = compare_leaf(va, vb)
        label = a if a == b else f"{a} ~ {b}"
        if per_leaf:
            rows.append({"item": f"{name} {label}".strip(), **r})
        elif not r["bitwise"]:
            details.append(f"{label}: abs {r['abs']:.3g}, rel {r['rel']:.3g} {r['note']}".strip())
    if not per_leaf:
        rs = [compare_leaf(va, vb) for _, _, va, vb in pairs]
        rows.append({"item": f"{name} ({len(pairs)} values)",
                     "bitwise": all(r["bitwise"] for r in rs),
                     "abs": max((r["abs"] for r in rs), default=0.0),
                     "rel": max((r["rel"] for r in rs), default=0.0),
                     "scale": max((r["scale"] for r in rs), default=0.0),
                     "note": "; ".join(details[:5]) + (f"; ... {len(details) - 5} more"
                                                       if len(details) > 5 else "")})
    for m in missing:
        rows.append({"item": f"{name} {m}", "bitwise": False, "abs": math.inf, "rel": math.inf,
                     "scale": math.inf, "note": "missing in new"})
    for e in extra:
        rows.append({"item": f"{name} {e}", "bitwise": False, "abs": math.inf, "rel": math.inf,
                     "scale": math.inf, "note": "extra in new"})
    if method != "by name" and rows:
        rows[0]["note"] = f"matched {method}; " + rows[0]["note"]
    return rows


def _load_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def compare_run(ref_dir: Path, new_dir: Path) -> list:
    import torch
    rows = []
    ckpts = []
    for d in (ref_dir, new_dir):
        p = d / "checkpoint.pt"
        ckpts.append(torch.load(p, map_location="cpu", weights_only=True) if p.exists() else None)
    if ckpts[0] is None or ckpts[1] is None:
        rows.append({"item": "checkpoint.pt", "bitwise": ckpts[0] is ckpts[1], "abs": math.inf,
                     "rel": math.inf, "scale": math.inf,
                     "note": f"absent in {'ref' if ckpts[0] is None else 'new'}"})
    else:
        a, b = ckpts
        rows += _group("params", a.get("params"), b.get("params"), per_leaf=True,
                       fallback=True)
        oa, ob = a.get("optimizer"), b.get("optimizer")
        if oa is None or ob is None:
            rows += _group("optimizer", oa, ob, per_leaf=False)
        else:
            rows += _group("optimizer state", oa.get("state"), ob.get("state"), per_leaf=True,
                           fallback=True)
            rows += _group("optimizer param_groups", oa.get("param_groups"),
                           ob.get("param_groups"), per_leaf=False, fallback=True)
        rows += _group("scheduler", a.get("scheduler"), b.get("scheduler"), per_leaf=False,
                       fallback=True)
        rows += _group("checkpoint epoch", a.get("epoch"), b.get("epoch"), per_leaf=False)
        rows += _group("checkpoint progress", a.get("progress"), b.get("progress"),
                       per_leaf=False)
        rows += _group("checkpoint metrics", a.get("metrics"), b.get("metrics"), per_leaf=False)
    for f in RUN_FILES:
        rows += _group(f, _load_json(ref_dir / f), _load_json(new_dir / f), per_leaf=False)
    return rows


def _status(row, rtol) -> str:
    if row["bitwise"]:
        return "bitwise"
    return "rtol" if row["rel"] <= rtol else "different"


def _verdict(rows, rtol) -> str:
    s = {_status(r, rtol) for r in rows}
    return "different" if "different" in s else ("within rtol" if "rtol" in s else "bitwise")


def _fmt(x: float) -> str:
    return "0" if x == 0 else f"{x:.3g}"


def table(rows, rtol) -> str:
    lines = ["| item | bitwise equal | max abs diff | max rel diff | max abs diff / max abs ref "
             "| note |", "|---|---|---|---|---|---|"]
    for r in rows:
        st = _status(r, rtol)
        eq = "yes" if st == "bitwise" else ("no (within rtol)" if st == "rtol" else "**NO**")
        note = r["note"].replace("|", "\\|")
        lines.append(f"| {r['item']} | {eq} | {_fmt(r['abs'])} | {_fmt(r['rel'])} "
                     f"| {_fmt(r['scale'])} | {note} |")
    return "\n".join(lines)


def compare(ref: Path, new: Path, rtol: float) -> int:
    rec = [_load_json(d / "record.json") or {} for d in (ref, new)]
    names = list(rec[0].get("runs") or RUNS)
    for label, r in zip(("ref", "new"), rec):
        print(f"- {label}: {Path(str(r.get('code_dir'))).name} @ {str(r.get('git_head'))[:12]}"
              f"{' (dirty: ' + str(len(r['git_status'])) + ' paths)' if r.get('git_status') else ''}"
              f", {r.get('cpu_model')}, torch {r.get('versions', {}).get('torch')}, "
              f"brian2 {r.get('versions', {}).get('brian2')}")
    for key, what in (("cpu_model", "CPU models"), ("thread_env", "BLAS/OpenMP thread settings"),
                      ("versions", "library versions")):
        va, vb = rec[0].get(key), rec[1].get(key)
        if key == "versions" and va and vb:
            va, vb = ({k: v for k, v in x.items() if k not in ("pcsim_file", "executable")}
                      for x in (va, vb))
        if va != vb:
            print(f"- note: recorded with different {what}; bitwise equality is not expected")
    verdicts = {}
    for name in names:
        print(f"\n### {name}\n")
        rows = compare_run(ref / name, new / name)
        ra, rb = (r.get("runs", {}).get(name, {}) for r in rec)
        if "interrupted_at" in ra or "interrupted_at" in rb:
            rows += _group("interrupted at", ra.get("interrupted_at"), rb.get("interrupted_at"),
                           per_leaf=False)
        print(table(rows, rtol))
        if ra.get("config_sha256") != rb.get("config_sha256"):
            print(f"\nnote: {ra.get('config')} differs between the recordings")
        verdicts[name] = _verdict(rows, rtol)
    print("\n### summary\n")
    for name, v in verdicts.items():
        print(f"- {name}: {v}")
    overall = _verdict([{"bitwise": v == "bitwise", "rel": 0.0 if v != "different" else math.inf}
                        for v in verdicts.values()], rtol)
    print(f"\noverall: {overall}" + (f" (rtol {rtol:g})" if overall == "within rtol" else ""))
    return 1 if overall == "different" else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rp = sub.add_parser("record", help="run the reference runs into OUT_DIR")
    rp.add_argument("out_dir", type=Path)
    rp.add_argument("--data-root", help="MNIST root (else $PCSIM_DATA)")
    cp = sub.add_parser("compare", help="compare two recordings")
    cp.add_argument("ref_dir", type=Path)
    cp.add_argument("new_dir", type=Path)
    cp.add_argument("--rtol", type=float, default=1e-12,
                    help="elementwise relative tolerance (default 1e-12)")
    args = parser.parse_args(argv)
    if args.command == "record":
        return record(args.out_dir, args.data_root)
    return compare(args.ref_dir, args.new_dir, args.rtol)


if __name__ == "__main__":
    sys.exit(main())
