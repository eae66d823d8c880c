"""PNG plots of a run's metrics (matplotlib, headless)."""

from __future__ import annotations

import math
from pathlib import Path

from pcsim.runio import atomic_path

__all__ = ["plot_metrics", "plot_energy_report", "plot_traces"]


def _save(fig, path) -> None:
    """Write ``fig`` as a PNG atomically, then free it."""
    import matplotlib.pyplot as plt
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def plot_metrics(metrics: list[dict], folder: str | Path, title: str = "") -> list[Path]:
    """Write ``accuracy.png`` (or ``mse.png`` for reconstruction runs) and ``energy.png``
    (per epoch) into ``folder``; return the paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    folder = Path(folder)
    epochs = [m["epoch"] for m in metrics]
    written = []

    classify = "test_accuracy" in metrics[0]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(epochs, [100 * m["test_accuracy"] if classify else m["test_mse"] for m in metrics],
            "o-")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test accuracy (%)" if classify else "test reconstruction MSE per pixel")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    name = "accuracy.png" if classify else "mse.png"
    _save(fig, folder / name)
    written.append(folder / name)

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
    _save(fig, folder / "energy.png")
    written.append(folder / "energy.png")
    return written


def plot_reconstructions(images, recons, path: str | Path, image_shape=None,
                         labels: tuple = ("test image", "reconstruction")) -> Path:
    """Write a PNG with test images (top row) above their reconstructions (bottom row).

    ``image_shape`` is the data set's ``(channels, height, width)`` (or ``(height,
    width)``); without it a flat sample is shown as a square."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [images.detach().float().cpu().numpy(), recons.detach().float().cpu().numpy()]
    n = rows[0].shape[0]
    if image_shape is None:
        side = math.isqrt(rows[0].shape[1])
        image_shape = (side, side)
    height, width = image_shape[-2:]
    lo, hi = float(rows[0].min()), float(rows[0].max())  # one grey scale for both rows
    fig, axes = plt.subplots(2, n, figsize=(1.1 * n, 2.6), squeeze=False)
    for r, (row, label) in enumerate(zip(rows, labels)):
        for i in range(n):
            ax = axes[r][i]
            ax.imshow(row[i].reshape(height, width), cmap="gray", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return Path(path)


def plot_uncertainty(variance, path: str | Path, image_shape=None,
                     mean_image=None) -> Path:
    """Write a PNG of a generative network's learned output variance per pixel (SPEC
    2.4), the uncertainty map: one panel per channel with a colour bar, after the mean
    test image when given. ``variance`` holds one value per pixel, flat or in
    ``image_shape`` (the data's ``(C, H, W)`` or ``(H, W)``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    var = variance.detach().double().cpu().numpy()
    if image_shape is None:
        side = math.isqrt(var.size)
        image_shape = (side, side)
    shape = tuple(image_shape) if len(image_shape) == 3 else (1, *image_shape)
    var = var.reshape(shape)
    many = shape[0] > 1
    panels = [(f"variance, channel {c}" if many else "learned variance", var[c], "magma")
              for c in range(shape[0])]
    if mean_image is not None:
        mean = mean_image.detach().float().cpu().numpy().reshape(shape)
        panels = [(f"mean image, channel {c}" if many else "mean test image", mean[c], "gray")
                  for c in range(shape[0])] + panels
    fig, axes = plt.subplots(1, len(panels), figsize=(2.8 * len(panels), 2.8), squeeze=False)
    for ax, (title, img, cmap) in zip(axes[0], panels):
        im = ax.imshow(img, cmap=cmap)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    _save(fig, path)
    return Path(path)


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
        x = np.arange(len(stems)) + k * width
        bars = ax.bar(x, values, width, label=f"{work} {phase} ({report['counts_from'][work]})")
        for bar, hatch in zip(bars, hatches):
            bar.set_hatch(hatch)
        for xi, v in zip(x, values):  # an empty slot says why it is empty
            if not np.isfinite(v):
                ax.text(xi, 0.02, "not priced", rotation=90, ha="center", va="bottom",
                        fontsize=7, transform=ax.get_xaxis_transform())
    ax.set_xticks(np.arange(len(stems)) + width * (len(works) - 1) / 2)
    ax.set_xticklabels(stems, rotation=20)
    ax.set_yscale("log")
    ax.set_ylabel("energy per sample (J)")
    ax.set_title("estimated energy per sample (hatched: lower bound, figures missing)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path = Path(path)
    _save(fig, path)
    return path


def plot_traces(trace_path: str | Path, folder: str | Path, trial: int = 0,
                max_neurons: int = 12) -> list[Path]:
    """From a trace file, write for one trial: ``trial<k>_activity.png`` (value and error
    neurons of every recorded population over inference time), ``trial<k>_raster.png``
    (events, event mode), ``trial<k>_energy.png`` (E_l(t) per layer) and, for a network
    with ``(C, H, W)`` layers, ``trial<k>_maps.png`` (their feature maps as images)."""
    import numpy as np

    from pcsim.monitors.hdf5 import TraceError, check_trace, open_trace

    folder = Path(folder)
    with open_trace(trace_path) as f:
        head = check_trace(f, trace_path)
        trials = f["pcsim/trials"][:]
        if not trials.shape[0]:
            raise TraceError(f"{trace_path}: the file holds no trials; nothing to plot")
        if not 0 <= trial < len(trials):
            raise TraceError(f"{trace_path}: --trial {trial} is out of range "
                             f"(0..{len(trials) - 1})")
        if not f.get("report", {}):
            raise TraceError(f"{trace_path}: no /report populations; nothing to plot")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TraceError(f"{folder}: cannot make the folder for the figures (--plot): "
                             f"{exc.strerror or exc}") from None
        n_frames = head["n_frames"]
        frame_ms = head["dt_ms"] * head["every"]
        t = np.arange(n_frames) * frame_ms
        rows = slice(trial * n_frames, (trial + 1) * n_frames)
        info = trials[trial]
        title = f"sample {info['sample_index']} (label {info['label']}), epoch {info['epoch']}"
        stem = folder / f"trial{trial}"
        written = [_plot_activity(f, t, rows, title, max_neurons, Path(f"{stem}_activity.png")),
                   _plot_energy(f, t, rows, title, Path(f"{stem}_energy.png"))]
        if "spikes" in f and len(f["spikes"]):
            written.append(_plot_raster(f, info, title, Path(f"{stem}_raster.png")))
        if any(len(_shape(f, p)) == 3 for p in f["report"]):
            written.append(_plot_maps(f, rows, title, max_channels=8,
                                      path=Path(f"{stem}_maps.png")))
    return written


def _shape(f, population) -> tuple:
    """A population's layer shape (the ``shape`` attribute; flat if absent)."""
    g = f[f"report/{population}"]
    if "shape" in g.attrs:
        return tuple(int(v) for v in g.attrs["shape"])
    return (int(g["data"].shape[1]),)


def _plot_maps(f, rows, title, max_channels, path) -> Path:
    """The first ``max_channels`` channels of every ``(C, H, W)`` population at the
    trial's first and last frame (the feedforward start and the relaxed state), one
    row each, every map on its own colour scale (diverging for error neurons)."""
    plt = _pyplot()
    pops = sorted((p for p in f["report"] if len(_shape(f, p)) == 3),
                  key=lambda p: (int(p.split("_l")[1]), not p.startswith("value")))
    panels = []  # (population, frame label, (C, H, W) array)
    for p in pops:
        data = f[f"report/{p}/data"][rows]
        for label, k in (("start", 0), ("end", -1)):
            panels.append((p, label, data[k].reshape(_shape(f, p))))
    n_cols = min(max_channels, max(a.shape[0] for _, _, a in panels))
    fig, axes = plt.subplots(len(panels), n_cols, figsize=(1.1 * n_cols + 1, 1.15 * len(panels) + 0.6),
                             squeeze=False)
    for r, (p, label, maps) in enumerate(panels):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= maps.shape[0]:
                ax.axis("off")
                continue
            image = maps[c]
            if p.startswith("error"):
                bound = float(abs(image).max()) or 1.0
                ax.imshow(image, cmap="RdBu_r", vmin=-bound, vmax=bound)
            else:
                ax.imshow(image, cmap="viridis")
            if r == 0:
                ax.set_title(f"ch {c}", fontsize=7)
        axes[r][0].set_ylabel(f"{p}\n{label}", fontsize=7)
    fig.suptitle(f"feature maps, {title}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return path


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _plot_activity(f, t, rows, title, max_neurons, path) -> Path:
    """Value and error neurons of every recorded population: the ones that move most."""
    import numpy as np
    plt = _pyplot()
    pops = [p for p in f["report"] if f[f"report/{p}/data"].shape[1] > 0]
    fig, axes = plt.subplots(len(pops), 1, figsize=(7, 1.8 * len(pops) + 0.6), sharex=True,
                             squeeze=False)
    for ax, p in zip(axes[:, 0], pops):
        data = f[f"report/{p}/data"][rows]
        moved = np.argsort(-np.abs(data[-1] - data[0]))[:max_neurons]
        if p.startswith("value"):  # values relax by small amounts around large levels
            ax.plot(t, data[:, moved] - data[0, moved], lw=1)
            ax.set_ylabel(f"{p}\nx - x(0)", fontsize=8)
        else:
            ax.plot(t, data[:, moved], lw=1)
            ax.set_ylabel(f"{p}\neps", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("inference time (ms)")
    fig.suptitle(f"activity, {title}\n(the {max_neurons} neurons that move most)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return path


def _plot_energy(f, t, rows, title, path) -> Path:
    """``E_l(t)`` per layer and their sum."""
    import numpy as np
    plt = _pyplot()
    energy = f["pcsim/energy"][rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for l in range(energy.shape[1]):
        if np.any(energy[:, l]):
            ax.plot(t, energy[:, l], label=f"E_l{l}")
    ax.plot(t, energy.sum(1), "k--", label="E")
    positive = energy[energy > 0]
    ax.set_yscale("symlog", linthresh=max(float(positive.min()) if positive.size else 1.0, 1e-15))
    ax.set_xlabel("inference time (ms)")
    ax.set_ylabel("free energy")
    ax.set_title(f"energy per layer, {title}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    return path


def _plot_raster(f, info, title, path) -> Path:
    """Every event of the trial, one row per neuron, populations stacked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    offset, ticks = 0, []
    start, stop = float(info["start"]), float(info["stop"])
    for p in f["spikes"]:
        ts = f[f"spikes/{p}/timestamps"][:]
        ids = f[f"spikes/{p}/node_ids"][:]
        sel = (ts >= start) & (ts < stop)
        ax.scatter(ts[sel] - start, ids[sel] + offset, s=2, label=p)
        n = f[f"report/{p}/data"].shape[1] if f"report/{p}" in f else int(ids.max(initial=0)) + 1
        ticks.append((offset + n / 2, p))
        offset += n
    ax.set_yticks([tk for tk, _ in ticks], [p for _, p in ticks], fontsize=7)
    ax.set_xlabel("inference time (ms)")
    ax.set_title(f"events, {title}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return path
