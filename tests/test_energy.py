"""Hardware profiles and energy estimates: exact arithmetic, missing figures, bad files."""

from pathlib import Path

import pytest
import yaml

from pcsim.energy import (ENERGY_KINDS, ProfileError, available_profiles, estimate_energy,
                          load_profile)
from pcsim.monitors import OpCounts

REPO = Path(__file__).resolve().parents[1]
REQUIRED = {"loihi", "loihi2", "truenorth", "spinnaker2", "horowitz45", "h100", "server_cpu"}


def _profile_dict(**overrides):
    energies = {k: {"value": "1 pJ", "basis": "assumed", "source": "test fixture"}
                for k in ENERGY_KINDS}
    energies.update(overrides)
    return {"name": "Test chip", "kind": "neuromorphic", "technology": "none",
            "description": "for tests", "energies": energies,
            "static_power": {"value": None, "source": "test fixture", "note": "none"}}


def _write(tmp_path, data, name="chip.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_profiles_load_with_provenance():
    """Every required platform has a profile; every number has a source and a basis, and
    Loihi 2 (no published per-op table) is assumed throughout."""
    assert REQUIRED <= set(available_profiles(REPO / "hw_profiles"))
    for stem in available_profiles(REPO / "hw_profiles"):
        profile = load_profile(stem, REPO / "hw_profiles")
        for key, entry in profile.energies.items():
            assert entry.source, (stem, key)
            assert entry.value is None or entry.basis, (stem, key)
    loihi2 = load_profile("loihi2", REPO / "hw_profiles")
    assert {e.basis for e in loihi2.energies.values()} == {"assumed"}


def test_energy_is_counts_times_profile_exactly(tmp_path):
    """E = sum_k count_k * energy_k with the profile's floats: syn_op_mac 3 pJ,
    neuron_update_active 5 pJ, idle 2 pJ; counts 1000 MACs, 40 updates of which 30
    active, over 10 samples: (1000 * 3e-12 + 30 * 5e-12 + 10 * 2e-12) / 10."""
    data = _profile_dict(syn_op_mac={"value": "3 pJ", "basis": "measured", "source": "fixture"},
                         neuron_update_active={"value": "5 pJ", "basis": "measured", "source": "fixture"},
                         neuron_update_idle={"value": "2 pJ", "basis": "measured", "source": "fixture"})
    profile = load_profile(_write(tmp_path, data))
    counts = OpCounts({("inference", 1, "W_1", "syn_ops_mac"): 1000,
                       ("inference", 1, "value_l1", "neuron_updates"): 40,
                       ("inference", 1, "value_l1", "neuron_updates_active"): 30}, n_samples=10)
    report = estimate_energy(counts, profile, phases=("inference",))
    phase = report.phases["inference"]
    e_mac, e_active, e_idle = (profile.energies[k].value for k in
                               ("syn_op_mac", "neuron_update_active", "neuron_update_idle"))
    assert phase.energy == {**{k: 0 for k in phase.energy}, "syn_op_mac": 1000 * e_mac,
                            "neuron_update_active": 30 * e_active, "neuron_update_idle": 10 * e_idle}
    assert phase.per_sample == (1000 * e_mac + 30 * e_active + 10 * e_idle) / 10
    assert phase.missing == []


def test_missing_figure_is_reported_never_zero(tmp_path):
    """A counted kind without a figure is listed as missing and left out of the total
    (a lower bound), while an uncounted kind without a figure is not flagged."""
    data = _profile_dict(syn_op_mac={"value": None, "source": "fixture", "note": "not published"},
                         weight_update={"value": None, "source": "fixture", "note": "not published"})
    profile = load_profile(_write(tmp_path, data))
    counts = OpCounts({("inference", 0, "W_1", "syn_ops_mac"): 500,
                       ("inference", 0, "W_1", "syn_events"): 7}, n_samples=1)
    report = estimate_energy(counts, profile)
    assert report.phases["inference"].missing == ["syn_op_mac"]
    assert "syn_op_mac" not in report.phases["inference"].energy
    assert report.phases["inference"].total == 7 * profile.energies["syn_event"].value
    assert report.phases["learning"].missing == []  # no weight updates were counted
    assert report.to_json()["phases"]["inference"]["complete"] is False


@pytest.mark.parametrize("change, key, expected", [
    (lambda d: d["energies"].pop("weight_update"), "energies", "missing kinds ['weight_update']"),
    (lambda d: d["energies"]["syn_op_ac"].pop("basis"), "energies.syn_op_ac", "needs a basis"),
    (lambda d: d["energies"]["syn_op_ac"].update(value="3 pV"), "energies.syn_op_ac.value",
     "not a quantity in J"),
    (lambda d: d["energies"]["syn_op_ac"].update(value=None), "energies.syn_op_ac", "needs a note"),
    (lambda d: d.update(vendor="x"), "vendor", "unknown key"),
    (lambda d: d["energies"]["syn_op_ac"].update(basis="guessed"), "energies.syn_op_ac.basis",
     "'measured'"),
    (lambda d: d["energies"]["syn_op_ac"].update(value=float("inf")),
     "energies.syn_op_ac.value", "finite number"),
    (lambda d: d["energies"]["syn_op_ac"].update(value=True), "energies.syn_op_ac.value",
     "got a boolean"),
])
def test_malformed_profile_names_file_and_key(tmp_path, change, key, expected):
    data = _profile_dict()
    change(data)
    path = _write(tmp_path, data)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert str(path) in message and f"{key}:" in message and expected in message


def test_unknown_profile_lists_the_available_ones():
    with pytest.raises(ProfileError, match="loihi"):
        load_profile("loihi3", REPO / "hw_profiles")


def _static_profile(tmp_path, watts="2 W"):
    data = _profile_dict()
    data["static_power"] = {"value": watts, "basis": "assumed", "source": "test fixture"}
    return load_profile(_write(tmp_path, data, "static.yaml"))


def test_static_energy_is_per_sample_not_per_counted_batch(tmp_path):
    """SPEC 4: static power times the simulated time of one sample's inference, per
    sample: 2 W x 20 ms = 40 mJ a sample, whether 10 or 1000 samples were counted (the
    dynamic energy per sample is the same in both, 1000 1-pJ MACs)."""
    profile = _static_profile(tmp_path)
    per_sample = []
    for n in (10, 1000):
        counts = OpCounts({("inference", 1, "W_1", "syn_ops_mac"): 1000 * n}, n_samples=n)
        phase = estimate_energy(counts, profile, time_per_sample=0.020).phases["inference"]
        assert phase.energy["static"] == pytest.approx(2.0 * 0.020 * n, rel=1e-15)
        per_sample.append(phase.per_sample)
    assert per_sample[0] == pytest.approx(per_sample[1], rel=1e-12)
    assert per_sample[0] == pytest.approx(0.040 + 1000 * 1e-12, rel=1e-12)


def test_run_and_pcsim_energy_charge_static_power_alike(mnist_root, tmp_path, monkeypatch,
                                                        capsys):
    """A counted run prices static power per sample for T dt of training inference
    (4 steps x 1 ms) and L dt of the feedforward test read-out (3 layers x 1 ms);
    `pcsim energy RUN` reproduces the saved report exactly, static term included."""
    import json
    from pcsim.cli import main
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    _static_profile(profiles)
    monkeypatch.setenv("PCSIM_HW_PROFILES", str(profiles))
    rc = main(["run", str(REPO / "networks" / "mnist_pc.yaml"), "--data-root", str(mnist_root),
               "--out", str(tmp_path), "--set", "run.name=s", "--epochs", "1", "--no-progress",
               "--set", "data.limit_train=200", "--set", "data.limit_test=100",
               "--set", "network.layers.1.size=16", "--set", "network.layers.2.size=16",
               "--set", "dynamics.n_steps=4", "--set", "run.device=cpu",
               "--set", "run.threads=1"])
    assert rc == 0
    saved = json.loads((tmp_path / "s" / "energy_report.json").read_text())
    assert saved["simulated_time_per_sample_s"] == {"train": pytest.approx(0.004),
                                                    "test": pytest.approx(0.003)}
    train = saved["profiles"]["static"]["train"]["inference"]["per_kind"]["static"]
    test = saved["profiles"]["static"]["test"]["inference"]["per_kind"]["static"]
    assert train["energy_per_sample_J"] == pytest.approx(2.0 * 0.004, rel=1e-12)
    assert test["energy_per_sample_J"] == pytest.approx(2.0 * 0.003, rel=1e-12)
    capsys.readouterr()
    assert main(["energy", str(tmp_path / "s"), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["profiles"] == saved["profiles"]


def test_energy_table_names_no_zero_share_and_stays_narrow(tmp_path):
    """A profile that prices nothing counted: the table says 'nothing priced' instead of
    naming a kind at 0% as the largest share, lists what is missing (cut to fit), and no
    line is padded past its last cell or runs beyond 120 columns; the chart marks the
    empty slot."""
    from pcsim.energy.report import build_energy_report, format_energy_table
    from pcsim.plots import plot_energy_report
    empty = _profile_dict(**{k: {"value": None, "source": "fixture", "note": "not published"}
                             for k in ENERGY_KINDS})
    _write(tmp_path, empty, "empty.yaml")
    _write(tmp_path, _profile_dict(), "full.yaml")
    counts = OpCounts({("inference", 1, "W_1", "syn_ops_mac"): 1000,
                       ("inference", 1, "W_1", "syn_events"): 10,
                       ("inference", 1, "value_l1", "neuron_updates"): 40,
                       ("inference", 1, "value_l1", "neuron_updates_active"): 40,
                       ("learning", 0, "W_1", "weight_grad_ops"): 100,
                       ("learning", 0, "W_1", "weight_writes"): 12}, n_samples=10)
    report = build_energy_report({"train": counts, "test": counts}, ["empty", "full"], tmp_path)
    text = format_energy_table(report)
    lines = text.splitlines()
    empty_row = next(line for line in lines if line.startswith("empty"))
    full_row = next(line for line in lines if line.startswith("full"))
    assert "nothing priced" in empty_row and "0%" not in empty_row
    assert "syn_op_mac" in full_row and "nothing priced" not in full_row
    assert all(len(line) <= 120 and line == line.rstrip() for line in lines), lines
    plot_energy_report(report, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").stat().st_size > 0


def test_pcsim_energy_on_a_missing_folder_says_so(tmp_path, capsys):
    from pcsim.cli import main
    assert main(["energy", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no such run folder" in err and "count_ops" not in err
