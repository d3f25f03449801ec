"""A DDP run through torch.distributed on this machine's backend (NCCL on a GPU, gloo on CPU).

Launched by torchrun with one process (one GPU is all the check machine has; NCCL refuses two
ranks on one device). It joins a process group, trains the toy I3D with SyncBatchNorm (BN on
the CPU) inside DistributedDataParallel for ``--iterations`` steps (bf16 autocast on the GPU)
on a learnable task, checks that the loss stays finite and falls and that an all_reduce of
the ranks' ones gives the world size, and prints one JSON object.

    torchrun --standalone --nproc_per_node=1 benchmarks/gpu/ddp_check.py --out ddp.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from videogn.models import create_model


def learnable_batches(device, batch=8, classes=4, shape=(3, 8, 32, 32)):
    """Two fixed batches: a class template under noise (learned in tens of steps)."""
    g = torch.Generator().manual_seed(dist.get_rank())
    templates = torch.randn(classes, *shape, generator=g)
    labels = torch.arange(2 * batch) % classes
    clips = 0.5 * templates[labels] + torch.randn(2 * batch, *shape, generator=g)
    pairs = zip(clips.split(batch), labels.split(batch), strict=True)
    return [(c.to(device), y.to(device)) for c, y in pairs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else None
    device = device or torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", **({"device_id": device} if cuda else {}))
    torch.manual_seed(0)
    model = create_model(
        "i3d_r50",
        norm="sync_bn" if cuda else "bn",  # SyncBatchNorm runs on GPUs only
        num_classes=4,
        base_width=8,
        stage_depths=(1, 1, 1, 1),
        dropout=0.0,
    ).to(device)
    net = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9)
    batches, losses = learnable_batches(device), []
    start = time.perf_counter()
    for i in range(args.iterations):
        clips, labels = batches[i % 2]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(net(clips), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    ones = torch.ones(1, device=device)
    dist.all_reduce(ones)
    result = {
        "name": "ddp",
        "backend": dist.get_backend(),
        "world_size": dist.get_world_size(),
        "device": str(device),
        "iterations": args.iterations,
        "loss_first": sum(losses[:5]) / 5,
        "loss_last": sum(losses[-5:]) / 5,
        "steps_per_s": args.iterations / seconds,
        "all_reduce_ok": ones.item() == dist.get_world_size(),
    }
    result["ok"] = bool(
        result["all_reduce_ok"]
        and all(math.isfinite(x) for x in losses)
        and result["loss_last"] < result["loss_first"]
    )
    dist.barrier()
    dist.destroy_process_group()
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps(result, indent=2))
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
