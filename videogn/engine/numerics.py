"""Kernel choices that change speed and numerics: determinism, cuDNN autotuning, TF32.

TF32 (Ampere and later GPUs) multiplies float32 convolutions and matmuls with a 10-bit
mantissa: several times faster, and no longer the fp32 arithmetic the GN paper's numbers were
trained with (its GPUs had no TF32). ``trainer.tf32`` is therefore off by default; bf16
autocast (``trainer.amp=bf16``) is the fast path that says what it does. cuDNN autotuning
(``trainer.cudnn_benchmark``) times the algorithms for each new input shape once: a win for
fixed-size training clips; it is off under ``deterministic``, which needs fixed algorithms.
"""

from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger(__name__)


def configure_numerics(*, deterministic: bool, cudnn_benchmark: bool, tf32: bool) -> None:
    """Set torch's global kernel switches for this process."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        if cudnn_benchmark:
            logger.info("deterministic=true: cuDNN autotuning (trainer.cudnn_benchmark) is off")
    torch.backends.cudnn.benchmark = cudnn_benchmark and not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
