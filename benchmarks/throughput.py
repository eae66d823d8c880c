"""Training throughput of pcsim PC, pcsim's BP baseline, PCX and FabricPC, side by side.

    python benchmarks/throughput.py --out results/throughput \\
        --pcx-python /path/to/pcx-venv/bin/python --fabricpc-python /path/to/fabricpc-venv/bin/python

Cases (PCX's own Fashion-MNIST MLP benchmark and a wide network):

* ``pcx_T5``:  784-128-128-128-10 GELU, batch 128, T = 5
* ``pcx_T20``: the same at T = 20
* ``wide``:    784-1024-1024-10 GELU, batch 512, T = 20
* ``cifar_conv``: ``networks/cifar10_pc.yaml``'s conv net on CIFAR-10 (3 conv-GELU-avg-pool
  blocks of 32, 64, 128 channels, dense head), batch 128, T = 5, eta_x = 0.1; PCX runs the
  same network (``external/pcx_conv.py``); FabricPC has no runner for it

``--contended`` adds a third setting after 1 and 2 threads: both cores, with a spinning
process (a deadline of its own) on the last core started before each measurement, the
same for every contender; pcsim runs with its default thread policy there
(``run.threads`` unset: :func:`pcsim.engines.torch.device.default_threads`) and the JAX
libraries with theirs.

Every measurement runs in its own subprocess pinned to the cores of its thread setting
(``taskset -c 0`` for 1 thread, ``-c 0,1`` for 2), and the rounds are interleaved
(for each round, for each thread setting, for each case, for each contender), so slow
drift of a noisy machine falls on all contenders alike; the table reports medians. The
start-up is timed apart as ``compile_s``: the first (jit-compiling) batch of PCX and
FabricPC, the first two batches of pcsim's compiled engine (the first runs eagerly and
creates the optimizer's state, the second compiles cycle and update). The float32 GEMM
peak is measured in the same run, per thread setting. Effective GFLOP/s counts the
matrix FLOPs of the algorithm as pcsim schedules it (``pcsim.model.costs``: the clamped
input's product once per batch) for every PC contender, so a library that recomputes it
does more work than it is credited with. Executed GFLOP/s counts what pcsim's fast path
runs (``pc_train_cost(..., wavefront=True)``: the products of exactly-zero errors in the
first ``L - 1`` steps are skipped); the share of the GEMM peak is taken from it.

``--accuracy`` first trains pcsim and PCX for 25 epochs on the ``pcx_T5`` case and
refuses to compare speed when their test accuracies differ by more than 0.3 points.

``--device cuda`` runs the pcsim contenders on the GPU (the compiled cycle with the
update in its graph; CUDA graphs are not used), one CPU thread each, with timed windows
25x longer, and skips the JAX libraries unless their Python is given:

    python benchmarks/throughput.py --device cuda --compile --rounds 2 --out results/throughput_gpu
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "pcx_T5": {"widths": [784, 128, 128, 128, 10], "batch": 128, "T": 5, "measure": 150},
    "pcx_T20": {"widths": [784, 128, 128, 128, 10], "batch": 128, "T": 20, "measure": 60},
    "wide": {"widths": [784, 1024, 1024, 10], "batch": 512, "T": 20, "measure": 8},
    "cifar_conv": {"config": "networks/cifar10_pc.yaml", "batch": 128, "T": 5, "measure": 6,
                   "eta_x": 0.1, "dataset": "cifar10", "external": {"pcx": "pcx_conv.py"}},
}
#: the contended setting: its label in the tables, the cores it pins, the busy core
CONTENDED = "2, one busy"
SPIN = "import time, sys\nd = time.time() + float(sys.argv[1])\nwhile time.time() < d: pass\n"
#: a GPU runs these cases some 20-100x faster: longer windows keep them timeable
GPU_WINDOW = 25
#: PCX's benchmark hyperparameters (examples/.../L_PC_SE_fmnist.yaml)
LR_X, LR_W, WD_W = 0.026070879231635192, 0.0002972210629627541, 0.0018383293983087593


# ---------------------------------------------------------------------------- workers
def _network(widths, activation="gelu"):
    from pcsim.config.schema import NetworkConfig
    from pcsim.model import Network
    layers = ([{"size": widths[0]}] + [{"size": w, "activation": activation} for w in widths[1:-1]]
              + [{"size": widths[-1], "activation": "identity"}])
    return Network.from_config(NetworkConfig(layers=layers))


def _case_network(c):
    """The :class:`~pcsim.model.Network` of a case: its widths, or its config's layers."""
    if "config" not in c:
        return _network(c["widths"])
    import yaml

    from pcsim.config import config_from_dict
    from pcsim.model import Network
    spec = yaml.safe_load((REPO / c["config"]).read_text())
    return Network.from_config(config_from_dict({"network": spec["network"]}).network)


def _trainer(kind, network, T, eta_x, device, compile):
    import torch

    from pcsim.config.schema import DynamicsConfig, LearningConfig
    from pcsim.engines.torch.backprop import BackpropTrainer
    from pcsim.engines.torch.engine import TorchEngine
    from pcsim.engines.torch.optim import make_optimizer
    if kind == "bp":  # compiled like PC when asked (older pcsim's BP has no compile)
        trainer = BackpropTrainer(network, device=device, **({"compile": True} if compile else {}))
    else:
        tau_x = 10e-3
        dyn = DynamicsConfig(tau_x=tau_x, dt=eta_x * tau_x, n_steps=T)
        trainer = TorchEngine(network, dyn, device=device, compile=compile)
    opt = make_optimizer(LearningConfig(optimizer="adamw", lr=LR_W, weight_decay=WD_W),
                         trainer.parameters())
    torch.manual_seed(0)
    return trainer, opt


def synthetic_case(kind, case, compile, warmup=8, device="cpu"):
    """A warm ``(trainer, optimizer, x, y)`` for ``case`` on one fixed random batch
    (seed 0): what ``pingpong_ab.py``, ``thread_policy.py`` and ``profile_cycle.py``
    time, each in its own process. ``warmup`` batches first create the optimizer's
    state and compile."""
    import torch
    c = CASES[case]
    network = _case_network(c)
    trainer, opt = _trainer(kind, network, c["T"], c.get("eta_x", LR_X), torch.device(device),
                            compile)
    g = torch.Generator().manual_seed(0)
    n_in, n_out = network.layers[0].size, network.layers[-1].size
    x = torch.rand(c["batch"], n_in, generator=g)
    y = torch.nn.functional.one_hot(torch.randint(0, n_out, (c["batch"],), generator=g),
                                    n_out).float()
    for _ in range(warmup):
        trainer.train_batch(x, y, opt)
    return trainer, opt, x, y


def _best_gemm(product, n, sync=lambda: None) -> float:
    """GFLOP/s of the best of 8 rounds of four ``n^3`` products."""
    best = 0.0
    for _ in range(8):
        start = time.perf_counter()
        for _ in range(4):
            product()
        sync()
        best = max(best, 4 * 2 * n ** 3 / (time.perf_counter() - start) / 1e9)
    return best


def gemm_worker(device) -> dict:
    """float32 GEMM rates of torch and (on the CPU) numpy's BLAS in this process; the
    driver adds XLA's from a JAX environment and takes the best as the GEMM peak."""
    import numpy as np
    import torch
    n = 4096 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    by = {f"torch {torch.__version__}": _best_gemm(lambda: a @ b, n, sync)}
    if device.type == "cpu":
        an, bn = a.numpy(), b.numpy()
        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
        by[f"numpy {np.__version__} ({blas.get('name', 'BLAS')})"] = _best_gemm(lambda: an @ bn, n)
    return {"kind": "gemm", "gflops": max(by.values()), "by": by,
            "threads": torch.get_num_threads()}


def worker(args) -> dict:
    """Measure one contender in this process; return its JSON record."""
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    elif args.device.startswith("cpu"):  # the contended setting: pcsim's default policy
        from pcsim.engines.torch.device import default_threads
        torch.set_num_threads(default_threads()[0])
    device = torch.device(args.device)
    if args.kind == "gemm":
        return gemm_worker(device)

    from pcsim.data import load_dataset, resolve_data_root
    from pcsim.model.costs import bp_train_cost, pc_train_cost
    case = CASES[args.case]
    network = _case_network(case)
    data = load_dataset(case.get("dataset", "fashion_mnist"),
                        resolve_data_root(None, args.data_root)).to(device, torch.float32)
    B, n = case["batch"], data.train_x.shape[0]
    trainer, opt = _trainer(args.kind, network, case["T"], case.get("eta_x", LR_X), device,
                            args.compile)
    cost = bp_train_cost(network) if args.kind == "bp" else pc_train_cost(network, case["T"])
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).to(device)
    targets = data.one_hot(data.train_y, torch.float32)
    k = 0

    def batch():
        nonlocal k
        start = (k * B) % (n - B)
        k += 1
        idx = order[start:start + B]
        return data.train_x[idx], targets[idx]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    # the compiled engine runs its first batch eagerly (the optimizer creates its state)
    # and compiles cycle and update together on the second: both count as start-up
    start = time.perf_counter()
    for _ in range(2 if args.compile else 1):
        trainer.train_batch(*batch(), opt)
    sync()
    compile_s = time.perf_counter() - start
    for _ in range(args.warmup):
        trainer.train_batch(*batch(), opt)
    rates = []
    measure = args.measure or _measure(args.case, args.device)
    for _ in range(args.repeats):
        batches = [batch() for _ in range(measure)]
        sync()
        start = time.perf_counter()
        for x, y in batches:
            trainer.train_batch(x, y, opt)
        sync()
        rates.append(measure * B / (time.perf_counter() - start))
    rate = statistics.median(rates)
    return {"kind": args.kind, "case": args.case, "samples_per_s": rate,
            "best_samples_per_s": max(rates), "compile_s": compile_s,
            "flops_per_sample": cost.flops, "gflops": rate * cost.flops / 1e9,
            "threads": torch.get_num_threads(), "compile": args.compile,
            "device": str(device)}


def accuracy_worker(args) -> dict:
    """Train pcsim PC on the pcx_T5 case for ``--epochs`` and report test accuracy."""
    import torch
    from pcsim.config import config_from_dict
    from pcsim.experiment import run_experiment
    case = CASES["pcx_T5"]
    layers = ([{"size": 784}] + [{"size": w, "activation": "gelu"} for w in case["widths"][1:-1]]
              + [{"size": 10, "activation": "identity"}])
    config = config_from_dict({
        "network": {"layers": layers, "init": args.init},
        "dynamics": {"tau_x": 0.01, "dt": args.eta_x * 0.01, "n_steps": case["T"]},
        "learning": {"rule": "pc", "optimizer": "adamw", "lr": LR_W, "weight_decay": WD_W,
                     "lr_schedule": "cosine", "batch_size": case["batch"],
                     "epochs": args.epochs, "seed": 0},
        "data": {"dataset": "fashion_mnist"},
        "run": {"device": args.device, "threads": args.threads, "compile": args.compile,
                "progress": False, "count_ops": False, "out": args.runs,
                "name": "pcsim_acc_" + dt.datetime.now().strftime("%Y%m%d-%H%M%S")}})
    start = time.perf_counter()
    result = run_experiment(config, data_root=args.data_root)
    return {"kind": "pcsim-accuracy", "test_accuracy": result.final_accuracy,
            "test_accuracy_per_epoch": [m["test_accuracy"] for m in result.metrics],
            "eta_x": args.eta_x, "init": args.init, "train_wall_s": time.perf_counter() - start,
            "threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------- driver
def _portable(argv) -> str:
    """The command line with this machine's paths written as the environment variables
    that hold them (``$PCSIM_DATA``, ``$PCSIM_PCX_PYTHON``, ``$PCSIM_FABRICPC_PYTHON``)."""
    names = {os.environ[k]: "$" + k for k in ("PCSIM_DATA", "PCSIM_PCX_PYTHON",
                                              "PCSIM_FABRICPC_PYTHON") if os.environ.get(k)}
    return " ".join(names.get(token) or shlex.quote(token) for token in argv)


def _measure(case, device):
    """Batches per timed window: a few seconds on this CPU, about as long on a GPU."""
    return CASES[case]["measure"] * (1 if str(device).startswith("cpu") else GPU_WINDOW)


def _cores(threads):
    if threads == CONTENDED:
        return "0,1"
    return "0" if threads == 1 else ",".join(str(c) for c in range(threads))


def _n_threads(threads):
    """The thread count a setting passes on: none for the contended one (each contender
    keeps its own default policy there)."""
    return None if threads == CONTENDED else threads


def _run(cmd, threads, env_extra=None, timeout=1800):
    """Run ``cmd`` pinned to the cores of the setting ``threads`` (with the last core kept
    busy by a spinning process in the contended setting); return the JSON record it
    writes to the file named by its ``--json`` argument (workers and external runners)."""
    import tempfile
    n = _n_threads(threads)
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)} if n
                              else {}), **(env_extra or {}))
    if not n:
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.pop(key, None)
    linux = sys.platform.startswith("linux")
    spinner = None
    if threads == CONTENDED and linux:  # busy before the contender starts, as a running job
        spinner = subprocess.Popen(["taskset", "-c", _cores(threads).split(",")[-1],
                                    sys.executable, "-c", SPIN, str(timeout + 60)])
        time.sleep(0.5)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "record.json"
        cmd = cmd + ["--json", str(out)]
        full = ["taskset", "-c", _cores(threads)] + cmd if linux else cmd
        try:
            proc = subprocess.run(full, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout} s"}
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
        if proc.returncode != 0 or not out.exists():
            return {"error": (proc.stderr or proc.stdout)[-800:]}
        return json.loads(out.read_text())


def _pcsim_cmd(kind, case, threads, args, compile):
    measure = args.measure or (_measure(case, args.device) if case else 1)
    cmd = [sys.executable, __file__, "--worker", kind, "--threads", str(_n_threads(threads) or 0),
           "--device", args.device, "--measure", str(measure), "--repeats", "1",
           "--warmup", str(args.warmup)]
    if case:
        cmd += ["--case", case]
    if args.data_root:
        cmd += ["--data-root", args.data_root]
    return cmd + (["--compile"] if compile else [])


def _external_cmd(python, lib, case, threads, args):
    c = CASES[case]
    if "config" in c:  # a network from a config: the library's own runner of that network
        script = REPO / "benchmarks" / "external" / c["external"][lib]
        cmd = [python, str(script)]
    else:
        script = REPO / "benchmarks" / "external" / f"{lib}_mlp.py"
        cmd = [python, str(script), "--widths", ",".join(map(str, c["widths"])), "--activation",
               "gelu"]
    cmd += ["--T", str(c["T"]), "--batch", str(c["batch"]), "--epochs", "0",
            "--measure-batches", str(args.measure or _measure(case, args.device)),
            "--warmup-batches", str(args.warmup), "--repeats", "1"]
    if _n_threads(threads):
        cmd += ["--threads", str(threads)]
    if args.data_root:
        cmd += ["--data-root", args.data_root]
    return cmd


def contenders(args, case=None):
    """The contenders of ``case``: pcsim's four, and the JAX libraries that have a runner
    for it and whose Python is given."""
    out = [("pcsim PC compiled", "pc", True), ("pcsim PC eager", "pc", False),
           ("pcsim BP compiled", "bp", True), ("pcsim BP", "bp", False)]
    runners = CASES[case].get("external", {"pcx": 1, "fabricpc": 1}) if case else {}
    if args.pcx_python and "pcx" in runners:
        out.append(("PCX", "pcx", None))
    if args.fabricpc_python and "fabricpc" in runners:
        out.append(("FabricPC", "fabricpc", None))
    if args.contenders:
        out = [c for c in out if c[0] in args.contenders]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", choices=("pc", "bp", "gemm", "accuracy"), default=None,
                    help=argparse.SUPPRESS)
    ap.add_argument("--kind", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--case", choices=sorted(CASES), default="pcx_T5")
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--thread-settings", type=int, nargs="+", default=None,
                    help="CPU threads per measurement (default: 1 and 2 on the CPU, 1 on a GPU)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--measure", type=int, default=None,
                    help="batches per timed window (default: per case, a few seconds)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--contenders", nargs="+", default=None,
                    help='only these contenders, e.g. "pcsim PC compiled" PCX (default: all)')
    ap.add_argument("--contended", action="store_true",
                    help="add the contended setting: both cores, the last one kept busy")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--pcx-python", default=os.environ.get("PCSIM_PCX_PYTHON"))
    ap.add_argument("--fabricpc-python", default=os.environ.get("PCSIM_FABRICPC_PYTHON"))
    ap.add_argument("--accuracy", action="store_true", help="25-epoch equal-work check first")
    ap.add_argument("--accuracy-only", action="store_true",
                    help="run only the equal-work check and add it to --out's last report")
    ap.add_argument("--table-only", action="store_true",
                    help="rewrite --out's README.md from its throughput.json, measuring nothing")
    ap.add_argument("--epochs", type=int, default=25)
    # PCX's value optimizer is SGD lr 0.026 with momentum 0.1; plain Euler with
    # eta_x = 0.026 / (1 - 0.1) matches its steady step size
    ap.add_argument("--eta-x", type=float, default=LR_X / (1 - 0.1))
    ap.add_argument("--init", default="uniform_fan_in", help="weight init of the accuracy run")
    ap.add_argument("--runs", default=os.path.join(tempfile.gettempdir(), "pcsim_bench_runs"))
    ap.add_argument("--out", default="results/throughput")
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.thread_settings is None:
        args.thread_settings = [1, 2] if args.device.startswith("cpu") else [1]
    if args.contended and not args.worker:
        if not args.device.startswith("cpu") or len(os.sched_getaffinity(0)) < 2:
            print("throughput.py: --contended needs the CPU device and 2 cores", file=sys.stderr)
            return 2
        args.thread_settings = list(args.thread_settings) + [CONTENDED]
    if args.worker:
        args.kind = args.worker
        rec = accuracy_worker(args) if args.worker == "accuracy" else worker(args)
        print(json.dumps(rec))
        if args.json:
            Path(args.json).write_text(json.dumps(rec))
        return 0

    if args.device.startswith("cuda") and not args.table_only:
        import torch
        if not torch.cuda.is_available():
            print(f"throughput.py: --device {args.device}: this machine has no CUDA device "
                  f"(torch {torch.__version__}, torch.cuda.is_available() is False)",
                  file=sys.stderr)
            return 2
    began = time.perf_counter()
    out = Path(args.out)
    if args.table_only:
        text = table(json.loads((out / "throughput.json").read_text()))
        (out / "README.md").write_text(text)
        print(text)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    report = {"command": "python benchmarks/throughput.py " + _portable(argv or sys.argv[1:]),
              "date": dt.datetime.now().isoformat(timespec="seconds"),
              "machine": _machine(args.device), "accuracy": None, "rows": []}
    if args.accuracy or args.accuracy_only:
        report["accuracy"] = equal_work(args)
        print(json.dumps(report["accuracy"], indent=1), flush=True)
    if args.accuracy_only:  # keep the throughput rows of the last full run in --out
        saved = json.loads((out / "throughput.json").read_text())
        saved["accuracy"] = report["accuracy"]
        saved["accuracy_command"] = report["command"]
        saved["accuracy_date"] = report["date"]
        (out / "throughput.json").write_text(json.dumps(saved, indent=1))
        text = table(saved)
        (out / "README.md").write_text(text)
        print(text)
        return 0

    samples = {}  # (threads, case, contender) -> list of records
    for rnd in range(args.rounds):
        for threads in args.thread_settings:
            if threads != CONTENDED:  # a peak on a busy core would mean nothing
                samples.setdefault((threads, "gemm", "GEMM peak"), []).append(
                    gemm_peak(threads, args))
            for case in args.cases:
                for name, kind, compile in contenders(args, case):
                    if kind in ("pc", "bp"):
                        rec = _run(_pcsim_cmd(kind, case, threads, args, compile), threads)
                    else:
                        python = args.pcx_python if kind == "pcx" else args.fabricpc_python
                        rec = _run(_external_cmd(python, kind, case, threads, args), threads)
                    samples.setdefault((threads, case, name), []).append(rec)
                    rate = rec.get("samples_per_s")
                    print(f"round {rnd + 1} threads {threads} {case:8s} {name:18s} "
                          f"{'%.0f samples/s' % rate if rate else rec.get('error', '')[-300:]}",
                          flush=True)
    report["rows"] = summarise(samples)
    report["wall_s"] = time.perf_counter() - began
    report["samples"] = {" | ".join(map(str, k)): v for k, v in samples.items()}
    (out / "throughput.json").write_text(json.dumps(report, indent=1))
    text = table(report)
    (out / "README.md").write_text(text)
    print(text)
    return 0


def gemm_peak(threads, args) -> dict:
    """The best float32 GEMM rate of torch, numpy's BLAS and XLA (from the first JAX
    environment given), each measured now in its own pinned process."""
    rec = _run(_pcsim_cmd("gemm", None, threads, args, False), threads)
    python = args.pcx_python or args.fabricpc_python
    if "error" in rec or not python or not args.device.startswith("cpu"):
        return rec
    cmd = [python, str(REPO / "benchmarks" / "external" / "xla_gemm.py"),
           "--threads", str(threads)]
    xla = _run(cmd, threads)
    if "gflops" in xla:
        rec["by"][xla["implementation"]] = xla["gflops"]
        rec["gflops"] = max(rec["by"].values())
    return rec


def equal_work(args):
    """25-epoch test accuracy of pcsim and PCX on pcx_T5 (2 threads each)."""
    threads = max(args.thread_settings)
    mine = _run([sys.executable, __file__, "--worker", "accuracy", "--threads", str(threads),
                 "--device", args.device, "--epochs", str(args.epochs), "--eta-x", str(args.eta_x),
                 "--init", args.init,
                 "--runs", args.runs] + (["--compile"] if args.compile else [])
                + (["--data-root", args.data_root] if args.data_root else []), threads, timeout=7200)
    ref = None
    if args.pcx_python:
        cmd = _external_cmd(args.pcx_python, "pcx", "pcx_T5", threads, args)
        cmd[cmd.index("--epochs") + 1] = str(args.epochs)
        ref = _run(cmd, threads, timeout=7200)
    result = {"pcsim": mine, "pcx": ref}
    if ref and "test_accuracy" in ref and "test_accuracy" in mine:
        result["difference_points"] = 100 * (mine["test_accuracy"] - ref["test_accuracy"])
        result["equal_work"] = abs(result["difference_points"]) <= 0.3
    return result


def summarise(samples):
    rows = []
    for (threads, case, name), recs in samples.items():
        good = [r for r in recs if "error" not in r]
        row = {"threads": threads, "case": case, "contender": name, "n": len(good),
               "errors": [r["error"][-300:] for r in recs if "error" in r]}
        if good and case == "gemm":
            row["gflops"] = statistics.median(r["gflops"] for r in good)
        elif good:
            row["samples_per_s"] = statistics.median(r["samples_per_s"] for r in good)
            row["compile_s"] = statistics.median(r.get("compile_s", 0.0) for r in good)
        rows.append(row)
    return rows


#: the targets (issues 16 and 20): (case, contender, reference, goal, "min" | "max"), the
#: reference being another contender's samples/s; "peak" for the share of the GEMM peak
#: (executed FLOPs); "BP FLOPs" for the PC/BP wall-time ratio over the PC/BP FLOP ratio
#: (executed FLOPs, compiled BP), at most ``goal``
TARGETS = [("pcx_T5", "pcsim PC compiled", "PCX", 1.5, "min"),
           ("pcx_T20", "pcsim PC compiled", "PCX", 1.5, "min"),
           ("pcx_T5", "pcsim PC compiled", "FabricPC", 1.0, "min"),
           ("pcx_T20", "pcsim PC compiled", "FabricPC", 1.0, "min"),
           ("wide", "pcsim PC compiled", "FabricPC", 1.0, "min"),
           ("wide", "pcsim PC compiled", "peak", 0.6, "min"),
           ("cifar_conv", "pcsim PC compiled", "PCX", 1.5, "min"),
           ("cifar_conv", "pcsim PC compiled", "BP FLOPs", 1.1, "max")]
#: in the contended setting: pcsim keeps 0.8x of its quiet 1-thread speed and stays
#: ahead of PCX ("quiet 1" is the same contender's 1-thread record of the same round)
CONTENDED_TARGETS = [(case, "pcsim PC compiled", ref, goal, "min")
                     for case in ("pcx_T5", "pcx_T20")
                     for ref, goal in (("quiet 1 thread", 0.8), ("PCX", 1.0))]


def _setting(label: str):
    """A thread setting as written in a sample key: an int, or the contended label."""
    return int(label) if label.isdigit() else label


def _setting_order(setting):
    return (isinstance(setting, str), str(setting))


def round_ratios(samples) -> list:
    """The targets' ratios round by round (both sides measured minutes apart, so the
    drift of a shared machine cancels more than in the ratio of medians)."""
    def recs(threads, case, name):
        return samples.get(f"{threads} | {case} | {name}", [])

    rows = []
    for threads in sorted({_setting(k.split(" | ")[0]) for k in samples}, key=_setting_order):
        for case, name, ref, goal, sense in (CONTENDED_TARGETS if threads == CONTENDED
                                             else TARGETS):
            mine = recs(threads, case, name)
            if ref == "peak":
                other = recs(threads, "gemm", "GEMM peak")
            elif ref == "BP FLOPs":
                other = recs(threads, case, "pcsim BP compiled")
            elif ref == "quiet 1 thread":
                other = recs(1, case, name)
            else:
                other = recs(threads, case, ref)
            ratios = []
            for a, b in zip(mine, other):
                if "samples_per_s" not in a or ("gflops" if ref == "peak" else "samples_per_s") not in b:
                    continue
                if ref == "peak":
                    executed = flops_per_sample(name, case)[1]
                    ratios.append(a["samples_per_s"] * executed / 1e9 / b["gflops"])
                elif ref == "BP FLOPs":
                    flop_ratio = (flops_per_sample(name, case)[1]
                                  / flops_per_sample("pcsim BP compiled", case)[1])
                    ratios.append(b["samples_per_s"] / a["samples_per_s"] / flop_ratio)
                else:
                    ratios.append(a["samples_per_s"] / b["samples_per_s"])
            if ratios:
                med = statistics.median(ratios)
                rows.append({"threads": threads, "case": case, "reference": ref, "goal": goal,
                             "sense": sense, "ratios": ratios, "median": med,
                             "met": med >= goal if sense == "min" else med <= goal})
    return rows


def flops_per_sample(contender, case):
    """``(algorithmic, executed)`` matrix FLOPs per sample of ``contender`` on ``case``:
    executed counts what pcsim's fast path runs (the wavefront skips the products of
    exactly-zero errors); other contenders are credited with the algorithm's count."""
    from pcsim.model.costs import bp_train_cost, pc_train_cost
    c = CASES[case]
    net = _case_network(c)
    if contender.startswith("pcsim BP"):
        flops = bp_train_cost(net).flops
        return flops, flops
    flops = pc_train_cost(net, c["T"]).flops
    if contender.startswith("pcsim PC"):
        return flops, pc_train_cost(net, c["T"], wavefront=True).flops
    return flops, flops


def table(report):
    rows = report["rows"]
    peak = {r["threads"]: r.get("gflops") for r in rows if r["case"] == "gemm"}
    L = ["# Training throughput: pcsim vs PCX and FabricPC\n",
         f"Made by `{report['command']}` on {report['date'][:10]}, {report['machine']}; "
         f"wall time {report.get('wall_s', 0) / 60:.1f} min. Medians over interleaved rounds; "
         "each measurement is its own pinned process.\n"]
    acc = report.get("accuracy")
    if report.get("accuracy_command"):
        L.append(f"Equal-work check made by `{report['accuracy_command']}` on "
                 f"{report['accuracy_date'][:10]}.\n")
    if acc:
        p, x = acc.get("pcsim", {}), acc.get("pcx") or {}
        L.append(f"Equal work (pcx_T5, 25 epochs): pcsim {100 * p.get('test_accuracy', float('nan')):.2f}%, "
                 f"PCX {100 * x.get('test_accuracy', float('nan')):.2f}%, difference "
                 f"{acc.get('difference_points', float('nan')):+.2f} points "
                 f"({'within' if acc.get('equal_work') else 'NOT within'} 0.3).\n")
    L.append("| threads | case | contender | samples/s | effective GFLOP/s | executed GFLOP/s | % of GEMM peak | x PCX | x FabricPC | start-up (s) |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    by = {(r["threads"], r["case"], r["contender"]): r for r in rows}
    for r in rows:
        if r["case"] == "gemm":
            continue
        flops, done = flops_per_sample(r["contender"], r["case"])
        rate = r.get("samples_per_s")
        if rate is None:
            L.append(f"| {r['threads']} | {r['case']} | {r['contender']} | failed | | | | | | |")
            continue
        g, g_done = rate * flops / 1e9, rate * done / 1e9
        pk = peak.get(r["threads"])
        rel = []
        for other in ("PCX", "FabricPC"):
            o = by.get((r["threads"], r["case"], other), {}).get("samples_per_s")
            rel.append(f"{rate / o:.2f}" if o else "")
        share = f"{100 * g_done / pk:.0f}%" if pk else ""
        L.append(f"| {r['threads']} | {r['case']} | {r['contender']} | {rate:,.0f} | {g:.1f} | "
                 f"{g_done:.1f} | {share} | {rel[0]} | {rel[1]} | {r.get('compile_s', 0):.2f} |")
    L.append("\nGEMM peak (float32, " + ", ".join(f"{t} thread{'s' if t > 1 else ''}: "
                                                   f"{g:.0f} GFLOP/s" for t, g in sorted(peak.items()) if g) + ").\n")
    by = _gemm_by(report.get("samples") or {})
    if by:
        L.append("The peak is the best of these implementations, each the median over rounds "
                 "(GFLOP/s): " + "; ".join(
                     f"{t} thread{'s' if t > 1 else ''}: " + ", ".join(
                         f"{name} {g:.0f}" for name, g in impl.items())
                     for t, impl in sorted(by.items())) + ".\n")
    targets = round_ratios(report.get("samples") or {})
    if targets:
        L.append("The targets of issues 16 and 20, round by round (each ratio from one "
                 "round's two measurements; the PC/BP row is the wall-time ratio over the "
                 "executed-FLOP ratio, at most the target):\n")
        L.append("| threads | case | pcsim PC compiled against | target | per round | median | met |")
        L.append("|---|---|---|---|---|---|---|")
        for t in targets:
            pct = t["reference"] == "peak"
            fmt = (lambda v: f"{100 * v:.0f}%") if pct else (lambda v: f"{v:.2f}x")
            what = {"peak": "GEMM peak (executed FLOPs)",
                    "BP FLOPs": "pcsim BP compiled (wall / FLOP ratio)"}.get(t["reference"],
                                                                           t["reference"])
            goal = ("at most " if t.get("sense") == "max" else "") + fmt(t["goal"])
            met = t.get("met", t["median"] >= t["goal"])
            L.append(f"| {t['threads']} | {t['case']} | {what} | {goal} | "
                     f"{', '.join(fmt(v) for v in t['ratios'])} | {fmt(t['median'])} | "
                     f"{'yes' if met else 'no'} |")
        L.append("")
    return "\n".join(L) + "\n"


def _gemm_by(samples) -> dict:
    """``{threads: {implementation: median GFLOP/s}}`` from the GEMM records."""
    out = {}
    for key, recs in samples.items():
        threads, case, _ = key.split(" | ")
        if case != "gemm":
            continue
        rates = {}
        for r in recs:
            for name, g in r.get("by", {}).items():
                rates.setdefault(name, []).append(g)
        if rates:
            out[_setting(threads)] = {n: statistics.median(v) for n, v in rates.items()}
    return out


def _machine(device):
    import torch
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}"


if __name__ == "__main__":
    raise SystemExit(main())
