"""End to end: `pcsim run` on a slice of real MNIST, then `pcsim eval` on its checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pcsim.cli import main

REPO = Path(__file__).resolve().parents[1]

SMALL = ["--set", "network.layers.1.size=64", "--set", "network.layers.2.size=64",
         "--set", "data.limit_train=10000", "--set", "data.limit_test=1000",
         "--set", "dynamics.n_steps=5", "--set", "learning.lr=0.003",
         "--set", "run.device=cpu", "--no-progress"]


def test_run_writes_a_complete_run_folder_and_eval_reloads_it(mnist_root, tmp_path, capsys):
    """A 2-epoch PC run on 10000 MNIST images leaves config, metrics (one record per
    epoch, with the analytic FLOP count), checkpoint and plots; `pcsim eval` on the
    checkpoint reproduces the last recorded test accuracy exactly."""
    rc = main(["run", str(REPO / "networks" / "mnist_pc.yaml"), "--data-root", str(mnist_root),
               "--out", str(tmp_path), "--set", "run.name=small", "--epochs", "2", *SMALL])
    assert rc == 0
    run_dir = tmp_path / "small"
    for name in ("config.yaml", "metrics.json", "checkpoint.pt", "accuracy.png",
                 "energy.png", "run.json", "op_counts.json", "energy_report.json",
                 "energy_report.png"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == [1, 2]
    # 784-64-64-10, T = 5: ff 54912, per step 2 * (4096 + 640), learning 54912
    assert metrics[-1]["dense_flops_per_train_sample"] == 2 * (54912 + 5 * 9472 + 54912)
    assert metrics[-1]["test_accuracy"] > 0.85  # chance is 0.10
    assert metrics[-1]["train_energy_final"] < metrics[-1]["train_energy_initial"]
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["network"]["layers"][1]["size"] == 64
    assert resolved["dynamics"]["tau_w"] == float("inf")
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--data-root", str(mnist_root)]) == 0
    out = capsys.readouterr().out
    assert f"test accuracy {100 * metrics[-1]['test_accuracy']:.2f}%" in out
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 2 and checkpoint["optimizer"]["state"]
    # the last epoch was counted: dense MACs per training sample equal the analytic count
    ops = metrics[-1]["ops_per_train_sample"]
    assert ops["inference"]["dense_macs"] + ops["learning"]["dense_macs"] == \
        metrics[-1]["dense_macs_per_train_sample"]
    assert metrics[-1]["ops_per_test_sample"]["inference"]["dense_macs"] == 54912
    report = json.loads((run_dir / "energy_report.json").read_text())
    assert report["counts_from"] == {"train": "dense", "test": "dense"}
    assert {"loihi", "truenorth", "h100"} <= set(report["profiles"])
    capsys.readouterr()
    assert main(["energy", str(run_dir), "--profile", "truenorth", "--profile", "h100"]) == 0
    table = capsys.readouterr().out
    assert "truenorth" in table and "h100" in table and "lower bound" in table


def test_event_mode_trains_and_reports_event_counts(mnist_root, tmp_path):
    """events.enabled trains through sigma-delta units (theta 0.01) and its energy
    report says the counts came from event execution, with fewer synaptic ops per
    training sample than the dense analytic count."""
    rc = main(["run", str(REPO / "networks" / "mnist_pc.yaml"), "--data-root", str(mnist_root),
               "--out", str(tmp_path), "--set", "run.name=ev", "--epochs", "1",
               "--set", "events.enabled=true", "--set", "events.theta=0.01", *SMALL])
    assert rc == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics[0]["test_accuracy"] > 0.85
    ops = metrics[0]["ops_per_train_sample"]["inference"]
    assert ops.get("dense_macs", 0) == 0
    assert 0 < ops["syn_ops_mac"] < metrics[0]["dense_macs_per_train_sample"]
    report = json.loads((tmp_path / "ev" / "energy_report.json").read_text())
    assert report["counts_from"] == {"train": "event", "test": "event"}


def test_backprop_baseline_runs_on_the_same_pipeline(mnist_root, tmp_path):
    rc = main(["run", str(REPO / "networks" / "mnist_bp.yaml"), "--data-root", str(mnist_root),
               "--out", str(tmp_path), "--set", "run.name=bp", "--epochs", "1", *SMALL])
    assert rc == 0
    metrics = json.loads((tmp_path / "bp" / "metrics.json").read_text())
    assert metrics[0]["test_accuracy"] > 0.85
    # BP 784-64-64-10: forward 54912, backward adjoints 4096 + 640, weight grads 54912
    assert metrics[0]["dense_flops_per_train_sample"] == 2 * (54912 + 4736 + 54912)


def test_bad_config_exits_2_with_a_message(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("network:\n  layers: [{size: 784}, {size: 10}]\nlearning: {epochs: -1}\n")
    assert main(["run", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "learning.epochs" in err and "greater than or equal to 0" in err
    assert not list(tmp_path.glob("bad-*")), "no run folder for a config that failed"


def test_missing_data_exits_2_naming_the_root(tmp_path, capsys):
    rc = main(["run", str(REPO / "networks" / "mnist_pc.yaml"), "--data-root",
               str(tmp_path / "nodata"), "--out", str(tmp_path), "--set", "data.download=false",
               "--no-progress"])
    assert rc == 2
    assert str(tmp_path / "nodata") in capsys.readouterr().err


def test_python_dash_m_pcsim_is_the_cli():
    result = subprocess.run([sys.executable, "-m", "pcsim", "run", "--help"],
                            capture_output=True, text=True, check=True)
    assert "--data-root" in result.stdout and "--device" in result.stdout


def test_trace_failure_leaves_training_results_intact(mnist_root, tmp_path, capsys, monkeypatch):
    """A full disk while writing traces (simulated) ends the run with a clear message and
    exit code 1 (a runtime failure); the epoch's metrics and checkpoint were written
    before and still load."""
    import errno

    from pcsim.monitors.hdf5 import TraceWriter

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(TraceWriter, "_append", staticmethod(full))
    rc = main(["run", str(REPO / "networks" / "mnist_pc.yaml"), "--data-root", str(mnist_root),
               "--out", str(tmp_path), "--set", "run.name=tr", "--epochs", "1",
               "--set", "traces.enabled=true", *SMALL])
    assert rc == 1
    assert "no space left on the device" in capsys.readouterr().err
    run_dir = tmp_path / "tr"
    assert json.loads((run_dir / "metrics.json").read_text())[0]["epoch"] == 1
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not list(run_dir.glob("*.h5")) and not list(run_dir.glob(".*tmp"))
    assert main(["eval", str(run_dir), "--data-root", str(mnist_root)]) == 0


def test_traces_command_summarises_and_plots(mnist_root, tmp_path, capsys):
    rc = main(["run", str(REPO / "networks" / "mnist_pc.yaml"), "--data-root", str(mnist_root),
               "--out", str(tmp_path), "--set", "run.name=tp", "--epochs", "1",
               "--set", "traces.enabled=true", "--set", "traces.samples=3",
               "--set", "events.enabled=true", "--set", "events.theta=0.01", *SMALL])
    assert rc == 0
    capsys.readouterr()
    assert main(["traces", str(tmp_path / "tp" / "traces.h5"), "--plot",
                 str(tmp_path / "plots"), "--trial", "2"]) == 0
    out = capsys.readouterr().out
    assert "3 trials" in out and "spikes value_l0" in out
    for name in ("trial2_activity.png", "trial2_energy.png", "trial2_raster.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 1000
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    assert main(["traces", str(bad)]) == 2
    assert "not a readable HDF5 trace file" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["run", "nope.yaml"], ["resume", "no-run"],
                                  ["eval", "no-run"], ["energy", "no-run"],
                                  ["traces", "no.h5"]])
def test_a_missing_path_fails_at_once_without_importing_torch(argv, tmp_path):
    """A path that does not exist: exit 2 with one line naming it, before torch (or any
    backend) is imported -- the answer does not wait seconds for a backend to load."""
    import subprocess
    import sys
    code = ("import sys; from pcsim.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and argv[1] in lines[0] and "no such" in lines[0]


def test_version_list_and_the_start_banner(mnist_root, tmp_path, capsys):
    """`pcsim --version` prints the version; `pcsim list` every shipped config and
    profile; a run starts with a banner naming its folder, device, threads, data and
    what it writes, before the first epoch line."""
    from pcsim import __version__
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"pcsim {__version__}"
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for path in (REPO / "networks").glob("*.yaml"):
        assert path.name in out
    assert "loihi" in out and "Intel Loihi" in out
    rc = main(["run", str(REPO / "networks" / "mnist_pc.yaml"), "--data-root", str(mnist_root),
               "--out", str(tmp_path), "--set", "run.name=b", "--epochs", "1", "--no-progress",
               "--set", "data.limit_train=100", "--set", "data.limit_test=50",
               "--set", "network.layers.1.size=8", "--set", "network.layers.2.size=8",
               "--set", "dynamics.n_steps=2", "--set", "run.device=cpu", "--set", "run.threads=1"])
    assert rc == 0
    out = capsys.readouterr().out
    banner = out[:out.index("epoch 1:")]
    assert f"pcsim {__version__}: {tmp_path / 'b'} starts" in banner
    assert "device cpu, 1 thread(s) (run.threads)" in banner and "100 train, 50 test" in banner
    assert "op_counts.json" in banner


def test_without_run_threads_a_run_leaves_busy_cores_alone(mnist_root, tmp_path, capsys,
                                                           monkeypatch):
    """run.threads unset and one core busy at the start (simulated): the run takes one
    thread fewer than the cores it may use, at least one, and the banner says why; the
    caller's thread count is restored afterwards."""
    import os

    import torch

    from pcsim.engines.torch import device
    monkeypatch.setattr(device, "busy_cores", lambda: 1.0)
    cores = len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    rc = main(["run", str(REPO / "networks" / "mnist_pc.yaml"), "--data-root", str(mnist_root),
               "--out", str(tmp_path), "--set", "run.name=t", "--epochs", "1", "--no-progress",
               "--set", "data.limit_train=100", "--set", "data.limit_test=50",
               "--set", "network.layers.1.size=8", "--set", "network.layers.2.size=8",
               "--set", "dynamics.n_steps=2", "--set", "run.device=cpu"])
    assert rc == 0
    banner = capsys.readouterr().out
    n = max(1, min(before, cores - 1))
    assert (f"device cpu, {n} thread(s) ({cores} core(s), 1.0 busy at the start; "
            "run.threads unset)") in banner, banner
    assert torch.get_num_threads() == before


def test_output_into_a_closed_pipe_ends_quietly():
    """`pcsim list | head -0`: the reader has left before the first line; pcsim stops
    without a BrokenPipeError traceback, with the shell's SIGPIPE status 141."""
    proc = subprocess.Popen([sys.executable, "-m", "pcsim", "list"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    proc.stdout.close()  # the reader is gone: the first write fails
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_the_test_pass_has_its_own_progress_bar(mnist_root, tmp_path, capsys):
    """With progress on, the evaluation after each epoch counts its samples on a bar of
    its own (2,500 test images in batches of 1,000: 2500/2500 at the end), so a long test
    pass does not sit behind a training bar frozen at 100%."""
    rc = main(["run", str(REPO / "networks" / "mnist_pc.yaml"), "--data-root", str(mnist_root),
               "--out", str(tmp_path), "--set", "run.name=bar", "--epochs", "1",
               "--set", "network.layers.1.size=16", "--set", "network.layers.2.size=16",
               "--set", "data.limit_train=100", "--set", "data.limit_test=2500",
               "--set", "dynamics.n_steps=2", "--set", "run.device=cpu",
               "--set", "run.count_ops=false", "--set", "run.progress=true"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "test:   0%|" in err and "0/2500 [" in err, err[-2000:]
    from pcsim.data import load_dataset
    from pcsim.evaluation import evaluate
    from pcsim.experiment import load_run
    config, trainer, _ = load_run(tmp_path / "bar", "cpu")
    data = load_dataset("mnist", mnist_root, limit_train=1, limit_test=2500).to(
        trainer.device, trainer.dtype)
    done = []
    evaluate(trainer, data, progress=done.append)
    assert done == [1000, 1000, 500]


@pytest.mark.parametrize("target", ["checkpoint", "json", "png"])
def test_a_full_disk_names_the_file_and_keeps_the_last_good_one(mnist_root, tmp_path, capsys,
                                                               monkeypatch, target):
    """The disk fills up at the end of epoch 2 (simulated): writing the checkpoint
    (torch's zip writer fails with its "unexpected pos" RuntimeError, and the folder then
    has no free blocks), metrics.json or a PNG. The run says "no space left on the
    device" naming the file, exits 1 (a runtime failure), leaves no temporary file, and
    epoch 1's checkpoint and metrics still load."""
    import errno

    from pcsim import runfolder, runio
    common = ["run", str(REPO / "networks" / "mnist_pc.yaml"), "--data-root", str(mnist_root),
              "--out", str(tmp_path), "--set", "run.name=full", "--epochs", "2", *SMALL,
              "--set", "data.limit_train=200", "--set", "data.limit_test=100"]
    epochs_seen = []
    real_save, real_write = torch.save, Path.write_text

    class Full:
        f_bavail = 0

    def save(obj, path, *args, **kwargs):
        if target == "checkpoint" and obj.get("epoch") == 2:
            monkeypatch.setattr(runio.os, "statvfs", lambda folder: Full())
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos "
                               "1152 vs 1040")
        return real_save(obj, path, *args, **kwargs)

    def write_text(self, text, *args, **kwargs):
        if target == "json" and self.suffix == ".json" and '"epoch": 2' in text:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, text, *args, **kwargs)

    def savefig(fig, path, *args, **kwargs):
        if len(epochs_seen) >= 1 and target == "png":
            raise OSError(errno.ENOSPC, "No space left on device")
        epochs_seen.append(path)
        return real_savefig(fig, path, *args, **kwargs)

    import matplotlib.figure
    real_savefig = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(runfolder.torch, "save", save)
    monkeypatch.setattr(Path, "write_text", write_text)
    if target == "png":
        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    assert main(common) == 1
    err = capsys.readouterr().err
    assert "no space left on the device" in err and "Traceback" not in err, err
    assert err.count("\n") == 1, err
    named = {"checkpoint": "checkpoint.pt", "json": "metrics.json", "png": ".png"}[target]
    assert named in err.split("(")[0], err
    monkeypatch.undo()
    run_dir = tmp_path / "full"
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".") and p.name != ".pcsim.lock"]
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] >= 1
    assert json.loads((run_dir / "metrics.json").read_text())[0]["epoch"] == 1
