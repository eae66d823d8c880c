"""Event-driven (sigma-delta) execution against dense execution, and exact op counts."""


import pytest
import torch

from pcsim.config.schema import EventsConfig, LearningConfig
from pcsim.engines.torch.engine import TorchEngine
from pcsim.engines.torch.events import SigmaDelta
from pcsim.engines.torch.optim import make_optimizer
from pcsim.monitors import OpCounter
from pcsim.model import pc_train_cost
from tests.conftest import ROUNDOFF, assert_close, make_dynamics, make_network, pairs

SIZES = [7, 6, 5, 4]
ACTS = ["identity", "tanh", "sigmoid", "identity"]


def _pair(events, tau_eps=0.0, n_steps=8):
    net = make_network(SIZES, ACTS)
    dyn = make_dynamics(dt=1e-3, tau_x=10e-3, tau_eps=tau_eps, n_steps=n_steps)
    dense = TorchEngine(net, dyn, dtype=torch.float64, seed=2)
    event = TorchEngine(net, dyn, dtype=torch.float64, seed=2, events=events)
    return dense, event


@pytest.mark.parametrize("tau_eps", [0.0, 10e-3])
def test_theta_zero_event_mode_equals_dense(tau_eps):
    """theta = 0 sends every change: inference states and the weights after three
    learning steps (Adam) agree with dense execution to float64 round-off."""
    dense, event = _pair(EventsConfig(enabled=True, theta=0.0), tau_eps)
    opts = [make_optimizer(LearningConfig(optimizer="adam", lr=1e-2), e.parameters())
            for e in (dense, event)]
    for _ in range(3):
        x, y = torch.randn(5, SIZES[0], dtype=torch.float64), torch.randn(5, SIZES[-1], dtype=torch.float64)
        states = []
        for eng, opt in zip((dense, event), opts):
            s = eng.init_state(x, y)
            eng.infer(s)
            states.append(s)
            eng.apply_gradients(eng.local_gradients(s), opt)
        for l in range(len(SIZES)):
            assert_close(states[1].x[l], states[0].x[l], atol=1e-12, what=f"x_{l}")
    for (w_d, b_d), (w_e, b_e) in zip(pairs(dense.params), pairs(event.params)):
        assert_close(w_e, w_d, atol=1e-12)
        assert_close(b_e, b_d, atol=1e-12)


def test_theta_positive_keeps_receivers_within_theta_and_sends_fewer_events():
    """With theta > 0 every receiver's copy stays within theta of its sender (Lava's
    sigma-delta with residue), and fewer events are sent than at theta = 0."""
    counts = {}
    for theta in (0.0, 0.05):
        _, eng = _pair(EventsConfig(enabled=True, theta=theta), n_steps=30)
        eng.recorder = OpCounter()
        x, y = torch.randn(4, SIZES[0], dtype=torch.float64), torch.randn(4, SIZES[-1], dtype=torch.float64)
        s = eng.init_state(x, y)
        for _ in range(30):
            g_before = list(s.g)  # errors send at the start of a tick, values at its end
            eng.step(s)
            for l in range(len(SIZES) - 1):
                assert (s.x[l] - s.events.value[l].sent).abs().max() < theta + ROUNDOFF
            for l in range(2, len(SIZES)):  # g_1 is never sent: x_0 is clamped
                assert (g_before[l] - s.events.gate[l].sent).abs().max() < theta + ROUNDOFF
        counts[theta] = eng.recorder.result().total("syn_events")
    assert counts[0.05] < 0.5 * counts[0.0]


def test_sigma_delta_residue_and_integer_payloads():
    """A signal ramping by 0.3 per tick with theta = 1: graded events fire when the
    accumulated change reaches 1 (ticks 4, 7, 10) and carry the whole change; integer
    events carry trunc(delta / theta) quanta and keep the remainder."""
    graded, integer = SigmaDelta("value_l0", 1.0), SigmaDelta("value_l0", 1.0, integer=True)
    start = torch.zeros(1, 1, dtype=torch.float64)
    graded.reset(start)
    integer.reset(start)
    fired_graded, fired_integer = [], []
    for tick in range(1, 11):
        signal = torch.full((1, 1), 0.3 * tick, dtype=torch.float64)
        ev = graded.send(signal)
        payload, mask = ev.payload, ev.mask
        if mask.any():
            fired_graded.append((tick, round(float(payload), 12)))
        ev = integer.send(signal)
        payload, mask = ev.payload, ev.mask
        if mask.any():
            fired_integer.append((tick, float(payload)))
    # graded: 1.2 at tick 4, then 2.1 - 1.2 = 0.9 < 1 at tick 7? no: 0.9 -> waits; tick 8: 2.4 - 1.2 = 1.2
    assert fired_graded == [(4, 1.2), (8, 1.2)]
    # integer: floor of the accumulated change: 1 at tick 4 (1.2), 1 at tick 7 (2.1 - 1), 1 at tick 10 (3.0 - 2)
    assert fired_integer == [(4, 1.0), (7, 1.0), (10, 1.0)]
    assert float(integer.sent) == 3.0


def test_dense_counts_by_hand():
    """3-4-2 network, batch 1, T = 2, x_0 and x_2 clamped, tau_w = inf.

    Feedforward start (step 0): W_1: 12 MACs, 3 events; W_2: 8 MACs, 4 events.
    Each Euler step: W_2^T (feedback to the free x_1): 8 MACs, 2 events (error_l2 sends);
    eps_1->x_1: 4 one-to-one events; W_2 re-run (x_1 moved): 8 MACs, 4 events.
    Inference dense_macs = 12 + 8 + 2 * (8 + 8) = 52, the analytic pc_train_cost;
    syn_events = 3 + 4 + 2 * (2 + 4 + 4) = 27; syn_ops_mac = 52 + 2 * 4 = 60.
    Neuron updates: step 0 updates value and error neurons of layers 1-2 (4+4+2+2 = 12);
    each step the free value_l1 (4) and error_l1, error_l2 (4 + 2): 12 + 2 * 10 = 32.
    Learning: 12 + 8 = 20 gradient MACs (one per synapse, 1 sample) and 12 + 8 + 4 + 2 =
    26 weight writes (one per weight and bias)."""
    net = make_network([3, 4, 2], ["identity", "tanh", "identity"])
    eng = TorchEngine(net, make_dynamics(dt=1e-3, tau_x=10e-3, n_steps=2), dtype=torch.float64)
    eng.recorder = OpCounter()
    eng.train_batch(torch.randn(1, 3), torch.randn(1, 2), torch.optim.SGD(eng.parameters(), lr=0.1))
    c = eng.recorder.result()
    assert c.total("dense_macs", "inference") == 52 == pc_train_cost(net, 2).inference_macs
    assert c.total("syn_events", "inference") == 27
    assert c.total("syn_ops_mac", "inference") == 60
    assert c.total("neuron_updates") == 32 and c.total("neuron_updates_active") == 32
    assert c.total("weight_grad_ops", "learning") == 20
    assert c.total("weight_writes", "learning") == 26
    assert c.total("dense_macs", "learning") == 20 == pc_train_cost(net, 2).learning_macs
    assert c.by("step", "dense_macs", "inference") == {0: 20, 1: 16, 2: 16}
    # float64: one weight read per synaptic op through a projection (52) and per
    # parameter written (26); the one-to-one eps links carry no weight
    assert c.total("mem_read_bytes") == 8 * (52 + 26)


def test_event_counts_by_hand():
    """Identity 2-3 network, weights with one zero, theta = 0.5, inference only
    (x_1 free, test phase). x_0 = [1.0, 0.2]: at the feedforward start value_l0 sends one
    event (|1.0| >= 0.5; 0.2 stays as residue). Neuron 0 of layer 0 reaches W[:, 0] =
    [1, 0, 2]: 2 nonzero weights, so 1 event and 2 syn ops; error_l1 neurons 0 and 2 are
    reached (active), neuron 1 is not."""
    net = make_network([2, 3], ["identity", "identity"])
    eng = TorchEngine(net, make_dynamics(dt=1e-3, tau_x=10e-3, n_steps=0), dtype=torch.float64,
                      events=EventsConfig(enabled=True, theta=0.5))
    with torch.no_grad():
        pairs(eng.params)[0][0].copy_(torch.tensor([[1.0, 1.0], [0.0, 1.0], [2.0, 1.0]]))
    eng.recorder = OpCounter()
    s = eng.init_state(torch.tensor([[1.0, 0.2]]), phase="test")
    c = eng.recorder.result()
    assert c.total("syn_events") == 1 and c.total("syn_ops_mac") == 2
    assert c.total("neuron_updates", target="error_l1") == 3
    assert c.total("neuron_updates_active", target="error_l1") == 2
    assert c.total("neuron_updates_active", target="value_l1") == 0  # nothing reached it
    assert_close(s.a[1], torch.tensor([[1.0, 0.0, 2.0]]), atol=0)  # receivers hold W [1, 0]


def neurobench_synops(message, weight, dense, every_input=None):
    """NeuroBench's synaptic-operation count of one linear layer on one message,
    reproduced from its definition (neurobench/metrics/utils/layers/macs.py,
    ``stateless_layer_macs``): binarise the weights and the input (nonzero -> 1; every
    entry -> 1 for the dense count), zero the bias, run the layer, sum the outputs.
    ``every_input``: every input counts as sent, the weights still binarised by nonzero
    (SPEC 4's dense-mode syn_ops: the fan-out over nonzero weights of every sender)."""
    w_bin = torch.ones_like(weight) if dense else (weight != 0).to(weight.dtype)
    x_bin = (torch.ones_like(message) if dense or every_input
             else (message != 0).to(message.dtype))
    return int((x_bin @ w_bin.t()).sum())


def test_counts_match_neurobench_definitions():
    """On the same messages, pcsim's event-mode syn_ops equal NeuroBench's effective
    synaptic operations and its dense-mode dense_macs NeuroBench's dense count; dense
    mode's syn_ops are every sender's fan-out over the nonzero weights (SPEC 4), not the
    products executed."""
    net = make_network([9, 6], ["identity", "identity"])
    weight = torch.randn(6, 9, dtype=torch.float64)
    weight[weight.abs() < 0.5] = 0  # about 38% zeros
    x0 = torch.randn(4, 9, dtype=torch.float64)
    x0[x0.abs() < 0.7] = 0
    for events, dense in ((EventsConfig(enabled=True, theta=0.0), False), (None, True)):
        eng = TorchEngine(net, make_dynamics(n_steps=0), dtype=torch.float64, events=events)
        with torch.no_grad():
            pairs(eng.params)[0][0].copy_(weight)
        eng.recorder = OpCounter()
        eng.init_state(x0, phase="test")  # one message: x_0 from zero, at the feedforward start
        counts = eng.recorder.result()
        ops = counts.total("syn_ops_mac", target="W_1")
        if dense:
            assert counts.total("dense_macs", target="W_1") == neurobench_synops(x0, weight, True)
            assert ops == neurobench_synops(x0, weight, False, every_input=True) < 4 * 54
        else:
            assert ops == neurobench_synops(x0, weight, False)


def test_dense_syn_ops_count_only_nonzero_weights_per_evaluation():
    """SPEC 4: a dense 3 -> 4 projection with 4 nonzero weights of 12 reports 4 syn ops
    per sample per evaluation (12 dense MACs), in PC inference (forward at the start, the
    adjoint at each step reaches the nonzero fan-in of every error neuron) and in the BP
    twin's forward pass; weight-gradient MACs still cover all 12 synapses per sample and
    the learning step writes each of the 16 parameters once (2 samples)."""
    from pcsim.engines.torch.backprop import BackpropTrainer

    net = make_network([3, 4, 2], ["identity", "tanh", "identity"])
    weight = torch.zeros(4, 3, dtype=torch.float64)
    weight[0, 0], weight[1, 2], weight[2, 1], weight[3, 2] = 1.0, -0.5, 0.7, 2.0
    for trainer in (TorchEngine(net, make_dynamics(n_steps=3), dtype=torch.float64),
                    BackpropTrainer(net, dtype=torch.float64)):
        with torch.no_grad():
            trainer.params["W_1"].copy_(weight)
            trainer.params["W_2"].fill_(0.5)
            trainer.params["W_2"][0, 1] = 0.0  # 7 of 8 nonzero
        trainer.recorder = OpCounter()
        opt = torch.optim.SGD(trainer.parameters(), lr=0.0)
        trainer.train_batch(torch.randn(2, 3, dtype=torch.float64),
                            torch.randn(2, 2, dtype=torch.float64), opt)
        c = trainer.recorder.result()

        def by_step(kind, target, phase="inference"):
            return {k[1]: int(v) for k, v in c.cells.items()
                    if k[0] == phase and k[2] == target and k[3] == kind}

        assert by_step("syn_ops_mac", "W_1") == {0: 2 * 4}
        assert by_step("dense_macs", "W_1") == {0: 2 * 12}
        assert c.total("weight_grad_ops", "learning", target="W_1") == 2 * 12
        assert c.total("weight_writes", "learning", target="W_1") == 12 + 4
        if isinstance(trainer, TorchEngine):  # x_1 moves: W_2 forward and W_2^T each step
            assert by_step("syn_ops_mac", "W_2^T") == {k: 2 * 7 for k in (1, 2, 3)}
        else:  # backprop's adjoint through W_2 in the learning phase
            assert c.total("syn_ops_mac", "learning", target="W_2^T") == 2 * 7


def test_generative_event_mode_at_theta_zero_equals_dense():
    """Generative mode (free latent x_0 with its prior, the data clamped on top) in event
    mode at theta = 0: inference and three Adam learning steps give the dense states and
    weights to round-off."""
    net = make_network(SIZES, ACTS, mode="generative")
    dyn = make_dynamics(dt=1e-3, tau_x=10e-3, n_steps=10)
    dense = TorchEngine(net, dyn, dtype=torch.float64, seed=4)
    event = TorchEngine(net, dyn, dtype=torch.float64, seed=4,
                        events=EventsConfig(enabled=True, theta=0.0))
    opts = [torch.optim.Adam(e.parameters(), lr=1e-2) for e in (dense, event)]
    g = torch.Generator().manual_seed(3)
    for batch in range(3):
        target = torch.randn(5, SIZES[-1], generator=g, dtype=torch.float64)
        states = []
        for eng, opt in zip((dense, event), opts):
            s = eng.init_state(None, target)
            eng.infer(s)
            states.append(s)
            eng.apply_gradients(eng.local_gradients(s), opt)
        assert float(states[1].x[0].abs().max()) > 0  # the latent moved
        for l in range(len(SIZES)):
            assert_close(states[1].x[l], states[0].x[l], atol=1e-12, what=f"batch {batch} x_{l}")
    for name, t in dense.params.items():
        assert_close(event.params[name], t, atol=1e-12, what=name)


def test_finite_tau_w_event_mode_at_theta_zero_equals_dense_and_counts_the_resync():
    """Continuous plasticity (finite tau_w) in event mode at theta = 0: after every weight
    change the receivers' accumulated inputs are recomputed, so states and weights follow
    dense execution to round-off over two batches; the recomputation is counted as
    learning-phase synaptic ops at every step, each nonzero sent value once per fan-out."""
    net = make_network(SIZES, ACTS)
    dyn = make_dynamics(dt=1e-3, tau_x=10e-3, tau_w=100e-3, n_steps=8)
    dense = TorchEngine(net, dyn, dtype=torch.float64, seed=6)
    event = TorchEngine(net, dyn, dtype=torch.float64, seed=6,
                        events=EventsConfig(enabled=True, theta=0.0))
    event.recorder = OpCounter()
    g = torch.Generator().manual_seed(5)
    for batch in range(2):
        x = torch.randn(3, SIZES[0], generator=g, dtype=torch.float64)
        y = torch.randn(3, SIZES[-1], generator=g, dtype=torch.float64)
        sd, se = dense.init_state(x, y), event.init_state(x, y)
        dense.infer(sd)
        event.infer(se)
        for l in range(len(SIZES)):
            assert_close(se.x[l], sd.x[l], atol=1e-12, what=f"batch {batch} x_{l}")
        for name, t in dense.params.items():
            assert_close(event.params[name], t, atol=1e-12, what=f"batch {batch} {name}")
    assert float((dense.params["W_1"] - TorchEngine(net, dyn, dtype=torch.float64,
                                                    seed=6).params["W_1"]).abs().max()) > 1e-4
    counts = event.recorder.result()
    resync = counts.by("step", "syn_ops_mac", phase="learning")
    assert sorted(resync) == list(range(1, 9))
    # x_0 is clamped and dense (every pixel nonzero): W_1's resync reads all its weights
    # at every step, per sample (2 batches x 3 samples)
    w1 = sum(v for (ph, step, t, k), v in counts.cells.items()
             if ph == "learning" and t == "W_1" and k == "syn_ops_mac")
    assert w1 == 2 * 3 * 8 * SIZES[0] * SIZES[1]


def test_carried_sigma_delta_state_equals_dense_and_sends_only_changes():
    """events.carry: receivers keep what they hold from one batch to the next. At theta
    = 0, with an Adam step between batches (the held inputs are recomputed for the new
    weights), states and weights follow dense execution to round-off; a sample shown
    twice sends no input event the second time, where a fresh start sends every
    nonzero pixel."""
    net = make_network(SIZES, ACTS)
    dyn = make_dynamics(dt=1e-3, tau_x=10e-3, n_steps=6)
    dense = TorchEngine(net, dyn, dtype=torch.float64, seed=2)
    event = TorchEngine(net, dyn, dtype=torch.float64, seed=2,
                        events=EventsConfig(enabled=True, theta=0.0, carry=True))
    opts = [torch.optim.Adam(e.parameters(), lr=1e-2) for e in (dense, event)]
    g = torch.Generator().manual_seed(8)
    for batch in range(3):
        x = torch.randn(2, SIZES[0], generator=g, dtype=torch.float64)
        y = torch.randn(2, SIZES[-1], generator=g, dtype=torch.float64)
        for eng, opt in zip((dense, event), opts):
            eng.train_batch(x, y, opt)
        for name, t in dense.params.items():
            assert_close(event.params[name], t, atol=1e-12, what=f"batch {batch} {name}")
    assert event._carried.weights_version == 2  # synced before the 3rd batch's own step
    sent_at_start = {}
    for carry in (False, True):
        eng = TorchEngine(net, dyn, dtype=torch.float64, seed=2,
                          events=EventsConfig(enabled=True, theta=0.0, carry=carry))
        x, y = torch.randn(1, SIZES[0], generator=g, dtype=torch.float64), torch.zeros(1, SIZES[-1], dtype=torch.float64)
        eng.infer(eng.init_state(x, y))
        eng.recorder = OpCounter()
        eng.init_state(x, y)
        sent_at_start[carry] = sum(v for (ph, step, t, k), v in eng.recorder.result().cells.items()
                                   if t == "W_1" and k == "syn_events" and step == 0)
    assert sent_at_start == {False: SIZES[0], True: 0}
