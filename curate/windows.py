"""Fixed-length windows inside scenes, and merging of kept windows into segments."""

from __future__ import annotations

from dataclasses import dataclass

from curate.records import Segment, VideoInput, Window


@dataclass
class WindowConfig:
    length: float = 3.0
    stride: float = 0.5
    merge_touching: bool = False
    """Kept windows are merged into segments when they overlap. True also merges windows that only touch
    (0-3 s and 3-6 s), even when every window between them was rejected (the span then holds content
    those windows were rejected for)."""


def make_windows(inp: VideoInput, scenes: list[tuple[float, float]], cfg: WindowConfig = WindowConfig()) -> list[Window]:
    """Every `length`-second window at `stride` that lies entirely inside one scene."""
    out: list[Window] = []
    eps = 1e-6
    for si, (s, e) in enumerate(scenes):
        k = 0
        while True:
            start = round(s + k * cfg.stride, 6)
            end = round(start + cfg.length, 6)
            if end > e + eps:
                break
            out.append(Window(inp.video_id, inp.path, si, start, end, inp.label))
            k += 1
    return out


def merge_windows(windows: list[Window], split: str, touching: bool = False) -> list[Segment]:
    """Merge kept windows that overlap (with `touching`, also those that only touch) of the same video and
    scene into segments."""
    segs: list[Segment] = []
    cur: Segment | None = None
    eps = 1e-6
    for w in sorted((w for w in windows if w.kept), key=lambda w: (w.scene, w.start)):
        if cur is not None and w.scene == cur.scene and (w.start <= cur.end + eps if touching else w.start < cur.end - eps):
            cur.end = max(cur.end, w.end)
            cur.windows.append(w)
            continue
        cur = Segment(w.video_id, w.path, w.scene, w.start, w.end, w.label, split, [w])
        segs.append(cur)
    return segs
