"""Named pretrained sources: the name -> address -> torch hub cache path, the download with its
checksum (resumed when cut, refused when wrong), the error when offline. A local HTTP server
stands in for the hosts (``VIDEOGN_PRETRAINED_MIRROR``); no test reaches the internet."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import videogn
from videogn.models.pretrained_sources import (
    MIRROR_ENV,
    NamedSource,
    PretrainedSourceError,
    ensure_local,
    is_named,
    is_scratch,
    lookup,
    resolve_pretrained,
)
from videogn.sweep.mini.pretrain2d import ResNet2d

GN_PATH = "/detectron/ImageNetPretrained/47261647/R-50-GN.pkl"


@pytest.fixture
def hub(tmp_path, monkeypatch, local_http):
    """TORCH_HOME in tmp, every address on the local server."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(MIRROR_ENV, local_http.url)
    return tmp_path / "torch" / "hub" / "checkpoints"


def serve_with_md5(server, path: str, data: bytes, md5: str | None = None) -> None:
    server.files[path] = data
    digest = md5 or hashlib.md5(data).hexdigest()
    server.files[path + ".md5sum"] = f"{digest}  {Path(path).name}\n".encode()


def test_names_resolve_to_addresses_and_cache_paths_under_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    tv = lookup("torchvision:resnet50")  # torchvision's weights API, the V1 file by default
    assert tv.url == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert tv.cache_path == tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    assert tv.sha256_prefix == "0676ba61" and tv.load_options == {}
    assert lookup("torchvision:resnet50.IMAGENET1K_V2").url.endswith("resnet50-11ad3fa6.pth")
    gn = lookup("detectron:R-50-GN")
    assert gn.url == "https://dl.fbaipublicfiles.com" + GN_PATH
    assert gn.md5_url == gn.url + ".md5sum" and gn.load_options == {"flip_input_channels": True}
    with pytest.raises(PretrainedSourceError, match="IMAGENET1K_V1"):
        lookup("torchvision:resnet50.V9")
    with pytest.raises(PretrainedSourceError, match="detectron:R-101-GN"):
        lookup("detectron:R-51-GN")
    assert is_named("detectron:R-50") and not is_named("/w/bn.pt") and not is_named(None)
    assert all(is_scratch(v) for v in (None, "", "none", "None", "NONE"))
    assert not is_scratch("torchvision:resnet50")


def test_download_lands_once_in_the_cache_with_its_md5_checked(hub, local_http):
    data = os.urandom(300_000)
    serve_with_md5(local_http, GN_PATH, data)
    path = Path(resolve_pretrained("detectron:R-50-GN"))
    assert path == hub / "detectron" / "R-50-GN.pkl" and path.read_bytes() == data
    asked = len(local_http.requests)
    assert resolve_pretrained("detectron:R-50-GN") == str(path)
    assert len(local_http.requests) == asked  # cached: no second request
    assert not list(path.parent.glob("*.part"))


def test_an_interrupted_transfer_continues_at_the_byte(hub, local_http):
    data = os.urandom(500_000)
    serve_with_md5(local_http, GN_PATH, data)
    local_http.cut_once[GN_PATH] = 123_456
    path = Path(resolve_pretrained("detectron:R-50-GN"))
    assert path.read_bytes() == data
    gets = [rng for p, rng in local_http.requests if p == GN_PATH]
    assert gets == [None, "bytes=123456-"]


def test_a_wrong_checksum_is_refused_naming_address_cache_path_and_the_way_by_hand(hub, local_http):
    serve_with_md5(local_http, GN_PATH, b"not the file", md5="0" * 32)
    with pytest.raises(PretrainedSourceError) as error:
        resolve_pretrained("detectron:R-50-GN")
    message = str(error.value)
    cache_path = hub / "detectron" / "R-50-GN.pkl"
    assert local_http.url + GN_PATH in message and str(cache_path) in message
    assert "fails its checksum" in message and "copy it to" in message
    assert not cache_path.exists() and not list(cache_path.parent.glob("*.part"))


def test_full_sha256_is_checked_when_known(tmp_path, local_http):
    data = os.urandom(10_000)
    local_http.files["/toy.pth"] = data
    good = NamedSource(
        "test:toy",
        local_http.url + "/toy.pth",
        tmp_path / "toy.pth",
        hashlib.sha256(data).hexdigest(),
    )
    assert ensure_local(good).read_bytes() == data
    bad = NamedSource("test:toy", good.url, tmp_path / "bad.pth", sha256="ab" * 32)
    with pytest.raises(PretrainedSourceError, match="expected abab"):
        ensure_local(bad)


def test_a_file_placed_by_hand_is_used_without_the_network(tmp_path, monkeypatch, closed_port_url):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(MIRROR_ENV, closed_port_url)
    placed = tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"placed by hand")
    assert resolve_pretrained("torchvision:resnet50") == str(placed)


def test_offline_inflate_is_a_message_naming_address_and_cache_path(tmp_path, closed_port_url):
    env = {**os.environ, "TORCH_HOME": str(tmp_path), MIRROR_ENV: closed_port_url}
    done = subprocess.run(
        [sys.executable, "-m", "videogn.cli.inflate", "detectron:R-50-GN", str(tmp_path / "o.pt")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert closed_port_url + GN_PATH in done.stderr and "cannot connect" in done.stderr
    assert str(tmp_path / "hub" / "checkpoints" / "detectron" / "R-50-GN.pkl") in done.stderr


def test_model_from_a_named_detectron_source_is_inflated_with_conv1_flipped(hub, local_http):
    # A toy 2D net in torchvision's layout stands in for R-50-GN.pkl (the name, download,
    # checksum and load options are what is tested; Detectron pickles: test_inflate.py).
    torch.manual_seed(0)
    net = ResNet2d(
        width=8, depths=(1, 1, 1, 1), norm_layer=lambda c: torch.nn.GroupNorm(4, c), num_classes=5
    )
    file = hub.parent / "toy.pth"
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), file)
    serve_with_md5(local_http, GN_PATH, file.read_bytes())
    model = videogn.create_model(
        norm="gn",
        norm_kwargs={"num_groups": 4},
        num_classes=5,
        base_width=8,
        stage_depths=(1, 1, 1, 1),
        pretrained="detectron:R-50-GN",
    )
    kernel_3d = model.stem.conv.weight.detach()
    flipped_2d = net.conv1.weight.detach().flip(1)  # BGR-trained conv1 made to see RGB
    expected = flipped_2d.unsqueeze(2) / kernel_3d.shape[2]  # mean inflation
    assert torch.allclose(kernel_3d, expected.expand_as(kernel_3d))
