"""PNG plots of a run's metrics (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

from pcsim.runio import atomic_path

__all__ = ["plot_metrics", "plot_energy_report"]


def plot_metrics(metrics: list[dict], folder: str | Path, title: str = "") -> list[Path]:
    """Write ``accuracy.png`` and ``energy.png`` (per epoch) into ``folder``; return the paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    folder = Path(folder)
    epochs = [m["epoch"] for m in metrics]
    written = []

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(epochs, [100 * m["test_accuracy"] for m in metrics], "o-")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(folder / "accuracy.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    written.append(folder / "accuracy.png")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(epochs, [m["train_energy_initial"] for m in metrics], "o-",
            label="E at feedforward init")
    ax.plot(epochs, [m["train_energy_final"] for m in metrics], "s-",
            label="E after inference")
    ax.plot(epochs, [m["test_energy"] for m in metrics], "^-", label="test output E")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("free energy E per sample")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(folder / "energy.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    written.append(folder / "energy.png")
    return written


def plot_energy_report(report: dict, path: str | Path) -> Path:
    """Bar chart: energy per sample by profile, for each counted phase (log scale).
    Hatched bars are lower bounds (a counted kind has no figure in the profile)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    works = [(w, p) for w in ("train", "test") if w in report["n_samples"]
             for p in (("inference", "learning") if w == "train" else ("inference",))]
    stems = list(report["profiles"])
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(stems) + 2), 4))
    width = 0.8 / max(len(works), 1)
    for k, (work, phase) in enumerate(works):
        values, hatches = [], []
        for stem in stems:
            entry = report["profiles"][stem][work][phase]
            values.append(entry["energy_per_sample_J"] or np.nan)
            hatches.append("//" if entry["missing"] else "")
        bars = ax.bar(np.arange(len(stems)) + k * width, values, width,
                      label=f"{work} {phase} ({report['counts_from'][work]})")
        for bar, hatch in zip(bars, hatches):
            bar.set_hatch(hatch)
    ax.set_xticks(np.arange(len(stems)) + width * (len(works) - 1) / 2)
    ax.set_xticklabels(stems, rotation=20)
    ax.set_yscale("log")
    ax.set_ylabel("energy per sample (J)")
    ax.set_title("estimated energy per sample (hatched: lower bound, figures missing)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path
