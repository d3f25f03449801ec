"""Cost of the per-video decode time limit (``data.decode_timeout_s``) on the demo data path.

The main job's training items (its demo videos, 8x4 sampler and transform, from the composed
``train`` config) are loaded with the limit (the default, 60 s) and without it (null),
alternating in rounds (each in turn first) over the same items: in this process
(``num_workers=0``) and through a DataLoader with one worker (the main job's setting). Prints
the medians and the median of the per-round ratios, and the cost of the hand-off to the
decode thread alone (an empty job), which a loaded machine's noise cannot hide.

    python benchmarks/bench_decode_deadline.py [--items 128] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

from videogn.config import CONFIG_DIR, register_configs
from videogn.data.decode_deadline import run_with_time_limit
from videogn.engine.builders import build_run_spec
from videogn.engine.distributed import DistInfo


def demo_dataset(decode_timeout_s: float | None):
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"data.decode_timeout_s={decode_timeout_s or 'null'}"])
    spec = build_run_spec(cfg)
    spec.data.resolve(DistInfo())
    return spec.data.train_dataset(spec.data.train_records(), spec.samplers.train, seed=0)


def in_process(dataset, items: int) -> float:
    start = time.perf_counter()
    for index in range(items):
        dataset[index]
    return (time.perf_counter() - start) / items


def through_loader(dataset, items: int) -> float:
    subset = torch.utils.data.Subset(dataset, range(items))
    loader = DataLoader(subset, batch_size=16, num_workers=1)
    start = time.perf_counter()
    for _ in loader:
        pass
    return (time.perf_counter() - start) / items


def hand_off_us(calls: int = 3000) -> float:
    """Microseconds per call that the time limit adds: an empty job through the thread."""
    start = time.perf_counter()
    for _ in range(calls):
        run_with_time_limit(lambda: None, 60.0, "empty")
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    datasets = {"limit 60 s": demo_dataset(60.0), "no limit": demo_dataset(None)}
    for name, measure in (("in process", in_process), ("loader, 1 worker", through_loader)):
        times = {label: [] for label in datasets}
        measure(datasets["no limit"], 16)  # warm the page cache and the codecs
        for round_ in range(args.rounds):
            order = list(datasets) if round_ % 2 == 0 else list(datasets)[::-1]  # no order bias
            for label in order:
                times[label].append(measure(datasets[label], args.items))
        medians = {label: statistics.median(t) * 1e3 for label, t in times.items()}
        # Each round's two measurements are neighbours in time: their ratio cancels the drift
        # of a shared machine's load better than the ratio of the two medians.
        paired = statistics.median(
            a / b for a, b in zip(times["limit 60 s"], times["no limit"], strict=True)
        )
        print(
            f"{name:>17}: {medians['limit 60 s']:.3f} ms/item with the limit, "
            f"{medians['no limit']:.3f} without; median of per-round ratios {paired:.3f} "
            f"({args.rounds} rounds x {args.items} items)"
        )
    print(f"hand-off to the decode thread: {hand_off_us():.1f} us per video")


if __name__ == "__main__":
    main()
