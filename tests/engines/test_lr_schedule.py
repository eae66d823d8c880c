"""The per-epoch learning-rate schedules (warmup then cosine, as PCX's VGG benchmarks)."""

import math

import torch

from pcsim.config.schema import LearningConfig
from pcsim.engines.torch.optim import make_scheduler


def _lrs(**kw):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = make_scheduler(LearningConfig(lr=1.0, **kw), opt)
    out = []
    for _ in range(kw["epochs"]):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_cosine():
    """2 warmup epochs of 6: lr/3, 2lr/3, then cosine over the 4 left:
    0.5 (1 + cos(pi k / 4)) for k = 0..3."""
    got = _lrs(epochs=6, lr_schedule="warmup_cosine", warmup_epochs=2)
    want = [1 / 3, 2 / 3] + [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert all(abs(g - w) < 1e-12 for g, w in zip(got, want)), got


def test_no_warmup_is_plain_cosine():
    assert _lrs(epochs=5, lr_schedule="warmup_cosine") == _lrs(epochs=5, lr_schedule="cosine")
