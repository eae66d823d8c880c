"""Weight initialisations: bounds and spreads from their definitions, same draw for
every device and dtype."""

import math

import pytest
import torch

from pcsim.engines.torch.params import ParamStore
from tests.conftest import make_network


@pytest.mark.parametrize("init,w_std,bias_bound", [
    ("xavier_uniform", math.sqrt(6 / (300 + 200)) / math.sqrt(3), 0.0),
    ("xavier_normal", math.sqrt(2 / (300 + 200)), 0.0),
    ("kaiming_uniform", math.sqrt(6 / 300) / math.sqrt(3), 0.0),
    ("kaiming_normal", math.sqrt(2 / 300), 0.0),
    ("uniform_fan_in", 1 / math.sqrt(300) / math.sqrt(3), 1 / math.sqrt(300)),
])
def test_spread_and_bias(init, w_std, bias_bound):
    """60,000 draws: the sample std is within 2% of the definition's; uniform draws stay
    inside their bound; only uniform_fan_in (torch.nn.Linear's and equinox's default)
    draws biases, from the weights' bound."""
    net = make_network([300, 200], ["identity", "tanh"])
    store = ParamStore.initial(net, init, seed=1, device="cpu", dtype=torch.float64)
    assert list(store) == ["W_1", "b_1"]
    w, b = store["W_1"], store["b_1"]
    assert abs(float(w.std()) / w_std - 1) < 0.02
    if "uniform" in init:
        assert float(w.abs().max()) <= math.sqrt(3) * w_std + 1e-12
    if bias_bound:
        assert 0 < float(b.abs().max()) <= bias_bound and float(b.std()) > bias_bound / 3
    else:
        assert float(b.abs().max()) == 0.0
    w32 = ParamStore.initial(net, init, seed=1, device="cpu", dtype=torch.float32)["W_1"]
    assert torch.equal(w32, w.float())
