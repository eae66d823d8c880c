"""Crash safety: a run killed with SIGKILL at random points and resumed ends exactly
where an uninterrupted run ends."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from pcsim.cli import main
from tests.conftest import REPO, assert_close

ARGS = ["--set", "network.layers.1.size=32", "--set", "network.layers.2.size=32",
        "--set", "data.limit_train=1500", "--set", "data.limit_test=500",
        "--set", "dynamics.n_steps=4", "--set", "learning.batch_size=50",
        "--set", "run.device=cpu", "--set", "run.checkpoint_every=3", "--epochs", "3",
        "--set", "run.threads=1",  # same reduction order in every process: bitwise equality
        "--no-progress"]
TIME_KEYS = ("train_wall_time_s", "eval_wall_time_s", "train_samples_per_s")


def _strip(metrics):
    return [{k: v for k, v in m.items() if k not in TIME_KEYS} for m in metrics]


def test_sigkill_and_resume_reproduce_the_uninterrupted_run(mnist_root, tmp_path):
    """Three SIGKILLs at random moments (seeded), each followed by `pcsim run --resume`
    (or `pcsim resume`), then a resume to the end: the final weights, optimizer state
    and every metric but wall time equal those of an uninterrupted run (CPU,
    deterministic), including the op counts of the last epoch."""
    config = str(REPO / "networks" / "mnist_pc.yaml")
    common = [*ARGS, "--data-root", str(mnist_root), "--out", str(tmp_path)]
    assert main(["run", config, "--set", "run.name=whole", *common]) == 0
    run_dir = tmp_path / "cut"
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    kills = 0
    for attempt in range(8):
        if attempt == 0:
            cmd = ["run", config, "--set", "run.name=cut", *common]
        elif attempt % 2:
            cmd = ["run", config, "--resume", str(run_dir), *common]
        else:
            cmd = ["resume", str(run_dir), "--data-root", str(mnist_root), "--no-progress"]
        proc = subprocess.Popen([sys.executable, "-m", "pcsim", *cmd], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if kills < 3:
            # wait for a checkpoint newer than the start, then kill at a random moment
            ckpt = run_dir / "checkpoint.pt"
            seen = ckpt.stat().st_mtime if ckpt.exists() else 0.0
            deadline = time.time() + 60
            while time.time() < deadline and proc.poll() is None:
                if ckpt.exists() and ckpt.stat().st_mtime > seen:
                    break
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.5))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                continue
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
        break
    print(f"killed {kills} times")
    assert kills >= 1, "the run finished before it could be killed"
    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    cut = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert cut["epoch"] == whole["epoch"] == 3
    assert list(cut["params"]["tensors"]) == list(whole["params"]["tensors"])
    for a, b in zip(cut["params"]["tensors"].values(), whole["params"]["tensors"].values()):
        assert_close(a, b, atol=0)
    for sa, sb in zip(cut["optimizer"]["state"].values(), whole["optimizer"]["state"].values()):
        assert_close(sa["exp_avg"], sb["exp_avg"], atol=0)
    m_cut = json.loads((run_dir / "metrics.json").read_text())
    m_whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert _strip(m_cut) == _strip(m_whole)
    assert json.loads((run_dir / "run.json").read_text())["resumed"]


def test_resume_refuses_a_changed_config(mnist_root, tmp_path, capsys):
    config = str(REPO / "networks" / "mnist_pc.yaml")
    common = [*ARGS, "--data-root", str(mnist_root), "--out", str(tmp_path)]
    assert main(["run", config, "--set", "run.name=r", *common, "--epochs", "1"]) == 0
    capsys.readouterr()
    rc = main(["run", config, "--resume", str(tmp_path / "r"), *common,
               "--set", "learning.lr=0.5"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "learning.lr: checkpoint 0.001, now 0.5" in err


def test_unstable_step_stops_with_the_guard_and_a_loadable_checkpoint(mnist_root, tmp_path, capsys):
    """dt / tau_x = 1.9 (below the refused 2, where the coupled layers' Euler step
    already overshoots): activity explodes. The run stops at
    the first batch with a message naming the population, layer, step and cause, exit
    code 1 (a runtime failure), and the checkpoint (the starting weights) still loads and evaluates."""
    config = str(REPO / "networks" / "mnist_pc.yaml")
    with pytest.warns(UserWarning, match="more than a tenth"):
        rc = main(["run", config, "--set", "run.name=u", *ARGS, "--data-root", str(mnist_root),
                   "--out", str(tmp_path), "--set", "dynamics.dt=19 ms",
                   "--set", "dynamics.n_steps=200"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "epoch 1, batch 0: non-finite" in err and "inference step" in err
    assert "dt / tau_x = 1.9 > 1" in err and "last good checkpoint" in err
    ckpt = torch.load(tmp_path / "u" / "checkpoint.pt", weights_only=True)
    assert all(torch.isfinite(w).all() for w in ckpt["params"]["tensors"].values())
    with pytest.warns(UserWarning, match="more than a tenth"):
        assert main(["eval", str(tmp_path / "u"), "--data-root", str(mnist_root)]) == 0


CONV_NET = """\
network:
  layers:
    - {shape: [1, 28, 28]}
    - {shape: [4, 14, 14], activation: gelu,
       projection: {kind: conv2d, kernel: 3, padding: 1, pool: max}}
    - {shape: [8, 7, 7], activation: tanh,
       projection: {kind: conv2d, kernel: 3, padding: 1, pool: avg}}
    - {size: 10, activation: identity}
dynamics: {tau_x: 10 ms, dt: 1 ms, n_steps: 4}
learning: {rule: pc, optimizer: adamw, lr: 1.0e-3, lr_schedule: cosine, batch_size: 50,
           epochs: 2, seed: 0}
data: {dataset: mnist, limit_train: 1000, limit_test: 200,
       augment: {crop_padding: 2, hflip: true}}
run: {device: cpu, threads: 1, checkpoint_every: 2, progress: false}
"""


def test_conv_net_killed_mid_epoch_resumes_bitwise(mnist_root, tmp_path):
    """A conv PC net (max and average pooling, augmentation on) killed with SIGKILL after
    a mid-epoch checkpoint and resumed ends with the weights, optimizer state and
    metrics of the uninterrupted run, bit for bit."""
    config = tmp_path / "conv.yaml"
    config.write_text(CONV_NET)
    common = ["--data-root", str(mnist_root), "--out", str(tmp_path), "--no-progress"]
    assert main(["run", str(config), "--set", "run.name=whole", *common]) == 0
    run_dir = tmp_path / "cut"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "pcsim", "run", str(config),
                             "--set", "run.name=cut", *common], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt, deadline = run_dir / "checkpoint.pt", time.time() + 120
    first = None
    while time.time() < deadline and proc.poll() is None:  # the second checkpoint write:
        if ckpt.exists():                                  # a mid-epoch one
            first = first or ckpt.stat().st_mtime
            if ckpt.stat().st_mtime > first:
                break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(ckpt, weights_only=True)["epoch"] < 2
    assert main(["resume", str(run_dir), "--data-root", str(mnist_root), "--no-progress"]) == 0
    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    cut = torch.load(ckpt, weights_only=True)
    assert cut["epoch"] == whole["epoch"] == 2
    for name, a in whole["params"]["tensors"].items():
        assert torch.equal(cut["params"]["tensors"][name], a), name
    for sa, sb in zip(cut["optimizer"]["state"].values(), whole["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])
    assert _strip(json.loads((run_dir / "metrics.json").read_text())) == _strip(
        json.loads((tmp_path / "whole" / "metrics.json").read_text()))


def _small_run(tmp_path, mnist_root, name, *extra):
    config = str(REPO / "networks" / "mnist_pc.yaml")
    return main(["run", config, "--set", f"run.name={name}", *ARGS, "--data-root",
                 str(mnist_root), "--out", str(tmp_path), *extra])


def test_resume_finishes_a_run_killed_after_its_last_checkpoint(mnist_root, tmp_path):
    """A finished run loses what the last epoch writes after its checkpoint (the last
    metrics record, op counts, energy report, run.json's completion): `pcsim resume`
    redoes the completion step and restores every file to what the run had written."""
    assert _small_run(tmp_path, mnist_root, "r", "--epochs", "2") == 0
    run = tmp_path / "r"
    keep = {name: (run / name).read_text() for name in
            ("metrics.json", "op_counts.json", "energy_report.json")}
    info = json.loads((run / "run.json").read_text())
    assert info["completed"] is True
    metrics = json.loads(keep["metrics.json"])
    (run / "metrics.json").write_text(json.dumps(metrics[:-1]))
    for name in ("op_counts.json", "energy_report.json", "energy_report.png"):
        (run / name).unlink()
    del info["completed"]
    (run / "run.json").write_text(json.dumps(info))
    assert main(["resume", str(run), "--no-progress"]) == 0
    for name, text in keep.items():
        assert json.loads((run / name).read_text()) == json.loads(text), name
    assert (run / "energy_report.png").exists()
    assert json.loads((run / "run.json").read_text())["completed"] is True


def test_resume_removes_stale_temporaries_and_refuses_a_folder_in_use(mnist_root, tmp_path,
                                                                       capsys):
    """What killed atomic writes leave (``.checkpoint.<8 chars>.pt`` and the like) is
    removed by resume; a run folder whose lock another process holds is refused with
    exit 2; a folder that is not a run is refused and left untouched."""
    import fcntl
    assert _small_run(tmp_path, mnist_root, "t", "--epochs", "1") == 0
    run = tmp_path / "t"
    stale = [".checkpoint.a1b2c3d4.pt", ".metrics.zz_9xk2q.json", ".traces.abcdefgh.h5.tmp"]
    for name in stale:
        (run / name).write_bytes(b"partial")
    (run / ".notes.txt").write_text("mine")  # not a temporary of pcsim's
    with open(run / ".pcsim.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        capsys.readouterr()
        assert main(["resume", str(run), "--no-progress"]) == 2
        assert "in use by another pcsim process" in capsys.readouterr().err
    assert all((run / name).exists() for name in stale)
    assert main(["resume", str(run), "--no-progress"]) == 0
    assert not any((run / name).exists() for name in stale)
    assert (run / ".notes.txt").read_text() == "mine"
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"x")
    capsys.readouterr()
    assert main(["run", str(REPO / "networks" / "mnist_pc.yaml"), *ARGS, "--data-root",
                 str(mnist_root), "--resume", str(other)]) == 2
    assert "not a pcsim run folder" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["a.jpg"]


def test_sigterm_stops_like_ctrl_c_and_the_run_resumes(mnist_root, tmp_path):
    """SIGTERM (a batch scheduler, docker stop) during training: the process says it was
    interrupted by SIGTERM, exits 130, leaves no temporary file, and resumes to the end."""
    config = str(REPO / "networks" / "mnist_pc.yaml")
    cmd = [sys.executable, "-m", "pcsim", "run", config, "--set", "run.name=s", *ARGS,
           "--data-root", str(mnist_root), "--out", str(tmp_path)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt = tmp_path / "s" / "checkpoint.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["progress"]["batch"] >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert "interrupted by SIGTERM" in err.decode()
    leftovers = [p.name for p in (tmp_path / "s").iterdir()
                 if p.name.startswith(".") and p.name != ".pcsim.lock"]
    assert leftovers == []
    assert main(["resume", str(tmp_path / "s"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "s" / "run.json").read_text())["completed"] is True


def test_resume_extends_a_finished_run(mnist_root, tmp_path, capsys):
    """`pcsim resume RUN --epochs N` with more epochs continues a finished run. Under a
    constant schedule and without op counting (a counted epoch runs the observed cycle,
    equal to round-off only), 2 epochs extended to 3 equal a 3-epoch run bitwise
    (weights, Adam state, the last epoch's metrics). Under cosine, 2 of 2 epochs extended
    to 4 re-plan the horizon: epoch 3 learns at lr (1 + cos(pi 2/4)) / 2 = lr / 2, as a
    4-epoch run's third epoch does, and the change is said. Fewer epochs than are done is
    refused; --threads and --device reach the run's config; the run keeps its name."""
    config = str(REPO / "networks" / "mnist_pc.yaml")
    common = [*ARGS, "--data-root", str(mnist_root), "--out", str(tmp_path),
              "--set", "learning.lr_schedule=constant", "--set", "run.count_ops=false"]
    assert main(["run", config, "--set", "run.name=three", *common, "--epochs", "3"]) == 0
    assert main(["run", config, "--set", "run.name=two", *common, "--epochs", "2"]) == 0
    capsys.readouterr()
    assert main(["resume", str(tmp_path / "two"), "--epochs", "1", "--no-progress"]) == 2
    assert "2 epochs are already done; resume with --epochs 2 or more" in capsys.readouterr().err
    assert main(["resume", str(tmp_path / "two"), "--epochs", "3", "--threads", "1",
                 "--device", "cpu", "--no-progress"]) == 0
    assert "learning.epochs 2 -> 3" in capsys.readouterr().out
    two = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    three = torch.load(tmp_path / "three" / "checkpoint.pt", weights_only=True)
    assert two["epoch"] == three["epoch"] == 3
    for a, b in zip(two["params"]["tensors"].values(), three["params"]["tensors"].values()):
        assert_close(a, b, atol=0)
    for sa, sb in zip(two["optimizer"]["state"].values(), three["optimizer"]["state"].values()):
        assert_close(sa["exp_avg_sq"], sb["exp_avg_sq"], atol=0)
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    m3 = json.loads((tmp_path / "three" / "metrics.json").read_text())
    assert len(m2) == 3 and _strip(m2[-1:]) == _strip(m3[-1:])
    info = json.loads((tmp_path / "two" / "run.json").read_text())
    assert info["completed"] and info["source"] == config
    assert "threads: 1" in (tmp_path / "two" / "config.yaml").read_text()

    cos = [*ARGS, "--data-root", str(mnist_root), "--out", str(tmp_path),
           "--set", "learning.lr_schedule=cosine", "--set", "data.limit_train=200"]
    assert main(["run", config, "--set", "run.name=c2", *cos, "--epochs", "2"]) == 0
    capsys.readouterr()
    assert main(["resume", str(tmp_path / "c2"), "--epochs", "4", "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "cosine schedule now ends at epoch 4; epoch 3 learns at lr 0.0005" in said
    lrs = [m["lr"] for m in json.loads((tmp_path / "c2" / "metrics.json").read_text())]
    assert lrs[:2] == [pytest.approx(1e-3), pytest.approx(0.5e-3)]  # the 2-epoch plan
    assert lrs[2:] == [pytest.approx(0.5e-3), pytest.approx(0.5e-3 * (1 - 2 ** -0.5))]
    counted = json.loads((tmp_path / "c2" / "metrics.json").read_text())
    assert "ops_per_train_sample" in counted[1] and "ops_per_train_sample" in counted[3]
    report = json.loads((tmp_path / "c2" / "energy_report.json").read_text())
    assert report and json.loads((tmp_path / "c2" / "run.json").read_text())["completed"]
