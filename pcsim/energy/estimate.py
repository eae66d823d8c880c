"""Energy estimates: ``sum(count_k * energy_k)`` per phase, from OpCounts and a profile.

Pure functions of their inputs (NeuroBench: metrics see an adapter, never a framework):
this module sees only :class:`~pcsim.monitors.OpCounts` and profiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pcsim.energy.profiles import ENERGY_KINDS, HardwareProfile

__all__ = ["PhaseEnergy", "EnergyReport", "estimate_energy", "priced_counts", "UNPRICED_KINDS"]

#: Report key -> a counted kind that no profile prices (no published figure per learned
#: variance update): when counted, it is listed in ``missing``, never priced at zero.
UNPRICED_KINDS = {"prec_update": "prec_updates"}


def priced_counts(counts, phase: str) -> dict[str, int]:
    """Total counts of ``phase`` under the profile's kind names (exact integers)."""
    out = {}
    for key, kind in ENERGY_KINDS.items():
        if kind == "neuron_updates_idle":
            out[key] = (counts.total("neuron_updates", phase)
                        - counts.total("neuron_updates_active", phase))
        else:
            out[key] = counts.total(kind, phase)
    return out


@dataclass
class PhaseEnergy:
    """Energy of one phase: totals over the counted samples, and per sample."""

    phase: str
    n_samples: int
    counts: dict  # kind -> total count (int)
    energy: dict  # kind -> total energy (J), only for kinds with a figure
    missing: list = field(default_factory=list)  # kinds with counts but no figure

    @property
    def total(self) -> float:
        """Energy of the priced kinds (a lower bound when ``missing`` is not empty)."""
        return sum(self.energy.values())

    @property
    def per_sample(self) -> float:
        return self.total / self.n_samples if self.n_samples else 0.0

    def share(self) -> dict:
        total = self.total
        return {k: (v / total if total else 0.0) for k, v in self.energy.items()}

    def to_json(self) -> dict:
        n = max(self.n_samples, 1)
        return {"n_samples": self.n_samples,
                "energy_per_sample_J": self.per_sample,
                "complete": not self.missing,
                "missing": self.missing,
                "per_kind": {k: {"count_per_sample": self.counts[k] / n,
                                 "energy_per_sample_J": self.energy[k] / n,
                                 "share": self.share()[k]} for k in self.energy}}


@dataclass
class EnergyReport:
    """A profile's estimate for the phases of some counted work."""

    profile: str
    name: str
    mode: str  # "dense" or "event": which execution produced the counts
    phases: dict  # phase -> PhaseEnergy

    def to_json(self) -> dict:
        return {"profile": self.profile, "name": self.name, "counts_from": self.mode,
                "phases": {p: e.to_json() for p, e in self.phases.items()}}


def estimate_energy(counts, profile: HardwareProfile, phases=("inference", "learning"),
                    time_per_sample: float = 0.0) -> EnergyReport:
    """Price ``counts`` with ``profile``.

    Parameters
    ----------
    counts : OpCounts
    profile : HardwareProfile
    phases : sequence of str
    time_per_sample : float, s
        Simulated time of one sample's work (SPEC 4: the steps its inference ran times
        ``dt``), for a profile with static power: each of the ``n_samples`` counted
        samples is charged ``static_power * time_per_sample`` in the inference phase,
        so the static energy per sample does not depend on how many were counted.

    Returns
    -------
    EnergyReport
        A kind counted but without a figure in the profile is listed in ``missing`` and
        left out of the total; it is never priced at zero.
    """
    out = {}
    for phase in phases:
        totals = priced_counts(counts, phase)
        energy, missing = {}, []
        for key, n in totals.items():
            value = profile.energies[key].value
            if value is None:
                if n:
                    missing.append(key)
                continue
            energy[key] = n * value
        for key, kind in UNPRICED_KINDS.items():
            n = counts.total(kind, phase)
            if n:
                totals[key] = n
                missing.append(key)
        if phase == "inference" and profile.static_power.value is not None and time_per_sample:
            energy["static"] = profile.static_power.value * time_per_sample * counts.n_samples
            totals["static"] = 0
        out[phase] = PhaseEnergy(phase, counts.n_samples, totals, energy, missing)
    return EnergyReport(profile.stem, profile.name, counts.mode, out)
