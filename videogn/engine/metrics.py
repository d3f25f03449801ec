"""Accuracy helpers and the run's metric sinks (a JSONL file and TensorBoard scalars)."""

from __future__ import annotations

import json
import logging
import math
import resource
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def topk_hits(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[int, torch.Tensor]:
    """For each k, a bool [N] telling whether the label is among the k highest scores."""
    max_k = min(max(ks), scores.shape[1])
    top = scores.topk(max_k, dim=1).indices
    hits = top == labels.view(-1, 1)
    return {k: hits[:, : min(k, max_k)].any(dim=1) for k in ks}


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> list:
    """Top-1 accuracy of each class (in %), ``None`` for classes with no evaluated video."""
    result = []
    for c in range(num_classes):
        mask = labels == c
        result.append(float(100.0 * (predictions[mask] == c).mean()) if mask.any() else None)
    return result


def peak_memory_mb(device: torch.device) -> tuple[str, float]:
    """(name, MiB) of the peak memory we can measure: CUDA allocations, else the process RSS."""
    if device.type == "cuda":
        return "peak_gpu_mem_mb", torch.cuda.max_memory_allocated(device) / 2**20
    # Linux reports ru_maxrss in KiB.
    return "peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MetricsWriter:
    """Appends records to ``metrics.jsonl`` and mirrors numbers to TensorBoard (rank 0 only).

    Each record is a flat dict with a ``phase`` ("train", "epoch", "test") and a ``step``; its
    numeric fields become TensorBoard scalars named ``phase/field``.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / METRICS_FILE
        self.write_failed = False
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(run_dir) / TENSORBOARD_DIR))
            except ImportError as e:  # tensorboard is a dependency; keep training without it
                logger.warning("TensorBoard disabled: %s", e)

    def write(self, phase: str, step: int, **values) -> None:
        if not self.enabled:
            return
        record = {"phase": phase, "step": step, **values}
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:  # a full disk must not end the run: the record is lost, said once
            if not self.write_failed:
                logger.warning("%s: metrics not written (%s); training goes on", self.path, err)
            self.write_failed = True
        else:
            self.write_failed = False
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.tb.add_scalar(f"{phase}/{key}", value, step)

    def flush(self) -> None:
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def read_metrics(path: str | Path, phase: str | None = None) -> list[dict]:
    """The records of a metrics JSONL file, optionally only those of one phase."""
    records = []
    with open(path) as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                if phase is None or record.get("phase") == phase:
                    records.append(record)
    return records
