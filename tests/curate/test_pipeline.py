"""End-to-end curation on synthetic videos with known outcomes, bad inputs, real media."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from curate.config import load_config
from curate.runner import run
from media.shards import iter_segments

REPO = Path(__file__).resolve().parents[2]


def _cfg(src, out, **kw):
    over = [f"{k}={v}" for k, v in kw.items()]
    return load_config(None, ["runner.kind=local", "balance.min_segments_per_class=0", *over], src=str(src), out=str(out))


@pytest.fixture(scope="module")
def known_run(known_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("known_out")
    result = run(_cfg(known_folder, out), progress=False)
    return out, result


def _windows(out):
    return pq.read_table(out / "windows.parquet").to_pandas()


def test_static_noise_silent_drop_for_the_right_reason(known_run):
    out, _ = known_run
    w = _windows(out)
    by = {vid: g for vid, g in w.groupby("video_id")}
    assert set(by["static_000000"].drop_reason) == {"pixel_diff_low"}
    assert set(by["noise_000000"].drop_reason) == {"pixel_diff_high"}
    assert set(by["silent_000000"].drop_reason) == {"amplitude_low"}
    assert (by["silent_000000"].amplitude == 0).all()
    # every window carries every score of the stages run, kept or not
    assert w.pixel_diff.notna().all() and w.amplitude.notna().all()
    # stages not configured are recorded as not run: null scores, `run: false` in stats
    assert w.clip_diff.isna().all()
    stats = json.loads((out / "stats.json").read_text())
    st = {s["name"]: s for s in stats["stages"]}
    assert st["pixel_diff"]["run"] and not st["clip_diff"]["run"] and not st["psync"]["run"]


def test_hard_cut_splits_scenes_and_no_window_crosses_it(known_run):
    out, _ = known_run
    w = _windows(out)
    cut = w[w.video_id == "cut_000000"]
    assert sorted(cut.scene.unique()) == [0, 1]
    assert not ((cut.start < 4.0) & (cut.end > 4.0)).any()
    assert len(cut) == 2 * 3  # 4 s scenes -> windows at 0, 0.5, 1.0
    segs = pq.read_table(out / "segments.parquet").to_pandas()
    cs = segs[segs.video_id == "cut_000000"].sort_values("start")
    assert list(zip(cs.start, cs.end)) == [(0.0, 4.0), (4.0, 8.0)]


def test_moving_object_with_clicks_is_kept_and_merged(known_run):
    out, result = known_run
    w = _windows(out)
    b = w[w.video_id == "bounce_000000"]
    assert len(b) == 7 and b.kept.all()  # 6 s -> windows at 0.0 .. 3.0
    segs = pq.read_table(out / "segments.parquet").to_pandas()
    bs = segs[segs.video_id == "bounce_000000"]
    assert len(bs) == 1 and bs.start.iloc[0] == 0.0 and bs.end.iloc[0] == 6.0
    samples = {s.key: s for s in iter_segments(str(out / "shards" / "*.tar"))}
    s = samples["bounce_000000-00000000-00006000"]
    assert s.meta["label"] == "bounce" and s.meta["video_id"] == "bounce_000000"
    assert abs(s.video.duration - 6.0) < 0.1 and abs(s.video.audio.shape[0] / 16000 - 6.0) < 0.01
    assert set(s.meta["scores"]) >= {"pixel_diff", "amplitude"}
    # shards hold exactly the kept segments
    kept = set(segs[segs.kept].segment_id)
    assert set(samples) == kept
    for p in (out / "shards").iterdir():
        assert "." not in p.name[: -len(".tar")]
    assert "bounce" in result.summary() or "segments" in result.summary()


def test_every_bad_input_is_recorded_and_the_run_completes(bad_folder, tmp_path):
    out = tmp_path / "out"
    run(_cfg(bad_folder, out), progress=False)
    inputs = pq.read_table(out / "inputs.parquet").to_pandas().set_index("video_id")
    files = sorted(p.stem for p in bad_folder.iterdir())
    assert sorted(inputs.index) == files  # every input exactly once
    st = inputs.status.to_dict()
    assert st["good"] == "ok" and st["vfr"] == "ok" and st["odd_audio"] == "ok" and st["huge"] == "ok"
    for name in ("empty", "text", "head_only", "audio_only", "tiny"):
        assert st[name] == "failed", name
        assert inputs.error[name], name
    assert "0 bytes" in inputs.error["empty"]
    assert "audio-only" in inputs.error["audio_only"]
    assert st["no_audio"] == "dropped" and inputs.reason["no_audio"] == "no audio track"
    assert st["short"] == "dropped" and "shorter" in inputs.reason["short"]
    assert st["truncated"] in ("ok", "dropped", "failed") and (inputs.reason["truncated"] or inputs.error["truncated"])
    assert inputs.audio_rate["odd_audio"] == 22050 and inputs.audio_channels["odd_audio"] == 3
    assert bool(inputs.vfr["vfr"]) is True
    assert inputs.width["huge"] == 1920
    assert st["rotated"] == "ok" and inputs.rotation["rotated"] == 90
    segs = pq.read_table(out / "segments.parquet").to_pandas()
    from media.shards import iter_segments

    rot = [s for s in iter_segments(str(out / "shards" / "*.tar")) if s.meta["video_id"] == "rotated"]
    assert rot and rot[0].video.frames.shape[1] > rot[0].video.frames.shape[2]  # upright: portrait


def test_real_media_runs_through(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(REPO / "sample" / "videos" / "bbb5s6ch000_000000.mp4", src / "bbb5s6ch000_000000.mp4")
    out = tmp_path / "out"
    run(_cfg(src, out), progress=False)
    inputs = pq.read_table(out / "inputs.parquet").to_pandas()
    assert list(inputs.status) == ["ok"] and inputs.audio_channels[0] == 6 and inputs.audio_rate[0] == 48000
    w = _windows(out)
    assert len(w) >= 4 and w.pixel_diff.between(0, 1).all() and w.amplitude.between(0, 1).all()
