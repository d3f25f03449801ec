"""``videogn-predict``: the top-k classes of videos, by a trained run's own test protocol.

    videogn-predict VIDEO... checkpoint=RUN_DIR [classes=FILE] [top_k=5] [--json]
        [--no-progress] [test.num_crops=3 test.num_workers=4 ...] [device=cpu]

Each video is read as the run's test reads it (its clips, crops, normalization and score
aggregation, from the config recorded in the checkpoint; ``test.*``, ``sampler.*`` and
``device`` may be overridden). Class names come from ``classes=FILE`` (one per line, line i
is class i-1), else from the run's dataset. A video that cannot be decoded is reported with
the reason, and the others are still predicted; the exit status is 1 only when none could be.
Videos are decoded by ``test.num_workers`` loader processes while the model scores the previous
ones, with a progress bar on stderr for many videos.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from functools import partial

import torch

from videogn.data.lists import VideoRecord, read_classes
from videogn.data.transforms import describe_views
from videogn.engine import distributed
from videogn.engine.checkpoint import CheckpointError
from videogn.engine.evaluate import AGGREGATIONS, score_views
from videogn.engine.run import RestoredRun, input_preparation, restore_run
from videogn.engine.trainer import autocast

logger = logging.getLogger("videogn.predict")
OPTIONS = ("checkpoint", "classes", "top_k")
PROGRESS_MIN_VIDEOS = 8  # fewer finish before a bar would say anything


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, dict, list[str]]:
    """(flags, {checkpoint, classes, top_k}, run overrides); videos are the plain arguments."""
    parser = argparse.ArgumentParser(
        prog="videogn-predict",
        description="Top-k classes of videos with a trained run's test protocol.",
        epilog="key=value arguments: checkpoint=RUN_DIR_OR_FILE (required), classes=FILE, "
        "top_k=5, and overrides of the run's settings (test.num_crops=3, device=cpu, ...)",
    )
    parser.add_argument("args", nargs="+", metavar="VIDEO or key=value")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help=f"no progress bar (shown on stderr from {PROGRESS_MIN_VIDEOS} videos)",
    )
    flags = parser.parse_args(argv)
    options, overrides, videos = {"classes": None, "top_k": "5"}, [], []
    for arg in flags.args:
        key, is_option, value = arg.partition("=")
        if not is_option:
            videos.append(arg)
        elif key in OPTIONS:
            options[key] = value
        else:
            overrides.append(arg)
    if "checkpoint" not in options:
        parser.error("checkpoint=RUN_DIR (or a checkpoint file) is required")
    if not videos:
        parser.error("give at least one video")
    if not options["top_k"].isdigit() or int(options["top_k"]) < 1:
        parser.error(f"top_k must be a positive integer, got {options['top_k']!r}")
    options["top_k"] = int(options["top_k"])
    flags.videos = videos
    return flags, options, overrides


def class_names(run: RestoredRun, classes_file: str | None) -> list[str]:
    """Names of the model's classes: ``classes_file``, else the run's dataset's, else numbers."""
    num_classes = run.spec.model.kwargs["num_classes"]
    if classes_file is None:
        classes_file = run.spec.data.resolve(run.dist).classes_file
    if classes_file is None:
        return [f"class {i}" for i in range(num_classes)]
    names = read_classes(classes_file)
    if len(names) != num_classes:
        raise ValueError(f"{classes_file} names {len(names)} classes; the model has {num_classes}")
    return names


def decoded_videos(dataset, num_workers: int, progress: bool):
    """The dataset's items in order, decoded by ``num_workers`` loader processes (0: here),
    with a progress bar on stderr."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    workers = min(num_workers, len(dataset))
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers)
    return tqdm(loader, total=len(dataset), unit="video", disable=not progress, file=sys.stderr)


@torch.no_grad()
def predict(
    run: RestoredRun, videos: list[str], names: list[str], top_k: int, *, progress: bool = False
) -> list[dict]:
    """One result per video: the top-k classes with their aggregated softmax scores, or the
    reason it could not be decoded. Videos are decoded by ``test.num_workers`` loader workers."""
    spec = run.spec
    records = [VideoRecord(path, 0) for path in videos]  # the label is not used
    dataset = spec.data.test_dataset(records, spec.samplers.test, spec.test_transform())
    forward = partial(autocast, run.dist.device, spec.trainer.amp_dtype)
    results = []
    for item in decoded_videos(dataset, spec.test.num_workers, progress):
        path = videos[item["index"]]
        if item["error"] is not None:
            results.append({"video": path, "error": item["error"], "predictions": []})
            continue
        probs = score_views(run.model, item["views"], spec.test.views_per_batch, forward,
                            run.dist.device, input_preparation(spec), spec.test.head)  # fmt: skip
        scores = AGGREGATIONS[spec.test.aggregate](probs)
        top = scores.topk(min(top_k, len(scores)))
        predictions = [
            {"class": names[i], "index": i, "score": float(s)}
            for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]
        results.append({"video": path, "views": len(probs), "predictions": predictions})
    return results


def format_text(results: list[dict], protocol: str) -> str:
    lines = [f"# {protocol}"]
    for result in results:
        if "error" in result:
            lines.append(f"{result['video']}: could not be decoded: {result['error']}")
            continue
        lines.append(f"{result['video']}:")
        lines += [
            f"  {rank}. {p['class']}  {p['score']:.3f}"
            for rank, p in enumerate(result["predictions"], start=1)
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    flags, options, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    device = next((o.split("=", 1)[1] for o in overrides if o.startswith("device=")), "auto")
    dist = distributed.DistInfo(device=distributed.resolve_device(device))
    try:
        run = restore_run(options["checkpoint"], overrides, dist=dist)  # test.num_workers loaders
    except CheckpointError as err:  # torn, foreign or refused (unsafe) checkpoint: say which
        print(f"videogn-predict: error: {err}", file=sys.stderr)
        return 1
    names = class_names(run, options["classes"])
    progress = len(flags.videos) >= PROGRESS_MIN_VIDEOS and not flags.no_progress
    results = predict(run, flags.videos, names, options["top_k"], progress=progress)
    t = run.spec.test
    protocol = (
        f"{run.checkpoint} (iteration {run.iteration}): {t.num_clips} clips x "
        f"{describe_views(t.num_crops)} of {run.spec.samplers.clip} frames, "
        f"{t.aggregate} of softmax"
    )
    if flags.json:
        print(json.dumps({"checkpoint": str(run.checkpoint), "protocol": protocol,
                          "results": results}, indent=2))  # fmt: skip
    else:
        print(format_text(results, protocol))
    return 0 if any("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
