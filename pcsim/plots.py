"""PNG plots of a run's metrics (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

from pcsim.runio import atomic_path

__all__ = ["plot_metrics"]


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
