"""A small finished curation run for the review and split tests, written with curate's own writers, and a
review server running in a thread.

Each kept segment is a real shard sample (h264+aac mp4, flac, json) of a synthetic bouncing disc whose
colour encodes the segment, so a test can tell which segment's media it got; `segments.parquet` comes from
`curate.finalize`'s writer, so its schema is the pipeline's.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

from curate import synthetic as syn
from curate.finalize import _write_segments_table
from media.decode import DecodedVideo
from curate.records import Segment, Window
from curate.review.server import ReviewConfig, make_server
from media.shards import encode_sample, write_tar_atomic


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


class Served:
    def __init__(self, out: Path, reviewer: str = "alice", classes: str = "", port: int = 0):
        self.server = make_server(ReviewConfig(out=str(out), reviewer=reviewer, classes=classes, port=port))
        self.app = self.server.app
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def get(self, path: str, headers: dict | None = None, method: str = "GET"):
        req = urllib.request.Request(self.base + path, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def decide(self, segment_id: str, decision):
        req = urllib.request.Request(self.base + "/api/decision", method="POST",
                                     data=json.dumps({"segment_id": segment_id, "decision": decision}).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def state(self) -> dict:
        return json.loads(self.get("/api/state")[2])

    def close(self):
        self.server.shutdown()
        self.server.server_close()
