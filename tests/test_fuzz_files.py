"""Seeded fuzzing of the files pcsim reads back: checkpoints (`pcsim eval`, `pcsim
resume`), op counts and energy reports (`pcsim energy`) and trace files (`pcsim traces`,
`--plot`), each damaged in its structure (a key deleted, a value replaced by junk of
another type or shape, an unknown key added; for HDF5 also objects deleted, attributes
corrupted and datasets that declare terabytes). Every damaged file is answered by exit
0 (the damage left it valid), 1 (a runtime failure, e.g. non-finite weights) or 2 with
a one-line pcsim error naming the file, never a traceback, and each command returns
within a time bound (any exception escaping `main` or a hang fails the test)."""

import copy
import json
import random
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from pcsim.cli import main

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--set", "network.layers.1.size=16", "--set", "network.layers.2.size=16",
         "--set", "data.limit_train=200", "--set", "data.limit_test=100",
         "--set", "dynamics.n_steps=4", "--set", "learning.batch_size=50",
         "--set", "run.device=cpu", "--set", "run.threads=1", "--set", "events.theta=0.01",
         "--set", "traces.enabled=true", "--set", "traces.samples=3", "--epochs", "2",
         "--no-progress"]
JUNK = [None, -1, 0, 2 ** 70, 1.5, float("nan"), float("inf"), "", "x", [], [1, "a"], {},
        {"x": 1}, True]


class _Hang(BaseException):
    """A command that ran past its time bound (not an Exception: main cannot catch it)."""


@contextmanager
def _bounded(seconds: int, what):
    def alarm(signum, frame):
        raise _Hang(f"{what} ran for more than {seconds} s")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _answer(capsys, argv, seconds=60):
    capsys.readouterr()
    with _bounded(seconds, argv):
        rc = main(argv)
    err = capsys.readouterr().err
    assert rc in (0, 1, 2), (argv, rc, err)
    assert "Traceback" not in err, (argv, err)
    if rc:
        assert err.startswith(f"pcsim {argv[0]}: "), (argv, err)
    return rc, err


@pytest.fixture(scope="module")
def run_folder(mnist_root, tmp_path_factory):
    """A finished 2-epoch event-mode run with op counts, energy report and traces."""
    out = tmp_path_factory.mktemp("fuzz_runs")
    rc = main(["run", str(REPO / "networks" / "mnist_pc_events.yaml"), "--data-root",
               str(mnist_root), "--out", str(out), "--set", "run.name=r", *SMALL])
    assert rc == 0
    folder = out / "r"
    for name in ("checkpoint.pt", "op_counts.json", "energy_report.json", "traces.h5"):
        assert (folder / name).is_file(), name
    return folder


def _locations(node, prefix=()):
    """Every key path into the dicts and lists of ``node`` (not into tensors)."""
    out = []
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return out
    for key, value in items:
        out.append(prefix + (key,))
        out.extend(_locations(value, prefix + (key,)))
    return out


def _mutate(data, rng, junk):
    """A deep copy of ``data`` with one location replaced by junk, deleted, or a key
    added beside it (a top-level part chosen first, then a location in it); returns
    (copy, description)."""
    data = copy.deepcopy(data)
    top = rng.choice(list(data))  # each part alike, however many entries it holds
    where = rng.choice([(top,), *_locations(data[top], (top,))])
    parent = data
    for key in where[:-1]:
        parent = parent[key]
    action = rng.choice(["junk", "junk", "junk", "delete", "unknown"])
    if action == "delete":
        del parent[where[-1]]
    elif action == "unknown" and isinstance(parent, dict):
        parent[f"{where[-1]}_typo"] = 1
    else:
        action = "junk"
        parent[where[-1]] = rng.choice(junk)
    return data, f"{action} at {'/'.join(map(str, where))}"


def test_damaged_checkpoints_get_one_line_errors(run_folder, mnist_root, tmp_path, capsys):
    """40 structural damages of a real checkpoint, each given to `pcsim eval` and to
    `pcsim resume --epochs 3` (the finished 2-epoch run extended: resume restores the
    optimizer, schedule and data order and trains an epoch)."""
    ckpt = torch.load(run_folder / "checkpoint.pt", weights_only=True)
    junk = JUNK + [torch.zeros(3), torch.full((2, 2), float("nan")),
                   torch.zeros(0, dtype=torch.uint8), torch.zeros(5, dtype=torch.int64)]
    rng = random.Random(31)
    refused = 0
    for k in range(40):
        bad, how = _mutate(ckpt, rng, junk)
        folder = tmp_path / f"c{k}"
        folder.mkdir()
        for name in ("config.yaml", "run.json", "metrics.json"):
            shutil.copy(run_folder / name, folder / name)
        torch.save(bad, folder / "checkpoint.pt")
        for argv in (["eval", str(folder), "--data-root", str(mnist_root)],
                     ["resume", str(folder), "--data-root", str(mnist_root), "--no-progress",
                      "--epochs", "3"]):
            rc, err = _answer(capsys, argv)
            if rc == 2:
                refused += 1
                assert str(folder) in err, (how, err)
    assert refused >= 20  # of 80 answers (27 at this seed): damages are refused, not ignored


def test_damaged_op_counts_and_energy_reports_get_one_line_errors(run_folder, tmp_path, capsys):
    """80 damages of `op_counts.json` and `energy_report.json`, then `pcsim energy`."""
    counts = json.loads((run_folder / "op_counts.json").read_text())
    report = json.loads((run_folder / "energy_report.json").read_text())
    rng = random.Random(32)
    refused = 0
    for k in range(80):
        folder = tmp_path / f"e{k}"
        shutil.copytree(run_folder, folder, ignore=shutil.ignore_patterns("*.h5", "*.pt"))
        name, data = ("op_counts.json", counts) if k % 2 == 0 else ("energy_report.json", report)
        bad, how = _mutate(data, rng, JUNK)
        (folder / name).write_text(json.dumps(bad))
        rc, err = _answer(capsys, ["energy", str(folder)])
        if rc == 2:
            refused += 1
            assert str(folder / name) in err, (how, err)
    (tmp_path / "e0" / "op_counts.json").write_text("{not json")
    rc, err = _answer(capsys, ["energy", str(tmp_path / "e0")])
    assert rc == 2 and "not readable JSON" in err
    assert refused >= 30


def _h5_objects(f):
    names = []
    f.visit(names.append)
    return names


def _damage_h5(path, rng):
    """Damage the trace file at ``path`` in place; return what was done."""
    import h5py
    import numpy as np
    with h5py.File(path, "a") as f:
        names = _h5_objects(f)
        action = rng.choice(["delete", "attr", "attr", "huge", "reshape"])
        if action == "attr":
            owner = f if rng.random() < 0.5 else f[rng.choice(names)]
            keys = list(owner.attrs)
            key = rng.choice(keys) if keys else "n_steps"
            value = rng.choice([-1, 0, 2 ** 62, 1e300, float("nan"), "x", np.zeros(3),
                                np.array([0, -2]), None])
            if value is None:
                if key in owner.attrs:
                    del owner.attrs[key]
            else:
                owner.attrs[key] = value
            return f"attr {owner.name}@{key} = {value!r}"
        datasets = [n for n in names if isinstance(f[n], h5py.Dataset)]
        name = rng.choice(names if action == "delete" else datasets)
        del f[name]
        if action == "huge":  # declared, never written: the file stays small
            f.create_dataset(name, shape=(10 ** 7, 10 ** 6), dtype="f4", chunks=(1, 1024))
        elif action == "reshape":
            f.create_dataset(name, data=rng.choice([np.zeros(7), np.zeros((2, 3, 4)),
                                                     np.array([b"x", b"y"])]))
        return f"{action} {name}"


def test_damaged_trace_files_get_one_line_errors(run_folder, tmp_path, capsys):
    """60 damages of a real event-mode trace file (objects deleted, attributes junk,
    datasets re-declared as 40 TB or of another shape or type), each summarised by
    `pcsim traces` and every third also plotted (`--plot`), within 30 s each."""
    rng = random.Random(33)
    refused = 0
    for k in range(60):
        path = tmp_path / f"t{k}.h5"
        shutil.copy(run_folder / "traces.h5", path)
        how = _damage_h5(path, rng)
        argvs = [["traces", str(path)]]
        if k % 3 == 0:
            argvs.append(["traces", str(path), "--plot", str(tmp_path / f"plots{k}")])
        for argv in argvs:
            rc, err = _answer(capsys, argv, seconds=30)
            if rc == 2:
                refused += 1
                assert str(path) in err, (how, err)
    assert refused >= 20
