"""Sparse receivers (SPEC 3, execution cost): a link applies only the columns of the
neurons (a kernel's channels) that sent; the numbers and the counts are those of the
dense execution of the same events."""

import pytest
import torch

from pcsim.config.schema import EventsConfig
from pcsim.engines.torch.conv import Conv2dMap, ConvTranspose2dMap
from pcsim.engines.torch.engine import TorchEngine
from pcsim.engines.torch.events import Events, SigmaDelta
from pcsim.engines.torch.maps import DenseMap
from pcsim.model.projections import Conv2d, ConvTranspose2d, Dense
from pcsim.monitors import OpCounter
from tests.conftest import ROUNDOFF, assert_close, make_dynamics, make_network
from tests.engines.test_conv import _batch, conv_engine

F64 = torch.float64


def _sparse_payload(shape, density, seed):
    """A batch of payloads in which a random ``density`` share of the senders sent (the
    same senders in every sample, the rest exactly zero)."""
    g = torch.Generator().manual_seed(seed)
    per_sample = torch.rand(shape[1:], generator=g) < density
    return torch.randn(shape, generator=g, dtype=F64) * per_sample, per_sample.expand(shape)


def _map(cls, projection):
    g = torch.Generator().manual_seed(1)
    tensors = {k: v.to(F64) for k, v in cls.init_tensors(projection, "xavier_uniform", g).items()}
    return cls(projection, tensors)


MAPS = {
    "dense": lambda: _map(DenseMap, Dense(1, (12,), (9,))),
    "dense_shaped_pre": lambda: _map(DenseMap, Dense(1, (2, 3, 3), (7,))),
    "conv2d": lambda: _map(Conv2dMap, Conv2d(1, (6, 8, 8), (5, 4, 4), kernel=3, stride=2,
                                             padding=1)),
    "conv_transpose2d": lambda: _map(ConvTranspose2dMap,
                                     ConvTranspose2d(1, (5, 4, 4), (6, 8, 8), kernel=3,
                                                     stride=2, padding=1, output_padding=1)),
}


@pytest.mark.parametrize("kind", sorted(MAPS))
@pytest.mark.parametrize("adjoint", [False, True])
@pytest.mark.parametrize("density", [0.0, 0.2, 1.0])
def test_sparse_product_equals_dense_product(kind, adjoint, density):
    """Each map's sparse product of a payload with few senders equals its dense product
    to round-off, and the index names exactly the senders (neurons, or channels)."""
    m = MAPS[kind]()
    p = m.projection
    shape = (3, *(p.out_shape if adjoint else p.pre_shape))
    payload, mask = _sparse_payload(shape, density, seed=len(kind))
    dense = m.adjoint(payload) if adjoint else m.linear(payload)
    # one sample, a batch through gathered columns, a batch as a sparse payload
    for rows, crossover in ((1, 1.0), (3, 1.0), (3, 0.0)):
        index, count, n = m.sparse_index(Events(payload[:rows], mask[:rows]), adjoint, crossover)
        if kind.startswith("dense"):
            senders = mask[0].flatten()  # (every sample has the same senders here)
            if crossover > 0 or rows == 1:  # the senders' columns
                assert (count, n) == (int(senders.sum()), senders.numel())
                assert index.tolist() == senders.nonzero().squeeze(1).tolist()
            else:  # each event, counted double (a sparse product's cost per event)
                assert index is None or density == 0.0
                if index is None:
                    assert (count, n) == (2 * int(mask[:rows].sum()), mask[:rows].numel())
        else:  # kernels: the channels that sent in any sample and position
            senders = mask[0].flatten(1).any(1)
            assert n == senders.numel() and index.tolist() == senders.nonzero().squeeze(1).tolist()
            assert count == index.numel()
        sparse = m.apply_sparse(payload[:rows], index, adjoint)
        assert sparse.shape == dense[:rows].shape
        assert_close(sparse, dense[:rows], atol=ROUNDOFF, what=f"{kind} adjoint={adjoint} rows={rows}")


def test_events_say_how_many_and_where():
    """A sender's events name the neurons (flat, any sample) and channels (any sample
    and position) that sent, and their number, each as the mask has them; a tick with no
    event names none."""
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(4, 3, 5, 5, generator=g) < 0.02
    mask[2, 1, 0, 4] = True
    ev = Events(torch.where(mask, 1.0, 0.0), mask)
    assert ev.count() == int(mask.sum()) and ev.rows == 4
    flat = mask.reshape(4, -1)
    expect = sorted({int(j) for i in range(4) for j in flat[i].nonzero().flatten()})
    assert ev.senders().tolist() == expect and ev.senders() is ev.senders()
    assert ev.channels().tolist() == sorted({j // 25 for j in expect})
    one = Events(torch.zeros(1, 7), torch.zeros(1, 7, dtype=torch.bool))
    assert one.count() == 0 and one.senders().numel() == 0 and one.channels().numel() == 0
    sd = SigmaDelta("value_l0", 0.5)
    sd.reset(torch.zeros(1, 3))
    ev = sd.send(torch.tensor([[0.2, -0.75, 0.5]]))
    assert ev.senders().tolist() == [1, 2] and ev.payload.tolist() == [[0.0, -0.75, 0.5]]


def _mlp_engine(execution, theta, payload="graded", crossover=0.25, min_macs=0):
    net = make_network([20, 16, 12, 5], ["identity", "tanh", "gelu", "identity"])
    dyn = make_dynamics(dt=1e-3, tau_x=10e-3, n_steps=12)
    events = EventsConfig(enabled=True, theta=theta, payload=payload, execution=execution,
                          crossover=crossover, sparse_min_macs=min_macs)
    return TorchEngine(net, dyn, dtype=F64, seed=3, events=events)


def _run(eng, x, y):
    eng.recorder = OpCounter()
    s = eng.init_state(x, y)
    eng.infer(s)
    return s, eng.local_gradients(s), eng.recorder.result(), s.links.wire.applied


def _assert_same(a, b, what):
    (sa, ga, ca, _), (sb, gb, cb, _) = a, b
    for l in range(len(sa.x)):
        assert_close(sb.x[l], sa.x[l], atol=ROUNDOFF, what=f"{what}: x_{l}")
    for name in ga:
        assert_close(gb[name], ga[name], atol=ROUNDOFF, what=f"{what}: {name}")
    assert cb.cells == ca.cells, what  # the counts are the events', not the products'


@pytest.mark.parametrize("payload,theta", [("graded", 0.0), ("graded", 0.05),
                                           ("integer", 0.05)])
def test_sparse_execution_of_an_mlp_equals_dense_execution(payload, theta):
    """Inference and the local gradients of an MLP in event mode: sparse, dense and
    automatic execution give the same states to round-off and exactly the same counts."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 20, generator=g, dtype=F64), torch.randn(4, 5, generator=g, dtype=F64)
    runs = {ex: _run(_mlp_engine(ex, theta, payload), x, y) for ex in ("dense", "sparse", "auto")}
    assert runs["dense"][3]["sparse"] == 0 and runs["sparse"][3]["dense"] == 0
    for ex in ("sparse", "auto"):
        _assert_same(runs["dense"], runs[ex], ex)


def test_the_automatic_choice_follows_density_and_never_changes_results():
    """At theta > 0 some evaluations fall below the crossover and some above: ``auto``
    executes both ways in one run, with the results of either alone; a crossover of 1
    makes every evaluation sparse."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(1, 20, generator=g, dtype=F64), torch.randn(1, 5, generator=g, dtype=F64)
    dense = _run(_mlp_engine("dense", 0.02), x, y)
    auto = _run(_mlp_engine("auto", 0.02, crossover=0.3), x, y)
    assert auto[3]["sparse"] > 0 and auto[3]["dense"] > 0, auto[3]
    _assert_same(dense, auto, "auto")
    every = _run(_mlp_engine("auto", 0.02, crossover=1.0), x, y)
    assert every[3]["dense"] == 0
    _assert_same(dense, every, "crossover 1")
    # products below sparse_min_macs (here 20 x 16 = 320 MACs and smaller) run dense
    small = _run(_mlp_engine("auto", 0.02, crossover=1.0, min_macs=321), x, y)
    assert small[3]["sparse"] == 0
    _assert_same(dense, small, "min_macs")


@pytest.mark.parametrize("payload,theta", [("graded", 0.0), ("graded", 0.02),
                                           ("integer", 0.02)])
def test_sparse_execution_of_a_conv_net_equals_dense_execution(payload, theta):
    """Convolutions with pooling, then a dense head: channel-sparse execution gives the
    states, gradients and counts of dense execution."""
    x, y = _batch(3)
    runs = {}
    for ex in ("dense", "sparse"):
        eng = conv_engine("avg", events={"enabled": True, "theta": theta, "payload": payload,
                                         "execution": ex})
        runs[ex] = _run(eng, x, y)
    assert runs["sparse"][3]["dense"] == 0
    _assert_same(runs["dense"], runs["sparse"], "conv sparse")


def test_sparse_execution_follows_every_learning_step():
    """The sparse path reads a kept row-major copy of W^T; an optimizer's step (and a
    load of new weights) makes it copy again: three Adam batches executed sparsely end
    at the weights of dense execution."""
    engines = [_mlp_engine(ex, 0.01) for ex in ("dense", "sparse")]
    opts = [torch.optim.Adam(e.parameters(), lr=1e-2) for e in engines]
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        x, y = torch.randn(2, 20, generator=g, dtype=F64), torch.randn(2, 5, generator=g, dtype=F64)
        for e, opt in zip(engines, opts):
            e.train_batch(x, y, opt)
    for name, t in engines[0].params.items():
        assert_close(engines[1].params[name], t, atol=ROUNDOFF, what=name)
    fresh = _mlp_engine("dense", 0.01)
    engines[1].load_state_dict(fresh.state_dict())
    x, y = torch.randn(2, 20, generator=g, dtype=F64), torch.randn(2, 5, generator=g, dtype=F64)
    _assert_same(_run(fresh, x, y), _run(engines[1], x, y), "after a load")
