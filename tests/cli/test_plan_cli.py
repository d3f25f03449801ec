"""``videogn-plan``: the table it prints for given cells, and the Table 8 default."""

from __future__ import annotations

import pytest

from videogn.cli.plan import TABLE8_CELLS, main, parse_cell
from videogn.memory.checkpointing import recompute_overhead
from videogn.memory.estimate import GIB, estimate_memory
from videogn.models.i3d import CHECKPOINT_STAGES

TOY_ARGS = ["--base-width", "8", "--stage-depths", "1,1,1,1", "--num-groups", "4"]
TOY_KWARGS = {"name": "i3d_r50", "base_width": 8, "stage_depths": (1, 1, 1, 1)}


def test_markdown_table_for_given_cells(capsys):
    argv = [
        "--cell",
        "gn:8x2:4",
        "--cell",
        "bn:16",
        "--crop",
        "64",
        "--dtype",
        "fp32",
        "--budgets-gb",
        "1.01",
        "2",
        "--markdown",
        *TOY_ARGS,
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("|")]
    assert lines[0].startswith(
        "| cell | dtype | autocast | checkpointing | extra compute | GiB/clip | fixed GiB |"
    )
    assert len(lines) == 4  # header, rule, two rows
    gn_row = lines[2].split(" | ")
    assert gn_row[0] == "| GN 8x2 bs4" and gn_row[1] == "fp32" and gn_row[2] == "-"
    estimate = estimate_memory(
        TOY_KWARGS | {"norm": "gn", "norm_kwargs": {"num_groups": 4}, "num_classes": 400},
        num_frames=8,
        crop_size=64,
    )
    assert gn_row[3:5] == ["none", "+0%"]
    assert gn_row[5] == f"{estimate.bytes_per_clip / GIB:.3f}"
    assert gn_row[-1].rstrip(" |") == str(estimate.largest_batch(2 * GIB))
    text = " ".join(out.split())  # the notes are wrapped
    assert "workspace margin" in text and "statistics batch" in text


def test_target_batch_prints_a_plan_per_row(capsys):
    argv = [
        "--cell",
        "bn:8",
        "--crop",
        "64",
        "--dtype",
        "bf16",
        "--target-batch",
        "64",
        "--world-size",
        "8",
        "--budget-gb",
        "2",
        *TOY_ARGS,
    ]
    assert main(argv) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "BN 8 bf16: Batch plan: 8 clips per device x 1 accumulation step(s) x 8" in text


@pytest.mark.parametrize("policy", ["cuda", "cpu"])
def test_each_row_says_which_autocast_policy_it_assumes(capsys, policy):
    argv = ["--cell", "gn:8", "--crop", "32", "--budgets-gb", "2", "--markdown", *TOY_ARGS]
    assert main([*argv, "--autocast-policy", policy]) == 0
    out = capsys.readouterr().out
    rows = {line.split(" | ")[1]: line.split(" | ")[2] for line in out.splitlines()[2:4]}
    assert rows == {"fp32": "-", "bf16": f"{policy} policy"}
    assert f"rows assume {policy.upper()} autocast's op lists" in " ".join(out.split())
    kwargs = TOY_KWARGS | {"norm": "gn", "norm_kwargs": {"num_groups": 4}, "num_classes": 400}
    estimate = estimate_memory(
        kwargs, num_frames=8, crop_size=32, dtype="bf16", autocast_policy=policy
    )
    assert out.splitlines()[3].split(" | ")[5] == f"{estimate.bytes_per_clip / GIB:.3f}"


def test_checkpointing_rows_need_less_memory_and_state_their_extra_compute(capsys):
    argv = ["--cell", "bn:8", "--crop", "32", "--dtype", "fp32", "--markdown", *TOY_ARGS]
    assert main([*argv, "--checkpointing", "none", "res2,res3", "all"]) == 0
    out = capsys.readouterr().out
    rows = [line.split(" | ") for line in out.splitlines()[2:5]]
    assert [r[3] for r in rows] == ["none", "res2,res3", "all"]
    fit_in_16_gib = [int(r[8]) for r in rows]  # per clip is under a thousandth of a GiB here
    extra = [int(r[4].strip("+%")) for r in rows]
    assert fit_in_16_gib[0] < fit_in_16_gib[1] < fit_in_16_gib[2]
    assert extra[0] == 0 < extra[1] < extra[2]
    kwargs = TOY_KWARGS | {"norm": "bn", "num_classes": 400}
    assert extra[2] == round(100 * recompute_overhead(kwargs, 8, 32, CHECKPOINT_STAGES))
    with pytest.raises(SystemExit):
        main([*argv, "--checkpointing", "res9"])
    assert "unknown stage(s) ['res9']" in capsys.readouterr().err


def test_bad_cell_is_refused_with_the_expected_form(capsys):
    with pytest.raises(SystemExit):
        main(["--cell", "gn-64"])
    assert "expected NORM:FRAMES[xINTERVAL][:BATCH]" in capsys.readouterr().err


def test_default_cells_are_table_8():
    labels = [cell.label for cell in TABLE8_CELLS]
    assert labels == [
        "BN 32x2 bs8",
        "BN 32x2 bs4",
        "BN 64x1 bs4",
        "GN 32x2 bs8",
        "GN 32x2 bs4",
        "GN 64x1 bs4",
    ]
    assert parse_cell("gn:64x1:4") == TABLE8_CELLS[-1]


@pytest.mark.slow
def test_default_cells_run_on_the_full_model(capsys):
    assert main(["--dtype", "fp32"]) == 0  # bf16 too by default; one dtype keeps this shorter
    rows = [line for line in capsys.readouterr().out.splitlines() if line[:3] in ("BN ", "GN ")]
    assert len(rows) == 6
    # label (3 words), dtype, autocast, checkpointing, extra compute, per clip, fixed, paper
    # batch needs, five budgets
    assert all(len(row.split()) == 3 + 1 + 1 + 1 + 1 + 3 + 5 for row in rows)
