"""The cells of Table 8 (GN paper) and of its CPU analogue, and how a run maps onto a cell.

A cell is (norm, clip, clips per GPU). In the paper (Wu & He, ECCV 2018, Table 8: I3D
ResNet-50 on Kinetics-400, 8 GPUs, 10-clip test) BN and GN are each trained at
32x2 with 8 clips per GPU, 32x2 with 4, and 64x1 with 4.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    """One entry of the table.

    Attributes:
        norm: "bn" or "gn".
        num_frames, frame_interval: the training (and test) clip.
        batch: clips per process per step; for BN, the statistics batch.
        experiment: the config under ``conf/experiment/`` that trains it.
        paper_top1, paper_top5: the paper's numbers (None for cells the paper has not).
    """

    norm: str
    num_frames: int
    frame_interval: int
    batch: int
    experiment: str
    paper_top1: float | None = None
    paper_top5: float | None = None

    @property
    def clip(self) -> str:
        return f"{self.num_frames}x{self.frame_interval}"

    @property
    def column(self) -> tuple[str, int]:
        """The table column: (clip, batch); rows are norms."""
        return (self.clip, self.batch)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.norm, self.clip, self.batch)


def column_label(column: tuple[str, int], unit: str = "GPU") -> str:
    clip, batch = column
    return f"{clip.replace('x', '×')}, {batch}/{unit}"


TABLE8 = (
    Cell("bn", 32, 2, 8, "table8/bn_32x2_bs8", 73.3, 90.7),
    Cell("bn", 32, 2, 4, "table8/bn_32x2_bs4", 72.1, 90.0),
    Cell("bn", 64, 1, 4, "table8/bn_64x1_bs4", 73.3, 90.8),
    Cell("gn", 32, 2, 8, "table8/gn_32x2_bs8", 73.0, 90.6),
    Cell("gn", 32, 2, 4, "table8/gn_32x2_bs4", 72.8, 90.6),
    Cell("gn", 64, 1, 4, "table8/gn_64x1_bs4", 74.5, 91.7),
)

# Beyond the paper: the cells its memory ruled out (64 frames at 8 clips per GPU; 128 frames),
# reached by activation checkpointing ("auto" in their configs) at the paper's memory.
TABLE8_EXTENDED = (
    Cell("bn", 64, 1, 8, "table8/bn_64x1_bs8"),
    Cell("gn", 64, 1, 8, "table8/gn_64x1_bs8"),
    Cell("gn", 128, 1, 4, "table8/gn_128x1_bs4"),
)

# The paper's setting: per-GPU batches of 8 GPUs; fewer GPUs accumulate to the same total.
TABLE8_WORLD_SIZE = 8


def columns(cells: tuple[Cell, ...]) -> list[tuple[str, int]]:
    """Distinct columns in the order the cells list them."""
    seen: list[tuple[str, int]] = []
    for cell in cells:
        if cell.column not in seen:
            seen.append(cell.column)
    return seen


def norms(cells: tuple[Cell, ...]) -> list[str]:
    seen: list[str] = []
    for cell in cells:
        if cell.norm not in seen:
            seen.append(cell.norm)
    return seen
