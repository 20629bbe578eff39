"""Input discovery: video files under a folder, labels from a VGGSound CSV or the parent folder name,
the class allow-list ('preliminary curation') with lenient matching, and deterministic video ids."""

from __future__ import annotations

import csv
import difflib
import functools
import hashlib
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from media import storage
from curate.records import VideoInput
from media.shards import make_key

VGGSOUND_NAME = re.compile(r"^(?P<yid>.{11})_(?P<start>\d{1,6})$")


@dataclass
class InputDecision:
    inp: VideoInput
    reason: str | None = None
    """Why the input is dropped before decoding (None = to be processed)."""


def normalise_label(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


class ClassAllowList:
    """Lenient class matching: case/punctuation-insensitive, and near-identical spellings
    (the supplement's "eletric blender running") match by string similarity >= `min_ratio`.

    A line `class <- label | label` also maps those source labels to the class: AVSync15's
    "baby babbling crying" merges VGGSound's "baby babbling" and "baby crying", and its "hammering" is
    VGGSound's "hammering nails". Lines starting with `#` are comments.

    Similarity matching is for spelling variants only: a label that is itself one of the 309 VGGSound
    labels (`classes/vggsound_labels.txt`) names its own class and matches only exactly or through a
    `<-` mapping ("chopping wood" is not a misspelt "chopping food")."""

    def __init__(self, classes: list[str], min_ratio: float = 0.9):
        self.classes: list[str] = []
        self._norm: dict[str, str] = {}
        for line in (x.strip() for x in classes):
            if not line or line.startswith("#"):
                continue
            name, _, sources = (part.strip() for part in line.partition("<-"))
            self.classes.append(name)
            for label in [name, *sources.split("|")]:
                if label.strip():
                    self._norm.setdefault(normalise_label(label), name)
        self.min_ratio = min_ratio

    @classmethod
    def from_file(cls, path: str | Path) -> "ClassAllowList":
        """A file with one class per line, or a shipped list by name: `vggss` (the 149 VGGSS classes of the
        AVSync15 supplement, its spelling kept) or `avsync15` (the 15 AVSync15 classes, with the VGGSound
        labels they merge)."""
        shipped = Path(__file__).parent / "classes" / f"{path}_classes.txt"
        if str(path) in ("vggss", "avsync15") and shipped.is_file():
            path = shipped
        return cls(Path(path).read_text().splitlines())

    def match(self, label: str | None) -> str | None:
        """The allow-list class this label corresponds to, or None."""
        if not label:
            return None
        n = normalise_label(label)
        if n in self._norm:
            return self._norm[n]
        if n in vggsound_labels():
            return None
        best = difflib.get_close_matches(n, list(self._norm), n=1, cutoff=self.min_ratio)
        return self._norm[best[0]] if best else None


@functools.lru_cache(maxsize=1)
def vggsound_labels() -> frozenset[str]:
    """The 309 VGGSound labels, normalised (shipped in `classes/vggsound_labels.txt`, source noted there)."""
    text = (Path(__file__).parent / "classes" / "vggsound_labels.txt").read_text()
    return frozenset(normalise_label(x) for x in text.splitlines() if x.strip() and not x.startswith("#"))


def read_vggsound_csv(path: str | Path) -> dict[str, tuple[str, str | None]]:
    """{'<youtube_id>_<start:06d>': (label, split)} from a VGGSound CSV (header optional).

    A file with no row of that form is not a VGGSound CSV: ValueError saying what a row must look like."""
    out: dict[str, tuple[str, str | None]] = {}
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--csv {str(path)!r} does not exist" if not p.exists() else f"--csv {str(path)!r} is not a file")
    with open(p, newline="", errors="replace") as f:
        for row in csv.reader(f):
            if not row or row[0].strip().lower() in ("youtube_id", "# youtube_id", "ytid"):
                continue
            if len(row) < 3:
                continue
            yid, start, label = row[0].strip(), row[1].strip(), row[2].strip()
            split = row[3].strip() if len(row) > 3 and row[3].strip() else None
            try:
                key = f"{yid}_{int(float(start)):06d}"
            except ValueError:
                continue
            out[key] = (label, split)
    if not out:
        raise ValueError(f"--csv {str(path)!r} has no VGGSound rows: each row must be "
                         "youtube_id,start_seconds,label[,split] (e.g. '---g-f_I2yQ,1,people marching,test')")
    return out


def discover(
    src: str | Path,
    extensions: list[str],
    csv_path: str | Path | None = None,
    allow: ClassAllowList | None = None,
) -> list[InputDecision]:
    """Every file under `src` (a folder or one file; a path or an object-storage URI) with a video extension,
    in a stable order, each with its decision."""
    if not storage.exists(src):
        raise FileNotFoundError(f"--src {src} does not exist")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    root = str(src).rstrip("/") if storage.is_uri(src) else str(Path(src))
    files = storage.walk_videos(root, exts)
    single = len(files) == 1 and files[0] == root
    meta = read_vggsound_csv(csv_path) if csv_path else {}
    out: list[InputDecision] = []
    used: set[str] = set()
    for f in files:
        rel = posixpath.basename(f) if single else f[len(root) + 1 :].replace(os.sep, "/")
        parent = posixpath.dirname(rel)
        stem = posixpath.splitext(posixpath.basename(rel))[0]
        vid = make_key(stem)
        if vid in used:  # same file name in two folders: disambiguate deterministically by path
            vid = f"{vid}-{hashlib.sha1((rel if not single else f).encode()).hexdigest()[:8]}"
        used.add(vid)
        label, split = None, None
        if meta:
            m = meta.get(stem)
            if m is None:
                mm = VGGSOUND_NAME.match(stem)
                if mm:
                    m = meta.get(f"{mm['yid']}_{int(mm['start']):06d}")
            if m:
                label, split = m
        if label is None and not meta and parent:
            label = posixpath.basename(parent).replace("_", " ")
        inp = VideoInput(f, vid, label, split)
        reason = None
        if meta and label is None:
            reason = "not in CSV"
        elif allow is not None:
            cls = allow.match(label)
            if cls is None:
                reason = "label not in class allow-list"
            else:
                inp.label = cls
        out.append(InputDecision(inp, reason))
    return out
