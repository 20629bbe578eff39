"""The per-video work: decode once -> scenes -> windows -> stages -> decisions -> staged segment media.

Each video's results are written to the work folder atomically, with its status file last (the completion
marker), so an interrupted run resumes by skipping videos whose status file exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from media import storage
from curate.config import CurateConfig
from media.decode import DecodedVideo, MediaError, decode_video
from curate.records import ScoreFlags, Segment, VideoInput, Window
from curate.scenes import detect_scenes
from curate.stage import Stage, StageTimer
from curate.windows import make_windows, merge_windows


@dataclass
class VideoItem:
    """A video between stages: its decoded media (None when not processable) and its windows."""

    inp: VideoInput
    video: DecodedVideo | None = None
    windows: list[Window] = field(default_factory=list)
    status: str = "ok"
    """ok | dropped | failed"""
    reason: str | None = None
    error: str | None = None
    timers: dict[str, StageTimer] = field(default_factory=dict)
    attempts: int = 1
    """How many times this video was started (a crashed worker, actor or node starts it again)."""
    retryable: bool = False
    """Failed for a transient reason (a crash, a lost node): a resumed run tries it again."""
    num_scenes: int = 0
    source: dict | None = None
    duration: float | None = None

    def release_media(self) -> None:
        """Drop the frames (kept: source facts and duration) once nothing downstream needs them."""
        if self.video is not None:
            self.source, self.duration = source_facts(self.video), self.video.duration
            self.video = None

    @property
    def active(self) -> bool:
        return self.status == "ok" and self.video is not None and bool(self.windows)


# ------------------------------------------------------------------------------------------ work dir


class WorkDir:
    """Layout of per-video results under `<out>/work/` (a local folder or an object-storage URI)."""

    def __init__(self, out: str | Path):
        self.out = str(out)
        self.root = storage.join(out, "work")
        self.videos = storage.join(self.root, "videos")

    def _base(self, video_id: str) -> str:
        h = hashlib.sha1(video_id.encode()).hexdigest()[:2]
        return storage.join(self.videos, h, video_id)

    def status_path(self, video_id: str) -> str:
        return self._base(video_id) + ".status.json"

    def windows_path(self, video_id: str) -> str:
        return self._base(video_id) + ".windows.json"

    def staged_path(self, video_id: str) -> str:
        return self._base(video_id) + ".segments.tar"

    def is_done(self, video_id: str) -> bool:
        return storage.is_file(self.status_path(video_id))

    def iter_status_files(self) -> list[str]:
        return [p for p in storage.find_files(self.videos, ".status.json") if not _is_tmp(p)]

    def read_statuses(self) -> dict[str, dict]:
        """{video_id: status} of every finished video (one listing, then the files read concurrently)."""
        out = {}
        for data in storage.read_many(self.iter_status_files()).values():
            st = json.loads(data)
            out[st["video_id"]] = st
        return out

    def remove_leftovers(self) -> None:
        """Temporary files of a killed run (local folders only; object stores have no partial objects)."""
        if not storage.is_uri(self.videos):
            for tmp in Path(self.videos).glob("*/.*.tmp*"):
                tmp.unlink(missing_ok=True)


def _is_tmp(path: str) -> bool:
    return path.rsplit("/", 1)[-1].startswith(".")


def write_atomic(path: str | Path, data: bytes) -> None:
    storage.write_bytes(path, data)


# ---------------------------------------------------------------------------------------- the stages


def source_facts(video: DecodedVideo) -> dict:
    """The decoder's facts about the source, without the input path (recorded in its own columns)."""
    return {k: v for k, v in video.source.items() if k != "path"}


def decode_and_window(inp: VideoInput, cfg: CurateConfig) -> VideoItem:
    """Decode the video once, cut scenes, make windows. Errors become a failed/dropped item."""
    item = VideoItem(inp)
    t0 = time.perf_counter()
    try:
        video = decode_video(inp.path, cfg.decode)
    except MediaError as e:
        item.status, item.error = "failed", str(e)
        return item
    except (ConnectionError, TimeoutError) as e:  # storage unreachable: transient, the runner starts it again
        item.status, item.error, item.retryable = "failed", f"cannot read the input: {type(e).__name__}: {e}", True
        return item
    except Exception as e:  # an unexpected decoder crash is still a per-file failure
        item.status, item.error = "failed", f"{type(e).__name__}: {e}"
        return item
    item.timers["decode"] = StageTimer(time.perf_counter() - t0, 0, 1)
    video.source.setdefault("path", str(inp.path))  # stages that re-read the file (psync under preprocess=asva)
    item.video = video
    if video.audio is None:
        item.status, item.reason = "dropped", "no audio track"
        item.release_media()
        return item
    if video.duration + 1e-6 < cfg.windows.length:
        item.status, item.reason = "dropped", f"shorter than one window ({video.duration:.2f} s < {cfg.windows.length} s)"
        item.release_media()
        return item
    t0 = time.perf_counter()
    scenes = detect_scenes(video, cfg.scenes)
    item.timers["scenes"] = StageTimer(time.perf_counter() - t0, 0, 1)
    item.num_scenes = len(scenes)
    item.windows = make_windows(inp, scenes, cfg.windows)
    if not item.windows:
        item.status, item.reason = "dropped", f"no scene of at least {cfg.windows.length} s ({len(scenes)} scenes)"
        item.release_media()
    return item


def windows_to_score(item: VideoItem, cascade: bool) -> list[Window]:
    if not item.active:
        return []
    return [w for w in item.windows if w.drop_reason is None] if cascade else list(item.windows)


def run_stage_on_items(stage: Stage, items: Sequence[VideoItem], cascade: bool) -> None:
    """Run one stage over several videos (batched across them), then update decisions if cascading."""
    work = [(it, windows_to_score(it, cascade)) for it in items]
    work = [(it, ws) for it, ws in work if ws]
    timer = StageTimer()
    if work:
        try:
            stage.run([(it.video, ws) for it, ws in work], timer)
        except Exception as e:
            # one bad batch must not kill the run: fall back to video by video, failing only the culprit
            if len(work) == 1:
                it = work[0][0]
                it.status, it.error = "failed", f"stage {stage.name}: {type(e).__name__}: {e}"
                it.release_media()
                return
            for it, ws in work:
                run_stage_on_items(stage, [it], cascade)
            return
    for k, (it, ws) in enumerate(work):  # the batch's time, shared out by window count
        t = it.timers.setdefault(stage.name, StageTimer())
        t.oom_halvings += timer.oom_halvings if k == 0 else 0
        t.seconds += timer.seconds * len(ws) / max(timer.windows, 1)
        t.windows += len(ws)
        t.videos += 1
        if cascade:
            apply_decisions(it.windows, [stage], first_only=True)


def run_stages(items: list[VideoItem], stages: Sequence[Stage], cascade: bool) -> list[VideoItem]:
    """Run stages in order over videos, one video per call (weight-free stages; the local runner)."""
    for s in stages:
        for it in items:
            run_stage_on_items(s, [it], cascade)
    return items


def apply_decisions(windows: Sequence[Window], stages: Sequence[Stage], first_only: bool = False) -> None:
    """Set each window's drop reasons from its stored scores, stages in pipeline order.

    With `first_only` (cascade), only windows still kept are updated and the reasons are appended.
    """
    for w in windows:
        if first_only and w.drop_reason is not None:
            continue
        if not first_only:
            w.drop_reason, w.drop_reasons = None, []
        for st in stages:
            if not all(c in w.scores for c in st.columns):
                continue  # not scored by this stage (stage not run, or skipped in cascade)
            reason = st.decide(w.scores)
            if reason is not None:
                w.drop_reasons.append(reason)
                if w.drop_reason is None:
                    w.drop_reason = reason


def split_of(inp: VideoInput, test_fraction: float) -> str:
    from curate.records import stable_fraction

    if inp.split:
        s = inp.split.strip().lower()
        return {"val": "test", "valid": "test", "validation": "test", "eval": "test"}.get(s, s)
    return "test" if stable_fraction(inp.video_id) < test_fraction else "train"


def segment_meta(seg: Segment, video: DecodedVideo | None, flags: ScoreFlags | None = None) -> dict:
    flags = flags or ScoreFlags()
    meta = {
        "segment_id": seg.segment_id,
        "video_id": seg.video_id,
        "source": seg.path,
        "scene": seg.scene,
        "start": round(seg.start, 6),
        "end": round(seg.end, 6),
        "duration": round(seg.end - seg.start, 6),
        "label": seg.label,
        "split": seg.split,
        "scores": seg.mean_scores(),
        "windows": [[w.start, w.end] for w in seg.windows],
        "random_weights": sorted(flags.random),
        "not_curation_grade": sorted(flags.not_curation_grade),
        "models": flags.models,
    }
    if video is not None:
        meta["source_info"] = source_facts(video)
    return meta


def encode_segment_members(seg: Segment, video: DecodedVideo, cfg: CurateConfig,
                           flags: ScoreFlags | None = None) -> list[tuple[str, bytes]]:
    from media.shards import encode_sample

    return encode_sample(seg.segment_id, video.clip(seg.start, seg.end), segment_meta(seg, video, flags),
                         crf=cfg.shards.crf, preset=cfg.shards.preset)


def finish_video(item: VideoItem, cfg: CurateConfig, stages: Sequence[Stage], work: WorkDir) -> dict:
    """Decide, merge, stage segment media, and write this video's results (status file last)."""
    from media.shards import tar_bytes

    inp = item.inp
    flags = ScoreFlags.of(stages)
    n_staged = 0
    if item.status == "ok":
        try:
            apply_decisions(item.windows, stages)
            split = split_of(inp, cfg.shards.test_fraction)
            segs = [] if cfg.score_only else merge_windows(item.windows, split, cfg.windows.merge_touching)
            members: list[tuple[str, bytes]] = []
            t0 = time.perf_counter()
            for seg in segs:
                members.extend(encode_segment_members(seg, item.video, cfg, flags))
            item.timers["encode"] = StageTimer(time.perf_counter() - t0, 0, 1)
            if segs:
                storage.write_bytes(work.staged_path(inp.video_id), tar_bytes(members))
            n_staged = len(segs)
        except Exception as e:
            item.status, item.error = "failed", f"finishing: {type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
    rows = [
        {
            "video_id": w.video_id,
            "path": w.path,
            "scene": w.scene,
            "start": w.start,
            "end": w.end,
            "label": w.label,
            "scores": w.scores,
        }
        for w in (item.windows if item.status == "ok" else [])
    ]
    write_atomic(work.windows_path(inp.video_id), json.dumps(rows).encode())
    item.release_media()
    status = {
        "video_id": inp.video_id,
        "path": inp.path,
        "label": inp.label,
        "split": split_of(inp, cfg.shards.test_fraction),
        "status": item.status,
        "reason": item.reason,
        "error": item.error,
        "duration": None if item.duration is None else round(item.duration, 4),
        "num_scenes": item.num_scenes,
        "num_windows": len(rows),
        "num_staged_segments": n_staged,
        "random_weights": flags.random,
        "not_curation_grade": flags.not_curation_grade,
        "models": flags.models,
        "source": item.source,
        "timers": {k: [t.seconds, t.windows] for k, t in item.timers.items()},
        "attempts": item.attempts,
        "retryable": bool(item.retryable and item.status == "failed"),
        "oom_halvings": sum(t.oom_halvings for t in item.timers.values()),
    }
    write_atomic(work.status_path(inp.video_id), json.dumps(status).encode())
    return {"video_id": inp.video_id, "status": item.status, "retryable": status["retryable"], "windows": len(rows),
            "kept": sum(1 for w in item.windows if w.kept) if item.status == "ok" else 0,
            "attempts": item.attempts, "timers": status["timers"]}


def record_input_only(inp: VideoInput, reason: str, cfg: CurateConfig, work: WorkDir) -> None:
    """An input dropped before decoding (e.g. class allow-list) still gets its status file."""
    item = VideoItem(inp, status="dropped", reason=reason)
    finish_video(item, cfg, [], work)
