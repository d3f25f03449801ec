"""Decoders: frame semantics, PyAV/decord agreement, odd and broken files."""

from __future__ import annotations

import hashlib
import pickle

import av
import numpy as np
import pytest

from videogn.data.decoders import VideoDecodeError, decode, open_video, probe
from videogn.data.decord_backend import DecordReader
from videogn.data.pyav_backend import PyAVReader

BACKENDS = ("pyav", "decord")
READABLE = (
    "normal.mp4",
    "vfr.mp4",
    "no_duration.mkv",
    "raw.h264",
    "two_streams.mp4",
    "rot90.mp4",
    "rot180.mp4",
    "rot270.mp4",
    "bframes.avi",
    "open_gop.mp4",
    "hevc.mkv",
    "stream.ts",
    "short.mp4",
)
UNREADABLE = (
    "truncated.mp4",
    "truncated_moov_at_end.mp4",
    "zero_bytes.mp4",
    "text.mp4",
    "audio_only.mp4",
)
# Real clips from ../shared/videos/MANIFEST.md: frames decoded by PyAV, displayed size (H, W).
REAL_CLIPS = {
    "mmaction2_demo.mp4": (280, (256, 340)),
    "decord_flipping_a_pancake.mkv": (310, (240, 426)),
    "mmaction2_test.avi": (164, (240, 320)),
    "moviepy_big_buck_bunny_432_433.webm": (24, (720, 1280)),
    "decord_video_90.mov": (3, (568, 320)),
    "mmaction2_demo_skeleton.mp4": (72, (1080, 1920)),
}


def frame_digest(frame: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(frame).tobytes()).hexdigest()


def reference_digests(path) -> list[str]:
    """Digest of every frame, decoded front to back by plain PyAV and rotated for display."""
    digests = []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.best("video")):
            rgb = frame.to_ndarray(format="rgb24")
            digests.append(frame_digest(np.rot90(rgb, k=round((frame.rotation or 0) / 90) % 4)))
    return digests


def seek_patterns(num_frames: int, seed: int = 0) -> list[np.ndarray]:
    """Index sets a data loader asks for: strided clips, random sets, the ends, repeats."""
    rng = np.random.default_rng(seed)
    sets = [np.array([num_frames - 1]), np.arange(min(num_frames, 8))[::-1]]
    for _ in range(3):
        start = int(rng.integers(0, num_frames))
        sets.append(np.minimum(start + 2 * np.arange(16), num_frames - 1))
        sets.append(rng.integers(0, num_frames, size=6))
    return sets


# -- real clips ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow) if name.endswith("skeleton.mp4") else name
        for name in sorted(REAL_CLIPS)
    ],
)
def test_real_clip_frames_match_reference_in_both_backends(shared_videos, name):
    num_frames, (height, width) = REAL_CLIPS[name]
    path = shared_videos / name
    reference = reference_digests(path)
    assert len(reference) == num_frames
    # Every frame, except every third one (and the last) on the 1080p clip to bound memory.
    step = 3 if height * width > 1_000_000 else 1
    indices = np.unique(np.append(np.arange(0, num_frames, step), num_frames - 1))
    for backend in BACKENDS:
        with open_video(path, backend=backend) as video:
            assert video.num_frames == num_frames
            frames = video.decode(indices)
            assert frames.shape == (len(indices), height, width, 3) and frames.dtype == np.uint8
            digests = [frame_digest(f) for f in frames]
            assert digests == [reference[i] for i in indices], (backend, name)


@pytest.mark.parametrize("name", ["mmaction2_demo.mp4", "decord_flipping_a_pancake.mkv"])
def test_seeking_clip_patterns_match_reference_in_both_backends(shared_videos, name):
    path = shared_videos / name
    reference = reference_digests(path)
    for backend in BACKENDS:
        with open_video(path, backend=backend) as video:
            for indices in seek_patterns(video.num_frames):
                digests = [frame_digest(f) for f in video.decode(indices)]
                assert digests == [reference[i] for i in indices], (backend, indices)


def test_skipping_non_reference_frames_keeps_pixels(shared_videos):
    path = shared_videos / "mmaction2_demo.mp4"
    indices = np.arange(100, 164, 2)
    with PyAVReader(path, skip_nonref=True) as fast, PyAVReader(path, skip_nonref=False) as plain:
        assert np.array_equal(fast.decode(indices), plain.decode(indices))


def test_probe_real_clip_reports_manifest_facts(shared_videos):
    info = probe(shared_videos / "mmaction2_demo.mp4")
    assert (info.num_frames, info.width, info.height) == (280, 340, 256)
    assert info.fps == pytest.approx(28.0)
    assert info.keyframes == (0, 187, 230, 268)
    assert info.codec == "h264" and info.rotation == 0


def test_rotated_real_clip_is_returned_as_displayed(shared_videos):
    path = shared_videos / "decord_video_90.mov"
    with av.open(str(path)) as container:
        stored = next(container.decode(video=0)).to_ndarray(format="rgb24")
    for backend in BACKENDS:
        info = probe(path, backend=backend)
        assert (info.width, info.height, info.rotation) == (320, 568, 270)
        assert np.array_equal(decode(path, [0], backend=backend)[0], np.rot90(stored, k=-1))


def test_mkv_without_frame_count_decodes_with_decord_itself(shared_videos):
    with DecordReader(shared_videos / "decord_flipping_a_pancake.mkv") as video:
        assert not video.uses_pyav
        assert video.num_frames == 310


def test_corrupted_real_clip_same_answer_in_both_backends(shared_videos):
    path = shared_videos / "decord_corrupted.mp4"
    early = np.arange(0, 12)
    assert np.array_equal(decode(path, early, "pyav"), decode(path, early, "decord"))
    for backend in BACKENDS:
        with pytest.raises(VideoDecodeError) as caught:
            decode(path, [45], backend=backend)
        assert caught.value.path == str(path)
        assert "damaged" in caught.value.reason


# -- generated odd files --------------------------------------------------------------------


@pytest.mark.parametrize("name", READABLE)
def test_odd_file_frames_are_the_requested_ones_in_both_backends(odd_videos, frame_number, name):
    path = odd_videos[name]
    results = {}
    for backend in BACKENDS:
        with open_video(path, backend=backend) as video:
            indices = np.concatenate([np.arange(video.num_frames)[::3], [video.num_frames - 1, 2]])
            results[backend] = (video.num_frames, video.decode(indices), indices)
    (n_a, frames_a, indices), (n_b, frames_b, _) = results["pyav"], results["decord"]
    assert n_a == n_b == (5 if name == "short.mp4" else 40)
    assert np.array_equal(frames_a, frames_b)
    rotation = probe(path).rotation
    for frame, i in zip(frames_a, indices, strict=True):
        upright = np.rot90(frame, k=-(rotation // 90))
        assert frame_number(upright) == i, (name, int(i))


@pytest.mark.parametrize("degrees", (90, 180, 270))
def test_rotation_metadata_is_applied(odd_videos, degrees):
    info = probe(odd_videos[f"rot{degrees}.mp4"])
    assert info.rotation == degrees
    expected = (96, 64) if degrees in (90, 270) else (64, 96)
    assert (info.height, info.width) == expected


def test_several_video_streams_pick_the_same_stream(odd_videos, frame_number):
    path = odd_videos["two_streams.mp4"]
    with av.open(str(path)) as container:
        best = container.streams.best("video")
        assert len(container.streams.video) == 2
        best_index, best_size = best.index, (best.height, best.width)
    info = probe(path, backend="decord")
    assert info.stream_index == best_index and info.num_video_streams == 2
    frames = decode(path, [7], backend="decord")
    assert frames.shape[1:3] == best_size
    assert frame_number(frames[0]) == 7


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", UNREADABLE)
def test_unreadable_files_raise_one_clear_error(odd_videos, backend, name):
    path = odd_videos[name]
    with pytest.raises(VideoDecodeError) as caught:
        decode(path, [0, 1], backend=backend)
    assert caught.value.path == str(path)
    assert str(path) in str(caught.value) and caught.value.reason


def test_error_reasons_say_what_is_wrong(odd_videos):
    reasons = {}
    for name in UNREADABLE:
        with pytest.raises(VideoDecodeError) as caught:
            decode(odd_videos[name], [0])
        reasons[name] = caught.value.reason
    assert "empty" in reasons["zero_bytes.mp4"]
    assert "no video stream" in reasons["audio_only.mp4"] and "audio" in reasons["audio_only.mp4"]
    assert "truncated" in reasons["truncated.mp4"]
    assert "cannot open" in reasons["text.mp4"]


def test_missing_file_raises_decode_error(tmp_path):
    with pytest.raises(VideoDecodeError, match="does not exist"):
        decode(tmp_path / "nope.mp4", [0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_past_the_end_is_a_decode_error_and_negative_a_bug(odd_videos, backend):
    path = odd_videos["short.mp4"]
    with pytest.raises(VideoDecodeError, match="frame 5 requested but the video has 5 frames"):
        decode(path, [0, 5], backend=backend)
    with pytest.raises(ValueError, match=">= 0"):
        decode(path, [-1], backend=backend)
    with pytest.raises(ValueError, match="integers"):
        decode(path, [0.5], backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unsorted_and_repeated_indices_come_back_in_the_order_asked(
    odd_videos, frame_number, backend
):
    indices = [30, 2, 2, 39, 0, 30]
    frames = decode(odd_videos["normal.mp4"], indices, backend=backend)
    assert [frame_number(f) for f in frames] == indices


def test_repeated_calls_on_one_reader_and_threads_agree(odd_videos):
    path = odd_videos["normal.mp4"]
    with open_video(path, threads=1) as one, open_video(path, threads=2) as two:
        for indices in ([35, 36], [1, 2, 3], [20], [39]):
            assert np.array_equal(one.decode(indices), two.decode(indices))


def test_decode_error_survives_pickling():
    err = pickle.loads(pickle.dumps(VideoDecodeError("/x.mp4", "bad")))
    assert (err.path, err.reason, str(err)) == ("/x.mp4", "bad", "/x.mp4: bad")


def test_unknown_backend_is_rejected(odd_videos):
    with pytest.raises(ValueError, match="pyav"):
        decode(odd_videos["normal.mp4"], [0], backend="opencv")


def test_decord_decodes_plain_files_itself_and_hands_over_the_rest(odd_videos):
    uses_pyav = {}
    for name in READABLE:
        with DecordReader(odd_videos[name]) as video:
            uses_pyav[name] = video.uses_pyav
    assert not any(uses_pyav[n] for n in ("normal.mp4", "vfr.mp4", "rot90.mp4", "short.mp4"))
    handed_over = ("no_duration.mkv", "raw.h264", "two_streams.mp4", "bframes.avi", "stream.ts")
    assert all(uses_pyav[n] for n in (*handed_over, "open_gop.mp4"))


def test_decord_alone_gets_open_gop_batches_wrong(odd_videos, frame_number):
    """Why open GOPs go to PyAV: decord counts frames from a keyframe's packet position."""
    decord = pytest.importorskip("decord")
    reader = decord.VideoReader(str(odd_videos["open_gop.mp4"]), num_threads=1)
    indices = list(range(0, 40, 3))
    frames = reader.get_batch(indices).asnumpy()
    assert [frame_number(f) for f in frames] != indices
    assert [
        frame_number(f) for f in decode(odd_videos["open_gop.mp4"], indices, "decord")
    ] == indices
