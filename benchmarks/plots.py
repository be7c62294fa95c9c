"""The plotting the benchmarks share: matplotlib when it is installed, two panels side by side, one PNG."""

from __future__ import annotations

from pathlib import Path


def two_panels():
    """(pyplot, figure, axes) of a two-panel figure with the Agg backend, or None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    return plt, figure, axes


def save(plt, figure, axes, xlabel: str, ylabels: tuple[str, str], title: str, path: Path) -> None:
    """Label both panels, grid them, title the figure and write it to `path`."""
    for axis, label in zip(axes, ylabels):
        axis.set_xlabel(xlabel)
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
