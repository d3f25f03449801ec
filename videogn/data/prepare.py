"""Re-encode a dataset for fast clip decoding: short side 256 (or 320), a keyframe every 16 frames.

A clip decode starts at the keyframe before the clip, so on a Kinetics clip with keyframes
every few seconds a 64-frame window costs up to the whole video; with a keyframe every 16
frames it costs at most 15 frames more than the window. Smaller frames decode faster too.

Frame i of the output is frame i of the source (`videogn.data.decoders` semantics): every
frame is kept, in order, at the source's average frame rate, with rotation applied (the
output is stored as displayed, without rotation metadata). Video only, H.264 (libx264),
CRF `crf` (23, FFmpeg's default), closed GOPs of exactly `gop` frames.

Outputs are written to a temporary name in the destination folder and renamed into place, so
an existing output is complete: a second run skips it (resumable). `prepare.json` in the
output folder records the encoding settings; resuming with different settings is an error.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path, PurePath

import av
import numpy as np

from videogn.data.decoders import VideoDecodeError
from videogn.data.lists import VideoRecord
from videogn.data.pyav_backend import PyAVReader, frame_rotation
from videogn.utils.parallel import progress_map

SETTINGS_FILE = "prepare.json"
OUTPUT_SUFFIX = ".mp4"


@dataclass(frozen=True)
class PrepareSettings:
    """How videos are re-encoded (recorded in `prepare.json`)."""

    short_side: int = 256
    gop: int = 16
    crf: int = 23  # FFmpeg's libx264 default
    preset: str = "veryfast"
    codec: str = "libx264"
    upscale: bool = True  # False: videos smaller than short_side keep their size
    tune: str | None = None  # e.g. "fastdecode": no CABAC or deblocking, faster decoding

    def __post_init__(self):
        if self.short_side < 2 or self.short_side % 2:
            raise ValueError(f"short_side must be an even number >= 2, got {self.short_side}")
        if self.gop < 1:
            raise ValueError(f"gop must be >= 1, got {self.gop}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in [0, 51], got {self.crf}")


@dataclass(frozen=True)
class PrepareResult:
    """Outcome for one video: status is "prepared", "skipped" (already done) or "failed"."""

    path: str  # as written in the input list
    output: str  # relative to the output folder
    status: str
    reason: str = ""
    frames: int | None = None


def output_name(list_path: str, root: str | os.PathLike | None) -> str:
    """Relative output path for a list entry: same folders, `.mp4` suffix.

    Absolute entries under `root` keep their path below `root`; other absolute entries keep
    their whole path below the output folder.
    """
    path = PurePath(list_path)
    if path.is_absolute():
        if root is not None and Path(list_path).is_relative_to(root):
            path = Path(list_path).relative_to(root)
        else:
            path = PurePath(*path.parts[1:])
    return path.with_suffix(OUTPUT_SUFFIX).as_posix()


def scaled_size(height: int, width: int, short_side: int, upscale: bool = True) -> tuple[int, int]:
    """(height, width) with the short side at `short_side`, both even (yuv420p needs it).

    The long side is truncated to even, as the Non-local preparation does (ffmpeg
    ``scale="trunc(oh*a/2)*2:256"``, process_data/kinetics/downscale_video_joblib.py): 4:3
    gives 256x340, 16:9 256x454. Exact integer arithmetic, so no float rounding decides a pixel.
    With upscale=False a smaller frame keeps its size (rounded down to even).
    """
    if not upscale and min(height, width) <= short_side:
        return max(2, height // 2 * 2), max(2, width // 2 * 2)
    if height <= width:
        return short_side, max(2, width * short_side // (2 * height) * 2)
    return max(2, height * short_side // (2 * width) * 2), short_side


def _open_encoder(container, settings: PrepareSettings, fps: float, height: int, width: int):
    rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
    stream = container.add_stream(settings.codec, rate=rate)
    stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
    stream.codec_context.gop_size = settings.gop
    # Fixed closed GOPs (no scene-cut keyframes): every `gop`-th frame is a keyframe.
    gop = settings.gop
    options = {
        "crf": str(settings.crf),
        "preset": settings.preset,
        "threads": "1",  # the parallelism is across videos
        "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0",
    }
    if settings.tune:
        options["tune"] = settings.tune
    stream.options = options
    return stream, rate


def encode_video(source: str, destination: str, settings: PrepareSettings) -> int:
    """Re-encode one video to `destination` (written as is, not atomically); returns frames."""
    with PyAVReader(source, threads=1) as reader, av.open(destination, "w") as container:
        stream = rate = None
        count = 0
        for number, frame in reader.iter_frames():
            rotation = frame_rotation(frame)
            if rotation:
                rgb = np.rot90(frame.to_rgb().to_ndarray(), k=rotation // 90)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if stream is None:
                height, width = scaled_size(
                    frame.height, frame.width, settings.short_side, settings.upscale
                )
                stream, rate = _open_encoder(container, settings, reader.fps, height, width)
            # Scale and convert in one swscale call; bicubic as FFmpeg's scale filter.
            out = frame.reformat(
                width=stream.width, height=stream.height, format="yuv420p", interpolation="BICUBIC"
            )
            out.pts, out.time_base = number, 1 / rate
            out.pict_type = av.video.frame.PictureType.NONE  # not the source's keyframes
            for packet in stream.encode(out):
                container.mux(packet)
            count += 1
        for packet in stream.encode():
            container.mux(packet)
    return count


def prepare_video(
    path: str, source: str, output_root: str, output: str, settings: PrepareSettings
) -> PrepareResult:
    """Re-encode one video unless its output exists; never raises for a bad source file."""
    final = os.path.join(output_root, output)
    if os.path.exists(final):
        return PrepareResult(path, output, "skipped")
    folder, name = os.path.split(final)
    os.makedirs(folder or ".", exist_ok=True)
    for stale in Path(folder).glob(f".{glob.escape(name)}.*.partial{OUTPUT_SUFFIX}"):
        stale.unlink(missing_ok=True)  # left by a killed run
    partial = os.path.join(folder, f".{name}.{os.getpid()}.partial{OUTPUT_SUFFIX}")
    try:
        frames = encode_video(source, partial, settings)
        os.replace(partial, final)  # atomic: an existing output is always complete
    except VideoDecodeError as err:
        return PrepareResult(path, output, "failed", err.reason)
    except Exception as err:  # an encoder failure must not stop a 300k-video job
        return PrepareResult(path, output, "failed", f"{type(err).__name__}: {err}")
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return PrepareResult(path, output, "prepared", frames=frames)


def _prepare_task(args: tuple) -> PrepareResult:
    return prepare_video(*args)


def check_settings(output_root: str | os.PathLike, settings: PrepareSettings) -> None:
    """Record `settings` in the output folder, or check they match the recorded ones."""
    settings_path = Path(output_root) / SETTINGS_FILE
    wanted = asdict(settings)
    if settings_path.exists():
        recorded = json.loads(settings_path.read_text(encoding="utf-8"))
        if recorded != wanted:
            raise ValueError(
                f"{output_root} was prepared with {recorded}, not {wanted}: use another "
                "output folder (or delete it) to change the settings"
            )
        return
    Path(output_root).mkdir(parents=True, exist_ok=True)
    settings_path.write_text(json.dumps(wanted, indent=2) + "\n", encoding="utf-8")


def prepare_dataset(
    records: list[VideoRecord],
    output_root: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    settings: PrepareSettings = PrepareSettings(),
    workers: int = 1,
    progress: bool = True,
) -> list[PrepareResult]:
    """Re-encode every record (paths as in the list, relative to `root`); results in order."""
    output_root = os.fspath(output_root)
    check_settings(output_root, settings)
    outputs = [output_name(r.path, root) for r in records]
    seen: dict[str, str] = {}
    for record, output in zip(records, outputs, strict=True):
        if seen.setdefault(output, record.path) != record.path:
            raise ValueError(
                f"{seen[output]!r} and {record.path!r} would both be written to {output!r}"
            )
    tasks = [
        (r.path, _resolve(r.path, root), output_root, output, settings)
        for r, output in zip(records, outputs, strict=True)
    ]
    return progress_map(
        _prepare_task, tasks, workers=workers, desc="preparing videos", progress=progress
    )


def _resolve(path: str, root: str | os.PathLike | None) -> str:
    return path if root is None or os.path.isabs(path) else os.path.join(os.fspath(root), path)


def prepared_records(records: list[VideoRecord], results: list[PrepareResult]) -> list[VideoRecord]:
    """The new list: output paths (relative to the output folder) of the videos that exist."""
    return [
        VideoRecord(result.output, record.label)
        for record, result in zip(records, results, strict=True)
        if result.status != "failed"
    ]
