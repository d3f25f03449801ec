"""The mini study's ImageNet: a 2D ResNet trained on crops of the natural photos a package ships.

Table 8's models all start from 2D ImageNet weights, inflated. The mini study does the same at
its scale: the 2D counterpart of the mini I3D (torchvision's ResNet layout and state-dict keys,
one bottleneck per stage, width 8, BN or GN with 4 groups) learns to tell **which photo and which
quadrant of it a 48x48 crop comes from** (17 photos of scikit-image's data module x 4 quadrants
= 68 classes). Crops vary in scale, position, flip, brightness, contrast and colour, so the
net has to learn textures, edges and colours rather than pixel values. Train and validation
crops come from disjoint pixels: in every quadrant the left 5/8 of the columns are for
training and the right 3/8 for validation.

The weights are written as a torchvision-style state dict (``conv1.weight``, ``layer1.0.bn1.*``,
``fc.*``), the layout ``videogn-inflate`` reads, with the validation accuracy beside them.
Everything is cached under ``<cache>/pretrain2d_<hash of the parameters>/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck
from torchvision.ops import roi_align

from videogn.data.transforms import normalization
from videogn.utils.io import atomic_save

logger = logging.getLogger(__name__)

PRETRAIN_VERSION = 1
# scikit-image's photos that ship inside its wheel (no download); grey ones are made RGB.
PHOTOS = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "moon", "page", "text",
    "brick", "grass", "gravel", "immunohistochemistry", "hubble_deep_field", "retina", "clock",
    "cell",
)  # fmt: skip
PHOTO_SIZE = 256  # every photo is resized (short side) and centre-cropped to this square
QUADRANT = PHOTO_SIZE // 2
TRAIN_COLUMNS = QUADRANT * 5 // 8  # of each quadrant; the rest is validation


@dataclass(frozen=True)
class Pretrain2dParams:
    """Everything that determines a pretrained 2D net (hashed into its cache key)."""

    norm: str = "bn"
    width: int = 8
    depths: tuple[int, ...] = (1, 1, 1, 1)
    num_groups: int = 4
    crop: int = 48
    iterations: int = 2000
    batch_size: int = 64
    lr: float = 0.1
    weight_decay: float = 5e-5
    val_crops_per_class: int = 16
    seed: int = 0

    def key(self) -> str:
        text = json.dumps({"version": PRETRAIN_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


class ResNet2d(nn.Module):
    """torchvision's ResNet (same state-dict keys) at any width and depth: the 2D counterpart
    of :class:`videogn.models.i3d.ResNet3D` built with the same ``base_width``/``stage_depths``."""

    def __init__(self, width: int, depths, norm_layer, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = width
        for stage, depth in enumerate(depths):
            planes, blocks = width * 2**stage, []
            for index in range(depth):
                stride = 2 if stage > 0 and index == 0 else 1
                shortcut = None
                if index == 0:
                    shortcut = nn.Sequential(
                        nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                        norm_layer(planes * 4),
                    )
                blocks.append(Bottleneck(inplanes, planes, stride, shortcut, norm_layer=norm_layer))
                inplanes = planes * 4
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(inplanes, num_classes)
        for block in self.modules():
            if isinstance(block, Bottleneck):  # zero-gamma: each block starts as the identity
                nn.init.zeros_(block.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in range(1, 5):
            x = getattr(self, f"layer{stage}")(x)
        return self.fc(x.mean((2, 3)))


def norm_layer_2d(norm: str, num_groups: int):
    """BN, or GN with ``min(num_groups, C)`` groups (the I3D's rule for narrow layers)."""
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "gn":
        return lambda channels: nn.GroupNorm(min(num_groups, channels), channels)
    raise ValueError(f"2D pretraining supports norm 'bn' or 'gn', got {norm!r}")


def load_photos() -> torch.Tensor:
    """The photos as float RGB in [0, 1], [len(PHOTOS), 3, PHOTO_SIZE, PHOTO_SIZE]."""
    try:
        import skimage.data
    except ImportError as e:
        raise ImportError(
            "2D pretraining reads the photos shipped with scikit-image: "
            "pip install -e '.[mini]' (or pip install scikit-image)"
        ) from e
    photos = []
    for name in PHOTOS:
        image = torch.from_numpy(np.asarray(getattr(skimage.data, name)(), dtype=np.float32))
        image = image[..., None].expand(-1, -1, 3) if image.dim() == 2 else image[..., :3]
        image = image.permute(2, 0, 1)[None] / 255.0
        scale = PHOTO_SIZE / min(image.shape[-2:])
        size = [max(PHOTO_SIZE, round(s * scale)) for s in image.shape[-2:]]
        image = F.interpolate(image, size=size, mode="bilinear", antialias=True)
        top, left = (size[0] - PHOTO_SIZE) // 2, (size[1] - PHOTO_SIZE) // 2
        photos.append(image[0, :, top : top + PHOTO_SIZE, left : left + PHOTO_SIZE])
    return torch.stack(photos).clamp_(0, 1)


def _region(label: torch.Tensor, split: str) -> tuple[torch.Tensor, ...]:
    """Photo index and the (top, left, height, width) box a class's crops may come from."""
    photo, quadrant = label // 4, label % 4
    top, left = (quadrant // 2) * QUADRANT, (quadrant % 2) * QUADRANT
    if split == "train":
        return photo, top, left, torch.full_like(top, TRAIN_COLUMNS)
    return photo, top, left + TRAIN_COLUMNS, torch.full_like(top, QUADRANT - TRAIN_COLUMNS)


def crop_batch(photos, labels, sizes, gen: torch.Generator, split: str, crop: int):
    """Square crops of side ``sizes`` inside each label's region, resized to ``crop``."""
    photo, top, left, width = _region(labels, split)
    sizes = torch.minimum(sizes, width.float())
    y = top + torch.rand(len(labels), generator=gen) * (QUADRANT - sizes)
    x = left + torch.rand(len(labels), generator=gen) * (width - sizes)
    boxes = torch.stack([photo.float(), x, y, x + sizes, y + sizes], 1)
    return roi_align(photos, boxes, output_size=crop, spatial_scale=1.0, aligned=True)


def jitter(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flip, brightness, contrast, colour cast and noise: what the video task's clips vary in."""
    n = len(images)
    flip = torch.rand(n, generator=gen) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    contrast = 0.5 + torch.rand(n, 1, 1, 1, generator=gen)
    gain = 0.75 + 0.5 * torch.rand(n, 3, 1, 1, generator=gen)
    shift = 0.3 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    mean = images.mean((1, 2, 3), keepdim=True)
    images = (images - mean) * contrast * gain + mean + shift
    images = images + 0.03 * torch.randn(images.shape, generator=gen)
    return images.clamp(0, 1)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """The video pipeline's default normalization (``data.normalization=torchvision``)."""
    mean, std = normalization("torchvision")
    return (images - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def validation_set(photos: torch.Tensor, params: Pretrain2dParams):
    """Fixed crops from the validation columns: native scale, no jitter."""
    gen = torch.Generator().manual_seed(10_000 + params.seed)
    labels = torch.arange(4 * len(photos)).repeat_interleave(params.val_crops_per_class)
    sizes = torch.full((len(labels),), float(params.crop))
    return normalize(crop_batch(photos, labels, sizes, gen, "val", params.crop)), labels


def evaluate(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    net.eval()
    with torch.no_grad():
        predicted = torch.cat([net(chunk).argmax(1) for chunk in images.split(256)])
    net.train()
    return 100.0 * float((predicted == labels).float().mean())


def build_net(params: Pretrain2dParams, num_classes: int) -> ResNet2d:
    norm_layer = norm_layer_2d(params.norm, params.num_groups)
    return ResNet2d(params.width, params.depths, norm_layer, num_classes)


def train_2d(params: Pretrain2dParams, photos: torch.Tensor) -> tuple[ResNet2d, dict]:
    """SGD (Nesterov, cosine lr after a short warmup) on random crops; returns net and record."""
    torch.manual_seed(params.seed)
    num_classes = 4 * len(photos)
    net = build_net(params, num_classes)
    decay = [p for p in net.parameters() if p.dim() > 1]
    rest = [p for p in net.parameters() if p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": params.weight_decay}, {"params": rest}]
    optimizer = torch.optim.SGD(groups, lr=params.lr, momentum=0.9, nesterov=True)
    warmup = max(1, params.iterations // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda i: min((i + 1) / warmup, 0.5 * (1 + np.cos(np.pi * i / params.iterations))),
    )
    gen = torch.Generator().manual_seed(params.seed)
    start, losses = time.perf_counter(), []
    for iteration in range(params.iterations):
        labels = torch.randint(num_classes, (params.batch_size,), generator=gen)
        sizes = params.crop * (0.75 + 0.75 * torch.rand(params.batch_size, generator=gen))
        images = crop_batch(photos, labels, sizes, gen, "train", params.crop)
        loss = F.cross_entropy(net(normalize(jitter(images, gen))), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if (iteration + 1) % 500 == 0:
            logger.info("2D %s: iteration %d, loss %.3f", params.norm, iteration + 1, losses[-1])
    val_images, val_labels = validation_set(photos, params)
    record = {
        "params": asdict(params),
        "num_classes": num_classes,
        "photos": list(PHOTOS),
        "val_top1": evaluate(net, val_images, val_labels),
        "val_crops": len(val_labels),
        "final_train_loss": float(np.mean(losses[-100:])),
        "train_seconds": time.perf_counter() - start,
    }
    return net, record


@dataclass(frozen=True)
class Pretrained2d:
    """A cached 2D net: ``weights`` (torchvision layout state dict) and its ``record``."""

    weights: Path
    record: dict


def ensure_pretrained_2d(cache_dir: str | Path, **params) -> Pretrained2d:
    """Train (once per parameter set) and save the 2D net; a finished copy is reused."""
    spec = Pretrain2dParams(**{k: tuple(v) if k == "depths" else v for k, v in params.items()})
    folder = Path(cache_dir).expanduser() / f"pretrain2d_{spec.key()}"
    weights, record_path = folder / f"resnet2d_{spec.norm}.pth", folder / "record.json"
    if weights.is_file() and record_path.is_file():
        return Pretrained2d(weights, json.loads(record_path.read_text(encoding="utf-8")))
    torch.set_num_threads(1)  # two of these run side by side, one per core
    net, record = train_2d(spec, load_photos())
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save(net.state_dict(), weights)
    record_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    logger.info("2D %s: val top-1 %.1f%% -> %s", spec.norm, record["val_top1"], weights)
    return Pretrained2d(weights, record)


def main(argv: list[str] | None = None) -> int:
    """``python -m videogn.sweep.mini.pretrain2d CACHE_DIR PARAMS_JSON``: one net, into the cache
    (how :mod:`videogn.sweep.mini.study` trains the BN and GN nets side by side)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("cache_dir", type=Path)
    parser.add_argument("params", type=json.loads, help='e.g. {"norm": "gn"}')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = ensure_pretrained_2d(args.cache_dir, **args.params)
    print(f"{result.weights}: val top-1 {result.record['val_top1']:.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
