"""``videogn-inflate`` as a user runs it: help, exit codes, messages, files written or not."""

import subprocess
import sys

import pytest
import torch

from videogn.cli.inflate import main


def _partial_torchvision_file(path):
    """A torchvision-layout file holding only the stem, plus one key nothing maps."""
    state = {
        "conv1.weight": torch.randn(8, 3, 7, 7),
        "bn1.weight": torch.ones(8),
        "bn1.bias": torch.zeros(8),
        "bn1.running_mean": torch.zeros(8),
        "bn1.running_var": torch.ones(8),
        "extra.weight": torch.zeros(2),
    }
    torch.save(state, path)
    return path


TOY = ["--base-width", "8", "--stage-depths", "1,1,1,1", "--num-classes", "5"]


@pytest.mark.slow  # a fresh interpreter importing torch
def test_help_shows_the_options_and_examples():
    result = subprocess.run(
        [sys.executable, "-m", "videogn.cli.inflate", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for text in (
        "SRC",
        "--mode {mean,center}",
        "--norm-mismatch",
        "--strict",
        "examples:",
        "videogn-inflate R-50-GN.pkl",
        "model.pretrained=",
    ):
        assert text.lower() in result.stdout.lower(), text


def test_strict_failure_exits_1_naming_the_tensors_and_writes_nothing(tmp_path, capsys):
    src, dst = _partial_torchvision_file(tmp_path / "stem.pth"), tmp_path / "out.pt"
    assert main([str(src), str(dst), *TOY, "--strict"]) == 1
    err = capsys.readouterr().err
    assert "videogn-inflate: error: strict loading failed" in err
    assert "extra.weight" in err and "res2.0.conv_a.weight" in err
    assert not dst.exists() and list(tmp_path.iterdir()) == [src]


def test_without_strict_it_writes_and_reports_what_is_missing(tmp_path, caplog):
    src, dst = _partial_torchvision_file(tmp_path / "stem.pth"), tmp_path / "out.pt"
    caplog.set_level("INFO")
    assert main([str(src), str(dst), *TOY]) == 0
    assert "unused        extra.weight" in caplog.text
    checkpoint = torch.load(dst, weights_only=True)
    assert checkpoint["inflation"]["unused_source"] == ["extra.weight"]
    assert "res2.0.conv_a.weight" in checkpoint["inflation"]["unfilled_target"]
    assert checkpoint["meta"]["model_config"]["overrides"]["stage_depths"] == (1, 1, 1, 1)


def test_existing_destination_needs_force(tmp_path, capsys):
    src, dst = _partial_torchvision_file(tmp_path / "stem.pth"), tmp_path / "out.pt"
    dst.write_bytes(b"keep me")
    assert main([str(src), str(dst), *TOY]) == 1
    assert "out.pt exists; pass --force" in capsys.readouterr().err
    assert dst.read_bytes() == b"keep me"
    assert main([str(src), str(dst), *TOY, "--force"]) == 0
    assert "model" in torch.load(dst, weights_only=True)


def test_missing_source_and_norm_mismatch_are_clear_errors(tmp_path, capsys):
    assert main([str(tmp_path / "nope.pkl"), str(tmp_path / "out.pt")]) == 1
    assert "pretrained checkpoint" in capsys.readouterr().err
    src = _partial_torchvision_file(tmp_path / "stem.pth")
    assert main([str(src), str(tmp_path / "out.pt"), *TOY, "--norm", "gn"]) == 1
    assert "norm mismatch at stem.norm" in capsys.readouterr().err
