"""Hundreds of corrupted inputs: every one gets a one-line pcsim error and exit code 2,
never a Python traceback (any exception escaping `main` fails the test)."""

import copy
import random
from pathlib import Path

import pytest
import yaml

from pcsim.cli import main

REPO = Path(__file__).resolve().parents[1]
JUNK = [None, -1, 0, -1e9, 1e12, float("nan"), "", "ten", "5 kg", "-3 ms", [], [1, "a"], {},
        {"x": 1}, True, 10 ** 12, "inf", b"\x00\xff".decode("latin-1")]


def _mutations(base: dict, rng: random.Random, n: int):
    """Yield (name, text): configs with one corrupted, deleted or added key, then
    malformed files."""
    paths = []

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                paths.append(prefix + [k])
                walk(v, prefix + [k])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                paths.append(prefix + [i])
                walk(v, prefix + [i])

    walk(base, [])
    for k in range(n):
        data = copy.deepcopy(base)
        path = rng.choice(paths)
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        action = rng.choice(["junk", "junk", "delete", "unknown"])
        if action == "junk":
            parent[path[-1]] = rng.choice(JUNK)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[f"{path[-1]}_typo"] = 1
        else:
            parent[path[-1]] = rng.choice(JUNK)
        yield f"mut{k}", yaml.safe_dump(data)
    yield "bad_yaml", "network: [unclosed\n  - {size: 3"
    yield "list_top", "- 1\n- 2\n"
    yield "scalar_top", "42\n"
    yield "empty", ""
    yield "binary", bytes(rng.randrange(256) for _ in range(300))


def _write(folder, name, text):
    path = folder / f"{name}.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_corrupted_configs_get_clean_errors(tmp_path, capsys):
    base = yaml.safe_load((REPO / "networks" / "mnist_pc.yaml").read_text())
    base["data"]["download"] = False
    rng = random.Random(11)
    n = 0
    for name, text in _mutations(base, rng, 250):
        path = _write(tmp_path, name, text)
        rc = main(["run", str(path), "--out", str(tmp_path / "runs"), "--no-progress",
                   "--data-root", str(tmp_path / "no-data")])
        err = capsys.readouterr().err
        assert rc == 2, (name, text, err)
        assert err.startswith("pcsim run: error:") and "Traceback" not in err, (name, err)
        n += 1
    assert n >= 250


def test_corrupted_profiles_get_clean_errors(tmp_path, capsys):
    from pcsim.energy import ProfileError, load_profile
    base = yaml.safe_load((REPO / "hw_profiles" / "loihi.yaml").read_text())
    rng = random.Random(12)
    for name, text in _mutations(base, rng, 200):
        path = _write(tmp_path, name, text)
        with pytest.raises(ProfileError) as info:
            load_profile(path)
            raise ProfileError("accepted")  # a mutation that stays valid is acceptable...
        message = str(info.value)
        assert message == "accepted" or str(path) in message, message


def test_truncated_checkpoints_and_trace_files(tmp_path, capsys):
    """Every prefix length of a real checkpoint and trace file: `pcsim eval` and `pcsim
    traces` answer with exit code 2 and a message naming the file."""
    import torch

    from pcsim.config import config_from_dict
    ckpt = tmp_path / "checkpoint.pt"
    config = config_from_dict({"network": {"layers": [{"size": 784}, {"size": 4}, {"size": 10}]}})
    torch.save({"params": {"W": [torch.zeros(4, 784), torch.zeros(10, 4)],
                           "b": [torch.zeros(4), torch.zeros(10)]},
                "config": config.model_dump(), "epoch": 1}, ckpt)
    blob = ckpt.read_bytes()
    for cut in range(0, len(blob), max(1, len(blob) // 40)):
        bad = tmp_path / f"ckpt{cut}.pt"
        bad.write_bytes(blob[:cut])
        assert main(["eval", str(bad)]) == 2
        err = capsys.readouterr().err
        assert str(bad) in err and "Traceback" not in err
    trace = tmp_path / "t.h5"
    import h5py
    with h5py.File(trace, "w") as f:
        f.create_dataset("pcsim/trials", data=[1, 2, 3])
        f.create_dataset("report/value_l1/data", data=[[1.0]])
    blob = trace.read_bytes()
    for cut in range(0, len(blob) - 1, max(1, len(blob) // 30)):
        bad = tmp_path / f"t{cut}.h5"
        bad.write_bytes(blob[:cut])
        assert main(["traces", str(bad)]) == 2
        err = capsys.readouterr().err
        assert str(bad) in err and "Traceback" not in err


SMALL = ["--set", "data.limit_train=100", "--set", "data.limit_test=50",
         "--set", "network.layers.1.size=8", "--set", "network.layers.2.size=8",
         "--set", "dynamics.n_steps=2", "--set", "run.device=cpu", "--no-progress",
         "--epochs", "1"]


def _run_err(capsys, *args):
    capsys.readouterr()
    rc = main(["run", str(REPO / "networks" / "mnist_pc.yaml"), *args])
    err = capsys.readouterr().err
    return rc, err


@pytest.mark.parametrize("kind", ["file", "under_file", "read_only"])
def test_out_that_cannot_hold_run_folders_is_named(tmp_path, capsys, kind):
    """--out that is a file, lies under a file, or is not writable: exit 2 and one line
    naming --out and the path, before any data is read (the data root does not exist)."""
    import os
    target = tmp_path / "out"
    if kind in ("file", "under_file"):
        target.write_text("x")
        if kind == "under_file":
            target = target / "sub"
    else:
        target.mkdir()
        os.chmod(target, 0o500)
        if os.access(target, os.W_OK):  # root ignores permissions: nothing to test there
            target = Path("/proc/pcsim-not-writable")
    rc, err = _run_err(capsys, *SMALL, "--out", str(target), "--data-root",
                       str(tmp_path / "no-data"), "--set", "data.download=false")
    assert rc == 2 and "Traceback" not in err
    assert "--out" in err and str(target) in err and len(err.strip().splitlines()) == 1


def test_run_name_too_long_is_a_config_error(tmp_path, capsys):
    rc, err = _run_err(capsys, *SMALL, "--out", str(tmp_path), "--set", f"run.name={'n' * 300}")
    assert rc == 2 and "run.name" in err and "at most 200 characters" in err


@pytest.mark.parametrize("override, expected", [
    ("dynamics.dt=20 ms", "dt / tau_x = 2 is outside the stable range"),
    ("dynamics.tau_eps=0.4 ms", "dt / tau_eps = 2.5 is outside the stable range"),
    ("network.layers.3.prec=25", "network.layers.3.prec = 25 with dt / tau_x = 0.1"),
    ("dynamics.n_steps=1000000000", "Euler steps per batch"),
    ("dynamics.duration=1e6 s;dynamics.n_steps=null", "Euler steps per batch"),
    ("--epochs=1180591620717411303424", "learning.epochs: Input should be less than or equal to 100000"),
])
def test_unstable_or_absurd_dynamics_are_refused_up_front(tmp_path, capsys, override, expected):
    """What would diverge (Euler at dt / tau >= 2, or prec * dt / tau_x >= 2) or run for
    days (1e9 steps or epochs) is refused with exit 2 before anything runs."""
    sets = [a for o in override.split(";")
            for a in ((o,) if o.startswith("--") else ("--set", o))]
    rc, err = _run_err(capsys, *SMALL, "--out", str(tmp_path), *sets,
                       "--data-root", str(tmp_path / "no-data"))
    assert rc == 2 and expected in err, err
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("size", [2 ** 40, 10 ** 9])
def test_layer_that_cannot_fit_memory_is_refused_naming_it(mnist_root, tmp_path, capsys, size):
    """A hidden layer of 2**40 or 1e9 neurons: exit 2 with the estimated bytes and the
    largest layer and projection, before anything is allocated."""
    rc, err = _run_err(capsys, *SMALL, "--out", str(tmp_path), "--data-root", str(mnist_root),
                       "--set", f"network.layers.1.size={size}")
    assert rc == 2 and "Traceback" not in err, err
    assert "GiB" in err and "projection W_" in err and f"layer 1 ({size:,} neurons)" in err
