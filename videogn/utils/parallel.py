"""A map over files with a progress bar, in this process or in a pool of processes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def progress_map(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any],
    *,
    workers: int,
    desc: str,
    chunksize: int = 1,
    progress: bool = True,
) -> list[Any]:
    """``[fn(t) for t in tasks]`` in order, over ``workers`` processes when ``workers > 1``.

    ``fn`` must be picklable (a module-level function) for the process pool.
    """
    from tqdm import tqdm

    results = []
    with tqdm(total=len(tasks), desc=desc, unit="video", disable=not progress) as bar:
        if workers <= 1:
            for task in tasks:
                results.append(fn(task))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for result in pool.map(fn, tasks, chunksize=chunksize):
                    results.append(result)
                    bar.update()
    return results
