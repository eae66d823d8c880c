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
