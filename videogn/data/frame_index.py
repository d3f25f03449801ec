"""Where each frame of a video stream is: packets in decode order -> frames in display order.

The PyAV backend builds one `FrameIndex` per opened video from its demuxed packets, then
decodes any frame by feeding packets from the keyframe before it, with no seek.
"""

from __future__ import annotations

from dataclasses import dataclass

# Formats whose timestamps do not give presentation order (packed B-frames in AVI).
UNRELIABLE_PTS_FORMATS = frozenset({"avi"})


@dataclass
class FrameIndex:
    """Map between packets (decode order) and frames (presentation order)."""

    num_frames: int
    packet_frame: list[int] | None  # frame index of each packet, -1 when it shows no frame
    pts_to_frame: dict | None  # None: timestamps unusable, count decoder output instead
    keyframe_starts: list[tuple[int, int]]  # (frame index, packet position), ascending

    @classmethod
    def sequential(cls, num_frames: int) -> FrameIndex:
        """An index without timestamps: frame i is the decoder's i-th output from the start."""
        return cls(num_frames, None, None, [])

    @property
    def by_timestamp(self) -> bool:
        return self.pts_to_frame is not None

    def start_packet(self, first_frame: int) -> int:
        """Packet position of the last keyframe at or before `first_frame` (0 if none)."""
        start = 0
        for frame, position in self.keyframe_starts:
            if frame > first_frame:
                break
            start = position
        return start


def build_frame_index(packets: list, format_name: str) -> FrameIndex:
    """Index a stream's packets (PyAV `Packet`s with size > 0, in demux order)."""
    shown = [p for p in packets if not p.is_discard]
    pts = [p.pts for p in shown]
    usable = (
        format_name not in UNRELIABLE_PTS_FORMATS
        and all(t is not None for t in pts)
        and len(set(pts)) == len(pts)
    )
    if not usable:
        return FrameIndex.sequential(len(shown))
    frame_of_pts = {t: i for i, t in enumerate(sorted(pts))}
    # Discarded packets (outside an edit list) are decoded as references but never shown.
    pts_to_frame = {p.pts: -1 for p in packets if p.is_discard and p.pts is not None}
    pts_to_frame.update(frame_of_pts)
    packet_frame = [-1 if p.is_discard else frame_of_pts[p.pts] for p in packets]
    keyframe_starts = [
        (packet_frame[i], i)
        for i, p in enumerate(packets)
        if p.is_keyframe and packet_frame[i] >= 0
    ]
    keyframe_starts.sort()
    return FrameIndex(len(shown), packet_frame, pts_to_frame, keyframe_starts)
