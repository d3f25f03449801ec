"""Every file in videogn/ stays within 400 lines and every function within 50 lines of code.

A function's lines of code are the lines from its `def` to its last statement, without its
docstring, blank lines and lines holding only a comment (nested functions count in their
parent too). Run this file as a script for the table of the largest files and functions:
    python tests/test_code_size.py
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "videogn"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 50


def function_sizes(source: str) -> list[tuple[str, int, int]]:
    """(qualified name, first line, lines of code) of every function in ``source``."""
    lines = source.splitlines()
    comments = {
        token.start[0]
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT and lines[token.start[0] - 1].lstrip().startswith("#")
    }
    sizes = []

    def visit(node, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = f"{prefix}{getattr(child, 'name', '')}"
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                span = set(range(child.lineno, child.end_lineno + 1))
                docstring = ast.get_docstring(child, clean=False) is not None
                if docstring:
                    first = child.body[0]
                    span -= set(range(first.lineno, first.end_lineno + 1))
                code = [n for n in span if lines[n - 1].strip() and n not in comments]
                sizes.append((name, child.lineno, len(code)))
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return sizes


def measure(package_dir: Path = PACKAGE_DIR) -> tuple[dict[str, int], dict[str, int]]:
    """Lines per file and lines of code per function ("path:qualified name"), repo-relative."""
    files, functions = {}, {}
    for path in sorted(package_dir.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        name = path.relative_to(package_dir.parent).as_posix()
        files[name] = len(source.splitlines())
        for function, _, size in function_sizes(source):
            functions[f"{name}:{function}"] = size
    return files, functions


def oversized(files: dict[str, int], functions: dict[str, int]) -> dict[str, str]:
    found = {f: f"{n} lines" for f, n in files.items() if n > MAX_FILE_LINES}
    found.update({f: f"{n} lines of code" for f, n in functions.items() if n > MAX_FUNCTION_LINES})
    return found


def test_files_and_functions_stay_small():
    found = oversized(*measure())
    assert not found, (
        f"over {MAX_FILE_LINES} lines per file / {MAX_FUNCTION_LINES} per function: {found}"
    )


def test_the_measure_counts_code_not_docstrings_comments_or_blanks():
    statements = [f"x{i} = {i}  # a trailing comment does not hide code" for i in range(50)]
    function_body = "\n".join("    " + line for line in statements)
    method_body = "\n".join("        " + line for line in statements)
    source = (
        'def fits():\n    """Docstring.\n\n    Long.\n    """\n    # only a comment\n\n'
        f"{function_body}\n\n\n"
        f"class Holder:\n    def too_long(self):\n{method_body}\n        return 1\n"
    )
    sizes = {name: size for name, _, size in function_sizes(source)}
    assert sizes == {"fits": 51, "Holder.too_long": 52}  # the def line counts
    found = oversized({"m.py": 401, "n.py": 400}, {f"m.py:{k}": v for k, v in sizes.items()})
    assert found == {
        "m.py": "401 lines",
        "m.py:fits": "51 lines of code",
        "m.py:Holder.too_long": "52 lines of code",
    }


if __name__ == "__main__":
    files, functions = measure()
    print(f"files over {MAX_FILE_LINES} lines / functions over {MAX_FUNCTION_LINES} lines of code:")
    for name, size in sorted(oversized(files, functions).items()):
        print(f"  {name}: {size}")
    print(
        "largest files:",
        *(f"{n} {f}" for f, n in sorted(files.items(), key=lambda x: -x[1])[:5]),
        sep="\n  ",
    )
    largest = sorted(functions.items(), key=lambda x: -x[1])[:5]
    print("largest functions:", *(f"{n} {f}" for f, n in largest), sep="\n  ")
    sys.exit(0)
