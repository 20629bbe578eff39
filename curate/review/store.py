"""What is under review and what was decided: class selection, the run's kept segments, and `review.parquet`.

Decisions are keyed by segment id. `review.parquet` holds one row per decided segment (segment_id, decision
`accept`/`reject`, reviewer, time in UTC ISO 8601, label). Every change is a read-modify-write under an
exclusive `flock` on `<out>/.review.lock`, written to a temporary file and renamed, so a crash never leaves
a partial file and two review servers on the same run (reviewers on disjoint classes, or even the same
ones) never lose each other's decisions: each write re-reads what the others wrote.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from common.cli import UsageError
from curate.inputs import ClassAllowList

DECISIONS = ("accept", "reject")
REVIEW_FILE = "review.parquet"
LOCK_FILE = ".review.lock"
SHIPPED_LISTS = ("avsync15", "vggss")
SCORE_COLUMNS = ["pixel_diff", "clip_diff", "amplitude", "ia", "it", "psync_a2v", "psync_v2a"]
REVIEW_SCHEMA = pa.schema([("segment_id", pa.string()), ("decision", pa.string()), ("reviewer", pa.string()),
                           ("time", pa.string()), ("label", pa.string())])


# ------------------------------------------------------------------------------------------- classes


def class_list(spec: str | None) -> ClassAllowList | None:
    """`avsync15` / `vggss` (shipped lists), a file with one class per line, or `a,b,c`; None = every class.

    Matching is `curate.inputs.ClassAllowList`'s (case, punctuation and near-identical spellings), so a
    run's labels map onto the list's spelling."""
    if not spec:
        return None
    if spec in SHIPPED_LISTS or Path(spec).is_file():
        allow = ClassAllowList.from_file(spec)
    elif "," in spec:
        allow = ClassAllowList(spec.split(","))
    else:
        allow = ClassAllowList([spec])
    if not allow.classes:
        raise UsageError(f"--classes {spec!r} holds no class")
    return allow


def class_dir(name: str) -> str:
    """A class name as a folder name (the authors' release: `baby_babbling_crying`)."""
    return "_".join("".join(c if c.isalnum() else " " for c in name).split()) or "unlabelled"


# ------------------------------------------------------------------------------------------ segments


@dataclass
class ReviewSegment:
    segment_id: str
    video_id: str
    cls: str
    """Class under review (the class list's spelling; the run's label when no list is given)."""
    label: str | None
    path: str
    start: float
    end: float
    scores: dict[str, float | None] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return round(self.end - self.start, 3)

    def to_json(self) -> dict:
        return {"segment_id": self.segment_id, "video_id": self.video_id, "class": self.cls, "label": self.label,
                "source": os.path.basename(self.path or ""), "start": self.start, "end": self.end,
                "duration": self.duration, "scores": self.scores}


def run_folder(out: str | Path | None) -> Path:
    """A finished curation run's folder (with `segments.parquet`), or UsageError."""
    if not out:
        raise UsageError("--out is required (the folder of a `python -m pipelines.curate` run)")
    p = Path(out)
    if not p.is_dir():
        raise UsageError(f"--out {str(out)!r} does not exist or is not a folder")
    if not (p / "segments.parquet").is_file():
        raise UsageError(f"--out {str(out)!r} has no segments.parquet: is it a finished curation run?")
    return p


def load_segments(out: Path, allow: ClassAllowList | None, spec: str | None = None) -> list[ReviewSegment]:
    """The run's kept segments whose label is in the class list, sorted by (class order, video, start).

    UsageError when the list names classes of which the run has no kept segment at all."""
    t = pq.read_table(out / "segments.parquet").to_pylist()
    segs: list[ReviewSegment] = []
    for r in t:
        if not r.get("kept", True):
            continue
        label = r.get("label")
        cls = allow.match(label) if allow is not None else (label or "unlabelled")
        if cls is None:
            continue
        scores = {c: r[c] for c in SCORE_COLUMNS if c in r and r[c] is not None}
        segs.append(ReviewSegment(r["segment_id"], r["video_id"], cls, label, r.get("path") or "",
                                  float(r["start"]), float(r["end"]), scores))
    if allow is not None and not segs:
        known = sorted({str(r.get("label")) for r in t if r.get("kept", True)})
        raise UsageError(f"--classes {spec!r}: the run has no kept segment of these classes "
                         f"(kept labels: {', '.join(known[:20]) or 'none'}{' ...' if len(known) > 20 else ''})")
    order = {c: i for i, c in enumerate(allow.classes)} if allow is not None else {}
    segs.sort(key=lambda s: (order.get(s.cls, len(order)), s.cls, s.video_id, s.start))
    return segs


# ----------------------------------------------------------------------------------------- decisions


@dataclass
class Decision:
    segment_id: str
    decision: str
    reviewer: str
    time: str
    label: str | None = None


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class DecisionStore:
    """`<out>/review.parquet`, read and written under an exclusive file lock (safe across processes and threads)."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.path = self.out / REVIEW_FILE
        self._thread_lock = threading.Lock()

    @contextmanager
    def _locked(self):
        with self._thread_lock, open(self.out / LOCK_FILE, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Decision]:
        if not self.path.is_file():
            return {}
        rows = pq.read_table(self.path).to_pylist()
        return {r["segment_id"]: Decision(r["segment_id"], r["decision"], r["reviewer"], r["time"], r.get("label"))
                for r in rows}

    def read(self) -> dict[str, Decision]:
        """Every decision, by segment id."""
        with self._locked():
            return self._read()

    def set(self, segment_id: str, decision: str | None, reviewer: str, label: str | None = None) -> Decision | None:
        """Record (or with `decision=None` withdraw) one decision; returns what is now stored."""
        if decision is not None and decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS} or None, not {decision!r}")
        with self._locked():
            rows = self._read()
            if decision is None:
                rows.pop(segment_id, None)
                new = None
            else:
                new = rows[segment_id] = Decision(segment_id, decision, reviewer, now_utc(), label)
            self._write(rows)
            return new

    def _write(self, rows: dict[str, Decision]) -> None:
        ordered = [rows[k] for k in sorted(rows)]
        table = pa.Table.from_pydict({
            "segment_id": [d.segment_id for d in ordered], "decision": [d.decision for d in ordered],
            "reviewer": [d.reviewer for d in ordered], "time": [d.time for d in ordered],
            "label": [d.label for d in ordered]}, schema=REVIEW_SCHEMA)
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}-{threading.get_ident()}")
        pq.write_table(table, tmp)
        os.replace(tmp, self.path)


def load_decisions(out: str | Path) -> dict[str, Decision]:
    """The decisions of a run; UsageError when nobody has reviewed it yet."""
    store = DecisionStore(out)
    if not store.path.is_file():
        raise UsageError(f"no review decisions in {str(out)!r} ({REVIEW_FILE} missing): "
                         f"review first with `python -m pipelines.review --out {out} --reviewer NAME`")
    return store.read()
