"""From per-video results to the run's outputs: decisions, segments, class balance, shards, manifests, stats.

Everything here is a deterministic function of the per-video results and the thresholds, which is what
makes a resumed run equal an uninterrupted one and `pipelines.refilter` equal a full run.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from media import storage
from curate.config import CurateConfig
from media.decode import DecodedVideo, decode_video
from curate.records import ScoreFlags, Segment, Window, stable_fraction
from media.shards import SHARD_PATTERN, read_tar_members, write_tar_atomic
from curate.stage import Stage, all_columns
from curate.video_task import WorkDir, apply_decisions, encode_segment_members
from curate.windows import merge_windows

BALANCE_REASON = "class_below_min_segments"
UNLABELED_RULE = "videos without a label are not a class: their segments are kept, never balanced away"


@dataclass
class RunResult:
    out: Path
    stats: dict
    shards: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        return format_summary(self.stats)


def load_video_results(work: WorkDir) -> tuple[list[dict], dict[str, list[Window]]]:
    statuses = list(work.read_statuses().values())
    windows: dict[str, list[Window]] = {}
    stored = storage.read_many([work.windows_path(st["video_id"]) for st in statuses])
    for st in statuses:
        data = stored.get(work.windows_path(st["video_id"]))
        rows = json.loads(data) if data is not None else []
        windows[st["video_id"]] = [
            Window(r["video_id"], r["path"], r["scene"], r["start"], r["end"], r["label"], dict(r["scores"])) for r in rows
        ]
    statuses.sort(key=lambda s: s["video_id"])
    return statuses, windows


def finalize(cfg: CurateConfig, stages: Sequence[Stage], run_seconds: float = 0.0, source_media_fallback: bool = True,
             faults: dict | None = None, report: bool = False) -> RunResult:
    """Build every output under `cfg.out` from the per-video results in `cfg.out/work`.

    On object storage the outputs are written to a local folder first and uploaded one finished file at a
    time (each shard as soon as it is complete), `stats.json` last."""
    if not storage.is_uri(cfg.out):
        return _finalize(cfg, stages, Path(cfg.out), run_seconds, source_media_fallback, faults, report)
    with tempfile.TemporaryDirectory(prefix="curate-finalize-") as tmp:
        result = _finalize(cfg, stages, Path(tmp), run_seconds, source_media_fallback, faults, report)
        result.out = cfg.out
        result.shards = [storage.join(cfg.out, "shards", Path(p).name) for p in result.shards]
        return result


def _finalize(cfg, stages, out: Path, run_seconds, source_media_fallback, faults, report) -> RunResult:
    remote = storage.is_uri(cfg.out)

    def publish(name: str) -> None:  # a finished local output to its place under --out
        if remote:
            storage.upload(out / name, storage.join(cfg.out, *name.split("/")))

    work = WorkDir(cfg.out)
    statuses, windows_by_video = load_video_results(work)
    stage_cols = {c for st in stages for c in st.columns}
    flags = ScoreFlags.of(stages)
    for s in statuses:  # per-video records: flags of the runs that scored them (refilter builds no model)
        flags.add(ScoreFlags(s.get("random_weights") or [], s.get("not_curation_grade") or [], s.get("models") or {}))
    flags = flags.restrict(stage_cols)
    flags.models = {k: v for k, v in flags.models.items() if k in {st.name for st in stages}}

    # decisions from stored scores (the single source of truth), then merge per video
    segments: list[Segment] = []
    all_windows: list[tuple[dict, Window]] = []
    for st in statuses:
        ws = windows_by_video.get(st["video_id"], [])
        for w in ws:  # scores of stages not in this run's chain are not considered
            w.scores = {k: v for k, v in w.scores.items() if k in stage_cols}
        apply_decisions(ws, stages)
        all_windows.extend((st, w) for w in ws)
        if st["status"] == "ok":
            segments.extend(merge_windows(ws, st["split"], cfg.windows.merge_touching))

    # class balance (AVSync-AC). Videos without a label are not a class: their segments are never balanced
    # away (a folder of unlabeled videos would otherwise form one small "None" class and lose everything).
    per_class_before = Counter(s.label for s in segments if s.label is not None)
    n_min = cfg.balance.min_segments_per_class
    dropped_classes = sorted(str(c) for c, n in per_class_before.items() if n_min and n < n_min)
    for s in segments:
        if n_min and s.label is not None and per_class_before[s.label] < n_min:
            s.kept, s.drop_reason = False, BALANCE_REASON
    kept_segments = [s for s in segments if s.kept]
    per_class_after = Counter(s.label for s in kept_segments if s.label is not None)

    shards = [] if cfg.score_only else write_shards(cfg, work, kept_segments, flags, source_media_fallback,
                                                    out / "shards", publish)
    _write_windows_table(out / "windows.parquet", all_windows, flags)
    _write_segments_table(out / "segments.parquet", segments)
    _write_inputs_table(out / "inputs.parquet", statuses, windows_by_video)
    stats = build_stats(cfg, stages, statuses, all_windows, segments, per_class_before, per_class_after,
                        dropped_classes, flags, run_seconds, shards, faults)
    (out / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True))
    if report:
        from curate.report import write_report

        write_report(out)
    for name in ("windows.parquet", "segments.parquet", "inputs.parquet", *(["report.html"] if report else []),
                 "stats.json"):
        publish(name)
    return RunResult(out, stats, shards)


# ---------------------------------------------------------------------------------------------- shards


def write_shards(cfg: CurateConfig, work: WorkDir, segments: list[Segment], flags: ScoreFlags, fallback: bool,
                 shard_dir: Path | None = None, publish=None) -> list[Path]:
    """Pack kept segments into `shards/{split}-{i:06d}.tar` in a deterministic, class-mixed order.

    Media comes from the per-video staged tars (no decoding). A segment not staged there (thresholds
    changed by `refilter`) is cut from its source video; `fallback=False` makes that an error. Shards are
    written in `shard_dir` (default `<out>/shards`); `publish("shards/<name>")` moves each finished one to
    object storage.
    """
    shard_dir = shard_dir or Path(cfg.out) / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list[Segment]] = defaultdict(list)
    for s in segments:
        by_split[s.split].append(s)
    written: list[Path] = []
    staged_cache: dict[str, dict[str, bytes]] = {}  # one video at a time: a video's segments are adjacent
    source_cache: dict[str, DecodedVideo] = {}

    def members_for(seg: Segment) -> list[tuple[str, bytes]]:
        vid = seg.video_id
        if vid not in staged_cache:
            data = storage.read_many([work.staged_path(vid)]).get(work.staged_path(vid))
            staged_cache.clear()
            staged_cache[vid] = dict(read_tar_members(io.BytesIO(data))) if data is not None else {}
        staged = staged_cache[vid]
        key = seg.segment_id
        names = [f"{key}.flac", f"{key}.json", f"{key}.mp4"]
        if all(n in staged for n in names):
            return [(n, _restamp_json(n, staged[n], seg, flags)) for n in names]
        if not fallback:
            raise RuntimeError(f"segment {key} is not staged and re-cutting from source is disabled")
        if vid not in source_cache:  # decode the source once for all of its segments that were not staged
            source_cache.clear()
            source_cache[vid] = decode_video(seg.path, cfg.decode)
        recut = encode_segment_members(seg, source_cache[vid], cfg, flags)
        return [(n, _restamp_json(n, data, seg, flags)) for n, data in recut]

    per_shard = max(1, cfg.shards.samples_per_shard)
    for split in sorted(by_split):
        # grouped by video (each staged tar is read once), shards mixed by a stable hash of the video
        segs = sorted(by_split[split], key=lambda s: (stable_fraction(s.video_id), s.video_id, s.start))
        for i in range(0, len(segs), per_shard):
            path = shard_dir / SHARD_PATTERN.format(split=split, index=i // per_shard)
            members: list[tuple[str, bytes]] = []
            for seg in segs[i : i + per_shard]:
                members.extend(members_for(seg))
            write_tar_atomic(path, members)
            if publish is not None:
                publish(f"shards/{path.name}")
            written.append(path)
    # shards of an earlier finalize that no longer exist in this plan are removed (refilter may shrink)
    keep = {p.name for p in written}
    for old in storage.listdir_files(storage.join(cfg.out, "shards"), ".tar"):
        if old.replace("\\", "/").rsplit("/", 1)[-1] not in keep:
            storage.remove(old)
    for tmp in shard_dir.glob(".*.tmp*"):
        tmp.unlink(missing_ok=True)
    return written


def _restamp_json(name: str, data: bytes, seg: Segment, flags: ScoreFlags) -> bytes:
    """The staged JSON holds the scores known at staging; the shard's JSON carries the final split, scores
    and score flags."""
    if not name.endswith(".json"):
        return data
    meta = json.loads(data)
    meta["split"] = seg.split
    meta["scores"] = seg.mean_scores()
    meta["random_weights"] = flags.random
    meta["not_curation_grade"] = flags.not_curation_grade
    meta["models"] = flags.models
    return json.dumps(meta, sort_keys=True).encode()


# ------------------------------------------------------------------------------------------- manifests


def _write_windows_table(path: Path, rows: list[tuple[dict, Window]], flags: ScoreFlags) -> None:
    cols = all_columns()
    data: dict[str, list] = {k: [] for k in ("video_id", "window_id", "path", "scene", "start", "end", "label",
                                             "split", "kept", "drop_reason", "drop_reasons")}
    for c in cols:
        data[c] = []
    data["random_weight_columns"] = []
    data["not_curation_grade_columns"] = []
    rc, nc = ",".join(flags.random), ",".join(flags.not_curation_grade)
    for st, w in rows:
        data["video_id"].append(w.video_id)
        data["window_id"].append(w.window_id)
        data["path"].append(w.path)
        data["scene"].append(w.scene)
        data["start"].append(w.start)
        data["end"].append(w.end)
        data["label"].append(w.label)
        data["split"].append(st["split"])
        data["kept"].append(w.kept)
        data["drop_reason"].append(w.drop_reason)
        data["drop_reasons"].append(",".join(w.drop_reasons) or None)
        for c in cols:
            data[c].append(w.scores.get(c))
        data["random_weight_columns"].append(rc or None)
        data["not_curation_grade_columns"].append(nc or None)
    schema = pa.schema(
        [("video_id", pa.string()), ("window_id", pa.string()), ("path", pa.string()), ("scene", pa.int32()),
         ("start", pa.float64()), ("end", pa.float64()), ("label", pa.string()), ("split", pa.string()),
         ("kept", pa.bool_()), ("drop_reason", pa.string()), ("drop_reasons", pa.string())]
        + [(c, pa.float64()) for c in cols] + [("random_weight_columns", pa.string()),
                                               ("not_curation_grade_columns", pa.string())]
    )
    _write_table(path, pa.Table.from_pydict(data, schema=schema))


def _write_segments_table(path: Path, segments: list[Segment]) -> None:
    cols = all_columns()
    data: dict[str, list] = {k: [] for k in ("segment_id", "video_id", "path", "scene", "start", "end", "duration",
                                             "label", "split", "num_windows", "kept", "drop_reason")}
    for c in cols:
        data[c] = []
    for s in sorted(segments, key=lambda s: (s.video_id, s.start)):
        data["segment_id"].append(s.segment_id)
        data["video_id"].append(s.video_id)
        data["path"].append(s.path)
        data["scene"].append(s.scene)
        data["start"].append(s.start)
        data["end"].append(s.end)
        data["duration"].append(round(s.end - s.start, 6))
        data["label"].append(s.label)
        data["split"].append(s.split)
        data["num_windows"].append(len(s.windows))
        data["kept"].append(s.kept)
        data["drop_reason"].append(s.drop_reason)
        ms = s.mean_scores()
        for c in cols:
            data[c].append(ms.get(c))
    schema = pa.schema(
        [("segment_id", pa.string()), ("video_id", pa.string()), ("path", pa.string()), ("scene", pa.int32()),
         ("start", pa.float64()), ("end", pa.float64()), ("duration", pa.float64()), ("label", pa.string()),
         ("split", pa.string()), ("num_windows", pa.int32()), ("kept", pa.bool_()), ("drop_reason", pa.string())]
        + [(c, pa.float64()) for c in cols]
    )
    _write_table(path, pa.Table.from_pydict(data, schema=schema))


def _write_inputs_table(path: Path, statuses: list[dict], windows_by_video: dict[str, list[Window]]) -> None:
    data: dict[str, list] = {k: [] for k in ("path", "video_id", "label", "split", "status", "reason", "error",
                                             "duration", "num_scenes", "num_windows", "num_kept_windows", "width",
                                             "height", "fps", "vfr", "rotation", "audio_rate", "audio_channels",
                                             "video_decode_errors", "audio_decode_errors", "attempts", "retryable")}
    for st in sorted(statuses, key=lambda s: s["path"]):
        src = st.get("source") or {}
        ws = windows_by_video.get(st["video_id"], [])
        data["path"].append(st["path"])
        data["video_id"].append(st["video_id"])
        data["label"].append(st["label"])
        data["split"].append(st["split"])
        data["status"].append(st["status"])
        reason = st["reason"]
        errors = src.get("decode_errors") or {}
        if reason is None:
            reason = decode_note(src)
        data["reason"].append(reason)
        data["error"].append(st["error"])
        data["duration"].append(st["duration"])
        data["num_scenes"].append(st.get("num_scenes", 0))
        data["num_windows"].append(len(ws))
        data["num_kept_windows"].append(sum(1 for w in ws if w.kept))
        for k in ("width", "height", "fps", "vfr", "rotation", "audio_rate", "audio_channels"):
            data[k].append(src.get(k))
        for k in ("video", "audio"):
            data[f"{k}_decode_errors"].append(errors.get(k) if src else None)
        data["attempts"].append(st.get("attempts", 1))
        data["retryable"].append(bool(st.get("retryable")))
    schema = pa.schema(
        [("path", pa.string()), ("video_id", pa.string()), ("label", pa.string()), ("split", pa.string()),
         ("status", pa.string()), ("reason", pa.string()), ("error", pa.string()), ("duration", pa.float64()),
         ("num_scenes", pa.int32()), ("num_windows", pa.int32()), ("num_kept_windows", pa.int32()),
         ("width", pa.int32()), ("height", pa.int32()), ("fps", pa.float64()), ("vfr", pa.bool_()),
         ("rotation", pa.int32()), ("audio_rate", pa.int32()), ("audio_channels", pa.int32()),
         ("video_decode_errors", pa.int32()), ("audio_decode_errors", pa.int32()), ("attempts", pa.int32()),
         ("retryable", pa.bool_())]
    )
    _write_table(path, pa.Table.from_pydict(data, schema=schema))


def decode_note(src: dict) -> str | None:
    """What decoding skipped in a video that was still used (None when it decoded cleanly)."""
    errors = src.get("decode_errors") or {}
    parts = [f"{n} {k} packet{'s' if n > 1 else ''}" for k, n in errors.items() if n]
    notes = []
    if parts:
        notes.append(f"decode errors skipped: {', '.join(parts)} ({src.get('decode_error')})")
    if src.get("truncated") or (src.get("decode_error") and "decode_errors" not in src):
        notes.append(f"input ends early, partially decoded: {src.get('decode_error')}")
    return "; ".join(notes) or None


def _write_table(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------- stats


def build_stats(cfg, stages, statuses, all_windows, segments, before, after, dropped_classes, flags: ScoreFlags,
                run_seconds, shards, faults: dict | None = None) -> dict:
    random_cols = flags.random
    windows = [w for _, w in all_windows]
    stage_stats = []
    alive = list(windows)
    timers: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for st in statuses:
        for k, (sec, n) in (st.get("timers") or {}).items():
            timers[k][0] += sec
            timers[k][1] += n
    from curate.stage import STAGE_REGISTRY

    run_names = [s.name for s in stages]
    for s in stages:
        reasons = Counter()
        nxt = []
        for w in alive:
            r = s.decide(w.scores) if all(c in w.scores for c in s.columns) else None
            if r is None:
                nxt.append(w)
            else:
                reasons[r] += 1
        sec = timers[s.name][0]
        stage_stats.append({
            "name": s.name, "columns": list(s.columns), "params": s.params(), "run": True,
            "input": len(alive), "kept": len(nxt), "dropped": dict(sorted(reasons.items())),
            "windows_scored": sum(1 for w in windows if all(c in w.scores for c in s.columns)),
            "seconds": round(sec, 3), "windows_per_s": round(timers[s.name][1] / sec, 2) if sec else None,
            "random_weights": any(c in random_cols for c in s.columns),
            "not_curation_grade": any(c in flags.not_curation_grade for c in s.columns),
            "model": flags.models.get(s.name),
        })
        alive = nxt
    for name, cls in STAGE_REGISTRY.items():
        if name not in run_names:
            stage_stats.append({"name": name, "columns": list(cls.columns), "params": {}, "run": False,
                                "input": None, "kept": None, "dropped": {}, "seconds": 0.0, "random_weights": False,
                                "not_curation_grade": False, "model": None})
    vids = Counter(s["status"] for s in statuses)
    reasons = Counter(s["reason"] for s in statuses if s["status"] == "dropped")
    errors = Counter((s["error"] or "").split(":")[0] for s in statuses if s["status"] == "failed")
    src_seconds = sum(s["duration"] or 0.0 for s in statuses if s["status"] == "ok")
    kept_segs = [s for s in segments if s.kept]
    return {
        "videos": {"total": len(statuses), "ok": vids.get("ok", 0), "dropped": vids.get("dropped", 0),
                   "failed": vids.get("failed", 0), "dropped_by_reason": dict(reasons),
                   "failed_by_error": dict(errors), "source_seconds": round(src_seconds, 2)},
        "windows": {"total": len(windows), "kept": sum(1 for w in windows if w.kept)},
        "segments": {"merged": len(segments), "kept": len(kept_segs),
                     "kept_seconds": round(sum(s.end - s.start for s in kept_segs), 2),
                     "by_split": dict(Counter(s.split for s in kept_segs))},
        "classes": {"before": dict(sorted((str(k), v) for k, v in before.items())),
                    "after": dict(sorted((str(k), v) for k, v in after.items())),
                    "dropped": dropped_classes, "min_segments_per_class": cfg.balance.min_segments_per_class,
                    "unlabeled_segments": sum(1 for s in kept_segs if s.label is None),
                    "rule": UNLABELED_RULE},
        "stages": stage_stats,
        "timers": {k: {"seconds": round(v[0], 3), "windows": v[1]} for k, v in sorted(timers.items())},
        "random_weight_columns": random_cols,
        "not_curation_grade_columns": flags.not_curation_grade,
        "models": flags.models,
        "shards": [p.name for p in shards],
        "run_seconds": round(run_seconds, 3),
        "throughput": {"videos_per_s": round(len(statuses) / run_seconds, 3) if run_seconds else None,
                       "source_seconds_per_s": round(src_seconds / run_seconds, 3) if run_seconds else None,
                       "this_run_videos_per_s": (faults or {}).get("videos_per_s"),
                       "stage_windows_per_s": {k: round(v[1] / v[0], 2) for k, v in sorted(timers.items())
                                               if v[0] and v[1]}},
        "faults": {"actor_restarts": (faults or {}).get("actor_restarts", 0),
                   "retries": (faults or {}).get("retries", 0),
                   "retry_reasons": (faults or {}).get("retry_reasons", {}),
                   "videos_retried": sum(1 for s in statuses if s.get("attempts", 1) > 1),
                   "videos_failed_retryable": sum(1 for s in statuses if s.get("retryable")),
                   "oom_halvings": sum(s.get("oom_halvings", 0) for s in statuses)},
        "cascade": cfg.cascade,
        "score_only": cfg.score_only,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def format_summary(stats: dict) -> str:
    v, w, s = stats["videos"], stats["windows"], stats["segments"]
    lines = [
        f"videos   {v['total']:>7}  ok {v['ok']}  dropped {v['dropped']}  failed {v['failed']}",
        f"windows  {w['total']:>7}  kept {w['kept']} ({100.0 * w['kept'] / max(w['total'], 1):.1f} %)",
        f"segments {s['merged']:>7}  kept {s['kept']} ({s['kept_seconds']:.1f} s) after class balance "
        f"(min {stats['classes']['min_segments_per_class']}/class; {len(stats['classes']['dropped'])} classes dropped)",
    ]
    unlabeled = stats["classes"].get("unlabeled_segments")
    if unlabeled:
        lines.append(f"         {unlabeled} kept segments have no label ({UNLABELED_RULE})")
    lines += [
        "stages:",
    ]
    for st in stats["stages"]:
        if not st["run"]:
            lines.append(f"  {st['name']:<11} not run")
            continue
        flag = "  [RANDOM WEIGHTS: scores not meaningful]" if st["random_weights"] else ""
        if st.get("not_curation_grade"):
            flag = (f"  [NOT CURATION-GRADE: checkpoint trained on {(st.get('model') or {}).get('training_data')!r} "
                    "data, a demonstration]")
        drops = ", ".join(f"{k} {n}" for k, n in st["dropped"].items()) or "-"
        lines.append(f"  {st['name']:<11} in {st['input']:>6} kept {st['kept']:>6}  dropped: {drops}  "
                     f"({st['seconds']:.1f} s){flag}")
    for k, n in v["dropped_by_reason"].items():
        lines.append(f"  input dropped: {k}: {n}")
    for k, n in v["failed_by_error"].items():
        lines.append(f"  input failed: {k}: {n}")
    if stats.get("score_only"):
        lines.append("shards   not written (score_only; `python -m pipelines.refilter --out ... score_only=false` writes them)")
    else:
        lines.append(f"shards   {len(stats['shards'])}  ({', '.join(stats['shards'][:4])}{' ...' if len(stats['shards']) > 4 else ''})")
    f = stats.get("faults") or {}
    if f.get("actor_restarts") or f.get("retries") or f.get("videos_retried") or f.get("oom_halvings"):
        why = ", ".join(f"{k} {n}" for k, n in (f.get("retry_reasons") or {}).items())
        lines.append(f"faults   actor restarts {f.get('actor_restarts', 0)}, retries {f.get('retries', 0)}"
                     f"{f' ({why})' if why else ''}, videos that needed more than one attempt "
                     f"{f.get('videos_retried', 0)}, GPU out-of-memory batch halvings {f.get('oom_halvings', 0)}")
    if stats.get("run_seconds"):
        tp = stats["throughput"]
        lines.append(f"time     {stats['run_seconds']:.1f} s  ({tp['source_seconds_per_s']} s of video per s, "
                     f"{tp['videos_per_s']} videos/s)")
        rates = tp.get("stage_windows_per_s") or {}
        if rates:
            lines.append("         per stage (windows/s of its own time): "
                         + ", ".join(f"{k} {v:g}" for k, v in rates.items()))
    return "\n".join(lines)
