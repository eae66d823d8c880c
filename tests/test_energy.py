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
