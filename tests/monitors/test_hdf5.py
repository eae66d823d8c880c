"""HDF5 traces: values equal the engine's states, spikes equal the event counters,
SONATA readers (libsonata) open the files, streaming keeps memory bounded, and write
failures are clean."""

import errno
import json
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch

from pcsim.config import config_from_dict
from pcsim.data import Dataset
from pcsim.engines.torch.engine import TorchEngine
from pcsim.experiment import record_traces
from pcsim.model import Network
from pcsim.monitors import OpCounter
from pcsim.monitors.hdf5 import SORTING, TraceError, TraceWriter
from tests.conftest import REPO, assert_close

SIZES = [6, 5, 4, 3]


def _config(events=False, every=1, samples=7, batch_size=3, populations=("value", "error")):
    return config_from_dict({
        "network": {"layers": [{"size": 6}, {"size": 5, "activation": "tanh"},
                               {"size": 4, "activation": "tanh"}, {"size": 3}]},
        "dynamics": {"tau_x": "10 ms", "dt": "1 ms", "n_steps": 6},
        "events": {"enabled": events, "theta": 0.02},
        "traces": {"enabled": True, "samples": samples, "every": every,
                   "batch_size": batch_size, "populations": list(populations)},
        "run": {"dtype": "float64"}})


def _data(n=10):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    return Dataset("toy", x, y, x, y, 3, REPO)


def _engine(config):
    return TorchEngine.from_config(config, Network.from_config(config.network), "cpu")


@pytest.mark.parametrize("every", [1, 2])
def test_recorded_values_equal_engine_states(tmp_path, every):
    """Frames hold x and eps at steps 0, every, 2 every, ... of each sample, exactly as
    an independent run of the engine computes them; E_l(t) sums to the engine's E; the
    trials sit end to end on one ms time axis."""
    config, data = _config(every=every), _data()
    engine = _engine(config)
    path = record_traces(engine, data, config, tmp_path / "traces.h5", epoch=3)
    s = engine.init_state(data.test_x[:7], data.one_hot(data.test_y[:7], torch.float64))
    expected = {0: ([t.clone() for t in s.x], [None] + [e.clone() for e in s.eps[1:]],
                    engine.energy(s).clone())}
    for k in range(1, 7):
        engine.step(s)
        expected[k] = ([t.clone() for t in s.x], [None] + [e.clone() for e in s.eps[1:]],
                       engine.energy(s).clone())
    n_frames = 6 // every + 1
    with h5py.File(path, "r") as f:
        trials = f["pcsim/trials"][:]
        assert list(trials["sample_index"]) == list(range(7))
        assert list(trials["epoch"]) == [3] * 7
        assert_close(trials["start"], np.arange(7) * n_frames * every * 1.0, atol=1e-12)
        assert f["pcsim/trials"].attrs["units"] == "ms"
        time = f["report/value_l1/mapping/time"]
        assert list(time[:]) == [0.0, 7 * n_frames * every * 1.0, every * 1.0]
        assert time.attrs["units"] == "ms"
        for frame in range(n_frames):
            k = frame * every
            rows = np.arange(7) * n_frames + frame
            for l in range(4):
                assert_close(f["report/value_l%d/data" % l][rows], expected[k][0][l].float(),
                             atol=0)
            for l in range(1, 4):
                assert_close(f["report/error_l%d/data" % l][rows], expected[k][1][l].float(),
                             atol=0)
            assert_close(f["pcsim/energy"][rows].sum(1), expected[k][2], atol=1e-12)
        # dense execution sends no events: an empty /spikes group (SPEC 5)
        assert "spikes" in f and len(f["spikes"]) == 0
        assert list(f["report/value_l1"].attrs["shape"]) == [5]
        assert f["report/value_l1/mapping/node_ids"].attrs["sorted"]
        assert "traces:" in f.attrs["config"] and f.attrs["pcsim_version"]


def _sender_events(counts, population):
    """Events sent by a population, from the counters' targets (SPEC 3 signals)."""
    kind, l = population.split("_l")
    l = int(l)
    if kind == "value":
        return counts.total("syn_events", target=f"W_{l + 1}")
    return counts.total("syn_events", target=f"W_{l}^T") + counts.total(
        "syn_events", target=f"eps_{l}->x_{l}")


def test_spikes_equal_event_counters_and_libsonata_reads_them(tmp_path):
    """In event mode every event becomes a SONATA spike: per population the number of
    spikes equals the event counter; timestamps are sorted, in ms, inside their trial;
    libsonata's SpikeReader and ElementReportReader open the file."""
    libsonata = pytest.importorskip("libsonata")
    config, data = _config(events=True), _data()
    engine = _engine(config)
    engine.recorder = OpCounter()
    path = record_traces(engine, data, config, tmp_path / "traces.h5", epoch=1)
    counts = engine.recorder.result()
    with h5py.File(path, "r") as f:
        for pop in f["spikes"]:
            g = f[f"spikes/{pop}"]
            assert g["node_ids"].shape[0] == _sender_events(counts, pop), pop
            ts = g["timestamps"][:]
            assert np.all(np.diff(ts) >= 0) and g["timestamps"].attrs["units"] == "ms"
            assert g.attrs["sorting"] == SORTING["by_time"]
            assert h5py.check_enum_dtype(g.attrs.get_id("sorting").dtype) == SORTING
            assert g["timestamps"].compression is None and g["timestamps"].chunks
        assert f["spikes/value_l0"]["node_ids"].shape[0] > 0
    spikes = libsonata.SpikeReader(str(path))
    assert set(spikes.get_population_names()) >= {"value_l0", "error_l3"}
    pop = spikes["value_l0"]
    with h5py.File(path, "r") as f:
        n = f["spikes/value_l0/node_ids"].shape[0]
        frames_value = f["report/value_l2/data"][:]
    assert len(pop.get()) == n
    reports = libsonata.ElementReportReader(str(path))
    rep = reports["value_l2"]
    assert rep.time_units == "ms"
    assert rep.times == (0.0, 7 * 7 * 1.0, 1.0)
    frame = rep.get(tstart=0.0, tstop=7 * 7 * 1.0)
    assert_close(np.asarray(frame.data), frames_value, atol=0)


def test_unwritable_path_and_full_disk_give_clear_errors(tmp_path, monkeypatch):
    """A missing folder or a full disk raises TraceError naming the file; no temporary
    file is left, and an existing trace file keeps its last complete content."""
    config, data = _config(), _data()
    engine = _engine(config)
    with pytest.raises(TraceError, match="cannot write the trace file"):
        record_traces(engine, data, config, tmp_path / "absent" / "traces.h5", epoch=1)
    (tmp_path / "a_file").write_text("")  # an unwritable place even for root
    with pytest.raises(TraceError, match="cannot write the trace file"):
        record_traces(engine, data, config, tmp_path / "a_file" / "traces.h5", epoch=1)
    (tmp_path / "a_file").unlink()
    good = record_traces(engine, data, config, tmp_path / "traces.h5", epoch=1)
    before = good.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(TraceWriter, "_append", staticmethod(full))
    with pytest.raises(TraceError, match="no space left on the device") as info:
        record_traces(engine, data, config, good, epoch=2, append=True)
    assert str(good) in str(info.value)
    assert good.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["traces.h5"]
    with h5py.File(good, "r") as f:
        assert f["pcsim/trials"].shape == (7,)


def test_append_continues_the_time_axis(tmp_path):
    config, data = _config(), _data()
    engine = _engine(config)
    path = record_traces(engine, data, config, tmp_path / "t.h5", epoch=1)
    record_traces(engine, data, config, path, epoch=2, append=True)
    with h5py.File(path, "r") as f:
        trials = f["pcsim/trials"][:]
        assert list(trials["epoch"]) == [1] * 7 + [2] * 7
        assert np.all(np.diff(trials["start"]) == 7.0)
        assert f["report/value_l1/data"].shape == (14 * 7, 5)


def test_streaming_2000_mnist_samples_keeps_memory_bounded(mnist_root, tmp_path):
    """2,000 test images of the 784-512-512-10 network, every step (T = 20): about
    2000 x 21 frames x 2852 neurons x 4 B = 479 MB of frames. Buffering them would raise
    the resident set (sampled every 5 ms while recording) by more than that; the
    streaming writer, one batch of 100 samples (24 MB of frames) at a time, stays under
    200 MB."""
    script = textwrap.dedent(f"""
        import json, sys, torch
        def status(key):  # kB, from /proc/self/status
            for line in open("/proc/self/status"):
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        from pcsim.config import load_config
        from pcsim.experiment import build_trainer, record_traces
        from pcsim.model import Network
        cfg = load_config({str(REPO / 'networks' / 'mnist_pc.yaml')!r},
                          {{"traces.enabled": True, "traces.samples": 2000, "run.device": "cpu"}})
        import ctypes, torchvision
        from pcsim.data import Dataset
        test = torchvision.datasets.MNIST({str(mnist_root)!r}, train=False, download=True)
        x = (test.data.reshape(-1, 784).float() / 255 - 0.1307) / 0.3081
        data = Dataset("mnist", x[:1], test.targets[:1], x, test.targets.long(), 10, None)
        engine = build_trainer(cfg, Network.from_config(cfg.network), torch.device("cpu"))
        engine.init_state(data.test_x[:100], torch.zeros(100, 10))  # warm the allocator
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed memory back: an honest baseline
        import threading
        before = status("VmRSS")
        peak, done = [before], threading.Event()
        def poll():  # sample the resident set every 5 ms while recording
            while not done.is_set():
                peak[0] = max(peak[0], status("VmRSS"))
                done.wait(0.005)
        thread = threading.Thread(target=poll)
        thread.start()
        path = record_traces(engine, data, cfg, {str(tmp_path / 'big.h5')!r}, epoch=1)
        done.set()
        thread.join()
        after = peak[0]
        print(json.dumps({{"growth_kb": after - before}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    growth_mb = json.loads(out.stdout.strip().splitlines()[-1])["growth_kb"] / 1024
    print(f"peak RSS growth while recording: {growth_mb:.0f} MB")
    assert 10 < growth_mb < 200, growth_mb  # the batch buffers show; 479 MB would not fit
    with h5py.File(tmp_path / "big.h5", "r") as f:
        assert f["report/value_l1/data"].shape == (2000 * 21, 512)
        assert f["pcsim/trials"].shape == (2000,)


def _conv_config(events):
    return config_from_dict({
        "network": {"layers": [
            {"shape": [2, 6, 6]},
            {"shape": [3, 3, 3], "activation": "tanh",
             "projection": {"kind": "conv2d", "kernel": 3, "padding": 1, "pool": "avg"}},
            {"size": 3}]},
        "dynamics": {"tau_x": "10 ms", "dt": "1 ms", "n_steps": 4},
        "events": {"enabled": events, "theta": 0.05},
        "traces": {"enabled": True, "samples": 4, "every": 1, "batch_size": 2,
                   "populations": ["value", "error"]},
        "run": {"dtype": "float64"}})


@pytest.mark.parametrize("events", [False, True])
def test_conv_trace_has_shapes_c_order_ids_and_opens_in_libsonata(tmp_path, events):
    """A conv net's populations carry their (C, H, W) shape; frame columns and spike node
    ids are the C-order flat index of (c, h, w); libsonata opens the file in dense mode
    (an empty /spikes group) and in event mode."""
    libsonata = pytest.importorskip("libsonata")
    config = _conv_config(events)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 72, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=g)
    data = Dataset("toy", x, y, x, y, 3, REPO)
    engine = _engine(config)
    path = record_traces(engine, data, config, tmp_path / "traces.h5", epoch=1)
    s = engine.init_state(x[:4], data.one_hot(y[:4], torch.float64))
    with h5py.File(path, "r") as f:
        assert list(f["report/value_l0"].attrs["shape"]) == [2, 6, 6]
        assert list(f["report/value_l1"].attrs["shape"]) == [3, 3, 3]
        assert list(f["report/error_l1"].attrs["shape"]) == [3, 3, 3]
        assert list(f["report/value_l2"].attrs["shape"]) == [3]
        n_frames = 5
        rows = np.arange(4) * n_frames  # frame 0 of each trial: the feedforward start
        frame = f["report/value_l1/data"][rows]
        # column c*9 + h*3 + w holds neuron (c, h, w)
        assert_close(frame.reshape(4, 3, 3, 3), s.x[1].reshape(4, 3, 3, 3).float(), atol=0)
        if events:
            ids = f["spikes/value_l0/node_ids"][:]
            assert len(ids) > 0 and ids.max() < 72
            assert list(f["spikes/value_l0"].attrs["shape"]) == [2, 6, 6]
            # value_l0 is clamped: it sends once, at its trial's start, every input above
            # theta; trial 0's events at t = 0 are those inputs' C-order ids
            first = f["spikes/value_l0/timestamps"][:] == 0.0
            expected = np.nonzero(np.abs(x[0].numpy()) > 0.05)[0]
            assert 0 < len(expected) < 72
            assert np.array_equal(np.sort(ids[first]), expected)
            assert_close(np.sort(f["spikes/value_l0/values"][:][first]),
                         np.sort(x[0].numpy()[expected]), atol=1e-6)
        else:
            assert len(f["spikes"]) == 0
    spikes = libsonata.SpikeReader(str(path))
    if events:
        assert "value_l0" in spikes.get_population_names()
        assert len(spikes["value_l0"].get()) == len(ids)
    else:
        assert list(spikes.get_population_names()) == []
    report = libsonata.ElementReportReader(str(path))["value_l1"]
    assert np.asarray(report.get(tstart=0.0, tstop=20.0).data).shape[1] == 27


def test_conv_trace_plots_show_feature_maps(tmp_path):
    """``plot_traces`` of a conv net adds the feature-map figure; a flat net has none."""
    from PIL import Image

    from pcsim.plots import plot_traces
    config = _conv_config(False)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 72, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=g)
    data = Dataset("toy", x, y, x, y, 3, REPO)
    path = record_traces(_engine(config), data, config, tmp_path / "traces.h5", epoch=1)
    written = plot_traces(path, tmp_path / "plots", trial=1)
    names = sorted(p.name for p in written)
    assert names == ["trial1_activity.png", "trial1_energy.png", "trial1_maps.png"]
    with Image.open(tmp_path / "plots" / "trial1_maps.png") as im:
        width, height = im.size
    assert width > 200 and height > 400  # 3 shaped populations x 2 frames, 3 channels
    flat = record_traces(_engine(_config()), _data(), _config(), tmp_path / "flat.h5", epoch=1)
    assert not any(p.name.endswith("_maps.png") for p in plot_traces(flat, tmp_path / "p2"))


@pytest.mark.parametrize("events", [False, True])
def test_ops_per_step_are_each_trials_counts(tmp_path, events):
    """`/pcsim/ops_per_step` (SPEC 5) holds every op kind per trial and step: each trial's
    row equals an independent counting run of that sample's inference alone, step by
    step and kind by kind (dense and event mode); the rows sum to the counts of the whole
    recording; `pcsim traces` reports the mean per trial."""
    from pcsim.cli import main
    from pcsim.monitors.counters import KINDS
    config, data = _config(events=events), _data()
    engine = _engine(config)
    path = record_traces(engine, data, config, tmp_path / "traces.h5", epoch=1)
    with h5py.File(path, "r") as f:
        ops = f["pcsim/ops_per_step"][:]
        assert [k.decode() if isinstance(k, bytes) else k
                for k in f["pcsim/ops_per_step"].attrs["kinds"]] == list(KINDS)
    assert ops.shape == (7, 7, len(KINDS)) and ops.dtype == np.int64
    rows = []
    for i in range(7):
        alone = _engine(config)  # the same seed: the same weights
        assert all(torch.equal(a, b) for a, b in zip(alone.parameters(), engine.parameters()))
        alone.recorder = OpCounter()
        x = data.test_x[i:i + 1]
        s = alone.init_state(x, data.one_hot(data.test_y[i:i + 1], torch.float64))
        alone.infer(s)
        counts = alone.recorder.result()
        expected = np.zeros((7, len(KINDS)), dtype=np.int64)
        for (phase, step, _, kind), v in counts.cells.items():
            if phase == "inference":
                expected[step, KINDS.index(kind)] += v
        assert (ops[i] == expected).all(), (i, ops[i] - expected)
        rows.append(expected)
    syn = KINDS.index("syn_ops_mac")
    assert ops[:, :, syn].sum() > 0
    if events:  # samples send different events: the rows differ
        assert len({r[:, syn].sum() for r in rows}) > 1
    assert main(["traces", str(path)]) == 0
