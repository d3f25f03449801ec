"""Named pretrained weights (``torchvision:resnet50``, ``detectron:R-50-GN``) -> a checked file.

``model.pretrained`` and ``videogn-inflate``'s input accept, besides a path:

- ``torchvision:resnet50`` / ``torchvision:resnet101``, optionally with a weights tag of
  torchvision's weights API (``torchvision:resnet50.IMAGENET1K_V2``, ``.DEFAULT``); without
  one, ``IMAGENET1K_V1``: the 90-epoch recipe, comparable with the GN paper's ImageNet models,
  where V2's long modern recipe would give BN a head start that has nothing to do with the norm;
- ``detectron:R-50-GN``, ``detectron:R-101-GN`` (the GN paper's ImageNet models, published in
  Detectron's ``projects/GN``), ``detectron:R-50``, ``detectron:R-101`` (MSRA's original
  ResNets, BN folded into an affine), addresses from Detectron's ``MODEL_ZOO.md``.

Each file is downloaded once into torch hub's cache (``$TORCH_HOME/hub/checkpoints``, the
folder torchvision itself uses), resumed at the byte if interrupted, checked, then renamed into
place; a file already there (placed by hand, or by torchvision) is used as is.

**Checksums.** Neither source publishes a full SHA-256. torchvision's file names carry the
first 8 hex digits of the file's SHA-256 (``resnet50-0676ba61.pth``), which torch hub checks
and so do we. Detectron publishes an md5 beside each file (``<url>.md5sum``, the convention of
``detectron/utils/io.py``), which we fetch and check. A source that knows a full SHA-256 (the
tests' files) is checked against it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import torch

try:
    import fcntl
except ImportError:  # Windows: no lock; concurrent ranks there each resume the same part
    fcntl = None

from videogn.utils.http_download import DownloadError, fetch_resuming, fetch_text, part_path

logger = logging.getLogger(__name__)

SCRATCH = "none"  # model.pretrained=none: train from scratch, explicitly
# Replaces scheme://host of every address (a mirror, or the tests' local server).
MIRROR_ENV = "VIDEOGN_PRETRAINED_MIRROR"
DETECTRON_BASE_URL = "https://dl.fbaipublicfiles.com/detectron"
# name -> (path under DETECTRON_BASE_URL, what it is); Detectron MODEL_ZOO.md, projects/GN.
DETECTRON_FILES: dict[str, tuple[str, str]] = {
    "R-50": ("ImageNetPretrained/MSRA/R-50.pkl", "MSRA's original ResNet-50 (affine BN)"),
    "R-101": ("ImageNetPretrained/MSRA/R-101.pkl", "MSRA's original ResNet-101 (affine BN)"),
    "R-50-GN": ("ImageNetPretrained/47261647/R-50-GN.pkl", "ResNet-50 GN, 24.0% top-1 error"),
    "R-101-GN": ("ImageNetPretrained/47592356/R-101-GN.pkl", "ResNet-101 GN, 22.6% top-1 error"),
}
TORCHVISION_ARCHS = ("resnet50", "resnet101")
TORCHVISION_DEFAULT_TAG = "IMAGENET1K_V1"


class PretrainedSourceError(ValueError):
    """A named source that is unknown, unreachable or fails its checksum."""


@dataclass(frozen=True)
class NamedSource:
    """One downloadable file and how to check it."""

    name: str  # e.g. "detectron:R-50-GN"
    url: str
    cache_path: Path
    sha256: str | None = None  # the full digest, when known
    sha256_prefix: str | None = None  # torchvision: the digits in the file name
    md5_url: str | None = None  # Detectron: the md5 the server publishes beside the file
    # load_pretrained options the file needs: Detectron trained on BGR, videogn decodes RGB.
    load_options: dict = field(default_factory=dict)


def is_scratch(value: object) -> bool:
    """True for "no pretrained weights": None, "" or "none" (any case)."""
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", SCRATCH))


def is_named(value: object) -> bool:
    """True for a ``provider:name`` this module resolves (and not an existing path)."""
    if not isinstance(value, str) or ":" not in value or Path(value).exists():
        return False
    return value.split(":", 1)[0] in ("torchvision", "detectron")


def cache_dir() -> Path:
    """torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints`` when set)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _mirrored(url: str) -> str:
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        return url
    return mirror.rstrip("/") + urlsplit(url).path


def _torchvision_source(name: str, spec: str) -> NamedSource:
    from torchvision.models import get_model_weights

    arch, _, tag = spec.partition(".")
    if arch not in TORCHVISION_ARCHS:
        raise PretrainedSourceError(
            f"unknown pretrained source '{name}'; torchvision models: "
            f"{', '.join(TORCHVISION_ARCHS)} (optionally .TAG, e.g. resnet50.IMAGENET1K_V1)"
        )
    weights_enum = get_model_weights(arch)
    tag = tag or TORCHVISION_DEFAULT_TAG
    if tag not in weights_enum.__members__:
        raise PretrainedSourceError(
            f"'{name}': no weights tag '{tag}' for {arch}; torchvision has "
            f"{', '.join(weights_enum.__members__)}"
        )
    url = weights_enum[tag].url
    file_name = urlsplit(url).path.rsplit("/", 1)[-1]
    prefix = re.search(r"-([a-f0-9]{8,})\.", file_name)
    return NamedSource(
        name=name,
        url=_mirrored(url),
        cache_path=cache_dir() / file_name,
        sha256_prefix=prefix.group(1) if prefix else None,
    )


def _detectron_source(name: str, spec: str) -> NamedSource:
    if spec not in DETECTRON_FILES:
        choices = ", ".join(f"detectron:{k} ({v[1]})" for k, v in DETECTRON_FILES.items())
        raise PretrainedSourceError(f"unknown pretrained source '{name}'; Detectron: {choices}")
    url = _mirrored(f"{DETECTRON_BASE_URL}/{DETECTRON_FILES[spec][0]}")
    return NamedSource(
        name=name,
        url=url,
        cache_path=cache_dir() / "detectron" / f"{spec}.pkl",
        md5_url=url + ".md5sum",
        load_options={"flip_input_channels": True},
    )


def lookup(name: str) -> NamedSource:
    """The :class:`NamedSource` of ``provider:name`` (no network)."""
    provider, _, spec = name.partition(":")
    if provider == "torchvision":
        return _torchvision_source(name, spec)
    if provider == "detectron":
        return _detectron_source(name, spec)
    raise PretrainedSourceError(f"unknown pretrained provider in '{name}': torchvision, detectron")


def load_options(value: object) -> dict:
    """The ``load_pretrained`` options a named source needs ({} for a path)."""
    return dict(lookup(value).load_options) if is_named(value) else {}


def resolve_pretrained(value: str | Path) -> str | Path:
    """A local path for ``value``: a path unchanged, a named source downloaded and checked."""
    if not is_named(value):
        return value
    return str(ensure_local(lookup(str(value))))


def _digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _by_hand(source: NamedSource) -> str:
    return (
        f"Download it where you can reach the address (curl -L -o {source.cache_path.name} "
        f"{source.url}) and copy it to {source.cache_path}; set {MIRROR_ENV}=http://HOST to "
        "fetch from a mirror instead"
    )


def check_file(source: NamedSource, path: Path) -> None:
    """Raise :class:`PretrainedSourceError` when ``path`` fails ``source``'s checksum."""
    expected, got = None, None
    if source.sha256:
        expected, got = source.sha256, _digest(path, "sha256")
    elif source.sha256_prefix:
        expected = source.sha256_prefix
        got = _digest(path, "sha256")[: len(expected)]
    elif source.md5_url:
        try:
            expected = fetch_text(source.md5_url).split()[0].lower()
        except (DownloadError, IndexError) as e:
            raise PretrainedSourceError(
                f"{source.name}: cannot read the published md5 {source.md5_url} ({e}). "
                + _by_hand(source)
            ) from e
        got = _digest(path, "md5")
    if expected is not None and got != expected:
        raise PretrainedSourceError(
            f"{source.name}: the file downloaded from {source.url} fails its checksum "
            f"(expected {expected}, got {got}); it was deleted. " + _by_hand(source)
        )


def ensure_local(source: NamedSource, *, timeout: float = 20.0) -> Path:
    """``source``'s file in the cache: used if there, else downloaded (resumed), checked and
    renamed into place. The error names the address, the cache path and the way by hand."""
    if source.cache_path.is_file():
        return source.cache_path
    with _download_lock(source.cache_path):  # 8 ranks of one machine: one download
        if not source.cache_path.is_file():
            _download_checked(source, timeout)
    return source.cache_path


@contextlib.contextmanager
def _download_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _download_checked(source: NamedSource, timeout: float) -> None:
    part = part_path(source.cache_path)
    logger.info("downloading %s from %s to %s", source.name, source.url, source.cache_path)
    try:
        fetch_resuming(source.url, part, timeout=timeout)
    except DownloadError as e:
        raise PretrainedSourceError(
            f"{source.name}: cannot download: {e}. It belongs in {source.cache_path}. "
            + _by_hand(source)
        ) from e
    try:
        check_file(source, part)
    except PretrainedSourceError:
        part.unlink(missing_ok=True)  # a bad file must not be resumed or used
        raise
    os.replace(part, source.cache_path)
