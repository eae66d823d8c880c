"""Online mode (`pcsim online`): a trained run streams test samples one at a time, each
predicted, then relaxed to convergence with its label clamped; latency and ops per
sample land in online.json."""

import json
from pathlib import Path

import pytest

from pcsim.cli import main

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--set", "network.layers.1.size=64", "--set", "network.layers.2.size=64",
         "--set", "data.limit_train=10000", "--set", "data.limit_test=1000",
         "--set", "dynamics.n_steps=5", "--set", "learning.lr=0.003",
         "--set", "run.device=cpu", "--set", "run.count_ops=false", "--no-progress"]


@pytest.fixture(scope="module")
def trained(mnist_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("online")
    assert main(["run", str(REPO / "networks" / "mnist_pc.yaml"), "--data-root",
                 str(mnist_root), "--out", str(out), "--set", "run.name=mlp", "--epochs", "1",
                 *SMALL]) == 0
    return out / "mlp"


def _online(run_dir, root, *extra):
    assert main(["online", str(run_dir), "--data-root", str(root), "--samples", "30",
                 "--max-steps", "50", "--stop-tol", "1e-3", *extra]) == 0
    return json.loads((run_dir / "online.json").read_text())


def _syn(result):
    return sum(v for phase in result["online_ops_per_sample"].values()
               for k, v in phase.items() if k in ("syn_ops_mac", "syn_ops_ac"))


def test_event_streams_at_theta_zero_have_the_dense_latencies(trained, mnist_root):
    """Dense, event (theta 0) and carried event streams relax each sample for the same
    number of steps (within float32 round-off of the stopping test, which may move a
    sample's stop by a step) and predict the same labels; the latency is below the cap
    and above 1 (a clamped label must travel down the network)."""
    dense = _online(trained, mnist_root)
    event = _online(trained, mnist_root, "--theta", "0")
    carried = _online(trained, mnist_root, "--theta", "0", "--carry")
    assert dense["online_execution"] == "dense" and event["online_execution"] == "event"
    for r in (event, carried):
        assert r["online_accuracy"] == dense["online_accuracy"]
        assert abs(r["online_latency_steps_mean"] - dense["online_latency_steps_mean"]) < 0.5
        assert abs(r["online_latency_steps_p50"] - dense["online_latency_steps_p50"]) <= 1
    assert 1 < dense["online_latency_steps_mean"] < 50
    assert dense["online_converged_share"] > 0.9
    assert dense["online_accuracy"] > 0.75  # chance 0.10; 1 epoch on 10000 images


def test_carrying_the_sigma_delta_state_sends_less(trained, mnist_root, capsys):
    """At theta 0.01 a stream whose receivers keep what they hold sends only changes:
    fewer synaptic ops per sample than restarting every sample from zero, at nearly the
    same accuracy; --learn takes one SGD step per sample and says so."""
    fresh = _online(trained, mnist_root, "--theta", "0.01")
    carried = _online(trained, mnist_root, "--theta", "0.01", "--carry")
    assert _syn(carried) < 0.9 * _syn(fresh)
    assert abs(carried["online_accuracy"] - fresh["online_accuracy"]) <= 0.05
    capsys.readouterr()
    learned = _online(trained, mnist_root, "--learn", "--lr", "0.001")
    assert learned["online_learn"] and "learning" in learned["online_ops_per_sample"]
    assert "latency" in capsys.readouterr().out


def test_bad_online_arguments_are_named(trained, mnist_root, capsys):
    assert main(["online", str(trained), "--data-root", str(mnist_root), "--samples",
                 "20000"]) == 2
    assert "the test split has only 10000" in capsys.readouterr().err
    assert main(["online", str(trained), "--data-root", str(mnist_root), "--theta",
                 "-1"]) == 2
    assert "theta" in capsys.readouterr().err
