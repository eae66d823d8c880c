"""The compiled fast path runs the optimizer's update in the same graph as the PC cycle
(GraphUpdate): the weights and the optimizer state follow ``optimizer.step()`` exactly,
a learning-rate change does not recompile, a diverged cycle touches nothing, and a loaded
optimizer state is the one used."""

from __future__ import annotations

import copy

import pytest
import torch

from pcsim.engines.torch.engine import TorchEngine
from pcsim.engines.torch.optim import GraphUpdate
from tests.conftest import ROUNDOFF, assert_close, make_dynamics, make_network

OPTIMIZERS = {
    "adamw": lambda p: torch.optim.AdamW(p, lr=3e-3, weight_decay=0.05),
    "adam": lambda p: torch.optim.Adam(p, lr=3e-3, weight_decay=0.01, betas=(0.8, 0.99)),
    "sgd_nesterov": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True,
                                              weight_decay=1e-3),
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05),
}


def _engines():
    """An eager engine (optimizer.step()) and a compiled one with the same weights."""
    net = make_network([6, 9, 8, 5], ["identity", "gelu", "tanh", "identity"],
                       prec=[1.0, 1.0, 1.0, 0.5])
    dyn = make_dynamics(tau_x=10e-3, dt=1e-3, n_steps=4)
    return [TorchEngine(net, dyn, dtype=torch.float64, seed=3, compile=c) for c in (False, True)]


def _batch(rows=5):
    return torch.randn(rows, 6, dtype=torch.float64), torch.rand(rows, 5, dtype=torch.float64)


def _state_tensors(opt):
    return [t for p in opt.param_groups[0]["params"] for t in opt.state[p].values()
            if isinstance(t, torch.Tensor)]


def _five_batches(name, eager, fused, graph_update):
    """Train ``eager`` (optimizer.step()) and ``fused`` (the compiled update) on five
    batches, the learning rate cut after the third, and hold them equal to float64
    round-off batch by batch (energies, weights; optimizer state at the end). The first
    step is torch.optim's own, which creates the state (``graph_update()`` is None
    then, except for stateless SGD); the cut must not recompile. Returns the fused
    trainer's last batch result."""
    opts = [OPTIMIZERS[name](t.parameters()) for t in (eager, fused)]
    for batch in range(5):
        x0, target = _batch()
        if batch == 3:
            for opt in opts:
                opt.param_groups[0]["lr"] *= 0.3
        stance = "fail_on_recompile" if batch >= 2 else "default"
        with torch.compiler.set_stance(stance):
            a = eager.train_batch(x0, target, opts[0])
            b = fused.train_batch(x0, target, opts[1])
        assert (graph_update() is not None) == (batch > 0 or name == "sgd"), batch
        assert_close(b["energy_final"], a["energy_final"], atol=ROUNDOFF)
        for p, q in zip(eager.parameters(), fused.parameters()):
            assert_close(q, p, atol=ROUNDOFF, what=f"{name}, batch {batch}")
    for s, t in zip(_state_tensors(opts[0]), _state_tensors(opts[1]), strict=True):
        assert_close(t, s, atol=ROUNDOFF, what=f"{name} state")
    return b


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_update_in_the_graph_is_the_optimizer_step(name):
    """Five batches, the learning rate changed after the third (as a schedule does):
    weights and optimizer state agree with optimizer.step() to float64 round-off, and the
    new learning rate does not recompile the graph."""
    torch.manual_seed(0)
    eager, fused = _engines()
    b = _five_batches(name, eager, fused, lambda: fused._fast._update)
    assert float(b["energy_final"]) < float(b["energy_initial"])
    assert fused._fast._cycle is None  # only the graph with the update was compiled


def test_diverged_cycle_leaves_weights_and_state_untouched():
    """A batch whose energy is not finite raises FloatingPointError naming where it broke,
    and the graph wrote neither the weights nor the optimizer state (not even the step
    count)."""
    _, fused = _engines()
    opt = torch.optim.AdamW(fused.parameters(), lr=1e-2)
    for _ in range(2):
        fused.train_batch(*_batch(), opt)
    assert isinstance(fused._fast._update, GraphUpdate)
    weights = [p.clone() for p in fused.parameters()]
    state = [t.clone() for t in _state_tensors(opt)]
    x0, target = _batch()
    x0[2, 1] = float("inf")
    with pytest.raises(FloatingPointError, match="non-finite"):
        fused.train_batch(x0, target, opt)
    for p, q in zip(weights, fused.parameters()):
        assert torch.equal(p, q)
    for s, t in zip(state, _state_tensors(opt), strict=True):
        assert torch.equal(s, t)
    fused.train_batch(*_batch(), opt)  # and training goes on from there
    assert float(opt.state[next(iter(fused.parameters()))]["step"]) == 3


def test_loaded_optimizer_state_is_used():
    """load_state_dict replaces the parameter groups and the state tensors; the compiled
    update reads the new ones (here with another learning rate), as optimizer.step()
    does."""
    torch.manual_seed(1)
    eager, fused = _engines()
    opts = [torch.optim.Adam(e.parameters(), lr=5e-3) for e in (eager, fused)]
    for _ in range(2):
        batch = _batch()
        for engine, opt in zip((eager, fused), opts):
            engine.train_batch(*batch, opt)
    saved = copy.deepcopy(opts[0].state_dict())
    saved["param_groups"][0]["lr"] = 2e-2  # the loaded groups replace the old ones
    weights = [p.clone() for p in eager.parameters()]
    for _ in range(2):  # move both away from the saved point
        batch = _batch()
        for engine, opt in zip((eager, fused), opts):
            engine.train_batch(*batch, opt)
    batch = _batch()
    for engine, opt in zip((eager, fused), opts):
        with torch.no_grad():
            for p, w in zip(engine.parameters(), weights):
                p.copy_(w)
        opt.load_state_dict(copy.deepcopy(saved))  # torch.optim loads without copying
        engine.train_batch(*batch, opt)
    for p, q in zip(eager.parameters(), fused.parameters()):
        assert_close(q, p, atol=ROUNDOFF)
    assert float(opts[1].state[next(iter(fused.parameters()))]["step"]) == 3


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_parameter_groups_each_keep_their_hyperparameters(kind):
    """Two groups, listed in another order than the trainer's parameters (biases first,
    with their own learning rate and weight decay): the compiled update equals
    optimizer.step() to float64 round-off over four batches."""
    torch.manual_seed(2)
    eager, fused = _engines()

    def groups(e):
        named = dict(e.params.items())
        biases = [t for k, t in named.items() if k.startswith("b_")]
        weights = [t for k, t in named.items() if k.startswith("W_")]
        if kind == "sgd":
            return torch.optim.SGD([{"params": biases, "lr": 0.2, "momentum": 0.5},
                                    {"params": weights}], lr=0.05, momentum=0.9)
        return torch.optim.AdamW([{"params": biases, "lr": 1e-2, "weight_decay": 0.0},
                                  {"params": weights}], lr=3e-3, weight_decay=0.05)

    opts = [groups(e) for e in (eager, fused)]
    for batch in range(4):
        x0, target = _batch()
        eager.train_batch(x0, target, opts[0])
        fused.train_batch(x0, target, opts[1])
        assert (fused._fast._update is not None) == (batch > 0)
        for p, q in zip(eager.parameters(), fused.parameters()):
            assert_close(q, p, atol=ROUNDOFF, what=f"{kind}, batch {batch}")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_compiled_backprop_is_eager_backprop(name):
    """The BP baseline's compiled path (the loss through torch.compile, forward and
    backward fused by AOTAutograd; the update the compiled GraphUpdate once the
    optimizer has its state): five batches, the learning rate cut after the third,
    weights, optimizer state and losses agree with eager autograd + optimizer.step()
    to float64 round-off, and the cut does not recompile."""
    from pcsim.engines.torch.backprop import BackpropTrainer
    torch.manual_seed(0)
    net = make_network([6, 9, 8, 5], ["identity", "gelu", "tanh", "identity"],
                       prec=[1.0, 1.0, 1.0, 0.5])
    eager, fused = (BackpropTrainer(net, dtype=torch.float64, seed=3, compile=c)
                    for c in (False, True))
    _five_batches(name, eager, fused, lambda: fused._update)
    assert eager._compiled_loss is None and fused._compiled_loss is not None
