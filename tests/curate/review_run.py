"""A small finished curation run for the review and split tests, written with curate's own writers.

Each kept segment is a real shard sample (h264+aac mp4, flac, json) of a synthetic bouncing disc whose
colour encodes the segment, so a test can tell which segment's media it got; `segments.parquet` comes from
`curate.finalize`'s writer, so its schema is the pipeline's.
"""

from __future__ import annotations

import json
from pathlib import Path

from curate import synthetic as syn
from curate.finalize import _write_segments_table
from curate.media import DecodedVideo
from curate.records import Segment, Window
from curate.shards import encode_sample, write_tar_atomic


def tiny_clip(seconds: float, seed: int, fps: float = 8.0) -> DecodedVideo:
    v, _ = syn.bouncing_video(seconds, size=(48, 64), fps=fps, seed=seed)
    return v


def make_run(out: Path, videos: dict[str, dict[str, int]], dropped: int = 1, samples_per_shard: int = 16,
             seconds: float = 2.0, stats: dict | None = None) -> list[Segment]:
    """`videos = {label: {video_id: number_of_segments}}`; plus `dropped` non-kept segments per label.

    Segment k of a video spans [4k, 4k + seconds]. Returns the kept segments (shard order)."""
    out.mkdir(parents=True, exist_ok=True)
    segments: list[Segment] = []
    seed = 0
    for label, vids in videos.items():
        for vid, n in vids.items():
            for k in range(n + dropped):
                start = 4.0 * k
                w = Window(vid, f"/data/{vid}.mp4", 0, start, start + 3.0, label,
                           {"pixel_diff": 0.05 + 0.001 * k, "amplitude": 0.5})
                seg = Segment(vid, f"/data/{vid}.mp4", 0, start, start + seconds, label, "train", [w])
                if k >= n:
                    seg.kept, seg.drop_reason = False, "class_below_min_segments"
                segments.append(seg)
    _write_segments_table(out / "segments.parquet", segments)
    kept = [s for s in segments if s.kept]
    members: list[tuple[str, bytes]] = []
    shard = 0
    for i, s in enumerate(kept):
        meta = {"segment_id": s.segment_id, "video_id": s.video_id, "source": s.path, "start": s.start, "end": s.end,
                "duration": s.end - s.start, "label": s.label, "split": s.split, "scores": s.mean_scores()}
        members.extend(encode_sample(s.segment_id, tiny_clip(seconds, seed=i), meta, crf=30, preset="ultrafast"))
        if (i + 1) % samples_per_shard == 0:
            write_tar_atomic(out / "shards" / f"train-{shard:06d}.tar", members)
            members, shard = [], shard + 1
    if members:
        write_tar_atomic(out / "shards" / f"train-{shard:06d}.tar", members)
    (out / "stats.json").write_text(json.dumps(stats or {"random_weight_columns": []}))
    return kept

