"""End to end: the folded PC autoencoder (generative mode) and its BP encoder-decoder
baseline through `pcsim run` / `pcsim eval` on a slice of real MNIST."""

import json
from pathlib import Path

import pytest

from pcsim.cli import main
from pcsim.config import load_config
from pcsim.model import Network

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--set", "data.limit_train=2000", "--set", "data.limit_test=500",
         "--set", "run.device=cpu", "--no-progress"]


def _params(path):
    net = Network.from_config(load_config(REPO / "networks" / path).network)
    return sum(p.n_synapses + p.n_post for p in net.projections)


def test_pc_decoder_has_half_the_parameters_of_the_bp_encoder_decoder():
    """64-384-784 decoder: 64*384 + 384 + 384*784 + 784; the BP net adds the mirror."""
    pc, bp = _params("mnist_pc_autoencoder.yaml"), _params("mnist_bp_autoencoder.yaml")
    assert pc == 64 * 384 + 384 + 384 * 784 + 784 == 326_800
    assert bp == pc + 784 * 384 + 384 + 384 * 64 + 64 == 652_880


@pytest.mark.parametrize("config,steps", [("mnist_pc_autoencoder.yaml", 10),
                                          ("mnist_bp_autoencoder.yaml", None)])
def test_autoencoder_run_lowers_test_reconstruction_error(mnist_root, tmp_path, capsys,
                                                          config, steps):
    """Two epochs on 2000 images: test MSE per pixel falls between epochs and ends well
    below the MSE of predicting the mean image's level (about 0.1 on MNIST), the run
    folder holds the reconstruction figure, and `pcsim eval` reproduces the MSE."""
    extra = ["--set", f"dynamics.n_steps={steps}"] if steps else []
    assert main(["run", str(REPO / "networks" / config), "--data-root", str(mnist_root),
                 "--out", str(tmp_path), "--set", "run.name=ae", "--epochs", "2",
                 *SMALL, *extra]) == 0
    run_dir = tmp_path / "ae"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    mse = [m["test_mse"] for m in metrics]
    assert mse[1] < mse[0] < 0.1 and "test_accuracy" not in metrics[-1]
    for name in ("reconstructions.png", "mse.png", "energy_report.json", "checkpoint.pt"):
        assert (run_dir / name).is_file(), name
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--data-root", str(mnist_root)]) == 0
    assert f"test reconstruction MSE {mse[-1]:.5f}" in capsys.readouterr().out


def test_generative_mode_refuses_label_targets(tmp_path, capsys):
    """A generative network clamps the data to its top layer: a label target is refused
    with the key named, before any data is touched."""
    rc = main(["run", str(REPO / "networks" / "mnist_pc_autoencoder.yaml"),
               "--set", "data.target=label", "--out", str(tmp_path), "--no-progress"])
    assert rc == 2
    assert "data.target: image" in capsys.readouterr().err
