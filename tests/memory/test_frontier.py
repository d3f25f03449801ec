"""``videogn-plan frontier``: largest per-GPU batch per setting and clip length, table and plot."""

from __future__ import annotations

from videogn.cli.plan import main
from videogn.memory.estimate import GIB, estimate_memory
from videogn.memory.frontier import PAPER_CELLS, Setting, frontier_table
from videogn.models.i3d import CHECKPOINT_STAGES

TOY_ARGS = ["--base-width", "8", "--stage-depths", "1,1,1,1", "--num-groups", "4", "--crop", "32"]
TOY_KWARGS = {"name": "i3d_r50", "base_width": 8, "stage_depths": (1, 1, 1, 1), "num_classes": 400}


def _tables(out: str) -> dict[str, dict[str, list[str]]]:
    """Budget heading -> setting -> cells, from the Markdown tables."""
    tables, heading = {}, None
    for line in out.splitlines():
        if "GiB per GPU" in line:
            heading = line.strip()
            tables[heading] = {}
        elif line.startswith("| ") and "setting" not in line and "---" not in line:
            cells = [c.strip() for c in line.strip("| ").split(" | ")]
            tables[heading][cells[0]] = cells[1:]
    return tables


def test_frontier_gives_the_largest_batch_per_setting_and_clip_length(capsys, tmp_path):
    plot = tmp_path / "frontier.png"
    argv = ["frontier", "--budget-gb", "1.2", "--world-size", "8", "--frames", "8", "16", "32"]
    argv += ["--norms", "gn", "--dtype", "bf16", "--markdown", "--plot", str(plot), *TOY_ARGS]
    assert main(argv) == 0
    out = capsys.readouterr().out
    table = _tables(out)["1.2 GiB per GPU, 8 GPUs"]
    assert list(table) == ["GN bf16 no ckpt", "GN bf16 ckpt all"]
    gn = TOY_KWARGS | {"norm": "gn", "norm_kwargs": {"num_groups": 4}}
    for label, stages in (("GN bf16 no ckpt", ()), ("GN bf16 ckpt all", CHECKPOINT_STAGES)):
        for cell, frames in zip(table[label], (8, 16, 32), strict=True):
            estimate = estimate_memory(
                gn | {"activation_checkpointing": stages},
                num_frames=frames,
                crop_size=32,
                dtype="bf16",
            )
            batch = estimate.largest_batch(int(1.2 * GIB))
            assert cell.rstrip("*!") == f"{batch} ({8 * batch})"
    # Checkpointing fits more clips; longer clips fewer.
    batches = {k: [int(c.split()[0]) for c in v] for k, v in table.items()}
    pairs = zip(batches["GN bf16 ckpt all"], batches["GN bf16 no ckpt"], strict=True)
    assert all(a > b for a, b in pairs)
    assert batches["GN bf16 no ckpt"] == sorted(batches["GN bf16 no ckpt"], reverse=True)
    assert table["GN bf16 no ckpt"][2].endswith("*")  # the paper's 8 clips of 32 frames fit
    assert "Table 8's cells are 32 frames x 8" in " ".join(out.split())
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_paper_cells_are_marked_where_they_do_not_fit():
    settings = [Setting("bn", "fp32")]
    batches = {(settings[0], 32): 5, (settings[0], 64): 4, (settings[0], 16): 9}
    headers, rows = frontier_table(batches, settings, (16, 32, 64))
    assert headers == ["setting", "16 frames", "32 frames", "64 frames"]
    # 5 clips of 32 frames miss the paper's 8; 4 of 64 are the paper's 4.
    assert rows == [["BN fp32 no ckpt", "9", "5!", "4*"]]
    assert (32, 8) in PAPER_CELLS and (64, 4) in PAPER_CELLS


def test_bad_frontier_arguments_are_refused(capsys):
    assert main(["frontier", "--world-size", "0", *TOY_ARGS]) == 2
    assert "--world-size and --budget-gb must be positive" in capsys.readouterr().err
