"""Merging kept windows into segments (overlap only by default; touching windows never bridge rejected
ones) and videos without a label (not a class: class balance never drops them)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate import synthetic as syn
from curate.finalize import UNLABELED_RULE
from curate.records import VideoInput
from curate.windows import WindowConfig, make_windows, merge_windows
from pipelines.curate import main


def _windows(kept_starts: set[float], scene_len: float = 6.0):
    ws = make_windows(VideoInput("v.mp4", "v", "dog barking"), [(0.0, scene_len)], WindowConfig())
    for w in ws:
        if w.start not in kept_starts:
            w.drop_reason = "pixel_diff_low"
    return ws


def test_touching_windows_do_not_bridge_five_rejected_ones():
    ws = _windows({0.0, 3.0})  # 0-3 and 3-6 kept; the 5 windows from 0.5 to 2.5 between them rejected
    assert [w.start for w in ws if not w.kept] == [0.5, 1.0, 1.5, 2.0, 2.5]
    segs = merge_windows(ws, "train")
    assert [(s.start, s.end) for s in segs] == [(0.0, 3.0), (3.0, 6.0)]
    # opt-in: touching windows merge (the old behaviour), spanning what the rejected windows covered
    assert [(s.start, s.end) for s in merge_windows(ws, "train", touching=True)] == [(0.0, 6.0)]


def test_overlapping_kept_windows_merge():
    segs = merge_windows(_windows({0.0, 0.5, 4.0}, scene_len=8.0), "train")
    assert [(s.start, s.end, len(s.windows)) for s in segs] == [(0.0, 3.5, 2), (4.0, 7.0, 1)]
    # overlapping windows merge even with a rejected one between them: every second of the segment
    # lies in a kept window
    assert [(s.start, s.end) for s in merge_windows(_windows({0.0, 1.0}), "train")] == [(0.0, 4.0)]
    # windows of different scenes never merge, even when they overlap in time
    a, b = _windows({0.0})[0], _windows({0.0})[1]
    b.scene, b.drop_reason = 1, None
    assert len(merge_windows([a, b], "train")) == 2


@pytest.fixture(scope="module")
def unlabeled_folder(tmp_path_factory) -> Path:
    """Videos directly under --src (no label), and one labeled class folder with a single video."""
    root = tmp_path_factory.mktemp("unlabeled")
    for i in range(2):
        syn.write_video(root / f"clip{i}.mp4", syn.bouncing_video(4.0, seed=20 + i)[0])
    syn.write_video(root / "dog barking" / "dog0.mp4", syn.bouncing_video(4.0, seed=30)[0])
    return root


def test_plain_run_on_unlabeled_folder_writes_shards(unlabeled_folder, tmp_path, capsys):
    """`python -m pipelines.curate --src DIR` with the default class balance (100 segments): the labeled
    class is too small and dropped, the unlabeled videos are kept and written."""
    out = tmp_path / "out"
    assert main(["--src", str(unlabeled_folder), "--out", str(out), "--local", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert UNLABELED_RULE in printed
    stats = json.loads((out / "stats.json").read_text())
    assert stats["classes"]["min_segments_per_class"] == 100
    assert stats["classes"]["dropped"] == ["dog barking"]
    assert "None" not in stats["classes"]["before"]
    assert stats["classes"]["unlabeled_segments"] >= 2
    segs = pq.read_table(out / "segments.parquet").to_pandas()
    assert segs[segs.label.isna()].kept.all()
    assert not segs[segs.label == "dog barking"].kept.any()
    assert list((out / "shards").glob("*.tar"))
    assert "have no label" in (out / "report.html").read_text()
