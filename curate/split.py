"""The AVSync15-format dataset from a reviewed curation run: accepted segments only, class-balanced, with a
train/test split that never puts one source video on both sides.

Per class (in the class list's order): the accepted segments are grouped by source video (for VGGSound
files, `<youtube_id>_<start>`, by YouTube id: two clips of one upload are one source); sources are ranked
by a hash of (seed, class, source). Test takes whole videos in that order while they fit the test budget;
if no remaining video fits, the next one lends only as many segments as are missing and its other segments
stay out of the dataset (never in train). Train then takes one segment per remaining video per round, in
the same order, until the class holds `per_class` items. The same run, decisions and settings always give
the same dataset, whatever order the inputs were in.

Output folder (default `<run>/avsync15/`), as the authors' release lays it out plus shards:
- `train.txt`, `test.txt`: `<class_dir>/<segment_id>.mp4` per line, grouped by class;
  `lists/<class_dir>/{train,test}.txt`: the same per class; `class_mapping.json`: class_dir -> class name
- `videos/<class_dir>/<segment_id>.mp4`: the segments' mp4 files (copied bytes)
- `shards/{train,test}-NNNNNN.tar`: WebDataset samples copied from the run's shards (no re-encoding; the
  JSON member gains `avsync15_class` and the new `split`)
- `manifest.parquet`: one row per item (class, split, source video, times, reviewer, scores)
- `README.md`: the dataset card (counts, sources, licences, how it was made); `split.json`: settings + counts
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from common.cli import UsageError
from curate.inputs import VGGSOUND_NAME
from curate.records import stable_fraction
from curate.review.media import ShardIndex
from curate.review.store import (SCORE_COLUMNS, SHIPPED_LISTS, Decision, ReviewSegment, class_dir, class_list, load_decisions,
                                 load_segments, run_folder)
from media.shards import SHARD_PATTERN, write_tar_atomic

log = logging.getLogger("curate.split")
TOOL_LICENCE = "Apache-2.0"


@dataclass
class SplitConfig:
    out: str = ""
    """folder of a reviewed curation run (segments.parquet, shards/, review.parquet)"""
    dest: str = ""
    """output folder (default: <out>/avsync15)"""
    classes: str = "avsync15"
    """classes of the dataset: avsync15 / vggss (shipped lists), a file with one class per line, or a,b,c"""
    per_class: int = 100
    """items per class (train + test); the paper: 100"""
    test_per_class: int = 10
    """test items per class; the paper: 10"""
    seed: int = 0
    """seed of the hash that orders source videos (another seed gives another, equally balanced split)"""
    allow_short: bool = False
    """classes with fewer accepted segments than per_class: warn and keep what there is (else: error)"""
    samples_per_shard: int = 256
    """samples per output shard"""
    videos: bool = True
    """also write videos/<class_dir>/<segment_id>.mp4 (the authors' layout)"""


@dataclass
class ClassSplit:
    name: str
    accepted: int
    train: list[ReviewSegment] = field(default_factory=list)
    test: list[ReviewSegment] = field(default_factory=list)
    unused: int = 0
    """accepted segments left out: beyond per_class, or siblings of a video split for the test budget"""

    @property
    def dir(self) -> str:
        return class_dir(self.name)


@dataclass
class SplitResult:
    dest: Path
    classes: list[ClassSplit]
    short: list[str]
    missing: list[str]

    def summary(self) -> str:
        w = max([len(c.name) for c in self.classes] + [5])
        lines = [f"{'class':<{w}}  accepted  train  test  unused"]
        for c in self.classes:
            lines.append(f"{c.name:<{w}}  {c.accepted:>8}  {len(c.train):>5}  {len(c.test):>4}  {c.unused:>6}")
        lines.append(f"{'total':<{w}}  {sum(c.accepted for c in self.classes):>8}  "
                     f"{sum(len(c.train) for c in self.classes):>5}  {sum(len(c.test) for c in self.classes):>4}")
        if self.short:
            lines.append(f"short classes (fewer than per_class items): {', '.join(self.short)}")
        if self.missing:
            lines.append(f"classes without accepted segments (left out): {', '.join(self.missing)}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------- planning


def source_of(video_id: str) -> str:
    """The source a video id comes from: the YouTube id of a VGGSound clip name, else the id itself."""
    m = VGGSOUND_NAME.match(video_id)
    return m["yid"] if m else video_id


def split_class(name: str, segs: list[ReviewSegment], per_class: int, test_per_class: int, seed: int) -> ClassSplit:
    """Choose `per_class` items of one class, `test_per_class` of them in test, whole videos per side."""
    by_video: dict[str, list[ReviewSegment]] = defaultdict(list)
    for s in segs:
        by_video[source_of(s.video_id)].append(s)
    for v in by_video.values():
        v.sort(key=lambda s: (s.video_id, s.start, s.segment_id))
    order = sorted(by_video, key=lambda v: (stable_fraction(f"{seed}:{name}:{v}"), v))
    n = min(per_class, len(segs))
    n_test = test_per_class if n >= per_class else min(test_per_class, round(n * test_per_class / per_class))
    if n >= 2 and test_per_class > 0:
        n_test = max(1, n_test)
    n_test = min(n_test, max(n - 1, 0))
    out = ClassSplit(name, len(segs))

    test_videos: list[str] = []
    budget = n_test
    for v in order:  # whole videos that fit
        if budget == 0:
            break
        if len(by_video[v]) <= budget:
            test_videos.append(v)
            out.test.extend(by_video[v])
            budget -= len(by_video[v])
    if budget:  # no remaining video fits: the next one lends part of itself, the rest stays out
        v = next(v for v in order if v not in test_videos)
        test_videos.append(v)
        out.test.extend(by_video[v][:budget])
        budget = 0
    rest = [v for v in order if v not in test_videos]
    want = n - len(out.test)
    rnd = 0
    while len(out.train) < want and any(rnd < len(by_video[v]) for v in rest):
        for v in rest:  # one segment per video per round: as many source videos as possible
            if rnd < len(by_video[v]) and len(out.train) < want:
                out.train.append(by_video[v][rnd])
        rnd += 1
    out.unused = len(segs) - len(out.train) - len(out.test)
    return out


def plan_split(cfg: SplitConfig) -> tuple[Path, list[ClassSplit], list[str], list[str], dict[str, Decision], ShardIndex]:
    """Check the inputs and choose every item; nothing is written. UsageError on any user mistake."""
    if cfg.per_class < 1:
        raise UsageError(f"per_class={cfg.per_class}: must be at least 1")
    if not 0 <= cfg.test_per_class < cfg.per_class:
        raise UsageError(f"test_per_class={cfg.test_per_class}: must be at least 0 and below per_class={cfg.per_class}")
    if cfg.samples_per_shard < 1:
        raise UsageError(f"samples_per_shard={cfg.samples_per_shard}: must be at least 1")
    out = run_folder(cfg.out)
    if not cfg.classes:
        raise UsageError("--classes is required (avsync15, vggss, a file with one class per line, or a,b,c)")
    allow = class_list(cfg.classes)
    decisions = load_decisions(out)
    try:
        segments = load_segments(out, allow, cfg.classes)
    except UsageError:
        if cfg.classes in SHIPPED_LISTS or Path(cfg.classes).is_file():
            raise
        raise UsageError(f"--classes {cfg.classes!r} is not a shipped list ({', '.join(SHIPPED_LISTS)}), not a file, "
                         "and names no class of the run") from None
    accepted = [s for s in segments if (d := decisions.get(s.segment_id)) is not None and d.decision == "accept"]
    if not accepted:
        raise UsageError(f"no accepted segment of the classes {cfg.classes!r} in {out} "
                         f"({len(decisions)} decisions, {sum(d.decision == 'accept' for d in decisions.values())} accepts "
                         f"in other classes or on segments no longer kept)")
    by_class: dict[str, list[ReviewSegment]] = defaultdict(list)
    for s in accepted:
        by_class[s.cls].append(s)
    missing = [c for c in allow.classes if c not in by_class]
    plans = [split_class(c, by_class[c], cfg.per_class, cfg.test_per_class, cfg.seed) for c in allow.classes if c in by_class]
    short = [f"{p.name} ({p.accepted} accepted" + (f", {len(p.train) + len(p.test)} usable as whole videos" if p.accepted >= cfg.per_class else "") + ")"
             for p in plans if len(p.train) + len(p.test) < cfg.per_class]
    if (short or missing) and not cfg.allow_short:
        parts = []
        if short:
            parts.append(f"{len(short)} class(es) have fewer than {cfg.per_class} accepted segments: {', '.join(short)}")
        if missing:
            parts.append(f"{len(missing)} have none: {', '.join(missing)}")
        raise UsageError("; ".join(parts) + " (review more, lower --per-class, or pass --allow-short to keep what there is)")
    index = ShardIndex(out / "shards")
    absent = [s.segment_id for p in plans for s in p.train + p.test if s.segment_id not in index]
    if absent:
        raise UsageError(f"{len(absent)} accepted segment(s) are not in {out / 'shards'} (e.g. {absent[0]}): "
                         f"rebuild the run's shards with `python -m pipelines.refilter --out {out}`")
    return out, plans, short, missing, decisions, index


# ----------------------------------------------------------------------------------------- writing


def build_split(cfg: SplitConfig, progress: bool = False) -> SplitResult:
    """Plan, then write the dataset folder (into a temporary folder renamed into place at the end)."""
    out, plans, short, missing, decisions, index = plan_split(cfg)
    dest = Path(cfg.dest) if cfg.dest else out / "avsync15"
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"--dest {str(dest)!r} is a file, not a folder")
    for c in short:
        log.warning("short class kept (--allow-short): %s", c)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    items = [(p, split, s) for p in plans for split in ("train", "test") for s in sorted(getattr(p, split), key=lambda s: s.segment_id)]

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc="split", unit="item")
    for split in ("train", "test"):
        lines = [f"{p.dir}/{s.segment_id}.mp4" for p, sp, s in items if sp == split]
        (tmp / f"{split}.txt").write_text("".join(line + "\n" for line in lines))
        for p in plans:
            d = tmp / "lists" / p.dir
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{split}.txt").write_text("".join(f"{p.dir}/{s.segment_id}.mp4\n" for s in sorted(getattr(p, split), key=lambda s: s.segment_id)))
        members: list[tuple[str, bytes]] = []
        n_in_shard, shard = 0, 0
        # shards mix classes in a stable hashed order (a reader that does not shuffle still sees every class)
        ordered = sorted((x for x in items if x[1] == split), key=lambda x: (stable_fraction(f"{cfg.seed}:{x[2].segment_id}"), x[2].segment_id))
        for p, _, s in ordered:
            for name, data in index.sample(s.segment_id):
                if name.endswith(".json"):
                    meta = json.loads(data)
                    meta.update(split=split, avsync15_class=p.name, avsync15_class_dir=p.dir)
                    data = json.dumps(meta, sort_keys=True).encode()
                elif name.endswith(".mp4") and cfg.videos:
                    v = tmp / "videos" / p.dir / f"{s.segment_id}.mp4"
                    v.parent.mkdir(parents=True, exist_ok=True)
                    v.write_bytes(data)
                members.append((name, data))
            n_in_shard += 1
            if bar is not None:
                bar.update(1)
            if n_in_shard == cfg.samples_per_shard:
                write_tar_atomic(tmp / "shards" / SHARD_PATTERN.format(split=split, index=shard), members)
                members, n_in_shard, shard = [], 0, shard + 1
        if members:
            write_tar_atomic(tmp / "shards" / SHARD_PATTERN.format(split=split, index=shard), members)
    if bar is not None:
        bar.close()
    (tmp / "class_mapping.json").write_text(json.dumps({p.dir: p.name for p in plans}, indent=2) + "\n")
    _write_manifest(tmp / "manifest.parquet", items, decisions)
    reviewers = sorted({decisions[s.segment_id].reviewer for _, _, s in items})
    stats = _stats(cfg, out, plans, short, missing, reviewers)
    (tmp / "split.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    (tmp / "README.md").write_text(dataset_card(stats, items, out))
    if dest.exists():  # replace an earlier split
        old = dest.with_name(f".{dest.name}.old{os.getpid()}")
        dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old)
    else:
        tmp.rename(dest)
    return SplitResult(dest, plans, short, missing)


def _write_manifest(path: Path, items, decisions: dict[str, Decision]) -> None:
    cols: dict[str, list] = {k: [] for k in ("segment_id", "class", "class_dir", "split", "video_id", "source_video", "source", "label",
                                             "start", "end", "duration", "reviewer", "reviewed")}
    for c in SCORE_COLUMNS:
        cols[c] = []
    for p, split, s in items:
        d = decisions[s.segment_id]
        for k, v in (("segment_id", s.segment_id), ("class", p.name), ("class_dir", p.dir), ("split", split),
                     ("video_id", s.video_id), ("source_video", source_of(s.video_id)), ("source", s.path), ("label", s.label), ("start", s.start),
                     ("end", s.end), ("duration", s.duration), ("reviewer", d.reviewer), ("reviewed", d.time)):
            cols[k].append(v)
        for c in SCORE_COLUMNS:
            cols[c].append(s.scores.get(c))
    schema = pa.schema([(k, pa.float64() if k in ("start", "end", "duration") or k in SCORE_COLUMNS else pa.string())
                        for k in cols])
    pq.write_table(pa.Table.from_pydict(cols, schema=schema), path)


def _stats(cfg: SplitConfig, out: Path, plans: list[ClassSplit], short: list[str], missing: list[str],
           reviewers: list[str]) -> dict:
    random_cols: list[str] = []
    if (out / "stats.json").is_file():
        try:
            random_cols = list(json.loads((out / "stats.json").read_text()).get("random_weight_columns") or [])
        except ValueError:
            pass
    return {
        "settings": {"classes": cfg.classes, "per_class": cfg.per_class, "test_per_class": cfg.test_per_class,
                     "seed": cfg.seed, "allow_short": cfg.allow_short},
        "run": str(out),
        "classes": [{"name": p.name, "dir": p.dir, "accepted": p.accepted, "train": len(p.train), "test": len(p.test),
                     "unused": p.unused, "videos_train": len({source_of(s.video_id) for s in p.train}),
                     "videos_test": len({source_of(s.video_id) for s in p.test})} for p in plans],
        "totals": {"train": sum(len(p.train) for p in plans), "test": sum(len(p.test) for p in plans)},
        "short_classes": short, "missing_classes": missing,
        "random_weight_columns": random_cols,
        "reviewers": reviewers,
        "tool_licence": TOOL_LICENCE,
    }


def dataset_card(stats: dict, items, out: Path) -> str:
    t = stats["totals"]
    s = stats["settings"]
    lines = [
        "# AVSync15-format dataset",
        "",
        f"{t['train'] + t['test']} audio-visually synchronized video segments in {len(stats['classes'])} classes "
        f"({t['train']} train, {t['test']} test), chosen from the manually accepted segments of the curation run "
        f"`{out.name}` by `python -m pipelines.split` (classes `{s['classes']}`, {s['per_class']} per class, "
        f"{s['test_per_class']} of them test, seed {s['seed']}). No source video has segments in both train and test. "
        f"Reviewed by: {', '.join(stats['reviewers'])}.",
        "",
        "## Counts",
        "",
        "| class | folder | train | test | source videos (train / test) | accepted | unused |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in stats["classes"]:
        lines.append(f"| {c['name']} | `{c['dir']}` | {c['train']} | {c['test']} | {c['videos_train']} / {c['videos_test']} "
                     f"| {c['accepted']} | {c['unused']} |")
    lines.append(f"| **total** | | {t['train']} | {t['test']} | | | |")
    if stats["short_classes"]:
        lines += ["", f"Short classes (fewer than {s['per_class']} accepted segments, kept with `--allow-short`): "
                  + ", ".join(stats["short_classes"]) + "."]
    if stats["missing_classes"]:
        lines += ["", "Classes of the list without any accepted segment (not in the dataset): "
                  + ", ".join(stats["missing_classes"]) + "."]
    if stats["random_weight_columns"]:
        lines += ["", f"**Warning**: the curation scores {', '.join(stats['random_weight_columns'])} came from "
                  "random-init models (not meaningful); only the manual review stands behind these segments."]
    lines += [
        "",
        "## Layout",
        "",
        "- `train.txt`, `test.txt`: one `<class folder>/<segment id>.mp4` per line (the AVSync15 release's format); "
        "`lists/<class folder>/{train,test}.txt` per class; `class_mapping.json`: folder -> class name",
        "- `videos/<class folder>/<segment id>.mp4`: h264 video with AAC audio (when written)",
        "- `shards/{train,test}-NNNNNN.tar`: WebDataset samples `<segment id>.mp4|.flac|.json` copied from the "
        "curation run's shards; the JSON holds the source video, times, scores, `avsync15_class` and `split`",
        "- `manifest.parquet`: one row per item (class, split, source video, start/end, reviewer, scores); "
        "`split.json`: these counts and the settings",
        "",
        "## Licences",
        "",
        "- **Source videos: licence unknown.** The segments are cut from the curation run's input videos "
        "(for AVSync15: VGGSound clips of YouTube uploads). Their copyright stays with their owners; this dataset "
        "grants no rights to them. Check the terms of your source before redistributing the media.",
        f"- The tool that built this dataset (lists, card, shards layout) is licensed {TOOL_LICENCE}.",
        "",
        "## Sources",
        "",
        "Every item: its source video id and the segment's start and end time (seconds) in that video.",
        "",
        "| split | class | segment | source video | start | end | source file |",
        "|---|---|---|---|---|---|---|",
    ]
    for p, split, seg in items:
        lines.append(f"| {split} | {p.name} | `{seg.segment_id}` | `{seg.video_id}` | {seg.start:.2f} | {seg.end:.2f} "
                     f"| {os.path.basename(seg.path)} |")
    return "\n".join(lines) + "\n"
