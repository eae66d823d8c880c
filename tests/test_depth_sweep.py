"""benchmarks/depth_sweep.py builds the network of every depth from a base config: the
layers between the input and the last hidden layer are kept, the last hidden one repeats."""

import importlib.util
from argparse import Namespace
from pathlib import Path

import pytest
import yaml

from pcsim.config import config_from_dict
from pcsim.model import Network

REPO = Path(__file__).resolve().parents[1]


def _sweep():
    spec = importlib.util.spec_from_file_location("depth_sweep", REPO / "benchmarks" / "depth_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ARGS = Namespace(epochs=None, limit_train=None, limit_test=None, threads=1, runs="runs", device=None)


@pytest.mark.parametrize("base,depth,shapes", [
    ("fmnist_depth.yaml", 3, [(784,), (128,), (128,), (10,)]),
    ("fmnist_depth.yaml", 5, [(784,)] + [(128,)] * 4 + [(10,)]),
    ("cifar10_depth.yaml", 3, [(3, 32, 32), (32, 16, 16), (32, 16, 16), (10,)]),
    ("cifar10_depth.yaml", 6, [(3, 32, 32)] + [(32, 16, 16)] * 5 + [(10,)]),
])
def test_depth_counts_weight_layers(base, depth, shapes):
    sweep = _sweep()
    cfg = sweep.build_config(yaml.safe_load((REPO / "networks" / base).read_text()), depth, "pc",
                             0, sweep.parse_remedy("steps_per_layer=2,prec_out=1"), ARGS)
    net = Network.from_config(config_from_dict(cfg).network)
    assert [layer.shape for layer in net.layers] == shapes
    assert len(net.projections) == depth
    assert cfg["dynamics"]["n_steps"] == 2 * depth
    assert net.layers[-1].prec == 1.0
    if base.startswith("cifar"):  # the stem keeps its pooling, the repeats keep the shape
        kinds = [(p["kind"], p.get("pool", "none")) for p in
                 (layer["projection"] for layer in cfg["network"]["layers"][1:-1])]
        assert kinds == [("conv2d", "avg")] + [("conv2d", "none")] * (depth - 2)


def test_a_depth_below_the_fixed_layers_is_refused():
    sweep = _sweep()
    base = yaml.safe_load((REPO / "networks" / "cifar10_depth.yaml").read_text())
    with pytest.raises(SystemExit, match="below the base config's 2 fixed weight layers"):
        sweep.build_config(base, 1, "bp", 0, {}, ARGS)
