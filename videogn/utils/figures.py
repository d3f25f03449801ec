"""Figures written to files: matplotlib without a display, saved where asked."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, so plots work on machines without a display;
    imported on first use (matplotlib is slow to import and most commands never plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, *, dpi: int = 120, **savefig_kwargs) -> Path:
    """Write ``fig`` to ``path`` (creating its folder) and close it; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, **savefig_kwargs)
    pyplot().close(fig)
    return path
