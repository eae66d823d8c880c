"""CUDA agrees with CPU (PCX's test_accelerator_agrees_with_cpu); skipped without a GPU."""

import pytest
import torch

from pcsim.engines.torch.engine import TorchEngine
from pcsim.engines.torch.optim import make_optimizer
from pcsim.config.schema import LearningConfig
from tests.conftest import assert_close, make_dynamics, make_network, pairs

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_train_batches_agree_with_cpu_in_float64():
    """Three PC training batches on CUDA and CPU, float64, from the same initial weights,
    give the same weights to 1e-10 (matmul reduction order differs, round-off does not)."""
    net = make_network([20, 16, 12, 5], ["identity", "tanh", "relu", "identity"])
    dyn = make_dynamics(dt=1e-3, tau_x=10e-3, n_steps=10)
    engines = [TorchEngine(net, dyn, device=d, dtype=torch.float64, seed=4)
               for d in ("cpu", "cuda")]
    opts = [make_optimizer(LearningConfig(optimizer="adam", lr=1e-2), e.parameters())
            for e in engines]
    for _ in range(3):
        x, y = torch.randn(32, 20, dtype=torch.float64), torch.randn(32, 5, dtype=torch.float64)
        for eng, opt in zip(engines, opts):
            eng.train_batch(x.to(eng.device), y.to(eng.device), opt)
    for (w_cpu, _), (w_gpu, _) in zip(pairs(engines[0].params), pairs(engines[1].params)):
        assert_close(w_gpu, w_cpu, atol=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("pool", ["avg", "max"])
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_conv_train_batches_agree_with_cpu(pool, compile):
    """A conv PC net (conv + pooling, dense head) trains the same on CUDA as on CPU:
    float64 eager to 1e-10; the compiled CUDA path against eager CPU to 1e-8 (inductor
    reorders sums)."""
    from pcsim.config.schema import NetworkConfig
    from pcsim.model import Network
    net = Network.from_config(NetworkConfig(layers=[
        {"shape": [3, 8, 8]},
        {"shape": [4, 4, 4], "activation": "gelu",
         "projection": {"kind": "conv2d", "kernel": 3, "padding": 1, "pool": pool}},
        {"shape": [6, 2, 2], "activation": "tanh",
         "projection": {"kind": "conv2d", "kernel": 3, "padding": 1, "pool": pool}},
        {"size": 5, "activation": "identity"}]))
    dyn = make_dynamics(dt=1e-3, tau_x=10e-3, n_steps=6)
    engines = [TorchEngine(net, dyn, device="cpu", dtype=torch.float64, seed=2),
               TorchEngine(net, dyn, device="cuda", dtype=torch.float64, seed=2,
                           compile=compile)]
    opts = [make_optimizer(LearningConfig(optimizer="adamw", lr=1e-2), e.parameters())
            for e in engines]
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(16, 192, generator=g, dtype=torch.float64)
        y = torch.randn(16, 5, generator=g, dtype=torch.float64)
        for eng, opt in zip(engines, opts):
            eng.train_batch(x.to(eng.device), y.to(eng.device), opt)
    for name, w_cpu in engines[0].params.items():
        assert_close(engines[1].params[name].cpu(), w_cpu, atol=1e-8 if compile else 1e-10)
