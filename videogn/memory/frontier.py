"""The batch / clip-length frontier: the largest per-GPU batch at each clip length.

For every norm x precision x activation-checkpointing setting and every clip length, the
estimate (:func:`videogn.memory.estimate.estimate_memory`) gives the largest per-GPU batch
that fits a budget. Table 8 of the GN paper sits on this frontier: with 2018's memory, 8 clips
of 32 frames or 4 of 64 per GPU. :func:`frontier_table` and :func:`plot_frontier` draw it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from videogn.memory.estimate import GIB, MemoryEstimate, estimate_memory
from videogn.models.i3d import CHECKPOINT_STAGES
from videogn.utils.figures import pyplot, save_figure

CLIP_LENGTHS = (8, 16, 32, 64, 128)
# (frames, per-GPU batch) of Table 8's three cells: 32x2 at 8 and 4 clips, 64x1 at 4.
PAPER_CELLS = ((32, 8), (32, 4), (64, 4))


@dataclass(frozen=True)
class Setting:
    """One line of the frontier: a norm, a precision and the checkpointed stages."""

    norm: str
    dtype: str
    stages: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        if not self.stages:
            checkpointing = "no ckpt"
        elif self.stages == CHECKPOINT_STAGES:
            checkpointing = "ckpt all"
        else:
            checkpointing = "ckpt " + ",".join(self.stages)
        return f"{self.norm.upper()} {self.dtype} {checkpointing}"


def settings_grid(
    norms: Sequence[str], dtypes: Sequence[str], checkpointing: Sequence[tuple[str, ...]]
) -> list[Setting]:
    return [Setting(*combo) for combo in itertools.product(norms, dtypes, checkpointing)]


def estimate_frontier(
    model_kwargs: Callable[[str], Mapping],
    settings: Sequence[Setting],
    clip_lengths: Sequence[int],
    crop_size: int,
    **estimate_kwargs,
) -> dict[tuple[Setting, int], MemoryEstimate]:
    """(setting, frames) -> estimate. ``model_kwargs(norm)`` gives ``create_model`` arguments;
    ``estimate_kwargs`` go to :func:`estimate_memory` (optimizer, workspace_bytes, ...)."""
    estimates = {}
    for setting, frames in itertools.product(settings, clip_lengths):
        kwargs = dict(model_kwargs(setting.norm)) | {"activation_checkpointing": setting.stages}
        estimates[setting, frames] = estimate_memory(
            kwargs, num_frames=frames, crop_size=crop_size, dtype=setting.dtype, **estimate_kwargs
        )
    return estimates


def largest_batches(
    estimates: Mapping[tuple[Setting, int], MemoryEstimate], budget_bytes: int
) -> dict[tuple[Setting, int], int]:
    """(setting, frames) -> the most clips per GPU that fit ``budget_bytes`` (0: none)."""
    return {key: e.largest_batch(budget_bytes) for key, e in estimates.items()}


def _cell_text(batch: int, frames: int, world_size: int) -> str:
    text = str(batch) if world_size == 1 else f"{batch} ({batch * world_size})"
    paper = [b for f, b in PAPER_CELLS if f == frames]
    if paper:  # '*' when every paper batch at this length fits, '!' when one does not
        text += "*" if batch >= max(paper) else "!"
    return text


def frontier_table(
    batches: Mapping[tuple[Setting, int], int],
    settings: Sequence[Setting],
    clip_lengths: Sequence[int],
    world_size: int = 1,
) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: a row per setting, a column per clip length, the largest per-GPU
    batch in each cell (with the total over ``world_size`` GPUs in parentheses)."""
    headers = ["setting", *(f"{frames} frames" for frames in clip_lengths)]
    rows = [
        [s.label, *(_cell_text(batches[s, f], f, world_size) for f in clip_lengths)]
        for s in settings
    ]
    return headers, rows


def plot_frontier(
    panels: Mapping[float, Mapping[tuple[Setting, int], int]],
    settings: Sequence[Setting],
    clip_lengths: Sequence[int],
    path: str,
    *,
    crop_size: int,
    world_size: int = 1,
) -> None:
    """A panel per budget (GiB -> batches): per-GPU batch against clip length, a line per
    setting (colour: norm and precision; dashed: checkpointing), Table 8's cells as stars."""
    plt = pyplot()

    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False, sharey=True
    )
    colours = {}
    for ax, (budget_gb, batches) in zip(axes[0], panels.items(), strict=True):
        for setting in settings:
            colour = colours.setdefault((setting.norm, setting.dtype), f"C{len(colours) % 10}")
            points = [(f, batches[setting, f]) for f in clip_lengths if batches[setting, f] > 0]
            if points:
                ax.plot(
                    *zip(*points, strict=True),
                    color=colour,
                    linestyle="--" if setting.stages else "-",
                    # BN and GN often coincide: different markers and widths keep both visible.
                    marker="s" if setting.norm == "bn" else "o",
                    markersize=5 if setting.norm == "bn" else 3,
                    linewidth=2.5 if setting.norm == "bn" else 1.2,
                    label=setting.label,
                )
        frames, batch = zip(*PAPER_CELLS, strict=True)
        ax.scatter(frames, batch, marker="*", s=160, color="black", zorder=5, label="Table 8 cells")
        ax.set(xscale="log", yscale="log", title=f"{budget_gb:g} GiB per GPU")
        ax.set_xticks(list(clip_lengths), [str(f) for f in clip_lengths])
        ax.set_xlabel(f"clip length (frames at {crop_size}x{crop_size})")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel(
        "largest per-GPU batch" + (f" (x{world_size} GPUs)" if world_size > 1 else "")
    )
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    save_figure(fig, path, dpi=110, bbox_inches="tight")


def budget_bytes(budget_gb: float) -> int:
    return int(budget_gb * GIB)
