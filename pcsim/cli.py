"""`pcsim run CONFIG` and `pcsim eval RUN_DIR`: parse arguments, call the library."""

from __future__ import annotations

import argparse
import logging
import warnings
import sys
from typing import Optional, Sequence

__all__ = ["main", "build_parser"]

log = logging.getLogger("pcsim")


def build_parser() -> argparse.ArgumentParser:
    from pcsim import __version__
    parser = argparse.ArgumentParser(
        prog="pcsim", description="Simulate predictive-coding networks as continuous-time "
        "value and error neurons: train, evaluate, trace, and price the ops on "
        "neuromorphic and digital hardware.")
    parser.add_argument("--version", action="version", version=f"pcsim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="list the shipped configs and hardware profiles",
                        description="List the configs in networks/ and the hardware "
                        "profiles that `pcsim run` and `pcsim energy` can use.")
    ls.add_argument("--profiles-dir", help="folder of profiles (default: $PCSIM_HW_PROFILES "
                    "or the checkout's hw_profiles/)")

    run = sub.add_parser("run", help="train and evaluate an experiment, write a run folder")
    run.add_argument("config", help="experiment YAML, e.g. networks/mnist_pc.yaml")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set learning.epochs=2 (repeatable)")
    run.add_argument("--device", help="cpu, cuda, cuda:N or auto (overrides run.device)")
    run.add_argument("--backend", choices=["torch", "brian2"], help="overrides run.backend")
    run.add_argument("--data-root", help="data root (overrides data.root and $PCSIM_DATA)")
    run.add_argument("--out", help="folder for run folders (overrides run.out)")
    run.add_argument("--epochs", type=int, help="overrides learning.epochs")
    run.add_argument("--threads", type=int, help="CPU threads (overrides run.threads)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.add_argument("--nproc", type=int, metavar="N",
                     help="data-parallel over N processes: launches torchrun --nproc-per-node N")
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="continue this run folder from its last checkpoint")

    rs = sub.add_parser("resume", help="continue a run folder from its last checkpoint")
    rs.add_argument("run_dir", help="a run folder written by `pcsim run`")
    rs.add_argument("--data-root", help="data root (overrides the run's data.root)")
    rs.add_argument("--device", help="cpu, cuda, cuda:N or auto (the run's run.device if not given)")
    rs.add_argument("--threads", type=int, help="CPU threads (the run's run.threads if not given)")
    rs.add_argument("--epochs", type=int,
                    help="train to this many epochs in all: more extends a finished run (its "
                    "learning-rate schedule is re-planned for the new horizon)")
    rs.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    ev = sub.add_parser("eval", help="evaluate a run folder's checkpoint on the test set")
    ev.add_argument("run_dir", help="a run folder written by `pcsim run` (or its checkpoint.pt)")
    ev.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    ev.add_argument("--data-root", help="data root (overrides the run's data.root)")
    ev.add_argument("--traces", metavar="FILE.h5",
                    help="also record traces (the run's traces section, or 8 test samples)")

    on = sub.add_parser("online", help="stream samples one at a time through a trained run",
                        description="Online mode: each sample alone (batch 1), predicted "
                        "first, then relaxed with its label clamped until it converges (its "
                        "latency in steps), optionally learned from; ops counted. Writes "
                        "RUN_DIR/online.json.")
    on.add_argument("run_dir", help="a run folder written by `pcsim run` (PC, torch)")
    on.add_argument("--samples", type=int, default=1000, help="stream length (default 1000)")
    on.add_argument("--split", choices=["test", "train"], default="test")
    on.add_argument("--stop-tol", type=float, default=1e-4,
                    help="converged when a step lowers E by less than this share (1e-4)")
    on.add_argument("--max-steps", type=int, default=200, help="steps at most per sample")
    on.add_argument("--learn", action="store_true", help="one SGD step per sample")
    on.add_argument("--lr", type=float, default=1e-3, help="learning rate with --learn")
    on.add_argument("--theta", type=float, default=None,
                    help="event mode with this sigma-delta threshold (default: the run's "
                    "events section)")
    on.add_argument("--carry", action="store_true",
                    help="event mode: receivers keep what they hold from sample to sample")
    on.add_argument("--execution", choices=["auto", "sparse", "dense"], default=None,
                    help="how events are applied (default: the run's, auto)")
    on.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    on.add_argument("--data-root", help="data root (overrides the run's data.root)")

    tr = sub.add_parser("traces", help="summarise (and plot) an HDF5 trace file")
    tr.add_argument("file", help="a trace file written by pcsim (traces.h5)")
    tr.add_argument("--plot", metavar="DIR", help="write PNG figures of one trial into DIR")
    tr.add_argument("--trial", type=int, default=0, help="which trial to plot (default 0)")

    en = sub.add_parser("energy", help="print the energy table of a run, per hardware profile")
    en.add_argument("run_dir", help="a run folder written by `pcsim run`")
    en.add_argument("--profile", action="append", default=None, metavar="NAME",
                    help="hw_profiles/NAME.yaml (repeatable; default: the run's profiles)")
    en.add_argument("--profiles-dir", help="folder of profiles (default: $PCSIM_HW_PROFILES "
                    "or the checkout's hw_profiles/)")
    en.add_argument("--json", action="store_true", help="print the full report as JSON")
    return parser


def _run_overrides(args) -> dict:
    """The config keys that ``--device``, ``--threads`` and ``--epochs`` set."""
    flags = {"run.device": args.device, "run.threads": args.threads,
             "learning.epochs": args.epochs}
    return {key: value for key, value in flags.items() if value is not None}


def _resume(args) -> int:
    from pathlib import Path

    from pcsim.config import load_config
    from pcsim.experiment import CONFIG, run_experiment

    path = Path(args.run_dir) / CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{path}: no resolved config; not a run folder of `pcsim run`")
    config = load_config(path, _run_overrides(args))
    result = run_experiment(config, source=str(path), data_root=args.data_root,
                            progress=False if args.no_progress else None, resume=args.run_dir)
    from pcsim.experiment import describe
    print(f"{describe(result.metrics[-1])} after {len(result.metrics)} "
          f"epochs; run folder: {result.run_dir}")
    return 0


def _list(args) -> int:
    """The shipped configs (first comment line each) and the hardware profiles."""
    from pathlib import Path

    from pcsim.energy import available_profiles, load_profile
    networks = Path(__file__).resolve().parents[1] / "networks"
    print("configs (networks/):")
    for path in sorted(networks.glob("*.yaml")):
        first = next((line.lstrip("# ").strip() for line in path.read_text().splitlines()
                      if line.startswith("#")), "")
        print(f"  {path.name:28s} {first[:80]}")
    print("hardware profiles:")
    for stem in available_profiles(args.profiles_dir):
        print(f"  {stem:28s} {load_profile(stem, args.profiles_dir).name}")
    return 0


def _read_json(path, kind, what):
    """A JSON file's content of type ``kind``, or a ``ValueError`` naming the file."""
    import json
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, kind):
        raise ValueError(f"{path}: expected {what}, found {type(data).__name__}")
    return data


def _energy(args) -> int:
    import json
    from pathlib import Path

    from pcsim.energy import available_profiles
    from pcsim.energy.report import build_energy_report, format_energy_table
    from pcsim.monitors import OpCounts
    from pcsim.runio import finite_number

    run_dir = Path(args.run_dir)
    path = run_dir / "op_counts.json"
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder (give a folder written by "
                                "`pcsim run`)")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no op counts (the run was made with run.count_ops "
                                "false, by a pcsim without op counting, or did not finish an "
                                "epoch)")
    stored = _read_json(path, dict, "the op counts by work (train, test)")
    counts = {work: OpCounts.from_json(data, f"{path}: {work!r}") for work, data in stored.items()}
    saved_path = run_dir / "energy_report.json"
    saved = _read_json(saved_path, dict, "the energy report") if saved_path.exists() else {}
    profiles = saved.get("profiles", {})
    if not isinstance(profiles, dict) or not all(isinstance(p, str) for p in profiles):
        raise ValueError(f"{saved_path}: profiles: expected the report per profile name")
    names = args.profile or list(profiles) or available_profiles(args.profiles_dir)
    times = saved.get("simulated_time_per_sample_s")
    if times is not None and not (isinstance(times, dict) and all(
            finite_number(v) and v >= 0 for v in times.values())):
        raise ValueError(f"{saved_path}: simulated_time_per_sample_s: expected seconds (>= 0) "
                         f"per work, found {str(times)[:80]}")
    if times is None:  # a report of an older pcsim: from the run's config and metrics
        from pcsim.config import load_config
        from pcsim.experiment import time_per_sample
        metrics = _read_json(run_dir / "metrics.json", list, "a list of epoch records")
        steps = next((m.get("inference_steps_mean") for m in reversed(metrics)
                      if isinstance(m, dict) and "ops_per_train_sample" in m), None)
        if steps is not None and not isinstance(steps, (int, float)):
            raise ValueError(f"{run_dir / 'metrics.json'}: inference_steps_mean: expected a "
                             f"number, found {str(steps)[:80]}")
        times = time_per_sample(load_config(run_dir / "config.yaml"), steps)
    report = build_energy_report(counts, names, args.profiles_dir, times)
    print(json.dumps(report, indent=2) if args.json else format_energy_table(report))
    return 0


def _launch(argv) -> int:
    """Re-run this command under torchrun, without ``--nproc``."""
    import subprocess

    rest, skip, nproc = [], False, None
    for k, token in enumerate(argv):
        if skip:
            skip = False
            continue
        if token == "--nproc":
            nproc, skip = argv[k + 1], True
        elif token.startswith("--nproc="):
            nproc = token.split("=", 1)[1]
        else:
            rest.append(token)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "pcsim", *rest]
    return subprocess.run(cmd).returncode


def _run(args) -> int:
    from pcsim.config import load_config
    from pcsim.config.load import parse_override
    from pcsim.experiment import run_experiment

    overrides = dict(parse_override(text) for text in args.set)
    if args.backend:
        overrides["run.backend"] = args.backend
    overrides.update(_run_overrides(args))
    config = load_config(args.config, overrides)
    result = run_experiment(config, source=args.config, data_root=args.data_root, out=args.out,
                            progress=False if args.no_progress else None, resume=args.resume)
    from pcsim.parallel import is_main_process
    if not is_main_process():  # the summary is said once, by rank 0
        return 0
    if result.metrics:
        from pcsim.experiment import describe
        print(f"{describe(result.metrics[-1])} after "
              f"{len(result.metrics)} epochs; run folder: {result.run_dir}")
    else:
        print(f"no epochs run; run folder: {result.run_dir}")
    return 0


def _eval(args) -> int:
    from pcsim.data import load_dataset, resolve_data_root
    from pcsim.experiment import describe, evaluate, load_run

    config, trainer, checkpoint = load_run(args.run_dir, args.device)
    root = resolve_data_root(config.data.root, args.data_root)
    data = load_dataset(config.data.dataset, root, download=config.data.download,
                        normalize=config.data.normalize,
                        limit_test=config.data.limit_test).to(trainer.device, trainer.dtype)
    result = evaluate(trainer, data, target=config.data.target)
    print(f"{args.run_dir}: epoch {checkpoint['epoch']}, {describe(result)} "
          f"on {data.test_x.shape[0]} images, "
          f"output energy {result['test_energy']:.4g}")
    if args.traces:
        from pathlib import Path

        from pcsim.experiment import record_traces
        from pcsim.engines.base import capabilities
        if not capabilities(config.run.backend, config.learning.rule).traces:
            raise ValueError("--traces needs a PC run (learning.rule: pc)")
        config = config.model_copy(update={"traces": config.traces.model_copy(
            update={"enabled": True, "split": "test"})})
        path = record_traces(trainer, data, config, Path(args.traces), checkpoint["epoch"])
        print(f"traces written to {path}")
    return 0


def _online(args) -> int:
    from pcsim.online import OnlineConfig, describe, run_online

    online = OnlineConfig(samples=args.samples, split=args.split, stop_tol=args.stop_tol,
                          max_steps=args.max_steps, learn=args.learn, lr=args.lr)
    result, out = run_online(args.run_dir, online, theta=args.theta, execution=args.execution,
                             carry=args.carry, device=args.device, data_root=args.data_root)
    print(f"{args.run_dir}: {describe(result)}")
    if out is not None:
        print(f"  wrote {out}")
    return 0


def _traces(args) -> int:
    from pcsim.monitors.hdf5 import summarize_trace

    info = summarize_trace(args.file)
    print(f"{info['path']}: pcsim {info['pcsim_version']}, {info['mode']} execution, "
          f"{info['n_trials']} trials ({info['split']} split, epochs {info['epochs']}), "
          f"{info['n_steps']} steps of {info['dt_ms']:g} ms, a frame every {info['every']}")
    for name, shape in info["reports"].items():
        print(f"  report {name}: {shape[0]} frames x {shape[1]} neurons")
    for name, n in info["spikes"].items():
        print(f"  spikes {name}: {n} events")
    if info["ops_per_trial"]:
        print("  ops per trial (inference, mean): " + ", ".join(
            f"{kind} {v:,.0f}" for kind, v in info["ops_per_trial"].items()))
    if args.plot:
        from pcsim.plots import plot_traces
        for path in plot_traces(args.file, args.plot, args.trial):
            print(f"  wrote {path}")
    return 0


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as one line that names pcsim, not the source line that raised it."""
    return f"pcsim: warning: {message}\n"


def _stop_on_termination() -> None:
    """SIGTERM (batch schedulers, ``docker stop``) and SIGQUIT stop a command like Ctrl-C:
    the atomic writes in flight are cleaned up and completed epochs stay."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for name in ("SIGTERM", "SIGQUIT"):
        if hasattr(signal, name):
            try:
                signal.signal(getattr(signal, name), stop)
            except ValueError:  # not the main thread (an embedding application)
                pass


def _missing_path(args) -> Optional[str]:
    """The first path argument that does not exist, as the message to print; checked
    before anything heavy (torch) is imported, so a typo fails at once."""
    from pathlib import Path
    checks = {"run": [("config", "config file")], "resume": [("run_dir", "run folder")],
              "eval": [("run_dir", "run folder or checkpoint")],
              "energy": [("run_dir", "run folder")], "traces": [("file", "trace file")],
              "online": [("run_dir", "run folder or checkpoint")]}
    for attr, what in checks.get(args.command, []):
        value = getattr(args, attr, None)
        if value and not Path(value).exists():
            return f"{value}: no such {what}"
    resume = getattr(args, "resume", None)
    if resume and not Path(resume).is_dir():
        return f"{resume}: no such run folder to resume (--resume)"
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the `pcsim` command; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    warnings.formatwarning = _one_line_warning
    args = build_parser().parse_args(argv)
    missing = _missing_path(args)
    if missing:
        print(f"pcsim {args.command}: error: {missing}", file=sys.stderr)
        return 2
    from pcsim.config import ConfigError
    from pcsim.energy import ProfileError
    from pcsim.monitors.hdf5 import TraceError, TraceWriteError
    from pcsim.runio import WriteError
    from pcsim.units import UnitError

    _stop_on_termination()
    if args.command == "run" and args.nproc and args.nproc > 1:
        return _launch(list(sys.argv[1:] if argv is None else argv))
    try:
        return {"list": _list, "run": _run, "eval": _eval, "energy": _energy, "resume": _resume,
                "traces": _traces, "online": _online}[args.command](args)
    except (FloatingPointError, TraceWriteError, WriteError) as exc:  # failed running: exit 1
        print(f"pcsim {args.command}: failed: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, ProfileError, TraceError, UnitError, FileNotFoundError, FileExistsError,
            ValueError, RuntimeError, MemoryError) as exc:
        print(f"pcsim {args.command}: error: {exc}", file=sys.stderr)  # bad input: exit 2
        return 2
    except BrokenPipeError:  # `pcsim list | head`: the reader left; say nothing more
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a writer stopped by SIGPIPE (128 + 13)
    except KeyboardInterrupt as exc:
        why = f" by {exc.args[0]}" if exc.args else ""
        print(f"pcsim {args.command}: interrupted{why}; completed epochs and the last "
              "checkpoint are in the run folder (pcsim resume continues)", file=sys.stderr)
        return 130
