"""docs/RELIABILITY.md names only tests that exist: every ``file.py::name`` (and the
``::name`` that follow it in the same cell) is a test function of that file."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "RELIABILITY.md"
REFERENCE = re.compile(r"`((?:[\w/]+\.py)?)(?:::(\w+))?(?:\[[^\]`]*\])?`")


def named_tests(text: str) -> list[tuple[str, str | None]]:
    """(test file, function or None) for every backticked reference, row by row."""
    found = []
    for row in text.splitlines():
        current = None
        for file, function in REFERENCE.findall(row):
            if file and not Path(file).name.startswith("test_"):
                continue  # a package file such as videogn/data/dataset.py
            current = file or current
            if current:
                found.append((current, function or None))
    return found


def test_every_test_the_reliability_table_names_exists():
    references = named_tests(DOC.read_text())
    assert len(references) > 80
    missing = []
    for file, function in references:
        path = ROOT / "tests" / file
        if not path.is_file():
            missing.append(file)
        elif function and not re.search(rf"^def {function}\(", path.read_text(), re.M):
            missing.append(f"{file}::{function}")
    assert not missing, missing
