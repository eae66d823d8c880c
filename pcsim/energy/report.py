"""Energy reports of a run: per profile, per counted work (train, test), per phase."""

from __future__ import annotations

from pcsim.energy.estimate import estimate_energy
from pcsim.energy.profiles import load_profile

__all__ = ["build_energy_report", "format_energy_table"]


def build_energy_report(counts: dict, profiles: list[str], folder=None,
                        time_per_sample: dict | None = None) -> dict:
    """Price every counted work (``{"train": OpCounts, "test": OpCounts}``) with every
    profile; return a JSON-ready report. ``time_per_sample`` (work -> s) is the simulated
    time of one sample's inference, charged at a profile's static power (SPEC 4); the
    report keeps it, so ``pcsim energy`` prices a finished run the same way."""
    time_per_sample = {w: float(t) for w, t in (time_per_sample or {}).items()}
    out = {"counts_from": {work: c.mode for work, c in counts.items()},
           "n_samples": {work: c.n_samples for work, c in counts.items()},
           "simulated_time_per_sample_s": {work: time_per_sample.get(work, 0.0)
                                           for work in counts},
           "ops_per_sample": {work: c.summary() for work, c in counts.items()},
           "profiles": {}}
    for name in profiles:
        profile = load_profile(name, folder)
        entry = {"name": profile.name, "kind": profile.kind, "technology": profile.technology,
                 "bases": {k: e.basis for k, e in profile.energies.items()}}
        for work, c in counts.items():
            phases = ("inference", "learning") if work == "train" else ("inference",)
            report = estimate_energy(c, profile, phases, time_per_sample.get(work, 0.0))
            entry[work] = {p: e.to_json() for p, e in report.phases.items()}
        out["profiles"][profile.stem] = entry
    return out


def _fmt(joules: float) -> str:
    if joules == 0:
        return "0"
    for unit, scale in (("mJ", 1e-3), ("uJ", 1e-6), ("nJ", 1e-9), ("pJ", 1e-12)):
        if joules >= scale:
            return f"{joules / scale:.3g} {unit}"
    return f"{joules:.3g} J"


#: The ``missing`` column is cut to this many characters (the JSON report lists all).
MISSING_WIDTH = 32


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3].rstrip(", ") + "..."


def format_energy_table(report: dict) -> str:
    """A plain-text table: energy per sample by profile and phase; a trailing ``*``
    marks a lower bound (some counted kind has no figure in the profile)."""
    works = [(w, p) for w in ("train", "test") if w in report["n_samples"]
             for p in (("inference", "learning") if w == "train" else ("inference",))]
    header = ["profile"] + [f"{w} {p[:5]}/sample" for w, p in works] + ["largest share",
                                                                          "missing"]
    rows = []
    for stem, entry in report["profiles"].items():
        cells, missing, top = [stem], set(), ""
        for w, p in works:
            phase = entry[w][p]
            cells.append(_fmt(phase["energy_per_sample_J"]) + ("*" if phase["missing"] else ""))
            missing.update(phase["missing"])
        kinds = entry["train"]["inference"]["per_kind"] if "train" in entry else {}
        priced = {k: v for k, v in kinds.items() if v["share"] > 0}
        if priced:
            k, v = max(priced.items(), key=lambda kv: kv[1]["share"])
            top = f"{k} {100 * v['share']:.0f}%"
        else:  # nothing counted has a figure in this profile: no share to name
            top = "nothing priced"
        cells += [top, _shorten(", ".join(sorted(missing)) or "-", MISSING_WIDTH)]
        rows.append(cells)
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    modes = ", ".join(f"{w}: {m} execution" for w, m in report["counts_from"].items())
    lines.append(f"(counts from {modes}; * = lower bound, a counted kind has no figure)")
    return "\n".join(lines)
